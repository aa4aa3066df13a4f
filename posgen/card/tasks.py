"""Card sections on the tasks: what POSGEN measures, each config's task, its probe splits and
the reference results (``make results`` writes ``reference_results.json``).

The worked example of a config is computed from its spec: the first train row, and the
target ``t = w + 2`` recomputed from its operands, e.g. (cot, m = 17, k = 3, j = 1)
``x_6 = (x_0 + x_3 + x_4 + x_5) mod 17``. A diagram shows which earlier positions feed a
target: ``F`` its far operands, ``n`` its near ones, ``x`` the target, ``.`` the rest.

>>> print(dependency_diagram("semirecursive", near=3, far=1, length=14, targets=[4, 13]))
position  0         1
          01234567890123
t = 4     Fnnnx
t = 13    ....F.....nnnx

What a task measures is one sentence from trained models' far-reliance on the probe splits
(``make probe-check`` writes :data:`MEASURES_FILE`), shown only when every config's spec id
matches the one the models were trained on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from posgen.card.facts import code, section, table
from posgen.encodings import pe_order
from posgen.errors import mean_std_cell
from posgen.generator import generate_rows, probe_plan
from posgen.scoring.reliance import measure_sentences
from posgen.spec import TaskSpec, probe_config, probe_source
from posgen.store.manifest import Manifest
from posgen.tasks import dependencies, get_op

FAR_RULES: dict[str, tuple[str, str]] = {
    "recursive": ("x_{t-w} .. x_{t-k-1} (just before the near ones)", "bounded by w"),
    "cot": ('x_0 .. x_{j-1} (the fixed "question")', "grows like t"),
    "semirecursive": ("x_p .. x_{p+j-1}, p = floor((t - w) / 2)", "grows like t / 2"),
}

MEASURES = """\
## What POSGEN measures, and why

POSGEN (Wang et al., *Resonance RoPE*, ACL Findings 2024) is made for **train-short-test-long
(TSTL)** studies of position embeddings: train on rows of length L, evaluate on length L' > L.
In ordinary long-context tests later tokens are also *harder*, so a failure at long range can
be blamed on the harder tokens or on the unseen positions. POSGEN removes the first cause:
**every generated token is computed by the same function h from the same number (w = j + k)
of earlier tokens, wherever it stands**, so the per-token difficulty is fixed and an accuracy
drop past position L is due to the positions alone.

Notation: tokens x_0, x_1, ... in {0, ..., m-1}; k near operands x_{t-k} .. x_{t-1}; j far
operands placed by the task; w = j + k. The first w tokens of a row are its *seed window*
(given, never scored); every later token is x_t = h(far operands, near operands)."""


def rules_table(manifest: Manifest) -> str:
    """One row per config: its task's far operands and how far back they reach."""
    rows = []
    for name, entry in manifest.configs.items():
        spec = entry.spec
        rule, reach = FAR_RULES.get(spec.task, ("see posgen.tasks", "-"))
        rows.append([name, spec.task, rule, "x_{t-k} .. x_{t-1}", reach])
    return table(["config", "task", "far operands of x_t", "near operands", "far look-back"], rows)


def worked_example(spec: TaskSpec) -> str:
    """The target ``t = w + 2`` of the first train row, recomputed from its operands."""
    w = spec.window
    t = min(w + 2, spec.train_length - 1)
    row = generate_rows(spec, "train", 0, 1)[0].astype(int).tolist()
    deps = dependencies(spec.task, t, spec.near, spec.far).tolist()
    operands = [f"x_{p}" for p in deps]
    values = [row[p] for p in deps]
    op = get_op(spec.op)
    if op.additive:
        result = (
            f"x_{t} = ({' + '.join(operands)}) mod {spec.modulus} "
            f"= ({' + '.join(map(str, values))}) mod {spec.modulus} "
            f"= {sum(values)} mod {spec.modulus} = {row[t]}"
        )
    else:
        result = f"x_{t} = h({', '.join(operands)}) = h({', '.join(map(str, values))}) = {row[t]}"
    return (
        f"seed window x_0..x_{w - 1} = {' '.join(map(str, row[:w]))}; "
        f"x_0..x_{t} = {' '.join(map(str, row[: t + 1]))}\n{result}   ({op.description})"
    )


