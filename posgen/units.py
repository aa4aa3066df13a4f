"""Sizes and durations as people read them, for the lines the commands print.

>>> human_bytes(8_064_000), human_seconds(9000)
('7.7 MiB', '2.5 h')
"""

from __future__ import annotations


def human_bytes(size: float) -> str:
    """``1536`` -> ``'1.5 KiB'``.

    >>> human_bytes(3_456_000), human_bytes(12)
    ('3.3 MiB', '12 B')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_seconds(seconds: float) -> str:
    """``9000`` -> ``'2.5 h'``.

    >>> human_seconds(90), human_seconds(600)
    ('90 s', '10 min')
    """
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
