"""The POSGEN generator: seed windows in, whole rows out, and targets recomputed from rows.

Seed windows, the first w = j + k tokens of a row, are pure functions of (spec, split, row).
``paper`` reproduces the authors' code: row r starts with the r-th (cycled) window of
``itertools.combinations(range(m), w)``; train and validation take rows from 0, test from
``val_size`` on. ``disjoint`` decodes index i of a keyed permutation of ``[0, m^w)`` (Feistel
with cycle walking) into w base-m digits; each split owns a contiguous range of indices (test,
validation, the extra tests, train last), so no window repeats within or across splits.

Rows grow position-major, one position for a whole block of rows at once; an additive op
moves x_t to x_{t+1} by adding the entering and subtracting the leaving operands (mod m).
Each slab of positions is turned row-major in cache as 8x8 byte tiles in uint64 words.
Recursive, m = 17, k = 3, j = 1: x_4 = 0 + 1 + 2 + 3 = 6, x_5 = 2 x_4 - x_0 = 12.

>>> from posgen.spec import TaskSpec
>>> paper_windows(TaskSpec(task="cot", seeding="paper"), "test", 0, 2).tolist()
[[1, 11, 13, 15], [1, 11, 13, 16]]
>>> grow(TaskSpec(task="recursive"), np.array([[0, 1, 2, 3]]), 8).tolist()
[[0, 1, 2, 3, 6, 12, 6, 10]]

## Probe rows

Counterfactual probe rows: a test row with far operands replaced, nothing recomputed.

Probe row i of ``probe`` (``probe_<L'>``) is row i of ``test`` (``test_<L'>``) with some
positions replaced. A target is *probed* when a far position of it is replaced and no near
one nor itself: there the *far-rule answer* h(stored operands) and the *local answer* (the
unaltered stored token) differ. ``cot`` replaces the question x_0 .. x_{j-1}. Other tasks take
targets from ``w + o`` on (``o = i mod (L' - w)``), then downwards from ``w + o - 1``, accepting
a target when nothing replaced touches its near operands or itself and its first far position
is no near operand of an accepted target; that far position is replaced. Recursive, m = 17,
k = 3, j = 1, length 12, o = 0:

>>> from posgen.spec import TaskSpec
>>> plan = probe_plan(TaskSpec(task="recursive"), length=12, offset=0)
>>> plan.replaced.tolist(), plan.probed.tolist()
([0, 5], [4, 9])

Replacement tokens are uniform over the m - 1 other values, keyed by (seed, task, split,
row, position).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from posgen.spec import TaskSpec, is_probe_split, probe_source
from posgen.tasks import (
    far_start,
    get_op,
    hash_table,
    mix64,
    perm_table,
    sum_table,
)

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
    digits = min(w, MAX_PERMUTED.bit_length())  # m >= 2: m^64 > 2^63, no huge powers tried
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


DEFAULT_BLOCK_ROWS = 65_536  # rows grown together: amortizes numpy's ~1 us per call
BLOCK_BYTES = 64 * 2**20  # most token bytes of one block, whatever the length
WINDOW_BYTES = 64 * 2**20  # most bytes of int64 seed windows held at once


def block_rows_for(
    spec: TaskSpec, length: int, block_rows: int = DEFAULT_BLOCK_ROWS, per_group: int = 1
) -> int:
    """Rows of ``length`` tokens generated at once, in whole groups of ``per_group`` rows.

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
    """Rows ``(rows, length)`` (into ``out`` when given) grown from ``windows`` ``(rows, w)``."""
    windows = np.asarray(windows)
    if windows.dtype.kind not in "iu" or windows.ndim != 2:  # a float is never cut to a token
        raise ValueError(
            f"windows must be (rows, w) integer tokens, got dtype {windows.dtype} of shape "
            f"{windows.shape}"
        )
    rows, window = windows.shape
    if window != spec.window:
        raise ValueError(f"windows have {window} columns, the spec's window is {spec.window}")
    if length < window:
        raise ValueError(f"length {length} is shorter than the seed window {window}")
    if rows and (windows.min() < 0 or windows.max() >= spec.modulus):
        raise ValueError(f"seed window values must lie in [0, {spec.modulus})")
    dtype = storage_dtype(spec.modulus)
    if out is None:
        out = np.empty((rows, length), dtype=dtype)
    elif out.shape != (rows, length) or out.dtype != dtype:
        raise ValueError(f"out must be {(rows, length)} of storage dtype")
    return grow_into(spec, windows, out)


