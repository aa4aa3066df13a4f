"""Scoring POSGEN predictions: metrics, prediction files, baselines and model inputs.

>>> import numpy as np
>>> from posgen.spec import TaskSpec
>>> from posgen.generator import generate_split
>>> spec = TaskSpec(task="semirecursive", train_size=20, val_size=5, test_size=5)
>>> test = generate_split(spec, "test")
>>> score(test, baseline_predictions("oracle", spec, test), spec).summary()
{'id_accuracy': 1.0, 'ood_accuracy': 1.0}

On a probe split, :func:`score_probe` reports far-reliance (the oracle follows the far rule):

>>> from posgen.probe import probe_rows
>>> from posgen.store.formats import probe_schema, probe_table
>>> probe = probe_from_table(probe_table(probe_rows(spec, "probe", 0, 5), probe_schema(17)), spec)
>>> score_probe(probe, baseline_predictions("oracle", spec, probe.tokens)).overall.far_reliance
1.0
"""

from posgen.scoring.baselines import (
    BASELINES,
    PROBE_BASELINES,
    baseline_predictions,
    baseline_scores,
    folder_baseline,
)
from posgen.scoring.errors import ScoringError
from posgen.scoring.folder import load_probe, load_reference, score_file, score_reference
from posgen.scoring.lm_inputs import (
    IGNORE_INDEX,
    LMInputs,
    lm_arrays,
    predictions_from_logits,
    vocab_size,
)
from posgen.scoring.metrics import ScoreReport, score, score_arrays
from posgen.scoring.prediction_files import (
    Predictions,
    align_to_ids,
    read_predictions,
    write_predictions,
)
from posgen.scoring.reliance import RelianceReport, reliance_arrays, score_probe
from posgen.store.dataset import ProbeSplit, ReferenceSplit, probe_from_table

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
    "folder_baseline",
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
