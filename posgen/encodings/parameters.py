"""The type and range of every position-encoding parameter, as data (no torch here).

A key of transformers' ``rope_parameters`` means the same in every encoding (:data:`PARAMETERS`);
:data:`BY_ENCODING` holds one encoding's own or narrower ones and :data:`RELATIONS` what two
parameters must satisfy together. Any other parameter (a plugin's) must be plain, finite JSON.

>>> check_parameters("yarn", {"factor": True})
Traceback (most recent call last):
...
ValueError: --pe yarn --pe-param factor=true: use a number, not true or false
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from posgen.errors import shown

Kind = Literal["number", "integer", "choice", "boolean", "numbers"]
"""``numbers``: a number or a list of numbers (longrope's per-pair factors)."""

MAX_LIST = 4096
"""Longest list a parameter may hold (one value per rotary pair: head dimensions are smaller)."""


@dataclass(frozen=True)
class Parameter:
    """One parameter's type and bounds (``ge``/``gt``/``le`` apply to every number)."""

    kind: Kind
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    why: str = ""
    """Why the bounds, said after a refusal."""

    def check(self, value: Any) -> Any:
        """``value`` as the run uses it (integers as floats for numbers), else ValueError."""
        if self.kind == "boolean":
            if not isinstance(value, bool):
                raise ValueError("use true or false")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"use one of {', '.join(self.choices)}")
            return value
        if self.kind == "numbers" and isinstance(value, list):
            if not 1 <= len(value) <= MAX_LIST:
                raise ValueError(f"use a number or a list of 1 to {MAX_LIST} numbers")
            return [self._number(item) for item in value]
        return self._number(value)

    def _number(self, value: Any) -> float | int:
        if isinstance(value, bool):
            raise ValueError("use a number, not true or false")
        if self.kind == "integer":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise ValueError("use a whole number")
        elif not isinstance(value, int | float):
            raise ValueError("use a number")
        if isinstance(value, int) and abs(value) > 2**53:
            raise ValueError("use a number of at most 2^53 (9,007,199,254,740,992)")
        if not math.isfinite(value):
            raise ValueError("use a finite number")
        number = value if self.kind == "integer" else float(value)
        because = f" ({self.why})" if self.why else ""
        if self.gt is not None and not number > self.gt:
            raise ValueError(f"must be greater than {_shown(self.gt)}{because}")
        if self.ge is not None and not number >= self.ge:
            raise ValueError(f"must be at least {_shown(self.ge)}{because}")
        if self.le is not None and not number <= self.le:
            raise ValueError(f"must be at most {_shown(self.le)}{because}")
        return number


