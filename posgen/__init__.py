"""posgen: the POSGEN benchmark (Resonance RoPE, Wang et al. 2024) as reproducible datasets.

Specs (:class:`TaskSpec`, :class:`BenchmarkSpec`, :func:`register_task`), rows in memory
(:func:`generate_split`, :func:`generate_rows`, :func:`to_dataset_dict`), datasets on disk
(:func:`write_dataset`, :func:`load`, :func:`read_manifest`), metrics (:func:`score`,
:func:`score_file`) and trained models (:func:`load_model`, needs the ``train`` extra), all
imported on first use, so ``import posgen`` loads nothing else and the ``posgen`` script
catches signals within milliseconds of starting.

>>> from posgen import TaskSpec, generate_split
>>> generate_split(TaskSpec(task="recursive", seeding="paper", train_size=1,
...                         train_length=8), "train").tolist()
[[0, 1, 2, 3, 6, 12, 6, 10]]
"""

from __future__ import annotations

from functools import partial
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    name: module
    for module, names in {
        "posgen.generator": ("generate_rows", "generate_split", "grow"),
        "posgen.spec": ("BenchmarkSpec", "TaskSpec"),
        "posgen.tasks": ("TASKS", "dependencies", "far_start", "register_task"),
        "posgen.store": ("read_manifest",),
        "posgen.store.dataset": ("load",),
        "posgen.store.formats": ("to_dataset_dict",),
        "posgen.scoring": ("score", "score_file"),
        "posgen.encodings.model": ("load_model",),
    }.items()
    for name in names
}

__all__ = ["__version__", "write_dataset", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "write_dataset":  # the store's one writer, finished by the card by default
        from posgen.card import unvalidated_card
        from posgen.store.writer import write_dataset

        value = partial(write_dataset, finish=unvalidated_card)
        value.__doc__ = write_dataset.__doc__
    elif name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'posgen' has no attribute {name!r}")
    globals()[name] = value
    return value
