"""The vectorized POSGEN generator: seed windows in, whole rows out.

Rows are grown position by position, every position computed for a whole block of rows
at once (arrays of shape ``(length, rows)``), then laid out row-major. The task's
dependency rule (:mod:`posgen.tasks`) and the op (:mod:`posgen.ops`) are the only inputs
that differ between tasks.

Worked example (recursive, m = 17, k = 3, j = 1, seed window 0 1 2 3):
x_4 = (0 + 1 + 2 + 3) mod 17 = 6, x_5 = (1 + 2 + 3 + 6) mod 17 = 12.

>>> import numpy as np
>>> from posgen.spec import TaskSpec
>>> grow(TaskSpec(task="recursive"), np.array([[0, 1, 2, 3]]), 8).tolist()
[[0, 1, 2, 3, 6, 12, 6, 10]]
"""

from __future__ import annotations

import numpy as np

from posgen.kernel import grow_into, storage_dtype
from posgen.seeding import seed_windows
from posgen.spec import TaskSpec

DEFAULT_BLOCK_ROWS = 65_536
"""Rows grown together: enough to amortize numpy's per-call cost (~1 us a call). Measured
(kernel, one core, L = 64): 16k rows 1.1-1.2 G tokens/s, 32k 1.4, 64k 1.5; long rows are
capped by :data:`BLOCK_BYTES` instead (16k rows at L = 4096 run at 1.1-1.3 G)."""
BLOCK_BYTES = 64 * 2**20
"""Most token bytes of one block (bounds the kernel's working arrays for any length)."""
WINDOW_BYTES = 64 * 2**20
"""Most bytes of int64 seed windows held at once (bounds memory when w is large)."""


def block_rows_for(
    spec: TaskSpec, length: int, block_rows: int = DEFAULT_BLOCK_ROWS, per_group: int = 1
) -> int:
    """Rows of ``length`` tokens generated at once, the one place this is decided: at most
    ``block_rows`` rows, :data:`BLOCK_BYTES` of tokens and :data:`WINDOW_BYTES` of seed
    windows, rounded down to whole groups of ``per_group`` rows (at least one group; the
    storage formats pass their row group or record batch).

    >>> block_rows_for(TaskSpec(task="cot"), 4096)
    16384
    >>> block_rows_for(TaskSpec(task="cot"), 64, per_group=1000)
    65000
    """
    by_tokens = BLOCK_BYTES // (length * spec.token_bytes)
    by_windows = WINDOW_BYTES // (8 * spec.window)
    want = max(1, min(block_rows, by_tokens, by_windows))
    return max(1, want // per_group) * per_group


def grow(
    spec: TaskSpec, windows: np.ndarray, length: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Rows of ``length`` tokens grown from ``windows`` (``(rows, w)``), row-major.

    Returns an array ``(rows, length)`` of :func:`storage_dtype` (``out`` when given); the
    first ``w`` columns are the windows themselves. Every op runs in the fast kernel
    (:mod:`posgen.kernel`), tested against the plain-loop oracle ``tests/oracle.py``.
    """
    _check_windows(spec, windows, length)
    if out is None:
        out = np.empty((windows.shape[0], length), dtype=storage_dtype(spec.modulus))
    elif out.shape != (windows.shape[0], length) or out.dtype != storage_dtype(spec.modulus):
        raise ValueError(f"out must be {(windows.shape[0], length)} of storage dtype")
    return grow_into(spec, windows, out)


def _check_windows(spec: TaskSpec, windows: np.ndarray, length: int) -> None:
    rows, window = windows.shape
    if window != spec.window:
        raise ValueError(f"windows have {window} columns, the spec's window is {spec.window}")
    if length < window:
        raise ValueError(f"length {length} is shorter than the seed window {window}")
    if rows and (windows.min() < 0 or windows.max() >= spec.modulus):
        raise ValueError(f"seed window values must lie in [0, {spec.modulus})")


def generate_rows(
    spec: TaskSpec, split: str, start: int, stop: int, block_rows: int = DEFAULT_BLOCK_ROWS
) -> np.ndarray:
    """Rows ``[start, stop)`` of ``split`` as ``(stop - start, length)``; blocks change nothing."""
    length = spec.split_length(split)
    out = np.empty((stop - start, length), dtype=storage_dtype(spec.modulus))
    step = block_rows_for(spec, length, block_rows)
    for first in range(start, stop, step):
        last = min(stop, first + step)
        windows = seed_windows(spec, split, first, last)
        grow(spec, windows, length, out=out[first - start : last - start])
    return out


def generate_split(spec: TaskSpec, split: str, block_rows: int = DEFAULT_BLOCK_ROWS) -> np.ndarray:
    """Every row of ``split``: ``(split_size, split_length)``.

    >>> from posgen.spec import TaskSpec
    >>> spec = TaskSpec(task="semirecursive", seeding="paper", train_size=3, train_length=8)
    >>> generate_split(spec, "train").tolist()[0]
    [0, 1, 2, 3, 6, 11, 4, 5]
    """
    return generate_rows(spec, split, 0, spec.split_size(split), block_rows)
