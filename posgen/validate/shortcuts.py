"""Positions whose target the near tokens alone determine, and the shortest local rules.

For an additive op at prime m every token is a linear form c_t . s of the seed window s, and
x_t is a fixed function of its k near tokens exactly when c_t lies in the span of
c_{t-k} .. c_{t-1} over GF(m): there the far operands carry nothing the near ones lack.

>>> from posgen.spec import TaskSpec
>>> near_determined_positions(TaskSpec(task="semirecursive"), 24)
[6, 7, 22, 23]
>>> near_determined_positions(TaskSpec(task="recursive"), 256)
[]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from posgen.generator import grow
from posgen.spec import TaskSpec
from posgen.tasks import far_start, get_op


def near_determined_positions(spec: TaskSpec, length: int) -> list[int] | None:
    """Positions t in [w, length) whose effective look-back is at most k (None: not computed)."""
    if not get_op(spec.op).additive or not is_prime(spec.modulus):
        return None
    if length <= spec.window or spec.far == 0:  # j = 0: nothing but near operands
        return list(range(spec.window, length))
    rules = local_rules(spec, length)
    if rules is None:
        return None
    return (np.flatnonzero(rules.effective <= spec.near) + spec.window).tolist()


def is_prime(n: int) -> bool:
    """Trial division (n <= 65536 here).

    >>> [p for p in range(20) if is_prime(p)]
    [2, 3, 5, 7, 11, 13, 17, 19]
    """
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def near_determined_counts(spec: TaskSpec, length: int) -> dict[str, int | None]:
    """How many near-determined positions fall in [w, L) (ID) and [L, length) (OOD).

    >>> near_determined_counts(TaskSpec(task="semirecursive"), 256)
    {'near_determined_id': 12, 'near_determined_ood': 16}
    """
    positions = near_determined_positions(spec, length)
    if positions is None:
        return {"near_determined_id": None, "near_determined_ood": None}
    boundary = spec.train_length
    return {
        "near_determined_id": sum(t < boundary for t in positions),
        "near_determined_ood": sum(t >= boundary for t in positions),
    }


MAX_RULE_WORK = 1 << 24  # largest length x w^2 for the GF(m) local-rule audit
MAX_ENUMERATED = 1 << 22  # largest m^w x length for growing every seed window (any op)


@dataclass(frozen=True)
class LocalRules:
    """Per x_t (t = first ..): ``effective``, the smallest D with x_t a function of x_{t-D} ..
    x_{t-1} for every seed window; ``rule``, the task's look-back; linear method only,
    ``coefficients``: x_t = sum_d a_d x_{t-d} (mod m), a_1 first."""

    method: str
    first: int
    effective: np.ndarray
    rule: np.ndarray
    coefficients: tuple[tuple[int, ...], ...] = ()

    def shorter(self, start: int, stop: int) -> int:
        """How many positions t in [start, stop) have an effective look-back below the rule's."""
        lo, hi = max(start - self.first, 0), max(stop - self.first, 0)
        return int(np.count_nonzero(self.effective[lo:hi] < self.rule[lo:hi]))

    def largest(self, start: int, stop: int) -> int:
        """The largest effective look-back over positions [start, stop) (0 when none)."""
        lo, hi = max(start - self.first, 0), max(stop - self.first, 0)
        return int(self.effective[lo:hi].max()) if hi > lo else 0


def rule_lookbacks(spec: TaskSpec, length: int) -> np.ndarray:
    """The task's own look-back t - (earliest operand) for t = w .. length-1.

    >>> rule_lookbacks(TaskSpec(task="cot"), 8).tolist()
    [4, 5, 6, 7]
    """
    t = np.arange(spec.window, length, dtype=np.int64)
    if spec.far == 0:
        return np.full(t.size, spec.near, dtype=np.int64)
    return t - far_start(spec.task, t, spec.near, spec.far)


