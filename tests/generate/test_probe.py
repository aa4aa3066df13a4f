"""Probe splits: rows, probed positions and far-rule answers equal the plain-loop definition
(tests/oracle.py) whatever the blocks; the validator catches tampered rows; they load."""

from __future__ import annotations

import subprocess
import sys
from unittest import mock

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

import posgen
import posgen.generator
from posgen.generator import generate_rows, probe_rows
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.store.formats import open_writer, probe_schema, probe_table
from posgen.store.manifest import read_manifest
from posgen.tasks import TASKS
from posgen.validate import validate

OPS = ["mod_addition", "square_sum", "pow_sin", "pow_sin_2pi", "keyed_hash", "far_perm",
       "slot_perm", "select_perm"]  # fmt: skip
KEYS = ("tokens", "replaced", "probed", "far_rule")

specs = st.builds(
    dict, task=st.sampled_from(TASKS), op=st.sampled_from(OPS),
    modulus=st.one_of(st.integers(2, 120), st.just(257)), near=st.integers(1, 5),
    far=st.integers(0, 4), train_length=st.integers(2, 30),
    extra=st.lists(st.integers(0, 40), min_size=1, max_size=2, unique=True),
    test_size=st.integers(1, 9), seed=st.integers(0, 2**40),
)  # fmt: skip


def _spec(params: dict) -> TaskSpec:
    p = dict(params)
    extra = p.pop("extra")
    p["train_length"] += p["near"] + p["far"]
    try:
        return TaskSpec(test_length=[p["train_length"] + e for e in extra], train_size=1,
                        val_size=1, **p)  # fmt: skip
    except ValidationError:
        assume(False)
        raise


def _source(spec: TaskSpec, split: str) -> np.ndarray:
    return generate_rows(spec, "test" + split[len("probe") :], 0, spec.test_size)


def _expected(oracle, spec: TaskSpec, split: str) -> list[dict]:
    rule = (spec.modulus, spec.near, spec.far, spec.seed, split, spec.op, spec.op_key)
    source = _source(spec, split)
    return [oracle.probe_row(spec.task, row.tolist(), i, *rule) for i, row in enumerate(source)]


def _as_rows(block) -> list[dict]:
    table = probe_table(block, probe_schema(2 if block.tokens.dtype == np.uint8 else 65536))
    return [{k: r[k] for k in KEYS} for r in table.to_pylist()]


@given(specs, st.integers(1, 4))
def test_probe_rows_equal_the_plain_loop_definition_on_any_spec_whatever_the_blocks(
    oracle, params, cut
):
    spec = _spec(params)
    rule = (spec.modulus, spec.near, spec.far, spec.op, spec.op_key)
    for split in spec.probe_names:
        for row in _source(spec, split):  # the source rows are the task's rows
            window = row[: spec.window].tolist()
            assert row.tolist() == oracle.grow_row(spec.task, window, row.size, *rule)
        got = _as_rows(probe_rows(spec, split, 0, spec.test_size))
        assert got == _expected(oracle, spec, split)
    pieces = []
    with mock.patch.object(posgen.generator, "FAR_RULE_PAIRS", 7):  # far-rule answers in chunks
        for first in range(0, spec.test_size, cut):
            last = min(spec.test_size, first + cut)
            pieces += _as_rows(probe_rows(spec, "probe", first, last, block_rows=1))
    assert pieces == _as_rows(probe_rows(spec, "probe", 0, spec.test_size))


def test_probed_positions_of_a_wide_window_take_memory_bounded_whatever_the_window():
    """(L - w) x (j + k) positions were built at once: 2.3 GB for j = 1024, L = 131072."""
    import tracemalloc

    replaced = np.zeros(32_768, dtype=bool)
    replaced[::1000] = True
    tracemalloc.start()
    try:
        probed = posgen.generator.probed_positions("cot", 3, 512, replaced)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * 2**20  # the whole matrix: 32,253 x 515 int64, 133 MB
    assert probed.tolist() == [t for t in range(515, 32_768) if not replaced[t - 3 : t + 1].any()]


@pytest.mark.parametrize("task", TASKS)
def test_probed_positions_read_each_position_a_bounded_number_of_times_whatever_the_window(
    oracle, task
):
    """Every target's j + k operands were looked up, (L - w) x w reads: 4 probe rows of
    L' = 65,536 at k = 4096 took 10.7 s against 0.8 s to generate them."""
    reads = []

    class Counted(np.ndarray):
        def __getitem__(self, index):
            out = super().__getitem__(index)
            reads.append(np.size(out))
            return out

    near, far, length = 1024, 2, 8192
    replaced = np.zeros(length, dtype=bool)
    replaced[::700] = True
    probed = posgen.generator.probed_positions(task, near, far, replaced.view(Counted))
    assert sum(reads) <= 2 * length
    expected = [
        t
        for t in range(near + far, length)
        if not replaced[t - near : t + 1].any()
        and replaced[oracle.far_positions(task, t, near, far)].any()
    ]
    assert probed.tolist() == expected


def test_cot_replaces_the_question_and_probes_every_target():
    spec = TaskSpec(task="cot", far=2, train_size=1, val_size=1, test_size=5)
    block = probe_rows(spec, "probe", 0, 5)
    assert block.replaced.tolist() == [0, 1] * 5
    assert block.probed.tolist() == list(range(spec.window, 256)) * 5


