"""The typed manifest: an edited or hostile ``posgen.json`` is one clean integrity error in
every reader (validate, score, card, merge, load), and no listed path leads outside the
folder."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from posgen import write_dataset
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.store import DamagedDataset, check_dataset, read_manifest
from posgen.store.dataset import load
from posgen.store.manifest import sha256_file

TEST_FILE = "data/cot/test-00000-of-00001.parquet"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    bench = BenchmarkSpec(
        name="edits",
        configs={"cot": TaskSpec(task="cot", train_size=60, val_size=10, test_size=10)},
    )
    out = tmp_path_factory.mktemp("edits") / "ds"
    write_dataset(bench, out)
    return out


def edit(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        body = json.loads((root / "posgen.json").read_text())
        change(body)
        (root / "posgen.json").write_text(json.dumps(body))

    return damage


def write(text: bytes) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / "posgen.json").write_bytes(text)

    return damage


def nested(depth: int) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        body = json.loads((root / "posgen.json").read_text())
        text = json.dumps(body)
        deep = "[" * depth + "]" * depth
        (root / "posgen.json").write_text(text.replace('"description": ""', f'"x": {deep}'))

    return damage


def as_folder(root: Path) -> None:
    (root / "posgen.json").unlink()
    (root / "posgen.json").mkdir()


def split(body: dict, name: str = "test") -> dict:
    return body["configs"]["cot"]["splits"][name]


def file0(body: dict) -> dict:
    return split(body)["files"][0]


EDITS: dict[str, Callable[[Path], None]] = {
    "files: null": edit(lambda b: split(b).update(files=None)),
    "files: []": edit(lambda b: split(b).update(files=[])),
    "sha256 missing": edit(lambda b: file0(b).pop("sha256")),
    "sha256 not hex": edit(lambda b: file0(b).update(sha256="xyz")),
    "benchmark missing": edit(lambda b: b.pop("benchmark")),
    "benchmark: null": edit(lambda b: b.update(benchmark=None)),
    "configs: []": edit(lambda b: b.update(configs=[])),
    "configs: {}": edit(lambda b: b.update(configs={})),
    "config: null": edit(lambda b: b["configs"].update(cot=None)),
    "modulus: 1": edit(lambda b: b["configs"]["cot"]["spec"].update(modulus=1)),
    "spec: a string": edit(lambda b: b["configs"]["cot"].update(spec="cot")),
    "test_length: []": edit(lambda b: b["configs"]["cot"]["spec"].update(test_length=[])),
    "splits: {}": edit(lambda b: b["configs"]["cot"].update(splits={})),
    "split removed": edit(lambda b: b["configs"]["cot"]["splits"].pop("test")),
    "rows: a string": edit(lambda b: file0(b).update(rows="ten")),
    "rows: -1": edit(lambda b: file0(b).update(rows=-1)),
    "rows: 10**30": edit(lambda b: file0(b).update(rows=10**30)),
    "bytes: a float": edit(lambda b: file0(b).update(bytes=1.5)),
    "first_id: null": edit(lambda b: file0(b).update(first_id=None)),
    "path: a number": edit(lambda b: file0(b).update(path=123)),
    "path: null": edit(lambda b: file0(b).update(path=None)),
    "unknown top-level key": edit(lambda b: b.update(extra=1)),
    "unknown file key": edit(lambda b: file0(b).update(extra=1)),
    "format_version: 2": edit(lambda b: b.update(format_version=2)),
    "libraries: a string": edit(lambda b: b.update(libraries="numpy")),
    "benchmark name empty": edit(lambda b: b["benchmark"].update(name="")),
    "top level: a list": write(b"[]"),
    "top level: null": write(b"null"),
    "empty file": write(b""),
    "not UTF-8": write(b"\xff\xfe{\x00"),
    "nested 100k deep": nested(100_000),
    "nested 500 deep": nested(500),
    "posgen.json is a folder": as_folder,
}

ESCAPES_SHOWN = "leads outside the dataset folder"


def _outside_copy(root: Path) -> Path:
    """A copy of the test shard outside the folder (what an escaping path would hash)."""
    outside = root.parent / "outside" / "x.parquet"
    outside.parent.mkdir(exist_ok=True)
    shutil.copy(root / TEST_FILE, outside)
    return outside


def escaping(path_of: Callable[[Path], str]) -> Callable[[Path], None]:
    """The test file's entry points to ``path_of(a copy of it outside the folder)``."""

    def damage(root: Path) -> None:
        outside = _outside_copy(root)
        edit(lambda b: file0(b).update(path=path_of(outside)))(root)

    return damage


