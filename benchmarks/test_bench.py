"""`python -m benchmarks.bench` runs end to end (tiny sizes; the figures themselves are not
tested): run by `make test` with the suite, so the benchmarks cannot rot."""

from __future__ import annotations

import numpy as np

from benchmarks.bench import main, plain_loop_rows
from posgen.generator import grow
from posgen.spec import TaskSpec
from posgen.tasks import TASKS
from tests.oracle import grow_row


def test_the_bench_plain_loop_is_the_oracle():
    windows = np.random.default_rng(3).integers(0, 17, size=(5, 4)).tolist()
    for task in TASKS:
        expected = [grow_row(task, w, 40, 17, 3, 1) for w in windows]
        assert plain_loop_rows(task, windows, 40, 17, 3, 1) == expected
        assert grow(TaskSpec(task=task), np.array(windows), 40).tolist() == expected


def test_bench_prints_and_writes_every_column_and_the_growth_table(tmp_path, capsys):
    target = tmp_path / "BENCH.md"
    args = ["--task", "cot", "--length", "64", "--tokens", "20000", "--repeat", "1",
            "--num-proc", "1", "--write", str(target)]  # fmt: skip
    assert main(args) == 0
    text = target.read_text()
    assert text == capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("| cot | 64 |"))
    assert len(row.split("|")) == 17  # 15 columns
    assert "MiB" in row and "x |" in row and " 0 M " not in row
    assert "| cot | rows (" in text and "| cot | length (" in text


def test_parquet_settings_append_a_section_to_the_written_file(tmp_path):
    target = tmp_path / "BENCH.md"
    target.write_text("# main table\n")
    assert (
        main(["--parquet-settings", "--tokens", "20000", "--repeat", "1", "--write", str(target)])
        == 0
    )
    text = target.read_text()
    assert text.startswith("# main table\n\n## Parquet settings")
    assert "| byte stream split, zstd-1 (posgen) |" in text and "| plain, zstd-1 |" in text


def test_the_ops_section_has_a_row_per_op_and_task(capsys):
    from posgen.tasks import op_names

    assert main(["--ops", "--task", "cot", "--tokens", "20000", "--repeat", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0][2:] for row in rows[1:]] == list(op_names())
    assert all(row.count(" M ") + row.count(" G ") == 2 for row in rows[1:])
