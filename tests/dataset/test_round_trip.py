"""Dataset folders read back: ``load_dataset`` and ``load_from_disk`` give the generated rows,
the manifest records them, and both storage formats work in every command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posgen import write_dataset
from posgen.card import unvalidated_card
from posgen.errors import UsageError
from posgen.generator import generate_split, probe_rows
from posgen.spec import MAX_TEST_LENGTHS, BenchmarkSpec, TaskSpec
from posgen.store import FORMATS, DamagedDataset, read_manifest
from posgen.store.dataset import Dataset, SplitError, load
from posgen.store.formats import probe_schema, probe_table, to_dataset_dict
from posgen.store.manifest import sha256_file
from posgen.tasks import TASKS

SPEC = TaskSpec(task="cot", modulus=300, train_size=120, val_size=10, test_size=12)  # uint16
SMALL = TaskSpec(task="cot", modulus=5, near=2, far=1, train_length=12, test_length=20,
                 train_size=20, val_size=4, test_size=6)  # fmt: skip


@pytest.mark.parametrize("config", TASKS)
def test_load_dataset_reads_every_config_offline_with_integer_tokens(small_dataset, config):
    spec = read_manifest(small_dataset).configs[config].spec
    loaded = datasets.load_dataset(str(small_dataset), config)
    assert list(loaded) == list(spec.split_names)
    assert loaded["train"].features["tokens"] == datasets.List(datasets.Value("uint8"))
    assert loaded["train"].features["id"] == datasets.Value("int64")
    for split in spec.split_names:
        data = loaded[split].with_format("numpy")
        assert list(data["id"]) == list(range(spec.split_size(split)))
        assert np.array_equal(np.stack(data["tokens"]), generate_split(spec, split))
    assert datasets.load_dataset(str(small_dataset))["train"].num_rows == 120  # first config


def test_the_manifest_records_specs_rows_and_checksums_and_footers_their_place(small_dataset):
    manifest = read_manifest(small_dataset)
    assert (small_dataset / "posgen.json").read_text() == manifest.to_json()
    entry = manifest.configs["cot"]
    split = entry.splits["test_128"]
    assert (split.rows, split.length, split.ood_boundary) == (20, 128, 64)
    assert len(entry.splits["train"].files) > 1  # sharded by shard_bytes
    for info in entry.splits.values():
        assert sum(f.rows for f in info.files) == info.rows
        for f in info.files:
            assert sha256_file(small_dataset / f.path) == f.sha256
    schema = pq.read_schema(
        small_dataset / manifest.configs["recursive"].splits["train"].files[0].path
    )
    assert schema.field("tokens").type.value_type == pa.uint8()
    assert not schema.field("id").nullable
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    assert (meta["posgen.split"], meta["posgen.config"]) == ("train", "recursive")
    assert meta["posgen.spec_id"] == manifest.configs["recursive"].spec_id


@pytest.fixture(scope="module", params=list(FORMATS))
def folder(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(request.param) / "ds"
    bench = BenchmarkSpec(name="both", configs={"cot": SPEC})
    manifest = write_dataset(bench, out, storage=request.param, shard_bytes=4000, num_proc=2)
    assert len(manifest.configs["cot"].splits["train"].files) > 1
    return out


def test_every_command_works_on_both_formats(cli, folder, tmp_path):
    body = json.loads((folder / "posgen.json").read_text())
    assert ("storage" in body) != ("parquet" in body)  # one storage record, never both
    for args in (["validate", folder], ["card", folder], ["merge", folder]):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        assert args[0] != "card" or "(validated)" in result.output, result.output
    preds = tmp_path / "oracle.npy"
    made = cli("baseline", "--kind", "oracle", "--data", folder, "--out", preds)
    assert "ID 100.00%, OOD 100.00%" in made.output, made.output
    assert cli("score", "--data", folder, "--predictions", preds).exit_code == 0
    loaded, in_memory = load(folder, "cot"), to_dataset_dict(SPEC)
    assert loaded["train"].features["tokens"] == datasets.List(datasets.Value("uint16"))
    assert list(loaded) == list(in_memory) == list(SPEC.split_names)
    for split in SPEC.split_names:
        rows = loaded[split].with_format("numpy")
        assert list(rows["id"]) == list(range(SPEC.split_size(split)))
        for data in (rows, in_memory[split].with_format("numpy")):
            assert np.array_equal(np.stack(data["tokens"]), generate_split(SPEC, split))
    probe = probe_table(probe_rows(SPEC, "probe", 0, 12), probe_schema(300)).to_pylist()
    assert load(folder, "cot-probe")["probe"].to_list() == probe


@pytest.mark.parametrize("storage", ["parquet", "arrow"])
def test_a_non_ascii_folder_under_an_ascii_locale_is_written_validated_and_scored(
    tiny_spec_file, tmp_path, storage
):
    """LC_ALL=C without UTF-8 mode: paths are surrogate-escaped ``str`` that pyarrow, given
    them, encoded as UTF-8 (the new dataset failed its own check as damaged)."""
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    posgen = [sys.executable, "-m", "posgen"]
    out, preds = "\u00e9t\u00e9", f"pr\u00e9d.{storage}"
    for args in (
        ["generate", "--spec", tiny_spec_file, "--out", out, "--format", storage, "-q"],
        ["validate", out],
        ["baseline", "--kind", "oracle", "--data", out, "--out", preds, "-q"],
        ["score", "--data", out, "--predictions", preds],
    ):
        run = subprocess.run([*posgen, *map(str, args)], cwd=tmp_path, env=env, capture_output=True)
        assert run.returncode == 0, (args[0], run.stderr.decode(errors="replace"))


def test_a_damaged_file_reads_the_same_in_load_validate_and_merge(cli, folder, tmp_path):
    root = Path(shutil.copytree(folder, tmp_path / "ds"))
    victim = root / read_manifest(root).configs["cot"].splits["train"].files[1].path
    victim.write_bytes(victim.read_bytes()[:-5])
    with pytest.raises(DamagedDataset) as caught:
        load(root, "cot")
    lines = caught.value.lines
    assert lines[0].startswith(f"{victim}: ") and "truncated" in lines[0]
    validated, merged = cli("validate", root), cli("merge", root)
    assert (validated.exit_code, merged.exit_code) == (1, 1)
    for line in lines:
        assert line in " ".join(validated.output.split()), validated.output
        assert f"error: {line}" in merged.output, merged.output


def test_publish_writes_a_validated_card_in_arrow_format_too(cli, tmp_path, tiny_spec_file):
    out = tmp_path / "hub"  # Parquet: tests/card/test_publish.py
    result = cli("publish", tiny_spec_file, "--out", out, "--format", "arrow", "--baselines", "-q")
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    assert "**Validated: all" in card and "| cot | oracle |" in card
    assert read_manifest(out).storage_format == "arrow"
    assert load(out)["validation"].num_rows == 10


@pytest.mark.parametrize("storage", ["parquet", "arrow"])
def test_a_verified_load_refuses_a_card_or_sidecar_pointing_elsewhere(tmp_path, storage):
    """The card's ``configs`` or a sidecar's ``_data_files`` pointed outside: named, not loaded."""
    spec = SMALL
    root, bench = tmp_path / "ds", BenchmarkSpec(name="ds", configs={"cot": spec})
    write_dataset(bench, root, storage=storage, finish=unvalidated_card)
    outside = tmp_path / "outside"
    other = TaskSpec.model_validate({**spec.model_dump(), "seed": spec.seed + 1})
    write_dataset(BenchmarkSpec(name="ds", configs={"cot": other}), outside, storage=storage)
    test = read_manifest(outside).configs["cot"].splits["test"].files[0].path
    if storage == "parquet":
        card = (root / "README.md").read_text()
        assert "path: data/cot/test-*.parquet" in card
        card = card.replace("path: data/cot/test-*.parquet", f"path: {outside / test}")
        (root / "README.md").write_text(card)
        named = r"README\.md: its configs \(cot\) are not the files posgen\.json lists"
    else:
        state = root / "cot" / "test" / "state.json"
        body = json.loads(state.read_text())
        body["_data_files"] = [{"filename": os.path.relpath(outside / test, state.parent)}]
        state.write_text(json.dumps(body))
        named = r"test/state\.json: is not what posgen\.json"
    with pytest.raises(DamagedDataset, match=named):
        load(root, "cot")


@pytest.mark.parametrize("storage", ["parquet", "arrow"])
@pytest.mark.parametrize("names", [("zeta", "alpha"), ("x", "default")])
def test_a_load_naming_no_config_reads_the_default_config_verified_or_not(tmp_path, storage, names):
    """The manifest's first config, or the one named ``default``: what ``load_dataset`` reads."""
    root = tmp_path / "ds"
    specs = [SMALL, TaskSpec.model_validate({**SMALL.model_dump(), "task": "recursive"})]
    bench = BenchmarkSpec(name="ds", configs=dict(zip(names, specs, strict=True)))
    write_dataset(bench, root, storage=storage, finish=unvalidated_card)
    want = generate_split(bench.configs[read_manifest(root).default_config], "train").tolist()
    for loaded in (load(root), load(root, verify=False), datasets.load_dataset(str(root))):
        assert loaded["train"]["tokens"] == want


