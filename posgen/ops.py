"""Generation functions h: how the operands of a position become its token.

An op combines the far operands (shape ``(far, rows)``) and the near operands
(shape ``(near, rows)``) of one position into the token of that position for every
row. The paper's op is modular addition:

>>> import numpy as np
>>> MOD_ADDITION.combine(np.array([[1]]), np.array([[3], [6], [11]]), 17).tolist()
[4]

Ops are registered once by name; a spec picks one with ``op = "<name>"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Op:
    """A generation function h over Z_m.

    ``combine(far, near, m)`` returns ``h`` for every row. ``additive`` marks ops equal
    to (sum of all operands) mod m, which the generator computes with running sums.
    """

    name: str
    description: str
    combine: Callable[[np.ndarray, np.ndarray, int], np.ndarray]
    additive: bool = False


def _mod_addition(far: np.ndarray, near: np.ndarray, modulus: int) -> np.ndarray:
    total = far.sum(axis=0, dtype=np.int64) + near.sum(axis=0, dtype=np.int64)
    return total % modulus


MOD_ADDITION = Op(
    name="mod_addition",
    description="(sum of far operands + sum of near operands) mod m",
    combine=_mod_addition,
    additive=True,
)

_OPS: dict[str, Op] = {}


def register_op(op: Op) -> None:
    """Register an op; each name can be registered once only."""
    if op.name in _OPS:
        raise ValueError(f"op {op.name!r} is already registered")
    _OPS[op.name] = op


def get_op(name: str) -> Op:
    """The registered op called ``name``."""
    try:
        return _OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; known: {', '.join(sorted(_OPS))}") from None


def op_names() -> tuple[str, ...]:
    """Names of the registered ops."""
    return tuple(_OPS)


register_op(MOD_ADDITION)
