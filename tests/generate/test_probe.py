"""Probe splits: rows, probed positions and far-rule answers equal an independent plain-loop
computation (tests/oracle.py), on any spec, whatever the blocks, workers or parts; the
validator catches tampered probe rows; the data loads through ``datasets``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

import posgen
import posgen.probe
from posgen import write_dataset
from posgen.generator import generate_rows
from posgen.probe import probe_rows
from posgen.spec import BenchmarkSpec, TaskSpec, default_benchmark
from posgen.store.formats import open_writer, probe_schema, probe_table
from posgen.store.manifest import DamagedDataset, read_manifest, sha256_file
from posgen.validate import validate

OPS = ["mod_addition", "square_sum", "pow_sin", "pow_sin_2pi", "keyed_hash", "far_perm",
       "slot_perm", "select_perm"]  # fmt: skip
BUILT_IN = ["recursive", "cot", "semirecursive"]

specs = st.builds(
    dict,
    task=st.sampled_from(BUILT_IN),
    op=st.sampled_from(OPS),
    modulus=st.one_of(st.integers(2, 120), st.just(257)),
    near=st.integers(1, 5),
    far=st.integers(0, 4),
    train_length=st.integers(2, 30),
    extra=st.lists(st.integers(0, 40), min_size=1, max_size=2, unique=True),
    test_size=st.integers(1, 9),
    seed=st.integers(0, 2**40),
)


def _spec(params: dict) -> TaskSpec:
    p = dict(params)
    extra = p.pop("extra")
    p["train_length"] += p["near"] + p["far"]
    lengths = [p["train_length"] + e for e in extra]
    try:
        return TaskSpec(test_length=lengths, train_size=1, val_size=1, **p)
    except ValidationError:
        assume(False)
        raise


def _expected(oracle, spec: TaskSpec, split: str, source: np.ndarray) -> list[dict]:
    rule = (spec.modulus, spec.near, spec.far, spec.seed, split, spec.op, spec.op_key)
    return [oracle.probe_row(spec.task, row.tolist(), i, *rule) for i, row in enumerate(source)]


def _as_rows(block) -> list[dict]:
    table = probe_table(block, probe_schema(2 if block.tokens.dtype == np.uint8 else 65536))
    return [
        {k: r[k] for k in ("tokens", "replaced", "probed", "far_rule")} for r in table.to_pylist()
    ]


@given(specs)
def test_probe_rows_equal_the_plain_loop_definition_on_any_spec(oracle, params):
    spec = _spec(params)
    for split in spec.probe_names:
        source = generate_rows(spec, "test" + split[len("probe") :], 0, spec.test_size)
        rule = (spec.modulus, spec.near, spec.far, spec.op, spec.op_key)
        for row in source:  # the source rows are the task's rows
            assert row.tolist() == oracle.grow_row(
                spec.task, row[: spec.window].tolist(), row.size, *rule
            )
        got = _as_rows(probe_rows(spec, split, 0, spec.test_size))
        assert got == _expected(oracle, spec, split, source)


@given(specs, st.integers(1, 4))
def test_probe_rows_do_not_depend_on_blocks_or_chunks(params, cut):
    spec = _spec(params)
    whole = _as_rows(probe_rows(spec, "probe", 0, spec.test_size))
    pieces = []
    for first in range(0, spec.test_size, cut):
        last = min(spec.test_size, first + cut)
        pieces += _as_rows(probe_rows(spec, "probe", first, last, block_rows=1))
    assert pieces == whole


@pytest.mark.parametrize("task", BUILT_IN)
def test_each_probed_target_has_a_far_operand_replaced_and_no_near_one(task):
    spec = TaskSpec(task=task, near=3, far=2, train_size=1, val_size=1, test_size=40)
    block = probe_rows(spec, "probe", 0, spec.test_size)
    source = generate_rows(spec, "test", 0, spec.test_size)
    for i in range(spec.test_size):
        replaced = set(block.replaced[block.replaced_offsets[i] : block.replaced_offsets[i + 1]])
        for t in block.probed[block.probed_offsets[i] : block.probed_offsets[i + 1]].tolist():
            deps = posgen.tasks.dependencies(task, t, spec.near, spec.far).tolist()
            assert replaced & set(deps[: spec.far])
            assert not replaced & set(deps[spec.far :]) | ({t} & replaced)
        changed = set(np.flatnonzero(block.tokens[i] != source[i]).tolist())
        assert changed == replaced


def test_cot_replaces_the_question_and_probes_every_target():
    spec = TaskSpec(task="cot", far=2, train_size=1, val_size=1, test_size=5)
    block = probe_rows(spec, "probe", 0, 5)
    assert block.replaced.tolist() == [0, 1] * 5
    assert block.probed.tolist() == list(range(spec.window, 256)) * 5


@pytest.mark.parametrize("task", BUILT_IN)
def test_across_rows_every_id_and_ood_position_is_probed(task):
    spec = TaskSpec(task=task, train_size=1, val_size=1, test_size=300, test_length=[128])
    block = probe_rows(spec, "probe", 0, spec.test_size)
    counts = np.bincount(block.probed, minlength=128)[spec.window :]
    assert counts.min() > 0


SMALL = {"train_size": 40, "val_size": 6, "test_size": 12, "test_length": [96, 128]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "ds"
    write_dataset(default_benchmark(BUILT_IN, train_length=32, **SMALL), out)
    return out


def test_written_probe_splits_hold_the_oracle_rows_and_load_through_datasets(oracle, folder):
    import datasets

    manifest = read_manifest(folder)
    for config, entry in manifest.configs.items():
        spec = entry.spec
        loaded = datasets.load_dataset(str(folder), f"{config}-probe")
        assert list(loaded) == ["probe", "probe_128"]
        for split in spec.probe_names:
            source = generate_rows(spec, "test" + split[len("probe") :], 0, spec.test_size)
            rows = loaded[split].to_list()
            assert [r["id"] for r in rows] == [r["source_id"] for r in rows] == list(range(12))
            got = [{k: r[k] for k in ("tokens", "replaced", "probed", "far_rule")} for r in rows]
            assert got == _expected(oracle, spec, split, source)
        assert list(datasets.load_dataset(str(folder), config)) == list(spec.split_names)
        assert list(posgen.load(folder, f"{config}-probe")) == ["probe", "probe_128"]


def test_block_size_and_workers_change_no_probe_byte(folder, tmp_path):
    bench = default_benchmark(BUILT_IN, train_length=32, **SMALL)
    other = tmp_path / "other"
    write_dataset(bench, other, block_rows=5, num_proc=2, shard_bytes=600)
    first, second = read_manifest(folder), read_manifest(other)
    for config, entry in bench.configs.items():
        for split in entry.probe_names:
            (whole,) = [
                pq.read_table(folder / f.path) for f in first.configs[config].splits[split].files
            ]
            files = second.configs[config].splits[split].files
            assert len(files) > 1  # really sharded
            rows = [r for f in files for r in pq.read_table(other / f.path).to_pylist()]
            assert rows == whole.to_pylist()


def test_arrow_folders_hold_the_same_probe_rows(folder, tmp_path):
    import datasets

    out = tmp_path / "ipc"
    write_dataset(default_benchmark(["cot"], train_length=32, **SMALL), out, storage="arrow")
    loaded = datasets.load_from_disk(str(out / "cot-probe"))
    parquet = datasets.load_dataset(str(folder), "cot-probe")
    assert loaded["probe_128"].to_list() == parquet["probe_128"].to_list()
    assert validate(out).ok


def _tamper(root, split_path, change) -> None:
    """Change rows of one probe file and record its new bytes (only the change is wrong)."""
    path = root / split_path
    table = pq.read_table(path)
    rows = table.to_pylist()
    change(rows)
    with open_writer(path, table.schema) as writer:
        writer.write_table(type(table).from_pylist(rows, schema=table.schema))
    body = json.loads((root / "posgen.json").read_text())
    for config in body["configs"].values():
        for split in config["splits"].values():
            for item in split["files"]:
                if item["path"] == split_path:
                    item["sha256"], item["bytes"] = sha256_file(path), path.stat().st_size
    (root / "posgen.json").write_text(json.dumps(body, indent=2) + "\n")


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("far_rule", "far-rule answer(s) not h of the stored operands"),
        ("token", "token(s) differ from the source row"),
        ("replacement", "replaced token(s) not the rule's replacement"),
        ("probed", "probed positions are not the rule's"),
        ("source_id", "source id(s) not the row's own index"),
    ],
)
def test_validate_names_a_tampered_probe_row(tmp_path, what, message):
    root = tmp_path / "ds"
    write_dataset(default_benchmark(["semirecursive"], train_length=32, **SMALL), root)
    path = read_manifest(root).configs["semirecursive"].splits["probe"].files[0].path

    def change(rows):
        row = rows[3]
        if what == "far_rule":
            row["far_rule"][2] = (row["far_rule"][2] + 1) % 17
        elif what == "token":
            spot = next(t for t in range(40, 96) if t not in row["replaced"])
            row["tokens"][spot] = (row["tokens"][spot] + 1) % 17
        elif what == "replacement":
            spot = row["replaced"][0]
            row["tokens"][spot] = (row["tokens"][spot] + 1) % 17
        elif what == "probed":
            row["probed"], row["far_rule"] = row["probed"][1:], row["far_rule"][1:]
        else:
            row["source_id"] = 7

    _tamper(root, path, change)
    report = validate(root)
    (failed,) = [c for c in report.checks if not c.ok]
    assert (failed.check, failed.config, failed.split) == ("probe", "semirecursive", "probe")
    assert message in failed.message and "row 3" in failed.message


def test_a_damaged_probe_file_fails_integrity_like_any_other(tmp_path):
    root = tmp_path / "ds"
    write_dataset(default_benchmark(["cot"], train_length=32, **SMALL), root)
    path = root / read_manifest(root).configs["cot"].splits["probe_128"].files[0].path
    path.write_bytes(path.read_bytes()[:-20])
    report = validate(root)
    assert "integrity" in report.failed_kinds
    failed = [c for c in report.checks if not c.ok]
    assert any(c.split == "probe_128" and path.name in c.message for c in failed)


def test_a_config_may_not_take_another_configs_probe_name():
    with pytest.raises(ValidationError, match="clash with the probe splits"):
        BenchmarkSpec(
            name="b", configs={"cot": TaskSpec(task="cot"), "cot-probe": TaskSpec(task="cot")}
        )


def test_generate_and_validate_with_probe_splits_never_import_torch(tmp_path):
    script = (
        "import sys\n"
        "from posgen.cli import main\n"
        "args = ['--train-size', '20', '--val-size', '4', '--test-size', '4', '-q']\n"
        "for argv in (['generate', '--out', sys.argv[1], *args], ['validate', sys.argv[1]]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as end:\n"
        "        assert not end.code, end.code\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    run = [sys.executable, "-c", script, str(tmp_path / "ds")]
    result = subprocess.run(run, capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr
    assert (tmp_path / "ds" / "data" / "cot-probe").is_dir()


@pytest.mark.parametrize("task", BUILT_IN)
def test_far_rule_answers_do_not_depend_on_how_targets_are_chunked(task, monkeypatch):
    spec = TaskSpec(task=task, modulus=23, train_size=1, val_size=1, test_size=30)
    whole = _as_rows(probe_rows(spec, "probe", 0, spec.test_size))
    monkeypatch.setattr(posgen.probe, "FAR_RULE_PAIRS", 7)
    assert _as_rows(probe_rows(spec, "probe", 0, spec.test_size)) == whole


def test_a_folder_written_before_probe_splits_is_named_as_such(folder, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(folder, old)
    manifest = json.loads((old / "posgen.json").read_text())
    for config in manifest["configs"].values():
        for split in [name for name in config["splits"] if name.startswith("probe")]:
            del config["splits"][split]
    (old / "posgen.json").write_text(json.dumps(manifest))
    with pytest.raises(DamagedDataset, match="written by a posgen older than the probe"):
        read_manifest(old)
