"""Every op: exact tables, the keyed hash's definition, the plain-loop oracle, the validator."""

from __future__ import annotations

import hashlib
import itertools
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import posgen.tasks
from posgen.generator import expected_targets, generate_split, grow, storage_dtype
from posgen.spec import TaskSpec
from posgen.tasks import TASKS, Op, get_op, keyed_hash, op_names, register_op, sum_table
from posgen.validate import validate

SUM_OPS = ("pow_sin", "pow_sin_2pi", "square_sum")


def small(**fields):
    return TaskSpec(**{"task": "cot", "train_size": 3, "val_size": 2, "test_size": 2, **fields})


@pytest.mark.parametrize("modulus, window", [(17, 4), (17, 1), (101, 4), (37, 12), (257, 9)])
def test_sum_tables_equal_pythons_math_for_every_possible_sum(oracle, modulus, window):
    sums = range(window * (modulus - 1) + 1)
    for op in SUM_OPS:  # the oracle's op_value is Python's math, term by term
        expected = [oracle.op_value(op, [s], modulus) for s in sums]
        assert sum_table(op, modulus, window).tolist() == expected, op


def test_an_op_whose_formula_leaves_z_m_is_refused_with_the_sum_that_does():
    # |sin(2 pi 4 / 16)| * 16 = 16: the authors' pow_sin_2pi gives token m when 4 divides m
    with pytest.raises(ValidationError, match=r"gives 16 for the operand sum 4, outside Z_16"):
        small(op="pow_sin_2pi", modulus=16)
    with pytest.raises(ValidationError, match="tabulates"):
        small(op="pow_sin", modulus=65536, near=64)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (lambda total, m: -1, "op test_op gives -1 for the operand sum 0, outside Z_17"),
        (lambda total, m: 2**80, "op test_op gives 1208925819614629174706176 for the operand sum"),
        (lambda total, m: total / 2, "op test_op gives 0.0 for the operand sum 0, not an integer"),
        (lambda total, m: None, "op test_op gives None for the operand sum 0, not an integer"),
        (lambda total, m: "1", "op test_op gives '1' for the operand sum 0, not an integer"),
        (lambda total, m: 1 // (total - 2), "formula raised ZeroDivisionError: integer division"),
        (lambda total, m: sys.exit(4), "op test_op's formula raised SystemExit: 4 for the operand"),
    ],
)
def test_a_registered_op_whose_formula_fails_or_gives_no_token_is_refused_naming_it(
    monkeypatch, cli, assert_clean_error, tmp_path, value, message
):
    monkeypatch.setattr(posgen.tasks, "_OPS", dict(posgen.tasks._OPS))  # for this test only
    name = f"test_op_{abs(hash(message))}"  # the op's tables are cached by its name
    register_op(Op(name, "a broken formula", "sum", value))
    message = message.replace("test_op", name)
    with pytest.raises(ValidationError, match=re.escape(message)):
        small(op=name)
    result = cli("generate", "--out", tmp_path / "ds", "--task", "cot", "--op", name, "-q")
    assert_clean_error(result, 2, message)
    assert not (tmp_path / "ds").exists()


def test_a_registered_op_without_a_name_kind_formula_or_one_line_description_is_refused(
    monkeypatch,
):
    monkeypatch.setattr(posgen.tasks, "_OPS", dict(posgen.tasks._OPS))  # for this test only
    with pytest.raises(posgen.tasks.OpError, match="needs its value formula, value"):
        register_op(Op("test_op", "no formula", "sum", 5))  # type: ignore[arg-type]
    for kind in ("additive", "tuple", "perm", "slot", "select"):  # the built-in's data, renamed
        for value in (lambda total, m: total % m, None):  # a formula would be silently ignored
            with pytest.raises(posgen.tasks.OpError, match="an op of your own is a sum op"):
                register_op(Op("test_op", "mine", kind, value))
    for name, kind in ((None, "sum"), ("", "sum"), ("x" * 65, "sum"), ("a\nb", "sum"), ("k", "?")):
        with pytest.raises(ValueError, match=r"op name|kind"):
            register_op(Op(name, "", kind, lambda total, m: 0))  # type: ignore[arg-type]
    with pytest.raises(posgen.tasks.OpError, match="op 'mod_addition' is already registered"):
        register_op(Op("mod_addition", "mine", "sum", lambda total, m: 0))
    for description in ("a\n## heading", "x ``` y", "d" * 301, None):  # the card shows it
        with pytest.raises(posgen.tasks.OpError, match="one printable line of at most 300"):
            register_op(Op("test_op", description, "additive"))  # type: ignore[arg-type]


