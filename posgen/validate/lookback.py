"""Question-consistency look-backs of a split, streamed: how far back a rule must look.

:func:`posgen.consistency.question_lookbacks` gives D*(t) for every target of a row: the
smallest look-back at which the far operands, inferred from the visible transitions, fix
x_t. This tally reads a deterministic sample of the split's rows, spread evenly over it
(:func:`posgen.consistency.sample_rows` of them), and reports, per region (ID t in
[w, L), OOD t in [L, L')), the distribution of D* and the share of targets with
D* <= k + 2 (*short*), and the share that is also below the rule's own look-back t - p
(*shortcut*: a local rule stands in for the far operands; recursive, whose rule reads
w tokens, has none unless h ignores its far operands).

>>> import numpy as np
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

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from posgen.consistency import candidate_count, question_lookbacks, refusal, sample_rows
from posgen.spec import TaskSpec
from posgen.validate.shortcuts import rule_lookbacks


class LookbackRegion(BaseModel):
    """D* over the audited targets of one region (ID or OOD)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    targets: int = Field(ge=0, description="Targets audited: rows x positions of the region.")
    short: int = Field(ge=0, description="Targets whose look-back D* is at most k + 2.")
    short_share: float = Field(ge=0, le=1, description="short / targets (0 when none).")
    shortcut: int = Field(
        ge=0, description="Targets with D* <= k + 2 and below the rule's look-back t - p."
    )
    shortcut_share: float = Field(ge=0, le=1, description="shortcut / targets.")
    p10: int | None = Field(None, ge=0, description="10th percentile of D* (lower).")
    median: int | None = Field(None, ge=0, description="Median D* (lower; None: no target).")
    p90: int | None = Field(None, ge=0, description="90th percentile of D* (lower).")
    max: int | None = Field(None, ge=0, description="Largest D* (None when no target).")
    histogram: dict[int, int] = Field(
        default_factory=dict, description="D* -> number of targets with that look-back."
    )


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
    """D* of a sample of a split's rows, streamed batch by batch (memory: a few counters a
    position).

    The sample: n = :func:`posgen.consistency.sample_rows` rows, row floor(i N / n) for
    i < n of a split of N rows (every row when N <= n; the first n rows when N is unknown).
    """

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
        """Audit the rows of ``tokens`` (``(rows, length)``) still within the sample
        (rows holding a token outside Z_m are skipped: the schema check reports them)."""
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
        """The audit's figures (:class:`QuestionLookbacks`)."""
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
    """Summary of one region's histogram of D*."""
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
