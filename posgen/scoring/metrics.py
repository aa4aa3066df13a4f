"""The POSGEN metrics: teacher-forced next-token accuracy, split at the OOD boundary.

A prediction for position ``t`` is the model's argmax made from the true tokens before
``t``. Positions ``[0, w)`` are the seed window and are never scored; positions
``[w, L)`` are in distribution (ID) and ``[L, L')`` out of distribution (OOD), with
``L`` the train length (the OOD boundary) and ``L'`` the row length of the split.

Worked example (m = 17, w = 4, L = 6, one row of length 8; the model gets x_5 wrong):

>>> import numpy as np
>>> reference = np.array([[0, 1, 2, 3, 6, 12, 6, 10]])
>>> predicted = np.array([[0, 1, 2, 3, 6, 11, 6, 10]])
>>> report = score_arrays(reference, predicted, window=4, ood_boundary=6, modulus=17)
>>> report.id.accuracy, report.id.tokens, report.ood.accuracy, report.first_error.position
(0.5, 2, 1.0, [5])
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from posgen.errors import UsageError, shown

if TYPE_CHECKING:
    from posgen.spec import TaskSpec

DEFAULT_BUCKET_WIDTH = 16  # positions per bucket of the bucketed curve


class Frozen(BaseModel):
    """A frozen pydantic model that refuses unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Accuracy(Frozen):
    """``correct`` out of ``tokens`` (or rows, for exact match); accuracy None when 0."""

    correct: int = Field(ge=0, description="Correct predictions (or fully correct rows).")
    tokens: int = Field(ge=0, description="Predictions scored (or rows, for exact match).")
    accuracy: float | None = Field(ge=0.0, le=1.0, description="correct / tokens.")


class Bucket(Frozen):
    """Accuracy over positions ``[start, stop)``; ``ood`` marks buckets at or past L."""

    start: int = Field(ge=0)
    stop: int = Field(ge=1)
    ood: bool
    correct: int = Field(ge=0)
    tokens: int = Field(ge=0)
    accuracy: float | None = Field(ge=0.0, le=1.0)


class Curve(Frozen):
    """Accuracy at every scored position (``tokens`` = rows at each one)."""

    position: list[int] = Field(description="Positions w .. L'-1.")
    correct: list[int] = Field(description="Correct predictions at each position.")
    tokens: list[int] = Field(description="Predictions scored at each position.")
    accuracy: list[float | None] = Field(description="correct / tokens at each position.")


class FirstError(Frozen):
    """Where each row first goes wrong: rows per first wrong position, and rows never wrong."""

    position: list[int] = Field(description="First wrong positions that occur, ascending.")
    rows: list[int] = Field(description="Rows whose first wrong position is ``position[i]``.")
    never: int = Field(ge=0, description="Rows with every scored position correct.")
    median: float | None = Field(description="Median first wrong position over rows with one.")


class ScoredSplit(Frozen):
    """What was scored: the split, its shape, its OOD boundary and the bucket width."""

    spec_id: str | None = Field(description="Spec id of the data scored.")
    config: str | None = Field(None, description="Config scored (when read from a folder).")
    split: str | None = Field(None, description="Split scored (when read from a folder).")
    rows: int = Field(ge=0)
    length: int = Field(ge=1, description="L': row length, seed window included.")
    seed_window: int = Field(ge=1, description="w = j + k: positions never scored.")
    ood_boundary: int = Field(ge=1, description="L: first OOD position (the train length).")
    modulus: int = Field(ge=2, description="m: tokens are 0 .. m-1.")
    bucket_width: int = Field(ge=1)

    def to_json(self) -> str:
        """The report as stable JSON: sorted keys, two-space indent, trailing newline."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


class ScoreReport(ScoredSplit):
    """Every POSGEN figure for one split's predictions, with the counts behind it."""

    id: Accuracy = Field(description="Positions [w, L).")
    ood: Accuracy = Field(description="Positions [L, L'); tokens 0 when L' <= L.")
    overall: Accuracy = Field(description="Positions [w, L').")
    ood_exact_match: Accuracy = Field(description="Rows whose OOD positions are all correct.")
    exact_match: Accuracy = Field(description="Rows whose scored positions are all correct.")
    buckets: list[Bucket]
    curve: Curve
    first_error: FirstError

    def summary(self) -> dict[str, float | None]:
        """The two headline figures: ``{"id_accuracy": ..., "ood_accuracy": ...}``."""
        return {"id_accuracy": self.id.accuracy, "ood_accuracy": self.ood.accuracy}


def ratio(correct: int, total: int) -> float | None:
    return correct / total if total else None


def _counts(correct: int, total: int) -> dict[str, Any]:
    return {"correct": int(correct), "tokens": int(total), "accuracy": ratio(correct, total)}


