"""Positions whose target the near tokens alone determine: a shortcut audit of a spec.

For an additive op every token is a linear form of the seed window s over Z_m,
x_t = c_t . s, and the coefficient vectors c_t come from growing the w unit windows. When m
is prime, x_t is the same fixed linear combination of its k near tokens for every seed
window exactly when c_t lies in the span of c_{t-k} .. c_{t-1} over GF(m). At such a
position the far operands carry no information the near ones lack: a model can learn a
position-specific rule that never looks far back, so the position does not test long-range
dependency even though the rule names j far operands.

Worked example (semirecursive, m = 17, k = 3, j = 1): x_4 = x_0 + x_1 + x_2 + x_3 and
x_5 = x_0 + x_2 + x_3 + x_4 give x_1 = 2 x_4 - x_5, so
x_6 = x_1 + x_3 + x_4 + x_5 = x_3 + 3 x_4 (mod 17): the far operand x_1 is redundant.

>>> from posgen.spec import TaskSpec
>>> near_determined_positions(TaskSpec(task="semirecursive"), 24)
[6, 7, 22, 23]
>>> near_determined_positions(TaskSpec(task="recursive"), 256)
[]
"""

from __future__ import annotations

import functools

import numpy as np

from posgen.generator import grow
from posgen.ops import get_op
from posgen.spec import TaskSpec

MAX_WORK = 1 << 14
"""Largest length x w audited (an elimination per position: about 0.2 s at w = 4, L' = 4096)."""


def is_prime(n: int) -> bool:
    """Trial division (n <= 65536 here).

    >>> [p for p in range(20) if is_prime(p)]
    [2, 3, 5, 7, 11, 13, 17, 19]
    """
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def rank_mod_p(matrix: np.ndarray, p: int) -> int:
    """Rank of an integer matrix over GF(p), by Gaussian elimination.

    >>> rank_mod_p(np.array([[1, 2], [2, 4]]), 17), rank_mod_p(np.array([[1, 2], [2, 5]]), 17)
    (1, 2)
    """
    rows = np.asarray(matrix, dtype=np.int64) % p
    rank = 0
    for column in range(rows.shape[1]):
        pivots = np.flatnonzero(rows[rank:, column]) + rank
        if pivots.size == 0:
            continue
        pivot = int(pivots[0])
        rows[[rank, pivot]] = rows[[pivot, rank]]
        rows[rank] = rows[rank] * pow(int(rows[rank, column]), -1, p) % p
        others = np.flatnonzero(rows[:, column])
        others = others[others != rank]
        rows[others] = (rows[others] - np.outer(rows[others, column], rows[rank])) % p
        rank += 1
        if rank == rows.shape[0]:
            break
    return rank


def near_determined_positions(spec: TaskSpec, length: int) -> list[int] | None:
    """Positions t in [w, length) whose target is a function of x_{t-k} .. x_{t-1} alone.

    ``None`` when the audit does not apply: a non-additive op, a composite modulus (module
    spans over Z_m are not computed), or length x w above :data:`MAX_WORK`.
    """
    found = _near_determined(spec, length)
    return None if found is None else list(found)


@functools.lru_cache(maxsize=64)
def _near_determined(spec: TaskSpec, length: int) -> tuple[int, ...] | None:
    window, near, m = spec.window, spec.near, spec.modulus
    if not get_op(spec.op).additive or not is_prime(m):
        return None
    if length * window > MAX_WORK:
        return None
    if length <= window:
        return ()
    if spec.far == 0:
        return tuple(range(window, length))  # nothing but near operands
    coefficients = grow(spec, np.eye(window, dtype=np.int64), length).astype(np.int64)
    found = []
    for t in range(window, length):
        near_vectors = coefficients[:, t - near : t].T
        with_target = np.vstack([near_vectors, coefficients[:, t]])
        if rank_mod_p(with_target, m) == rank_mod_p(near_vectors, m):
            found.append(t)
    return tuple(found)


def near_determined_counts(spec: TaskSpec, length: int) -> dict[str, int | None]:
    """How many near-determined positions fall in [w, L) (ID) and [L, length) (OOD).

    >>> from posgen.spec import TaskSpec
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
