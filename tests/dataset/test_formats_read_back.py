"""Both storage formats through every command (validate, card, score, baseline, merge, load),
and one wording for a damaged file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest

from posgen import write_dataset
from posgen.generator import generate_split
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.store import FORMATS, DamagedDataset, read_manifest
from posgen.store.dataset import load

SPEC = TaskSpec(task="cot", train_size=120, val_size=10, test_size=12)


@pytest.fixture(scope="module", params=list(FORMATS))
def folder(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(request.param) / "ds"
    bench = BenchmarkSpec(name="both", configs={"cot": SPEC})
    write_dataset(bench, out, storage=request.param, shard_bytes=4000)
    return out


def test_every_command_works_on_both_formats(cli, folder, tmp_path):
    assert read_manifest(folder).storage_format in FORMATS
    validated = cli("validate", folder)
    assert validated.exit_code == 0, validated.output
    carded = cli("card", folder)
    assert carded.exit_code == 0, carded.output
    assert "(validated)" in carded.output, carded.output
    preds = tmp_path / "oracle.npy"
    made = cli("baseline", "--kind", "oracle", "--data", folder, "--out", preds)
    assert made.exit_code == 0, made.output
    assert "ID 100.00%, OOD 100.00%" in made.output, made.output
    scored = cli("score", "--data", folder, "--predictions", preds)
    assert scored.exit_code == 0, scored.output
    merged = cli("merge", folder)
    assert merged.exit_code == 0, merged.output
    loaded = load(folder, "cot")
    tokens = np.stack(loaded["test"].with_format("numpy")["tokens"])
    assert np.array_equal(tokens, generate_split(SPEC, "test"))


def test_both_formats_load_with_load_dataset_through_the_card(folder):
    loaded = datasets.load_dataset(str(folder), "cot")
    rows = {name: data.num_rows for name, data in loaded.items()}
    assert rows == {"train": 120, "validation": 10, "test": 12}


def test_a_damaged_file_reads_the_same_in_load_validate_and_merge(cli, folder, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(folder, root)
    victim = root / read_manifest(root).configs["cot"].splits["train"].files[1].path
    victim.write_bytes(victim.read_bytes()[:-5])
    with pytest.raises(DamagedDataset) as caught:
        load(root, "cot")
    lines = caught.value.lines
    assert lines[0].startswith(f"{victim}: ")
    assert "truncated" in lines[0]
    validated = cli("validate", root)
    merged = cli("merge", root)
    assert validated.exit_code == 1
    assert merged.exit_code == 1
    for line in lines:
        assert line in " ".join(validated.output.split()), validated.output
        assert f"error: {line}" in merged.output, merged.output


@pytest.mark.parametrize("storage", list(FORMATS))
def test_publish_writes_a_validated_card_in_both_formats(cli, tmp_path, storage):
    spec_file = tmp_path / "tiny.toml"
    spec_file.write_text('name = "tiny"\n[defaults]\ntrain_size = 40\nval_size = 8\n'
                         'test_size = 8\n[configs.cot]\n')  # fmt: skip
    out = tmp_path / "hub"
    result = cli("publish", spec_file, "--out", out, "--format", storage, "--baselines", "-q")
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    assert "**Validated: all" in card
    assert "| cot | oracle |" in card
    assert read_manifest(out).storage_format == storage
    assert load(out)["validation"].num_rows == 8


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


def test_cli_format_arrow_writes_a_manifest_marked_arrow_ipc(cli, tmp_path):
    out = tmp_path / "ds"
    args = ["generate", "--out", str(out), "--task", "cot", "--format", "arrow", "-q",
            "--train-size", "40", "--val-size", "5", "--test-size", "5"]  # fmt: skip
    result = cli(*args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "posgen.json").read_text())
    assert manifest["storage"].startswith("arrow-ipc")
    assert "parquet" not in manifest
    assert datasets.load_from_disk(str(out / "cot"))["validation"].num_rows == 5


def test_a_part_with_arrow_format_is_refused(cli, tmp_path):
    args = ["generate", "--out", str(tmp_path / "x"), "--format", "arrow", "--part", "0/2"]
    result = cli(*args)
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
