"""Turn validation failures into short lines a person can act on.

>>> from pydantic import ValidationError
>>> from posgen.spec import TaskSpec
>>> try:
...     TaskSpec(task="cot", modulus=1)
... except ValidationError as error:
...     print(problem_lines(error)[0])
modulus: Input should be greater than or equal to 2 (given: 1)
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "spec"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def problem_lines(error: ValidationError) -> list[str]:
    """One line per problem: ``field.path: message (given: value)``."""
    lines = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        given = item.get("input")
        line = f"{_location(item['loc'])}: {message}"
        if item["type"] not in ("missing",) and not isinstance(given, dict):
            line += f" (given: {_shown(given)})"
        lines.append(" ".join(line.split()))
    return lines