def require_integers(dtype: np.dtype, what: str = "predictions", kind: str = "token ids") -> None:
    """Token ids are plain integers: not bool, float, timedelta64, datetime64 or objects."""
    if dtype.kind not in "iu":
        raise ScoringError(f"{what} must be integer {kind}, got dtype {dtype}")


def as_array(value: Any, what: str) -> np.ndarray:
    """``np.asarray(value)``, or :class:`ScoringError` naming ``what`` (e.g. a ragged list, a
    torch tensor that needs gradients). A torch tensor on a GPU or in bfloat16 (which numpy
    lacks) is read from its CPU copy, bfloat16 widened to float32 exactly."""
    if getattr(value, "is_cuda", False) or str(getattr(value, "dtype", "")) == "torch.bfloat16":
        value = value.cpu()
        value = value.float() if str(value.dtype) == "torch.bfloat16" else value
    try:
        return np.asarray(value)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ScoringError(f"{what}: not an array ({shown(error, 120)})") from None


def integer_array(value: Any, what: str, kind: str = "token ids") -> np.ndarray:
    """``value`` as an array of integers (a float is refused, never cut to one)."""
    array = as_array(value, what)
    if array.ndim == 0 and array.dtype == object:  # one object: a Predictions, a dict, ...
        hint = " (pass its .tokens, and ids=its .ids)" if hasattr(value, "ids") else ""
        raise ScoringError(f"{what}: an array of {kind}, not {type(value).__name__}{hint}")
    require_integers(array.dtype, what, kind)
    return array


