"""The README's command lines parse with the current CLI (no drift between docs and flags).

Every ``posgen ...`` line of the README's shell blocks, and of each command's ``Examples``
epilog, is parsed by click exactly as the shell would pass it: unknown commands or flags,
wrong types and missing required options fail here. Paths are not checked for existence
(the examples name folders the reader creates).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from posgen.cli import main
from posgen.cli.paths import PathArg

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"^\s*(?:[A-Z_]+=\S*\s+)*posgen(?:\s|$)")
"""A shell line that runs posgen (environment assignments before it allowed)."""


def command_lines(text: str) -> list[str]:
    """``posgen ...`` lines of the shell blocks (untagged, bash, sh, console), continuation
    lines joined, environment assignments in front dropped."""
    lines, fenced, shell, pending = [], False, False, ""
    for raw in text.splitlines():
        if raw.startswith("```"):
            fenced = not fenced
            shell = fenced and raw[3:].strip() in ("", "bash", "sh", "console")
            continue
        if not shell:
            continue
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        line, pending = pending + raw, ""
        if COMMAND.match(line):
            words = shlex.split(line, comments=True)
            while words and re.match(r"^[A-Z_]+=", words[0]):
                words = words[1:]
            lines.append(shlex.join(words))
    return lines


def epilog_lines() -> list[str]:
    """The ``posgen ...`` lines of every command's ``Examples`` epilog."""
    return [
        line
        for command in main.commands.values()
        for line in command_lines(f"```\n{command.epilog or ''}\n```")
    ]


README_LINES = command_lines((ROOT / "README.md").read_text())


def parse(line: str) -> None:
    """Parse ``line`` as the CLI would, without running the command.

    ``...`` stands for flags left out (``posgen generate ... --shard-mb 256``): there a
    missing required option is fine, every flag shown must still parse.
    """
    words = shlex.split(line)[1:]
    elided = "..." in words
    words = [w for w in words if w != "..."]
    try:
        context = main.make_context("posgen", list(words))
        name, command, rest = main.resolve_command(context, words)
        with command.make_context(name, rest, parent=context):
            pass
    except click.exceptions.Exit:  # -h, --version: parsed, and answered
        return
    except click.MissingParameter:
        if not elided:
            raise


def test_the_readme_shows_commands():
    assert len(README_LINES) >= 10
    assert {shlex.split(line)[1] for line in README_LINES} >= {"generate", "validate", "score"}


@pytest.mark.parametrize("line", README_LINES + epilog_lines())
def test_every_documented_command_line_parses(line, monkeypatch):
    for kind in (click.Path, PathArg):  # existence is the reader's business, not the parser's
        monkeypatch.setattr(kind, "convert", lambda self, value, param, ctx: value)
    try:
        parse(line)
    except click.UsageError as error:
        pytest.fail(f"{line!r}: {error.format_message()}")


def test_the_readme_states_what_each_task_measures_as_the_cards_do():
    from posgen.card.task_measures import load_measures, measure_sentences

    measures = load_measures()
    readme = (ROOT / "README.md").read_text()
    for name in ("posgen-v1", "posgen-v2", "paper"):
        for sentence in measure_sentences(name, measures[name]):
            assert f"- {sentence}" in readme
            assert f"- {sentence}" in (ROOT / "data_cards" / f"{name}.md").read_text()