def generate_rows(
    spec: TaskSpec, split: str, start: int, stop: int, block_rows: int = DEFAULT_BLOCK_ROWS
) -> np.ndarray:
    """Rows ``[start, stop)`` of ``split``; ``block_rows`` changes no token."""
    length = spec.split_length(split)
    if is_probe_split(split):  # the probe rows' tokens, as the probe split stores them
        return probe_rows(spec, split, start, stop, block_rows).tokens
    out = np.empty((stop - start, length), dtype=storage_dtype(spec.modulus))
    step = block_rows_for(spec, length, block_rows)
    for first in range(start, stop, step):
        last = min(stop, first + step)
        grow_into(spec, seed_windows(spec, split, first, last), out[first - start : last - start])
    return out


def generate_split(spec: TaskSpec, split: str, block_rows: int = DEFAULT_BLOCK_ROWS) -> np.ndarray:
    """Every row of ``split``: ``(split_size, split_length)`` (of a probe split: its tokens).

    >>> spec = TaskSpec(task="semirecursive", seeding="paper", train_size=3, train_length=8)
    >>> generate_split(spec, "train").tolist()[0]
    [0, 1, 2, 3, 6, 11, 4, 5]
    """
    return generate_rows(spec, split, 0, spec.split_size(split), block_rows)


SLAB_BYTES = 1 << 20  # work bytes per transposed slab of positions: stays in L2

Step = tuple[tuple[int, ...], tuple[int, ...]]


def storage_dtype(modulus: int) -> np.dtype:
    """uint8 when every token fits a byte (m <= 256), else uint16."""
    return np.dtype(np.uint8 if modulus <= 256 else np.uint16)


def work_dtype(modulus: int) -> np.dtype:
    """Smallest unsigned type holding 2m - 1."""
    return np.dtype(np.uint8 if modulus <= 128 else np.uint16 if modulus <= 32768 else np.uint32)


@lru_cache(maxsize=64)
def far_starts(task: str, near: int, far: int, length: int) -> tuple[int, ...]:
    """The far start of every position w .. length-1."""
    return tuple(far_start(task, np.arange(near + far, length), near, far).tolist())


@lru_cache(maxsize=64)
def additive_steps(task: str, near: int, far: int, length: int) -> tuple[Step, ...]:
    """``(leaving, entering)`` positions that turn x_t into x_{t+1}, for t = w .. length-2.

    >>> additive_steps("recursive", 3, 1, 7)
    (((0,), (4,)), ((1,), (5,)))
    >>> additive_steps("semirecursive", 3, 1, 7)
    (((1,), (4,)), ((2, 0), (5, 1)))
    """
    window = near + far
    if length <= window + 1:
        return ()
    starts = far_starts(task, near, far, length)
    steps = []
    for t in range(window, length - 1):
        old, new = starts[t - window], starts[t - window + 1]
        # the far range moves from [old, old + far) to [new, new + far): O(moved) per t
        far_in = set(range(new, new + far)).difference(range(old, old + far)) if new < old else ()
        entering = [t, *(far_in or range(max(old + far, new), new + far))]
        far_out = set(range(old, old + far)).difference(range(new, new + far)) if new < old else ()
        leaving = [t - near, *(far_out or range(old, min(new, old + far)))]
        if t - near in entering[1:]:  # leaves the near window, enters the far one
            entering.remove(t - near)
            leaving.remove(t - near)
        steps.append((tuple(leaving), tuple(entering)))
    return tuple(steps)


