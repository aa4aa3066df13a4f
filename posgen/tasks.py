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

## Ops

The generation functions h (ops): the w operands of a position (far first) to a token of Z_m.

Kinds, each with a fast path in :mod:`posgen.generator`: ``additive``, ``sum`` (a table of
the unreduced sum S), ``tuple`` (``keyed_hash``) and keyed permutations (``perm``, ``slot``,
``select``).

>>> import numpy as np
>>> MOD_ADDITION.apply(np.array([[1], [3], [6], [11]]), 17).tolist()
[4]
>>> sum_table("pow_sin", 17, 4)[:6].tolist()  # floor(sin(S)^2 * 17), S = 0..5
[0, 12, 14, 0, 9, 15]
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import math
import operator
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

import numpy as np

from posgen.errors import UsageError, shown

TASK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # it names configs, folders, spec fields

FarStartRule = Callable[[np.ndarray, int], np.ndarray]  # (positions t >= w, w) -> far starts

_RULES: dict[str, FarStartRule] = {}
_REGISTRANTS: dict[str, str] = {}
"""``"task NAME"`` and ``"op NAME"``: the module whose code called ``register_task`` or
``register_op`` (what a card's recipe names: not the module of the rule or formula, which
can be ``functools`` for a partial, nor none for an op without a formula)."""


def _registrant() -> str:
    """The module of the code that called the ``register_*`` function calling this."""
    name = sys._getframe(2).f_globals.get("__name__")
    return name if isinstance(name, str) else ""


TASK_MODULES = "POSGEN_TASKS"
"""The environment variable naming (comma-separated) modules that register tasks or ops: the
registries import them before their first answer, so the ``posgen`` command and its sweep
workers know those tasks (``POSGEN_TASKS=mytask PYTHONPATH=. posgen generate --task NAME``)."""

_imports: list[str | TaskError] = []  # "importing", then "done", or the failure and TASK_MODULES


class TaskError(UsageError, ValueError):
    """A task that cannot be registered, or whose rule fails or breaks its contract when used."""


def register_task(name: str, rule: FarStartRule) -> None:
    """Register a task's far-start rule, keeping ``0 <= s <= t - w``; usable at once everywhere."""
    if not isinstance(name, str) or not TASK_NAME.match(name):
        raise TaskError(f"task name {shown(repr(name))} must match {TASK_NAME.pattern}")
    if name in _RULES:
        raise TaskError(f"task {name!r} is already registered")
    if not callable(rule):
        raise TaskError(f"task {name!r}: its rule must be callable as rule(t, w), not {rule!r}")
    _RULES[name] = rule
    _REGISTRANTS[f"task {name}"] = _registrant()


def import_task_modules() -> None:
    """Import the modules named in ``$POSGEN_TASKS`` once (a failure: :class:`TaskError`,
    raised again at the next use while the variable names the same modules)."""
    named = os.environ.get(TASK_MODULES, "")
    if _imports and isinstance(_imports[0], TaskError) and _imports[1:] != [named]:
        _imports.clear()  # other modules named since: imported anew
    if _imports:  # done, or being imported: a module reading the registry sees it as it is
        if isinstance(_imports[0], TaskError):  # what it registered before failing stays
            raise TaskError(str(_imports[0])) from None
        return
    _imports.append("importing")
    try:
        for module in named.split(","):
            if module.strip():
                _import(module.strip())
    except TaskError as error:
        _imports[:] = [error, named]
        raise
    except BaseException:
        _imports.clear()
        raise
    _imports[:] = ["done"]


def _import(module: str) -> None:
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout is a command's (--json -)
            importlib.import_module(module)
    except (Exception, SystemExit) as error:
        said = shown(f"{type(error).__name__}: {error}", 300)
        missing = getattr(error, "name", None) if isinstance(error, ModuleNotFoundError) else None
        hint = ""
        if missing is not None and missing == module.partition(".")[0]:
            hint = f"; put its folder on PYTHONPATH (PYTHONPATH=. for ./{missing}.py) or install it"
        raise TaskError(
            f"{TASK_MODULES}: cannot import {shown(module, 100)} ({said}){hint}"
        ) from None


