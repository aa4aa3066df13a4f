"""Counterfactual probe rows: a test row with far operands replaced, nothing recomputed.

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
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from posgen.generator import (
    DEFAULT_BLOCK_ROWS,
    expected_targets,
    far_starts,
    generate_rows,
    storage_dtype,
    task_key,
)
from posgen.ops import mix64
from posgen.spec import TaskSpec, probe_source
from posgen.tasks import dependency_matrix

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
                if guarded[first] or any(replaced[t - near : t + 1]):
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
    deps = dependency_matrix(task, length, near, far)
    hit = replaced[deps]
    targets = np.arange(window, length)
    keep = hit[:, :far].any(axis=1) & ~hit[:, far:].any(axis=1) & ~replaced[window:]
    return targets[keep]


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
