"""The ``python -m faststar`` command line."""

import subprocess
import sys
import types
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from faststar import cli

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_faststar(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "faststar", *arguments],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_lists_every_command():
    result = run_faststar("--help")

    assert result.returncode == 0
    for command in cli.COMMANDS:
        assert f"  {command.name}" in result.stdout
        assert command.summary in result.stdout


def test_convert_tiny_transformer(ref_dir, tmp_path):
    dst = tmp_path / "tiny_bf16.safetensors"

    result = run_faststar("convert", str(ref_dir / "tiny_transformer.safetensors"), str(dst), "--resolution", "480p")

    assert result.returncode == 0, result.stderr
    assert f"wrote {dst}" in result.stdout
    source = load_file(str(ref_dir / "tiny_transformer.safetensors"))
    assert load_file(str(dst)).keys() == source.keys()
    with safe_open(str(dst), framework="pt") as handle:
        assert handle.metadata()["faststar.resolution"] == "480p"
        assert handle.metadata()["faststar.dtype"] == "bfloat16"


def test_convert_existing_destination_exits_2(ref_dir, tmp_path):
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"old")

    result = run_faststar("convert", str(ref_dir / "tiny_transformer.safetensors"), str(dst))

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"faststar convert: error: {dst} already exists; pass overwrite=True (--overwrite) to replace it"
    ]
    assert dst.read_bytes() == b"old"


def test_bad_path_exits_2(tmp_path):
    missing = tmp_path / "nowhere"

    status = cli.main(["convert", str(missing), str(tmp_path / "out.safetensors")])

    assert status == 2


def test_bad_path_message(tmp_path, capsys):
    cli.main(["convert", str(tmp_path / "nowhere"), str(tmp_path / "out.safetensors")])

    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"faststar convert: error: checkpoint not found: {tmp_path / 'nowhere'}"]


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        cli.main(["--debug", "convert", str(tmp_path / "nowhere"), str(tmp_path / "out.safetensors")])


def test_absent_command_module(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", (cli.Command("later", "faststar.not_written_yet", "a later command"),))

    status = cli.main(["later"])

    assert status == 2
    assert "the 'later' command is not available" in capsys.readouterr().err


def test_missing_dependency_named(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", (cli.Command("probe", "faststar_cli_test_dependent", "probe"),))

    def import_module(name):
        raise ModuleNotFoundError("No module named 'imageio'", name="imageio")

    monkeypatch.setattr(cli.importlib, "import_module", import_module)

    status = cli.main(["probe"])

    assert status == 2
    assert "needs the Python package 'imageio'" in capsys.readouterr().err


def test_command_receives_arguments(monkeypatch):
    module = types.ModuleType("faststar_cli_test_command")
    received = {}

    def add_arguments(parser):
        parser.add_argument("--steps", type=int, required=True)

    def run(args):
        received["steps"] = args.steps
        return 7

    module.add_arguments, module.run = add_arguments, run
    monkeypatch.setitem(sys.modules, "faststar_cli_test_command", module)
    monkeypatch.setattr(cli, "COMMANDS", (cli.Command("probe", "faststar_cli_test_command", "probe"),))

    assert cli.main(["probe", "--steps", "3"]) == 7
    assert received == {"steps": 3}


def test_unknown_command_exits_2():
    result = run_faststar("no-such-command")

    assert result.returncode == 2
    assert "invalid choice" in result.stderr
