"""The `autonomic` command finds its subcommand before importing anything, and lists the others from a table whose
one-line help must match what each subcommand's own module registers."""

from __future__ import annotations

import argparse

import pytest

from autonomic.cli import SUBCOMMANDS, build_parser, command_of


def _helps(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest: action.help for action in sub._choices_actions}


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_the_table_says_what_the_module_says(name: str) -> None:
    assert _helps(build_parser(name))[name] == SUBCOMMANDS[name].help


def test_every_subcommand_is_listed_when_one_is_loaded() -> None:
    assert list(_helps(build_parser("picker"))) == list(SUBCOMMANDS)


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["picker", "--endpoints", "a:1"], "picker"),
        (["--log-level", "debug", "controller", "--dry-run"], "controller"),
        (["--log-format=text", "cluster-sim"], "cluster-sim"),
        (["bench", "routing", "--help"], "bench"),
        (["--help"], None),
        ([], None),
        (["nope", "picker"], None),  # the first positional is the command; a typo is not skipped over
        (["--log-level", "loud", "picker"], None),  # a bad global option: the full parser reports it
    ],
)
def test_command_of(argv: list[str], command: str | None) -> None:
    assert command_of(argv) == command


def test_an_unknown_subcommand_is_refused_by_build_parser() -> None:
    with pytest.raises(ValueError, match="nope"):
        build_parser("nope")
