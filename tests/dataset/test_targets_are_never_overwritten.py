"""Targets that already hold something: merge, parts and ``--out`` never lose a user's file;
the answer is one error line or a correct dataset."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import datasets
import pytest

import posgen.store.writer
from posgen import write_dataset
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.store import DamagedDataset, check_dataset
from posgen.store.dataset import load
from posgen.store.safety import leftovers
from posgen.store.writer import PARTS_DIR

FIELDS = dict(train_size=300, val_size=20, test_size=20, test_length=[96])
SHARD = 8000
FLAGS = ["--task", "cot", "--train-size", "50", "--val-size", "10", "--test-size", "10", "-q"]


def bench(seed: int = 0) -> BenchmarkSpec:
    configs = {t: TaskSpec(task=t, seed=seed, **FIELDS) for t in ("cot", "recursive")}
    return BenchmarkSpec(name="targets", configs=configs)


def part(out: Path, i: int, seed: int = 0):  # part i of 3, with its card
    return write_dataset(bench(seed), out, part=(i, 3), shard_bytes=SHARD)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "ds"
    write_dataset(bench(), out, shard_bytes=SHARD)
    return out


@pytest.fixture(scope="module")
def written_parts(tmp_path_factory) -> list[Path]:  # read them, never change them
    folders = [tmp_path_factory.mktemp("parts") / f"p{i}" for i in range(3)]
    for i, folder in enumerate(folders):
        assert part(folder, i) is None
    return folders


@pytest.fixture
def parts(tmp_path, written_parts) -> list[Path]:  # three parts of one run, each in its folder
    return [Path(shutil.copytree(p, tmp_path / p.name, symlinks=True)) for p in written_parts]


def _user_folder(target: Path) -> None:
    target.mkdir()
    (target / "README.md").write_text("my notes\n")
    (target / "posgen.json").write_text("{}\n")


def _user_data(target: Path) -> None:
    (target / "data").mkdir(parents=True)
    (target / "data" / "mine.csv").write_text("a,b\n")


def _link_to(prepare: Callable[[Path], None]) -> Callable[[Path], None]:
    def link(target: Path) -> None:
        prepare(target.parent / "elsewhere")
        target.symlink_to(target.parent / "elsewhere")

    return link


def _a_different_staged_file(target: Path) -> None:
    part(target, 1)
    staged = next((target / PARTS_DIR / "data").rglob("*.parquet"))
    staged.write_bytes(staged.read_bytes()[::-1])


def _a_loop(target: Path) -> None:
    target.symlink_to(target.parent / "loop2")
    (target.parent / "loop2").symlink_to(target)


def _dataset(target: Path, seed: int = 0) -> None:
    write_dataset(bench(seed), target, shard_bytes=SHARD)


MERGE = None  # `posgen merge TARGET PARTS...`, not `generate --out TARGET`
REFUSALS = {  # case -> (what the target holds, generate's flags or MERGE, the error's words)
    "merge into: user folder with README.md and posgen.json": (_user_folder, MERGE, "posgen.json"),
    "merge into: finished dataset of another spec": (
        lambda t: _dataset(t, seed=5), MERGE, "finished dataset"),
    "merge into: finished dataset of the same spec": (_dataset, MERGE, "finished dataset"),
    "merge into: user files under data/": (_user_data, MERGE, "not posgen parts"),
    "merge into: a file": (lambda t: t.write_text("not a folder\n"), MERGE, "file"),
    "merge into: symlink to a user folder": (_link_to(_user_folder), MERGE, "posgen.json"),
    "merge into: parts of another run": (lambda t: part(t, 0, seed=5), MERGE, "another benchmark"),
    "merge into: a staged file that differs": (_a_different_staged_file, MERGE, "differs"),
    "merge into: a symlink loop": (_a_loop, MERGE, "loops"),
    "--out: a dataset, without --overwrite": (_dataset, [], "pass --overwrite to replace it"),
    "--out: a user folder": (_user_data, ["--overwrite"], "not a posgen dataset"),
    "--out: a symlink to a user folder": (
        _link_to(_user_data), ["--overwrite"], "not a posgen dataset"),
    "--out: a user folder with a posgen.json of its own": (
        _user_folder, ["--overwrite"], "that says so"),
    "--out: a symlink loop": (_a_loop, [], "loops"),
    "--out: a dataset, with --part": (_dataset, ["--part", "0/2"], "holds a finished dataset"),
    "--out: parts of another run, with --part": (
        lambda t: part(t, 0, seed=5), ["--part", "1/3"], "another benchmark"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_target_that_is_not_the_commands_own_is_refused_and_nothing_changes(
    tree, assert_clean_error, cli, recorded, tmp_path, parts, case
):
    prepare, flags, words = REFUSALS[case]
    target = tmp_path / "target"
    prepare(target)
    before = tree(tmp_path)  # the parts too
    if flags is MERGE:
        result = cli("merge", target, *parts)
    else:
        result = cli("generate", "--out", target, *FLAGS, *flags)
    with recorded("target", case):
        assert_clean_error(result, 2, words)
        assert tree(tmp_path) == before


MERGE_TARGETS = ["missing", "empty folder", "symlink to an empty folder", "one of the parts"]


@pytest.mark.parametrize("case", MERGE_TARGETS)
def test_merge_into_its_own_kind_of_target_equals_a_single_run(
    tree, cli, recorded, tmp_path, parts, single, case
):
    target = tmp_path / "target"
    sources = parts
    if case == "empty folder":
        target.mkdir()
    elif case == "symlink to an empty folder":
        (tmp_path / "real").mkdir()
        target.symlink_to(tmp_path / "real")
    elif case == "one of the parts":
        target, sources = parts[0], parts[1:]
    result = cli("merge", target, *sources)
    real = target.resolve()
    with recorded("target", f"merge into: {case}"):
        assert result.exit_code == 0, result.output
        assert tree(real) == tree(single)
        assert target.exists()
        assert case != "symlink to an empty folder" or target.is_symlink()


def _loads(folder: Path) -> dict[str, int] | str:
    """Rows per split ``datasets.load_dataset`` finds in ``folder``'s cot, or why not."""
    try:
        loaded = datasets.load_dataset(str(folder), "cot")
    except Exception as error:  # any refusal counts; wrong data must never be loaded
        return type(error).__name__
    return {name: split.num_rows for name, split in loaded.items()}