def local_rules(spec: TaskSpec, length: int) -> LocalRules | None:
    """Shortest local rules of every position below ``length``: GF(m) linear algebra (additive
    op, prime m), else every seed window grown (when few enough), else None.

    Worked example (cot, m = 17, k = 3, j = 1): x_t - x_{t-1} = x_{t-1} - x_{t-4} for
    t >= 5 (x_0 cancels), so D = k + 1 = 4 where the rule says t.

    >>> rules = local_rules(TaskSpec(task="cot"), 10)
    >>> rules.effective.tolist(), rules.rule.tolist()
    ([4, 4, 4, 4, 4, 4], [4, 5, 6, 7, 8, 9])
    >>> rules.coefficients[1]  # x_5 = 2 x_4 - x_1
    (2, 0, 0, 16)
    """
    longest = max(length, spec.train_length, *spec.test_lengths)
    method = _method(spec, longest)  # the one the spec's longest split allows, at every length
    # computed up to ``length`` only: lengths a manifest claims cost nothing until read
    return None if method is None else _local_rules(spec, max(length, spec.window), method)


def _method(spec: TaskSpec, length: int) -> str | None:
    window, m = spec.window, spec.modulus
    if get_op(spec.op).additive and is_prime(m) and length * window * window <= MAX_RULE_WORK:
        return "linear"
    return "enumerated" if m**window * length <= MAX_ENUMERATED else None


@functools.lru_cache(maxsize=32)
def _local_rules(spec: TaskSpec, length: int, method: str) -> LocalRules:
    rule = rule_lookbacks(spec, length)
    return (_linear_rules if method == "linear" else _enumerated_rules)(spec, length, rule)


def _linear_rules(spec: TaskSpec, length: int, rule: np.ndarray) -> LocalRules:
    p, window = spec.modulus, spec.window
    vectors = grow(spec, np.eye(window, dtype=np.int64), length).astype(np.int64).T % p
    effective, coefficients = [], []
    for t in range(window, length):
        reach = int(rule[t - window])
        track = min(reach, 2 * window + 2)  # rules are usually this short: one pass
        depth, a = _span_search(vectors, t, reach, p, track)
        if depth > track:
            depth, a = _span_search(vectors, t, depth, p, depth)
        effective.append(depth)
        coefficients.append(tuple(int(v) for v in a[:depth]))
    method = f"exact: linear algebra over GF({p}) on the seed-window coefficients"
    return LocalRules(
        method, window, np.array(effective, dtype=np.int64), rule, tuple(coefficients)
    )


def _span_search(
    vectors: np.ndarray, t: int, reach: int, p: int, track: int
) -> tuple[int, np.ndarray]:
    """Smallest D <= reach with c_t in span(c_{t-1} .. c_{t-D}) over GF(p), and a rule's
    coefficients a_1 .. a_track (valid when D <= track), by reduced echelon form."""
    width = vectors.shape[1]
    basis = np.zeros((width, width + track), dtype=np.int64)
    pivots: list[int] = []
    residual = np.zeros(width + track, dtype=np.int64)
    residual[:width] = vectors[t]
    for d in range(1, reach + 1):
        row = np.zeros(width + track, dtype=np.int64)
        row[:width] = vectors[t - d]
        if d <= track:
            row[width + d - 1] = 1
        rank = len(pivots)
        if rank:
            row = (row - row[pivots] @ basis[:rank]) % p
        nonzero = np.flatnonzero(row[:width])
        if nonzero.size == 0:
            continue
        q = int(nonzero[0])
        row = row * pow(int(row[q]), -1, p) % p
        if rank:
            basis[:rank] = (basis[:rank] - np.outer(basis[:rank, q], row)) % p
        basis[rank] = row
        pivots.append(q)
        residual = (residual - residual[q] * row) % p
        if not residual[:width].any():
            return d, (-residual[width:]) % p
    return reach, np.zeros(track, dtype=np.int64)  # pragma: no cover


def _enumerated_rules(spec: TaskSpec, length: int, rule: np.ndarray) -> LocalRules:
    m, window = spec.modulus, spec.window
    windows = np.indices((m,) * window).reshape(window, -1).T
    rows = grow(spec, windows, length).astype(np.int64)
    effective = []
    for t in range(window, length):
        reach = int(rule[t - window])
        groups = np.zeros(rows.shape[0], dtype=np.int64)
        depth = reach
        for d in range(1, reach):
            _, groups = np.unique(groups * m + rows[:, t - d], return_inverse=True)
            count = int(groups.max()) + 1
            _, with_target = np.unique(groups * m + rows[:, t], return_inverse=True)
            if int(with_target.max()) + 1 == count:
                depth = d
                break
        effective.append(depth)
    method = f"exact: every function of earlier tokens, over all {m**window:,} seed windows"
    return LocalRules(method, window, np.array(effective, dtype=np.int64), rule)
