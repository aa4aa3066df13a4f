"""The fast kernel: rows grown position-major in cache, transposed by 8x8 byte tiles.

For an additive op, x_{t+1} = x_t + (tokens entering the operand set) - (tokens leaving it)
(mod m), so each position of a whole block of rows costs a few in-place array operations on
one ``rows``-long vector: an add or subtract and a conditional correction ``min(v, v -/+ m)``
on unsigned values (no division, no temporary arrays). Worked example (recursive, m = 17,
k = 3, j = 1): x_5 = 2 x_4 - x_0 = 2 * 6 - 0 = 12 (mod 17).

The position-major block ``(length, rows)`` must become row-major ``(rows, length)`` for
Arrow. numpy's byte transpose moves ~340 M tokens/s, so instead each finished slab of
positions is transposed as 8x8 byte tiles held in uint64 words: three rounds of masked
shift/xor swaps (blocks of 4, 2, 1 bytes) turn 8 words "one position, 8 rows" into 8 words
"one row, 8 positions", and a uint64 copy (8x fewer elements than a byte copy) puts the words
in place. uint16 tokens (m > 256) use 4x4 tiles the same way. The slab is transposed while it
is still in cache, right after its positions were computed.

The other ops share the blocking and the transpose and differ only in their per-position
step: a ``sum`` op moves the unreduced operand sum S like the additive token, then looks
x_t = f(S) up in its table (one ``np.take``, ~1.5 ns a token: about half mod_addition's
speed); ``keyed_hash`` builds each tuple's base-m code by Horner steps and looks the hash up
in a table of all m^w tuples (direct hashing when m^w exceeds 2^22). Figures per op:
``python -m benchmarks.bench --ops``.

No compiled accelerator: with this blocking numpy alone generates 1.0-1.4 G tokens/s on one
core (``python -m benchmarks.bench``, kernel column), 3-4x the plain numpy loop and above the
1 G target, while Parquet encoding (~130-200 M tokens/s per core) bounds every end-to-end path;
a C extension or numba would add an install-time dependency for no end-to-end gain.

The output is identical, bit for bit, to the plain-loop oracle ``tests/oracle.py`` (the
tests check it on many specs). Measured with ``python -m benchmarks.bench``; see BENCHMARKS.md.

>>> import numpy as np
>>> from posgen.spec import TaskSpec
>>> out = np.empty((1, 8), dtype=np.uint8)
>>> grow_into(TaskSpec(task="recursive"), np.array([[0, 1, 2, 3]]), out).tolist()
[[0, 1, 2, 3, 6, 12, 6, 10]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache

import numpy as np

from posgen.ops import (
    far_perm,
    get_op,
    hash_table,
    keyed_hash,
    perm_table,
    select_perm,
    slot_perm,
    sum_table,
)
from posgen.spec import TaskSpec
from posgen.tasks import far_start

SLAB_BYTES = 1 << 20
"""Work bytes per transposed slab of positions: stays in L2 (measured best of 256 KiB-4 MiB)."""

Step = tuple[tuple[int, ...], tuple[int, ...]]


def storage_dtype(modulus: int) -> np.dtype:
    """uint8 when every token fits a byte (m <= 256), else uint16."""
    return np.dtype(np.uint8 if modulus <= 256 else np.uint16)


def work_dtype(modulus: int) -> np.dtype:
    """Smallest unsigned type holding 2m - 1, the largest value before a correction."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if 2 * modulus - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"modulus {modulus} is too large")  # pragma: no cover


@lru_cache(maxsize=64)
def additive_steps(task: str, near: int, far: int, length: int) -> tuple[Step, ...]:
    """``(leaving, entering)`` positions that turn x_t into x_{t+1}, for t = w .. length-2.

    Positions that both enter and leave the operand set cancel.

    >>> additive_steps("recursive", 3, 1, 7)
    (((0,), (4,)), ((1,), (5,)))
    >>> additive_steps("semirecursive", 3, 1, 7)
    (((1,), (4,)), ((2, 0), (5, 1)))
    """
    window = near + far
    if length <= window + 1:
        return ()
    starts = far_start(task, np.arange(window, length), near, far).tolist()
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
    """Transpose every ``tile x tile`` element block held in ``words`` (P, tile, G) into ``out``.

    ``words[p, i, g]`` holds elements ``(i, 0..tile-1)`` of tile ``(p, g)``; afterwards
    ``out[p, b, g]`` holds elements ``(0..tile-1, b)``. ``words`` is left unchanged.
    """
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
    """Grow ``windows`` (``(rows, w)``, values in [0, m)) into ``out`` (``(rows, length)``).

    ``out`` must be C-contiguous of :func:`storage_dtype`; it is returned filled. Every op
    kind has its own per-position step (:data:`_FILLERS`); blocking and the tile transpose
    are shared.
    """
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
    """x_{t+1} = x_t + entering - leaving (mod m): an add or subtract and a conditional
    correction ``min(v, v -/+ m)`` per operand that moves. Yields each position filled."""
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
    """x_t = f(S_t): the unreduced sum S moves like the additive token (entering minus
    leaving tokens, exact in wrapping unsigned arithmetic since S itself fits), then one
    table lookup. Worked example (pow_sin, m = 17, window 0 1 2 3): S_4 = 6,
    x_4 = floor(sin(6)^2 * 17) = 1."""
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


