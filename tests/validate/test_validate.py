"""`posgen validate`: clean data passes; each kind of damage fails its check, naming the place."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from posgen.generator import generate_split, grow, seed_windows
from posgen.spec import TaskSpec
from posgen.store.formats import open_writer, rows_to_table, split_table, to_dataset_dict
from posgen.store.manifest import read_manifest
from posgen.tasks import TASKS
from posgen.validate import AuditThresholds, SourceError, validate

CONTRACT_FACTS = {
    "rows", "length", "dependency_count", "max_lookback", "repeated_rows", "shared_windows",
    "target_balance_max_tv", "periodic_shortcut_share", "operand_sensitivity",
}  # fmt: skip


@pytest.fixture(params=["small_dataset", "small_paper_dataset"], ids=["disjoint", "paper"])
def clean(request):
    return request.getfixturevalue(request.param)


def shard(root: Path, config: str, split: str, index: int = 0) -> dict:
    manifest = json.loads((root / "posgen.json").read_text())
    return manifest["configs"][config]["splits"][split]["files"][index]


def rewrite(change):
    """Damage that applies ``change`` to a file's ``(rows, length)`` tokens."""

    def damage(root: Path, entry: dict) -> None:
        path = root / entry["path"]
        table = pq.read_table(path)
        tokens = change(np.stack(table.column("tokens").to_numpy(zero_copy_only=False)))
        if isinstance(tokens, list):  # ragged rows
            array = pa.array(tokens, type=table.schema.field("tokens").type)
            new = pa.Table.from_arrays([table.column("id"), array], schema=table.schema)
        else:
            new = rows_to_table(entry["first_id"], tokens, table.schema)
        with open_writer(path, table.schema) as writer:
            writer.write_table(new)

    return damage


def set_token(row: int, position: int, value):
    def change(tokens):
        tokens[row, position] = value(tokens[row, position])
        return tokens

    return change


def copy_train_row(root: Path, entry: dict) -> None:
    spec = read_manifest(root).configs["recursive"].spec
    row = grow(spec, seed_windows(spec, "train", 11, 12), spec.split_length("test"))[0]
    rewrite(lambda tokens: np.concatenate([tokens[:5], row[None], tokens[6:]]))(root, entry)


def with_columns(change):
    """Damage that rewrites a file as ``change(table)`` (its schema's metadata kept)."""

    def damage(root: Path, entry: dict) -> None:
        path = root / entry["path"]
        table = pq.read_table(path)
        new = change(table).replace_schema_metadata(table.schema.metadata)
        pq.write_table(new, path)

    return damage


def failed(report, check):
    return [c for c in report.checks if c.check == check and not c.ok]


# Clean data ---------------------------------------------------------------------------
def test_clean_data_of_every_task_and_both_seedings_passes(clean):
    report = validate(clean)
    assert report.ok, report.summary()
    assert {c.check for c in report.checks} == {
        "integrity", "schema", "window", "bounded_window", "hygiene", "audit", "probe",
    }  # fmt: skip
    specs = [entry.spec for entry in read_manifest(clean).configs.values()]
    assert report.tokens_checked == sum(
        s.total_tokens + sum(s.split_size(p) * s.split_length(p) for p in s.probe_names)
        for s in specs
    )
    for config in TASKS:
        for split in ("train", "validation", "test", "test_128"):
            assert set(report.facts[config][split]) >= CONTRACT_FACTS
            assert report.facts[config][split]["dependency_count"] == 4
    facts = report.facts
    assert [facts["recursive"][s]["max_lookback"] for s in ("train", "test_128")] == [4, 4]
    assert [facts["cot"][s]["max_lookback"] for s in ("train", "test_128")] == [63, 127]
    # semirecursive: t - floor((t - 4) / 2) at t = L - 1
    assert [facts["semirecursive"][s]["max_lookback"] for s in ("train", "test_128")] == [34, 66]
    cot = facts["cot"]
    shared = {s: n for s, f in cot.items() for n in f["shared_windows"].values() if n}
    repeated = {s: f["repeated_rows"] for s, f in cot.items() if f["repeated_rows"]}
    if specs[0].seeding == "disjoint":
        assert (shared, repeated) == ({}, {})
    else:  # paper seeding overlaps: reported with numbers, not as an error
        assert cot["validation"]["shared_windows"]["train"] == 30  # every validation row
        assert cot["test"]["shared_windows"]["train"] == 20
        hygiene = [c.message for c in report.checks if c.check == "hygiene"]
        assert all("expected for paper seeding" in m for m in hygiene)


