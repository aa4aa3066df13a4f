"""The validator's audits (look-backs, local rules, copies, linear rules) against brute force,
and what the report and the card say of them."""

from __future__ import annotations

import functools
import itertools
import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import posgen.tasks
import posgen.validate.audits as copies
from posgen.card import validation_section
from posgen.consistency import (
    AUDIT_OPERANDS,
    CHUNK_OPERANDS,
    question_lookbacks,
    refusal,
    sample_rows,
)
from posgen.generator import grow
from posgen.spec import TaskSpec
from posgen.store.formats import to_dataset_dict
from posgen.tasks import TASKS, get_op, op_names, register_task
from posgen.validate import AuditThresholds, QuestionLookbacks, validate
from posgen.validate.shortcuts import local_rules, near_determined_counts, near_determined_positions

BRUTE_TASKS = ("cot", "semirecursive", "recursive")


@functools.cache
def h(oracle, op: str, operands: tuple[int, ...], m: int, key: int, far: int) -> int:
    return oracle.op_value(op, list(operands), m, key, far)


def brute_force(oracle, task, row: list[int], m: int, near: int, far: int, op: str, key: int):
    """D*(t) for t = w .. len(row)-1, every look-back D tried, every question q enumerated;
    ``task``: a task name, or a function t -> far start."""
    w = near + far
    start_of = task if callable(task) else lambda t: oracle.far_positions(task, t, near, far)[0]
    found = []
    for t in range(w, len(row)):
        start = start_of(t)
        lookback = t - start  # the far operands are in sight: known
        for d in range(near, t - start):
            visible = [s for s in range(max(w, t - d + near), t) if start_of(s) == start]
            answers = set()
            for q in itertools.product(range(m), repeat=far):
                if all(
                    h(oracle, op, q + tuple(row[s - near : s]), m, key, far) == row[s]
                    for s in visible
                ):
                    answers.add(h(oracle, op, q + tuple(row[t - near : t]), m, key, far))
            if len(answers) == 1:
                lookback = d
                break
        found.append(lookback)
    return found


def make_spec(**fields) -> TaskSpec:
    base = dict(train_length=8, test_length=16, train_size=1, val_size=1, test_size=1)
    try:
        return TaskSpec(**{**base, **fields})
    except ValidationError:  # e.g. pow_sin_2pi at an m where a sum gives m
        assume(False)
        raise


@settings(max_examples=80)
@given(
    task=st.sampled_from(BRUTE_TASKS), op=st.sampled_from(op_names()),
    m=st.sampled_from([2, 3, 4, 5, 7]), near=st.integers(1, 3), far=st.integers(1, 3),
    extra=st.integers(1, 12), key=st.integers(0, 3), data=st.data(),
)  # fmt: skip
def test_lookbacks_equal_brute_force_on_random_specs(
    oracle, task, op, m, near, far, extra, key, data
):
    assume(m**far <= 64)
    key = key if get_op(op).keyed else 0
    spec = make_spec(task=task, op=op, modulus=m, near=near, far=far, op_key=key)
    w = near + far
    windows = data.draw(
        st.lists(st.lists(st.integers(0, m - 1), min_size=w, max_size=w), min_size=1, max_size=3)
    )
    rows = [oracle.grow_row(task, window, w + extra, m, near, far, op, key) for window in windows]
    fast = question_lookbacks(spec, np.array(rows))
    for row, got in zip(rows, fast.tolist(), strict=True):
        assert got == brute_force(oracle, task, row, m, near, far, op, key)


