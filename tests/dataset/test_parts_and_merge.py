"""Parallel and shard-addressable output: any split of the work gives the same bytes."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from posgen.card import unvalidated_card
from posgen.errors import UsageError
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.store import FORMATS, writer
from posgen.store.manifest import CARD_NAME, PARTS_DIR, plan_benchmark
from posgen.tasks import TASKS

SHARD_BYTES, GROUP_BYTES = 20_000, 4_096


def bench(**fields):
    base = {"train_size": 700, "val_size": 90, "test_size": 80, "test_length": [96, 160], **fields}
    return BenchmarkSpec(name="par", configs={task: TaskSpec(task=task, **base) for task in TASKS})


def write(out, spec=None, **options):  # the store's (no card unless ``finish``), these sizes
    sizes = dict(shard_bytes=SHARD_BYTES, row_group_bytes=GROUP_BYTES)
    return writer.write_dataset(spec or bench(), out, **{**sizes, **options})


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "ds"
    write(out, finish=unvalidated_card)
    return out


@pytest.mark.parametrize(
    "way", ["two processes", "parts in one folder", "parts merged", "numpy integers"]
)
def test_any_split_of_the_work_writes_the_same_bytes_as_one_run(tree, cli, tmp_path, single, way):
    assert len(plan_benchmark(bench(), SHARD_BYTES)) >= 12  # parts really split the work
    out = tmp_path / "ds"
    if way == "two processes":
        write(out, num_proc=2, finish=unvalidated_card)
    elif way == "parts in one folder":
        results = [write(out, part=(i, 3), finish=unvalidated_card) for i in (2, 0, 1)]
        assert [result is None for result in results] == [True, True, False]  # until the last
    elif way == "numpy integers":  # were refused: 'must be a whole number >= 1, got np.int64(2)'
        sizes = {"shard_bytes": np.int64(SHARD_BYTES), "row_group_bytes": np.uint64(GROUP_BYTES),
                 "block_rows": np.int32(4096), "num_proc": np.int64(2)}  # fmt: skip
        for i in (1, 0):
            write(out, part=(np.int64(i), np.uint8(2)), finish=unvalidated_card, **sizes)
    else:
        parts = [tmp_path / f"p{i}" for i in range(3)]
        for i, folder in enumerate(parts):  # one part with worker processes: a pool costs a spawn
            write(folder, part=(i, 3), num_proc=2 if i == 0 else 1)
        result = cli("merge", out, *parts)
        assert result.exit_code == 0, result.output
        assert [list(folder.iterdir()) for folder in parts] == [[]] * 3  # no shell of a part run
    assert tree(out) == tree(single)


def test_a_merge_of_a_finished_dataset_checks_it_and_says_it_wrote_nothing(tree, cli, single):
    before = tree(single)
    result = cli("merge", single)
    assert result.exit_code == 0, result.output
    said = rf"^{re.escape(str(single))} was already complete: \d+ files checked, none written\n$"
    assert re.match(said, result.output), result.output  # not 'manifest and card written'
    assert tree(single) == before


@pytest.mark.parametrize("storage", list(FORMATS))
def test_files_do_not_depend_on_the_block_size(tree, tmp_path, storage):
    small = bench(train_size=300, val_size=20, test_size=20)
    write(tmp_path / "a", small, storage=storage)
    write(tmp_path / "b", small, storage=storage, block_rows=7)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")


def test_cli_parts_in_one_folder_equal_a_single_cli_run(tree, cli, tmp_path):
    args = ["--task", "cot", "--train-size", "3000", "--val-size", "300", "--test-size", "300",
            "--shard-mb", "1"]  # fmt: skip
    assert cli("generate", "--out", tmp_path / "a", *args, "-q").exit_code == 0
    for i, said in ((1, "; other parts still missing"), (0, " and finished it: ")):
        result = cli("generate", "--out", tmp_path / "b", "--part", f"{i}/2", *args)
        assert result.exit_code == 0 and said in result.output, result.output
    assert tree(tmp_path / "a") == tree(tmp_path / "b")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--part", "3/3"], "error: --part: part '3/3': need 0 <= I < N <= 99,999"),
        (["--part", "x"], "error: --part: expected I/N (e.g. 0/4), got 'x'"),
        (["--num-proc", "0"], "error: --num-proc must be >= 1, got 0"),
        (["--shard-mb", "0"], "error: --shard-mb must be >= 1, got 0"),
        (["--format", "arrow", "--part", "0/2"], "error: --part writes Parquet only"),
    ],
)
def test_bad_scale_flags_exit_2_with_one_line_each(
    assert_clean_error, cli, tmp_path, flags, message
):
    result = cli("generate", "--out", str(tmp_path / "x"), *flags)
    assert_clean_error(result, 2, message)
    assert not (tmp_path / "x").exists()


def test_parquet_row_groups_hold_the_bytes_given_tokens_byte_stream_split_ids_plain(single):
    path = next((single / "data" / "cot").glob("train-00001-*.parquet"))
    meta = pq.ParquetFile(path).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes[:-1] == [GROUP_BYTES // 64] * (len(sizes) - 1)
    ids, tokens = meta.row_group(0).column(0), meta.row_group(0).column(1)
    assert (tokens.path_in_schema, tokens.compression) == ("tokens.list.element", "ZSTD")
    assert "BYTE_STREAM_SPLIT" in tokens.encodings
    assert "RLE_DICTIONARY" not in tokens.encodings + ids.encodings
    assert ids.statistics is not None and not tokens.is_stats_set


def custom_card(root, manifest):
    (root / CARD_NAME).write_text(f"custom card of {manifest.benchmark.name}\n")


@pytest.mark.parametrize("merged", [False, True], ids=["last part", "merge"])
def test_whoever_finishes_the_run_uses_the_finish_step_it_was_handed(tmp_path, merged):
    folders = [tmp_path / (f"p{i}" if merged else "ds") for i in range(3)]
    for i, folder in enumerate(folders):
        write(folder, part=(i, 3), finish=None if merged else custom_card)
    if merged:
        writer.write_dataset(None, tmp_path / "ds", merge=folders, finish=custom_card)
    assert (tmp_path / "ds" / CARD_NAME).read_text() == "custom card of par\n"


@pytest.mark.parametrize("part", [None, (0, 1)], ids=["whole run", "one part of one"])
def test_the_store_alone_writes_no_card(tree, tmp_path, single, part):
    out = tmp_path / "ds"
    write(out, part=part)
    assert tree(out) == {k: v for k, v in tree(single).items() if k != CARD_NAME}


def test_a_finish_stopped_between_the_manifest_and_the_card_is_done_again(tmp_path):
    def stopped(root, manifest):  # posgen.json written, then a SIGINT in the card writer
        raise KeyboardInterrupt

    write(tmp_path / "ds", part=(0, 2), finish=custom_card)
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path / "ds", part=(1, 2), finish=stopped)
    assert not (tmp_path / "ds" / CARD_NAME).exists()
    writer.write_dataset(None, tmp_path / "ds", merge=[], finish=custom_card)
    assert (tmp_path / "ds" / CARD_NAME).read_text() == "custom card of par\n"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [({"part": (0, 3)}, "count"), ({"part": (1, 2), "shard_bytes": 2 * SHARD_BYTES}, "shard")],
)
def test_a_part_of_another_shape_is_refused_before_it_writes(tree, tmp_path, options, fragment):
    write(tmp_path / "ds", part=(0, 2))
    before = tree(tmp_path / "ds")
    with pytest.raises(writer.PartsError, match=f"parts disagree on {fragment}"):
        write(tmp_path / "ds", **options)
    assert tree(tmp_path / "ds") == before
    write(tmp_path / "ds", part=(1, 2))  # the folder still takes its own other part
    assert (tmp_path / "ds" / "posgen.json").is_file()


def test_a_part_folder_named_twice_is_refused_before_anything_moves(tree, tmp_path):
    write(tmp_path / "p0", part=(0, 2))
    (tmp_path / "link").symlink_to(tmp_path / "p0")
    before = tree(tmp_path / "p0")
    for twice in (["p0", "p0"], ["p0", "link"]):
        with pytest.raises(writer.PartsError, match="name each part folder once"):
            writer.write_dataset(None, tmp_path / "ds", merge=[tmp_path / n for n in twice])
        assert tree(tmp_path / "p0") == before
        assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("stop", ["second file", "first part moved", "last record"])
def test_a_merge_stopped_while_moving_is_finished_by_the_same_command(
    tree, cli, tmp_path, monkeypatch, stop
):
    """A full disk mid-move: the same command finishes it, as if it never stopped."""
    small = bench(train_size=300, val_size=20, test_size=20, test_length=[96])
    for run in ("whole", "stopped"):
        for i in range(2):
            write(tmp_path / run / f"p{i}", small, part=(i, 2))
    move, moved, fail_at = writer.shutil.move, [], [0]

    def full_disk(source, target):
        moved.append(source)
        if len(moved) == fail_at[0]:
            raise OSError(28, "No space left on device")
        return move(source, target)

    monkeypatch.setattr(writer.shutil, "move", full_disk)

    def merge(run):
        return cli("merge", tmp_path / run / "ds", *[tmp_path / run / f"p{i}" for i in range(2)])

    assert merge("whole").exit_code == 0
    first_record = next(i for i, p in enumerate(moved) if p.endswith(".json")) + 1
    fail_at[0] = {"second file": 2, "first part moved": first_record + 1}.get(stop, len(moved))
    moved.clear()
    result = merge("stopped")
    assert result.exit_code == 1 and "no space left on device" in result.output
    fail_at[0] = 0
    assert merge("stopped").exit_code == 0
    assert tree(tmp_path / "stopped" / "ds") == tree(tmp_path / "whole" / "ds")


def test_a_merge_missing_a_part_is_refused_before_anything_moves(tree, cli, tmp_path):
    small = bench(train_size=300, val_size=20, test_size=20, test_length=[96])
    for i in range(3):
        write(tmp_path / f"p{i}", small, part=(i, 3))
    before = tree(tmp_path)
    result = cli("merge", tmp_path / "ds", tmp_path / "p0", tmp_path / "p1")
    assert result.exit_code == 2
    assert result.output == "error: 1 of 3 parts missing: 2/3; nothing was moved\n"
    assert tree(tmp_path) == before
    merged = cli("merge", tmp_path / "ds", *(tmp_path / f"p{i}" for i in range(3)), "-q")
    assert merged.exit_code == 0 and merged.output == "", merged.output


API_ARGUMENTS = {  # write_dataset(**arguments) -> the refusal, before anything is written
    "part of float numbers": ({"part": (0.0, 2)}, "need whole numbers 0 <= I < N <= 99,999"),
    "part of 10^9 parts": ({"part": (0, 10**9)}, "need whole numbers 0 <= I < N <= 99,999"),
    "shard_bytes 0": ({"shard_bytes": 0}, "shard_bytes must be a whole number >= 1"),
    "block_rows -1": ({"block_rows": -1}, "block_rows must be a whole number >= 1"),
    "num_proc 0": ({"num_proc": 0}, "num_proc must be a whole number >= 1"),
    "part a string (a ValueError unpacking it)": ({"part": "1/2"}, "part '1/2': need whole"),
    "part of three numbers": ({"part": (0, 1, 2)}, "need whole numbers 0 <= I < N"),
    "out None": ({"out": None}, "a dataset folder must be a path, not NoneType"),
    "out an int": ({"out": 3}, "a dataset folder must be a path, not int"),
    "out bytes": ({"out": b"ds"}, "a dataset folder must be a path, not bytes"),
    "storage unknown": ({"storage": "zip"}, "unknown format 'zip'; formats: "),
}  # fmt: skip


@pytest.mark.parametrize("case", list(API_ARGUMENTS))
def test_write_dataset_refuses_bad_arguments_before_writing(tmp_path, case):
    changed, fragment = API_ARGUMENTS[case]
    changed = {"out": tmp_path / "ds", **changed}
    with pytest.raises(UsageError, match=re.escape(fragment)):
        write(**changed)
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(("made", "words"), [("ds", "missing"), (f"ds/{PARTS_DIR}", "empty")])
def test_a_merge_into_a_folder_without_parts_is_one_error_line(
    assert_clean_error, cli, tmp_path, made, words
):
    (tmp_path / made).mkdir(parents=True)
    assert_clean_error(
        cli("merge", tmp_path / "ds"), 2, f"holds no posgen parts ({PARTS_DIR}/ is {words})"
    )


def _edit_record(part, change):
    record = next((part / PARTS_DIR).glob("part-*.json"))
    body = json.loads(record.read_text())
    change(body)
    record.write_text(json.dumps(body))


BROKEN_PARTS = {  # case -> (what is done to the part folders p0 and p1, the error line's words)
    "a record cut short": (lambda p: next((p[0] / PARTS_DIR).glob("part-*.json")).write_text("{"),
                           "is unreadable"),
    "a record of another format": (lambda p: _edit_record(p[0], lambda b: b.update(format="x")),
                                   "is not a posgen part record"),
    "a listed file removed": (lambda p: next((p[0] / PARTS_DIR).rglob("*.parquet")).unlink(),
                              "is listed in its part record but missing"),
    "a folder of no parts": (lambda p: shutil.rmtree(p[1] / PARTS_DIR),
                             f"holds no posgen parts ({PARTS_DIR}/ is missing or empty)"),
    "every record's spec_id edited": (
        lambda p: [_edit_record(part, lambda b: b.update(spec_id="0" * 16)) for part in p],
        "a part record's benchmark does not match its spec id"),
    "a record listing no file": (lambda p: _edit_record(p[0], lambda b: b.update(files=[])),
                                 "no part recorded data/"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BROKEN_PARTS))
def test_a_merge_of_broken_parts_is_one_error_line(assert_clean_error, cli, tmp_path, case):
    damage, words = BROKEN_PARTS[case]
    parts = [tmp_path / f"p{i}" for i in range(2)]
    for i, part in enumerate(parts):
        write(part, bench(train_size=300, val_size=20, test_size=20, test_length=[96]), part=(i, 2))
    damage(parts)
    assert_clean_error(cli("merge", tmp_path / "ds", *parts), (1, 2), words)


def test_merge_of_one_folder_given_as_a_string_reads_that_folder(tmp_path):
    write(tmp_path / "p0", bench(), part=(0, 2))  # not letter by letter
    with pytest.raises(UsageError, match="1 of 2 parts missing: 1/2"):
        writer.write_dataset(None, tmp_path / "ds", merge=str(tmp_path / "p0"))
    with pytest.raises(TypeError, match="needs a benchmark unless it merges parts"):
        writer.write_dataset(None, tmp_path / "ds")  # no merge=: None is no benchmark


def test_a_part_file_changed_after_its_part_was_written_is_never_published(cli, tmp_path):
    small = bench(train_size=300, val_size=20, test_size=20, test_length=[96])
    for i in range(2):
        write(tmp_path / f"p{i}", small, part=(i, 2))
    shard = sorted((tmp_path / "p1" / ".posgen-parts" / "data").rglob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    result = cli("merge", tmp_path / "ds", tmp_path / "p0", tmp_path / "p1")
    moved = tmp_path / "ds" / shard.relative_to(tmp_path / "p1")  # where it lies, not will
    assert result.exit_code == 1 and f"{moved}: sha256 differs" in result.output, result.output
    assert f"(written by --part 1/2: rerun that part into {tmp_path / 'ds'})" in result.output
    assert "its parts were not finished into a dataset" in result.output
    assert not (tmp_path / "ds" / "posgen.json").exists()
    write(tmp_path / "ds", small, part=(1, 2))  # as the line says: the dataset is finished
    assert cli("validate", tmp_path / "ds").exit_code == 0