def _finish_killed_after(renames: int):
    """An ``os.rename`` for :mod:`posgen.store.writer` that dies after ``renames`` calls."""
    real, calls = os.rename, []

    def rename(src, dst):
        if len(calls) == renames:
            raise KeyboardInterrupt  # the run dies here, as under SIGKILL
        calls.append(dst)
        real(src, dst)

    return rename


UNFINISHED = {  # case -> (parts written, renames before the last part's finish dies)
    "1 of 3 parts": (1, None),
    "2 of 3 parts": (2, None),
    "finish killed before the card": (3, 0),
    "finish killed after the card": (3, 1),
    "finish killed after the data": (3, 2),
}
MISSING = {1: "2 of 3 parts missing: 1/3, 2/3", 2: "1 of 3 parts missing: 2/3"}


@pytest.mark.parametrize("case", list(UNFINISHED))
def test_an_unfinished_part_folder_never_loads_wrong_data_and_merge_completes_it(
    tree, assert_clean_error, cli, recorded, tmp_path, single, monkeypatch, case
):
    out = tmp_path / "ds"
    written, renames = UNFINISHED[case]
    for i in range(min(written, 2)):
        part(out, i)
    if renames is not None:
        monkeypatch.setattr(posgen.store.writer.os, "rename", _finish_killed_after(renames))
        with pytest.raises(KeyboardInterrupt):
            part(out, 2)
        monkeypatch.undo()
    seen = _loads(out)
    with recorded("kill", f"parts: {case}"):
        assert isinstance(seen, str) or seen == _loads(single), seen  # whole or nothing
        with pytest.raises(DamagedDataset) as error:  # what load says of a folder it cannot use
            load(out)
        assert "unfinished --part run" in error.value.lines[0]
        assert_clean_error(cli("validate", out), 2, "unfinished --part run")
        merged = cli("merge", out)
        if written < 3:  # merge names the missing parts
            assert_clean_error(merged, 2, MISSING[written])
        else:
            assert merged.exit_code == 0, merged.output
            assert tree(out) == tree(single)