# One damage, one failing check ---------------------------------------------------------
def unlist(root: Path, entry: None) -> None:
    shutil.copy(root / shard(root, "cot", "test")["path"], root / "data/cot/test-extra.parquet")


def _cast(name: str, kind: pa.DataType):
    """The column ``name`` cast to ``kind`` (same values, another type)."""
    return lambda t: t.set_column(t.column_names.index(name), pa.field(name, kind, nullable=False),
                                  t.column(name).cast(kind))  # fmt: skip


def _probed(change):
    """Row 0's probed list changed by ``change`` (its far_rule list left as it was)."""

    def edit(t: pa.Table) -> pa.Table:
        rows = t.column("probed").to_pylist()
        rows[0] = change(rows[0])
        kind = t.schema.field("probed").type
        return t.set_column(t.column_names.index("probed"), t.schema.field("probed"),
                            pa.array(rows, kind))  # fmt: skip

    return edit


DAMAGE = {
    # case: (config, split, file index, damage(root, entry), --config, the failed kinds (a row
    #        not its id's, seed window included, fails window too), fragments of the message of
    #        one of them given the file entry e and the old tokens t ("^": a prefix), a fact of
    #        the split as (keys..., value))
    "a flipped token": ("cot", "test", 0, rewrite(set_token(7, 80, lambda v: (v + 1) % 17)), None,
        "window", lambda e, t: [f"^split test row {e['first_id'] + 7} position 80: expected "
        f"{t[7, 80]}, found {(t[7, 80] + 1) % 17}", "position(s) failed in all"], None),
    "a truncated row": ("recursive", "train", 0, rewrite(lambda t: [row[:-1] if i == 3 else row
        for i, row in enumerate(t.tolist())]), "recursive", "schema",
        lambda e, t: [f"{e['path']} row {e['first_id'] + 3} has 63"], None),
    "a token outside the vocabulary": ("semirecursive", "validation", 0,
        rewrite(set_token(2, 50, lambda v: 17)), "semirecursive", ("schema", "window"),
        lambda e, t: ["1 token(s) outside [0, 17)",
                      f"row {e['first_id'] + 2} position 50 holds 17"], None),
    "a file edited after the manifest": ("cot", "train", 1, rewrite(lambda t: t[::-1].copy()),
        None, ("integrity", "window"),
        lambda e, t: [f"{e['path']}: sha256 differs from the manifest"], None),
    "a missing file": ("recursive", "test", 0, lambda root, e: (root / e["path"]).unlink(), None,
        "integrity", lambda e, t: [f"{e['path']}: file is missing"], None),
    "a missing probe file": ("cot", "probe_128", 0, lambda root, e: (root / e["path"]).unlink(),
        None, ("integrity", "probe"), lambda e, t: [f"{e['path']}: not read"], None),
    "an unlisted file": (None, None, None, unlist, None, "integrity", lambda e, t: [
        "^1 data file(s) not in the manifest: ",
        "data/cot/test-extra.parquet: not listed in posgen.json"], None),
    "a train row copied into test": ("recursive", "test", 0, copy_train_row, "recursive",
        ("window", "hygiene"), lambda e, t: ["1 window(s) shared with train"],
        ("shared_windows", "train", 1)),
    "a repeated row": ("cot", "validation", 0, rewrite(lambda t: t[[0, 0, *range(2, len(t))]]),
        "cot", ("window", "hygiene"), lambda e, t: [], ("repeated_rows", 1)),
    "an extra column": ("cot", "test", 0,
        with_columns(lambda t: t.append_column("label", pa.array([0] * len(t)))), None, "schema",
        lambda e, t: [f"{e['path']}: columns id, tokens, label (nullable); expected id, tokens "
        "(in this order"], None),
    "nullable columns": ("cot", "test", 0, with_columns(lambda t: t.cast(pa.schema(
        [f.with_nullable(True) for f in t.schema]))), None, "schema",
        lambda e, t: ["columns id (nullable), tokens (nullable); "], None),
    "tokens widened to int64": ("cot", "test", 0, with_columns(_cast("tokens", pa.list_(
        pa.int64()))), None, "schema", lambda e, t: ["'tokens' is list<element: int64>, "
        "expected list<item: uint8>"], None),
    "ids narrowed to int32": ("cot", "test", 0, with_columns(_cast("id", pa.int32())), None,
        "schema", lambda e, t: ["'id' column is missing or not int64"], None),
    "a probed list one short of its far_rule list": ("cot", "probe_128", 0, with_columns(
        _probed(lambda row: row[:-1])), None, "probe", lambda e, t: [
        "far_rule list unlike their probed list"], None),
    "a probed position in the seed window": ("cot", "probe_128", 0, with_columns(
        _probed(lambda row: [0, *row[1:]])), None, "probe", lambda e, t: [
        "probed position(s) outside [4, 128)"], None),
    "probe columns reordered": ("cot", "probe_128", 0,
        with_columns(lambda t: t.select(t.column_names[::-1])), None, "probe",
        lambda e, t: [f"{e['path']}: columns far_rule, probed"], None),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DAMAGE))
