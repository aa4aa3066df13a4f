"""The Arrow IPC (save_to_disk) output loads with datasets.load_from_disk, same rows."""

from __future__ import annotations

import json

import datasets
import numpy as np

from posgen import write_dataset
from posgen.generator import generate_split
from posgen.spec import BenchmarkSpec, TaskSpec
from tests.cli_support import invoke


def test_arrow_folders_load_from_disk_with_the_generated_rows(tmp_path):
    spec = TaskSpec(task="semirecursive", modulus=300, train_size=500, val_size=20, test_size=30)
    bench = BenchmarkSpec(name="ipc", configs={"semi": spec})
    manifest = write_dataset(
        bench, tmp_path / "ds", storage="arrow", shard_bytes=25_000, num_proc=2
    )
    assert len(manifest.configs["semi"].splits["train"].files) == 3
    loaded = datasets.load_from_disk(str(tmp_path / "ds" / "semi"))
    assert loaded["train"].features["tokens"] == datasets.List(datasets.Value("uint16"))
    for split in spec.split_names:
        rows = loaded[split].with_format("numpy", dtype=np.uint16)
        assert np.array_equal(np.stack(rows["tokens"]), generate_split(spec, split))
        assert list(rows["id"]) == list(range(spec.split_size(split)))


def test_cli_format_arrow_writes_a_manifest_marked_arrow_ipc(tmp_path):
    out = tmp_path / "ds"
    args = ["generate", "--out", str(out), "--task", "cot", "--format", "arrow", "-q",
            "--train-size", "40", "--val-size", "5", "--test-size", "5"]  # fmt: skip
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "posgen.json").read_text())
    assert manifest["storage"].startswith("arrow-ipc")
    assert "parquet" not in manifest
    assert datasets.load_from_disk(str(out / "cot"))["validation"].num_rows == 5


def test_a_part_with_arrow_format_is_refused(tmp_path):
    args = ["generate", "--out", str(tmp_path / "x"), "--format", "arrow", "--part", "0/2"]
    result = invoke(*args)
    assert result.exit_code == 2
    assert "error: --part writes Parquet only" in result.output


def test_arrow_files_are_the_same_bytes_whatever_the_block_size(tmp_path):
    spec = TaskSpec(task="cot", train_size=300, val_size=20, test_size=20, train_length=16)
    bench = BenchmarkSpec(name="ipc", configs={"cot": spec})
    write_dataset(bench, tmp_path / "a", storage="arrow", finish=None)
    write_dataset(bench, tmp_path / "b", storage="arrow", block_rows=7, finish=None)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.arrow"))
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.arrow"))
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
