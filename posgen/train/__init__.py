"""Reference baselines: train stock ``transformers`` models on POSGEN (``posgen[train]``).

Torch is imported only when a run starts (:mod:`~posgen.train.trainer`). A run folder's
layout is named here, for checks that need no record models.
"""

import os
from pathlib import Path

TRAIN_HINT = "training needs the train extra: pip install 'posgen[train]'"

RESULTS = "results.json"
METRICS = "metrics.jsonl"
PREDICTIONS = "predictions.parquet"
PROBE_PREDICTIONS = "probe_predictions.parquet"
FILES = (RESULTS, METRICS, PREDICTIONS, PROBE_PREDICTIONS)  # a finished run folder's files
MODEL = "model"  # the subfolder --save-model writes the model into


def is_run(path: Path) -> bool:
    """Whether ``path`` is a finished run folder (it has its record, perhaps damaged)."""
    return os.path.lexists(Path(path) / RESULTS)
