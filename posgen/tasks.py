"""The POSGEN tasks: each is one rule, the far start s(t). Every target x_t (t >= w = j + k)
reads the k near positions t-k .. t-1 and the j far positions s .. s+j-1:

=============  ==========================  ====================================
task           far start s(t)              worked example (k=3, j=1, t=6)
=============  ==========================  ====================================
recursive      t - w                       far x_2, near x_3 x_4 x_5
cot            0                           far x_0, near x_3 x_4 x_5
semirecursive  floor((t - w) / 2)          far x_1, near x_3 x_4 x_5
=============  ==========================  ====================================

>>> dependencies("semirecursive", t=6, near=3, far=1).tolist()
[1, 3, 4, 5]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

TASK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # it names configs, folders, spec fields

FarStartRule = Callable[[np.ndarray, int], np.ndarray]  # (positions t >= w, w) -> far starts

_RULES: dict[str, FarStartRule] = {}


def register_task(name: str, rule: FarStartRule) -> None:
    """Register a task's far-start rule, keeping ``0 <= s <= t - w``; usable at once everywhere."""
    if not isinstance(name, str) or not TASK_NAME.match(name):
        raise ValueError(f"task name {name!r} must match {TASK_NAME.pattern}")
    if name in _RULES:
        raise ValueError(f"task {name!r} is already registered")
    _RULES[name] = rule


class _Registered(Sequence[str]):
    """The registered task names, in registration order, always current.

    >>> "cot" in TASKS, TASKS[0], len(TASKS) >= 3
    (True, 'recursive', True)
    """

    def __getitem__(self, index):  # type: ignore[override]
        return tuple(_RULES)[index]

    def __len__(self) -> int:
        return len(_RULES)

    def __contains__(self, name: object) -> bool:
        return name in _RULES

    def __repr__(self) -> str:
        return repr(tuple(self))


def expected_names() -> str:
    """The registered names as a validation message spells them: ``'a', 'b' or 'c'``."""
    quoted = [f"'{name}'" for name in _RULES]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


register_task("recursive", lambda t, w: t - w)
register_task("cot", lambda t, w: np.zeros_like(t))
register_task("semirecursive", lambda t, w: (t - w) // 2)

TASKS: Sequence[str] = _Registered()


def far_start(task: str, t: np.ndarray | int, near: int, far: int) -> np.ndarray:
    """First far position feeding each position ``t``.

    >>> far_start("recursive", np.array([4, 5, 6]), near=3, far=1).tolist()
    [0, 1, 2]
    """
    positions = np.asarray(t, dtype=np.int64)
    window = near + far
    if np.any(positions < window):
        raise ValueError(f"positions below the seed window ({window}) have no dependencies")
    return np.asarray(_RULES[task](positions, window), dtype=np.int64)


def dependencies(task: str, t: int, near: int, far: int) -> np.ndarray:
    """The positions feeding ``t``: far ones first, then near ones.

    >>> dependencies("cot", t=9, near=3, far=2).tolist()
    [0, 1, 6, 7, 8]
    """
    start = int(far_start(task, t, near, far))
    return np.concatenate([np.arange(start, start + far), np.arange(t - near, t)]).astype(np.int64)


def dependency_matrix(task: str, length: int, near: int, far: int) -> np.ndarray:
    """Row ``i``: the far, then the near positions feeding ``w + i``.

    >>> dependency_matrix("recursive", 6, near=3, far=1).tolist()
    [[0, 1, 2, 3], [1, 2, 3, 4]]
    """
    window = near + far
    t = np.arange(window, length, dtype=np.int64)
    starts = far_start(task, t, near, far) if t.size else t
    far_pos = starts[:, None] + np.arange(far, dtype=np.int64)[None, :]
    near_pos = t[:, None] - near + np.arange(near, dtype=np.int64)[None, :]
    return np.concatenate([far_pos, near_pos], axis=1)