def config_section(name: str, spec: TaskSpec) -> str:
    """A config's rule, worked example and dependency picture."""
    rule, reach = FAR_RULES.get(spec.task, ("see posgen.tasks", "-"))
    parts = [
        f"### `{name}`: {spec.task} (m = {spec.modulus}, k = {spec.near}, j = {spec.far}, "
        f"w = {spec.window}, h = {spec.op})",
        "",
        f"Far operands: {rule}; near operands: x_{{t-k}} .. x_{{t-1}}; far look-back {reach}.",
        "Worked example (first train row):",
        "",
        code(worked_example(spec), "text"),
        "",
    ]
    if spec.window <= MAX_DRAWN_WINDOW:
        length = diagram_length(spec.window, spec.train_length)
        parts += [
            "Which earlier positions feed a target (F far, n near, x target):",
            "",
            code(dependency_diagram(spec.task, spec.near, spec.far, length), "text"),
        ]
    else:
        parts.append(f"(The window w = {spec.window} is too wide to draw.)")
    return "\n".join(parts)


def tasks_section(manifest: Manifest) -> str:
    """The tasks of this folder: the rules table, then one subsection per config."""
    return section(
        "The tasks",
        "The tasks differ only in *which earlier positions feed position t*:",
        rules_table(manifest),
        *(config_section(name, entry.spec) for name, entry in manifest.configs.items()),
    )


MAX_DRAWN_WINDOW = 48  # windows longer than this are described, not drawn (the lines would not fit)


def default_targets(window: int, length: int, count: int = 6) -> list[int]:
    """``count`` targets spread over ``[w, length)``, the first two adjacent.

    >>> default_targets(4, 40)
    [4, 5, 12, 21, 30, 39]
    """
    spread = np.linspace(window, length - 1, count - 1).astype(int).tolist()
    return sorted({window, min(window + 1, length - 1), *spread})


