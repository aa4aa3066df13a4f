"""Sizes, durations and table cells as people read them, for what the commands print.

>>> human_bytes(8_064_000), human_seconds(9000)
('7.7 MiB', '2.5 h')
>>> mean_std_cell(0.5, 0.1), mean_std_cell(1.0, None), mean_std_cell(None, None)
('0.500 ± 0.100', '1.000', '-')
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


def mean_std_cell(mean: float | None, std: float | None) -> str:
    """A result table's cell: mean ± std to 3 decimals, the mean alone without a std, ``-``
    without a mean."""
    if mean is None:
        return "-"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