@pytest.mark.parametrize("task", TASKS)
def test_across_rows_every_id_and_ood_position_is_probed(task):
    spec = TaskSpec(task=task, train_size=1, val_size=1, test_size=300, test_length=[128])
    block = probe_rows(spec, "probe", 0, spec.test_size)
    assert np.bincount(block.probed, minlength=128)[spec.window :].min() > 0


def test_written_probe_splits_hold_the_oracle_rows_load_and_are_what_generate_split_gives(
    oracle, small_dataset
):
    import datasets

    for config, entry in read_manifest(small_dataset).configs.items():
        loaded = datasets.load_dataset(str(small_dataset), f"{config}-probe")
        assert list(loaded) == ["probe", "probe_128"]
        for split in entry.spec.probe_names:
            rows = loaded[split].to_list()
            assert [r["id"] for r in rows] == [r["source_id"] for r in rows] == list(range(20))
            got = [{k: r[k] for k in KEYS} for r in rows]
            assert got == _expected(oracle, entry.spec, split)
            stored = posgen.Dataset.open(small_dataset).probe(config, split).tokens
            assert np.array_equal(posgen.generate_split(entry.spec, split), stored)
            assert np.array_equal(generate_rows(entry.spec, split, 5, 9), stored[5:9])
        assert list(posgen.load(small_dataset, f"{config}-probe")) == ["probe", "probe_128"]


@pytest.mark.parametrize("split", [3, None, "probe_96"])
def test_generate_split_of_no_split_of_the_spec_names_it(split):
    with pytest.raises(KeyError, match=rf"no split {split!r} in this spec; splits: train, "):
        posgen.generate_split(TaskSpec(task="cot", train_size=4, val_size=2, test_size=2), split)


@pytest.mark.parametrize(("what", "message"), [
    ("far_rule", "far-rule answer(s) not h of the stored operands"),
    ("token", "token(s) differ from the source row"),
    ("replacement", "replaced token(s) not the rule's replacement"),
    ("probed", "probed positions are not the rule's"),
    ("source_id", "source id(s) not the row's own index"),
])  # fmt: skip
def test_validate_names_a_tampered_probe_row(record_files, small_copy, what, message):
    path = read_manifest(small_copy).configs["semirecursive"].splits["probe"].files[0].path
    table = pq.read_table(small_copy / path)
    rows = table.to_pylist()
    row = rows[3]
    if what == "far_rule":
        row["far_rule"][2] = (row["far_rule"][2] + 1) % 17
    elif what in ("token", "replacement"):
        free = next(t for t in range(40, 96) if t not in row["replaced"])
        spot = free if what == "token" else row["replaced"][0]
        row["tokens"][spot] = (row["tokens"][spot] + 1) % 17
    elif what == "probed":
        row["probed"], row["far_rule"] = row["probed"][1:], row["far_rule"][1:]
    else:
        row["source_id"] = 7
    with open_writer(small_copy / path, table.schema) as writer:
        writer.write_table(type(table).from_pylist(rows, schema=table.schema))
    record_files(small_copy, path)  # only the change is wrong
    (failed,) = [c for c in validate(small_copy, config="semirecursive").checks if not c.ok]
    assert (failed.check, failed.config, failed.split) == ("probe", "semirecursive", "probe")
    assert message in failed.message and "row 3" in failed.message


def test_a_config_may_not_take_another_configs_probe_name():
    with pytest.raises(ValidationError, match="clash with the probe splits"):
        BenchmarkSpec(
            name="b", configs={"cot": TaskSpec(task="cot"), "cot-probe": TaskSpec(task="cot")}
        )


NO_TORCH = """
import sys
from posgen.cli import main
args = ['--train-size', '20', '--val-size', '4', '--test-size', '4', '-q']
heavy = ('torch', 'transformers', 'pandas', 'datasets', 'posgen.cli.train', 'posgen.scoring')
for argv in (['generate', '--out', sys.argv[1], *args], ['validate', sys.argv[1]]):
    try:
        main(argv)
    except SystemExit as end:
        assert not end.code, end.code
    print(sorted(m for m in heavy if m in sys.modules))
"""


def test_generate_and_validate_with_probe_splits_never_import_torch(tmp_path):
    """Nor does generate load what it does not use: pandas, the other commands, the scorer."""
    run = [sys.executable, "-c", NO_TORCH, str(tmp_path / "ds")]
    result = subprocess.run(run, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    assert (lines[0], lines[-1]) == ("[]", "['pandas']"), result.stderr
    assert (tmp_path / "ds" / "data" / "cot-probe").is_dir()


@pytest.mark.parametrize("far, measures, rows", [(4, False, 16), (3, True, 16), (3, True, 1)])
def test_a_probe_split_where_no_far_rule_answer_differs_fails_validation(
    tmp_path, far, measures, rows
):
    """cot with m = 2: each question token flips, so an even j keeps every answer."""
    spec = TaskSpec(
        task="cot", modulus=2, near=4, far=far, train_size=8, val_size=4, test_size=rows
    )
    posgen.write_dataset(BenchmarkSpec(name="m2", configs={"cot": spec}), tmp_path / "ds")
    (probe,) = [c for c in validate(tmp_path / "ds").checks if c.check == "probe"]
    assert probe.ok is measures, probe.message
    probed = f"{rows * (256 - spec.window):,}"  # every target of every test row
    if measures:
        said = "1 probe row matches its test row" if rows == 1 else "16 probe rows match their"
        assert said in probe.message, probe.message
        assert f"{probed} far-rule answers recomputed, {probed} of them unlike" in probe.message
    else:
        assert f"cannot be measured: at none of the {probed} probed targets" in probe.message