def test_a_handle_made_from_a_path_alone_reads_as_one_opened(small_dataset):
    made, opened = Dataset(small_dataset), Dataset.open(small_dataset)
    assert made.configs == opened.configs == list(TASKS)
    assert np.array_equal(made.split("cot", "test_128").tokens, generate_split(
        opened.spec("cot"), "test_128"))  # fmt: skip
    probe, reference = made.probe("cot", "probe"), opened.probe("cot", "probe")
    assert np.array_equal(probe.far_rule, reference.far_rule)
    assert np.array_equal(probe.probed, reference.probed)


@pytest.mark.parametrize("name", ["ds[1]", "ds?", "ds*"])
def test_a_verified_load_of_a_folder_named_like_a_pattern_reads_that_folder_alone(tmp_path, name):
    bench = BenchmarkSpec(name="ds", configs={"cot": SMALL})
    write_dataset(bench, tmp_path / name, finish=unvalidated_card)
    shutil.copytree(tmp_path / name, tmp_path / "dsx")  # what the name, as a pattern, matches
    loaded = load(tmp_path / name, "cot")
    assert loaded["test"]["tokens"] == generate_split(SMALL, "test").tolist()


@pytest.mark.parametrize("storage", ["parquet", "arrow"])
@pytest.mark.parametrize("verify", [True, False])
def test_a_folder_whose_path_holds_fsspecs_separator_is_refused_by_name(tmp_path, storage, verify):
    """fsspec reads ``a::b`` as two chained file systems: ``datasets`` looked elsewhere and
    raised ``FileNotFoundError``/``DataFilesNotFoundError`` for files that are there."""
    write_dataset(BenchmarkSpec(name="ds", configs={"cot": SMALL}), tmp_path / "a::b",
                  storage=storage, finish=unvalidated_card)  # fmt: skip
    if storage == "arrow" and verify:  # read file by file, without fsspec
        assert load(tmp_path / "a::b", "cot")["train"].num_rows == SMALL.train_size
        return
    with pytest.raises(UsageError, match=r"a::b.*: datasets cannot read a path holding '::'"):
        load(tmp_path / "a::b", "cot", verify=verify)


