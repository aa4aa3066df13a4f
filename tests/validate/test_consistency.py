"""The question-consistency audit agrees with a plain loop written from its definition."""

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
from posgen.card.facts import validation_section
from posgen.consistency import (
    AUDIT_OPERANDS,
    AUDIT_TARGETS,
    CHUNK_OPERANDS,
    question_lookbacks,
    refusal,
    sample_rows,
)
from posgen.generator import grow
from posgen.ops import get_op, op_names
from posgen.spec import TaskSpec
from posgen.store.formats import to_dataset_dict
from posgen.tasks import register_task
from posgen.validate import AuditThresholds, QuestionLookbacks, validate
from tests.oracle import far_positions, grow_row, op_value

BRUTE_TASKS = ("cot", "semirecursive", "recursive")


@functools.cache
def h(op: str, operands: tuple[int, ...], m: int, key: int, far: int) -> int:
    return op_value(op, list(operands), m, key, far)


def brute_force(task, row: list[int], m: int, near: int, far: int, op: str, key: int):
    """D*(t) for t = w .. len(row)-1: every look-back D tried, every question q enumerated.

    ``task`` is a task name of the README's table, or a function t -> far start.
    """
    w = near + far
    start_of = task if callable(task) else lambda t: far_positions(task, t, near, far)[0]
    found = []
    for t in range(w, len(row)):
        start = start_of(t)
        lookback = t - start  # the far operands are in sight: known
        for d in range(near, t - start):
            visible = [s for s in range(max(w, t - d + near), t) if start_of(s) == start]
            answers = set()
            for q in itertools.product(range(m), repeat=far):
                if all(h(op, q + tuple(row[s - near : s]), m, key, far) == row[s] for s in visible):
                    answers.add(h(op, q + tuple(row[t - near : t]), m, key, far))
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
    task=st.sampled_from(BRUTE_TASKS),
    op=st.sampled_from(op_names()),
    m=st.sampled_from([2, 3, 4, 5, 7]),
    near=st.integers(1, 3),
    far=st.integers(1, 3),
    extra=st.integers(1, 12),
    key=st.integers(0, 3),
    data=st.data(),
)
def test_lookbacks_equal_brute_force_on_random_specs(task, op, m, near, far, extra, key, data):
    assume(m**far <= 64)
    key = key if get_op(op).keyed else 0
    spec = make_spec(task=task, op=op, modulus=m, near=near, far=far, op_key=key)
    w = near + far
    windows = data.draw(
        st.lists(st.lists(st.integers(0, m - 1), min_size=w, max_size=w), min_size=1, max_size=3)
    )
    rows = [grow_row(task, window, w + extra, m, near, far, op, key) for window in windows]
    fast = question_lookbacks(spec, np.array(rows))
    for row, got in zip(rows, fast.tolist(), strict=True):
        assert got == brute_force(task, row, m, near, far, op, key)


@pytest.fixture
def zigzag(monkeypatch):
    """A registered task whose far start goes back and forth: s = (t - w) mod 3."""
    monkeypatch.setattr(posgen.tasks, "_RULES", dict(posgen.tasks._RULES))
    register_task("zigzag", lambda t, w: (t - w) % 3)
    return "zigzag"


@pytest.mark.parametrize("op", op_names())
def test_lookbacks_of_a_registered_task_equal_brute_force(zigzag, op):
    m, near, far = 3, 2, 2
    spec = make_spec(task=zigzag, op=op, modulus=m, near=near, far=far)
    w = near + far
    rows = []
    for window in np.random.default_rng(4).integers(0, m, (4, w)).tolist():
        row = list(window)
        for t in range(w, 20):
            start = (t - w) % 3
            row.append(h(op, tuple(row[start : start + far] + row[t - near : t]), m, 0, far))
        rows.append(row)
    fast = question_lookbacks(spec, np.array(rows)).tolist()
    start_of = lambda t: (t - w) % 3  # noqa: E731
    assert fast == [brute_force(start_of, row, m, near, far, op, 0) for row in rows]


@pytest.mark.parametrize(("m", "near", "far"), [(17, 3, 1), (16, 2, 1), (5, 4, 2), (3, 1, 3)])
def test_cot_under_mod_addition_needs_k_plus_1_tokens_after_the_first_target(m, near, far):
    spec = make_spec(task="cot", modulus=m, near=near, far=far, test_length=40)
    windows = np.random.default_rng(0).integers(0, m, (20, near + far))
    found = question_lookbacks(spec, grow(spec, windows, 40))
    assert (found[:, 0] == near + far).all()  # t = w: no earlier target, the question is needed
    assert (found[:, 1:] == near + 1).all()


