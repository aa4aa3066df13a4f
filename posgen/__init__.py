"""posgen: the POSGEN benchmark (Resonance RoPE, Wang et al. 2024) as reproducible datasets.

>>> from posgen import TaskSpec, generate_split
>>> generate_split(TaskSpec(task="recursive", seeding="paper", train_size=1,
...                         train_length=8), "train").tolist()
[[0, 1, 2, 3, 6, 12, 6, 10]]
"""

from posgen.generator import generate_rows, generate_split, grow
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.tasks import TASKS, dependencies, far_start

__version__ = "0.1.0"

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
]
