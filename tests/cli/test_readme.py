"""Every ``posgen ...`` line of the shell blocks of README.md and docs/*.md, and of each
command's ``Examples`` epilog, parses with the current CLI; the docs' links lead somewhere."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from posgen.cli import main
from posgen.cli.shared import PathArg

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"^\s*(?:[A-Z_]+=\S*\s+)*posgen(?:\s|$)")
"""A shell line that runs posgen (environment assignments before it allowed)."""


def fenced_blocks(text: str, *languages: str) -> list[str]:
    """The fenced blocks of ``text`` tagged with one of ``languages`` ("" for untagged)."""
    pattern = r"^```(\w*)\n(.*?)^```"
    return [body for tag, body in re.findall(pattern, text, re.M | re.S) if tag in languages]


def command_lines(text: str) -> list[str]:
    """``posgen ...`` lines of the shell blocks (untagged, bash, sh, console), continuation
    lines joined, environment assignments in front dropped."""
    lines = []
    for block in fenced_blocks(text, "", "bash", "sh", "console"):
        for line in block.replace("\\\n", " ").splitlines():
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


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
"""The README and every page of docs/ (their shell blocks are checked)."""

DOCUMENTED_LINES = [
    pytest.param(line, id=f"{document.relative_to(ROOT)}: {line}")
    for document in DOCUMENTS
    for line in command_lines(document.read_text())
]
README_LINES = command_lines((ROOT / "README.md").read_text())


def parse(line: str) -> None:
    """Parse ``line`` as the CLI would, without running it; with ``...`` (flags left out) a
    missing required option is fine."""
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


def test_the_readme_shows_the_commands_a_newcomer_needs():
    commands = {shlex.split(line)[1] for line in README_LINES}
    assert commands >= {"generate", "validate", "score", "train", "sweep", "results"}


def test_every_docs_page_is_checked():
    assert {document.name for document in DOCUMENTS} >= {"README.md", "tasks.md", "training.md"}


@pytest.mark.parametrize("line", DOCUMENTED_LINES + epilog_lines())
def test_every_documented_command_line_parses(line, monkeypatch):
    for kind in (click.Path, PathArg):  # existence is the reader's business, not the parser's
        monkeypatch.setattr(kind, "convert", lambda self, value, param, ctx: value)
    try:
        parse(line)
    except click.UsageError as error:
        pytest.fail(f"{line!r}: {error.format_message()}")


@pytest.mark.parametrize("name", ["posgen-v1", "posgen-v2", "paper"])
def test_the_docs_state_what_each_task_measures_as_the_cards_do(name):
    from posgen.card import load_measures
    from posgen.scoring.reliance import measure_sentences

    sentences = [f"- {s}" for s in measure_sentences(name, load_measures()[name])]
    docs = (ROOT / "docs" / "tasks.md").read_text()
    card = (ROOT / "data_cards" / f"{name}.md").read_text()
    assert [s for s in sentences if s not in docs] == []
    assert [s for s in sentences if s not in card] == []


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown page's headings (``## What POSGEN tests`` ->
    ``what-posgen-tests``)."""
    headings = re.findall(r"^#+ (.*)$", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


LINKS = [
    (document, target, anchor)
    for document in DOCUMENTS
    for target, anchor in re.findall(r"\]\(([^)#:]*)(?:#([^)]*))?\)", document.read_text())
]


@pytest.mark.parametrize(
    ("document", "target", "anchor"),
    LINKS,
    ids=[f"{d.name} -> {t}#{a}" for d, t, a in LINKS],
)
def test_every_link_of_the_docs_leads_to_a_file_and_heading_that_exist(document, target, anchor):
    page = (document.parent / target).resolve() if target else document
    assert page.exists(), f"{document.name} -> {target}"
    if anchor and page.suffix == ".md":
        assert anchor in anchors(page.read_text()), f"{document.name} -> {target}#{anchor}"


README = (ROOT / "README.md").read_text()


def test_the_readmes_loading_example_runs_as_pasted(tmp_path, monkeypatch):
    """The README's Python block, pasted after ``make data`` (here the default benchmark at
    small sizes in ``out/posgen-v1``): every name it uses is imported in the block."""
    from posgen import write_dataset
    from posgen.spec import default_benchmark

    write_dataset(
        default_benchmark(train_size=8, val_size=4, test_size=4), tmp_path / "out" / "posgen-v1"
    )
    monkeypatch.chdir(tmp_path)
    (block,) = [b for b in fenced_blocks(README, "python") if "load_dataset" in b]
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert len(namespace["probe"]) == 4  # type: ignore[arg-type]


@pytest.mark.parametrize("block", fenced_blocks(README, "", "bash", "sh"))
def test_every_prediction_file_the_readme_scores_is_written_by_an_earlier_line(block):
    written: list[str] = []
    for line in command_lines(f"```\n{block}```"):
        words = shlex.split(line)
        read = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--predictions"]
        for path in read:
            assert any(path == out or path.startswith(out + "/") for out in written), (path, line)
        written += [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--out"]