def test_one_damage_fails_one_check_that_names_where(record_files, small_copy, case):
    config, split, index, damage, only, checks, fragments, fact = DAMAGE[case]
    entry, before = None, None
    if config is not None:
        entry = shard(small_copy, config, split, index)
        table = pq.read_table(small_copy / entry["path"])
        before = np.stack(table.column("tokens").to_numpy(zero_copy_only=False))
    damage(small_copy, entry)
    checks = (checks,) if isinstance(checks, str) else checks
    if entry is not None and "integrity" not in checks:  # only the change itself is wrong
        record_files(small_copy, entry["path"])
    report = validate(small_copy, config=only)
    assert report.failed_kinds == list(checks)
    candidates = [c for kind in checks for c in failed(report, kind) if c.split == split]
    assert all((c.config, c.failures >= 1) == (config, True) for c in candidates)

    def says(message: str) -> bool:
        return all(
            message.startswith(f[1:]) if f.startswith("^") else f in message
            for f in fragments(entry, before)
        )

    assert any(says(c.message) for c in candidates), [c.message for c in candidates]
    if fact is not None:
        *keys, value = fact
        facts = report.facts[config][split]
        for key in keys:
            facts = facts[key]
        assert facts == value


def test_a_spec_that_does_not_match_the_data_fails(small_copy):
    right = read_manifest(small_copy).configs["cot"].spec
    report = validate(small_copy, spec=TaskSpec(**{**right.canonical(), "modulus": 19}))
    messages = " ".join(c.message for c in failed(report, "integrity"))
    assert "does not match the data's spec" in messages
    assert "modulus 19 vs 17" in messages
    # the same data without a manifest: the targets disagree with the claimed rule
    path = small_copy / shard(small_copy, "cot", "test")["path"]
    other = TaskSpec(**{**right.canonical(), "task": "recursive"})
    assert validate(path, spec=other, split="test").failed_kinds == ["window"]


# Other sources ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("row", "kinds"), [(2, ["schema", "window"]), (3, ["window"])],
    ids=["a token far outside the vocabulary", "a seed window from another seed"],
)  # fmt: skip
def test_a_bare_file_with_one_wrong_row_fails_the_checks_that_name_it(tmp_path, row, kinds):
    """Row 2: a token past every cell of the balance audit; row 3: a row of another seed."""
    spec = TaskSpec(task="cot", train_size=64, val_size=16, test_size=16)
    other = TaskSpec(**{**spec.canonical(), "seed": spec.seed + 1})
    tokens = generate_split(spec, "test")
    if row == 2:
        tokens[2, -1] = 255
    else:
        tokens[3] = generate_split(other, "test")[3]
    table = pa.table({"id": np.arange(len(tokens)), "tokens": list(tokens)})
    pq.write_table(table, tmp_path / "t.parquet")
    report = validate(tmp_path / "t.parquet", spec, split="test")
    assert report.failed_kinds == kinds
    assert f"split test row {row} position" in failed(report, "window")[0].message


@dataclass
class PathObject(os.PathLike):
    """A path object that is no pathlib.Path (as some path libraries give)."""

    path: str

    def __fspath__(self):
        return self.path