def dependency_diagram(
    task: str, near: int, far: int, length: int, targets: Sequence[int] | None = None
) -> str:
    """The picture of ``task`` over positions ``[0, length)``."""
    window = near + far
    targets = list(targets) if targets is not None else default_targets(window, length)
    label = max(len("position"), *(len(f"t = {t}") for t in targets)) + 2
    tens = "".join(str(p // 10 % 10) if p % 10 == 0 else " " for p in range(length))
    lines = [
        "position".ljust(label) + tens.rstrip(),
        " " * label + "".join(str(p % 10) for p in range(length)),
    ]
    for t in targets:
        marks = ["."] * t + ["x"]
        deps = dependencies(task, t, near, far)
        for p in deps[:far]:
            marks[p] = "F"
        for p in deps[far:]:
            marks[p] = "n"
        lines.append(f"t = {t}".ljust(label) + "".join(marks))
    return "\n".join(line.rstrip() for line in lines)


def diagram_length(window: int, train_length: int) -> int:
    """How many positions to draw: enough to show the far operands drift.

    >>> diagram_length(4, 64), diagram_length(4, 10)
    (40, 10)
    """
    return min(train_length, max(40, window + 24))


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


PROBE_HEADER = ["config", "split", "made from", "probed ID targets", "probed OOD targets"]


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
    return section(
        "Probe splits: does a model read the far operand?",
        INTRO,
        table(PROBE_HEADER, rows),
        "Predict the probe split (teacher-forced, as for test) and score it:",
        code(snippet, "bash"),
    )


MEASURES_FILE = Path(__file__).with_name("probe_check.json")


def load_measures(path: Path = MEASURES_FILE) -> dict[str, Any]:
    """A committed figures file (the probe check by default), or ``{}`` when there is none."""
    return json.loads(path.read_text()) if path.is_file() else {}


FAR_READ_FILE = Path(__file__).with_name("far_read.json")
"""The far-read search's summary (``make far-read`` writes it from the runs' records)."""


def far_read_sentence(search: dict[str, Any]) -> str:
    """What the search of training recipes found, from its summary (``""`` without one).

    >>> print(far_read_sentence({"runs": 4, "tasks": ["posgen-v1/cot"], "layers": [2],
    ...     "hidden": [128], "weight_decays": [0.1, 1.0], "lrs": [0.0002, 0.001],
    ...     "max_epochs": 20, "max_far_id": 0.061, "max_far_id_run": "map-x"}))
    A search of training recipes for a far read (4 runs of a 2-layer, hidden-128 Llama with \
RoPE on posgen-v1/cot; weight decay 0.1 and 1, lr 0.0002 and 0.001, up to 20 epochs, \
far-reliance scored after every epoch) reached an ID far-reliance of at most 0.061 at any \
epoch (docs/validity.md in the posgen repository): no recipe tried reads the far operand. \
Untested: the paper preset (6 layers, hidden 512, lr 2e-4) at 150 epochs, on a GPU.
    """
    if not search.get("runs"):
        return ""

    def spoken(values: list[Any]) -> str:
        return " and ".join(f"{value:g}" if isinstance(value, float) else str(value)
                            for value in values)  # fmt: skip

    recipe = (
        f"{search['runs']} runs of a {spoken(search['layers'])}-layer, hidden-"
        f"{spoken(search['hidden'])} Llama with RoPE on {', '.join(search['tasks'])}; weight "
        f"decay {spoken(search['weight_decays'])}, lr {spoken(search['lrs'])}, up to "
        f"{search['max_epochs']} epochs, far-reliance scored after every epoch"
    )
    found = (
        f"reached an ID far-reliance of at most {search['max_far_id']:.3f} at any epoch "
        "(docs/validity.md in the posgen repository)"
    )
    if search["max_far_id"] >= 0.5:
        return (
            f"A search of training recipes for a far read ({recipe}) {found}: "
            f"`{search['max_far_id_run']}` reads the far operand in distribution."
        )
    return (
        f"A search of training recipes for a far read ({recipe}) {found}: no recipe tried "
        "reads the far operand. Untested: the paper preset (6 layers, hidden 512, lr 2e-4) at "
        "150 epochs, on a GPU."
    )


def measures_section(
    manifest: Manifest,
    measures: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
) -> str:
    """The card's "What each task measures" section, or ``""`` (no figures, other spec ids)."""
    entry = matching_entry(manifest, load_measures() if measures is None else measures)
    if entry is None:
        return ""
    sentences = measure_sentences(manifest.benchmark.name, entry)
    if not sentences:
        return ""
    searched = far_read_sentence(load_measures(FAR_READ_FILE) if search is None else search)
    return section(
        "What each task measures",
        "From the counterfactual probe (`make probe-check` in the posgen repository: cpu "
        "preset, one seed, each model scored on the probe split). Far-reliance near 1 means "
        "the model reads the far operand; near 0, it predicts from near tokens alone.",
        "\n".join(f"- {sentence}" for sentence in sentences),
        *([searched] if searched else []),
    )


RESULTS_FILE = Path(__file__).with_name("reference_results.json")

RESULTS_HEADER = [
    "config",
    "position embedding",
    "n",
    "ID accuracy",
    "OOD accuracy",
    "ID far-reliance",
    "OOD far-reliance",
]


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
    entry = matching_entry(manifest, load_measures(RESULTS_FILE) if results is None else results)
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
            table(RESULTS_HEADER, rows),
        ]
    )
