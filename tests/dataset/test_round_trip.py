"""Dataset folders: `load_dataset` round trip, manifest, determinism, atomicity."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posgen import write_dataset
from posgen.generator import generate_split
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.store.formats import to_dataset_dict
from posgen.store.manifest import read_manifest, sha256_file
from posgen.store.safety import OutputExistsError
from posgen.tasks import TASKS


def small_bench(seeding="disjoint", **fields):
    base = dict(train_size=300, val_size=50, test_size=40, test_length=[96, 128], seeding=seeding)
    return BenchmarkSpec(
        name="small",
        configs={task: TaskSpec(task=task, **{**base, **fields}) for task in TASKS},
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "small"
    manifest = write_dataset(small_bench(), out, shard_bytes=4096, row_group_bytes=1024)
    return out, manifest


@pytest.mark.parametrize("config", TASKS)
def test_load_dataset_reads_every_config_offline_with_integer_tokens(written, config):
    out, _ = written
    spec = small_bench().configs[config]
    loaded = datasets.load_dataset(str(out), config)
    assert set(loaded) == set(spec.split_names)
    assert loaded["train"].features["tokens"] == datasets.List(datasets.Value("uint8"))
    assert loaded["train"].features["id"] == datasets.Value("int64")
    for split in spec.split_names:
        data = loaded[split].with_format("numpy")
        tokens = np.stack(data["tokens"])
        assert tokens.shape == (spec.split_size(split), spec.split_length(split))
        assert list(data["id"]) == list(range(spec.split_size(split)))
        assert np.array_equal(tokens, generate_split(spec, split))


def test_default_config_is_the_first(written):
    out, _ = written
    assert datasets.load_dataset(str(out))["train"].num_rows == 300


def test_manifest_records_spec_rows_lengths_and_checksums(written):
    out, manifest = written
    assert (out / "posgen.json").read_text() == manifest.to_json()
    assert read_manifest(out) == manifest
    entry = manifest.configs["cot"]
    assert entry.spec_id == small_bench().configs["cot"].spec_id
    split = entry.splits["test_128"]
    assert (split.rows, split.length, split.ood_boundary) == (40, 128, 64)
    assert len(entry.splits["train"].files) > 1  # sharded by shard_bytes
    for info in entry.splits.values():
        assert sum(f.rows for f in info.files) == info.rows
        for f in info.files:
            assert sha256_file(out / f.path) == f.sha256


def test_parquet_files_carry_an_explicit_schema_and_provenance(written):
    out, manifest = written
    path = out / manifest.configs["recursive"].splits["train"].files[0].path
    schema = pq.read_schema(path)
    assert schema.field("tokens").type.value_type == pa.uint8()
    assert not schema.field("id").nullable
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    assert meta["posgen.split"] == "train"
    assert meta["posgen.config"] == "recursive"
    assert meta["posgen.spec_id"] == manifest.configs["recursive"].spec_id


def test_existing_output_is_never_touched_without_overwrite(tmp_path):
    out = tmp_path / "ds"
    write_dataset(small_bench(), out)
    before = (out / "posgen.json").read_bytes()
    with pytest.raises(OutputExistsError):
        write_dataset(small_bench(seed=1), out)
    assert (out / "posgen.json").read_bytes() == before
    write_dataset(small_bench(seed=1), out, overwrite=True)
    assert (out / "posgen.json").read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_a_folder_that_is_not_a_dataset_is_never_replaced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(OutputExistsError, match="not a posgen dataset"):
        write_dataset(small_bench(), tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_a_failed_run_leaves_no_folder_behind(tmp_path, monkeypatch):
    import posgen.card

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(posgen.card, "render_card", explode)
    with pytest.raises(OSError):
        write_dataset(small_bench(), tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


def test_in_memory_dataset_dict_equals_the_generated_arrays():
    spec = TaskSpec(task="semirecursive", train_size=100, val_size=10, test_size=10)
    dd = to_dataset_dict(spec)
    assert list(dd) == ["train", "validation", "test"]
    tokens = np.stack(dd["test"].with_format("numpy")["tokens"])
    assert np.array_equal(tokens, generate_split(spec, "test"))
