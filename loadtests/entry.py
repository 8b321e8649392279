"""`python -m loadtests.<...>` entry points: one parser-and-run helper for every benchmark and campaign module.

Why it exists: each command module offers `add_arguments(parser)` and `run(args)` (the `autonomic` CLI mounts them as
subcommands); run as a module, it needs the same few lines to build its own parser, which were written four times.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def module_main(
    prog: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse `argv` (default: sys.argv) with the module's own options and run it; `args.prog` names the command."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.prog = parser.prog
    return run(args)
