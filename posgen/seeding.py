"""Seed windows: the first w = j + k tokens of every row, pure functions of (spec, split, row).

``paper`` reproduces the authors' code: row r starts with the r-th (cycled) window of
``itertools.combinations(range(m), w)``; train and validation take rows from 0, test from
``val_size`` on (so every validation row starts like a train row).

>>> from posgen.spec import TaskSpec
>>> paper_windows(TaskSpec(task="cot", seeding="paper"), "test", 0, 2).tolist()
[[1, 11, 13, 15], [1, 11, 13, 16]]

``disjoint`` decodes index i of a keyed permutation of ``[0, m^w)`` (Feistel with cycle
walking) into w base-m digits. Each split owns a contiguous range of indices (test,
validation, the extra tests, train last): no window repeats within or across splits, and
test does not move when train_size changes.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache

import numpy as np

from posgen.ops import mix64
from posgen.spec import TaskSpec

FEISTEL_ROUNDS = 8
MAX_PERMUTED = 2**63
PAPER_TABLE_MAX = 1 << 16  # paper spaces up to this size are unranked once and indexed


def seed_windows(spec: TaskSpec, split: str, start: int, stop: int) -> np.ndarray:
    """Seed windows of rows ``[start, stop)`` of ``split``: int64 ``(stop - start, w)``."""
    size = spec.split_size(split)
    if not 0 <= start <= stop <= size:
        raise ValueError(f"rows [{start}, {stop}) out of range for {split} ({size} rows)")
    if spec.seeding == "paper":
        return paper_windows(spec, split, start, stop)
    return disjoint_windows(spec, split, start, stop)


def paper_row_offset(spec: TaskSpec, split: str) -> int:
    """Index in the authors' complete list of row 0 of ``split``."""
    if split in ("train", "validation"):
        return 0
    extra = spec.split_names.index(split) - spec.split_names.index("test")
    return spec.val_size + extra * spec.test_size


def paper_windows(spec: TaskSpec, split: str, start: int, stop: int) -> np.ndarray:
    offset = paper_row_offset(spec, split)
    if spec.seed_space <= PAPER_TABLE_MAX:
        table = _paper_table(spec.modulus, spec.window)
        return table[np.arange(offset + start, offset + stop, dtype=np.int64) % len(table)]
    exact = offset + stop < 2**62 and spec.seed_space < 2**62
    ranks = np.arange(offset + start, offset + stop, dtype=np.int64 if exact else object)
    ranks %= spec.seed_space
    return unrank_combinations(ranks, spec.modulus, spec.window)


@lru_cache(maxsize=8)
def _paper_table(m: int, w: int) -> np.ndarray:
    table = unrank_combinations(np.arange(math.comb(m, w), dtype=np.int64), m, w)
    table.flags.writeable = False
    return table


def unrank_combinations(ranks: np.ndarray, m: int, w: int) -> np.ndarray:
    """The ``ranks``-th w-subsets of range(m) in itertools order (exact for any size).

    >>> unrank_combinations(np.array([0, 1, 2379]), 17, 4).tolist()
    [[0, 1, 2, 3], [0, 1, 2, 4], [13, 14, 15, 16]]
    """
    total = math.comb(m, w)
    exact = total < 2**62
    dtype = np.int64 if exact else object
    q = np.asarray(ranks).astype(dtype)
    out = np.empty((q.shape[0], w), dtype=np.int64)
    prev = np.full(q.shape[0], -1, dtype=np.int64)
    for slot in range(w):
        rest = w - slot  # comb(u, rest): windows whose remaining values lie in u candidates
        table = np.array([math.comb(u, rest) for u in range(m + 1)], dtype=dtype)
        target = table[m - 1 - prev] - q
        u = np.searchsorted(table, target, side="left")
        value = m - u
        q = q - (table[m - 1 - prev] - table[u])
        out[:, slot] = value
        prev = value.astype(np.int64)
    return out


def disjoint_offset(spec: TaskSpec, split: str) -> int:
    """First permutation index of ``split``: test, validation, extra tests, then train."""
    order = ["test", "validation", *spec.split_names[3:], "train"]
    return sum(spec.split_size(s) for s in order[: order.index(split)])


