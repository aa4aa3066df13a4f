"""posgen: the POSGEN benchmark (Resonance RoPE, Wang et al. 2024) as reproducible datasets.

Specs (:class:`TaskSpec`, :class:`BenchmarkSpec`, :func:`register_task`, :func:`register_op`
of an :class:`Op`), rows in memory (:func:`generate_split`, :func:`to_dataset_dict`), datasets
on disk (:func:`write_dataset`, :func:`load`, :class:`Dataset`, :func:`read_manifest`), metrics
(:func:`score`) and trained models (:func:`load_model`, the ``train`` extra), each imported on
first use.

>>> from posgen import TaskSpec, generate_split
>>> generate_split(TaskSpec(task="recursive", seeding="paper", train_size=1,
...                         train_length=8), "train").tolist()
[[0, 1, 2, 3, 6, 12, 6, 10]]
"""

from __future__ import annotations

from functools import partial
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and editors; at run time through __getattr__
    from posgen.encodings.model import load_model as load_model
    from posgen.generator import generate_rows as generate_rows
    from posgen.generator import generate_split as generate_split
    from posgen.generator import grow as grow
    from posgen.spec import BenchmarkSpec as BenchmarkSpec
    from posgen.spec import TaskSpec as TaskSpec
    from posgen.store import read_manifest as read_manifest
    from posgen.store.dataset import Dataset as Dataset
    from posgen.store.dataset import load as load
    from posgen.store.formats import to_dataset_dict as to_dataset_dict
    from posgen.store.writer import write_dataset as write_dataset
    from posgen.tasks import TASKS as TASKS
    from posgen.tasks import Op as Op
    from posgen.tasks import dependencies as dependencies
    from posgen.tasks import far_start as far_start
    from posgen.tasks import register_op as register_op
    from posgen.tasks import register_task as register_task

__version__ = "0.1.0"

_LAZY = {
    name: module
    for module, names in {
        "posgen.generator": ("generate_rows", "generate_split", "grow"),
        "posgen.spec": ("BenchmarkSpec", "TaskSpec"),
        "posgen.tasks": (
            "TASKS",
            "Op",
            "dependencies",
            "far_start",
            "register_op",
            "register_task",
        ),
        "posgen.store": ("read_manifest",),
        "posgen.store.dataset": ("Dataset", "load"),
        "posgen.store.formats": ("to_dataset_dict",),
        "posgen.scoring": ("score", "score_file"),
        "posgen.encodings.model": ("load_model",),
    }.items()
    for name in names
}

__all__ = ["__version__", "write_dataset", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "write_dataset":  # finished by the card by default
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