@pytest.mark.parametrize("op", op_names())
def test_lookbacks_of_a_registered_task_equal_brute_force(oracle, monkeypatch, op):
    monkeypatch.setattr(posgen.tasks, "_RULES", dict(posgen.tasks._RULES))
    register_task("zigzag", lambda t, w: (t - w) % 3)  # the far start goes back and forth
    m, near, far = 3, 2, 2
    spec = make_spec(task="zigzag", op=op, modulus=m, near=near, far=far)
    w = near + far
    rows = []
    for window in np.random.default_rng(4).integers(0, m, (4, w)).tolist():
        row = list(window)
        for t in range(w, 20):
            start = (t - w) % 3
            row.append(
                h(oracle, op, tuple(row[start : start + far] + row[t - near : t]), m, 0, far)
            )
        rows.append(row)
    fast = question_lookbacks(spec, np.array(rows)).tolist()
    start_of = lambda t: (t - w) % 3  # noqa: E731
    assert fast == [brute_force(oracle, start_of, row, m, near, far, op, 0) for row in rows]


@pytest.mark.parametrize("task", ["semirecursive", "recursive"])
def test_semirecursive_and_recursive_lookbacks_take_their_few_possible_values(task):
    spec = make_spec(task=task, op="square_sum", modulus=101, near=4, far=1, test_length=64)
    windows = np.random.default_rng(1).integers(0, 101, (30, 5))
    found, t = question_lookbacks(spec, grow(spec, windows, 64)), np.arange(5, 64)
    start = (t - 5) // 2 if task == "semirecursive" else t - 5
    assert ((found == 4) | (found == 5) | (found == t - start)).all()


def test_the_audit_refuses_a_question_space_above_its_bound_says_why_and_bounds_its_sample():
    spec = make_spec(task="cot", modulus=101, near=2, far=3)
    assert refusal(spec, 16).startswith("not computed (m^j too large: 101^3 = 1,030,301")
    assert sample_rows(spec, 16) == 0
    wide = make_spec(task="cot", modulus=101, near=4, far=2, train_length=64, test_length=64)
    assert sample_rows(wide, 64) == AUDIT_OPERANDS // (101**2 * 58 * 6)  # 2 rows: the bound
    spec = TaskSpec(task="cot", modulus=101, near=2, far=3, train_size=20, val_size=5,
                    test_size=5)  # fmt: skip
    report = validate(to_dataset_dict(spec), spec, split="test")  # the report and the card
    facts = report.facts["cot"]["test"]
    assert facts["question_lookback_method"].startswith("not computed (m^j too large")
    assert facts["question_short_share_id"] is None
    assert "| cot | test | n/a |" in validation_section(report)


def test_the_audit_memory_stays_bounded_whatever_the_candidates():
    spec = make_spec(task="cot", op="keyed_hash", modulus=256, near=3, far=2, train_length=8,
                     test_length=12)  # fmt: skip
    rows = grow(spec, np.random.default_rng(3).integers(0, 256, (8, 5)), 12)
    tracemalloc.start()
    found = question_lookbacks(spec, rows)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert found.shape == (8, 7)
    # all at once: 8 rows x 65,536 candidates x 7 targets x 5 operands x 8 bytes = 147 MiB
    assert peak < 12 * CHUNK_OPERANDS * 8


def small_v2(task: str) -> TaskSpec:
    return TaskSpec(task=task, op="square_sum", modulus=101, near=4, far=1, train_size=200,
                    val_size=50, test_size=100)  # fmt: skip


def test_validate_reports_the_card_shows_and_max_shortcut_share_fails_the_question_lookbacks():
    spec, limits = small_v2("cot"), AuditThresholds(max_shortcut_share=0.5)
    data = to_dataset_dict(spec)
    report = validate(data, spec, split="test", thresholds=limits)
    (check,) = [check for check in report.checks if check.check == "audit"]
    assert not check.ok and "question-consistency look-back" in check.message, check
    facts = report.facts["cot"]["test"]
    audit = facts["question_lookback"]
    rows = sample_rows(spec, 256)  # 33 of the 100 test rows: rows 0, 3, 6, 9, 12, 15, 18, 21, ...
    picked = np.arange(rows) * 100 // rows
    found = question_lookbacks(spec, np.array(data["test"]["tokens"])[picked])
    expected = np.bincount(found[:, 59:].reshape(-1))
    assert audit["rows"] == rows
    assert audit["ood"]["histogram"] == {str(d): int(n) for d, n in enumerate(expected) if n}
    assert audit["short_by_position"] == (found <= 6).sum(axis=0).tolist()
    assert facts["question_short_share_ood"] == np.mean(found[:, 59:] <= 6)
    assert facts["question_lookback_method"].startswith("exact")  # posgen-v2's cot is computed
    assert facts["question_short_share_id"] > 0.9
    typed = QuestionLookbacks.model_validate(json.loads(json.dumps(report.to_dict()))["facts"]
                                             ["cot"]["test"]["question_lookback"])  # fmt: skip
    assert typed.ood.targets == sum(typed.ood.histogram.values())
    assert len(typed.short_by_position) == 256 - 5
    section = validation_section(report)
    assert f"| cot | test | {audit['rows']} | 101 |" in section
    assert f"{audit['ood']['short_share']:.4f} ({audit['ood']['short']:,})" in section


