"""Command line of the FastSTAR engine: ``python -m faststar <command> [options]``.

Each command lives in its own module with ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their command runs, so ``--help``
is fast and a command whose module is absent fails alone, with a clear message.

Errors the user can fix (a bad path, an invalid value, an existing output file, a full
disk) print one line and exit with status 2; ``--debug`` shows the traceback instead.
"""

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, the module that implements it and a one-line summary."""

    name: str
    module: str
    summary: str


COMMANDS = (
    Command("generate", "faststar.generate", "generate a video from a prompt and write it to a file"),
    Command("convert", "faststar.convert", "check a checkpoint and write it as one .safetensors file (bf16/fp16/fp32)"),
    Command("bench", "faststar.bench", "compare dense generation with FastSTAR and its baselines: speedup, FLOPs, PSNR/SSIM"),
    Command("evaluate-demo", "faststar.demo.evaluate", "run the demo evaluation of pruned against dense generation"),
)


class UsageError(Exception):
    """An error the user can fix; the CLI prints its message and exits with status 2."""


# Exceptions that report bad input or an environment the user can fix, not a bug.
USER_ERRORS = (UsageError, ValueError, OSError)


def _commands_text() -> str:
    width = max(len(command.name) for command in COMMANDS)
    lines = [f"  {command.name:<{width}}  {command.summary}" for command in COMMANDS]
    listing = "commands:\n" + "\n".join(lines)
    return listing + "\n\nRun `python -m faststar COMMAND --help` for the options of a command."


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser: global options, the command name and its arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m faststar",
        description="FastSTAR: InfinityStar video generation with spatiotemporal token pruning.",
        epilog=_commands_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback when a command fails")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level (default: INFO)",
    )
    parser.add_argument(
        "command",
        metavar="COMMAND",
        choices=[command.name for command in COMMANDS],
        help="the command to run (listed below)",
    )
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def find_command(name: str) -> Command:
    for command in COMMANDS:
        if command.name == name:
            return command
    raise UsageError(f"unknown command {name!r}; the commands are {', '.join(c.name for c in COMMANDS)}")


def import_command(command: Command):
    """Import the module of ``command``; raise UsageError when it or a dependency is missing."""
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if command.module == missing or command.module.startswith(missing + "."):
            raise UsageError(
                f"the '{command.name}' command is not available in this copy of FastSTAR "
                f"(module {command.module} not found)"
            ) from error
        raise UsageError(
            f"the '{command.name}' command needs the Python package '{missing}', which is not "
            f"installed; install it (pip install {missing.split('.')[0]}) and run again"
        ) from error

    for attribute in ("add_arguments", "run"):
        if not callable(getattr(module, attribute, None)):
            raise UsageError(
                f"module {command.module} does not define {attribute}(), so the "
                f"'{command.name}' command cannot run"
            )
    return module


def run_command(name: str, arguments: Sequence[str]) -> int:
    """Parse ``arguments`` for command ``name`` and run it; return its exit status."""
    command = find_command(name)
    module = import_command(command)

    parser = argparse.ArgumentParser(prog=f"python -m faststar {command.name}", description=command.summary)
    module.add_arguments(parser)
    args = parser.parse_args(list(arguments))
    return int(module.run(args) or 0)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    options = build_parser().parse_args(argv)
    logging.basicConfig(level=options.log_level, format="%(levelname)s %(name)s: %(message)s")

    try:
        return run_command(options.command, options.arguments)
    except USER_ERRORS as error:
        if options.debug:
            raise
        print(f"faststar {options.command}: error: {_first_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"faststar {options.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