def _tile_masks(tile: int, itemsize: int) -> list[tuple[int, np.uint64, np.uint64]]:
    """``(half, shift, mask)`` per swap round: blocks of tile/2, ..., 1 elements."""
    rounds = []
    half = tile // 2
    bits = 8 * itemsize
    while half >= 1:
        mask = sum(((1 << bits) - 1) << (bits * e) for e in range(tile) if (e // half) % 2 == 0)
        rounds.append((half, np.uint64(half * bits), np.uint64(mask)))
        half //= 2
    return rounds


def transpose_tiles(words: np.ndarray, tile: int, itemsize: int, out: np.ndarray) -> None:
    """Transpose every ``tile x tile`` element block of ``words`` (P, tile, G) into ``out``."""
    scratch = np.empty(words.size // 2, dtype=np.uint64)
    source = words
    for half, shift, mask in _tile_masks(tile, itemsize):
        shape = (words.shape[0], tile // (2 * half), 2, half, words.shape[2])
        src = source.reshape(shape)
        dst = out.reshape(shape)
        a, b = src[:, :, 0], src[:, :, 1]
        t = scratch.reshape(a.shape)
        np.right_shift(a, shift, out=t)
        np.bitwise_xor(t, b, out=t)
        np.bitwise_and(t, mask, out=t)
        np.bitwise_xor(b, t, out=dst[:, :, 1])
        np.left_shift(t, shift, out=t)
        np.bitwise_xor(a, t, out=dst[:, :, 0])
        source = out


def grow_into(spec: TaskSpec, windows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Grow ``windows`` into ``out`` (returned) with the op kind's filler (:data:`_FILLERS`)."""
    m, window = spec.modulus, spec.window
    op = get_op(spec.op)
    rows, length = out.shape
    store = storage_dtype(m)
    work = work_dtype(m) if op.additive else store
    tile = 8 // store.itemsize
    rows_pad, len_pad = -(-rows // tile) * tile, -(-length // tile) * tile
    cols = np.zeros((len_pad, rows_pad), dtype=work)
    cols[:window, :rows] = windows.T
    direct = (rows_pad, len_pad) == (rows, length) and out.flags.c_contiguous
    target = out if direct else np.empty((rows_pad, len_pad), dtype=store)
    placed = target.view(np.uint64).reshape(rows_pad // tile, tile, len_pad // tile)

    slab = max(tile, SLAB_BYTES // (rows_pad * work.itemsize) // tile * tile)
    slab_words = np.empty((slab // tile, tile, rows_pad // tile), dtype=np.uint64)
    narrow = None if work == store else np.empty((slab, rows_pad), dtype=store)

    def flush(first: int, stop: int) -> None:
        block = cols[first:stop]
        if narrow is not None:
            block = narrow[: stop - first]
            np.copyto(block, cols[first:stop], casting="unsafe")
        words = block.view(np.uint64).reshape((stop - first) // tile, tile, rows_pad // tile)
        moved = slab_words[: (stop - first) // tile]
        transpose_tiles(words, tile, store.itemsize, moved)
        np.copyto(placed[:, :, first // tile : stop // tile], moved.transpose(2, 1, 0))

    flushed = 0
    if len_pad > window:
        for t in _FILLERS[op.kind](spec, cols):
            if t + 1 - flushed >= slab:
                flush(flushed, flushed + slab)
                flushed += slab
    while flushed < len_pad:
        stop = min(len_pad, flushed + slab)
        flush(flushed, stop)
        flushed = stop
    if not direct:
        out[...] = target[:rows, :length]
    return out


def _fill_additive(spec: TaskSpec, cols: np.ndarray) -> Iterator[int]:
    """x_{t+1} = x_t + entering - leaving (mod m); yields each position filled (so do all)."""
    m, window = spec.modulus, spec.window
    cols[window] = cols[:window].sum(axis=0, dtype=np.int64) % m
    yield window
    modulus = cols.dtype.type(m)
    scratch = np.empty(cols.shape[1], dtype=cols.dtype)
    add, sub, low = np.add, np.subtract, np.minimum
    views = list(cols)
    steps = additive_steps(spec.task, spec.near, spec.far, cols.shape[0])
    for t, (leaving, entering) in enumerate(steps, start=window):
        value, nxt = views[t], views[t + 1]
        for position in leaving:
            sub(value, views[position], out=nxt)
            add(nxt, modulus, out=scratch)
            low(nxt, scratch, out=nxt)
            value = nxt
        for position in entering:
            add(value, views[position], out=nxt)
            sub(nxt, modulus, out=scratch)
            low(nxt, scratch, out=nxt)
            value = nxt
        yield t + 1


@lru_cache(maxsize=16)
def _stored_sum_table(name: str, modulus: int, window: int) -> np.ndarray:
    return sum_table(name, modulus, window).astype(storage_dtype(modulus))


def _fill_sum(spec: TaskSpec, cols: np.ndarray) -> Iterator[int]:
    """x_t = f(S_t): the unreduced sum S moves like the additive token, then one lookup."""
    m, window = spec.modulus, spec.window
    table = _stored_sum_table(spec.op, m, window)
    dtype = np.uint8 if table.size <= 1 << 8 else np.uint16 if table.size <= 1 << 16 else np.uint32
    total = cols[:window].sum(axis=0, dtype=np.int64).astype(dtype)
    views = list(cols)
    np.take(table, total, out=views[window], mode="clip")
    yield window
    steps = additive_steps(spec.task, spec.near, spec.far, cols.shape[0])
    for t, (leaving, entering) in enumerate(steps, start=window):
        for position in entering:
            np.add(total, views[position], out=total)
        for position in leaving:
            np.subtract(total, views[position], out=total)
        np.take(table, total, out=views[t + 1], mode="clip")
        yield t + 1


def _fill_direct(spec: TaskSpec, cols: np.ndarray) -> Iterator[int]:
    """x_t = :meth:`posgen.tasks.Op.apply` per position (``select``, and tables too large)."""
    op, near, far = get_op(spec.op), spec.near, spec.far
    views = list(cols)
    for t, start in enumerate(far_starts(spec.task, near, far, len(cols)), start=spec.window):
        if op.kind == "tuple":  # one (w, rows) array: the keyed hash packs its words at once
            operands: np.ndarray | list[np.ndarray] = np.concatenate(
                (cols[start : start + far], cols[t - near : t])
            )
        else:
            operands = [views[p] for p in (*range(start, start + far), *range(t - near, t))]
        views[t][...] = op.apply(operands, spec.modulus, spec.op_key, far=far)
        yield t


def _fill_tuple(spec: TaskSpec, cols: np.ndarray) -> Iterator[int]:
    """x_t = the keyed hash, the tuple's base-m code looked up in its table."""
    table = hash_table(spec.modulus, spec.window, spec.op_key)
    if table is None:
        yield from _fill_direct(spec, cols)
        return
    near, far = spec.near, spec.far
    views = list(cols)
    code = np.empty(cols.shape[1], dtype=np.uint32)
    base = np.uint32(spec.modulus)
    for t, start in enumerate(far_starts(spec.task, near, far, len(cols)), start=spec.window):
        positions = [*range(start, start + far), *range(t - near, t)]
        np.copyto(code, views[positions[0]])
        for position in positions[1:]:
            np.multiply(code, base, out=code)
            np.add(code, views[position], out=code)
        np.take(table, code, out=views[t], mode="clip")
        yield t


def _fill_perm(spec: TaskSpec, cols: np.ndarray) -> Iterator[int]:
    """x_t = pi_F((near sum) mod m), looked up in :func:`~posgen.tasks.perm_table`."""
    m, near, far = spec.modulus, spec.near, spec.far
    table = perm_table(m, far, spec.op_key)
    if table is None:
        yield from _fill_direct(spec, cols)
        return
    flat = table.reshape(-1)
    views = list(cols)
    code = np.empty(cols.shape[1], dtype=np.int64)
    total = np.empty(cols.shape[1], dtype=np.int64)
    for t, start in enumerate(far_starts(spec.task, near, far, len(cols)), start=spec.window):
        code[...] = 0
        for row in views[start : start + far]:
            np.multiply(code, m, out=code)
            np.add(code, row, out=code)
        total[...] = 0
        for row in views[t - near : t]:
            np.add(total, row, out=total)
        np.remainder(total, m, out=total)
        np.multiply(code, m, out=code)
        np.add(code, total, out=code)
        np.take(flat, code, out=views[t], mode="clip")
        yield t


def _fill_slot(spec: TaskSpec, cols: np.ndarray) -> Iterator[int]:
    """x_t = sum_i pi_{f_(i mod j)}(n_i) mod m, one m x m table lookup per near slot."""
    m, near, far = spec.modulus, spec.near, spec.far
    table = perm_table(m, 1, spec.op_key)  # never None: Op.problem caps m * m
    views = list(cols)
    zero = np.zeros(cols.shape[1], dtype=cols.dtype)
    flat = table.reshape(-1).astype(np.int64)
    code = np.empty(cols.shape[1], dtype=np.int64)
    total = np.empty(cols.shape[1], dtype=np.int64)
    for t, start in enumerate(far_starts(spec.task, near, far, len(cols)), start=spec.window):
        total[...] = 0
        for i in range(near):
            code[...] = views[start + i % far] if far else zero
            code *= m
            code += views[t - near + i]
            total += flat[code]
        np.remainder(total, m, out=total)
        views[t][...] = total
        yield t


_FILLERS: dict[str, Callable[[TaskSpec, np.ndarray], Iterator[int]]] = {
    "additive": _fill_additive,
    "sum": _fill_sum,
    "tuple": _fill_tuple,
    "perm": _fill_perm,
    "slot": _fill_slot,
    "select": _fill_direct,
}


@dataclass(frozen=True)
class FarSlot:
    """Far operand ``offset`` of every target: position ``starts[t - w] + offset``."""

    starts: np.ndarray
    offset: int


@lru_cache(maxsize=64)
def operand_slots(task: str, length: int, near: int, far: int) -> tuple[object, ...]:
    """Per operand slot (far, then near): a ``slice`` of columns when the positions run
    consecutively or stay put (cot: broadcast), else a :class:`FarSlot` gathered on use."""
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
    """h at positions ``w .. length-1`` of ``tokens`` ``(rows, length)`` from the operands as
    stored. Semirecursive: position 6 reads x_1 and x_3 x_4 x_5, (1 + 3 + 6 + 11) mod 17 = 4.

    >>> spec = TaskSpec(task="semirecursive")
    >>> expected_targets(spec, np.array([[0, 1, 2, 3, 6, 11, 4]], dtype=np.uint8)).tolist()
    [[6, 11, 4]]
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
    wide = np.clip(tokens, 0, spec.modulus - 1).astype(np.int64)
    columns = [np.broadcast_to(take_slot(wide, s), (rows, length - window)) for s in slots]
    return op.apply(columns, spec.modulus, spec.op_key, far=spec.far)


PROBE_STREAM = 0x70726F6265  # spawn-key word of the probe stream ("probe")


@dataclass(frozen=True)
class ProbePlan:
    """Replaced and probed positions of one row (int64, ascending)."""

    replaced: np.ndarray
    probed: np.ndarray


def probe_plan(spec: TaskSpec, length: int, offset: int) -> ProbePlan:
    offset = 0 if spec.task == "cot" or not spec.far else int(offset)  # one plan for all rows
    return _plan(spec.task, spec.near, spec.far, length, offset)


@lru_cache(maxsize=4096)
def _plan(task: str, near: int, far: int, length: int, offset: int) -> ProbePlan:
    window = near + far
    replaced = bytearray(length)
    if far and length > window:
        if task == "cot":
            replaced[:far] = b"\x01" * far
        else:  # the greedy rule of the module docstring
            starts = far_starts(task, near, far, length)
            guarded = bytearray(length)  # near operands and position of accepted targets
            order = [*range(window + offset, length), *range(window + offset - 1, window - 1, -1)]
            for t in order:
                first = starts[t - window]
                if guarded[first] or replaced.find(1, t - near, t + 1) >= 0:
                    continue
                replaced[first] = 1
                guarded[t - near : t + 1] = b"\x01" * (near + 1)
    mask = np.frombuffer(bytes(replaced), dtype=np.uint8).astype(bool)
    plan = ProbePlan(np.flatnonzero(mask), probed_positions(task, near, far, mask))
    plan.replaced.flags.writeable = False
    plan.probed.flags.writeable = False
    return plan


def probed_positions(task: str, near: int, far: int, replaced: np.ndarray) -> np.ndarray:
    """Targets with a replaced far position, and no replaced near one nor themselves.

    >>> mask = np.zeros(10, dtype=bool); mask[0] = True
    >>> probed_positions("cot", 3, 1, mask).tolist()
    [4, 5, 6, 7, 8, 9]
    """
    length, window = replaced.shape[0], near + far
    if length <= window or not far:
        return np.empty(0, dtype=np.int64)
    # before[i]: replaced positions below i, so each test is two lookups whatever w
    before = np.zeros(length + 1, dtype=np.int64)
    np.cumsum(replaced, out=before[1:])
    t = np.arange(window, length, dtype=np.int64)
    starts = np.asarray(far_start(task, t, near, far), dtype=np.int64)
    far_hit = before[starts + far] > before[starts]
    near_hit = before[t] > before[t - near]
    return t[far_hit & ~near_hit & ~np.asarray(replaced[window:], dtype=bool)]


def stream_key(spec: TaskSpec, split: str) -> np.uint64:
    """Key of the replacement stream of (seed, task, split)."""
    code = int.from_bytes(hashlib.sha256(split.encode()).digest()[:4], "little")
    state = np.random.SeedSequence(
        spec.seed, spawn_key=(*task_key(spec), code, PROBE_STREAM)
    ).generate_state(1, dtype=np.uint64)
    return state[0]


def replacements(
    spec: TaskSpec, split: str, rows: np.ndarray, positions: np.ndarray, original: np.ndarray
) -> np.ndarray:
    """New tokens for (row, position) pairs, uniform over the m - 1 values but ``original``."""
    length = spec.split_length(split)
    counter = rows.astype(np.uint64) * np.uint64(length) + positions.astype(np.uint64)
    draw = mix64(mix64(counter) ^ stream_key(spec, split)) % np.uint64(spec.modulus - 1)
    return (original.astype(np.int64) + 1 + draw.astype(np.int64)) % spec.modulus


FAR_RULE_PAIRS = 1 << 20  # targets recomputed at once: bounds memory


def far_rule_answers(
    spec: TaskSpec, tokens: np.ndarray, rows: np.ndarray, positions: np.ndarray
) -> np.ndarray:
    """h of the operands stored in ``tokens`` for each target ``(rows[i], positions[i])``.

    >>> spec = TaskSpec(task="cot", train_length=8, test_length=8)
    >>> row = np.array([[5, 1, 2, 3, 11, 0, 0, 0]])
    >>> far_rule_answers(spec, row, np.array([0, 0]), np.array([4, 5])).tolist()
    [11, 4]
    """
    out = np.empty(positions.size, dtype=np.int64)
    step = max(1, FAR_RULE_PAIRS // max(1, tokens.shape[1] - spec.window))
    for first in range(0, tokens.shape[0] if positions.size else 0, step):
        lo, hi = np.searchsorted(rows, [first, first + step])
        every = expected_targets(spec, tokens[first : first + step])
        out[lo:hi] = every[rows[lo:hi] - first, positions[lo:hi] - spec.window]
    return out


@dataclass(frozen=True)
class ProbeBlock:
    """Probe rows ``[start, start + n)``; ``*_offsets`` (n + 1) delimit row i's values."""

    start: int
    tokens: np.ndarray
    replaced: np.ndarray
    replaced_offsets: np.ndarray
    probed: np.ndarray
    far_rule: np.ndarray
    probed_offsets: np.ndarray

    @property
    def rows(self) -> int:
        return self.tokens.shape[0]


def probe_rows(
    spec: TaskSpec, split: str, start: int, stop: int, block_rows: int = DEFAULT_BLOCK_ROWS
) -> ProbeBlock:
    """Probe rows ``[start, stop)`` of ``split``: the source rows, altered.

    >>> sizes = {"train_size": 4, "val_size": 2, "test_size": 3}
    >>> spec = TaskSpec(task="cot", train_length=8, test_length=16, **sizes)
    >>> block = probe_rows(spec, "probe", 0, 3)
    >>> source = generate_rows(spec, "test", 0, 3)
    >>> same_after = bool((block.tokens[:, 1:] == source[:, 1:]).all())
    >>> same_after, bool((block.tokens[:, 0] != source[:, 0]).all()), block.probed[:3].tolist()
    (True, True, [4, 5, 6])
    """
    tokens = generate_rows(spec, probe_source(split), start, stop, block_rows)
    return alter_rows(spec, split, start, tokens)


def alter_rows(spec: TaskSpec, split: str, start: int, tokens: np.ndarray) -> ProbeBlock:
    """Probe rows from source rows ``tokens`` (rows ``start ..``), altered in place."""
    rows, length = tokens.shape
    index = np.arange(start, start + rows, dtype=np.int64)
    offsets = index % max(1, length - spec.window)  # across rows every target leads once
    plans = [probe_plan(spec, length, o) for o in offsets.tolist()]
    replaced, replaced_offsets, replaced_rows = _flatten([p.replaced for p in plans])
    cells = (replaced_rows, replaced)
    tokens[cells] = replacements(spec, split, index[replaced_rows], replaced, tokens[cells])
    probed, probed_offsets, probed_rows = _flatten([p.probed for p in plans])
    far_rule = far_rule_answers(spec, tokens, probed_rows, probed)
    return ProbeBlock(
        start=start,
        tokens=tokens,
        replaced=replaced,
        replaced_offsets=replaced_offsets,
        probed=probed,
        far_rule=far_rule.astype(storage_dtype(spec.modulus)),
        probed_offsets=probed_offsets,
    )


def _flatten(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenated values, row offsets (n + 1) and the row of each value."""
    counts = np.array([p.size for p in parts], dtype=np.int64)
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    values = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    return values.astype(np.int64, copy=False), offsets, np.repeat(np.arange(len(parts)), counts)
