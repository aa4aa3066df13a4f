"""What each task of a benchmark measures, said in one sentence from trained models' probe figures.

A task's OOD accuracy only measures a far dependency surviving unseen positions if trained
models read the far operand. The counterfactual probe (:mod:`posgen.probe`) says whether they
do: far-reliance is the share of probed targets predicted as the far-rule answer. This module
turns the aggregated figures of ``posgen results --json`` (one cell per data folder, task and
position encoding) into one plain sentence per task, for the cards, RESULTS.md and docs/tasks.md.

``make probe-check`` writes :data:`MEASURES_FILE`; a card shows the sentences only when every
config's spec id matches the one the models were trained on.

>>> cell = {"n": 1, "id_mean": 0.984, "ood_mean": 0.44, "far_id_mean": 0.001,
...         "far_ood_mean": 0.035}
>>> print(measure_sentence("posgen-v1", "cot", "rope", cell))
cot on posgen-v1 measures whether a local rule keeps working at unseen positions: models \
trained with rope do not read the far operand (far-reliance 0.001 ID, 0.035 OOD; accuracy \
0.984 ID, 0.440 OOD; n = 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posgen.card.reference_results import load_results, matching_entry
from posgen.store.manifest import Manifest

MEASURES_FILE = Path(__file__).with_name("probe_check.json")
READS_FAR = 0.8
"""Far-reliance (ID) at which a task counts as read long-range (issue bar: 0.8)."""
PARTLY_READS_FAR = 0.2
"""Far-reliance (ID) above which a model counts as reading the far operand in part."""
LEARNT = 0.2
"""ID accuracy under which a task counts as not learnt at the budget the figures come from."""
REFERENCE_PE = "rope"
"""The position encoding whose runs the sentences quote (the others train the same weights or
are compared in RESULTS.md)."""


def measure_sentence(name: str, task: str, pe: str, cell: dict[str, Any]) -> str:
    """One sentence: what ``task`` on benchmark ``name`` measures, from ``pe``'s figures."""
    far_id, far_ood = cell.get("far_id_mean"), cell.get("far_ood_mean")
    accuracy_id, accuracy_ood = cell["id_mean"], cell["ood_mean"]
    figures = (
        f"(far-reliance {far_id:.3f} ID, {far_ood:.3f} OOD; accuracy {accuracy_id:.3f} ID, "
        f"{accuracy_ood:.3f} OOD; n = {cell['n']})"
        if far_id is not None and far_ood is not None
        else f"(accuracy {accuracy_id:.3f} ID, {accuracy_ood:.3f} OOD; n = {cell['n']})"
    )
    if far_id is None or far_ood is None:
        verdict = "has no probe figures yet, so what it measures is not established"
    elif far_id >= READS_FAR:
        verdict = (
            f"measures a far dependency at unseen positions: models trained with {pe} read the "
            "far operand in distribution"
        )
    elif accuracy_id < LEARNT:
        verdict = (
            f"measures little at this training budget: models trained with {pe} do not learn it"
        )
    elif far_id >= PARTLY_READS_FAR:
        verdict = (
            f"measures a mix of a local rule and a far read: models trained with {pe} read the "
            "far operand only in part"
        )
    else:
        verdict = (
            "measures whether a local rule keeps working at unseen positions: models trained "
            f"with {pe} do not read the far operand"
        )
    return f"{task} on {name} {verdict} {figures}."


def load_measures(path: Path = MEASURES_FILE) -> dict[str, Any]:
    """The committed probe-check figures, or ``{}`` when there are none."""
    return load_results(path)


def measure_sentences(name: str, entry: dict[str, Any], pe: str = REFERENCE_PE) -> list[str]:
    """A sentence for every task of one data folder's aggregate that has ``pe``'s runs."""
    return [
        measure_sentence(name, task, pe, pes[pe])
        for task, pes in entry.get("tasks", {}).items()
        if pe in pes
    ]


def measures_section(manifest: Manifest, measures: dict[str, Any] | None = None) -> str:
    """The card's "What each task measures" section, or ``""`` (no figures, other spec ids)."""
    entry = matching_entry(manifest, load_measures() if measures is None else measures)
    if entry is None:
        return ""
    sentences = measure_sentences(manifest.benchmark.name, entry)
    if not sentences:
        return ""
    return "\n".join(
        [
            "## What each task measures",
            "",
            "From the counterfactual probe (`make probe-check` in the posgen repository: cpu "
            "preset, one seed, each model scored on the probe split). Far-reliance near 1 means "
            "the model reads the far operand; near 0, it predicts from near tokens alone.",
            "",
            *[f"- {sentence}" for sentence in sentences],
            "",
        ]
    )