def test_parquet_arrow_datasets_and_any_path_object_sources_validate_with_a_spec(
    small_dataset, tmp_path
):
    assert validate(PathObject(str(small_dataset))).to_dict()["failed_checks"] == []  # was refused
    spec = TaskSpec(task="semirecursive", train_size=64, val_size=16, test_size=16)
    table = split_table(spec, "test")
    pq.write_table(table, tmp_path / "test.parquet")
    feather.write_feather(table.drop_columns(["id"]), tmp_path / "rows.arrow")
    assert validate(tmp_path / "test.parquet", spec).ok
    assert validate(PathObject(str(tmp_path / "test.parquet")), spec).ok
    report = validate(tmp_path / "rows.arrow", spec)
    assert report.ok
    assert list(report.facts["semirecursive"]) == ["test"]  # inferred from L'
    dataset = to_dataset_dict(spec)
    assert validate(dataset, spec).ok
    dataset.save_to_disk(tmp_path / "saved")  # SPLIT/data-00000-of-00001.arrow: the folder names
    saved = validate(tmp_path / "saved", spec)  # the split (validation was checked as test)
    assert saved.ok and list(saved.facts["semirecursive"]) == ["train", "validation", "test"]
    assert validate(dataset["train"], spec).facts["semirecursive"]["train"]["rows"] == 64
    shuffled = validate(dataset["train"].shuffle(seed=0), spec)  # the view's rows, not its table's
    assert "63 id(s) out of sequence" in " ".join(c.message for c in shuffled.checks if not c.ok)
    with pytest.raises(SourceError, match=r"has no posgen\.json: give the spec"):
        validate(tmp_path / "test.parquet")


@pytest.mark.parametrize(
    ("argument", "value", "kind"),
    [("spec", "cot", "TaskSpec"), ("thresholds", {"max_balance_tv": 0.1}, "AuditThresholds")],
)
def test_a_wrong_kind_of_argument_is_named(small_dataset, argument, value, kind):
    with pytest.raises(SourceError, match=rf"{argument} must be a {kind} or None, not"):
        validate(small_dataset, **{argument: value})


def _two_configs(t: Path) -> Path:
    from posgen import write_dataset
    from posgen.spec import default_benchmark

    write_dataset(default_benchmark(("cot", "recursive"), train_size=8, val_size=2, test_size=2),
                  t / "two")  # fmt: skip
    return t / "two"


