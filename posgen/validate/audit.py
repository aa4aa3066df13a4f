"""Check 6, audit: facts about the targets, reported (pass/fail only under thresholds).

* **Target balance**: per position t >= w, the total-variation distance between the
  observed target values and uniform over Z_m; the largest over positions is reported,
  with the distance a uniform sample of the same size would show by chance.
* **Periodic shortcut**: the share of OOD targets (positions [L, L')) that "copy the
  period" predicts, for rows whose in-distribution prefix already ends in a repeat: the
  last ``max(p, w)`` tokens before L equal the ``max(p, w)`` tokens p earlier. For
  recursive data that repeat of w tokens proves the row periodic from then on. Example
  (p = 2, w = 2): prefix ``.. 5 9 5 9`` with L = 8 predicts ``5 9 5 9 ..`` for t >= 8.
* **Operand sensitivity**: the share of (target, operand, other value) triples where
  changing that one operand changes h's output; 1.0 for modular addition.

>>> import numpy as np
>>> shortcut_hits(np.array([[1, 2, 5, 9, 5, 9, 5, 9, 5, 9, 0]]), train_length=8, window=2)
(2, 1)
"""

from __future__ import annotations

import math

import numpy as np

from posgen.ops import get_op
from posgen.spec import TaskSpec
from posgen.validate.window import _operands, _take

MAX_BALANCE_CELLS = 1 << 22
"""Positions x m counters kept for the balance (positions are thinned beyond this)."""
MAX_PERIOD = 512
"""Longest period the shortcut looks for."""
SENSITIVITY_SAMPLES = 4096
"""Targets probed for operand sensitivity (the first ones of the split)."""
SENSITIVITY_SHIFTS = 16
"""Other values tried per operand (all of them when m - 1 is smaller)."""
SENSITIVITY_SLOTS = 16
"""Operand slots probed (evenly spaced over the window; all of them when w is smaller)."""
SENSITIVITY_CELLS = 1 << 16
"""Most operands (targets x w) sampled: the probe's cost does not grow with w^2."""


class BalanceTally:
    """Counts of target values per position, streamed."""

    def __init__(self, spec: TaskSpec, length: int) -> None:
        self.modulus = spec.modulus
        positions = np.arange(spec.window, length)
        cap = max(1, MAX_BALANCE_CELLS // spec.modulus)
        if positions.size > cap:
            positions = positions[np.linspace(0, positions.size - 1, cap).astype(np.int64)]
        self.positions = positions
        self.counts = np.zeros(positions.size * spec.modulus, dtype=np.int64)
        self.rows = 0

    def add(self, tokens: np.ndarray) -> None:
        """Count a batch's targets per position (cells as narrow ints: ~7x faster)."""
        if tokens.shape[0] == 0 or self.positions.size == 0:
            return
        dtype = np.uint16 if self.counts.size <= 1 << 16 else np.uint32
        if self.positions.size == tokens.shape[1] - self.positions[0]:
            cells = tokens[:, self.positions[0] :].astype(dtype)
        else:
            cells = tokens[:, self.positions].astype(dtype)
        cells += (np.arange(self.positions.size) * self.modulus).astype(dtype)[None, :]
        self.counts += np.bincount(cells.reshape(-1), minlength=self.counts.size)
        self.rows += tokens.shape[0]

    def max_tv(self) -> float:
        """Largest total-variation distance from uniform over the positions."""
        if self.rows == 0 or self.positions.size == 0:
            return 0.0
        share = self.counts.reshape(-1, self.modulus) / self.rows
        return float((0.5 * np.abs(share - 1 / self.modulus).sum(axis=1)).max())

    def noise_tv(self) -> float:
        """About what TV a uniform sample of this many rows shows at one position."""
        if self.rows == 0:
            return 0.0
        p = 1 / self.modulus
        return 0.5 * self.modulus * math.sqrt(2 * p * (1 - p) / (math.pi * self.rows))


def shortcut_hits(tokens: np.ndarray, train_length: int, window: int) -> tuple[int, int]:
    """(OOD targets the copy-the-period shortcut gets right, rows found periodic)."""
    rows, length = tokens.shape
    big = train_length
    if length <= big or rows == 0:
        return 0, 0
    period = np.zeros(rows, dtype=np.int64)
    for p in range(1, min(MAX_PERIOD, big // 2) + 1):
        span = max(p, window)
        if span + p > big:
            break
        open_rows = np.flatnonzero(period == 0)
        if open_rows.size == 0:
            break
        tail = tokens[open_rows, big - window : big]
        back = tokens[open_rows, big - window - p : big - p]
        found = open_rows[(tail == back).all(axis=1)]
        if found.size and span > window:
            same = tokens[found, big - span : big] == tokens[found, big - span - p : big - p]
            found = found[same.all(axis=1)]
        period[found] = p
    hits = 0
    ood = np.arange(big, length)
    for p in np.unique(period[period > 0]).tolist():
        members = np.flatnonzero(period == p)
        source = big - p + (ood - big) % p
        hits += int((tokens[np.ix_(members, source)] == tokens[np.ix_(members, ood)]).sum())
    return hits, int(np.count_nonzero(period))


def operand_sensitivity(spec: TaskSpec, tokens: np.ndarray) -> tuple[float, int]:
    """(share of single-operand changes that change h's output, changes tried).

    Bounded whatever the window: at most :data:`SENSITIVITY_CELLS` operands are sampled
    (the first targets of the split), at most :data:`SENSITIVITY_SLOTS` operand slots
    (evenly spaced) are probed, each changed in place and restored.
    """
    rows, length = tokens.shape
    if rows == 0 or length <= spec.window or tokens.max() >= spec.modulus:
        return 1.0, 0
    m, window = spec.modulus, spec.window
    per_row = length - window
    samples = max(1, min(SENSITIVITY_SAMPLES, SENSITIVITY_CELLS // window))
    take = max(1, min(rows, -(-samples // per_row)))
    sample = tokens[:take]
    slots = _operands(spec.task, length, spec.near, spec.far)
    operands = np.empty((window, min(samples, take * per_row)), dtype=np.int64)
    for i, slot in enumerate(slots):
        column = np.broadcast_to(_take(sample, slot), (take, per_row)).reshape(-1)
        operands[i] = column[: operands.shape[1]]
    op = get_op(spec.op)
    base = op.apply(operands, m, spec.op_key, far=spec.far)
    shifts = np.unique(np.linspace(1, m - 1, min(m - 1, SENSITIVITY_SHIFTS)).astype(np.int64))
    probed = np.unique(np.linspace(0, window - 1, min(window, SENSITIVITY_SLOTS)).astype(np.int64))
    changed = tried = 0
    for slot in probed.tolist():
        original = operands[slot].copy()
        for shift in shifts.tolist():
            operands[slot] = (original + shift) % m
            out = op.apply(operands, m, spec.op_key, far=spec.far)
            changed += int(np.count_nonzero(out != base))
            tried += out.size
        operands[slot] = original
    return (changed / tried if tried else 1.0), tried