def test_op_key_belongs_to_keyed_ops_only_and_enters_their_spec_id():
    keyed = r"a keyed op \(keyed_hash, far_perm, slot_perm, select_perm\)"  # every one named
    with pytest.raises(ValidationError, match=f"op_key is only read by {keyed}"):
        small(op="pow_sin", op_key=3)
    assert "op_key" not in small().canonical()
    one, two = small(op="keyed_hash", op_key=1), small(op="keyed_hash", op_key=2)
    assert one.canonical()["op_key"] == 1 and one.spec_id != two.spec_id
    assert not np.array_equal(generate_split(one, "train"), generate_split(two, "train"))


@given(st.integers(2, 65536), st.integers(1, 9), st.integers(0, 2**63 - 1), st.integers(0, 99))
def test_keyed_hash_equals_its_definition_in_plain_python(oracle, m, window, key, seed):
    tuples = np.random.default_rng(seed).integers(0, m, size=(window, 16))
    fast = keyed_hash(tuples, m, key).tolist()
    assert fast == [oracle.keyed_hash(list(map(int, column)), m, key) for column in tuples.T]


def test_keyed_hash_reads_the_operands_in_order_and_is_near_uniform():
    m = 17
    tuples = np.array(list(itertools.product(range(m), repeat=3))).T
    values = keyed_hash(tuples, m, key=5)
    counts, expected = np.bincount(values.astype(np.int64), minlength=m), tuples.shape[1] / m
    assert ((counts - expected) ** 2 / expected).sum() < 60  # chi-square, 16 dof: p ~ 1e-6
    assert np.mean(keyed_hash(tuples[[1, 0, 2]], m, key=5) != values) > 0.8


op_cases = st.fixed_dictionaries(
    {
        "op": st.sampled_from(op_names()),
        "task": st.sampled_from(TASKS),
        "modulus": st.one_of(
            st.integers(2, 128), st.integers(129, 256), st.integers(257, 40000), st.just(65536)
        ),
        # a sum op's table costs a Python call per operand sum (a second at m = 65536)
        "sum_modulus": st.one_of(st.integers(2, 128), st.integers(129, 1200)),
        "near": st.integers(1, 9),
        "far": st.integers(0, 9),
        "extra": st.integers(1, 40),
        "rows": st.integers(1, 20),
        "key": st.integers(0, 2**63 - 1),
        "seed": st.integers(0, 2**32 - 1),
    }
)


@settings(max_examples=200)
@given(op_cases)
def test_every_op_and_kernel_equal_the_plain_loop_oracle_and_the_validator_recomputes_them(
    oracle, case
):
    op, near, far = case["op"], case["near"], case["far"]
    m = case["sum_modulus"] if op in SUM_OPS else case["modulus"]
    length = near + far + case["extra"]
    key = case["key"] if get_op(op).keyed else 0
    assume(m ** (near + far) >= 3)
    try:
        spec = TaskSpec(task=case["task"], op=op, op_key=key, modulus=m, near=near, far=far,
                        train_length=length, train_size=1, val_size=1, test_size=1)  # fmt: skip
    except ValidationError:
        assume(False)  # a sum table leaving Z_m or too large: refused (tested above)
    windows = np.random.default_rng(case["seed"]).integers(0, m, size=(case["rows"], near + far))
    fast = grow(spec, windows, length)
    slow = [oracle.grow_row(spec.task, w.tolist(), length, m, near, far, op, key) for w in windows]
    assert fast.dtype == storage_dtype(m)
    assert fast.tolist() == slow
    assert np.array_equal(expected_targets(spec, fast), fast[:, near + far :])


