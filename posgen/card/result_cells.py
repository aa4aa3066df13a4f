"""How result tables order position embeddings and write mean ± std.

Shared by the card's reference table and :mod:`posgen.train` (its results and ranking
tables): the card may not import ``posgen.train``, so the shared piece lives here.

>>> sorted(["yarn", "alibi", "rope"], key=pe_order)
['rope', 'yarn', 'alibi']
>>> mean_std_cell(0.5, 0.1), mean_std_cell(1.0, None), mean_std_cell(None, None)
('0.500 ± 0.100', '1.000', '-')
"""

from __future__ import annotations

PES = ("rope", "resonance", "yarn", "resonance_yarn")
"""The paper's four position embeddings (``--pe``), in table order."""


def pe_order(pe: str) -> tuple[int, str]:
    """Table order: the paper's four first, then by name."""
    return (PES.index(pe), "") if pe in PES else (len(PES), pe)


def mean_std_cell(mean: float | None, std: float | None) -> str:
    """A table cell: mean ± std to 3 decimals, the mean alone without a std, ``-`` without
    a mean."""
    if mean is None:
        return "-"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