def symlinked_file(root: Path) -> None:
    """The listed file is a link to an identical file outside: only the link rule catches it."""
    outside = _outside_copy(root)
    (root / TEST_FILE).unlink()
    os.symlink(outside, root / TEST_FILE)


def symlinked_folder(root: Path) -> None:
    outside = root.parent / "outside-cot"
    shutil.copytree(root / "data" / "cot", outside)
    shutil.rmtree(root / "data" / "cot")
    os.symlink(outside, root / "data" / "cot", target_is_directory=True)


ESCAPES: dict[str, Callable[[Path], None]] = {
    "absolute path": escaping(str),
    "../ path": escaping(lambda _: "../outside/x.parquet"),
    "data/../../ path": escaping(lambda _: "data/../../outside/x.parquet"),
    "backslash path": edit(lambda b: file0(b).update(path=TEST_FILE.replace("/", "\\"))),
    "file symlinked outside": symlinked_file,
    "folder symlinked outside": symlinked_folder,
}


@pytest.fixture
def copy(pristine, tmp_path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(pristine, root)
    return root


def clean_failure(result) -> bool:
    """Exit 1 and no traceback, with ``error:`` lines or a report of failed integrity."""
    said = "error: " in result.stderr or "FAIL integrity" in result.stdout
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    return result.exit_code == 1 and said and not crashed and "Traceback" not in result.output


def every_reader_refuses(root: Path, cli) -> list[str]:
    """The readers that did not refuse ``root`` cleanly (empty when all did)."""
    wrong = []
    before = (root / "README.md").read_bytes()
    if not clean_failure(validate := cli("validate", root)):
        wrong.append(f"validate: {validate.exit_code} {validate.output[-300:]}")
    preds = root.parent / "preds.npy"
    score = cli("score", "--data", root, "--config", "cot", "--predictions", preds)
    if not clean_failure(score):
        wrong.append(f"score: {score.exit_code} {score.output[-300:]}")
    card = cli("card", root)
    if not clean_failure(card) or "(validated)" in card.output:
        wrong.append(f"card: {card.exit_code} {card.output[-300:]}")
    if (root / "README.md").read_bytes() != before:
        wrong.append("card: the card was rewritten")
    merge = cli("merge", root)
    if not clean_failure(merge):
        wrong.append(f"merge: {merge.exit_code} {merge.output[-300:]}")
    try:
        load(root, "cot")
        wrong.append("load: loaded")
    except DamagedDataset:
        pass
    if not check_dataset(root):
        wrong.append("check_dataset: no problem found")
    return wrong


@pytest.fixture(scope="module")
def preds(pristine, tmp_path_factory) -> Path:
    from posgen.scoring import load_reference, write_predictions

    test = load_reference(pristine, "cot", "test")
    path = tmp_path_factory.mktemp("preds") / "preds.npy"
    write_predictions(path, test.ids, test.tokens, modulus=17)
    return path


def test_the_pristine_folder_passes_every_reader(cli, pristine, preds):
    assert check_dataset(pristine) == []
    assert cli("validate", pristine).exit_code == 0
    scored = cli("score", "--data", pristine, "--config", "cot", "--predictions", preds)
    assert scored.exit_code == 0, scored.output


@pytest.mark.parametrize("name", list(EDITS))
def test_an_edited_manifest_is_one_integrity_error_in_every_command(
    cli, record, copy, preds, name, request
):
    shutil.copy(preds, copy.parent / "preds.npy")
    EDITS[name](copy)
    wrong = every_reader_refuses(copy, cli)
    record("damage", f"manifest edit: {name}", not wrong)
    assert not wrong, wrong


@pytest.mark.parametrize("name", list(ESCAPES))
def test_a_path_leading_out_of_the_folder_is_refused_never_read(cli, record, copy, preds, name):
    shutil.copy(preds, copy.parent / "preds.npy")
    ESCAPES[name](copy)
    wrong = every_reader_refuses(copy, cli)
    lines = check_dataset(copy)
    named = any(ESCAPES_SHOWN in line or "relative path inside" in line for line in lines)
    record("path_escape", name, not wrong and named)
    assert not wrong, wrong
    assert named, lines


def test_manifest_paths_must_be_relative_and_inside(pristine):
    manifest = read_manifest(pristine)
    entry = manifest.configs["cot"].splits["test"].files[0]
    for bad in ("/etc/passwd", "../x", "data/../../x", "a//b", "./a", "C:/x", "a\\b", ""):
        with pytest.raises(ValueError, match=r"relative path inside|at least 1"):
            type(entry).model_validate({**entry.model_dump(), "path": bad})
    assert sha256_file(pristine / entry.path) == entry.sha256
