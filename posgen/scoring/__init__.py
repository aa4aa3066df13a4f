"""Scoring POSGEN predictions: metrics, far-reliance, prediction files, baselines and model
inputs (:func:`score` and :func:`score_probe` are the API for training loops)."""

from typing import Any

import numpy as np
import pyarrow as pa

from posgen.scoring.baselines import (
    BASELINES,
    PROBE_BASELINES,
    baseline_predictions,
    baseline_scores,
)
from posgen.scoring.folder import load_probe, load_reference, score_file, score_reference
from posgen.scoring.metrics import (
    DEFAULT_BUCKET_WIDTH,
    ScoreReport,
    ScoringError,
    check_reference,
    integer_array,
    score_arrays,
    spec_frame,
)
from posgen.scoring.prediction_files import (
    IGNORE_INDEX,
    LMInputs,
    Predictions,
    align_to_ids,
    lm_arrays,
    predictions_from_logits,
    read_predictions,
    vocab_size,
    write_predictions,
)
from posgen.scoring.reliance import RelianceReport, reliance_arrays, score_probe
from posgen.spec import TaskSpec
from posgen.store.dataset import ProbeSplit, ReferenceSplit, named, probe_from_table
from posgen.store.formats import table_tokens


def score(
    reference: Any,
    predictions: Any,
    spec: TaskSpec,
    *,
    ids: Any = None,
    bucket_width: int = DEFAULT_BUCKET_WIDTH,
    config: str | None = None,
    split: str | None = None,
) -> ScoreReport:
    """Score predictions of one split of ``spec``: the API for training loops.

    ``reference`` is a ``(rows, L')`` array or a ``datasets.Dataset`` / ``pyarrow.Table``
    with ``id`` and ``tokens`` columns. ``predictions`` is ``(rows, L')`` or
    ``(rows, L' - w)``, in the reference's row order, or in the order of ``ids`` when given.

    >>> from posgen.generator import generate_split
    >>> spec = TaskSpec(task="cot", train_size=8, val_size=4, test_size=4)
    >>> tokens = generate_split(spec, "test")
    >>> score(tokens, tokens, spec).summary()
    {'id_accuracy': 1.0, 'ood_accuracy': 1.0}
    """
    if not isinstance(spec, TaskSpec):
        raise ScoringError(f"spec: a posgen TaskSpec (the split's spec), not {type(spec).__name__}")
    ref_ids = None  # rows in order unless the table has ids
    if isinstance(reference, ReferenceSplit):
        if reference.spec != spec:  # the report would name a spec the rows are not of
            raise ScoringError(
                f"reference is split {reference.split} of spec {reference.spec.spec_id}, not of "
                f"the spec given ({spec.spec_id}): pass its .spec"
            )
        ref_tokens = reference.tokens
    elif isinstance(reference, pa.Table) or hasattr(reference, "with_format"):
        table = reference if isinstance(reference, pa.Table) else reference.with_format("arrow")[:]
        if "tokens" not in table.column_names:
            raise ScoringError(f"reference has no 'tokens' column; columns: {table.column_names}")
        try:
            ref_tokens = table_tokens(table)
        except ValueError as error:
            raise ScoringError(f"reference tokens: {error}") from None
        if "id" in table.column_names:
            ref_ids = integer_array(table.column("id"), "reference ids", "ids")
    else:
        ref_tokens = integer_array(reference, "reference tokens")
    check_reference(ref_tokens, spec)
    named(config, "config"), named(split, "split")
    preds = integer_array(predictions, "predictions")
    if ids is not None:
        rows = np.arange(ref_tokens.shape[0], dtype=np.int64)
        preds = align_to_ids(ids, preds, rows if ref_ids is None else ref_ids)
    return score_arrays(
        ref_tokens, preds, **spec_frame(spec), bucket_width=bucket_width, config=config, split=split
    )


__all__ = [
    "BASELINES",
    "IGNORE_INDEX",
    "PROBE_BASELINES",
    "LMInputs",
    "Predictions",
    "ProbeSplit",
    "ReferenceSplit",
    "RelianceReport",
    "ScoreReport",
    "ScoringError",
    "align_to_ids",
    "baseline_predictions",
    "baseline_scores",
    "lm_arrays",
    "load_probe",
    "load_reference",
    "predictions_from_logits",
    "probe_from_table",
    "read_predictions",
    "reliance_arrays",
    "score",
    "score_arrays",
    "score_file",
    "score_probe",
    "score_reference",
    "vocab_size",
    "write_predictions",
]