def test_max_shortcut_share_passes_recursive_which_reads_w_tokens_by_design():
    spec, limits = small_v2("recursive"), AuditThresholds(max_shortcut_share=0.5)
    assert validate(to_dataset_dict(spec), spec, split="test", thresholds=limits).ok


def all_rows(oracle, task, op, m, near, far, length):
    return [
        oracle.grow_row(task, list(window), length, m, near, far, op)
        for window in itertools.product(range(m), repeat=near + far)
    ]


def determines(rows, positions, t):
    seen: dict[tuple[int, ...], int] = {}
    return all(seen.setdefault(tuple(r[p] for p in positions), r[t]) == r[t] for r in rows)


def near_determined_by_brute_force(oracle, task: str, m: int, near: int, far: int, length: int):
    """Positions where rows that agree on the k near tokens always agree on the target."""
    rows = all_rows(oracle, task, "mod_addition", m, near, far, length)
    return [t for t in range(near + far, length) if determines(rows, range(t - near, t), t)]


@settings(max_examples=25)
@given(st.sampled_from(TASKS), st.sampled_from([2, 3, 5, 7]), st.integers(1, 2),
       st.integers(1, 2), st.integers(1, 14))  # fmt: skip
def test_audit_equals_brute_force_over_all_windows(oracle, task, m, near, far, extra):
    length = near + far + extra
    spec = TaskSpec(task=task, modulus=m, near=near, far=far, train_length=length,
                    train_size=1, val_size=1, test_size=1)  # fmt: skip
    assert near_determined_positions(spec, length) == near_determined_by_brute_force(
        oracle, task, m, near, far, length
    )


def test_near_determined_positions_in_the_paper_setup_and_where_not_computed():
    spec = TaskSpec(task="semirecursive")  # recursive: none (the module's doctest)
    assert len(near_determined_positions(spec, 256)) == 28
    assert near_determined_positions(TaskSpec(task="cot"), 256) == []
    assert near_determined_counts(spec, 64) == {"near_determined_id": 12, "near_determined_ood": 0}
    assert near_determined_positions(TaskSpec(task="cot", modulus=16), 64) is None


def brute_local_rules(oracle, task, op, m, near, far, length):
    """Smallest look-back D, and smallest support inside it, by enumerating every window."""
    rows = all_rows(oracle, task, op, m, near, far, length)
    found = []
    for t in range(near + far, length):
        rule = t - oracle.far_positions(task, t, near, far)[0] if far else near
        depth = next(d for d in range(1, rule + 1) if determines(rows, range(t - d, t), t))
        support = next(
            size
            for size in range(depth + 1)
            for subset in itertools.combinations(range(t - depth, t), size)
            if determines(rows, subset, t)
        )
        found.append((depth, rule, support))
    return found


