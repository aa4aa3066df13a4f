"""The reference results table (``make results`` writes ``reference_results.json``, keyed by
data folder name) in the official data cards, shown only when every config's spec id matches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from posgen.card.facts import table
from posgen.encodings import pe_order
from posgen.errors import mean_std_cell
from posgen.store.manifest import Manifest

RESULTS_FILE = Path(__file__).with_name("reference_results.json")

HEADER = [
    "config",
    "position embedding",
    "n",
    "ID accuracy",
    "OOD accuracy",
    "ID far-reliance",
    "OOD far-reliance",
]


def load_results(path: Path = RESULTS_FILE) -> dict[str, Any]:
    """The committed results, or ``{}`` when there are none."""
    return json.loads(path.read_text()) if path.is_file() else {}


def matching_entry(manifest: Manifest, results: dict[str, Any]) -> dict[str, Any] | None:
    """``results``' entry for the manifest's benchmark, or None when it has none or its spec
    ids differ from the manifest's (a different benchmark under the same name)."""
    entry = results.get(manifest.benchmark.name)
    spec_ids = {name: config.spec_id for name, config in manifest.configs.items()}
    if not entry or entry.get("spec_ids") != spec_ids:
        return None
    return entry


def results_section(manifest: Manifest, results: dict[str, Any] | None = None) -> str:
    """The benchmark's reference results, one row per config and position embedding, or
    ``""`` (no entry for the benchmark, or other spec ids)."""
    entry = matching_entry(manifest, load_results() if results is None else results)
    if entry is None:
        return ""
    rows = [
        [
            task,
            pe,
            c["n"],
            mean_std_cell(c["id_mean"], c["id_std"]),
            mean_std_cell(c["ood_mean"], c["ood_std"]),
            mean_std_cell(c.get("far_id_mean"), c.get("far_id_std")),
            mean_std_cell(c.get("far_ood_mean"), c.get("far_ood_std")),
        ]
        for task, pes in entry["tasks"].items()
        for pe in sorted(pes, key=pe_order)
        for c in [pes[pe]]
    ]
    return "\n".join(
        [
            "## Reference results",
            "",
            "Stock `transformers` Llama models trained from scratch on this data with the "
            "paper's four position embeddings (`make results` in the posgen repository: cpu "
            "preset, test split, mean ± std over n seeds; see its RESULTS.md). Far-reliance: "
            "share of the probe split's probed targets predicted as the far-rule answer "
            "(see the probe splits above; - where not measured).",
            "",
            table(HEADER, rows),
        ]
    )