UNREADABLE_SOURCES = {  # case -> (the source made in tmp_path, the spec, the SourceError says)
    "an int": (lambda t: 5, None, "cannot validate a int: give a folder, a .parquet/.arrow file"),
    "a path to nothing": (lambda t: t / "nope", None, "nope does not exist"),
    "a .txt file": (lambda t: t / "rows.txt", None, "rows.txt is not a .parquet, .arrow or .feath"),
    "two configs, neither of the spec's task": (_two_configs, TaskSpec(task="semirecursive"),
        "no config of {t}/two has task semirecursive; pick one with --config"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(UNREADABLE_SOURCES))
def test_a_source_it_cannot_read_is_one_source_error(tmp_path, case):
    make, spec, said = UNREADABLE_SOURCES[case]
    (tmp_path / "rows.txt").write_text("0 1 2 3\n")
    with pytest.raises(SourceError, match=re.escape(said.format(t=tmp_path))):
        validate(make(tmp_path), spec)


# Audit ----------------------------------------------------------------------------------
def test_audit_fails_only_under_a_threshold(small_dataset):
    assert validate(small_dataset, config="cot").ok
    strict = AuditThresholds(max_balance_tv=0.001)
    report = validate(small_dataset, config="cot", thresholds=strict)
    assert report.failed_kinds == ["audit"]
    assert "target balance TV" in failed(report, "audit")[0].message
    with pytest.raises(ValidationError):
        AuditThresholds(max_shortcut_share=2)


def test_a_periodic_row_is_counted_by_the_shortcut_audit():
    import datasets

    from posgen.store.formats import row_schema

    spec = TaskSpec(task="recursive", modulus=5, near=1, far=1, train_length=8, test_length=[16],
                    train_size=1, val_size=1, test_size=2)  # fmt: skip
    rows = grow(spec, np.array([[0, 0], [1, 2]]), 16)  # all zeros: period 1
    table = rows_to_table(0, rows, row_schema(5))
    split = datasets.Dataset(table, split=datasets.NamedSplit("test"), fingerprint="t")
    facts = validate(split, spec, split="test").facts["recursive"]["test"]
    assert facts["periodic_rows"] >= 1
    assert facts["periodic_shortcut_share"] >= 0.5


@pytest.mark.parametrize(
    ("name", "valid_rows", "line"),
    [  # rows the spec does not generate: their seed windows are nobody's
        ("train", 40, "41 rows; split train of the spec holds 40"),  # row 40 of 40
        ("foo", 0, "split 'foo' is none of the spec's (train, validation, test)"),
    ],
)
def test_rows_of_no_split_fail_schema_whatever_their_seed_windows(name, valid_rows, line):
    import datasets

    spec = TaskSpec(task="cot", train_size=40, val_size=10, test_size=10, test_length=[80],
                    train_length=48)  # fmt: skip
    table = split_table(spec, "train")
    forged = grow(spec, np.array([[16, 16, 16, 16]]), 48)
    rows = np.concatenate([generate_split(spec, "train")[:valid_rows], forged])
    dataset = datasets.Dataset(rows_to_table(0, rows, table.schema), fingerprint="forged")
    report = validate(datasets.DatasetDict({name: dataset}), spec)
    assert report.failed_kinds == ["schema"], report.summary()
    assert line in failed(report, "schema")[0].message


def test_operand_sensitivity_is_measured_for_other_ops():
    # square_sum: moving one operand by d leaves S^2 unchanged when d = -2S (mod m)
    spec = TaskSpec(task="cot", op="square_sum", train_size=50, val_size=10, test_size=10)
    report = validate(to_dataset_dict(spec), spec)
    assert report.ok, report.summary()
    assert 0 < report.facts["cot"]["train"]["operand_sensitivity"] < 1
    strict = validate(to_dataset_dict(spec), spec, thresholds=AuditThresholds(
        min_operand_sensitivity=1.0))  # fmt: skip
    assert strict.failed_kinds == ["audit"]
    assert "operand sensitivity 0." in failed(strict, "audit")[0].message
    additive = TaskSpec(task="cot", train_size=50, val_size=10, test_size=10)
    facts = validate(to_dataset_dict(additive), additive).facts["cot"]["test"]
    assert facts["operand_sensitivity"] == pytest.approx(1.0)


# Property: generated data always validates ---------------------------------------------------
@st.composite
def specs(draw):
    near, far = draw(st.integers(1, 4)), draw(st.integers(0, 3))
    train_length = draw(st.integers(near + far + 1, 40))
    fields = dict(
        task=draw(st.sampled_from(TASKS)), modulus=draw(st.integers(2, 300)), near=near, far=far,
        train_length=train_length, test_length=[train_length + draw(st.integers(0, 40))],
        train_size=draw(st.integers(1, 30)), val_size=draw(st.integers(1, 8)),
        test_size=draw(st.integers(1, 8)), seeding=draw(st.sampled_from(["disjoint", "paper"])),
        seed=draw(st.integers(0, 2**32)),
    )  # fmt: skip
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


# CLI ---------------------------------------------------------------------------------------
def test_cli_exits_0_on_clean_data_and_writes_the_json_report(cli, small_dataset, tmp_path):
    result = cli("validate", small_dataset, "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert "all checks passed" in result.output
    assert "M tokens/s" in result.output
    body = json.loads((tmp_path / "r.json").read_text())
    assert body["ok"] is True
    assert {"ok", "tokens_checked", "seconds", "checks", "facts"} <= set(body)
    assert set(body["checks"][0]) == {"check", "config", "split", "ok", "message", "failures"}
    assert set(body["facts"]["cot"]["test"]) >= CONTRACT_FACTS
    only = validate(small_dataset, config="recursive", split="test").to_dict()["facts"]
    assert {config: list(splits) for config, splits in only.items()} == {"recursive": ["test"]}


def test_cli_exits_1_and_names_every_failed_check(cli, record_files, small_copy):
    (small_copy / shard(small_copy, "recursive", "train")["path"]).unlink()
    flip = set_token(0, 70, lambda v: (v + 3) % 17)
    rewrite(flip)(small_copy, shard(small_copy, "cot", "test"))
    record_files(small_copy, shard(small_copy, "cot", "test")["path"])
    result = cli("validate", small_copy)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "FAILED: integrity, window" in result.output
    assert "split test row 0 position 70" in result.output


def write(table: pa.Table, path: Path, **kwargs) -> None:
    """``table`` as Parquet or Arrow IPC, as ``path``'s suffix says."""
    (pq.write_table if path.suffix == ".parquet" else feather.write_feather)(table, path, **kwargs)


def bomb(**before) -> pa.Table:
    """A few KB of zstd or lz4 that would expand to one row of 2^24 tokens."""
    rows = pa.ListArray.from_arrays([0, 2**24], np.zeros(2**24, np.uint8))
    return pa.table({**before, "id": [0], "tokens": rows})


def recursive_m23() -> pa.Table:
    return split_table(TaskSpec(task="recursive", modulus=23, test_size=10), "test")


SHARD, M23 = "test-00000-of-00001.parquet", ["--task", "recursive", "-m", "23", "--test-size", "10"]
ONE_ROW = dict(task="cot", modulus=3, near=1, far=0, train_size=1, val_size=1, test_size=1)
ONE_ROW_FLAGS = ["--task", "cot", "-m", "3", "-k", "1", "-j", "0", "--train-size", "1",
                 "--val-size", "1", "--test-size", "1", "-v"]  # fmt: skip
ZSTD, COT = {"compression": "zstd"}, ["--task", "cot"]
PAPER = ["--spec", "task_specs/paper.toml"]
TOO_LONG = ["declares 16,777,216 tokens in 1 row;", "at most 256: not read"]
EXPANDS = [
    "FAIL schema         cot/test                 test.arrow: unreadable (a record batch of 1 row "
    "would decompress to 16,777,",
    "more than rows of 256 tokens may take (9,216 bytes a row): not read)",
]
CLI = {
    # case: (file name, its table, write options (None: small_dataset is validated), flags, exit
    #        code, what the error line (exit 2) or the output (exit 1) says)
    "--config nope": (None, None, None, ["--config", "nope"], 2,
        ["has no config 'nope'; configs: recursive, cot, semirecursive"]),
    "--split dev": (None, None, None, ["--config", "cot", "--split", "dev"], 2,
        ["config cot has no split 'dev'"]),
    "--config of 500 characters": (None, None, None, ["--config", "x" * 500], 2,
        [f"has no config '{'x' * 57}...'; configs: recursive"]),
    "--split of 500 characters": (None, None, None, ["--config", "cot", "--split", "x" * 500], 2,
        [f"config cot has no split '{'x' * 57}...'; splits: train"]),
    "--max-balance-tv 3": (None, None, None, ["--max-balance-tv", "3"], 2,
        ["Invalid value for '--max-balance-tv'"]),
    "-m 1": (None, None, None, ["-m", "1", "--task", "cot"], 2,
        ["configs.cot.modulus: Input should be greater than"]),
    "a clean file of the flags' spec": (SHARD, recursive_m23, {}, M23, 0, []),
    "one row, one dependency, -v": (SHARD, lambda: split_table(TaskSpec(**ONE_ROW), "test"), {},
        ONE_ROW_FLAGS, 0, ["1 row of 256 tokens", "255 targets equal mod_addition of their 1 "
        "dependency\n", "1 dependency per target", "(1 periodic row)", "(1 row, 1 candidate)"]),
    "a spec of three configs, no --config": (SHARD, recursive_m23, {}, PAPER, 2,
        ["the spec names 3 configs (recursive, cot, semirecursive); pick one"]),
    "a spec of three configs, --config picks one": (SHARD, recursive_m23, {},
        [*PAPER, "--config", "recursive", "-m", "23", "--test-size", "10"], 1, ["FAILED: "]),
    "--json -": (None, None, None, ["--config", "cot", "--json", "-"], 0, ['"ok": true']),
    "no spec flags": (SHARD, recursive_m23, {}, [], 2, ["give the spec"]),
    "rows longer than the spec": ("test.parquet", bomb, ZSTD, COT, 2, TOO_LONG),
    # a struct column first: the footer's tokens were counted in the column of id (1 value)
    "rows longer than the spec, a struct column first": ("test.parquet",
        lambda: bomb(s=pa.array([{"a": 1, "b": 2}])), ZSTD, COT, 2, TOO_LONG),
    # each batch's header is read first
    "an arrow batch past its rows, zstd": ("test.arrow", bomb, ZSTD, COT, 1, EXPANDS),
    "an arrow batch past its rows, lz4": ("test.arrow", bomb, {"compression": "lz4"}, COT, 1,
                                          EXPANDS),
    # the split is inferred from the first row's length: there is none to read
    "no tokens column": ("o.parquet", lambda: pa.table({"id": [0, 1], "predictions": [5, 6]}), {},
                         COT, 1, ["no 'tokens' column"]),
    "no columns": ("o.parquet", lambda: pa.table({}), {}, COT, 1,
                   ["o.parquet: no 'tokens' column (columns: none)"]),
    "no tokens column, names of 300 characters": ("o.parquet", lambda: pa.table(
        {c * 300: [1] for c in "xy"}), {}, COT, 1, [f"(columns: {'x' * 97}...)"]),
    "tokens not lists": ("o.parquet", lambda: pa.table({"id": [0, 1], "tokens": [5, 6]}), {}, COT,
                         1, ["'tokens' is int64, not a list"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CLI))
def test_cli_exits_0_1_or_2_with_the_line_its_source_and_flags_call_for(
    assert_clean_error, cli, small_dataset, tmp_path, case
):
    name, table, options, flags, code, said = CLI[case]
    if name is not None:
        write(table(), tmp_path / name, **options)
    result = cli("validate", small_dataset if name is None else tmp_path / name, *flags)
    if code == 2:
        assert_clean_error(result, 2, *said)
    else:
        assert result.exit_code == code and "Traceback" not in result.output, result.output
        assert "internal error" not in result.output, result.output
        assert all(fragment in result.output for fragment in said), result.output


@pytest.mark.parametrize(("flags", "shared"), [([], "0"), (["--split", "test"], "n/a")])
def test_shared_windows_are_n_a_when_no_other_split_was_validated_to_compare(
    cli, small_dataset, flags, shared
):
    result = cli("validate", small_dataset, "--config", "cot", *flags)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("cot/test "))
    assert row.split()[-1] == shared  # never "0" for windows compared with nothing


@pytest.mark.parametrize(
    ("name", "tokens", "said"),
    [
        ("rows.arrow", lambda: pa.ListArray.from_arrays(
            np.arange(0, 2**26 + 1, 2**16, dtype=np.int32), np.zeros(2**26, np.uint8)), ""),
        ("rows.parquet", lambda: pa.array([[b"\0" * (4 << 20)]] * 4, pa.list_(pa.binary())),
         "not a list of integers"),
    ],
    ids=["1,024 rows of 65,536 tokens", "4 rows of a 4 MB string"],
)  # fmt: skip
def test_a_bare_file_named_for_no_split_is_not_inflated_to_learn_its_row_length(
    tmp_path, name, tokens, said
):  # a few KB of zstd; the first row's length is read from a batch checked for 256 tokens
    column = tokens()
    write(pa.table({"id": np.arange(len(column)), "tokens": column}), tmp_path / name,
          compression="zstd")  # fmt: skip
    default = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(default)  # what pyarrow allocates, counted apart
    pa.set_memory_pool(pool)
    try:
        report = validate(tmp_path / name, spec=TaskSpec(task="cot"))
    finally:
        pa.set_memory_pool(default)
    assert not report.ok
    assert said in " ".join(c.message for c in report.checks if not c.ok)
    assert pool.max_memory() < 2**22, pool.max_memory()


BARE_SPEC = TaskSpec(task="cot", train_length=8, test_length=8, test_size=6)


def _ids(kind: pa.DataType, first: int = 0):
    return lambda t: t.set_column(0, "id", pa.array(range(first, first + len(t)), kind))


def _dictionary_column(table: pa.Table) -> pa.Table:
    return table.append_column("cat", pa.array(["a", "b"] * 3).dictionary_encode())


def _fixed_size(table: pa.Table) -> pa.Table:
    """Tokens as a fixed-size list (another writer's choice for rows of one length)."""
    flat = table.column("tokens").combine_chunks().flatten()
    return table.set_column(1, "tokens", pa.FixedSizeListArray.from_arrays(flat, 8))


def _null_token(table: pa.Table) -> pa.Table:
    rows = table.column("tokens").to_pylist()
    rows[2][5] = None
    return table.set_column(1, "tokens", pa.array(rows, table.schema.field("tokens").type))


def _one_token_short(table: pa.Table) -> pa.Table:
    rows = [row[:-1] for row in table.column("tokens").to_pylist()]
    return table.set_column(1, "tokens", pa.array(rows, table.schema.field("tokens").type))


BARE_FILES = {
    # case: (file name, rows of BARE_SPEC's test table (None: all) or a change of it, write
    #        options, the split given, what the refusal or a failing check says ("": it passes))
    "7 rows in test.parquet": ("test.parquet", 7, {}, None,
        "test.parquet declares 7 rows; test of this spec holds 6: not read"),
    "10,007 rows in rows.parquet": ("rows.parquet", 10_007, {}, None,
        "declares 10,007 rows; the largest split of this spec holds 10,000"),
    "7 rows in test.arrow": ("test.arrow", 7, {}, None,
        "test.arrow: unreadable (holds 7 rows or more; the data has 6: not read)"),
    "10,007 rows in rows.arrow": ("rows.arrow", 10_007, {}, None,
        "unreadable (holds 10,007 rows or more; the data has 10,000: not read)"),
    "tokens a fixed-size list": ("test.parquet", _fixed_size, {}, "test", ""),
    "a null token": ("test.parquet", _null_token, {}, "test", "1 null value(s) in 'tokens'"),
    "rows of no split's length": ("rows.parquet", _one_token_short, {}, None,
        "rows do not have any of the spec's lengths (8)"),
    "uint32 ids": ("test.parquet", _ids(pa.uint32()), {}, "test", ""),
    "uint64 ids": ("test.parquet", _ids(pa.uint64()), {}, "test", ""),
    "uint64 ids past int64": ("test.parquet", _ids(pa.uint64(), 2**63), {}, "test",
        "out of sequence"),
    # a dictionary is its own IPC message: the first checked reader refused it
    "a dictionary column": ("test.arrow", _dictionary_column, {"compression": "uncompressed"},
        "test", ""),
    "a dictionary column, zstd": ("test.arrow", _dictionary_column, {"compression": "zstd"},
        "test", ""),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BARE_FILES))
def test_a_bare_file_passes_fails_or_is_refused_unread_as_its_rows_say(tmp_path, case):
    name, change, options, split, said = BARE_FILES[case]
    path, table = tmp_path / name, split_table(BARE_SPEC, "test")
    write(table.take(np.arange(change) % 6) if isinstance(change, int) else change(table), path,
          **options)  # fmt: skip
    try:
        report = validate(path, spec=BARE_SPEC, split=split)
    except SourceError as error:
        assert said and said in str(error)
    else:
        problems = " ".join(c.message for c in report.checks if not c.ok)
        assert report.ok == (not said), problems
        assert said in problems and " None " not in problems


@example("uncompressed", [(357, 197), (684, 206), (1711, 183)])  # a name not UTF-8
@example("uncompressed", [(116, 209), (234, 7), (1258, 91)])  # footer and stream disagree
@example("uncompressed", [(2152, 0)])  # a batch length flipped negative
@given(
    compression=st.sampled_from(["uncompressed", "zstd"]),
    flips=st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=3),
)
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_damaged_bare_arrow_file_is_a_report_or_one_refusal_never_an_internal_error(
    tmp_path, compression, flips
):
    path = tmp_path / "test.arrow"
    feather.write_feather(
        split_table(BARE_SPEC, "test"), path, compression=compression, chunksize=2
    )
    raw = bytearray(path.read_bytes())
    for at, value in flips:
        raw[at % len(raw)] = value
    path.write_bytes(bytes(raw))
    try:
        report = validate(path, spec=BARE_SPEC, split="test")
    except SourceError as error:
        assert "test.arrow" in str(error)
    else:
        assert report.checks


