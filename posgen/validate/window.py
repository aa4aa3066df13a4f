"""Checks 3 and 4: every target recomputed from its window, and the window rule itself.

Targets are recomputed for a whole batch at once from the stored tokens, with the task's
own dependency rule (:func:`posgen.tasks.dependency_matrix`) and op (:mod:`posgen.ops`).
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

from functools import lru_cache

import numpy as np

from posgen.ops import get_op, keyed_hash, sum_table
from posgen.spec import TaskSpec
from posgen.tasks import dependency_matrix


@lru_cache(maxsize=64)
def _operands(task: str, length: int, near: int, far: int) -> tuple[object, ...]:
    """Per operand slot: a ``slice`` of columns when the positions run consecutively
    (near operands, recursive's far ones), else the index array (gathered)."""
    deps = dependency_matrix(task, length, near, far)
    slots: list[object] = []
    for column in deps.T:
        first = int(column[0]) if column.size else 0
        if column.size == 0 or np.array_equal(column, first + np.arange(column.size)):
            slots.append(slice(first, first + column.size))
        elif np.all(column == first):
            slots.append(slice(first, first + 1))  # broadcast one column (cot)
        else:
            slots.append(column)
    return tuple(slots)


def _take(tokens: np.ndarray, slot: object) -> np.ndarray:
    if isinstance(slot, slice):
        return tokens[:, slot]
    return np.take(tokens, slot, axis=1)


def _work_dtype(modulus: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if 2 * modulus - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)  # pragma: no cover - modulus is at most 65536


def expected_targets(spec: TaskSpec, tokens: np.ndarray) -> np.ndarray:
    """Targets of positions ``w .. length-1`` recomputed from ``tokens`` (``(rows, length)``).

    Every op is recomputed from its own definition (:mod:`posgen.ops`); memory stays a few
    ``(rows, positions)`` arrays whatever the window.
    """
    rows, length = tokens.shape
    window = spec.window
    slots = _operands(spec.task, length, spec.near, spec.far)
    op = get_op(spec.op)
    in_range = tokens.size == 0 or (tokens.min() >= 0 and int(tokens.max()) < spec.modulus)
    if op.additive and in_range:
        # (sum of operands) mod m, one conditional subtract per operand (see generator.py).
        dtype = _work_dtype(spec.modulus)
        work = tokens if tokens.dtype == dtype else tokens.astype(dtype)
        modulus = dtype.type(spec.modulus)
        acc = np.zeros((rows, length - window), dtype=dtype)
        scratch = np.empty_like(acc)
        for slot in slots:
            np.add(acc, _take(work, slot), out=acc)
            np.subtract(acc, modulus, out=scratch)
            np.minimum(acc, scratch, out=acc)
        return acc
    # Other ops, or tokens outside Z_m (reported elsewhere; clipped here so every op can
    # read them): per operand slot, one (rows, positions) array at a time, never w of them.
    positions = length - window
    wide = np.clip(tokens, 0, spec.modulus - 1).astype(np.int64)
    columns = [np.broadcast_to(_take(wide, s), (rows, positions)) for s in slots]
    if op.kind == "tuple":
        return keyed_hash(columns, spec.modulus, spec.op_key).astype(np.int64)
    total = np.zeros((rows, positions), dtype=np.int64)
    for column in columns:
        total += column
    if op.kind == "additive":
        return total % spec.modulus
    return sum_table(spec.op, spec.modulus, window)[total]


def rule_facts(spec: TaskSpec, length: int) -> tuple[bool, str, int, int]:
    """Check the dependency rule for every ``t < length``: exactly w distinct positions,
    all earlier than t. Returns (ok, message, dependency count, largest look-back)."""
    window = spec.window
    deps = dependency_matrix(spec.task, length, spec.near, spec.far)
    t = np.arange(window, length, dtype=np.int64)[:, None]
    problems = []
    if deps.shape != (length - window, window):
        problems.append(f"rule gives shape {deps.shape}, expected {(length - window, window)}")
    elif deps.size:
        early = np.flatnonzero(((deps >= t) | (deps < 0)).any(axis=1))
        if early.size:
            problems.append(f"position {window + early[0]} depends on itself, later or negative")
        ordered = np.sort(deps, axis=1)
        repeated = np.flatnonzero((np.diff(ordered, axis=1) == 0).any(axis=1))
        if repeated.size:
            problems.append(f"position {window + repeated[0]} names a position twice")
    count = deps.shape[1] if deps.ndim == 2 else 0
    lookback = int((t - deps).max()) if deps.size else 0
    if problems:
        return False, "; ".join(problems), count, lookback
    message = f"{count} dependencies per target, all earlier; largest look-back {lookback}"
    return True, message, count, lookback
