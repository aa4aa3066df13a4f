"""Reference baselines: train stock ``transformers`` models on POSGEN (``posgen[train]``).

:mod:`posgen.train.config` (presets, grids), :mod:`posgen.train.run_record`,
:mod:`posgen.train.results` and :mod:`posgen.train.sweep` need no torch;
:mod:`posgen.train.trainer` (the loop) and :mod:`posgen.train.job` (one training job) import
it when a run starts.
"""

TRAIN_HINT = "training needs the train extra: pip install 'posgen[train]'"
