"""Reference baselines: train stock ``transformers`` models on POSGEN (``posgen[train]``).

:mod:`posgen.train.config` (presets) and :mod:`posgen.train.results` (aggregation) need no
torch; :mod:`posgen.train.trainer` and the encodings' :mod:`posgen.encodings.model` need the
``train`` extra.
"""

TRAIN_HINT = "training needs the train extra: pip install 'posgen[train]'"
