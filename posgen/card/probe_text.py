"""The card's section on the counterfactual probe splits (:mod:`posgen.probe`)."""

from __future__ import annotations

import numpy as np

from posgen.card.markdown import code, table
from posgen.probe import probe_plan
from posgen.spec import TaskSpec, probe_config, probe_source
from posgen.store.manifest import Manifest

INTRO = """\
Each config's probe splits (`probe` from `test`, `probe_<L'>` from `test_<L'>`) hold, in row i,
test row i with some far operands replaced by another token; nothing after them is
recomputed. In cot the question x_0 .. x_{j-1} is replaced; in the other tasks single tokens
are, spaced so that a *probed* target has a far operand replaced and none of its near
operands. Columns: `id`, `tokens`, `source_id` (the test row's id), `replaced` and `probed`
(positions), and `far_rule` (at each probed position, h of the operands as stored). At a
probed position the *far-rule answer* is what the task's rule says; the *local answer* is the
stored token, unaltered, which a rule that never reads the far operand predicts.
*Far-reliance* is the share of probed targets (where the two answers differ) on which a
model's prediction equals the far-rule answer; *local-reliance* the share equal to the local
answer. The probe splits form the `datasets` config `<config>-probe` (their columns differ
from the other splits')."""


HEADER = ["config", "split", "made from", "probed ID targets", "probed OOD targets"]


def probed_counts(spec: TaskSpec, split: str, rows: int) -> tuple[int, int]:
    """Probed targets of ``split`` at ID positions ``[w, L)`` and OOD positions ``[L, L')``.

    >>> probed_counts(TaskSpec(task="cot"), "probe", 10)
    (600, 1920)
    """
    length = spec.split_length(split)
    period = max(1, length - spec.window)  # row i has offset i mod period
    id_count = ood_count = 0
    for offset in range(min(rows, period)):
        many = len(range(offset, rows, period))
        probed = probe_plan(spec, length, offset).probed
        inside = int(np.count_nonzero(probed < spec.train_length))
        id_count += many * inside
        ood_count += many * (probed.size - inside)
    return id_count, ood_count


def probe_section(manifest: Manifest) -> str:
    """What a probe row is, how many targets each split probes, and how to score them."""
    rows = []
    for name, entry in manifest.configs.items():
        for split in entry.spec.probe_names:
            info = entry.splits[split]
            id_count, ood_count = probed_counts(entry.spec, split, info.rows)
            rows.append([probe_config(name), split, probe_source(split), id_count, ood_count])
    first = next(iter(manifest.configs))
    snippet = f"""\
posgen score --data path/to/this/folder --config {first} --split probe \\
    --predictions probe_predictions.parquet"""
    return "\n".join(
        [
            "## Probe splits: does a model read the far operand?",
            "",
            INTRO,
            "",
            table(HEADER, rows),
            "",
            "Predict the probe split (teacher-forced, as for test) and score it:",
            "",
            code(snippet, "bash"),
        ]
    )
