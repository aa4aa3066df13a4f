"""Check 5 (split hygiene, 16 bytes a row) and check 6 (the audit: target balance, periodic,
copy and linear shortcuts, operand sensitivity, question-consistency look-backs), streamed.

>>> import numpy as np
>>> copy_hits(np.array([[3, 5, 9, 3, 5, 9, 1]]), context=2, first=2, boundary=5)
{'id': (0, 0), 'ood': (1, 2)}
>>> shortcut_hits(np.array([[1, 2, 5, 9, 5, 9, 5, 9, 5, 9, 0]]), train_length=8, window=2)
(2, 1)
>>> rows = np.array([[0, 1, 2, 3, 6], [0, 1, 2, 3, 6], [0, 1, 2, 4, 7]], dtype=np.uint8)
>>> tally = HygieneTally(modulus=17, window=4)
>>> tally.add(rows)
>>> tally.repeated_rows(), tally.repeated_windows()
(1, 1)
>>> from posgen.spec import TaskSpec
>>> spec = TaskSpec(task="cot", train_length=6, test_length=7, train_size=1, val_size=1,
...                 test_size=1)
>>> tally = LookbackTally(spec, 7)
>>> tally.add(np.array([[0, 1, 2, 3, 6, 11, 3]]))
>>> audit = tally.result()
>>> audit.id.histogram, audit.ood.histogram, audit.short_by_position
({4: 2}, {4: 1}, [1, 1, 1])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from posgen.consistency import candidate_count, question_lookbacks, refusal, sample_rows
from posgen.generator import operand_slots, take_slot
from posgen.spec import TaskSpec
from posgen.tasks import get_op, mix64
from posgen.validate.shortcuts import is_prime, local_rules, rule_lookbacks

AUDIT_TOKENS = 1 << 18  # tokens (first rows) the copy and linear rules read: bounds their memory
_HASH_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible mod 2^64
_HASH_INVERSE = np.uint64(pow(int(_HASH_BASE), -1, 2**64))
EXACT_CONTEXT = 16  # contexts up to this long get exact base-m codes


def context_codes(tokens: np.ndarray, context: int, modulus: int) -> np.ndarray:
    """``codes[:, t]`` identifies x_{t-K} .. x_{t-1} (0 below K): exact base-m codes when they
    fit 64 bits and K <= :data:`EXACT_CONTEXT`, else a polynomial hash from prefix sums.

    >>> context_codes(np.array([[1, 2, 3]]), 2, 10).tolist()
    [[0, 0, 12]]
    """
    rows, length = tokens.shape
    codes = np.zeros((rows, length), dtype=np.uint64)
    count = length - context
    tokens = tokens.astype(np.uint64)
    with np.errstate(over="ignore"):
        if context <= EXACT_CONTEXT and modulus**context <= 2**64:
            base = np.uint64(modulus)
            code = np.zeros((rows, count), dtype=np.uint64)
            for i in range(context):
                code *= base
                code += tokens[:, i : i + count]
            codes[:, context:] = code
            return codes
        powers = np.cumprod(np.full(length, _HASH_BASE, dtype=np.uint64)) * _HASH_INVERSE
        inverse = np.cumprod(np.full(length, _HASH_INVERSE, dtype=np.uint64)) * _HASH_BASE
        prefix = np.zeros((rows, length + 1), dtype=np.uint64)
        np.cumsum(tokens * powers, axis=1, out=prefix[:, 1:])
        codes[:, context:] = (prefix[:, context:length] - prefix[:, :count]) * inverse[:count]
    return codes


def copy_hits(
    tokens: np.ndarray, context: int, first: int, boundary: int, modulus: int = 1 << 16
) -> dict[str, tuple[int, int]]:
    """Per region (``id``: t in [first, boundary), ``ood``: t >= boundary): (hits, found), the
    targets whose K-token context occurred earlier in the row and those it copies right."""
    rows, length = tokens.shape
    out = {"id": (0, 0), "ood": (0, 0)}
    start = max(context, 1)
    if rows == 0 or length <= max(first, start):
        return out
    codes = context_codes(tokens, context, modulus)[:, start:].reshape(-1)
    row_of = np.repeat(np.arange(rows, dtype=np.uint64), length - start)
    exact = context <= EXACT_CONTEXT and modulus**context <= 2**64
    code_bits = (modulus**context - 1).bit_length() if exact else 64
    if code_bits + max(1, (rows - 1).bit_length()) <= 64:  # (row, code) packed exactly
        key = (row_of << np.uint64(code_bits)) | codes
    else:  # mixed with the row: equal only for equal rows, up to 64-bit collisions
        key = codes ^ mix64(row_of + np.uint64(1))
    order = np.argsort(key, kind="stable")  # stable: equal keys stay in t order
    ordered = key[order]
    same = ordered[1:] == ordered[:-1]
    later, earlier = order[1:][same], order[:-1][same]
    t = later % (length - start) + start
    source = earlier % (length - start) + start
    row = later // (length - start)
    hit = tokens[row, source] == tokens[row, t]
    for name, lo, hi in (("id", first, boundary), ("ood", max(first, boundary), length)):
        inside = (t >= lo) & (t < hi)
        out[name] = (int(np.count_nonzero(hit & inside)), int(np.count_nonzero(inside)))
    return out


def linear_rule_hits(
    spec: TaskSpec, tokens: np.ndarray, boundary: int
) -> dict[str, tuple[int, int]] | None:
    """Per region: (targets the skeleton's shorter linear rules predict, targets they cover)."""
    rows, length = tokens.shape
    if not is_prime(spec.modulus):
        return None
    skeleton = TaskSpec(**{**spec.canonical(), "op": "mod_addition", "op_key": 0})
    rules = local_rules(skeleton, length)
    if rules is None or not rules.coefficients:
        return None
    m = spec.modulus
    wide = tokens.T.astype(np.int64)  # position-major: each column read is contiguous
    counts = {"id": [0, 0], "ood": [0, 0]}
    for i in np.flatnonzero(rules.effective < rules.rule).tolist():
        t = rules.first + i
        predicted = np.zeros(rows, dtype=np.int64)
        for d, a in enumerate(rules.coefficients[i], start=1):
            if a:
                predicted += a * wide[t - d]
        region = counts["id" if t < boundary else "ood"]
        region[0] += int(np.count_nonzero(predicted % m == wide[t]))
        region[1] += rows
    return {name: (hits, total) for name, (hits, total) in counts.items()}


@dataclass
class ShortcutTally:
    """Copy (contexts K = k and K = w) and linear-rule counts of one split, streamed."""

    spec: TaskSpec
    copies: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    linear: dict[str, list[int]] | None = None
    linear_known: bool = True
    rows: int = 0
    tokens: int = 0

    def add(self, tokens: np.ndarray) -> None:
        """Count a batch of rows, up to :data:`AUDIT_TOKENS` tokens in all."""
        spec = self.spec
        room = max(0, AUDIT_TOKENS - self.tokens) // max(1, tokens.shape[1])
        if room == 0:
            return
        tokens = tokens[:room]
        self.rows += tokens.shape[0]
        self.tokens += tokens.size
        boundary = min(spec.train_length, tokens.shape[1])
        for context in sorted({spec.near, spec.window}):
            found = copy_hits(tokens, context, spec.window, boundary, spec.modulus)
            for region, (hits, seen) in found.items():
                tally = self.copies.setdefault((context, region), [0, 0])
                tally[0] += hits
                tally[1] += seen
        linear = linear_rule_hits(spec, tokens, boundary) if self.linear_known else None
        if linear is None:
            self.linear_known, self.linear = False, None
            return
        self.linear = self.linear or {"id": [0, 0], "ood": [0, 0]}
        for region, (hits, covered) in linear.items():
            self.linear[region][0] += hits
            self.linear[region][1] += covered


MAX_BALANCE_CELLS = 1 << 22  # positions x m counters (positions thinned beyond)
BALANCE_CHUNK = 1 << 16  # tokens counted at a time (their intp cells: 512 KiB)
MAX_PERIOD = 512  # longest period the periodic shortcut looks for
SENSITIVITY_SAMPLES = 4096  # targets probed for operand sensitivity (the first ones)
SENSITIVITY_SHIFTS = 16  # other values tried per operand
SENSITIVITY_SLOTS = 16  # operand slots probed, evenly spaced over the window
SENSITIVITY_CELLS = 1 << 16  # most operands (targets x w) sampled


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
        """Count a batch's targets per position, :data:`BALANCE_CHUNK` cells at a time (intp
        cells, which bincount reads without a copy, in the cache: 1.3-2x faster than one pass)."""
        contiguous = self.positions.size == tokens.shape[1] - self.positions[0]
        offsets = np.arange(self.positions.size) * self.modulus
        # at least as many cells as counters: each bincount's output costs no more than its input
        step = max(1, max(BALANCE_CHUNK, self.counts.size) // self.positions.size)
        for first in range(0, tokens.shape[0], step):
            rows = tokens[first : first + step]
            block = rows[:, self.positions[0] :] if contiguous else rows[:, self.positions]
            cells = block.astype(np.intp)
            cells += offsets
            negative = np.issubdtype(block.dtype, np.signedinteger) and int(block.min()) < 0
            if negative or int(block.max()) >= self.modulus:  # not counted: schema names them
                cells = cells[(block >= 0) & (block < self.modulus)]
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
    """(share of single-operand changes that change h's output, changes tried)."""
    rows, length = tokens.shape
    if rows == 0 or length <= spec.window or tokens.max() >= spec.modulus:
        return 1.0, 0
    m, window = spec.modulus, spec.window
    per_row = length - window
    samples = max(1, min(SENSITIVITY_SAMPLES, SENSITIVITY_CELLS // window))
    take = max(1, min(rows, -(-samples // per_row)))
    sample = tokens[:take]
    slots = operand_slots(spec.task, length, spec.near, spec.far)
    operands = np.empty((window, min(samples, take * per_row)), dtype=np.int64)
    for i, slot in enumerate(slots):
        column = np.broadcast_to(take_slot(sample, slot), (take, per_row)).reshape(-1)
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


def _distinct(ordered: np.ndarray) -> np.ndarray:
    """Distinct values of a sorted uint64 array (a sort is faster than hashing here)."""
    return (
        ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if ordered.size else ordered
    )


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
        self._rows.append(row_keys(tokens))
        seed = context_codes(tokens[:, : self.window + 1], self.window, self.modulus)
        self._windows.append(seed[:, self.window])
        self._distinct = self._sorted = None

    def repeated_rows(self) -> int:
        """Rows equal to an earlier row of the split (64-bit keys: false repeats ~ n^2 / 2^65)."""
        keys = np.concatenate(self._rows) if self._rows else np.empty(0, np.uint64)
        return len(keys) - len(_distinct(np.sort(keys)))

    def distinct_windows(self) -> np.ndarray:
        if self._distinct is None:
            self._distinct = _distinct(self._sorted_windows())
        return self._distinct

    def _sorted_windows(self) -> np.ndarray:
        if self._sorted is None:
            keys = np.concatenate(self._windows) if self._windows else np.empty(0, np.uint64)
            self._sorted = np.sort(keys)
        return self._sorted

    def repeated_windows(self) -> int:
        """Rows whose seed window starts an earlier row of the split."""
        return sum(len(k) for k in self._rows) - len(self.distinct_windows())

    def shared_with(self, other: HygieneTally) -> int:
        """Rows of this split whose seed window also starts a row of ``other``."""
        keys = self._sorted_windows()
        theirs = other.distinct_windows()
        if theirs.size == 0 or keys.size == 0:
            return 0
        where = np.minimum(np.searchsorted(theirs, keys), theirs.size - 1)
        return int(np.count_nonzero(theirs[where] == keys))


class LookbackRegion(BaseModel):
    """D* over the audited targets of one region (ID or OOD)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    targets: int = Field(ge=0, description="Targets audited: rows x positions of the region.")
    short: int = Field(ge=0, description="Targets whose look-back D* is at most k + 2.")
    short_share: float = Field(ge=0, le=1, description="short / targets (0 when none).")
    shortcut: int = Field(ge=0, description="Targets with D* <= k + 2 and below the rule's t - p.")
    shortcut_share: float = Field(ge=0, le=1, description="shortcut / targets.")
    p10: int | None = Field(None, ge=0, description="10th percentile of D* (lower).")
    median: int | None = Field(None, ge=0, description="Median D* (lower; None: no target).")
    p90: int | None = Field(None, ge=0, description="90th percentile of D* (lower).")
    max: int | None = Field(None, ge=0, description="Largest D* (None when no target).")
    histogram: dict[int, int] = Field(default_factory=dict, description="D* -> how many targets.")


class QuestionLookbacks(BaseModel):
    """The question-consistency audit of one split (``posgen.consistency``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    computed: bool = Field(description="False when m^j or one row's cost is above the bound.")
    method: str = Field(max_length=400, description="What was computed, or why not.")
    candidates: int | None = Field(None, ge=1, description="m^j far-operand candidates.")
    rows: int = Field(0, ge=0, description="Rows audited, spread evenly over the split.")
    short_lookback: int = Field(ge=1, description="k + 2: the look-back counted as short.")
    id: LookbackRegion | None = Field(None, description="Positions [w, L).")
    ood: LookbackRegion | None = Field(None, description="Positions [L, L') (None in train).")
    short_by_position: list[int] = Field(
        default_factory=list, description="Rows with D* <= k + 2 at t = w + i."
    )
    mean_by_position: list[float] = Field(
        default_factory=list, description="Mean D* over the audited rows at t = w + i."
    )


class LookbackTally:
    """D* of :func:`~posgen.consistency.sample_rows` rows spread over a split, streamed."""

    def __init__(self, spec: TaskSpec, length: int, total_rows: int | None = None) -> None:
        self.spec, self.length = spec, length
        self.refusal = refusal(spec, length)
        self.wanted = sample_rows(spec, length)
        self.picks = None  # row numbers sampled (None: the first ones)
        if total_rows is not None and total_rows > self.wanted > 0:
            self.picks = np.arange(self.wanted, dtype=np.int64) * total_rows // self.wanted
        self.seen = 0
        self.rule = rule_lookbacks(spec, max(length, spec.window))
        positions = self.rule.size
        self.boundary = max(0, min(spec.train_length, length) - spec.window)
        self.short = spec.near + 2
        self.histograms = {name: np.zeros(length + 1, dtype=np.int64) for name in REGIONS}
        self.shortcuts = dict.fromkeys(REGIONS, 0)
        self.short_by_position = np.zeros(positions, dtype=np.int64)
        self.sum_by_position = np.zeros(positions, dtype=np.int64)
        self.rows = 0

    def add(self, tokens: np.ndarray) -> None:
        """Audit the rows of ``tokens`` in the sample (not those the schema check fails)."""
        first, self.seen = self.seen, self.seen + tokens.shape[0]
        room = self.wanted - self.rows
        if room <= 0 or tokens.shape[0] == 0 or tokens.shape[1] != self.length:
            return
        if self.picks is not None:
            lo, hi = np.searchsorted(self.picks, [first, self.seen])
            tokens = tokens[self.picks[lo:hi] - first]
        in_range = ((tokens >= 0) & (tokens < self.spec.modulus)).all(axis=1)
        found = question_lookbacks(self.spec, tokens[in_range][:room])  # others fail schema
        self.rows += found.shape[0]
        short = found <= self.short
        self.short_by_position += short.sum(axis=0)
        self.sum_by_position += found.sum(axis=0)
        shortcut = (short & (found < self.rule[None, :])).sum(axis=0)
        for name, part in (("id", slice(0, self.boundary)), ("ood", slice(self.boundary, None))):
            values = found[:, part].reshape(-1)
            self.histograms[name] += np.bincount(values, minlength=self.length + 1)
            self.shortcuts[name] += int(shortcut[part].sum())

    def result(self) -> QuestionLookbacks:
        spec = self.spec
        if self.refusal is not None:
            return QuestionLookbacks(computed=False, method=self.refusal, short_lookback=self.short)
        count = candidate_count(spec)
        method = (
            f"exact: all {count:,} far-operand candidates (m^j) checked against the visible "
            f"transitions, {self.rows:,} rows spread over the split"
        )
        sizes = {"id": self.boundary, "ood": self.rule.size - self.boundary}
        regions = {
            name: _region(self.histograms[name], self.shortcuts[name], self.short)
            if sizes[name]
            else None
            for name in REGIONS
        }
        means = self.sum_by_position / max(self.rows, 1)
        return QuestionLookbacks(
            computed=True,
            method=method,
            candidates=count,
            rows=self.rows,
            short_lookback=self.short,
            id=regions["id"],
            ood=regions["ood"],
            short_by_position=self.short_by_position.tolist(),
            mean_by_position=[round(float(v), 4) for v in means],
        )


REGIONS = ("id", "ood")


def _region(histogram: np.ndarray, shortcut: int, short: int) -> LookbackRegion:
    targets = int(histogram.sum())
    if targets == 0:
        return LookbackRegion(targets=0, short=0, short_share=0.0, shortcut=0, shortcut_share=0.0)
    short_count = int(histogram[: short + 1].sum())
    cumulative = np.cumsum(histogram)

    def quantile(share: float) -> int:  # the smallest D* with at least that share at or below
        return int(np.searchsorted(cumulative, share * targets))

    present = np.flatnonzero(histogram)
    return LookbackRegion(
        targets=targets,
        short=short_count,
        short_share=short_count / targets,
        shortcut=shortcut,
        shortcut_share=shortcut / targets,
        p10=quantile(0.1),
        median=quantile(0.5),
        p90=quantile(0.9),
        max=int(present[-1]),
        histogram={int(d): int(histogram[d]) for d in present},
    )
