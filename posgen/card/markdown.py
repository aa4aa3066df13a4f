"""Small, deterministic Markdown helpers shared by the card sections.

>>> print(table(["task", "w"], [["cot", 4]]))
| task | w |
|---|---|
| cot | 4 |
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def cell(value: Any) -> str:
    """One table cell: pipes escaped, floats with 4 decimals, ints with thousands commas.

    >>> cell(10000), cell(0.25), cell("a|b"), cell(None)
    ('10,000', '0.2500', 'a\\\\|b', '-')
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def code(text: str, language: str = "") -> str:
    """A fenced code block."""
    return f"```{language}\n{text.rstrip()}\n```"
