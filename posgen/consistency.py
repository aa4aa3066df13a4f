"""Question consistency: how far back a rule must look to pin a target's far operands down.

D*(t), the question-consistency look-back of target x_t (far operands at p .. p+j-1), is the
smallest look-back D at which every candidate v in Z_m^j with h(v, near_s) = x_s for the
visible targets s sharing t's far start gives the same h(v, near_t); t - p when none does.
Computed exactly for any op: a candidate that gets x_t wrong drops out once the window reaches
its last earlier violation s (D = t + k - s), so D*(t) is a running maximum per candidate.

Worked example (cot, mod_addition, m = 17, k = 3, j = 1, row 0 1 2 3 6 11 3): at t = 6
only q = 0 fits targets 4 and 5, and target 5 is visible from D = 4, so D*(6) = 4.

>>> import numpy as np
>>> from posgen.spec import TaskSpec
>>> question_lookbacks(TaskSpec(task="cot"), np.array([[0, 1, 2, 3, 6, 11, 3]])).tolist()
[[4, 4, 4]]
"""

from __future__ import annotations

import numpy as np

from posgen.spec import TaskSpec
from posgen.tasks import far_start, get_op

MAX_CANDIDATES = 1 << 16  # most far-operand candidates m^j the audit enumerates
AUDIT_TARGETS = 1 << 13  # targets audited per split (rows spread evenly over it)
AUDIT_OPERANDS = 1 << 23  # most operand reads (rows x m^j x targets x w) per split
CHUNK_OPERANDS = 1 << 19  # operands handed to the op at once (int64: 4 MiB)


def candidate_count(spec: TaskSpec) -> int:
    return spec.modulus**spec.far


def candidates(modulus: int, far: int) -> np.ndarray:
    """Every v in Z_m^j as a ``(j, m^j)`` array (first operand most significant).

    >>> candidates(3, 2).tolist()
    [[0, 0, 0, 1, 1, 1, 2, 2, 2], [0, 1, 2, 0, 1, 2, 0, 1, 2]]
    """
    if far == 0:
        return np.zeros((0, 1), dtype=np.int64)
    return np.indices((modulus,) * far, dtype=np.int64).reshape(far, -1)


def row_cost(spec: TaskSpec, length: int) -> int:
    """Operand reads the audit spends on one row: m^j x targets x w."""
    return candidate_count(spec) * max(0, length - spec.window) * max(spec.window, 1)


def refusal(spec: TaskSpec, length: int) -> str | None:
    """Why the audit is not computed for rows of ``length`` tokens, or None.

    >>> refusal(TaskSpec(task="cot", modulus=17, near=3, far=8), 256)
    'not computed (m^j too large: 17^8 = 6,975,757,441 candidates > 65,536)'
    """
    m, j = spec.modulus, spec.far
    count = candidate_count(spec)
    if count > MAX_CANDIDATES:
        value = f" = {count:,}" if count < 10**15 else ""
        return f"not computed (m^j too large: {m}^{j}{value} candidates > {MAX_CANDIDATES:,})"
    cost = row_cost(spec, length)
    if cost > AUDIT_OPERANDS:
        return (
            f"not computed (m^j too large for this row: {count:,} candidates x "
            f"{length - spec.window:,} targets x {spec.window:,} operands = {cost:,} "
            f"operand reads > {AUDIT_OPERANDS:,})"
        )
    return None


def sample_rows(spec: TaskSpec, length: int) -> int:
    """Rows of a split the audit reads: :data:`AUDIT_TARGETS` targets' worth, within bounds.

    >>> sample_rows(TaskSpec(task="cot"), 256)  # 8,192 targets / 252 a row, rounded up
    33
    """
    if refusal(spec, length) is not None or length <= spec.window:
        return 0
    wanted = -(-AUDIT_TARGETS // (length - spec.window))
    return max(1, min(wanted, AUDIT_OPERANDS // row_cost(spec, length)))


def question_lookbacks(spec: TaskSpec, tokens: np.ndarray) -> np.ndarray:
    """D*(t) of every row and target of ``tokens``: ``(rows, length - w)``, column i for
    t = w + i."""
    tokens = np.asarray(tokens, dtype=np.int64)
    rows, length = tokens.shape
    m, k, j, w = spec.modulus, spec.near, spec.far, spec.window
    targets = np.arange(w, length, dtype=np.int64)
    out = np.full((rows, targets.size), k, dtype=np.int64)
    if rows == 0 or targets.size == 0:
        return out
    starts = far_start(spec.task, targets, k, j)
    order = np.lexsort((targets, starts))  # same far start together, in position order
    every = candidates(m, j)
    per_cell = max(w, 1)
    cand_step = min(every.shape[1], max(1, CHUNK_OPERANDS // per_cell))
    row_step = min(rows, max(1, CHUNK_OPERANDS // (per_cell * cand_step)))
    for lo in range(0, rows, row_step):
        block = tokens[lo : lo + row_step]
        need = np.full((block.shape[0], targets.size), k, dtype=np.int64)
        for first in range(0, every.shape[1], cand_step):
            _violations(spec, block, every[:, first : first + cand_step], order, need)
        out[lo : lo + row_step] = need
    return out


def _violations(
    spec: TaskSpec, block: np.ndarray, chosen: np.ndarray, order: np.ndarray, need: np.ndarray
) -> None:
    """Raise ``need`` to the look-back at which every candidate of ``chosen`` that gets a
    target wrong is ruled out (t - p where one never is), in far-start order."""
    op = get_op(spec.op)
    m, k, j, w = spec.modulus, spec.near, spec.far, spec.window
    rows, length = block.shape
    count = chosen.shape[1]
    base = length + 1  # encodes (far start p, position s) as p * base + s, ordered
    kind = np.int32 if base * base < 2**31 else np.int64  # narrow codes: half the traffic
    none = np.iinfo(kind).max
    carry = np.full((1, rows, count), -1, dtype=kind)  # running max of the codes so far
    step = max(1, CHUNK_OPERANDS // (max(w, 1) * rows * count))
    offsets = np.arange(-k, 0, dtype=np.int64)
    for lo in range(0, order.size, step):  # arrays are (targets, rows, candidates)
        t = order[lo : lo + step] + w
        p = far_start(spec.task, t, k, j)
        operands = np.empty((w, t.size, rows, count), dtype=np.int64)
        operands[:j] = chosen[:, None, None, :]
        near = block[:, t[None, :] + offsets[:, None]]  # (rows, k, targets)
        operands[j:] = near.transpose(1, 2, 0)[:, :, :, None]
        made = op.apply(operands.reshape(w, -1), m, spec.op_key, far=j)
        made = made.reshape(t.size, rows, count)
        right = made == block[:, t].T[:, :, None]
        group = (p * base).astype(kind)[:, None, None]
        code = np.where(right, group - 1, group + t.astype(kind)[:, None, None])
        np.maximum.accumulate(code, axis=0, out=code)  # a violation's code: its position
        np.maximum(code, carry, out=code)  # running max, this chunk included
        before = np.empty_like(code)  # the running max before each target
        before[:1] = carry
        before[1:] = code[:-1]
        carry = code[-1:].copy()
        before -= group  # the last earlier violation with the same far start (< 0: none)
        before[right] = none  # only the candidates that get x_t wrong must be ruled out
        last = before.min(axis=2).T.astype(np.int64)  # < 0: one of them never was wrong before
        reach = np.where(last == none, k, np.maximum(t + k - last, k))
        found = np.where(last < 0, t - p, reach)
        columns = t - w
        need[:, columns] = np.maximum(need[:, columns], found)
