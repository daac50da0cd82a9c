"""The benchmark command: measurement records, JSON report, plot, score-study oracle, CLI."""

import json
import math

import pytest
import torch

from faststar import cli
from faststar.bench import (
    BenchSetup,
    Method,
    build_report,
    compare,
    default_methods,
    format_released,
    format_table,
    measure,
    reconstruct,
    released_speedups,
    select_methods,
    svg_plot,
)
from faststar.flops import FlopModel
from faststar.pruning import PRESETS
from faststar.sampler import Guidance
from tests.reference import load_tensors, tiny_transformer
from tests.test_pruning import RUN_FILE, fixture_steps

JSON_RECORD_KEYS = {"method", "keep_ratios", "measured_speedup", "flop_speedup", "psnr", "ssim"}


@pytest.fixture(scope="module")
def tiny_setup(ref_dir, manifest):
    entry = manifest["files"][RUN_FILE]
    model = tiny_transformer(ref_dir, manifest)
    text = load_tensors(ref_dir, "tiny_transformer_inputs.safetensors")["text_features"]
    flop_model = FlopModel.from_config(model.config, text_tokens=text.shape[0])
    return BenchSetup("tiny fixture", model, fixture_steps(manifest), tuple(entry["scale_schedule"][-1][1:]),
                      Guidance("apg", entry["apg_norm_threshold"]), [(text, entry["g_seed"])], flop_model)


@pytest.fixture(scope="module")
def tiny_records(tiny_setup):
    methods = [m for m in default_methods() if m.name in ("dense", "faststar", "fastvar", "scale_skip")]
    methods = [m if m.name != "fastvar" else Method("fastvar", m.config.replace(restore_layers=(0, 2)))
               for m in methods]
    return measure(tiny_setup, methods, repeats=2)


def test_measure_records(tiny_records):
    by_name = {r.method: r for r in tiny_records}
    assert list(by_name) == ["dense", "faststar", "fastvar", "scale_skip"]

    dense = by_name["dense"]
    assert dense.measured_speedup == 1.0
    assert dense.flop_speedup == 1.0
    assert math.isinf(dense.psnr)
    assert dense.ssim == pytest.approx(1.0)
    assert dense.kept_fraction == 1.0

    for name in ("faststar", "fastvar", "scale_skip"):
        record = by_name[name]
        assert len(record.times) == 2
        assert record.flop_speedup > 1.0
        assert math.isfinite(record.psnr)
        assert record.kept_fraction < 1.0
    assert by_name["faststar"].keep_ratios == [0.5, 0.5, 0.4]


def test_json_report_layout(tiny_setup, tiny_records, tmp_path):
    methods = default_methods()
    released = released_speedups(methods)
    report = build_report(tiny_setup, tiny_records, released, repeats=2, device="cpu")
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(report))
    loaded = json.loads(path.read_text())

    assert JSON_RECORD_KEYS <= set(loaded["records"][0])
    assert [r["method"] for r in loaded["records"]][0] == "dense"
    assert loaded["records"][0]["psnr"] is None, "infinite PSNR is written as null"
    assert set(loaded["released_shapes"]) == {"720p_5s", "480p_10s"}
    assert set(loaded["released_shapes"]["720p_5s"]) == {m.name for m in methods}
    assert loaded["released_shapes"]["720p_5s"]["faststar"] >= 2.0
    assert loaded["released_shapes"]["720p_5s"]["dense"] == 1.0


def test_text_outputs(tiny_records):
    table = format_table(tiny_records)
    assert "faststar" in table
    assert "inf" in table
    released = format_released(released_speedups(select_methods("faststar")))
    assert "720p_5s" in released
    assert "faststar" in released

    svg = svg_plot(tiny_records)
    assert svg.startswith("<svg")
    assert svg.rstrip().endswith("</svg>")
    assert ">scale_skip<" in svg
    assert ">dense<" not in svg, "dense is the reference, not a point"


def test_select_methods():
    assert [m.name for m in select_methods("faststar,fastvar")] == ["dense", "faststar", "fastvar"]
    assert len(select_methods(None)) == len(default_methods())
    with pytest.raises(ValueError, match="unknown methods"):
        select_methods("faststar,turbo")


def test_compare_identical_and_different():
    codes = torch.randn(1, 64, 3, 4, 5)
    value_psnr, value_ssim = compare(codes, codes.clone(), None)
    assert math.isinf(value_psnr)
    assert value_ssim == pytest.approx(1.0)
    value_psnr, value_ssim = compare(codes + 0.1 * torch.randn_like(codes), codes, None)
    assert 0 < value_psnr < math.inf
    assert value_ssim < 1.0


def test_oracle_reconstruction_matches_reference_encoding(ref_dir, manifest):
    tensors = load_tensors(ref_dir, "i2v_bits.safetensors")
    steps = fixture_steps(manifest)
    canvas = reconstruct(tensors["latent"], steps, None)
    assert torch.equal(canvas, tensors["canvas_from_gt_bits"])


def test_oracle_partial_update_changes_only_pruned_scales(ref_dir, manifest):
    tensors = load_tensors(ref_dir, "i2v_bits.safetensors")
    steps = fixture_steps(manifest)
    dense = reconstruct(tensors["latent"], steps, None)
    pruned = reconstruct(tensors["latent"], steps, PRESETS["balanced"])
    assert torch.equal(pruned[:, :, :1], dense[:, :, :1]), "the image clip is not pruned"
    assert not torch.equal(pruned, dense)
    skipped = reconstruct(tensors["latent"], steps, PRESETS["skip_last"])
    assert torch.equal(skipped[:, :, :3], dense[:, :, :3]), "only the last clip's last scale is skipped"


def test_cli_runs_bench_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--json", "--model", "--vae", "--device"):
        assert option in out