@pytest.mark.parametrize("where", ["cache", "data"])
def test_a_datasets_cache_that_cannot_be_written_is_a_usage_error_saying_how_to_move_it(
    tmp_path, monkeypatch, where
):
    """An unwritable HOME: ``datasets`` raised PermissionError for ``~/.cache`` (as a normal
    user; root ignores the mode bits, so the error is raised here by hand)."""
    write_dataset(BenchmarkSpec(name="ds", configs={"cot": SMALL}), tmp_path / "ds",
                  finish=unvalidated_card)  # fmt: skip
    home = Path(datasets.config.HF_DATASETS_CACHE).parents[1]
    failed = home if where == "cache" else tmp_path / "ds" / "data"

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(failed))

    monkeypatch.setattr(datasets, "load_dataset", refused)
    if where == "data":  # not the cache's: as it was
        with pytest.raises(PermissionError):
            load(tmp_path / "ds", "cot", verify=False)
        return
    with pytest.raises(
        UsageError,
        match=r"datasets cannot write its cache \(.*: permission denied\); set HF_DATASETS_CACHE",
    ):
        load(tmp_path / "ds", "cot")


@pytest.mark.parametrize("storage", ["parquet", "arrow"])
def test_an_unverified_load_reads_a_config_name_never_a_path_out_of_the_folder(tmp_path, storage):
    for name in ("ds", "other"):
        write_dataset(BenchmarkSpec(name=name, configs={"cot": SMALL}), tmp_path / name,
                      storage=storage, finish=unvalidated_card)  # fmt: skip
    for config in ("../other/cot", str(tmp_path / "other" / "cot"), "..", "cot/../cot"):
        with pytest.raises(SplitError, match=re.escape(f"no config {config!r} in ")):
            load(tmp_path / "ds", config, verify=False)
    assert load(tmp_path / "ds", "", verify=False)["train"].num_rows == SMALL.train_size