def checked_arrays(
    reference: Any,
    predictions: Any,
    window: int,
    ood_boundary: int,
    modulus: int,
    bucket_width: int,
    what: str,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """``(reference (rows, L'), predictions at [w, L'), (w, L, m, bucket width) as Python
    ints)``, or :class:`ScoringError` naming the first argument that cannot be scored."""
    ref = integer_array(reference, f"{what} tokens")
    for name, value in {"bucket width": bucket_width, "seed window": window,
                        "OOD boundary": ood_boundary, "modulus": modulus}.items():  # fmt: skip
        if not isinstance(value, int | np.integer) or isinstance(value, bool):
            raise ScoringError(f"{name} must be an integer, not {type(value).__name__}")
    frame = window, ood_boundary, modulus, bucket_width = tuple(
        int(v) for v in (window, ood_boundary, modulus, bucket_width)
    )  # an np.uint8 window would overflow, an np.uint64 fail the report's int
    if ref.ndim != 2:
        raise ScoringError(f"{what} tokens must be (rows, length), got shape {ref.shape}")
    rows, length = ref.shape
    if modulus < 2:
        raise ScoringError(f"modulus must be at least 2, got {modulus}")
    if bucket_width < 1:
        raise ScoringError(f"bucket width must be at least 1, got {bucket_width}")
    if not 1 <= window < length:
        raise ScoringError(f"seed window {window} must be in [1, {length}) for rows of {length}")
    if ood_boundary <= window:
        raise ScoringError(f"OOD boundary {ood_boundary} must exceed the seed window {window}")
    array = integer_array(predictions, "predictions")
    if array.ndim != 2 or array.shape[0] != rows or array.shape[1] not in (length, length - window):
        raise ScoringError(
            f"predictions have shape {array.shape}; expected ({rows}, {length}) "
            f"(whole rows) or ({rows}, {length - window}) (positions {window}..{length - 1})"
        )
    scored = array[:, window:] if array.shape[1] == length else array
    if problem := outside_vocabulary(scored, modulus, "prediction"):
        raise ScoringError(problem)
    return ref, scored, frame


def outside_vocabulary(values: np.ndarray, modulus: int, what: str) -> str | None:
    """Why ``values`` are no tokens of Z_m (the lowest value named when one is negative), or
    ``None``.

    >>> outside_vocabulary(np.array([3, 18]), 17, "prediction")
    'prediction 18 is outside the vocabulary 0..16 (m = 17)'
    >>> outside_vocabulary(np.array([3, 17]), 17, "prediction")  # doctest: +ELLIPSIS
    "prediction 17 is outside the vocabulary 0..16 (m = 17): it is BOS's id; ..."
    """
    if not values.size:
        return None
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high < modulus:
        return None
    bad = low if low < 0 else high
    line = f"{what} {bad} is outside the vocabulary 0..{modulus - 1} (m = {modulus})"
    if what == "prediction" and bad == modulus:  # an argmax over all m + 1 logits
        line += ": it is BOS's id; take the argmax over the m token logits, logits[..., :m]"
    return line


def spec_frame(spec: TaskSpec) -> dict[str, Any]:
    """What scoring takes from a spec: w (never scored), the OOD boundary L, m, the spec id."""
    return {
        "window": spec.window,
        "ood_boundary": spec.train_length,
        "modulus": spec.modulus,
        "spec_id": spec.spec_id,
    }


def score_arrays(
    reference: np.ndarray,
    predictions: np.ndarray,
    *,
    window: int,
    ood_boundary: int,
    modulus: int,
    bucket_width: int = DEFAULT_BUCKET_WIDTH,
    spec_id: str | None = None,
    config: str | None = None,
    split: str | None = None,
) -> ScoreReport:
    """Score ``predictions`` against ``reference`` (``(rows, L')``); w, L and m as named."""
    ref, scored, (window, ood_boundary, modulus, bucket_width) = checked_arrays(
        reference, predictions, window, ood_boundary, modulus, bucket_width, "reference"
    )
    rows, length = ref.shape
    correct = scored == ref[:, window:]
    per_position = np.count_nonzero(correct, axis=0).astype(np.int64)
    split_at = min(ood_boundary, length) - window
    id_correct = int(per_position[:split_at].sum())
    ood_correct = int(per_position[split_at:].sum())
    ood_width = length - window - split_at
    wrong = ~correct
    any_wrong = wrong.any(axis=1)
    ood_rows_ok = int(rows - np.count_nonzero(wrong[:, split_at:].any(axis=1))) if ood_width else 0
    first = wrong.argmax(axis=1)[any_wrong] + window
    counts = np.bincount(first, minlength=length)
    positions = np.arange(window, length)
    return ScoreReport(
        spec_id=spec_id,
        config=config,
        split=split,
        rows=rows,
        length=length,
        seed_window=window,
        ood_boundary=ood_boundary,
        modulus=modulus,
        bucket_width=bucket_width,
        id=Accuracy(**_counts(id_correct, rows * split_at)),
        ood=Accuracy(**_counts(ood_correct, rows * ood_width)),
        overall=Accuracy(**_counts(id_correct + ood_correct, rows * (length - window))),
        ood_exact_match=Accuracy(**_counts(ood_rows_ok, rows if ood_width else 0)),
        exact_match=Accuracy(**_counts(rows - int(np.count_nonzero(any_wrong)), rows)),
        buckets=[
            Bucket(
                start=a,
                stop=b,
                ood=a >= ood_boundary,
                **_counts(per_position[a - window : b - window].sum(), rows * (b - a)),
            )
            for a, b in itertools.pairwise(bucket_edges(window, length, ood_boundary, bucket_width))
        ],
        curve=Curve(
            position=positions.tolist(),
            correct=per_position.tolist(),
            tokens=[rows] * positions.size,
            accuracy=[ratio(int(c), rows) for c in per_position.tolist()],
        ),
        first_error=FirstError(
            position=np.flatnonzero(counts).tolist(),
            rows=counts[counts > 0].tolist(),
            never=rows - int(first.size),
            median=float(np.median(first)) if first.size else None,
        ),
    )


def bucket_edges(window: int, length: int, ood_boundary: int, width: int) -> list[int]:
    """Bucket edges: multiples of ``width`` in ``(w, L')``, plus w, L (if inside) and L', so
    that no bucket straddles the OOD boundary.

    >>> bucket_edges(window=4, length=40, ood_boundary=20, width=16)
    [4, 16, 20, 32, 40]
    """
    edges = {window, length, *range(width * (window // width + 1), length, width)}
    if window < ood_boundary < length:
        edges.add(ood_boundary)
    return sorted(edges)


def check_reference(tokens: np.ndarray, spec: TaskSpec) -> None:
    """Refuse reference rows that cannot be data of ``spec`` (length or vocabulary)."""
    if tokens.ndim != 2:
        raise ScoringError(f"reference tokens must be (rows, length), got shape {tokens.shape}")
    lengths = (spec.train_length, *spec.test_lengths)
    if tokens.shape[0] and tokens.shape[1] not in lengths:
        raise ScoringError(
            f"reference rows have {tokens.shape[1]} tokens; spec {spec.spec_id} has rows of "
            f"{', '.join(map(str, lengths))}"
        )
    if tokens.size and not 0 <= int(tokens.min()) <= int(tokens.max()) < spec.modulus:
        bad = int(tokens.min()) if int(tokens.min()) < 0 else int(tokens.max())
        raise ScoringError(
            f"reference token {bad} is outside the spec's vocabulary "
            f"0..{spec.modulus - 1}: is this the data of spec {spec.spec_id}?"
        )


class ScoringError(UsageError, ValueError):
    """Predictions, ids or a reference that cannot be scored together (one line)."""
