"""Reference baselines: train stock ``transformers`` models on POSGEN (``posgen[train]``).

:mod:`posgen.train.config` (presets, grids), :mod:`posgen.train.run_record`,
:mod:`posgen.train.results` and :mod:`posgen.train.sweep` need no torch;
:mod:`posgen.train.trainer` (the loop) and :mod:`posgen.train.job` (one training job) import
it when a run starts. A run folder's layout is named here, where the command line's output
checks read it without loading the record's models.
"""

import os
from pathlib import Path

TRAIN_HINT = "training needs the train extra: pip install 'posgen[train]'"

RESULTS = "results.json"
METRICS = "metrics.jsonl"
PREDICTIONS = "predictions.parquet"
PROBE_PREDICTIONS = "probe_predictions.parquet"
FILES = (RESULTS, METRICS, PREDICTIONS, PROBE_PREDICTIONS)
"""What a finished run folder holds (and ``model/`` with ``--save-model``)."""
MODEL = "model"
"""The subfolder ``--save-model`` writes the model into."""


def is_run(path: Path) -> bool:
    """Whether ``path`` is a finished run folder (it has its record; a damaged one is read,
    and refused, by :func:`posgen.train.run_record.read_run`)."""
    return os.path.lexists(Path(path) / RESULTS)
