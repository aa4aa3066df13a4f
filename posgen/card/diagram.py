"""Text pictures of which earlier positions feed a target, drawn from the task's rule.

Each line is one target position t: ``F`` marks its far operands, ``n`` its near
operands, ``x`` the target itself, ``.`` positions that do not feed it.

>>> print(dependency_diagram("semirecursive", near=3, far=1, length=14, targets=[4, 13]))
position  0         1
          01234567890123
t = 4     Fnnnx
t = 13    ....F.....nnnx
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from posgen.tasks import dependencies

MAX_DRAWN_WINDOW = 48
"""Windows longer than this are described, not drawn (the lines would not fit)."""


def default_targets(window: int, length: int, count: int = 6) -> list[int]:
    """``count`` targets spread over ``[w, length)``, the first two adjacent.

    >>> default_targets(4, 40)
    [4, 5, 12, 21, 30, 39]
    """
    spread = np.linspace(window, length - 1, count - 1).astype(int).tolist()
    return sorted({window, min(window + 1, length - 1), *spread})


def dependency_diagram(
    task: str, near: int, far: int, length: int, targets: Sequence[int] | None = None
) -> str:
    """The picture of ``task`` over positions ``[0, length)``."""
    window = near + far
    targets = list(targets) if targets is not None else default_targets(window, length)
    label = max(len("position"), *(len(f"t = {t}") for t in targets)) + 2
    tens = "".join(str(p // 10 % 10) if p % 10 == 0 else " " for p in range(length))
    lines = [
        "position".ljust(label) + tens.rstrip(),
        " " * label + "".join(str(p % 10) for p in range(length)),
    ]
    for t in targets:
        marks = ["."] * t + ["x"]
        deps = dependencies(task, t, near, far)
        for p in deps[:far]:
            marks[p] = "F"
        for p in deps[far:]:
            marks[p] = "n"
        lines.append(f"t = {t}".ljust(label) + "".join(marks))
    return "\n".join(line.rstrip() for line in lines)


def diagram_length(window: int, train_length: int) -> int:
    """How many positions to draw: enough to show the far operands drift.

    >>> diagram_length(4, 64), diagram_length(4, 10)
    (40, 10)
    """
    return min(train_length, max(40, window + 24))
