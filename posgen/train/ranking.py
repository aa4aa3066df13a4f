"""Compare position encodings: ranking by OOD accuracy, effective length, CSV (no torch).

The cells are :func:`posgen.train.results.aggregate`'s (data folder x task x PE, mean and
sample std over seeds). Per task, PEs are ranked by mean OOD accuracy (ties: by name).

*Effective length*: the largest position t such that the seed-pooled test accuracy at every
scored position from s up to t is at least ``EFFECTIVE_FRACTION`` x the cell's mean ID
accuracy (0.9 x ID), where s is the first scored position that reaches it. Positions before
s are skipped: on POSGEN the first targets can sit at chance for every model (at t = w no
transition is visible yet, so a rule read from near tokens cannot apply), and counting them
would give ``-`` to every PE. It is L - 1 or more when accuracy holds through the ID range,
and ``-`` when no position reaches the threshold.

>>> effective_length([4, 5, 6, 7], [0.9, 0.95, 0.7, 0.99], 0.8)
5
>>> effective_length([4, 5, 6, 7], [0.06, 0.9, 0.95, 0.5], 0.8)  # t = w at chance: skipped
6
>>> effective_length([4, 5], [0.5, 0.7], 0.8) is None
True
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

from posgen.errors import mean_std_cell

EFFECTIVE_FRACTION = 0.9
"""Effective length threshold, as a fraction of the cell's ID accuracy."""

CSV_COLUMNS = (
    "data",
    "task",
    "pe",
    "rank",
    "n",
    "seeds",
    "ood_mean",
    "ood_std",
    "id_mean",
    "id_std",
    "effective_length",
    "when",
    "confound",
    "far_id_mean",
    "far_id_std",
    "far_ood_mean",
    "far_ood_std",
)


def effective_length(
    positions: Sequence[int], accuracy: Sequence[float], threshold: float
) -> int | None:
    """The last position of the first run of positions with accuracy >= ``threshold``."""
    last = None
    for position, value in zip(positions, accuracy, strict=True):
        if value is None or math.isnan(value) or value < threshold:
            if last is not None:
                break
            continue
        last = position
    return last


def ranked(pes: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``(pe, cell)`` by mean OOD accuracy, best first (cells without OOD last)."""

    def key(item: tuple[str, dict[str, Any]]) -> tuple[float, str]:
        ood = item[1]["ood_mean"]
        return (-(ood if ood is not None else -1.0), item[0])

    return sorted(pes.items(), key=key)


def ranking_lines(results: dict[str, Any]) -> list[str]:
    """Markdown: per data folder and task, the PEs ranked by OOD accuracy."""
    lines = [
        "## Position encodings ranked by OOD accuracy",
        "",
        f"Mean ± sample std over n seeds. Effective length: the largest position up to which "
        f"the test accuracy stays at or above {EFFECTIVE_FRACTION} x the PE's ID accuracy "
        "at every position from the first one that reaches it. When: train-time PEs use the "
        "same rope in training and evaluation; evaluation-time PEs train unscaled.",
        "",
    ]
    for data, entry in results.items():
        for task, pes in entry["tasks"].items():
            lines += [
                f"### {data} / {task} (L = {entry['ood_boundary']}, L' = {entry['length']})",
                "",
                "| rank | PE | n | OOD accuracy | ID accuracy | effective length | when |",
                "|---|---|---|---|---|---|---|",
            ]
            for rank, (pe, cell) in enumerate(ranked(pes), 1):
                length = cell.get("effective_length")
                lines.append(
                    f"| {rank} | {pe} | {cell['n']} | "
                    f"{mean_std_cell(cell['ood_mean'], cell['ood_std'])} | "
                    f"{mean_std_cell(cell['id_mean'], cell['id_std'])} | "
                    f"{'-' if length is None else length} | {cell.get('when') or '-'} |"
                )
            confounds = [
                f"{pe}: {cell['confound']}" for pe, cell in pes.items() if cell.get("confound")
            ]
            if confounds:
                lines += ["", "Not the Llama block: " + "; ".join(confounds) + "."]
            lines.append("")
    return lines


def csv_text(results: dict[str, Any]) -> str:
    """One CSV row per (data, task, pe) cell, ranked within each task."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for data, entry in results.items():
        for task, pes in entry["tasks"].items():
            for rank, (pe, cell) in enumerate(ranked(pes), 1):
                values = {"data": data, "task": task, "pe": pe, "rank": rank, **cell}
                values["seeds"] = " ".join(map(str, cell["seeds"]))
                writer.writerow(["" if values.get(c) is None else values[c] for c in CSV_COLUMNS])
    return out.getvalue()
