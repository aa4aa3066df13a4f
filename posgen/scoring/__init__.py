"""Scoring POSGEN predictions: metrics, prediction files, baselines and model inputs.

>>> import numpy as np
>>> from posgen.spec import TaskSpec
>>> from posgen.generator import generate_split
>>> spec = TaskSpec(task="semirecursive", train_size=20, val_size=5, test_size=5)
>>> test = generate_split(spec, "test")
>>> score(test, baseline_predictions("oracle", spec, test), spec).summary()
{'id_accuracy': 1.0, 'ood_accuracy': 1.0}
"""

from posgen.scoring.baselines import (
    BASELINES,
    baseline_predictions,
    baseline_scores,
    folder_baseline,
)
from posgen.scoring.errors import ScoringError
from posgen.scoring.folder import score_file, score_reference
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
from posgen.scoring.reference import ReferenceSplit, load_reference

__all__ = [
    "BASELINES",
    "IGNORE_INDEX",
    "LMInputs",
    "Predictions",
    "ReferenceSplit",
    "ScoreReport",
    "ScoringError",
    "align_to_ids",
    "baseline_predictions",
    "baseline_scores",
    "folder_baseline",
    "lm_arrays",
    "load_reference",
    "predictions_from_logits",
    "read_predictions",
    "score",
    "score_arrays",
    "score_file",
    "score_reference",
    "vocab_size",
    "write_predictions",
]
