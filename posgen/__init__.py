"""posgen: the POSGEN benchmark (Resonance RoPE, Wang et al. 2024) as reproducible datasets.

The entry points the README uses, importable from ``posgen`` directly:

- specs: :class:`TaskSpec`, :class:`BenchmarkSpec`, :func:`register_task`;
- rows in memory: :func:`generate_split`, :func:`generate_rows`, :func:`to_dataset_dict`;
- datasets on disk: :func:`write_dataset`, :func:`load`, :func:`read_manifest`;
- metrics: :func:`score`, :func:`score_file` (the validator: ``from posgen.validate import
  validate``; ``posgen.validate`` is its subpackage).

>>> from posgen import TaskSpec, generate_split
>>> generate_split(TaskSpec(task="recursive", seeding="paper", train_size=1,
...                         train_length=8), "train").tolist()
[[0, 1, 2, 3, 6, 12, 6, 10]]
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from posgen.generator import generate_rows, generate_split, grow
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.tasks import TASKS, dependencies, far_start, register_task

__version__ = "0.1.0"

_LAZY = {
    "write_dataset": "posgen.store",
    "read_manifest": "posgen.store",
    "load": "posgen.hf",
    "to_dataset_dict": "posgen.hf",
    "score": "posgen.scoring",
    "score_file": "posgen.scoring",
}
"""Entry points imported on first use (they pull in pyarrow, datasets or the validator)."""

__all__ = [
    "TASKS",
    "BenchmarkSpec",
    "TaskSpec",
    "__version__",
    "dependencies",
    "far_start",
    "generate_rows",
    "generate_split",
    "grow",
    "register_task",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'posgen' has no attribute {name!r}")