def _shown(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


PARAMETERS: dict[str, Parameter] = {
    "rope_theta": Parameter(
        "number", gt=1.0, le=1e12, why="the base must exceed 1 for wavelengths to grow"
    ),
    "factor": Parameter("number", ge=0.01, le=10_000.0),
    "original_max_position_embeddings": Parameter("integer", ge=1, le=10**8),
    "beta_fast": Parameter("number", gt=0.0, le=10_000.0),
    "beta_slow": Parameter("number", gt=0.0, le=10_000.0),
    "attention_factor": Parameter("number", gt=0.0, le=100.0),
    "mscale": Parameter("number", ge=0.0, le=100.0),
    "mscale_all_dim": Parameter("number", ge=0.0, le=100.0),
    "truncate": Parameter("boolean"),
    "low_freq_factor": Parameter("number", gt=0.0, le=10_000.0),
    "high_freq_factor": Parameter("number", gt=0.0, le=10_000.0),
    "partial_rotary_factor": Parameter("number", ge=0.0, le=1.0, why="a share of the pairs"),
    "short_factor": Parameter("numbers", ge=0.01, le=10_000.0),
    "long_factor": Parameter("numbers", ge=0.01, le=10_000.0),
    "scale_at": Parameter("choice", choices=("evaluation", "train")),
}
"""transformers' rope parameters (and posgen's ``scale_at``): one type and range each."""

YARN_FACTOR = Parameter("number", ge=1.0, le=10_000.0, why="YaRN only extends the context")
POSITIVE = Parameter("number", gt=0.0)
BY_ENCODING: dict[str, dict[str, Parameter]] = {
    "yarn": {"factor": YARN_FACTOR},
    "resonance_yarn": {"factor": YARN_FACTOR},
    "t5": {
        "buckets": Parameter("integer", ge=2, le=4096),
        "max_distance": Parameter("integer", ge=2, le=10**7),
    },
    "fire": {"width": Parameter("integer", ge=1, le=4096), "c": POSITIVE, "threshold": POSITIVE},
    "xpos": {"gamma": POSITIVE, "scale_base": POSITIVE},
    "cope": {"positions": Parameter("integer", ge=2, le=1_000_000)},
    "logn": {"train_positions": Parameter("integer", ge=2, le=10**8)},
    "nope": {  # only their defaults: another value would be the same model, or not NoPE
        "partial_rotary_factor": Parameter(
            "number", ge=0.0, le=0.0, why="NoPE rotates no pair; a share of them is proportional"
        ),
        "rope_theta": Parameter(
            "number", ge=10_000.0, le=10_000.0, why="NoPE rotates nothing, so the base is unused"
        ),
    },
}
"""One encoding's own parameters, or narrower ranges; ``A+logn`` has those of A and logn."""
BY_ENCODING["fire-random"] = BY_ENCODING["fire"]

RELATIONS = [
    ("low_freq_factor", "high_freq_factor", False),
    ("beta_slow", "beta_fast", False),
    ("buckets", "max_distance", True),
]
"""``(low, high, halved)``: ``high`` must be greater than ``low`` (``low // 2`` when halved),
checked on every value, defaults included, when both are present."""


def spelled(value: Any) -> str:
    """A value as on the command line (JSON, text as it is), bounded."""
    try:
        text = value if isinstance(value, str) else json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):  # no JSON (a tensor, a set), an int past the digit limit
        text = f"<a {type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is plain, finite JSON (a plugin's own parameter)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list) and depth < 4:
        return len(value) <= MAX_LIST and all(_plain(item, depth + 1) for item in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= 2**53  # exact in every JSON reader
    return value is None or isinstance(value, bool | str)


def check_parameters(encoding: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``parameters`` of ``encoding`` checked against the tables, numbers as floats; a
    ValueError names the first bad one.

    >>> check_parameters("linear", {"factor": 2})
    {'factor': 2.0}
    """
    types = dict(PARAMETERS)
    for part in encoding.split("+"):
        types.update(BY_ENCODING.get(part, {}))
    out = {}
    for key, value in parameters.items():
        kind = types.get(key) if isinstance(key, str) else None
        try:
            if not isinstance(key, str):
                raise ValueError(f"a parameter's name is text, not {shown(repr(key), 40)}")
            if kind is not None:
                out[key] = kind.check(value)
            elif _plain(value):
                out[key] = value
            else:
                raise ValueError(
                    "use a finite number (integers up to 2^53), text, true/false or a list of them"
                )
        except ValueError as error:
            raise ValueError(
                f"--pe {encoding} --pe-param {key}={spelled(value)}: {error}"
            ) from None
    return out


YARN_MSCALE = ("mscale", "mscale_all_dim")
"""transformers' YaRN reads these only as a pair, both above 0 and without ``attention_factor``
(then the factor is ``mscale(s, mscale) / mscale(s, mscale_all_dim)``); alone, they change
nothing."""


def check_relations(parameters: Mapping[str, Any]) -> None:
    """Every relation whose parameters ``parameters`` (defaults included) hold.

    >>> try:
    ...     check_relations({"factor": 4.0, "mscale": 2.0})
    ... except ValueError as error:
    ...     print(str(error)[-61:])
    (transformers' YaRN ignores them otherwise; given mscale=2.0)
    """
    given = [name for name in (*YARN_MSCALE, "attention_factor") if name in parameters]
    if any(name in parameters for name in YARN_MSCALE) and (
        "attention_factor" in parameters
        or not all(_above_zero(parameters.get(name)) for name in YARN_MSCALE)
    ):
        values = ", ".join(f"{name}={spelled(parameters[name])}" for name in given)
        raise ValueError(
            "mscale and mscale_all_dim act only together, both above 0, without "
            f"attention_factor (transformers' YaRN ignores them otherwise; given {values})"
        )
    for low, high, halved in RELATIONS:
        if not all(isinstance(parameters.get(name), int | float) for name in (low, high)):
            continue
        bound = parameters[low] // 2 if halved else parameters[low]
        if not parameters[high] > bound:
            given = f"{low}={spelled(parameters[low])}, {high}={spelled(parameters[high])}"
            rule = f"{high} must be greater than {low}" + (" // 2" if halved else "")
            raise ValueError(f"{rule} (given {given})")


def _above_zero(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0