def test_semirecursive_and_recursive_lookbacks_take_their_few_possible_values():
    rng = np.random.default_rng(1)
    for task in ("semirecursive", "recursive"):
        spec = make_spec(task=task, op="square_sum", modulus=101, near=4, far=1, test_length=64)
        found = question_lookbacks(spec, grow(spec, rng.integers(0, 101, (30, 5)), 64))
        t = np.arange(5, 64)
        start = (t - 5) // 2 if task == "semirecursive" else t - 5
        allowed = (found == 4) | (found == 5) | (found == t - start)
        assert allowed.all()


def test_posgen_v2_cot_is_pinned_down_by_a_few_tokens():
    spec = make_spec(task="cot", op="square_sum", modulus=101, near=4, far=1, test_length=128)
    windows = np.random.default_rng(2).integers(0, 101, (40, 5))
    found = question_lookbacks(spec, grow(spec, windows, 128))
    assert refusal(spec, 128) is None
    assert np.mean(found <= 4 + 2) > 0.9


def test_the_audit_refuses_a_question_space_above_its_bound():
    spec = make_spec(task="cot", modulus=101, near=2, far=3)
    assert refusal(spec, 16).startswith("not computed (m^j too large: 101^3 = 1,030,301")
    assert sample_rows(spec, 16) == 0


def test_the_sample_covers_the_documented_targets_within_the_work_bound():
    spec = make_spec(task="cot", modulus=17, near=3, far=1, test_length=256)
    wide = make_spec(task="cot", modulus=101, near=4, far=2, train_length=64, test_length=64)
    assert sample_rows(spec, 256) == -(-AUDIT_TARGETS // 252)
    assert sample_rows(wide, 64) == AUDIT_OPERANDS // (101**2 * 58 * 6)  # 2 rows: the bound


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


def test_validate_reports_the_lookbacks_of_rows_spread_evenly_over_each_split():
    spec = small_v2("cot")
    data = to_dataset_dict(spec)
    facts = validate(data, spec, split="test").facts["cot"]["test"]
    audit = facts["question_lookback"]
    rows = sample_rows(spec, 256)  # 33 of the 100 test rows: rows 0, 3, 6, 9, 12, 15, 18, 21, ...
    picked = np.arange(rows) * 100 // rows
    found = question_lookbacks(spec, np.array(data["test"]["tokens"])[picked])
    expected = np.bincount(found[:, 59:].reshape(-1))
    assert audit["rows"] == rows
    assert audit["ood"]["histogram"] == {str(d): int(n) for d, n in enumerate(expected) if n}
    assert audit["short_by_position"] == (found <= 6).sum(axis=0).tolist()
    assert facts["question_short_share_ood"] == np.mean(found[:, 59:] <= 6)


def test_the_reported_lookbacks_read_back_as_their_typed_model():
    spec = small_v2("semirecursive")
    report = validate(to_dataset_dict(spec), spec, split="test").to_dict()
    stored = json.loads(json.dumps(report))["facts"]["semirecursive"]["test"]["question_lookback"]
    audit = QuestionLookbacks.model_validate(stored)
    assert audit.ood.targets == sum(audit.ood.histogram.values())
    assert len(audit.short_by_position) == 256 - 5


def test_posgen_v2_cot_is_no_longer_not_computed():
    spec = small_v2("cot")
    facts = validate(to_dataset_dict(spec), spec, split="test").facts["cot"]["test"]
    assert facts["question_lookback_method"].startswith("exact")
    assert facts["question_short_share_id"] > 0.9


def test_max_shortcut_share_fails_on_a_question_shortcut_only():
    limits = AuditThresholds(max_shortcut_share=0.5)
    cot, recursive = small_v2("cot"), small_v2("recursive")
    failed = validate(to_dataset_dict(cot), cot, split="test", thresholds=limits)
    passed = validate(to_dataset_dict(recursive), recursive, split="test", thresholds=limits)
    audit = next(check for check in failed.checks if check.check == "audit")
    assert "question-consistency look-back" in audit.message
    assert not audit.ok
    assert passed.ok  # recursive reads w = k + 1 tokens by design: no shortcut


def test_an_unaudited_split_says_why_in_the_report_and_the_card():
    spec = TaskSpec(task="cot", modulus=101, near=2, far=3, train_size=20, val_size=5,
                    test_size=5)  # fmt: skip
    report = validate(to_dataset_dict(spec), spec, split="test")
    facts = report.facts["cot"]["test"]
    assert facts["question_lookback_method"].startswith("not computed (m^j too large")
    assert facts["question_short_share_id"] is None
    assert "| cot | test | n/a |" in validation_section(report)


def test_the_card_shows_the_question_lookbacks():
    spec = small_v2("cot")
    report = validate(to_dataset_dict(spec), spec, split="test")
    audit = report.facts["cot"]["test"]["question_lookback"]
    section = validation_section(report)
    share = f"{audit['ood']['short_share']:.4f} ({audit['ood']['short']:,})"
    assert f"| cot | test | {audit['rows']} | 101 |" in section
    assert share in section