small_specs = st.tuples(st.sampled_from(TASKS),
    st.sampled_from(["mod_addition", "square_sum", "pow_sin", "keyed_hash"]),
    st.sampled_from([2, 3, 4, 5, 6, 7]), st.integers(1, 2), st.integers(0, 2), st.integers(1, 10),
)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(small_specs)
def test_local_rules_equal_brute_force_over_every_seed_window(oracle, params):
    task, op, m, near, far, extra = params
    length = near + far + extra
    assume(m ** (near + far) <= 400)
    try:
        spec = TaskSpec(task=task, op=op, modulus=m, near=near, far=far, train_length=length,
                        train_size=1, val_size=1, test_size=1)  # fmt: skip
    except ValueError:
        assume(False)
    rules = local_rules(spec, length)
    expected = brute_local_rules(oracle, task, op, m, near, far, length)
    assert rules.effective.tolist() == [depth for depth, _, _ in expected]
    assert rules.rule.tolist() == [rule for _, rule, _ in expected]
    for coefficients, (_, _, smallest) in zip(rules.coefficients, expected, strict=False):
        assert sum(map(bool, coefficients)) >= smallest
    wide = np.array(all_rows(oracle, task, op, m, near, far, length))
    for i, coefficients in enumerate(rules.coefficients):
        t = near + far + i
        predicted = sum(a * wide[:, t - d] for d, a in enumerate(coefficients, start=1))
        assert np.array_equal(np.asarray(predicted) % m, wide[:, t])


@pytest.mark.parametrize(
    ("m", "near", "far"), [(17, 3, 1), (16, 2, 1), (5, 4, 2), (3, 1, 3), (101, 5, 2), (7, 1, 1)]
)
def test_cot_under_mod_addition_needs_k_plus_1_tokens_after_the_first_target(m, near, far):
    spec = make_spec(task="cot", modulus=m, near=near, far=far, train_length=40, test_length=90)
    windows = np.random.default_rng(0).integers(0, m, (20, near + far))
    found = question_lookbacks(spec, grow(spec, windows, 90)) if m**far <= 4096 else None
    if found is not None:  # the question-consistency look-backs
        assert (found[:, 0] == near + far).all()  # t = w: no target before, the question needed
        assert (found[:, 1:] == near + 1).all()
    if m == 16:  # composite m: no GF(m) linear rules to read
        return
    rules = local_rules(spec, 90)  # the local rules: x_t = 2 x_{t-1} - x_{t-k-1}
    assert rules.effective[1:].tolist() == [near + 1] * (90 - near - far - 1)
    assert [sum(map(bool, a)) for a in rules.coefficients[1:]] == [2] * (90 - near - far - 1)
    assert rules.shorter(near + far, 90) == 90 - near - far - 1


def test_recursive_has_no_shorter_rule_and_rules_are_not_computed_without_an_exact_method():
    for m, near, far in [(17, 3, 1), (101, 5, 2), (13, 2, 3)]:
        spec = TaskSpec(task="recursive", modulus=m, near=near, far=far, train_length=40)
        assert local_rules(spec, 256).shorter(0, 256) == 0
    spec = TaskSpec(task="cot", op="square_sum", modulus=101)
    assert local_rules(spec, 256) is None  # 101^4 windows: too many to enumerate
    assert local_rules(TaskSpec(task="cot", modulus=16), 256) is None  # composite, 16^4 x 256


def brute_copy(tokens, context, first, boundary):
    """Plain loops: the token after the most recent earlier occurrence of the context."""
    out = {"id": [0, 0], "ood": [0, 0]}
    for row in tokens.tolist():
        for t in range(max(first, context, 1), len(row)):
            key = row[t - context : t]
            earlier = [s for s in range(max(context, 1), t) if row[s - context : s] == key]
            if earlier:
                region = out["id" if t < boundary else "ood"]
                region[1] += 1
                region[0] += row[earlier[-1]] == row[t]
    return {name: tuple(pair) for name, pair in out.items()}


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 5), st.integers(1, 6), st.integers(1, 5), st.integers(2, 60),
    st.integers(0, 99), st.booleans(),
)  # fmt: skip
def test_copy_shares_equal_plain_loops(m, context, rows, length, seed, hashed):
    tokens = np.random.default_rng(seed).integers(0, m, size=(rows, length))
    first, boundary = min(length, 3), length // 2
    if hashed:  # the polynomial hash path gives the same counts
        saved, copies.EXACT_CONTEXT = copies.EXACT_CONTEXT, 0
        try:
            found = copies.copy_hits(tokens, context, first, boundary, m)
        finally:
            copies.EXACT_CONTEXT = saved
    else:
        found = copies.copy_hits(tokens, context, first, boundary, m)
    assert found == brute_copy(tokens, context, first, boundary)


