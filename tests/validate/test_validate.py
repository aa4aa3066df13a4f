"""Validators: clean data passes; each kind of corruption fails with its check's message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from posgen import write_dataset
from posgen.generator import generate_split, grow
from posgen.seeding import seed_windows
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.store.formats import (
    open_writer,
    row_schema,
    rows_to_table,
    split_table,
    to_dataset_dict,
)
from posgen.store.manifest import sha256_file
from posgen.tasks import TASKS
from posgen.validate import AuditThresholds, SourceError, validate
from tests.cli_support import assert_clean_error
from tests.cli_support import invoke as run

CONTRACT_FACTS = {
    "rows", "length", "dependency_count", "max_lookback", "repeated_rows", "shared_windows",
    "target_balance_max_tv", "periodic_shortcut_share", "operand_sensitivity",
}  # fmt: skip


def small_bench(seeding="disjoint"):
    base = dict(train_size=300, val_size=50, test_size=40, test_length=[96, 128], seeding=seeding)
    return BenchmarkSpec(
        name="small", configs={task: TaskSpec(task=task, **base) for task in TASKS}
    )


@pytest.fixture(scope="module", params=["disjoint", "paper"])
def clean(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / request.param
    write_dataset(small_bench(request.param), out, shard_bytes=8192, row_group_bytes=2048)
    return out


@pytest.fixture
def copy(tmp_path, tmp_path_factory):
    """A fresh disjoint dataset to corrupt."""
    out = tmp_path / "ds"
    write_dataset(small_bench(), out, shard_bytes=8192, row_group_bytes=2048)
    return out


def shard(root: Path, config: str, split: str, index: int = 0) -> dict:
    manifest = json.loads((root / "posgen.json").read_text())
    return manifest["configs"][config]["splits"][split]["files"][index]


def rewrite(root: Path, entry: dict, change, refresh: bool = True) -> None:
    """Apply ``change`` to the shard's ``(rows, length)`` tokens and write it back;
    with ``refresh`` the manifest records the new bytes, so only the change is wrong."""
    path = root / entry["path"]
    table = pq.read_table(path)
    rows = np.stack(table.column("tokens").to_numpy(zero_copy_only=False))
    tokens = change(rows.copy())
    if isinstance(tokens, list):  # ragged rows
        array = pa.array(tokens, type=table.schema.field("tokens").type)
        new = pa.Table.from_arrays([table.column("id"), array], schema=table.schema)
    else:
        new = rows_to_table(entry["first_id"], tokens, table.schema)
    with open_writer(path, table.schema) as writer:
        writer.write_table(new)
    if refresh:
        manifest_path = root / "posgen.json"
        manifest = json.loads(manifest_path.read_text())
        for info in manifest["configs"].values():
            for split in info["splits"].values():
                for f in split["files"]:
                    if f["path"] == entry["path"]:
                        f["sha256"], f["bytes"] = sha256_file(path), path.stat().st_size
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def failed(report, check):
    return [c for c in report.checks if c.check == check and not c.ok]


# Clean data ---------------------------------------------------------------------------
def test_clean_data_of_every_task_and_both_seedings_passes(clean):
    report = validate(clean)
    assert report.ok, report.summary()
    assert {c.check for c in report.checks} == {
        "integrity", "schema", "window", "bounded_window", "hygiene", "audit", "probe",
    }  # fmt: skip
    assert report.tokens_checked == sum(
        s.total_tokens + sum(s.split_size(p) * s.split_length(p) for p in s.probe_names)
        for s in small_bench(clean.name).configs.values()
    )
    for config in TASKS:
        for split in ("train", "validation", "test", "test_128"):
            assert set(report.facts[config][split]) >= CONTRACT_FACTS
            assert report.facts[config][split]["dependency_count"] == 4


def test_look_back_is_bounded_for_recursive_and_grows_for_cot_and_semirecursive(clean):
    facts = validate(clean).facts
    assert [facts["recursive"][s]["max_lookback"] for s in ("train", "test_128")] == [4, 4]
    assert [facts["cot"][s]["max_lookback"] for s in ("train", "test_128")] == [63, 127]
    # semirecursive: t - floor((t - 4) / 2) at t = L - 1
    assert [facts["semirecursive"][s]["max_lookback"] for s in ("train", "test_128")] == [34, 66]


def test_paper_overlap_is_reported_with_numbers_not_as_an_error(clean):
    report = validate(clean, config="cot")
    facts = report.facts["cot"]
    if clean.name == "paper":
        assert facts["validation"]["shared_windows"]["train"] == 50  # every validation row
        assert facts["test"]["shared_windows"]["train"] == 40
        messages = [c.message for c in report.checks if c.check == "hygiene"]
        assert [m for m in messages if "expected for paper seeding" not in m] == []
    else:
        shared = {s: f["shared_windows"] for s, f in facts.items()}
        assert {s: n for s, by in shared.items() for n in by.values() if n} == {}
        assert {s: f["repeated_rows"] for s, f in facts.items() if f["repeated_rows"]} == {}
    assert report.ok


def test_report_dict_keeps_the_contract(clean):
    body = validate(clean, config="recursive", split="test").to_dict()
    assert {"ok", "tokens_checked", "seconds", "checks", "facts"} <= set(body)
    assert set(body["checks"][0]) == {"check", "config", "split", "ok", "message", "failures"}
    assert list(body["facts"]) == ["recursive"]
    assert list(body["facts"]["recursive"]) == ["test"]
    json.dumps(body)


# One corruption, one failing check -----------------------------------------------------
def test_a_flipped_token_is_found_at_its_row_and_position(copy):
    entry = shard(copy, "cot", "test")
    rows = pq.read_table(copy / entry["path"]).column("tokens").to_pylist()
    original = rows[7][80]

    def flip(tokens):
        tokens[7, 80] = (tokens[7, 80] + 1) % 17
        return tokens

    rewrite(copy, entry, flip)
    report = validate(copy)
    assert report.failed_kinds == ["window"]
    (window,) = failed(report, "window")
    assert (window.config, window.split) == ("cot", "test")
    assert window.message.startswith(
        f"split test row {entry['first_id'] + 7} position 80: "
        f"expected {original}, found {(original + 1) % 17}"
    )
    assert "position(s) failed in all" in window.message
    assert window.failures >= 1


def test_a_truncated_row_fails_the_schema_check(copy):
    entry = shard(copy, "recursive", "train")
    rewrite(
        copy, entry, lambda t: [row[:-1] if i == 3 else row for i, row in enumerate(t.tolist())]
    )
    report = validate(copy, config="recursive")
    assert report.failed_kinds == ["schema"]
    (schema,) = failed(report, "schema")
    assert schema.split == "train"
    assert f"{entry['path']} row {entry['first_id'] + 3} has 63" in schema.message


def test_a_token_outside_the_vocabulary_fails_the_schema_check(copy):
    entry = shard(copy, "semirecursive", "validation")

    def poison(tokens):
        tokens[2, 50] = 17
        return tokens

    rewrite(copy, entry, poison)
    report = validate(copy, config="semirecursive")
    (schema,) = failed(report, "schema")
    assert "1 token(s) outside [0, 17)" in schema.message
    assert f"row {entry['first_id'] + 2} position 50 holds 17" in schema.message
    assert "integrity" not in report.failed_kinds


def test_a_file_edited_after_the_manifest_fails_integrity_naming_the_file(copy):
    entry = shard(copy, "cot", "train", 1)
    rewrite(copy, entry, lambda t: t[::-1].copy(), refresh=False)  # same values, new order
    report = validate(copy)
    (integrity,) = failed(report, "integrity")
    assert f"{entry['path']}: sha256 differs from the manifest" in integrity.message
    assert (integrity.config, integrity.split) == ("cot", "train")


def test_a_missing_shard_fails_integrity(copy):
    entry = shard(copy, "recursive", "test")
    (copy / entry["path"]).unlink()
    report = validate(copy)
    (integrity,) = failed(report, "integrity")
    assert f"{entry['path']}: file is missing" in integrity.message
    assert not report.ok


def test_an_unlisted_data_file_fails_integrity(copy):
    entry = shard(copy, "cot", "test")
    shutil.copy(copy / entry["path"], copy / "data" / "cot" / "test-extra.parquet")
    (integrity,) = failed(validate(copy), "integrity")
    assert integrity.message.startswith("1 data file(s) not in the manifest: ")
    assert "data/cot/test-extra.parquet: not listed in posgen.json" in integrity.message


def test_a_spec_that_does_not_match_the_data_fails(copy):
    wrong = small_bench().configs["cot"].model_copy(update={"modulus": 19})
    report = validate(copy, spec=TaskSpec(**wrong.canonical()))
    messages = " ".join(c.message for c in failed(report, "integrity"))
    assert "does not match the data's spec" in messages
    assert "modulus 19 vs 17" in messages
    # the same data without a manifest: the targets disagree with the claimed rule
    path = copy / shard(copy, "cot", "test")["path"]
    other = TaskSpec(**{**small_bench().configs["cot"].canonical(), "task": "recursive"})
    report = validate(path, spec=other, split="test")
    assert report.failed_kinds == ["window"]


def test_a_train_row_copied_into_test_fails_hygiene_for_disjoint_data(copy):
    spec = small_bench().configs["recursive"]
    train_window = seed_windows(spec, "train", 11, 12)
    entry = shard(copy, "recursive", "test")

    def leak(tokens):
        tokens[5] = grow(spec, train_window, tokens.shape[1])[0]
        return tokens

    rewrite(copy, entry, leak)
    report = validate(copy, config="recursive")
    assert report.failed_kinds == ["hygiene"]
    (hygiene,) = [c for c in failed(report, "hygiene") if c.split == "test"]
    assert "1 window(s) shared with train" in hygiene.message
    assert report.facts["recursive"]["test"]["shared_windows"]["train"] == 1


def test_a_repeated_row_inside_a_disjoint_split_fails_hygiene(copy):
    entry = shard(copy, "cot", "validation")

    def repeat(tokens):
        tokens[1] = tokens[0]
        return tokens

    rewrite(copy, entry, repeat)
    report = validate(copy, config="cot")
    assert report.failed_kinds == ["hygiene"]
    assert report.facts["cot"]["validation"]["repeated_rows"] == 1


# Other sources ---------------------------------------------------------------------------
def test_parquet_arrow_and_datasets_sources_validate_with_a_spec(tmp_path):
    spec = TaskSpec(task="semirecursive", train_size=64, val_size=16, test_size=16)
    table = split_table(spec, "test")
    pq.write_table(table, tmp_path / "test.parquet")
    feather.write_feather(table.drop_columns(["id"]), tmp_path / "rows.arrow")
    assert validate(tmp_path / "test.parquet", spec).ok
    report = validate(tmp_path / "rows.arrow", spec)
    assert report.ok
    assert list(report.facts["semirecursive"]) == ["test"]  # inferred from L'
    dataset = to_dataset_dict(spec)
    assert validate(dataset, spec).ok
    assert validate(dataset["train"], spec).facts["semirecursive"]["train"]["rows"] == 64


def test_data_without_a_manifest_needs_a_spec(tmp_path):
    pq.write_table(split_table(TaskSpec(task="cot", test_size=4), "test"), tmp_path / "t.parquet")
    with pytest.raises(SourceError, match=r"has no posgen\.json: give the spec"):
        validate(tmp_path / "t.parquet")


# Audit ----------------------------------------------------------------------------------
def test_audit_fails_only_under_a_threshold(clean):
    assert validate(clean, config="cot").ok
    report = validate(clean, config="cot", thresholds=AuditThresholds(max_balance_tv=0.001))
    assert report.failed_kinds == ["audit"]
    assert "target balance TV" in failed(report, "audit")[0].message
    with pytest.raises(ValidationError):
        AuditThresholds(max_shortcut_share=2)


def test_a_periodic_row_is_counted_by_the_shortcut_audit():
    spec = TaskSpec(task="recursive", modulus=5, near=1, far=1, train_length=8, test_length=[16],
                    train_size=1, val_size=1, test_size=2)  # fmt: skip
    rows = grow(spec, np.array([[0, 0], [1, 2]]), 16)  # all zeros: period 1
    table = rows_to_table(0, rows, row_schema(5))
    facts = validate(table_dataset(table), spec, split="test").facts["recursive"]["test"]
    assert facts["periodic_rows"] >= 1
    assert facts["periodic_shortcut_share"] >= 0.5


def table_dataset(table):
    import datasets

    return datasets.Dataset(table, split=datasets.NamedSplit("test"), fingerprint="t")


def test_operand_sensitivity_is_measured_for_other_ops():
    # square_sum: moving one operand by d leaves S^2 unchanged when d = -2S (mod m)
    spec = TaskSpec(task="cot", op="square_sum", train_size=50, val_size=10, test_size=10)
    report = validate(to_dataset_dict(spec), spec)
    assert report.ok, report.summary()
    assert 0 < report.facts["cot"]["train"]["operand_sensitivity"] < 1
    additive = TaskSpec(task="cot", train_size=50, val_size=10, test_size=10)
    assert validate(to_dataset_dict(additive), additive).facts["cot"]["test"][
        "operand_sensitivity"
    ] == pytest.approx(1.0)


# Property: generated data always validates ---------------------------------------------------
@st.composite
def specs(draw):
    near, far = draw(st.integers(1, 4)), draw(st.integers(0, 3))
    train_length = draw(st.integers(near + far + 1, 40))
    fields = dict(
        task=draw(st.sampled_from(TASKS)),
        modulus=draw(st.integers(2, 300)),
        near=near,
        far=far,
        train_length=train_length,
        test_length=[train_length + draw(st.integers(0, 40))],
        train_size=draw(st.integers(1, 30)),
        val_size=draw(st.integers(1, 8)),
        test_size=draw(st.integers(1, 8)),
        seeding=draw(st.sampled_from(["disjoint", "paper"])),
        seed=draw(st.integers(0, 2**32)),
    )
    try:
        return TaskSpec(**fields)
    except ValidationError:
        assume(False)


@settings(max_examples=40, suppress_health_check=[HealthCheck.filter_too_much])
@given(spec=specs())
def test_generated_data_always_validates(spec):
    report = validate(to_dataset_dict(spec), spec)
    assert report.ok, report.summary()
    assert report.tokens_checked == spec.total_tokens


def test_validation_matches_the_generated_arrays_row_for_row():
    spec = TaskSpec(task="recursive", train_size=20, val_size=5, test_size=5)
    dd = to_dataset_dict(spec)
    assert np.array_equal(np.stack(dd["test"]["tokens"]), generate_split(spec, "test"))
    assert validate(dd, spec, split="test").facts["recursive"]["test"]["rows"] == 5


# CLI ---------------------------------------------------------------------------------------
def test_cli_exits_0_on_clean_data_and_writes_the_json_report(clean, tmp_path):
    result = run("validate", clean, "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert "all checks passed" in result.output
    assert "M tokens/s" in result.output
    body = json.loads((tmp_path / "r.json").read_text())
    assert body["ok"] is True
    assert set(body["facts"]["cot"]["test"]) >= CONTRACT_FACTS


def test_cli_exits_1_and_names_every_failed_check(copy):
    entry = shard(copy, "cot", "test")
    (copy / shard(copy, "recursive", "train")["path"]).unlink()

    def flip(tokens):
        tokens[0, 70] = (tokens[0, 70] + 3) % 17
        return tokens

    rewrite(copy, entry, flip)
    result = run("validate", copy)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "FAILED: integrity, window" in result.output
    assert "split test row 0 position 70" in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config", "nope"], "has no config 'nope'; configs: recursive, cot, semirecursive"),
        (["--config", "cot", "--split", "dev"], "config cot has no split 'dev'"),
        (["--max-balance-tv", "3"], "Invalid value for '--max-balance-tv'"),
        (["-m", "1", "--task", "cot"], "configs.cot.modulus: Input should be greater than"),
    ],
)
def test_cli_bad_input_exits_2_with_one_error_line(clean, args, expected):
    result = run("validate", clean, *args)
    assert_clean_error(result, 2, expected)


def test_cli_validates_a_bare_parquet_file_given_spec_flags(tmp_path):
    spec = TaskSpec(task="recursive", modulus=23, test_size=10)
    pq.write_table(split_table(spec, "test"), tmp_path / "test-00000-of-00001.parquet")
    ok = run("validate", tmp_path / "test-00000-of-00001.parquet", "--task", "recursive",
             "-m", "23", "--test-size", "10")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    missing = run("validate", tmp_path / "test-00000-of-00001.parquet")
    assert_clean_error(missing, 2, "give the spec")


def test_arrow_ipc_folders_validate_and_a_damaged_one_fails_integrity(tmp_path):
    from posgen import write_dataset
    from posgen.spec import BenchmarkSpec, TaskSpec

    spec = TaskSpec(task="cot", train_size=200, val_size=20, test_size=20)
    out = tmp_path / "ipc"
    write_dataset(BenchmarkSpec(name="ipc", configs={"cot": spec}), out, storage="arrow")
    assert validate(out).ok
    shard = next((out / "cot" / "test").glob("*.arrow"))
    shard.write_bytes(shard.read_bytes()[:-100])
    report = validate(out)
    assert not report.ok
    assert "integrity" in report.failed_kinds
    assert any(shard.name in c.message for c in report.checks if not c.ok)
