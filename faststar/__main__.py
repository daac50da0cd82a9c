"""Entry point of ``python -m faststar``; the commands are in ``faststar.cli``."""

from .cli import main

raise SystemExit(main())
