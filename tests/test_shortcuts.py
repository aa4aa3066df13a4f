"""The near-determined positions audit agrees with brute force over every seed window."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from posgen.shortcuts import near_determined_counts, near_determined_positions
from posgen.spec import TaskSpec
from posgen.tasks import TASKS
from tests.oracle import grow_row


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
    assert positions[:4] == [6, 7, 22, 23] and len(positions) == 28
    assert near_determined_positions(TaskSpec(task="recursive"), 256) == []
    assert near_determined_positions(TaskSpec(task="cot"), 256) == []
    assert near_determined_counts(spec, 64) == {"near_determined_id": 12, "near_determined_ood": 0}


def test_the_audit_declines_composite_moduli_and_other_ops():
    assert near_determined_positions(TaskSpec(task="cot", modulus=16), 64) is None
