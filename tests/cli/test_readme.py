"""Every ``posgen ...`` line of README.md, docs/*.md and each command's ``Examples`` epilog
parses with the current CLI; the docs' links lead somewhere."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from posgen.cli import COMMANDS, PathArg, main

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"^\s*(?:[A-Z_]+=\S*\s+)*posgen(?:\s|$)")  # environment assignments allowed
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = (ROOT / "README.md").read_text()


def fenced_blocks(text: str, *languages: str) -> list[str]:
    """The fenced blocks of ``text`` tagged with one of ``languages`` ("" for untagged)."""
    return [body for tag, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)
            if tag in languages]  # fmt: skip


def command_lines(text: str) -> list[str]:
    """``posgen ...`` lines of the shell blocks, continuation lines joined, environment
    assignments in front dropped."""
    lines = []
    for block in fenced_blocks(text, "", "bash", "sh", "console"):
        for line in block.replace("\\\n", " ").splitlines():
            if COMMAND.match(line):
                words = shlex.split(line, comments=True)
                while words and re.match(r"^[A-Z_]+=", words[0]):
                    words = words[1:]
                lines.append(shlex.join(words))
    return lines


DOCUMENTED_LINES = [
    pytest.param(line, id=f"{document.relative_to(ROOT)}: {line}")
    for document in DOCUMENTS
    for line in command_lines(document.read_text())
]
EPILOG_LINES = [
    line
    for name in COMMANDS
    for line in command_lines(f"```\n{main.get_command(None, name).epilog or ''}\n```")
]


def test_the_readme_shows_the_commands_a_newcomer_needs_and_every_docs_page_is_checked():
    commands = {shlex.split(line)[1] for line in command_lines(README)}
    assert commands >= {"generate", "validate", "score", "train", "sweep", "results"}
    assert {document.name for document in DOCUMENTS} >= {"README.md", "tasks.md", "training.md"}


@pytest.mark.parametrize("line", DOCUMENTED_LINES + EPILOG_LINES)
def test_every_documented_command_line_parses(line, monkeypatch):
    for kind in (click.Path, PathArg):  # existence is the reader's business, not the parser's
        monkeypatch.setattr(kind, "convert", lambda self, value, param, ctx: value)
    words = shlex.split(line)[1:]
    elided = "..." in words  # flags left out: a missing required option is fine
    words = [w for w in words if w != "..."]
    try:
        context = main.make_context("posgen", list(words))
        name, command, rest = main.resolve_command(context, words)
        with command.make_context(name, rest, parent=context):
            pass
    except click.exceptions.Exit:  # -h, --version: parsed, and answered
        pass
    except click.UsageError as error:
        if not (elided and isinstance(error, click.MissingParameter)):
            pytest.fail(f"{line!r}: {error.format_message()}")


@pytest.mark.parametrize("name", ["posgen-v1", "posgen-v2", "paper"])
def test_the_docs_state_what_each_task_measures_as_the_cards_do(name):
    from posgen.card import load_measures
    from posgen.scoring.reliance import measure_sentences

    sentences = [f"- {s}" for s in measure_sentences(name, load_measures()[name])]
    for page in (ROOT / "docs" / "tasks.md", ROOT / "data_cards" / f"{name}.md"):
        assert [s for s in sentences if s not in page.read_text()] == [], page.name


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings (``## What POSGEN tests`` -> ``what-posgen-tests``)."""
    headings = re.findall(r"^#+ (.*)$", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


LINKS = [
    pytest.param(document, target, anchor, id=f"{document.name} -> {target}#{anchor}")
    for document in DOCUMENTS
    for target, anchor in re.findall(r"\]\(([^)#:]*)(?:#([^)]*))?\)", document.read_text())
]


@pytest.mark.parametrize(("document", "target", "anchor"), LINKS)
def test_every_link_of_the_docs_leads_to_a_file_and_heading_that_exist(document, target, anchor):
    page = (document.parent / target).resolve() if target else document
    assert page.exists(), f"{document.name} -> {target}"
    if anchor and page.suffix == ".md":
        assert anchor in anchors(page.read_text()), f"{document.name} -> {target}#{anchor}"


def test_the_readmes_loading_example_runs_as_pasted(tmp_path, monkeypatch):
    """The README's Python block, pasted after ``make data`` (here the default benchmark at
    small sizes in ``out/posgen-v1``): every name it uses is imported in the block."""
    from posgen import write_dataset
    from posgen.spec import default_benchmark

    small = default_benchmark(train_size=8, val_size=4, test_size=4)
    write_dataset(small, tmp_path / "out" / "posgen-v1")
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


def test_the_readmes_code_map_names_every_module_and_only_modules_that_exist():
    section = README.split("## Code map", 1)[1].split("\n## ", 1)[0]
    rows = [row for row in section.splitlines() if row.startswith("| `")]
    named = {  # a package's row names its modules by file name
        f"{folder}{name}"
        for row in rows
        for folder in re.findall(r"`(posgen/\w+/)`", row)
        for name in re.findall(r"`(\w+\.py)`", row)
    }
    paths = {p for row in rows for p in re.findall(r"`(posgen/[\w/]+(?:\.py|/))`", row)}
    assert [p for p in paths if not (ROOT / p).exists()] == []
    modules = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "posgen").rglob("*.py")
        if path.name != "__init__.py"
    }
    assert sorted(modules - paths - named) == []


@pytest.mark.parametrize(
    ("command", "option", "said"),
    [
        ("generate", "part", "I from 0 to N-1"),  # 1/2 and 2/2 fail: 2/2 is no part
        ("validate", "split", "probe, probe_<L'>"),  # the probe splits are checked alone too
    ],
)
def test_an_options_help_says_which_values_it_takes(command, option, said):
    (param,) = [p for p in main.get_command(None, command).params if p.name == option]
    assert said in param.help


def test_the_storage_pages_python_blocks_run_as_pasted_one_after_the_other(tmp_path, monkeypatch):
    """docs/storage.md's blocks: write ``out/mine``, load it, open it as a ``Dataset``."""
    monkeypatch.chdir(tmp_path)
    blocks = fenced_blocks((ROOT / "docs" / "storage.md").read_text(), "python")
    namespace: dict[str, object] = {"posgen": __import__("posgen")}  # "(import posgen)"
    for block in blocks:
        exec(compile(block, "docs/storage.md", "exec"), namespace)
    assert len(blocks) == 2 and namespace["data"].configs == ["cot"]  # type: ignore[attr-defined]