class _Registered(Sequence[str]):
    """The registered task names, in registration order, always current.

    >>> "cot" in TASKS, TASKS[0], len(TASKS) >= 3
    (True, 'recursive', True)
    """

    def __getitem__(self, index):  # type: ignore[override]
        import_task_modules()
        return tuple(_RULES)[index]

    def __len__(self) -> int:
        import_task_modules()
        return len(_RULES)

    def __contains__(self, name: object) -> bool:
        import_task_modules()
        return name in _RULES

    def __repr__(self) -> str:
        return repr(tuple(self))


def expected_names() -> str:
    """The registered names as a validation message spells them: ``'a', 'b' or 'c'``."""
    import_task_modules()
    quoted = [f"'{name}'" for name in _RULES]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


register_task("recursive", lambda t, w: t - w)
register_task("cot", lambda t, w: np.zeros_like(t))
register_task("semirecursive", lambda t, w: (t - w) // 2)
_BUILTIN_TASKS = frozenset(_RULES)

TASKS: Sequence[str] = _Registered()


def far_start(task: str, t: np.ndarray | int, near: int, far: int) -> np.ndarray:
    """First far position feeding each position ``t``.

    >>> far_start("recursive", np.array([4, 5, 6]), near=3, far=1).tolist()
    [0, 1, 2]
    """
    for name, value, low in (("near", near, 1), ("far", far, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise TaskError(f"{name} = {shown(repr(value), 40)}: use an integer >= {low}")
    given = np.asarray(t)
    if given.dtype.kind not in "iu" or (given.size and int(given.max()) >= 2**62):
        raise TaskError(
            f"t = {shown(repr(t), 60)}: use a position or an array of positions (integers "
            "below 2^62)"
        )
    positions = given.astype(np.int64)
    window = near + far
    if np.any(positions < window):
        raise TaskError(f"positions below the seed window ({window}) have no dependencies")
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(_RULES)}")
    try:
        given = np.asarray(_RULES[task](positions.copy(), window))
    except (Exception, SystemExit) as error:
        reason = f"{type(error).__name__}: {shown(str(error)) or '(no message)'}"
        raise TaskError(f"task {task!r}: its rule raised {reason}") from error
    if given.shape != positions.shape or given.dtype.kind not in "iuf":
        raise TaskError(
            f"task {task!r}: its rule gives {given.dtype} values of shape {given.shape} for "
            f"positions of shape {positions.shape}; a rule gives one integer far start per position"
        )
    with np.errstate(invalid="ignore"):
        starts = given.astype(np.int64)
        bad = (given != starts) | (starts < 0) | (starts > positions - window)
    if np.any(bad):
        at = int(np.argmax(bad))
        raise TaskError(
            f"task {task!r}: its rule gives far start {given.reshape(-1)[at : at + 1].tolist()} "
            f"for t = {int(positions.reshape(-1)[at])}; a rule keeps 0 <= s <= t - w (w = {window})"
        )
    return starts


def dependencies(task: str, t: int, near: int, far: int) -> np.ndarray:
    """The positions feeding ``t``: far ones first, then near ones.

    >>> dependencies("cot", t=9, near=3, far=2).tolist()
    [0, 1, 6, 7, 8]
    """
    start = int(far_start(task, t, near, far))
    return np.concatenate([np.arange(start, start + far), np.arange(t - near, t)]).astype(np.int64)


def dependency_matrix(
    task: str, length: int, near: int, far: int, first: int | None = None
) -> np.ndarray:
    """Row ``i``: the far, then the near positions feeding ``w + i`` (from ``first`` when
    given: a block of the rows, ``length`` its end).

    >>> dependency_matrix("recursive", 6, near=3, far=1).tolist()
    [[0, 1, 2, 3], [1, 2, 3, 4]]
    """
    window = near + far
    t = np.arange(window if first is None else max(first, window), length, dtype=np.int64)
    starts = far_start(task, t, near, far) if t.size else t
    far_pos = starts[:, None] + np.arange(far, dtype=np.int64)[None, :]
    near_pos = t[:, None] - near + np.arange(near, dtype=np.int64)[None, :]
    return np.concatenate([far_pos, near_pos], axis=1)


MAX_SUM_TABLE = 1 << 21  # largest sum table (w(m-1) + 1 entries) of a ``sum`` op (~0.5 s)
HASH_TABLE_MAX = 1 << 22  # tuple spaces m^w up to this size are hashed once into a table
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

Kind = Literal["additive", "sum", "tuple", "perm", "slot", "select"]


@dataclass(frozen=True)
class Op:
    """A generation function h over Z_m; ``value(S, m)``: a ``sum`` op's formula."""

    name: str
    description: str
    kind: Kind
    value: Callable[[int, int], int] | None = None
    keyed: bool = False

    @property
    def additive(self) -> bool:
        return self.kind == "additive"

    @property
    def permutes(self) -> bool:
        """Draws a permutation of Z_m per far value (``far_perm``, ``slot_perm``, ...)."""
        return self.kind in ("perm", "slot", "select")

    def apply(
        self, operands: Sequence[np.ndarray], modulus: int, key: int = 0, far: int = 0
    ) -> np.ndarray:
        """h of every tuple: ``operands[i]`` holds operand i (the first ``far`` are far)."""
        if self.permutes:
            perm = {"perm": far_perm, "slot": slot_perm, "select": select_perm}[self.kind]
            return perm(operands[:far], operands[far:], modulus, key)
        if self.kind == "tuple":
            return keyed_hash(operands, modulus, key)
        narrow = len(operands) * (modulus - 1) < 2**31  # int32 sums: several times faster
        dtype = np.int32 if narrow else np.int64
        if isinstance(operands, np.ndarray):  # one block of them: one sum, not w numpy calls
            total = operands.sum(axis=0, dtype=dtype)
        else:
            total = np.zeros(np.shape(operands[0]), dtype=dtype)
            for column in operands:
                total += column
        if self.kind == "additive":
            return (total % modulus).astype(np.int64)
        return sum_table(self.name, modulus, len(operands))[total].astype(np.int64)

    def slow(self, modulus: int, window: int) -> bool:
        """Far below the generator's usual rate at (m, w): the op permutes, or hashes more
        tuples than a table holds.

        >>> get_op("far_perm").slow(17, 2), get_op("keyed_hash").slow(17, 2)
        (True, False)
        """
        return self.permutes or (self.kind == "tuple" and modulus**window > HASH_TABLE_MAX)

    def problem(self, modulus: int, window: int) -> str | None:
        """Why this op cannot run at (m, w), or None: a table too large or leaving Z_m."""
        if self.permutes and modulus * modulus > PERM_TABLE_MAX:
            return (
                f"op {self.name} draws a permutation of Z_m per far value; at most "
                f"m = {math.isqrt(PERM_TABLE_MAX)} (m^2 = {PERM_TABLE_MAX:,} table entries)"
            )
        if self.kind != "sum":
            return None
        size = window * (modulus - 1) + 1
        if size > MAX_SUM_TABLE:
            return (
                f"op {self.name} tabulates w(m-1)+1 = {size:,} sums; at most {MAX_SUM_TABLE:,} "
                "(lower modulus, near or far)"
            )
        try:
            table = sum_table(self.name, modulus, window)
        except OpError as error:
            return str(error)
        outside = np.flatnonzero((table >= modulus) | (table < 0))
        if outside.size:
            return (
                f"op {self.name} gives {int(table[outside[0]])} for the operand sum "
                f"{int(outside[0])}, outside Z_{modulus} (choose another modulus)"
            )
        return None


def _pow_sin(total: int, modulus: int) -> int:
    # the authors' atom_arithmetic: floor(pow(sin(sum(far) + sum(near)), 2) * m)
    return math.floor(math.pow(math.sin(total), 2) * modulus)


def _pow_sin_2pi(total: int, modulus: int) -> int:
    s = total % modulus
    return math.floor(abs(math.sin(2 * math.pi * s / modulus)) * modulus)


def _square_sum(total: int, modulus: int) -> int:
    return total * total % modulus


@lru_cache(maxsize=64)
def sum_table(name: str, modulus: int, window: int) -> np.ndarray:
    """``f(S)`` for every operand sum S in [0, w(m-1)] (read-only).

    >>> sum_table("pow_sin_2pi", 8, 1).tolist()  # s = 2: |sin(pi/2)| * 8 = 8, outside Z_8
    [0, 5, 8, 5, 0, 5, 8, 5]
    """
    op = get_op(name)
    size = window * (modulus - 1) + 1
    table = np.fromiter((_value(op, s, modulus) for s in range(size)), dtype=np.int64, count=size)
    table.flags.writeable = False
    return table


class OpError(UsageError, ValueError):
    """An op that cannot be registered, or whose formula fails or gives no integer when used."""


def _value(op: Op, total: int, modulus: int) -> int:
    """``op.value(total, modulus)``, an integer of the int64 range, or :class:`OpError`."""
    try:
        value = op.value(total, modulus)  # type: ignore[misc]
    except (Exception, SystemExit) as error:
        reason = f"{type(error).__name__}: {shown(str(error)) or '(no message)'}"
        raise OpError(
            f"op {op.name}'s formula raised {reason} for the operand sum {total}"
        ) from error
    try:
        value = operator.index(value)
    except TypeError:
        shown_value = shown(repr(value), 60)
        raise OpError(
            f"op {op.name} gives {shown_value} for the operand sum {total}, not an integer"
        ) from None
    if not -(2**63) <= value < 2**63:
        raise OpError(
            f"op {op.name} gives {value} for the operand sum {total}, outside Z_{modulus}"
        )
    return value


def hash_key(key: int) -> np.uint64:
    """The 64-bit key of ``op_key``: sha256 of a fixed text."""
    digest = hashlib.sha256(f"posgen keyed_hash {key}".encode()).digest()
    return np.uint64(int.from_bytes(digest[:8], "little"))


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, the package's one mix of uint64 values.

    >>> int(mix64(np.uint64(1)))
    6238072747940578789
    """
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64)
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


_M1_INVERSE, _M2_INVERSE = (np.uint64(pow(int(m), -1, 2**64)) for m in (_M1, _M2))


def unmix64(y: np.ndarray) -> np.ndarray:
    """The inverse of :func:`mix64`.

    >>> int(unmix64(mix64(np.uint64(12345))))
    12345
    """
    with np.errstate(over="ignore"):
        y = np.asarray(y, dtype=np.uint64)
        y = (y ^ (y >> np.uint64(31)) ^ (y >> np.uint64(62))) * _M2_INVERSE
        y = (y ^ (y >> np.uint64(27)) ^ (y >> np.uint64(54))) * _M1_INVERSE
        return y ^ (y >> np.uint64(30)) ^ (y >> np.uint64(60))


def chunk_size(modulus: int) -> int:
    """Most operands packed exactly into one uint64 word: largest c with m^c <= 2^64.

    >>> chunk_size(17), chunk_size(65536), chunk_size(2)
    (15, 4, 64)
    """
    c = 1
    while modulus ** (c + 1) <= 2**64:
        c += 1
    return c


def keyed_state(operands: Sequence[np.ndarray] | np.ndarray, modulus: int, key: int) -> np.ndarray:
    """The 64-bit state of :func:`keyed_hash` after absorbing ``operands`` (uint64 array):
    a list of arrays, or one ``(w, ...)`` array, whose words are packed in a few numpy calls."""
    window, step = len(operands), chunk_size(modulus)
    stacked = isinstance(operands, np.ndarray)
    shape = operands.shape[1:] if stacked else np.shape(operands[0]) if window else (0,)
    # m^(step-1) .. m^0 mod 2^64: Horner's packing of a word, as a weighted sum
    weights = np.array([modulus**i % 2**64 for i in range(step - 1, -1, -1)], dtype=np.uint64)
    weights = weights.reshape(-1, *[1] * len(shape))
    state = np.full(shape, hash_key(key), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for first in range(0, max(window, 1), step):
            count = min(window, first + step) - first
            if stacked:
                block = operands[first : first + count].astype(np.uint64)
                word = (block * weights[step - count :]).sum(axis=0, dtype=np.uint64)
            else:
                word = np.zeros(shape, dtype=np.uint64)
                for i in range(first, first + count):
                    word *= np.uint64(modulus)
                    word += np.asarray(operands[i]).astype(np.uint64)
            state = mix64(state ^ word)
    return state


def keyed_hash(operands: Sequence[np.ndarray], modulus: int, key: int) -> np.ndarray:
    """Keyed hash of each ordered operand tuple: the operands packed base m into words of
    :func:`chunk_size`, ``state = mix64(state ^ word)`` per word, token ``(state >> 32) * m >> 32``.

    >>> keyed_hash(np.array([[1, 2], [2, 1]]), 17, key=0).tolist()  # order matters
    [13, 9]
    """
    return _token(keyed_state(operands, modulus, key), modulus)


def _token(state: np.ndarray, modulus: int) -> np.ndarray:
    return ((state >> np.uint64(32)) * np.uint64(modulus)) >> np.uint64(32)  # < 2^49: exact


def _code_states(count: int, key: int) -> np.ndarray:
    """:func:`keyed_state` of the one-word tuples with base-m codes ``0 .. count-1``."""
    return mix64(np.full(count, hash_key(key), dtype=np.uint64) ^ np.arange(count, dtype=np.uint64))


@lru_cache(maxsize=16)
def hash_table(modulus: int, window: int, key: int) -> np.ndarray | None:
    """:func:`keyed_hash` of every tuple, indexed by its base-m code (None above the cap).

    >>> int(hash_table(17, 2, 0)[1 * 17 + 2]) == int(keyed_hash(np.array([[1], [2]]), 17, 0)[0])
    True
    """
    if modulus**window > HASH_TABLE_MAX:
        return None
    return _tokens(_token(_code_states(modulus**window, key), modulus), modulus)


def _tokens(table: np.ndarray, modulus: int) -> np.ndarray:
    """``table`` as read-only tokens of the storage type."""
    out = table.astype(np.uint8 if modulus <= 256 else np.uint16)
    out.flags.writeable = False
    return out


def permutations(states: np.ndarray, modulus: int) -> np.ndarray:
    """The permutation pi of each far state ``(n, m)``: Z_m sorted by ``mix64(state ^ s)``.

    >>> states = keyed_state([np.array([0, 5])], 17, key=0)
    >>> sorted(permutations(states, 17)[1].tolist()) == list(range(17))
    True
    """
    states = np.asarray(states, dtype=np.uint64)
    return (unmix64(_sorted_keys(states, modulus)) ^ states[:, None]).astype(np.int64)


def _sorted_keys(states: np.ndarray, modulus: int) -> np.ndarray:
    """``mix64(state ^ s)`` for s in Z_m, sorted, per state ``(n, m)``. The keys are distinct
    (mix64 is a bijection), so ``unmix64(key) ^ state`` gives back the s of each: sorting the
    values then inverting the few needed is several times faster than an argsort."""
    return np.sort(mix64(states[:, None] ^ np.arange(modulus, dtype=np.uint64)), axis=1)


def far_perm(
    far_operands: Sequence[np.ndarray], near_operands: Sequence[np.ndarray], modulus: int, key: int
) -> np.ndarray:
    """pi_F((sum of near operands) mod m), pi_F the permutation of the far tuple F's state.

    >>> far = [np.array([3, 3, 4])]
    >>> near = [np.array([1, 0, 1]), np.array([2, 3, 2])]  # near sums 3, 3, 3
    >>> out = far_perm(far, near, 17, key=0).tolist()
    >>> out[0] == out[1], out[0] == int(perm_table(17, 1, 0)[3, 3])
    (True, True)
    """
    shape = np.shape(near_operands[0])
    total = _near_sum(near_operands, modulus)
    far = [np.broadcast_to(np.asarray(operand), shape) for operand in far_operands]
    if far:
        states = keyed_state(far, modulus, key)
    else:  # no far operand: one empty word, as the keyed hash absorbs for an empty tuple
        states = np.full(shape, mix64(np.array([hash_key(key)], dtype=np.uint64))[0])
    unique, inverse = np.unique(states.reshape(-1), return_inverse=True)
    inverse, total = inverse.reshape(-1), total.reshape(-1)
    step = max(1, PERM_BLOCK // modulus)  # permutations built at once: memory bounded
    if unique.size <= step:
        keys = _sorted_keys(unique, modulus)[inverse, total]
    else:
        keys = np.empty(inverse.size, dtype=np.uint64)
        order = np.argsort(inverse, kind="stable")
        edges = np.searchsorted(inverse[order], np.arange(0, unique.size + step, step))
        for block, first in enumerate(range(0, unique.size, step)):
            at = order[edges[block] : edges[block + 1]]
            rows = _sorted_keys(unique[first : first + step], modulus)
            keys[at] = rows[inverse[at] - first, total[at]]
    # pi_F(total): the s whose key is the total-th smallest
    return (unmix64(keys) ^ unique[inverse]).astype(np.int64).reshape(shape)


def _near_sum(near_operands: Sequence[np.ndarray], modulus: int) -> np.ndarray:
    total = np.zeros(np.shape(near_operands[0]), dtype=np.int64)
    for operand in near_operands:
        total += np.asarray(operand, dtype=np.int64)
    return total % modulus


PERM_TABLE_MAX = 1 << 22  # largest far_perm table (m^j permutations of m tokens) built
PERM_BLOCK = 1 << 22  # entries of the far states' permutations far_perm builds at once


@lru_cache(maxsize=16)
def perm_table(modulus: int, far: int, key: int) -> np.ndarray | None:
    """All of far_perm's permutations, row F = pi_F (None above :data:`PERM_TABLE_MAX`).

    >>> int(perm_table(17, 1, 0)[3, 5]) == int(far_perm([np.array([3])], [np.array([5])], 17, 0)[0])
    True
    """
    if modulus**far * modulus > PERM_TABLE_MAX:
        return None
    return _tokens(permutations(_code_states(modulus**far, key), modulus), modulus)


def slot_perm(
    far_operands: Sequence[np.ndarray], near_operands: Sequence[np.ndarray], modulus: int, key: int
) -> np.ndarray:
    """(sum over i of pi_{f_(i mod j)}(n_i)) mod m, pi_v row v of :func:`perm_table`.

    >>> pi = perm_table(17, 1, 0).tolist()  # row v: pi_v
    >>> f, n = [np.array([2]), np.array([5])], [np.array([1]), np.array([7]), np.array([3])]
    >>> int(slot_perm(f, n, 17, 0)[0]) == (pi[2][1] + pi[5][7] + pi[2][3]) % 17
    True
    """
    table = perm_table(modulus, 1, key)  # never None: Op.problem caps m * m
    shape = np.shape(near_operands[0])
    total = np.zeros(shape, dtype=np.int64)
    for i, operand in enumerate(near_operands):
        f = far_operands[i % len(far_operands)] if len(far_operands) else np.zeros(shape, np.int64)
        f = np.broadcast_to(np.asarray(f, dtype=np.int64), shape)
        total += table[f, np.asarray(operand, dtype=np.int64)]
    return total % modulus


def select_perm(
    far_operands: Sequence[np.ndarray], near_operands: Sequence[np.ndarray], modulus: int, key: int
) -> np.ndarray:
    """pi_{f_c}((sum of near operands) mod m), c = (last near operand) mod j.

    >>> pi = perm_table(17, 1, 0).tolist()
    >>> f = [np.array([4]), np.array([9])]
    >>> n = [np.array([2]), np.array([6]), np.array([3])]  # 3 mod 2 = 1: f_1 = 9 keys it
    >>> int(select_perm(f, n, 17, 0)[0]) == pi[9][11]
    True
    """
    shape = np.shape(near_operands[0])
    total = _near_sum(near_operands, modulus)
    if len(far_operands):
        stacked = np.stack(
            [np.broadcast_to(np.asarray(f, dtype=np.int64), shape) for f in far_operands]
        )
        choice = np.asarray(near_operands[-1], dtype=np.int64) % len(far_operands)
        chosen = np.take_along_axis(stacked, choice[None, ...], axis=0)[0]
    else:
        chosen = np.zeros(shape, dtype=np.int64)
    return perm_table(modulus, 1, key)[chosen, total].astype(np.int64)


MOD_ADDITION = Op(
    name="mod_addition",
    description="(sum of far operands + sum of near operands) mod m",
    kind="additive",
)

_OPS: dict[str, Op] = {}
_BUILTIN_OPS: frozenset[str] = frozenset()  # set once the built-ins below are registered


def register_op(op: Op) -> None:
    """Register an op; each name can be registered once only."""
    if not isinstance(op.name, str) or not op.name.isprintable() or not 1 <= len(op.name) <= 64:
        raise OpError(f"op name {op.name!r}: 1 to 64 printable characters (a spec's op field)")
    if op.kind not in get_args(Kind):
        raise OpError(f"op {op.name!r}: kind {op.kind!r} is not one of {', '.join(get_args(Kind))}")
    text = op.description
    if not isinstance(text, str) or not text.isprintable() or len(text) > 300 or "`" in text:
        raise OpError(  # the card quotes it in a code block
            f"op {op.name!r}: its description is one printable line of at most 300 characters, "
            "without backticks"
        )
    if op.name in _OPS:
        raise OpError(f"op {op.name!r} is already registered")
    if op.kind == "sum" and not callable(op.value):
        raise OpError(f"sum op {op.name!r} needs its value formula, value(S, m), not {op.value!r}")
    if op.kind != "sum" and (op.value is not None or _BUILTIN_OPS):  # the kind's data
        raise OpError(
            f"op {op.name!r}: an op of your own is a sum op (a formula of S); a {op.kind} op is "
            "computed by posgen's own kernel for that kind, the data of its built-in op"
        )
    _OPS[op.name] = op
    _REGISTRANTS[f"op {op.name}"] = _registrant()


def get_op(name: str) -> Op:
    import_task_modules()
    try:
        return _OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; known: {', '.join(sorted(_OPS))}") from None


def op_names() -> tuple[str, ...]:
    import_task_modules()
    return tuple(_OPS)


for _op in (
    MOD_ADDITION,
    Op(
        "pow_sin",
        "floor(sin(S)^2 * m), S = unreduced sum of the operands in radians (the authors' op)",
        "sum",
        _pow_sin,
    ),
    Op(
        "pow_sin_2pi",
        "floor(|sin(2 pi s / m)| * m), s = (sum of the operands) mod m (the authors' op)",
        "sum",
        _pow_sin_2pi,
    ),
    Op("square_sum", "S^2 mod m, S = sum of the operands", "sum", _square_sum),
    Op(
        "keyed_hash",
        "keyed hash of the ordered operand tuple (far then near), uniform on Z_m, key op_key",
        "tuple",
        keyed=True,
    ),
    Op(
        "far_perm",
        "pi_F((sum of near operands) mod m): a keyed random permutation of Z_m per far tuple F",
        "perm",
        keyed=True,
    ),
    Op(
        "slot_perm",
        "(sum over near slots i of pi_{f_(i mod j)}(n_i)) mod m: each far token keys the "
        "permutation of its near slots (the permutations of far_perm)",
        "slot",
        keyed=True,
    ),
    Op(
        "select_perm",
        "pi_{f_c}((sum of near operands) mod m), c = (last near operand) mod j: the last near "
        "token selects the far token that keys the permutation (far_perm's permutations)",
        "select",
        keyed=True,
    ),
):
    register_op(_op)
_BUILTIN_OPS = frozenset(_OPS)


def registrant(kind: Literal["task", "op"], name: str) -> str | None:
    """The module that registered the task or op ``name``: None for posgen's own, ``""`` when
    posgen cannot tell (a script's ``__main__``).

    >>> registrant("task", "cot"), registrant("op", "square_sum")
    (None, None)
    """
    if name in (_BUILTIN_TASKS if kind == "task" else _BUILTIN_OPS):
        return None
    module = _REGISTRANTS.get(f"{kind} {name}", "")
    return "" if module == "__main__" else module