def test_a_row_length_the_manifest_only_claims_is_not_audited(small_copy, monkeypatch):
    """cot's spec edited to L' = 2**20 (spec ids recomputed), its files left as they are."""
    import posgen.validate.shortcuts as shortcuts
    from posgen.spec import BenchmarkSpec

    body = json.loads((small_copy / "posgen.json").read_text())
    entry = body["configs"]["cot"]
    spec = TaskSpec(**{**entry["spec"], "test_length": [2**20, 128]})
    entry.update(spec=spec.canonical(), spec_id=spec.spec_id)
    for name in ("validation", "test", "probe"):
        entry["splits"][name]["length"] = 2**20
    configs = {name: TaskSpec(**c["spec"]) for name, c in body["configs"].items()}
    body["benchmark"]["spec_id"] = BenchmarkSpec(name=body["benchmark"]["name"],
                                                 configs=configs).spec_id  # fmt: skip
    (small_copy / "posgen.json").write_text(json.dumps(body))
    real = shortcuts._linear_rules

    def bounded(spec, length, rule):
        assert length <= 128, f"local rules grown to {length} positions"
        return real(spec, length, rule)

    monkeypatch.setattr(shortcuts, "_linear_rules", bounded)
    report = validate(small_copy, config="cot")
    assert "schema" in report.failed_kinds, report.summary()
