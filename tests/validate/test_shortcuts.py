"""The shortcut audit (local rules, copies, linear rules) agrees with brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from posgen.spec import TaskSpec
from posgen.store.formats import to_dataset_dict
from posgen.tasks import TASKS
from posgen.validate import AuditThresholds, validate
from posgen.validate.audits import copy_hits
from posgen.validate.shortcuts import local_rules, near_determined_counts, near_determined_positions
from tests.oracle import far_positions, grow_row


def brute_force(task: str, m: int, near: int, far: int, length: int) -> list[int]:
    """Positions where rows that agree on the k near tokens always agree on the target."""
    rows = [
        grow_row(task, list(window), length, m, near, far)
        for window in itertools.product(range(m), repeat=near + far)
    ]
    found = []
    for t in range(near + far, length):
        seen: dict[tuple[int, ...], int] = {}
        if all(seen.setdefault(tuple(r[t - near : t]), r[t]) == r[t] for r in rows):
            found.append(t)
    return found


@settings(max_examples=25)
@given(
    st.sampled_from(TASKS),
    st.sampled_from([2, 3, 5, 7]),
    st.integers(1, 2),
    st.integers(1, 2),
    st.integers(1, 14),
)
def test_audit_equals_brute_force_over_all_windows(task, m, near, far, extra):
    length = near + far + extra
    spec = TaskSpec(task=task, modulus=m, near=near, far=far, train_length=length,
                    train_size=1, val_size=1, test_size=1)  # fmt: skip
    assert near_determined_positions(spec, length) == brute_force(task, m, near, far, length)


def test_semirecursive_has_near_determined_positions_in_the_paper_setup():
    spec = TaskSpec(task="semirecursive")
    positions = near_determined_positions(spec, 256)
    assert positions[:4] == [6, 7, 22, 23]
    assert len(positions) == 28
    assert near_determined_positions(TaskSpec(task="recursive"), 256) == []
    assert near_determined_positions(TaskSpec(task="cot"), 256) == []
    assert near_determined_counts(spec, 64) == {"near_determined_id": 12, "near_determined_ood": 0}


def test_the_audit_declines_composite_moduli_and_other_ops():
    assert near_determined_positions(TaskSpec(task="cot", modulus=16), 64) is None


# Local rules, copy rules and linear rules against brute force -------------------------------
def all_rows(task, op, m, near, far, length):
    return [
        grow_row(task, list(window), length, m, near, far, op)
        for window in itertools.product(range(m), repeat=near + far)
    ]


def determines(rows, positions, t):
    seen: dict[tuple[int, ...], int] = {}
    return all(seen.setdefault(tuple(r[p] for p in positions), r[t]) == r[t] for r in rows)


def brute_local_rules(task, op, m, near, far, length):
    """Smallest look-back D, and smallest support inside it, by enumerating every window."""
    rows = all_rows(task, op, m, near, far, length)
    found = []
    for t in range(near + far, length):
        rule = t - far_positions(task, t, near, far)[0] if far else near
        depth = next(d for d in range(1, rule + 1) if determines(rows, range(t - d, t), t))
        support = next(
            size
            for size in range(depth + 1)
            for subset in itertools.combinations(range(t - depth, t), size)
            if determines(rows, subset, t)
        )
        found.append((depth, rule, support))
    return found


small_specs = st.tuples(
    st.sampled_from(TASKS),
    st.sampled_from(["mod_addition", "square_sum", "pow_sin", "keyed_hash"]),
    st.sampled_from([2, 3, 4, 5, 6, 7]),
    st.integers(1, 2),
    st.integers(0, 2),
    st.integers(1, 10),
)


@settings(max_examples=40, deadline=None)
@given(small_specs)
def test_local_rules_equal_brute_force_over_every_seed_window(params):
    task, op, m, near, far, extra = params
    length = near + far + extra
    assume(m ** (near + far) <= 400)
    try:
        spec = TaskSpec(task=task, op=op, modulus=m, near=near, far=far, train_length=length,
                        train_size=1, val_size=1, test_size=1)  # fmt: skip
    except ValueError:
        assume(False)
    rules = local_rules(spec, length)
    expected = brute_local_rules(task, op, m, near, far, length)
    assert rules.effective.tolist() == [depth for depth, _, _ in expected]
    assert rules.rule.tolist() == [rule for _, rule, _ in expected]
    for support, unique, (_, _, smallest) in zip(
        rules.support.tolist(), rules.unique.tolist(), expected, strict=True
    ):
        assert support == -1 or support >= smallest
        if unique:
            assert support == smallest
    wide = np.array(all_rows(task, op, m, near, far, length))
    for i, coefficients in enumerate(rules.coefficients):
        t = near + far + i
        predicted = sum(a * wide[:, t - d] for d, a in enumerate(coefficients, start=1))
        assert np.array_equal(np.asarray(predicted) % m, wide[:, t])


@pytest.mark.parametrize("m, near, far", [(17, 3, 1), (101, 5, 2), (13, 2, 3), (7, 1, 1)])
def test_cot_with_mod_addition_has_look_back_k_plus_1_from_w_plus_1(m, near, far):
    spec = TaskSpec(task="cot", modulus=m, near=near, far=far, train_length=40, test_length=90,
                    train_size=9, val_size=9, test_size=9)  # fmt: skip
    rules = local_rules(spec, 90)
    assert rules.effective[1:].tolist() == [near + 1] * (90 - near - far - 1)
    assert rules.support[1:].tolist() == [2] * (90 - near - far - 1)  # x_t = 2 x_{t-1} - x_{t-k-1}
    assert rules.shorter(near + far, 90) == 90 - near - far - 1


@pytest.mark.parametrize("m, near, far", [(17, 3, 1), (101, 5, 2), (13, 2, 3)])
def test_recursive_with_mod_addition_has_no_shorter_rule(m, near, far):
    spec = TaskSpec(task="recursive", modulus=m, near=near, far=far, train_length=40)
    assert local_rules(spec, 256).shorter(0, 256) == 0


def test_local_rules_are_not_computed_where_no_exact_method_applies():
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
        import posgen.validate.audits as copies

        saved, copies.EXACT_CONTEXT = copies.EXACT_CONTEXT, 0
        try:
            found = copy_hits(tokens, context, first, boundary, m)
        finally:
            copies.EXACT_CONTEXT = saved
    else:
        found = copy_hits(tokens, context, first, boundary, m)
    assert found == brute_copy(tokens, context, first, boundary)


def test_cot_rows_under_mod_addition_are_copyable_and_the_validator_says_so():
    spec = TaskSpec(task="cot", train_size=200, val_size=50, test_size=200)
    report = validate(to_dataset_dict(spec), spec)
    facts = report.facts["cot"]["test"]
    assert facts["shorter_lookback_id"] == 59
    assert facts["shorter_lookback_ood"] == 192
    assert facts["effective_lookback_max"] == 4
    assert facts["max_lookback"] == 255
    assert facts["linear_rule_share_id"] == pytest.approx(59 / 60)
    assert facts["copy_k_share_ood"] > 0.5  # rows repeat themselves: an induction head copies
    strict = validate(
        to_dataset_dict(spec), spec, thresholds=AuditThresholds(max_shortcut_share=0.5)
    )
    assert "audit" in strict.failed_kinds


def test_recursive_rows_under_mod_addition_have_no_shortcut_the_audit_sees():
    spec = TaskSpec(task="recursive", train_size=200, val_size=50, test_size=200)
    facts = validate(to_dataset_dict(spec), spec).facts["recursive"]["test"]
    assert facts["shorter_lookback_id"] == facts["shorter_lookback_ood"] == 0
    assert facts["copy_k_share_ood"] < 0.01
    assert facts["linear_rule_hits_ood"] == 0


def test_a_non_additive_op_closes_the_linear_shortcut_of_cot():
    spec = TaskSpec(task="cot", op="square_sum", modulus=101, train_size=200, val_size=50,
                    test_size=200)  # fmt: skip
    facts = validate(to_dataset_dict(spec), spec).facts["cot"]["test"]
    assert facts["local_rule_method"].startswith("not computed")
    assert facts["linear_rule_share_ood"] < 0.1  # the additive rule x_t = 2x_{t-1} - x_{t-4} fails


def test_validate_memory_does_not_grow_with_the_window_squared():
    import tracemalloc

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