def test_a_spec_of_the_most_test_lengths_writes_and_reads_back(tmp_path):
    lengths = tuple(range(8, 8 + MAX_TEST_LENGTHS))  # a test and a probe split each
    spec = TaskSpec(task="recursive", modulus=5, near=2, far=1, train_length=8,
                    test_length=lengths, train_size=5, val_size=5, test_size=5)  # fmt: skip
    write_dataset(BenchmarkSpec(name="most", configs={"recursive": spec}), tmp_path / "ds")
    assert len(read_manifest(tmp_path / "ds").configs["recursive"].splits) == 2 + 2 * len(lengths)


def test_write_dataset_of_one_task_spec_says_how_to_make_a_benchmark(tmp_path):
    with pytest.raises(TypeError, match=r"takes a BenchmarkSpec, not a TaskSpec; one TaskSpec is"):
        write_dataset(SPEC, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_the_caches_datasets_writes_into_an_arrow_folder_are_no_damage(cli, tmp_path):
    """``ds.map(...)`` writes ``cache-*.arrow``: the folder still loads, validates and takes a
    card; ``--overwrite`` removes them with the folder."""
    spec, root = SMALL, tmp_path / "ar"
    write_dataset(BenchmarkSpec(name="ar", configs={"cot": spec}), root, storage="arrow")
    load(root, "cot").map(lambda batch: {"n": [len(t) for t in batch["tokens"]]}, batched=True)
    caches = sorted(p.parent.name for p in root.glob("cot/*/cache-*.arrow"))
    assert caches == sorted(spec.split_names)
    assert load(root, "cot")["test"].num_rows == 6
    for args in (["validate", root], ["card", root]):
        assert cli(*args).exit_code == 0, cli(*args).output
    flags = ["--task", "cot", "--train-size", "20", "--format", "arrow", "--overwrite"]
    result = cli("generate", "--out", root, *flags)
    assert result.exit_code == 0, result.output
    assert not list(root.glob("cot/*/cache-*.arrow"))


@pytest.mark.parametrize("writer", [pa.ipc.new_stream, pa.ipc.new_file, pq.write_table])
@pytest.mark.parametrize(
    "kind",
    [pa.list_(pa.uint8()), pa.large_list(pa.uint8()), pa.list_(pa.uint8(), 4)],
    ids=["list", "large_list", "fixed_size_list"],
)
def test_file_facts_count_the_rows_and_tokens_of_any_list_column(tmp_path, writer, kind):
    table = pa.table(
        {"id": pa.array(range(5), pa.int64()), "tokens": pa.array([[1] * 4] * 5, kind)}
    )
    path = tmp_path / ("x.parquet" if writer is pq.write_table else "x.arrow")
    if writer is pq.write_table:
        writer(table, path, row_group_size=2)
    else:
        with writer(str(path), table.schema) as out:
            out.write_table(table, max_chunksize=2)
    facts = FORMATS["parquet" if writer is pq.write_table else "arrow"].facts(path)
    assert (facts.rows, facts.tokens) == (5, 20)