def _fill_tuple(spec: TaskSpec, cols: np.ndarray) -> Iterator[int]:
    """x_t = keyed hash of (far operands, near operands): the tuple's base-m code by Horner
    steps, then one lookup in the op's table (:func:`posgen.ops.hash_table`), or the direct
    hash when m^w is too large to tabulate."""
    m, window, near, far = spec.modulus, spec.window, spec.near, spec.far
    length = cols.shape[0]
    starts = far_start(spec.task, np.arange(window, length), near, far).tolist()
    table = hash_table(m, window, spec.op_key)
    views = list(cols)
    code = np.empty(cols.shape[1], dtype=np.uint32)
    base = np.uint32(m)
    for t, start in enumerate(starts, start=window):
        positions = [*range(start, start + far), *range(t - near, t)]
        if table is None:
            operands = np.stack([views[p] for p in positions])
            views[t][...] = keyed_hash(operands, m, spec.op_key)
        else:
            np.copyto(code, views[positions[0]])
            for position in positions[1:]:
                np.multiply(code, base, out=code)
                np.add(code, views[position], out=code)
            np.take(table, code, out=views[t], mode="clip")
        yield t


def _fill_perm(spec: TaskSpec, cols: np.ndarray) -> Iterator[int]:
    """x_t = pi_F((near sum) mod m): the far tuple's base-m code by Horner steps and the near
    sum, then one lookup in the op's table of permutations (:func:`posgen.ops.perm_table`),
    or the direct definition when the table would be too large."""
    m, window, near, far = spec.modulus, spec.window, spec.near, spec.far
    length = cols.shape[0]
    starts = far_start(spec.task, np.arange(window, length), near, far).tolist()
    table = perm_table(m, far, spec.op_key)
    flat = None if table is None else table.reshape(-1)
    views = list(cols)
    code = np.empty(cols.shape[1], dtype=np.int64)
    total = np.empty(cols.shape[1], dtype=np.int64)
    for t, start in enumerate(starts, start=window):
        far_rows = [views[p] for p in range(start, start + far)]
        near_rows = [views[p] for p in range(t - near, t)]
        if flat is None:
            views[t][...] = far_perm(far_rows, near_rows, m, spec.op_key)
            yield t
            continue
        code[...] = 0
        for row in far_rows:
            np.multiply(code, m, out=code)
            np.add(code, row, out=code)
        total[...] = 0
        for row in near_rows:
            np.add(total, row, out=total)
        np.remainder(total, m, out=total)
        np.multiply(code, m, out=code)
        np.add(code, total, out=code)
        np.take(flat, code, out=views[t], mode="clip")
        yield t


def _fill_slot(spec: TaskSpec, cols: np.ndarray) -> Iterator[int]:
    """x_t = sum_i pi_{f_(i mod j)}(n_i) mod m: per near slot one lookup in the op's m x m
    table of permutations (f * m + n), summed; the direct definition above the table cap."""
    m, window, near, far = spec.modulus, spec.window, spec.near, spec.far
    length = cols.shape[0]
    starts = far_start(spec.task, np.arange(window, length), near, far).tolist()
    table = perm_table(m, 1, spec.op_key)
    views = list(cols)
    zero = np.zeros(cols.shape[1], dtype=cols.dtype)
    if table is None:
        for t, start in enumerate(starts, start=window):
            far_rows = [views[p] for p in range(start, start + far)]
            views[t][...] = slot_perm(
                far_rows, [views[p] for p in range(t - near, t)], m, spec.op_key
            )
            yield t
        return
    flat = table.reshape(-1).astype(np.int64)
    code = np.empty(cols.shape[1], dtype=np.int64)
    total = np.empty(cols.shape[1], dtype=np.int64)
    for t, start in enumerate(starts, start=window):
        total[...] = 0
        for i in range(near):
            f = views[start + i % far] if far else zero
            code[...] = f
            code *= m
            code += views[t - near + i]
            total += flat[code]
        np.remainder(total, m, out=total)
        views[t][...] = total
        yield t


def _fill_select(spec: TaskSpec, cols: np.ndarray) -> Iterator[int]:
    """x_t = pi_{f_c}(near sum mod m), c = x_{t-1} mod j: the plain definition per position
    (:func:`posgen.ops.select_perm`, one table lookup for the whole block)."""
    m, window, near, far = spec.modulus, spec.window, spec.near, spec.far
    length = cols.shape[0]
    starts = far_start(spec.task, np.arange(window, length), near, far).tolist()
    views = list(cols)
    for t, start in enumerate(starts, start=window):
        far_rows = [views[p] for p in range(start, start + far)]
        near_rows = [views[p] for p in range(t - near, t)]
        views[t][...] = select_perm(far_rows, near_rows, m, spec.op_key)
        yield t


_FILLERS: dict[str, Callable[[TaskSpec, np.ndarray], Iterator[int]]] = {
    "additive": _fill_additive,
    "sum": _fill_sum,
    "tuple": _fill_tuple,
    "perm": _fill_perm,
    "slot": _fill_slot,
    "select": _fill_select,
}