def task_key(spec: TaskSpec) -> list[int]:
    """SeedSequence key material of the task: a stable code of its name."""
    return [int.from_bytes(hashlib.sha256(spec.task.encode()).digest()[:4], "little")]


def disjoint_windows(spec: TaskSpec, split: str, start: int, stop: int) -> np.ndarray:
    """Distinct windows of Z_m^w; past m^w = 2^63 only the last d digits (m^d <= 2^63) are
    permuted, and the first ones hashed from (key, index)."""
    m, w = spec.modulus, spec.window
    digits = w
    while m**digits > MAX_PERMUTED:
        digits -= 1
    domain = m**digits
    keys = np.random.SeedSequence(spec.seed, spawn_key=task_key(spec)).generate_state(
        FEISTEL_ROUNDS + 1, dtype=np.uint64
    )
    first = disjoint_offset(spec, split) + start
    index = np.arange(first, first + (stop - start), dtype=np.uint64)
    permuted = feistel_permute(index, domain, keys[:FEISTEL_ROUNDS])
    if digits == w:
        return decode_digits(permuted, m, digits)
    out = np.empty((w, index.shape[0]), dtype=np.int64).T  # digit-major, like decode_digits
    out[:, w - digits :] = decode_digits(permuted, m, digits)
    counters = index[:, None] * np.uint64(w) + np.arange(w - digits, dtype=np.uint64)
    out[:, : w - digits] = (mix64(mix64(counters) ^ keys[-1]) % np.uint64(m)).astype(np.int64)
    return out


def feistel_permute(index: np.ndarray, domain: int, keys: np.ndarray) -> np.ndarray:
    """A keyed bijection of ``[0, domain)``: a Feistel network with cycle walking."""
    bits = max(2, (domain - 1).bit_length())
    bits += bits % 2
    half = np.uint64(bits // 2)
    mask = np.uint64((1 << (bits // 2)) - 1)

    def encrypt(x: np.ndarray) -> np.ndarray:
        left, right = x >> half, x & mask
        for key in keys:
            left, right = right, left ^ (mix64(right ^ key) & mask)
        return (left << half) | right

    out = encrypt(np.asarray(index, dtype=np.uint64))
    outside = np.flatnonzero(out >= np.uint64(domain))
    while outside.size:
        out[outside] = encrypt(out[outside])
        outside = outside[out[outside] >= np.uint64(domain)]
    return out


def decode_digits(values: np.ndarray, m: int, digits: int) -> np.ndarray:
    """Base-m digits ``(n, digits)`` of ``values``, most significant first (uint32 division
    of two halves where they fit).

    >>> decode_digits(np.array([0, 17**4 - 1, 5 * 17**3 + 2], dtype=np.uint64), 17, 4).tolist()
    [[0, 0, 0, 0], [16, 16, 16, 16], [5, 0, 0, 2]]
    """
    out = np.empty((digits, values.shape[0]), dtype=np.int64).T  # digit-major: fast writes
    values = np.asarray(values, dtype=np.uint64)
    if m**digits <= 2**32:
        _decode_into(values.astype(np.uint32), m, out)
        return out
    low = digits // 2
    while low < digits and m**low < 2**32 and m ** (digits - low) > 2**32:
        low += 1
    while low > 0 and m**low > 2**32:
        low -= 1
    if low == 0 or m ** (digits - low) > 2**32:  # halves too wide: plain uint64 division
        _decode_into(values, m, out)
        return out
    high, rest = np.divmod(values, np.uint64(m**low))
    _decode_into(high.astype(np.uint32), m, out[:, : digits - low])
    _decode_into(rest.astype(np.uint32), m, out[:, digits - low :])
    return out


def _decode_into(values: np.ndarray, m: int, out: np.ndarray) -> None:
    rest = values.copy()
    base = rest.dtype.type(m)
    for position in range(out.shape[1] - 1, -1, -1):
        out[:, position] = rest % base
        rest //= base