def test_parts_finishing_at_once_finish_the_folder_once(tree, recorded, tmp_path, single):
    out = tmp_path / "ds"
    part(out, 0)
    with ThreadPoolExecutor(2) as pool:  # the two last parts finish at once
        results = list(pool.map(lambda i: part(out, i), (1, 2)))
    finished = [r for r in results if r is not None]
    with recorded("race", "two parts finishing at once"):
        assert len(finished) >= 1
        assert tree(out) == tree(single)
        assert check_dataset(out) == []


LINKS = ["link to a dataset", "dangling link", "chain of links", "relative link",
         "parked link left by an older run"]  # fmt: skip


def _symlink_out(case: str, base: Path, cli) -> tuple[Path, Path]:
    """The link to pass as ``--out`` and the folder it leads to."""
    real = base / ("nowhere/ds" if case == "dangling link" else "sub/real")
    if case != "dangling link":
        assert cli("generate", "--out", real, *FLAGS).exit_code == 0
    (base / "link").symlink_to(Path("sub/real") if case == "relative link" else real)
    if case == "chain of links":
        (base / "link2").symlink_to(base / "link")
        return base / "link2", real
    if case.startswith("parked"):  # what older versions left: the link parked beside a folder
        (base / ".link.posgen-old-1a2b3c4d").symlink_to(real)
    return base / "link", real


@pytest.mark.parametrize("case", LINKS)
def test_a_symlink_out_is_followed_kept_and_leaves_nothing_behind(cli, recorded, tmp_path, case):
    base = tmp_path / "base"
    base.mkdir()
    link, real = _symlink_out(case, base, cli)
    result = cli("generate", "--out", link, *FLAGS, "--seed", "3", "--overwrite")
    again = cli("generate", "--out", link, *FLAGS, "--seed", "4", "--overwrite")
    links = sorted(p.name for p in base.iterdir() if p.is_symlink())
    with recorded("target", f"--out: {case}"):
        assert result.exit_code == 0, result.output
        assert again.exit_code == 0, again.output
        assert link.is_symlink()
        assert check_dataset(real) == []
        assert '"seed": 4' in (real / "posgen.json").read_text()
        assert not any(".posgen-" in name for name in links)
        assert leftovers(real) == []
        assert leftovers(link) == []


def test_parts_through_a_symlink_land_where_it_points(tree, recorded, tmp_path, single):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for i in range(3):
        part(tmp_path / "link", i)
    with recorded("target", "--part into a symlink"):
        assert (tmp_path / "link").is_symlink()
        assert tree(tmp_path / "real") == tree(single)


API_REFUSALS = {  # write_dataset's own checks: a script gets what the command line gets
    "overwrite=True over a dataset holding a user's notes": (
        "ds", {"overwrite": True}, "holds files that are not the dataset's (my_notes.txt)"),
    "a dataset inside the dataset": ("ds/variants/v2", {}, "is inside the dataset folder"),
    "a part inside the dataset": ("ds/p", {"part": (0, 2)}, "is inside the dataset folder"),
    "a merge inside the dataset": ("ds/m", {"merge": []}, "is inside the dataset folder"),
    "a dataset under a file": ("mine.txt/ds", {}, "mine.txt is a file, not a folder"),
    "a dataset two folders under a file": ("mine.txt/a/ds", {}, "mine.txt is a file, not"),
    "a part under a file": ("mine.txt/p", {"part": (0, 2)}, "mine.txt is a file, not a folder"),
    "a dataset onto a file": ("mine.txt", {}, "mine.txt exists and is not a folder"),
    "a part onto a file": ("mine.txt", {"part": (0, 2)}, "mine.txt exists and is not a folder"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(API_REFUSALS))
def test_write_dataset_never_deletes_a_users_file_or_writes_inside_a_dataset_or_a_file(
    tree, recorded, tmp_path, case
):
    out, options, words = API_REFUSALS[case]
    write_dataset(bench(), tmp_path / "ds", shard_bytes=SHARD)
    (tmp_path / "ds" / "my_notes.txt").write_text("precious")
    (tmp_path / "mine.txt").write_text("mine")
    before = tree(tmp_path)
    spec = None if "merge" in options else bench(1)
    with recorded("target", f"write_dataset: {case}"):
        with pytest.raises(posgen.store.writer.OutputExistsError, match=re.escape(words)):
            write_dataset(spec, tmp_path / out, shard_bytes=SHARD, **options)
        assert tree(tmp_path) == before
