"""Reference baselines: train stock ``transformers`` models on POSGEN (``posgen[train]``).

:mod:`posgen.train.config` (presets) and :mod:`posgen.train.results` (aggregation) need no
torch; :mod:`posgen.train.rope` and :mod:`posgen.train.trainer` need the ``train`` extra.
"""

TRAIN_HINT = "training needs the train extra: pip install 'posgen[train]'"