KEYED = dict(task="semirecursive", op="keyed_hash", op_key=12345, train_size=500)
GENERATE_KEYED = f"""
import hashlib, sys
from posgen.generator import generate_split
from posgen.spec import TaskSpec
rows = generate_split(TaskSpec(**{KEYED!r}), "train")
sys.stdout.write(hashlib.sha256(rows.tobytes()).hexdigest())
"""


def test_keyed_hash_gives_the_same_bytes_in_a_fresh_process():
    fresh = subprocess.run([sys.executable, "-c", GENERATE_KEYED], capture_output=True, text=True)
    here = hashlib.sha256(generate_split(TaskSpec(**KEYED), "train").tobytes()).hexdigest()
    assert fresh.stdout == here, fresh.stderr


@pytest.mark.parametrize(
    "op", [*SUM_OPS, "keyed_hash", "far_perm", "far_perm far=0", "slot_perm", "select_perm"]
)
def test_generated_data_of_every_op_validates_and_a_flipped_token_fails(op):
    from posgen.store.formats import to_dataset_dict

    op, _, far = op.partition(" far=")  # far=0: no far operand
    spec = TaskSpec(task="cot", op=op, modulus=101, train_size=20, val_size=5, test_size=5,
                    **({"far": int(far), "near": 4} if far else {}))  # fmt: skip
    assert validate(to_dataset_dict(spec), spec).ok
    rows = generate_split(spec, "test")
    rows[2, 70] = (int(rows[2, 70]) + 1) % 101
    assert (expected_targets(spec, rows) != rows[:, 4:]).any()


def test_far_perm_of_many_far_states_takes_memory_bounded_by_its_block(monkeypatch):
    """Each distinct far tuple's permutation of Z_m, built a block of states at a time: at
    m = 2048 and j = 2, validate built (targets x m) at once and took 8.8 GB."""
    import tracemalloc

    from posgen import tasks

    rng = np.random.default_rng(0)
    far = [rng.integers(0, 2048, 1000), rng.integers(0, 2048, 1000)]
    near = [rng.integers(0, 2048, 1000)]
    whole = tasks.far_perm(far, near, 2048, key=3)
    monkeypatch.setattr(tasks, "PERM_BLOCK", 64 * 2048, raising=False)
    tracemalloc.start()
    try:
        blocks = tasks.far_perm(far, near, 2048, key=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * 2**20  # 1000 states x 2048 x 8 B is 16 MB an array, and three are made
    assert (blocks == whole).all()


@pytest.mark.parametrize("op", ["mod_addition", "pow_sin", "square_sum"])
def test_a_block_of_w_operands_is_summed_in_a_bounded_number_of_array_operations(op):
    """One numpy call per operand: the validate audit applies h 256 times to w x 8 operands,
    9.5 s per split of one 8,193-token row at w = 8192 (generating it took under 1 s)."""
    calls = []

    class Counted(np.ndarray):
        def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
            calls.append((ufunc.__name__, method))
            inputs = [np.asarray(x) if isinstance(x, Counted) else x for x in inputs]
            return getattr(ufunc, method)(*inputs, **kwargs)

    rng = np.random.default_rng(0)
    operands = rng.integers(0, 17, (2048, 8))
    expected = get_op(op).apply(list(operands), 17)
    assert get_op(op).apply(operands.view(Counted), 17).tolist() == expected.tolist()
    assert len(calls) <= 4
