"""Far-reliance: does a model's prediction follow the far operand when it is replaced?

Every probed target (:mod:`posgen.generator`) has a *far-rule answer* (h of the operands as
stored, column ``far_rule``) and a *local answer* (the stored token). Where they differ,
far-reliance is the share of predictions equal to the far-rule answer, local-reliance the
share equal to the local answer; ID, OOD, per bucket and per position, with counts.

Worked example (w = 4, L = 6; far-rule answers 9, 7, 3 at targets 4, 5, 6 against stored
9, 2, 5): target 4 is not counted; the prediction follows the far rule at 5, the token at 6.

>>> tokens = np.array([[0, 1, 2, 3, 9, 2, 5, 8]])
>>> report = reliance_arrays(tokens, np.array([[0, 1, 2, 3, 9, 7, 5, 8]]), np.array([0, 0, 0]),
...                          np.array([4, 5, 6]), np.array([9, 7, 3]), window=4,
...                          ood_boundary=6, modulus=17)
>>> report.id.probed, report.id.counted, report.id.far_reliance, report.ood.local_reliance
(2, 1, 1.0, 1.0)
>>> report.curve.far_reliance
[None, 1.0, 0.0, None]
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from posgen.scoring.metrics import (
    DEFAULT_BUCKET_WIDTH,
    Frozen,
    ScoredSplit,
    ScoringError,
    bucket_edges,
    checked_arrays,
    integer_array,
    ratio,
    spec_frame,
)
from posgen.scoring.prediction_files import align_to_ids
from posgen.spec import TaskSpec
from posgen.store.dataset import ProbeSplit, probe_from_table


class Reliance(Frozen):
    """Probed targets, those where the two answers differ, and the predictions matching each."""

    probed: int = Field(ge=0, description="Probed targets.")
    counted: int = Field(
        ge=0, description="Probed targets whose far-rule and local answers differ."
    )
    far: int = Field(ge=0, description="Counted targets predicted as the far-rule answer.")
    local: int = Field(ge=0, description="Counted targets predicted as the local answer.")
    far_reliance: float | None = Field(ge=0.0, le=1.0, description="far / counted.")
    local_reliance: float | None = Field(ge=0.0, le=1.0, description="local / counted.")


class RelianceBucket(Reliance):
    """Reliance over positions ``[start, stop)``; ``ood`` marks buckets at or past L."""

    start: int = Field(ge=0)
    stop: int = Field(ge=1)
    ood: bool


class RelianceCurve(Frozen):
    """Counts and shares at every position ``w .. L'-1``."""

    position: list[int]
    counted: list[int]
    far: list[int]
    local: list[int]
    far_reliance: list[float | None]
    local_reliance: list[float | None]


class RelianceReport(ScoredSplit):
    """Far- and local-reliance of one probe split's predictions, with the counts behind them."""

    id: Reliance = Field(description="Probed positions in [w, L).")
    ood: Reliance = Field(description="Probed positions in [L, L').")
    overall: Reliance = Field(description="Every probed position.")
    buckets: list[RelianceBucket]
    curve: RelianceCurve

    def summary(self) -> dict[str, float | None]:
        """The headline figures: far- and local-reliance, ID and OOD."""
        return {
            "id_far_reliance": self.id.far_reliance,
            "ood_far_reliance": self.ood.far_reliance,
            "id_local_reliance": self.id.local_reliance,
            "ood_local_reliance": self.ood.local_reliance,
        }


def _shares(part: np.ndarray, total: np.ndarray) -> list[float | None]:
    return [ratio(p, t) for p, t in zip(part.tolist(), total.tolist(), strict=True)]


