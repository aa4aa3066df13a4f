"""Card sections on using the data: loading, scoring, regenerating, seeding, citing.

The regenerate section embeds the exact benchmark spec as JSON and the sha256 of every
file, so ``posgen generate`` in a fresh folder can be checked byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

from posgen.card.markdown import code, table
from posgen.spec import TaskSpec
from posgen.store.manifest import Manifest

SPEC_FILE = "spec.json"
SPEC_END = "SPEC"
SUMS_END = "SUMS"

CITATION = """\
@inproceedings{wang2024resonance,
  title     = {Resonance {RoPE}: Improving Context Length Generalization of Large Language Models},
  author    = {Wang, Suyuchen and Kobyzev, Ivan and Lu, Peng and Rezagholizadeh, Mehdi and
               Liu, Bang},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2024},
  year      = {2024},
  url       = {https://arxiv.org/abs/2403.00071}
}"""

PAPER_SEEDING = """\
Configs with `paper` seeding reproduce the authors' public code row for row: seed windows are
`itertools.combinations(range(m), w)` in order, cycled when exhausted; train = rows
[0, train_size), validation = rows [0, val_size), test = rows [val_size, val_size + test_size)
of that list. This is faithful, and flawed: every validation row begins with a training row,
and train repeats windows once the C(m, w) combinations are used up (C(17, 4) = 2,380, so
10,000 train rows repeat each window about four times)."""

DISJOINT_SEEDING = """\
Configs with `disjoint` seeding differ from the authors' code in the seed windows only (the
tasks, h, lengths and sizes are the same): windows are drawn from all of Z_m^w (not only sorted
combinations) through a keyed pseudorandom permutation (a Feistel network keyed by
`SeedSequence(seed, task)`), so no window repeats inside a split and none is shared between
splits; each split owns its own range of permutation indices (test first, then validation,
extra test lengths, train last), so test does not change when train_size does. Rows therefore
differ from the paper's, and validation/test rows no longer begin with training rows."""


def load_section(manifest: Manifest) -> str:
    """How to load a config, in memory or streaming."""
    first = next(iter(manifest.configs))
    names = ", ".join(f"`{name}`" for name in manifest.configs)
    if manifest.storage_format == "arrow":
        snippet = f"""\
from datasets import load_from_disk

# Arrow IPC (save_to_disk) folders, one per config, memory-mapped
ds = load_from_disk("path/to/this/folder/{first}")
ds["train"][0]["tokens"]  # seed window + generated tokens"""
        configs = f"Configs: {names}; splits and row lengths are in the split table."
        return "\n".join(["## How to load it", "", configs, "", code(snippet, "python")])
    snippet = f"""\
from datasets import load_dataset

# a local folder or the Hub repo id; one config per task
ds = load_dataset("path/to/this/folder", "{first}")
ds["train"][0]["tokens"]  # seed window + generated tokens
stream = load_dataset("path/to/this/folder", "{first}", split="test", streaming=True)
next(iter(stream))["id"]  # 0"""
    configs = f"Configs: {names}; splits and row lengths are in the split table."
    return "\n".join(["## How to load it", "", configs, "", code(snippet, "python")])


def score_section(manifest: Manifest, baselines: dict[str, Any] | None) -> str:
    """Teacher-forced accuracy on [w, L) and [L, L'), and baselines when given."""
    spec = next(iter(manifest.configs.values())).spec
    w, boundary = spec.window, spec.train_length
    first = next(iter(manifest.configs))
    if manifest.storage_format == "arrow":
        loader = "load_from_disk"
        test = f'load_from_disk("path/to/this/folder/{first}")["test"]'
    else:
        loader = "load_dataset"
        test = f'load_dataset("path/to/this/folder", "{first}", split="test")'
    snippet = f"""\
import numpy as np
from datasets import {loader}

test = {test}.with_format("numpy")
tokens = np.stack(test["tokens"])  # (rows, L')
# pred[:, t] = the model's argmax for x_t given the true prefix x_0 .. x_(t-1)
pred = model_argmax(tokens)
w, L = {w}, {boundary}  # seed window and OOD boundary (split table)
hit = pred == tokens
id_accuracy = hit[:, w:L].mean()  # in distribution: positions [w, L)
ood_accuracy = hit[:, L:].mean()  # out of distribution: positions [L, L')"""
    parts = [
        "## How to score a model",
        "",
        "Teacher-forced next-token accuracy: the model reads the true prefix x_0 .. x_{t-1} and "
        "its argmax at position t is compared with x_t. Report it separately for positions "
        "[w, L) (in distribution) and [L, L') (out of distribution) of the test split(s); the "
        "seed window is never scored. Take w and L of each config from the split table.",
        "",
        code(snippet, "python"),
    ]
    if baselines:
        rows = [
            [config, kind, scores["id_accuracy"], scores["ood_accuracy"]]
            for config, kinds in baselines.items()
            for kind, scores in kinds.items()
        ]
        parts += [
            "",
            "Baselines on the test split (from `posgen.scoring.baseline_scores`):",
            "",
            table(["config", "baseline", "ID accuracy [w, L)", "OOD accuracy [L, L')"], rows),
        ]
    return "\n".join(parts)


def spec_json(manifest: Manifest) -> str:
    """The benchmark spec as the JSON file ``posgen generate --spec`` reads."""
    return json.dumps(manifest.bench.canonical(), indent=2)


def checksum_lines(manifest: Manifest) -> str:
    """``sha256sum --check`` input for every data file."""
    return "\n".join(f"{item.sha256}  {item.path}" for _, _, item in manifest.files())


def regenerate_section(manifest: Manifest) -> str:
    """The exact commands that rebuild the folder and check it byte for byte."""
    libraries = manifest.libraries
    pins = [f'"posgen=={manifest.posgen_version}"']
    parquet = manifest.storage_format == "parquet"
    storage = "" if parquet else f" --format {manifest.storage_format}"
    kind = "Parquet" if parquet else "Arrow IPC"
    pins += [f'"{name}=={version}"' for name, version in sorted(libraries.items())]
    script = "\n".join(
        [
            f"pip install {' '.join(pins)}",
            f"cat > {SPEC_FILE} <<'{SPEC_END}'",
            spec_json(manifest),
            SPEC_END,
            f"posgen generate --spec {SPEC_FILE} --out regenerated{storage}",
            f"cd regenerated && sha256sum --check <<'{SUMS_END}'",
            checksum_lines(manifest),
            SUMS_END,
        ]
    )
    return "\n".join(
        [
            "## How to regenerate it byte for byte",
            "",
            f"Generated by posgen {manifest.posgen_version}. The {kind} bytes depend on the "
            f"spec, the posgen version and the {kind} writer (pyarrow) version only: same "
            "versions, same files. `posgen validate regenerated` then recomputes every target.",
            "",
            code(script, "bash"),
        ]
    )


def seeding_section(specs: list[TaskSpec]) -> str:
    """How the seed windows of ``specs`` relate to the authors' original code."""
    seedings = {spec.seeding for spec in specs}
    parts = ["## Seeding and the authors' original code", ""]
    if "disjoint" in seedings:
        parts.append(DISJOINT_SEEDING)
    if "paper" in seedings:
        parts += ["", PAPER_SEEDING] if len(parts) > 2 else [PAPER_SEEDING]
    return "\n".join(parts)


def citation_section() -> str:
    """BibTeX of the Resonance RoPE paper, which introduced POSGEN."""
    return "\n".join(["## Citation", "", code(CITATION, "bibtex")])