@pytest.mark.parametrize("position", [4, 5, 30])
def test_negative_tokens_fail_the_schema_check_and_are_not_counted(tmp_path, position):
    # a signed token column holding -1 at a target: 'internal error (ValueError)' at the first
    # target (the balance count's cell -1), another position's cell counted elsewhere
    import pyarrow as pa
    import pyarrow.parquet as pq

    from posgen.generator import generate_rows

    spec = TaskSpec(task="cot", train_size=100, val_size=10, test_size=10)
    rows = generate_rows(spec, "train", 0, 100).astype(np.int64)
    rows[3, position] = -1
    tokens = pa.array(rows.tolist(), type=pa.list_(pa.int64()))
    pq.write_table(pa.table({"id": np.arange(100), "tokens": tokens}), tmp_path / "x.parquet")
    report = validate(tmp_path / "x.parquet", spec, split="train")
    assert {"schema", "window"} <= set(report.failed_kinds)
    tally = copies.BalanceTally(spec, 64)
    tally.add(rows)
    assert tally.counts.sum() == 100 * 60 - 1


SHORTCUTS = {
    # case: (spec fields, facts of the test split: a value or a test of it, whether it fails
    #        --max-shortcut-share 0.5)
    "cot under mod_addition: copyable": ({"task": "cot"}, {"shorter_lookback_id": 59,
        "shorter_lookback_ood": 192, "effective_lookback_max": 4, "max_lookback": 255,
        "linear_rule_share_id": pytest.approx(59 / 60),
        "copy_k_share_ood": lambda v: v > 0.5}, True),  # rows repeat: an induction head copies
    "recursive under mod_addition: none": ({"task": "recursive"}, {"shorter_lookback_id": 0,
        "shorter_lookback_ood": 0, "copy_k_share_ood": lambda v: v < 0.01,
        "linear_rule_hits_ood": 0}, None),
    # a non-additive op: the additive rule x_t = 2x_{t-1} - x_{t-4} fails
    "cot under square_sum: no linear rule": ({"task": "cot", "op": "square_sum", "modulus": 101},
        {"local_rule_method": lambda v: v.startswith("not computed"),
         "linear_rule_share_ood": lambda v: v < 0.1}, None),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SHORTCUTS))
def test_the_validator_reports_the_shortcuts_the_rows_offer(case):
    fields, expected, fails = SHORTCUTS[case]
    spec = TaskSpec(**fields, train_size=200, val_size=50, test_size=200)
    facts = validate(to_dataset_dict(spec), spec).facts[spec.task]["test"]
    for name, value in expected.items():
        assert value(facts[name]) if callable(value) else facts[name] == value, (name, facts)
    if fails:
        limits = AuditThresholds(max_shortcut_share=0.5)
        assert "audit" in validate(to_dataset_dict(spec), spec, thresholds=limits).failed_kinds


def test_validate_memory_does_not_grow_with_the_window_squared():
    spec = TaskSpec(task="semirecursive", near=256, far=256, train_length=600,
                    test_length=8192, train_size=2, val_size=2, test_size=2)  # fmt: skip
    data = to_dataset_dict(spec)
    tracemalloc.start()
    report = validate(data, spec, split="test")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.ok
    # the (L' - w, w) dependency matrix alone would be 8192 x 512 x 8 bytes = 32 MiB
    assert peak < 16 * 2**20
    assert report.facts["semirecursive"]["test"]["operand_probes"] <= 16 * 16 * (2**16 // 512)