def reliance_arrays(
    tokens: np.ndarray,
    predictions: np.ndarray,
    rows: np.ndarray,
    positions: np.ndarray,
    far_rule: np.ndarray,
    *,
    window: int,
    ood_boundary: int,
    modulus: int,
    bucket_width: int = DEFAULT_BUCKET_WIDTH,
    spec_id: str | None = None,
    config: str | None = None,
    split: str | None = None,
) -> RelianceReport:
    """Score ``predictions`` on probe rows ``tokens``: target i is (``rows[i]``,
    ``positions[i]``), far-rule answer ``far_rule[i]``, local answer the stored token."""
    ref, scored, (window, ood_boundary, modulus, bucket_width) = checked_arrays(
        tokens, predictions, window, ood_boundary, modulus, bucket_width, "probe"
    )
    n, length = ref.shape
    rows, positions, far_rule = (  # a float is refused, never cut; a uint64 never wrapped
        integer_array(value, what, kind)
        for value, what, kind in ((rows, "probed rows", "row numbers"),
                                  (positions, "probed positions", "positions"),
                                  (far_rule, "far-rule answers", "token ids"))
    )  # fmt: skip
    if rows.ndim != 1:
        raise ScoringError(f"probed rows must be one row number a target, got shape {rows.shape}")
    if not rows.shape == positions.shape == far_rule.shape:
        raise ScoringError("probed rows, positions and far-rule answers must be equally long")
    bounds = {"probed rows": (rows, 0, n), "probed positions": (positions, window, length),
              "far-rule answers": (far_rule, 0, modulus)}  # fmt: skip
    for what, (values, low, high) in bounds.items():
        if values.size and (int(values.min()) < low or int(values.max()) >= high):
            raise ScoringError(f"{what} must lie in [{low}, {high})")
    rows, positions, far_rule = (a.astype(np.int64) for a in (rows, positions, far_rule))
    local = ref[rows, positions].astype(np.int64)
    predicted = scored[rows, positions - window].astype(np.int64)
    counted = far_rule != local

    def per_position(mask: np.ndarray) -> np.ndarray:
        return np.bincount(positions[mask], minlength=length)[window:].astype(np.int64)

    probed_at = per_position(np.ones(positions.shape, dtype=bool))
    counted_at = per_position(counted)
    far_at = per_position(counted & (predicted == far_rule))
    local_at = per_position(counted & (predicted == local))
    split_at = max(0, min(ood_boundary, length) - window)

    def region(lo: int, hi: int) -> dict[str, Any]:
        counts = (int(a[lo:hi].sum()) for a in (probed_at, counted_at, far_at, local_at))
        out: dict[str, Any] = dict(zip(("probed", "counted", "far", "local"), counts, strict=True))
        out["far_reliance"] = ratio(out["far"], out["counted"])
        out["local_reliance"] = ratio(out["local"], out["counted"])
        return out

    buckets = [
        RelianceBucket(start=a, stop=b, ood=a >= ood_boundary, **region(a - window, b - window))
        for a, b in itertools.pairwise(bucket_edges(window, length, ood_boundary, bucket_width))
    ]
    return RelianceReport(
        spec_id=spec_id,
        config=config,
        split=split,
        rows=n,
        length=length,
        seed_window=window,
        ood_boundary=ood_boundary,
        modulus=modulus,
        bucket_width=bucket_width,
        id=Reliance(**region(0, split_at)),
        ood=Reliance(**region(split_at, length - window)),
        overall=Reliance(**region(0, length - window)),
        buckets=buckets,
        curve=RelianceCurve(
            position=list(range(window, length)),
            counted=counted_at.tolist(),
            far=far_at.tolist(),
            local=local_at.tolist(),
            far_reliance=_shares(far_at, counted_at),
            local_reliance=_shares(local_at, counted_at),
        ),
    )


