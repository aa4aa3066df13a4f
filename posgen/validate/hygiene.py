"""Check 5, split hygiene: repeated rows inside a split, seed windows shared between splits.

Rows are reduced to 64-bit keys (a keyed hash of their bytes) and seed windows to exact
base-m integers (a hash when m^w exceeds 2^64), so the tally holds 16 bytes per row,
never the rows themselves.

>>> import numpy as np
>>> rows = np.array([[0, 1, 2, 3, 6], [0, 1, 2, 3, 6], [0, 1, 2, 4, 7]], dtype=np.uint8)
>>> tally = HygieneTally(modulus=17, window=4)
>>> tally.add(rows)
>>> tally.repeated_rows(), tally.repeated_windows()
(1, 1)
"""

from __future__ import annotations

import numpy as np

from posgen.ops import mix64

_SALT = np.random.SeedSequence(0x9E3779B97F4A7C15).generate_state(2, dtype=np.uint64)


def row_keys(tokens: np.ndarray) -> np.ndarray:
    """One uint64 key per row, from its bytes (position-dependent mixing)."""
    rows = tokens.shape[0]
    raw = np.ascontiguousarray(tokens).view(np.uint8).reshape(rows, -1)
    pad = (-raw.shape[1]) % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((rows, pad), dtype=np.uint8)], axis=1)
    words = raw.view(np.uint64)
    positions = np.arange(words.shape[1], dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        mixed = mix64(words ^ mix64(positions + _SALT[0]))
        return mix64(np.add.reduce(mixed, axis=1, dtype=np.uint64) ^ _SALT[1])


def window_keys(windows: np.ndarray, modulus: int) -> np.ndarray:
    """One uint64 per seed window: exact base-m digits when m^w < 2^64, else a hash."""
    width = windows.shape[1]
    if modulus**width < 2**64:
        key = np.zeros(windows.shape[0], dtype=np.uint64)
        with np.errstate(over="ignore"):
            for column in windows.T:
                key = key * np.uint64(modulus) + column.astype(np.uint64)
        return key
    return row_keys(windows.astype(np.uint32))


def _distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a uint64 array (a sort: faster than hashing here)."""
    ordered = np.sort(keys)
    if ordered.size == 0:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


class HygieneTally:
    """Streams row and window keys of one split (16 bytes per row)."""

    def __init__(self, modulus: int, window: int) -> None:
        self.modulus, self.window = modulus, window
        self._rows: list[np.ndarray] = []
        self._windows: list[np.ndarray] = []
        self._distinct: np.ndarray | None = None
        self._sorted: np.ndarray | None = None

    def add(self, tokens: np.ndarray) -> None:
        """Tally a batch of rows (``(rows, length)``)."""
        if tokens.shape[0] == 0:
            return
        self._rows.append(row_keys(tokens))
        self._windows.append(window_keys(tokens[:, : self.window], self.modulus))
        self._distinct = self._sorted = None

    def rows(self) -> int:
        return sum(len(k) for k in self._rows)

    def repeated_rows(self) -> int:
        """Rows equal to an earlier row of the split (64-bit keys: for n rows a false
        repeat has probability about n^2 / 2^65, 3e-6 at ten million rows)."""
        keys = np.concatenate(self._rows) if self._rows else np.empty(0, np.uint64)
        return len(keys) - len(_distinct(keys))

    def distinct_windows(self) -> np.ndarray:
        """Sorted distinct seed-window keys."""
        if self._distinct is None:
            ordered = self._sorted_windows()
            keep = np.concatenate(([True], ordered[1:] != ordered[:-1])) if ordered.size else []
            self._distinct = ordered[keep]
        return self._distinct

    def _sorted_windows(self) -> np.ndarray:
        """All window keys, sorted (sorted probes make the searches cache-friendly)."""
        if self._sorted is None:
            keys = np.concatenate(self._windows) if self._windows else np.empty(0, np.uint64)
            self._sorted = np.sort(keys)
        return self._sorted

    def repeated_windows(self) -> int:
        """Rows whose seed window starts an earlier row of the split."""
        return self.rows() - len(self.distinct_windows())

    def shared_with(self, other: HygieneTally) -> int:
        """Rows of this split whose seed window also starts a row of ``other``."""
        keys = self._sorted_windows()
        theirs = other.distinct_windows()
        if theirs.size == 0 or keys.size == 0:
            return 0
        where = np.minimum(np.searchsorted(theirs, keys), theirs.size - 1)
        return int(np.count_nonzero(theirs[where] == keys))
