"""Checks 3 and 4: every target recomputed from its window, and the window rule itself.

Targets are recomputed for a whole batch at once from the stored tokens, with the task's
own far-start rule (:func:`posgen.tasks.far_start`) and op (:mod:`posgen.ops`).
Worked example (semirecursive, m = 17, k = 3, j = 1), row ``0 1 2 3 6 11 4``: position 6
reads x_1 (far) and x_3 x_4 x_5 (near), so its target is (1 + 3 + 6 + 11) mod 17 = 4.

>>> import numpy as np
>>> from posgen.spec import TaskSpec
>>> spec = TaskSpec(task="semirecursive")
>>> expected_targets(spec, np.array([[0, 1, 2, 3, 6, 11, 4]], dtype=np.uint8)).tolist()
[[6, 11, 4]]
>>> rule_facts(spec, 256)
(True, '4 dependencies per target, all earlier; largest look-back 130', 4, 130)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from posgen.kernel import work_dtype
from posgen.ops import far_perm, get_op, keyed_hash, select_perm, slot_perm, sum_table
from posgen.spec import TaskSpec
from posgen.tasks import far_start


@dataclass(frozen=True)
class FarSlot:
    """Far operand ``offset`` of every target: position ``starts[t - w] + offset``."""

    starts: np.ndarray
    offset: int


@lru_cache(maxsize=64)
def operand_slots(task: str, length: int, near: int, far: int) -> tuple[object, ...]:
    """Per operand slot (far ones, then near ones): a ``slice`` of columns when the positions
    run consecutively (near operands, recursive's far ones) or stay put (cot: one column,
    broadcast), else a :class:`FarSlot` gathered on use. Memory O(length), not O(length w)."""
    window = near + far
    t = np.arange(window, length, dtype=np.int64)
    count = t.size
    slots: list[object] = []
    if far:
        starts = far_start(task, t, near, far) if count else t
        first = int(starts[0]) if count else 0
        for offset in range(far):
            if count == 0 or np.array_equal(starts, first + np.arange(count)):
                slots.append(slice(first + offset, first + offset + count))
            elif np.all(starts == first):
                slots.append(slice(first + offset, first + offset + 1))  # broadcast (cot)
            else:
                slots.append(FarSlot(starts, offset))
    slots += [slice(window - near + i, window - near + i + count) for i in range(near)]
    return tuple(slots)


def take_slot(tokens: np.ndarray, slot: object) -> np.ndarray:
    if isinstance(slot, slice):
        return tokens[:, slot]
    assert isinstance(slot, FarSlot)
    return np.take(tokens, slot.starts + slot.offset, axis=1)


def expected_targets(spec: TaskSpec, tokens: np.ndarray) -> np.ndarray:
    """Targets of positions ``w .. length-1`` recomputed from ``tokens`` (``(rows, length)``).

    Every op is recomputed from its own definition (:mod:`posgen.ops`); memory stays a few
    ``(rows, positions)`` arrays whatever the window.
    """
    rows, length = tokens.shape
    window = spec.window
    slots = operand_slots(spec.task, length, spec.near, spec.far)
    op = get_op(spec.op)
    in_range = tokens.size == 0 or (tokens.min() >= 0 and int(tokens.max()) < spec.modulus)
    if op.additive and in_range:
        # (sum of operands) mod m, one conditional subtract per operand (see generator.py).
        dtype = work_dtype(spec.modulus)
        work = tokens if tokens.dtype == dtype else tokens.astype(dtype)
        modulus = dtype.type(spec.modulus)
        acc = np.zeros((rows, length - window), dtype=dtype)
        scratch = np.empty_like(acc)
        for slot in slots:
            np.add(acc, take_slot(work, slot), out=acc)
            np.subtract(acc, modulus, out=scratch)
            np.minimum(acc, scratch, out=acc)
        return acc
    # Other ops, or tokens outside Z_m (reported elsewhere; clipped here so every op can
    # read them): per operand slot, one (rows, positions) array at a time, never w of them.
    positions = length - window
    wide = np.clip(tokens, 0, spec.modulus - 1).astype(np.int64)
    columns = [np.broadcast_to(take_slot(wide, s), (rows, positions)) for s in slots]
    if op.kind == "tuple":
        return keyed_hash(columns, spec.modulus, spec.op_key).astype(np.int64)
    if op.kind == "perm":
        far = spec.far
        return far_perm(columns[:far], columns[far:], spec.modulus, spec.op_key)
    if op.kind == "slot":
        far = spec.far
        return slot_perm(columns[:far], columns[far:], spec.modulus, spec.op_key)
    if op.kind == "select":
        far = spec.far
        return select_perm(columns[:far], columns[far:], spec.modulus, spec.op_key)
    total = np.zeros((rows, positions), dtype=np.int64)
    for column in columns:
        total += column
    if op.kind == "additive":
        return total % spec.modulus
    return sum_table(spec.op, spec.modulus, window)[total]


def rule_facts(spec: TaskSpec, length: int) -> tuple[bool, str, int, int]:
    """Check the dependency rule for every ``t < length``: exactly w distinct positions,
    all earlier than t. Returns (ok, message, dependency count, largest look-back).

    The far operands of t are ``s .. s+j-1`` (s the task's far start) and the near ones
    ``t-k .. t-1``, so the checks need only s per position: memory O(length), not O(length w).
    """
    window, near, far = spec.window, spec.near, spec.far
    t = np.arange(window, length, dtype=np.int64)
    problems = []
    starts = far_start(spec.task, t, near, far) if t.size else t
    if starts.shape != t.shape:
        problems.append(f"rule gives {starts.shape} far starts, expected {t.shape}")
    elif t.size and far:
        early = np.flatnonzero((starts + far - 1 >= t) | (starts < 0))
        if early.size:
            problems.append(f"position {window + early[0]} depends on itself, later or negative")
        repeated = np.flatnonzero(starts + far > t - near)
        if repeated.size:
            problems.append(f"position {window + repeated[0]} names a position twice")
    lookback = 0
    if t.size:
        lookback = int(np.maximum(t - starts, near).max()) if far else near
    if problems:
        return False, "; ".join(problems), window, lookback
    message = f"{window} dependencies per target, all earlier; largest look-back {lookback}"
    return True, message, window, lookback