def score_probe(
    probe: Any,
    predictions: Any,
    spec: TaskSpec | None = None,
    *,
    ids: Any = None,
    bucket_width: int = DEFAULT_BUCKET_WIDTH,
) -> RelianceReport:
    """Far- and local-reliance of ``predictions`` (in the row order of ``probe``, or that of
    ``ids``) on a probe split: a :class:`ProbeSplit`, or a ``datasets.Dataset`` /
    ``pyarrow.Table`` and ``spec``.

    >>> from posgen.generator import probe_rows
    >>> from posgen.store.formats import probe_schema, probe_table
    >>> spec = TaskSpec(task="cot", train_size=8, val_size=4, test_size=4)
    >>> table = probe_table(probe_rows(spec, "probe", 0, 4), probe_schema(17))
    >>> probe = probe_from_table(table, spec)
    >>> score_probe(probe, probe.tokens).overall.local_reliance
    1.0
    """
    if isinstance(probe, ProbeSplit) and spec is not None and spec != probe.spec:
        raise ScoringError(  # it was ignored: the report named the probe's own spec
            f"the probe split is of spec {probe.spec.spec_id}, not of the spec given "
            f"({getattr(spec, 'spec_id', type(spec).__name__)}): leave spec out for a ProbeSplit"
        )
    if not isinstance(probe, ProbeSplit):
        if spec is None:
            raise ScoringError("score_probe needs the spec for a table or dataset")
        if not isinstance(probe, pa.Table) and not hasattr(probe, "with_format"):
            raise ScoringError(
                f"score_probe reads a ProbeSplit, a datasets.Dataset or a pyarrow.Table with "
                f"the probe columns, not {type(probe).__name__}"
            )
        table = probe if isinstance(probe, pa.Table) else probe.with_format("arrow")[:]
        probe = probe_from_table(table, spec)
        table_ids = table.column("id").to_numpy()
        if ids is None and not np.array_equal(table_ids, probe.ids):
            ids = table_ids  # predictions in the table's row order, as score() reads them
    preds = integer_array(predictions, "predictions")
    if ids is not None:
        preds = align_to_ids(ids, preds, probe.ids)
    return reliance_arrays(
        probe.tokens,
        preds,
        probe.probed_rows,
        probe.probed,
        probe.far_rule,
        **spec_frame(probe.spec),
        bucket_width=bucket_width,
        config=probe.config,
        split=probe.split,
    )


READS_FAR = 0.8  # far-reliance (ID) at which a task counts as read long-range (issue bar: 0.8)
PARTLY_READS_FAR = 0.2  # far-reliance (ID) above which a model reads the far operand in part
LEARNT = 0.2  # ID accuracy under which a task counts as not learnt at the figures' budget
REFERENCE_PE = "rope"  # the encoding the sentences quote (RESULTS.md compares the others)


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def measure_sentence(name: str, task: str, pe: str, cell: dict[str, Any]) -> str:
    """One sentence: what ``task`` on benchmark ``name`` measures, from ``pe``'s figures."""
    far_id, far_ood = cell.get("far_id_mean"), cell.get("far_ood_mean")
    id_mean, ood_mean = (_figure(cell.get(name)) for name in ("id_mean", "ood_mean"))
    figures = f"accuracy {id_mean} ID, {ood_mean} OOD; n = {cell['n']}"  # None: no such position
    if far_id is None:
        verdict = "has no probe figures yet, so what it measures is not established"
    else:
        figures = f"far-reliance {far_id:.3f} ID, {_figure(far_ood)} OOD; {figures}"
        if far_id >= READS_FAR:
            what = "a far dependency at unseen positions: {} read the far operand in distribution"
        elif cell["id_mean"] < LEARNT:
            what = "little at this training budget: {} do not learn it"
        elif far_id >= PARTLY_READS_FAR:
            what = "a mix of a local rule and a far read: {} read the far operand only in part"
        else:
            what = (
                "whether a local rule keeps working at unseen positions: {} do not read the "
                "far operand"
            )
        verdict = "measures " + what.format(f"models trained with {pe}")
    return f"{task} on {name} {verdict} ({figures})."


def measure_sentences(name: str, entry: dict[str, Any], pe: str = REFERENCE_PE) -> list[str]:
    """A sentence for every task of one data folder's aggregate that has ``pe``'s runs."""
    return [
        measure_sentence(name, task, pe, pes[pe])
        for task, pes in entry.get("tasks", {}).items()
        if pe in pes
    ]
