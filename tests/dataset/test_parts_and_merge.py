"""Parallel and shard-addressable output: any split of the work gives the same bytes."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from posgen import write_dataset
from posgen.card import unvalidated_card
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.store import FORMATS, writer
from posgen.store.manifest import CARD_NAME, plan_benchmark
from posgen.store.writer import PARTS_DIR, IncompleteError, PartsError
from posgen.tasks import TASKS

SHARD_BYTES, GROUP_BYTES = 20_000, 4_096


def bench(**fields):
    base = dict(train_size=700, val_size=90, test_size=80, test_length=[96, 160])
    return BenchmarkSpec(
        name="par", configs={task: TaskSpec(task=task, **{**base, **fields}) for task in TASKS}
    )


def write(out, spec=None, **options):
    """The store's ``write_dataset`` (no card unless ``finish``) at this file's sizes."""
    sizes = dict(shard_bytes=SHARD_BYTES, row_group_bytes=GROUP_BYTES)
    return writer.write_dataset(spec or bench(), out, **sizes, **options)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "ds"
    write_dataset(bench(), out, shard_bytes=SHARD_BYTES, row_group_bytes=GROUP_BYTES)
    return out


def test_two_processes_write_the_same_bytes_as_one(tree, tmp_path, single):
    out = tmp_path / "ds"
    write_dataset(bench(), out, shard_bytes=SHARD_BYTES, row_group_bytes=GROUP_BYTES, num_proc=2)
    assert tree(out) == tree(single)


def test_three_parts_in_any_order_equal_a_single_run(tree, tmp_path, single):
    assert len(plan_benchmark(bench(), SHARD_BYTES)) >= 12  # parts really split the work
    out = tmp_path / "ds"
    results = [write(out, part=(i, 3), finish=unvalidated_card) for i in (2, 0, 1)]
    assert results[0] is None  # parts still missing
    assert results[1] is None
    assert results[2].to_json() == (single / "posgen.json").read_text()
    assert not (out / PARTS_DIR).exists()
    assert tree(out) == tree(single)


def test_parts_in_separate_folders_merge_into_a_single_run(tree, cli, tmp_path, single):
    for i in range(3):  # one part with worker processes: each pool costs a spawn
        write(tmp_path / f"p{i}", part=(i, 3), num_proc=2 if i == 0 else 1)
    args = ["merge", str(tmp_path / "ds"), *(str(tmp_path / f"p{i}") for i in range(3))]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert tree(tmp_path / "ds") == tree(single)


def test_finishing_with_a_missing_part_names_it(tmp_path):
    write(tmp_path / "ds", part=(0, 3))
    with pytest.raises(IncompleteError, match="2 of 3 parts missing: 1/3, 2/3"):
        writer.write_dataset(None, tmp_path / "ds", merge=[])


def test_parts_of_another_spec_are_refused(tmp_path):
    write(tmp_path / "ds", part=(0, 2))
    with pytest.raises(PartsError, match="another benchmark"):
        write(tmp_path / "ds", bench(seed=5), part=(1, 2))


@pytest.mark.parametrize("storage", list(FORMATS))
def test_files_do_not_depend_on_the_block_size(tree, tmp_path, storage):
    small = bench(train_size=300, val_size=20, test_size=20)
    write(tmp_path / "a", small, storage=storage)
    write(tmp_path / "b", small, storage=storage, block_rows=7)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")


def test_row_groups_hold_the_rows_the_bytes_say(single):
    path = next((single / "data" / "cot").glob("train-00001-*.parquet"))
    groups = pq.ParquetFile(path).metadata
    sizes = [groups.row_group(i).num_rows for i in range(groups.num_row_groups)]
    assert sizes[:-1] == [GROUP_BYTES // 64] * (len(sizes) - 1)


def test_cli_parts_in_one_folder_equal_a_single_cli_run(tree, cli, tmp_path):
    args = ["--task", "cot", "--train-size", "3000", "--val-size", "300", "--test-size", "300",
            "--shard-mb", "1", "-q"]  # fmt: skip
    assert cli("generate", "--out", tmp_path / "a", *args).exit_code == 0
    for i in (1, 0):
        result = cli("generate", "--out", tmp_path / "b", "--part", f"{i}/2", *args)
        assert result.exit_code == 0, result.output
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


def test_a_part_into_a_finished_dataset_is_refused(cli, tmp_path, single):
    result = cli("generate", "--out", str(single), "--task", "cot", "--part", "0/2")
    assert result.exit_code == 2
    assert "holds a finished dataset" in result.output


def test_tokens_are_byte_stream_split_with_zstd_and_ids_are_plain(single):
    path = next((single / "data" / "cot").glob("train-00000-*.parquet"))
    group = pq.ParquetFile(path).metadata.row_group(0)
    ids, tokens = group.column(0), group.column(1)
    assert tokens.path_in_schema == "tokens.list.element"
    assert "BYTE_STREAM_SPLIT" in tokens.encodings
    assert tokens.compression == "ZSTD"
    assert "RLE_DICTIONARY" not in tokens.encodings
    assert "RLE_DICTIONARY" not in ids.encodings
    assert ids.statistics is not None
    assert not tokens.is_stats_set


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
