"""The data card (``README.md``) of a dataset folder, rendered deterministically from the
manifest, the data files and the validation report (never its ``seconds``). A config's
dependency diagram (``F`` far operands, ``n`` near ones, ``x`` the target):

>>> print(dependency_diagram("semirecursive", near=3, far=1, length=14, targets=[4, 13]))
position  0         1
          01234567890123
t = 4     Fnnnx
t = 13    ....F.....nnnx
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from huggingface_hub import DatasetCardData

from posgen.errors import UsageError, counted, mean_std_cell
from posgen.generator import disjoint_offset, generate_rows, paper_row_offset, probe_plan
from posgen.spec import TaskSpec, is_probe_split, probe_config, probe_source
from posgen.store.dataset import Dataset, check_files
from posgen.store.formats import card_configs, feature_entry, manifest_format, split_schema
from posgen.store.manifest import (
    CARD_NAME,
    DEFAULT_SHARD_BYTES,
    DamagedDataset,
    Manifest,
    plan_benchmark,
)
from posgen.store.safety import write_atomically
from posgen.tasks import dependencies, get_op, registrant

if TYPE_CHECKING:
    from posgen.validate.report import CheckResult, Report

__all__ = ["CARD_NAME", "render_card", "write_card"]


def section(title: str, *blocks: str) -> str:
    """A ``## title`` section: the title and ``blocks``, a blank line between each."""
    return "\n\n".join([f"## {title}", *blocks])


def cell(value: Any) -> str:
    """One table cell: pipes escaped, floats with 4 decimals, ints with thousands commas.

    >>> cell(10000), cell(0.25), cell("a|b"), cell(None)
    ('10,000', '0.2500', 'a\\\\|b', '-')
    """
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table.

    >>> print(table(["task", "w"], [["cot", 4]]))
    | task | w |
    |---|---|
    | cot | 4 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def code(text: str, language: str = "") -> str:
    """A fenced code block."""
    return f"```{language}\n{text.rstrip()}\n```"


LICENSE = "mit"
TASK_CATEGORIES = ["text-generation"]
TAGS = [
    "synthetic",
    "posgen",
    "length-generalization",
    "position-embeddings",
    "rope",
    "train-short-test-long",
]
SIZE_UNITS = ("1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T")


def size_category(rows: int) -> str:
    """The Hub's size category of a dataset with ``rows`` examples.

    >>> size_category(999), size_category(36_000), size_category(10**13)
    ('n<1K', '10K<n<100K', 'n>1T')
    """
    for power, unit in enumerate(SIZE_UNITS, start=3):
        if rows < 10**power:
            return f"{SIZE_UNITS[power - 4]}<n<{unit}" if power > 3 else f"n<{unit}"
    return "n>1T"


def front_matter(manifest: Manifest, info: list[dict[str, Any]] | None = None) -> str:
    """The YAML header between ``---`` lines, as ``huggingface_hub`` writes it."""
    rows = sum(s.rows for entry in manifest.configs.values() for s in entry.splits.values())
    header = DatasetCardData(
        pretty_name=f"POSGEN ({manifest.benchmark.name})",
        license=LICENSE,
        task_categories=list(TASK_CATEGORIES),
        size_categories=[size_category(rows)],
        tags=list(TAGS),
        configs=card_configs(manifest),
        dataset_info=info,
    )
    return "---\n" + header.to_yaml() + "\n---"


def arrow_row_bytes(schema: pa.Schema) -> tuple[int, int]:
    """In-memory Arrow bytes ``(per row, per token)`` of a POSGEN schema.

    >>> from posgen.store.formats import row_schema
    >>> arrow_row_bytes(row_schema(17)), arrow_row_bytes(row_schema(1000))
    ((12, 1), (12, 2))
    """
    id_bytes = sum(f.type.bit_width // 8 for f in schema if pa.types.is_integer(f.type))
    tokens = schema.field("tokens").type
    offset_bytes = 8 if pa.types.is_large_list(tokens) else 4
    return id_bytes + offset_bytes, tokens.value_type.bit_width // 8


def extra_list_bytes(fmt: Any, path: Path, schema: pa.Schema) -> int:
    """In-memory bytes of the list columns besides ``tokens`` (probe splits), read from the file."""
    names = [f.name for f in schema if f.name != "tokens" and pa.types.is_list(f.type)]
    if not names:
        return 0
    total = 0
    for batch in fmt.batches(path, 1 << 16, tuple(names)):
        for name in names:
            column = batch.column(name)
            width = column.type.value_type.bit_width // 8
            total += 4 * len(column) + width * len(column.flatten())
    return total


def dataset_info(root: Path, manifest: Manifest) -> list[dict[str, Any]]:
    """The ``dataset_info`` entries of ``root`` as ``datasets`` writes them (without importing
    it); :class:`DamagedDataset` when a file disagrees with the manifest."""
    root = Path(root)
    problems = check_files(root, manifest, hashes=False)
    if problems:
        raise DamagedDataset(root, [str(p) for p in problems])
    fmt = manifest_format(manifest)
    block = []
    for config, source, split_entries in sorted(manifest.hf_configs()):
        splits = []
        download = size = 0
        features: list[dict[str, str]] = []
        for split, info in split_entries.items():
            num_bytes = 0
            for item in info.files:
                facts = fmt.facts(root / item.path)
                if facts.tokens != item.rows * info.length:
                    shown = f"{root / item.path}: {counted(facts.tokens, 'token')}"
                    rows = counted(item.rows, "row")
                    raise DamagedDataset(root, [f"{shown}, not {rows} of {info.length}"])
                schema = facts.schema.remove_metadata()
                want = split_schema(manifest.configs[source].spec, split)
                if not schema.equals(want):  # named here: the card would describe it
                    found, expected = (
                        ", ".join(f"{f.name}: {f.type}" + " (nullable)" * f.nullable for f in s)
                        for s in (schema, want)
                    )
                    raise DamagedDataset(
                        root, [f"{root / item.path}: columns {found}; posgen writes {expected}"]
                    )
                features = [feature_entry(field) for field in schema]
                per_row, per_token = arrow_row_bytes(schema)
                num_bytes += facts.rows * per_row + facts.tokens * per_token
                num_bytes += extra_list_bytes(fmt, root / item.path, schema)
                download += item.bytes
            splits.append({"name": split, "num_bytes": num_bytes, "num_examples": info.rows})
            size += num_bytes
        block.append(
            {
                "config_name": config,
                "features": features,
                "splits": splits,
                "download_size": download,
                "dataset_size": size,
            }
        )
    return block


WHAT_POSGEN_MEASURES = """\
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


MEASURES_FILE = Path(__file__).with_name("probe_check.json")


def load_measures(path: Path = MEASURES_FILE) -> dict[str, Any]:
    """A committed figures file (the probe check by default), or ``{}`` when there is none."""
    return json.loads(path.read_text()) if path.is_file() else {}


def matching_entry(manifest: Manifest, results: dict[str, Any]) -> dict[str, Any] | None:
    """``results``' entry for the benchmark, or None when it has none or other spec ids."""
    entry = results.get(manifest.benchmark.name)
    spec_ids = {name: config.spec_id for name, config in manifest.configs.items()}
    return entry if entry and entry.get("spec_ids") == spec_ids else None


FAR_READ_FILE = Path(__file__).with_name("far_read.json")  # written by `make far-read`


def far_read_sentence(search: dict[str, Any]) -> str:
    """What the search of training recipes found, from its summary (``""`` without one).

    >>> search = {"runs": 4, "tasks": ["posgen-v1/cot"], "layers": [2], "hidden": [128],
    ...     "weight_decays": [0.1, 1.0], "lrs": [0.0002, 0.001], "max_epochs": 20,
    ...     "max_far_id": 0.061, "max_far_id_run": "map-x"}
    >>> print(far_read_sentence(search))
    A search of training recipes for a far read (4 runs of a 2-layer, hidden-128 Llama with \
RoPE on posgen-v1/cot; weight decay 0.1 and 1, lr 0.0002 and 0.001, up to 20 epochs, \
far-reliance scored after every epoch) reached an ID far-reliance of at most 0.061 at any \
epoch (docs/validity.md in the posgen repository): no recipe tried reads the far operand. \
Untested: the paper preset (6 layers, hidden 512, lr 2e-4) at 150 epochs, on a GPU.
    >>> far_read_sentence({}), far_read_sentence({**search, "max_far_id": 0.7}).split(": ")[-1]
    ('', '`map-x` reads the far operand in distribution.')
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
        verdict = f"`{search['max_far_id_run']}` reads the far operand in distribution."
    else:
        verdict = (
            "no recipe tried reads the far operand. Untested: the paper preset (6 layers, "
            "hidden 512, lr 2e-4) at 150 epochs, on a GPU."
        )
    return f"A search of training recipes for a far read ({recipe}) {found}: {verdict}"


def measures_section(
    manifest: Manifest, measures: dict[str, Any] | None = None, search: dict[str, Any] | None = None
) -> str:
    """The card's "What each task measures" section, or ``""`` (no figures, other spec ids)."""
    entry = matching_entry(manifest, load_measures() if measures is None else measures)
    sentences = (entry or {}).get("measures", [])
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


FAR_RULES: dict[str, tuple[str, str]] = {
    "recursive": ("x_{t-w} .. x_{t-k-1} (just before the near ones)", "bounded by w"),
    "cot": ('x_0 .. x_{j-1} (the fixed "question")', "grows like t"),
    "semirecursive": ("x_p .. x_{p+j-1}, p = floor((t - w) / 2)", "grows like t / 2"),
}


def far_rule(task: str) -> tuple[str, str]:
    """``(far operands of x_t, far look-back)`` of ``task``; a task of one's own names its rule's
    module (its diagram below shows where the operands sit).

    >>> far_rule("cot")[1]
    'grows like t'
    """
    if task in FAR_RULES:
        return FAR_RULES[task]
    module = registrant("task", task) or "its author's module"
    return f"x_p .. x_{{p+j-1}}, p from the rule of task {task} ({module})", "-"


def rules_table(manifest: Manifest) -> str:
    """One row per config: its task's far operands and how far back they reach."""
    rows = []
    for name, entry in manifest.configs.items():
        rule, reach = far_rule(entry.spec.task)
        rows.append([name, entry.spec.task, rule, "x_{t-k} .. x_{t-1}", reach])
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


MAX_DRAWN_WINDOW = 48  # windows longer than this are described, not drawn (the lines would not fit)


def config_section(name: str, spec: TaskSpec) -> str:
    """A config's rule, worked example and dependency picture."""
    rule, reach = far_rule(spec.task)
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
        for i, p in enumerate(dependencies(task, t, near, far)):
            marks[p] = "F" if i < far else "n"
        lines.append(f"t = {t}".ljust(label) + "".join(marks))
    return "\n".join(line.rstrip() for line in lines)


def diagram_length(window: int, train_length: int) -> int:
    """How many positions to draw: enough to show the far operands drift.

    >>> diagram_length(4, 64), diagram_length(4, 10)
    (40, 10)
    """
    return min(train_length, max(40, window + 24))


def spec_section(manifest: Manifest) -> str:
    """Every spec field of every config, one column per config."""
    configs = manifest.configs
    specs = [entry.spec.canonical() for entry in configs.values()]
    rows = [["spec_id", *(f"`{entry.spec_id}`" for entry in configs.values())]]
    for field in TaskSpec.model_fields:
        if any(field in spec for spec in specs):  # op_key only for keyed ops
            values = [spec.get(field, "-") for spec in specs]
            rows.append(
                [field, *(", ".join(map(str, v)) if isinstance(v, list) else v for v in values)]
            )
    bench = manifest.benchmark
    return section(
        "Spec",
        f"Benchmark `{bench.name}`, benchmark spec id `{bench.spec_id}`.",
        table(["field", *configs], rows),
    )


def seed_windows_text(spec: TaskSpec, split: str, rows: int) -> str:
    """Where a split's seed windows come from.

    >>> seed_windows_text(TaskSpec(task="cot"), "test", 1000)
    'disjoint: indices [0, 1,000) of a permutation of Z_17^4 (83,521 windows), seed 0'
    >>> seed_windows_text(TaskSpec(task="cot", seeding="paper"), "test", 1000)
    'paper: sorted combinations [1,000, 2,000) mod C(17, 4) = 2,380'
    """
    if spec.seeding == "paper":
        first = paper_row_offset(spec, split)
        return (
            f"paper: sorted combinations [{first:,}, {first + rows:,}) mod "
            f"C({spec.modulus}, {spec.window}) = {spec.seed_space_text}"
        )
    first = disjoint_offset(spec, split)
    return (
        f"disjoint: indices [{first:,}, {first + rows:,}) of a permutation of "
        f"Z_{spec.modulus}^{spec.window} ({spec.seed_space_text} windows), seed {spec.seed}"
    )


def splits_section(manifest: Manifest) -> str:
    """Rows, length, scored positions and seed windows of every split."""
    rows = []
    for name, config, splits in manifest.hf_configs():
        spec = manifest.configs[config].spec
        for split, info in splits.items():
            w, boundary, length = info.seed_window, info.ood_boundary, info.length
            ood = f"[{boundary}, {length})" if length > boundary else "none"
            source = (
                f"rows of {config}/{probe_source(split)}, far operands replaced"
                if is_probe_split(split)
                else seed_windows_text(spec, split, info.rows)
            )
            rows.append(
                [name, split, info.rows, length, w, f"[{w}, {min(boundary, length)})", ood, source]
            )
    header = ["config", "split", "rows", "length", "seed window w", "ID positions"]
    return section(
        "Splits",
        "Rows of a split all have its length. The first w tokens are the seed window; "
        "positions [w, L) are in distribution (L = train length = the OOD boundary) and "
        "positions [L, L') are out of distribution.",
        table([*header, "OOD positions", "seed windows"], rows),
    )


PROBE_INTRO = """\
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
        PROBE_INTRO,
        table(PROBE_HEADER, rows),
        "Predict the probe split (teacher-forced, as for test) and score it:",
        code(snippet, "bash"),
    )


NOT_VALIDATED = (
    "**Not validated.** This card was rendered without a validation report. Run "
    "`posgen validate DIR` to recompute every target from its window and audit the splits, "
    "and `posgen card DIR` to render the card with the result."
)


FACT_COLUMNS: list[tuple[str, str]] = [
    ("rows", "rows"),
    ("length", "length"),
    ("dependency_count", "dependencies per target"),
    ("max_lookback", "max look-back"),
    ("repeated_rows", "repeated rows"),
    ("shared_windows", "seed windows shared with"),
    ("target_balance_max_tv", "target balance (max TV)"),
    ("effective_lookback_max", "effective look-back (max)"),
    ("shorter_lookback_id", "shorter look-back, ID positions"),
    ("shorter_lookback_ood", "shorter look-back, OOD positions"),
    ("copy_k_share_id", "k-context copy share, ID"),
    ("copy_k_share_ood", "k-context copy share, OOD"),
    ("copy_w_share_id", "w-context copy share, ID"),
    ("copy_w_share_ood", "w-context copy share, OOD"),
    ("linear_rule_share_id", "linear-rule share, ID"),
    ("linear_rule_share_ood", "linear-rule share, OOD"),
    ("periodic_shortcut_share", "periodic shortcut share"),
    ("operand_sensitivity", "operand sensitivity"),
    ("near_determined_id", "near-determined positions, ID"),
    ("near_determined_ood", "near-determined positions, OOD"),
]


SHARE_COUNTS = {  # shares shown with the count of targets behind them: ``share (hits)``
    f"{kind}_share_{region}": f"{kind}_hits_{region}"
    for kind in ("copy_k", "copy_w", "linear_rule")
    for region in ("id", "ood")
}


AUDIT_NOTES = """\
- *dependencies per target*: how many earlier positions each target was proven to read
  (w = j + k for every task); *max look-back*: the largest distance from a target to an operand.
- *repeated rows*: rows whose whole sequence occurs earlier in the split.
- *seed windows shared with*: rows whose seed window also starts a row of the other split.
- *target balance (max TV)*: the largest total-variation distance, over positions, between the
  targets at that position and the uniform distribution on {0, ..., m-1} (at most 2^22 / m
  positions, evenly spaced, are counted).
- *effective look-back (max)*: the largest, over the split's positions t, of the smallest D
  such that x_t is a function of x_{t-D} .. x_{t-1} for every seed window (next to *max
  look-back*, the rule's). *shorter look-back*: positions (out of L - w ID and L' - L OOD)
  where that D is below the rule's look-back t - (earliest operand). Exact: GF(m) linear
  algebra for additive h and prime m, or every seed window enumerated (all functions) when
  m^w is small; n/a otherwise. Example: cot with mod_addition has x_t = 2 x_{t-1} - x_{t-k-1}
  for every t >= w + 1, effective look-back k + 1 where the rule says t.
- Copy and linear-rule shares are over the targets of the split's first rows, up to 2^18
  tokens (every row of a smaller split): rows x (L - w) ID, rows x (L' - L) OOD, with the
  count of targets the rule predicts in parentheses.
- *k-/w-context copy share*: share of the targets equal to the token that followed the most
  recent earlier occurrence of the same k (or w) preceding tokens in the same row (an
  induction-head copy); a copy is right by chance about once in m where a context recurs.
- *linear-rule share*: share of the targets that the shortest local rules of the additive
  skeleton (same task, m, k, j with mod_addition) predict, at the positions where those rules
  are shorter than the task's (1.0 there for mod_addition; chance level for other h if that
  shortcut is closed; n/a for composite m).
- *periodic shortcut share*: share of the OOD targets (every row) that repeating the row's
  last period before L predicts: the smallest p <= 512 such that each of the max(p, w) tokens
  before L equals the token p before it, then x_t = x_{L - p + (t - L) mod p}.
- *operand sensitivity*: share of single-operand changes that change the target (on the
  split's first 4,096 targets at most, up to 16 operand slots and 16 shifts each).
- *near-determined positions*: positions t whose target is a fixed function of its k near
  tokens alone, for every seed window (`posgen.validate.shortcuts`: exact for additive h and
  prime m; n/a otherwise). There the far operands are redundant, so the position does not
  test long-range dependency. In the paper's setup only semirecursive has such positions
  (e.g. x_6 = x_3 + 3 x_4 mod 17), recursive and cot have none."""


def checks_table(checks: list[CheckResult]) -> str:
    """One row per kind of check: how many passed, how many failed, total failures."""
    kinds: dict[str, list[int]] = {}
    for check in checks:
        tally = kinds.setdefault(check.check, [0, 0, 0])
        tally[0 if check.ok else 1] += 1
        tally[2] += check.failures
    rows = [[kind, passed, failed, failures] for kind, (passed, failed, failures) in kinds.items()]
    return table(["check", "passed", "failed", "failures"], rows)


def facts_table(facts: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The audit figures of every split."""
    rows = []
    for config, splits in facts.items():
        for split, values in splits.items():
            row: list[Any] = [config, split]
            for key, _ in FACT_COLUMNS:
                value = values.get(key)
                if key == "shared_windows":
                    shared = sorted((value or {}).items())
                    value = ", ".join(f"{split}: {n:,}" for split, n in shared) or "none"
                elif key in SHARE_COUNTS and value is not None:
                    value = f"{value:.4f} ({values.get(SHARE_COUNTS[key], 0):,})"
                row.append("n/a" if value is None else value)
            rows.append(row)
    return table(["config", "split", *(title for _, title in FACT_COLUMNS)], rows)


QUESTION_NOTES = """\
- *Question-consistency look-back* (`posgen.consistency`): for a target x_t with far start p
  (cot: the question x_0 .. x_{j-1}), the smallest look-back D (k <= D <= t - p) at which
  every far-operand candidate v in Z_m^j that is consistent with the visible transitions
  (h(v, near_s) = x_s for every target s reading the same far operands, with x_{s-k} ..
  x_{s-1} inside x_{t-D} .. x_{t-1}) gives the same x_t; t - p when none does (the far
  operands themselves are needed). Exact for every op, over all m^j candidates, on rows
  spread evenly over the split (rows audited); n/a when m^j, or one row's m^j x targets x w
  operand reads, is above the bound (the reason is in `posgen validate --json`).
- *<= k + 2*: share of the audited targets (count in parentheses) whose look-back is at most
  k + 2: a rule reading only the k + 2 tokens before t predicts them; *below the rule's*:
  those whose look-back is also shorter than the task's own, t - p, so the far operands are
  inferred, not read (recursive reads its w tokens by design). Example: cot with
  mod_addition needs k + 1 tokens at every t > w (one transition fixes the question's sum).
- *D\\* (10% / median / 90% / max)*: percentiles of the look-back over ID and OOD targets."""


def _region_cells(audit: dict[str, Any], region: str) -> tuple[str, str, str]:
    """The ``<= k + 2``, ``below the rule's`` and ``D*`` cells of one region (ID or OOD)."""
    figures = audit.get(region)
    if figures is None:
        return ("n/a",) * 3
    percentiles = " / ".join(str(figures[key]) for key in ("p10", "median", "p90", "max"))
    return (
        f"{figures['short_share']:.4f} ({figures['short']:,})",
        f"{figures['shortcut_share']:.4f}",
        "n/a" if figures["median"] is None else percentiles,
    )


def question_table(facts: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The question-consistency look-backs of every split (``question_lookback`` facts)."""
    rows = []
    for config, splits in facts.items():
        for split, values in splits.items():
            audit = values.get("question_lookback")
            if not audit or not audit["computed"]:
                rows.append([config, split, *["n/a"] * 8])
                continue
            by_region = zip(_region_cells(audit, "id"), _region_cells(audit, "ood"), strict=True)
            cells = [cell for pair in by_region for cell in pair]  # ID, OOD of each column
            rows.append([config, split, audit["rows"], audit["candidates"], *cells])
    columns = ["<= k + 2", "below the rule's"]
    header = [f"{column}, {region}" for column in columns for region in ("ID", "OOD")]
    percentiles = [f"D\\* {region} (10% / median / 90% / max)" for region in ("ID", "OOD")]
    return table(
        ["config", "split", "rows audited", "candidates (m^j)", *header, *percentiles], rows
    )


def validation_section(report: Report | None) -> str:
    """The whole section: status, checks, failures (if any) and audit figures."""
    if report is None:
        return section("Validation and audit", NOT_VALIDATED)
    checks = report.checks
    failed = sum(not c.ok for c in checks)
    if report.ok:
        status = (
            f"**Validated: all {len(checks):,} checks passed**; "
            f"{report.tokens_checked:,} tokens were recomputed from their windows."
        )
    else:
        status = (
            f"**Validation FAILED: {failed:,} of {len(checks):,} checks failed** "
            f"({report.tokens_checked:,} tokens checked). Do not use this data."
        )
    rows = [[c.check, c.config, c.split, c.failures, c.message] for c in checks if not c.ok]
    header = ["check", "config", "split", "failures", "message"]
    failures = ["Failing checks:", table(header, rows)] if failed else []
    return section(
        "Validation and audit",
        status,
        checks_table(checks),
        *failures,
        "Audit figures (from `posgen validate`):",
        facts_table(report.facts),
        AUDIT_NOTES,
        "Question-consistency look-backs (from `posgen validate`):",
        question_table(report.facts),
        QUESTION_NOTES,
    )


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
    else:
        snippet = f"""\
from datasets import load_dataset

# a local folder or the Hub repo id; one config per task
ds = load_dataset("path/to/this/folder", "{first}")
ds["train"][0]["tokens"]  # seed window + generated tokens
stream = load_dataset("path/to/this/folder", "{first}", split="test", streaming=True)
next(iter(stream))["id"]  # 0"""
    configs = f"Configs: {names}; splits and row lengths are in the split table."
    return section("How to load it", configs, code(snippet, "python"))


def score_section(manifest: Manifest, baselines: dict[str, Any] | None) -> str:
    """Teacher-forced accuracy on [w, L) and [L, L'), and baselines when given."""
    first, entry = next(iter(manifest.configs.items()))
    w, boundary = entry.spec.window, entry.spec.train_length
    loader, test = "load_dataset", f'load_dataset("path/to/this/folder", "{first}", split="test")'
    if manifest.storage_format == "arrow":
        loader, test = "load_from_disk", f'load_from_disk("path/to/this/folder/{first}")["test"]'
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
        "Teacher-forced next-token accuracy: the model reads the true prefix x_0 .. x_{t-1} and "
        "its argmax at position t is compared with x_t. Report it separately for positions "
        "[w, L) (in distribution) and [L, L') (out of distribution) of the test split(s); the "
        "seed window is never scored. Take w and L of each config from the split table.",
        code(snippet, "python"),
    ]
    if baselines:
        rows = [
            [config, kind, scores["id_accuracy"], scores["ood_accuracy"]]
            for config, kinds in baselines.items()
            for kind, scores in kinds.items()
        ]
        parts += [
            "Baselines on the test split (from `posgen.scoring.baseline_scores`):",
            table(["config", "baseline", "ID accuracy [w, L)", "OOD accuracy [L, L')"], rows),
        ]
    return section("How to score a model", *parts)


RESULTS_FILE = Path(__file__).with_name("reference_results.json")
FIGURES = ("id", "ood", "far_id", "far_ood")  # mean and std of each, per config and encoding
RESULTS_HEADER = ["config", "position embedding", "n", "ID accuracy", "OOD accuracy",
                  "ID far-reliance", "OOD far-reliance"]  # fmt: skip


def results_section(manifest: Manifest, results: dict[str, Any] | None = None) -> str:
    """The benchmark's reference results, one row per config and position embedding, or
    ``""`` (no entry for the benchmark, or other spec ids)."""
    entry = matching_entry(manifest, load_measures(RESULTS_FILE) if results is None else results)
    if entry is None:
        return ""
    rows = [
        [task, pe, c["n"], *(mean_std_cell(c.get(f"{k}_mean"), c.get(f"{k}_std")) for k in FIGURES)]
        for task, pes in entry["tasks"].items()
        for pe, c in pes.items()
    ]
    return section(
        "Reference results",
        "Stock `transformers` Llama models trained from scratch on this data with each "
        "position embedding below, the paper's four first (`make results` in the posgen "
        "repository: cpu preset, test split, mean ± std over n seeds; see its RESULTS.md). "
        "Far-reliance: "
        "share of the probe split's probed targets predicted as the far-rule answer "
        "(see the probe splits above; - where not measured).",
        table(RESULTS_HEADER, rows),
    )


def shard_flag(manifest: Manifest) -> str:
    """`` --shard-mb N`` when the folder's files were cut at another size than the default
    (the size whose plan names the same files with the same rows), else ``""``."""
    files = [(item.path, item.rows) for _, _, item in manifest.files()]
    sizes = [DEFAULT_SHARD_BYTES // 2**20]
    for config, entry in manifest.configs.items():
        spec = manifest.bench.configs[config]
        for split, info in entry.ordered_splits.items():
            if len(info.files) > 1:  # the first of several files holds rows_per's rows
                rows = info.files[0].rows
                sizes.append(-(-rows * spec.split_length(split) * spec.token_bytes // 2**20))
    for mb in dict.fromkeys(sizes):
        plan = plan_benchmark(manifest.bench, mb * 2**20, manifest.storage_format)
        if [(shard.path, shard.stop - shard.start) for shard in plan] == files:
            return "" if mb == sizes[0] else f" --shard-mb {mb}"
    return ""


def regenerate_section(manifest: Manifest) -> str:
    """The exact commands that rebuild the folder and check it byte for byte."""
    pins = [f'"posgen=={manifest.posgen_version}"']
    pins += [f'"{name}=={version}"' for name, version in sorted(manifest.libraries.items())]
    parquet = manifest.storage_format == "parquet"
    storage = ("" if parquet else f" --format {manifest.storage_format}") + shard_flag(manifest)
    kind = "Parquet" if parquet else "Arrow IPC"
    own = {  # "task NAME" / "op NAME" of one's own -> the module that registers it
        f"{kind} {name}": module
        for spec in manifest.bench.configs.values()
        for kind, name in (("task", spec.task), ("op", spec.op))
        if (module := registrant(kind, name)) is not None
    }
    modules = sorted({module for module in own.values() if module})
    script = "\n".join(
        [
            f"pip install {' '.join(pins)}",
            *(
                f"# {label} is not part of posgen: put the module that registers it, "
                f"{own[label]}, beside spec.json (ask the dataset's author for it)"
                if own[label]
                else f"# {label} is not part of posgen: register it (posgen.register_"
                f"{label.split()[0]}) in a module named in POSGEN_TASKS"
                for label in own
            ),
            *([f"export POSGEN_TASKS={','.join(modules)} PYTHONPATH=."] if modules else []),
            "cat > spec.json <<'SPEC'",
            json.dumps(manifest.bench.canonical(), indent=2),
            "SPEC",
            f"posgen generate --spec spec.json --out regenerated{storage}",
            "cd regenerated && sha256sum --check <<'SUMS'",
            *(f"{item.sha256}  {item.path}" for _, _, item in manifest.files()),
            "SUMS",
        ]
    )
    return section(
        "How to regenerate it byte for byte",
        f"Generated by posgen {manifest.posgen_version}. The {kind} bytes depend on the "
        f"spec, the posgen version and the {kind} writer (pyarrow) version only: same "
        "versions, same files. `posgen validate regenerated` then recomputes every target.",
        code(script, "bash"),
    )


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


def seeding_section(specs: list[TaskSpec]) -> str:
    """How the seed windows of ``specs`` relate to the authors' original code."""
    seedings = {spec.seeding for spec in specs}
    texts = {"disjoint": DISJOINT_SEEDING, "paper": PAPER_SEEDING}
    used = [text for seeding, text in texts.items() if seeding in seedings]
    return section("Seeding and the authors' original code", *used)


def files_section(manifest: Manifest) -> str:
    """Every data file with its rows, first id, size and sha256."""
    rows = [
        [item.path, item.rows, item.first_id, item.bytes, f"`{item.sha256}`"]
        for _, _, item in manifest.files()
    ]
    return section(
        "Files and checksums",
        "Columns: `id` (int64, the row's index in its split) and `tokens` (list of uint8; "
        "uint16 when m > 256); probe splits add `source_id`, `replaced`, `probed` "
        "(lists of uint32 positions) and `far_rule` (one token per probed position). "
        "The manifest `posgen.json` holds the same facts.",
        table(["file", "rows", "first id", "bytes", "sha256"], rows),
    )


CITATION = """\
@inproceedings{wang2024resonance,
  title     = {Resonance {RoPE}: Improving Context Length Generalization of Large Language Models},
  author    = {Wang, Suyuchen and Kobyzev, Ivan and Lu, Peng and Rezagholizadeh, Mehdi and
               Liu, Bang},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2024},
  year      = {2024},
  url       = {https://arxiv.org/abs/2403.00071}
}"""


def render_card(
    manifest: Manifest,
    report: Report | None = None,
    baselines: dict[str, dict[str, dict[str, float]]] | None = None,
    root: Path | None = None,
) -> str:
    """The whole card: ``report`` None when not validated, ``baselines`` config -> kind ->
    ``{"id_accuracy", "ood_accuracy"}``, with ``root`` a ``dataset_info`` read from the files."""
    info = dataset_info(Path(root), manifest) if root is not None else None
    bench = manifest.benchmark
    sections = [
        front_matter(manifest, info),
        f"# POSGEN: {bench.name}",
        (bench.description or "").strip()
        + f"\n\nConfigs: {', '.join(f'`{name}`' for name in manifest.configs)}. "
        f"Generated by posgen {manifest.posgen_version}; "
        "the manifest `posgen.json` records the same facts as this card.",
        WHAT_POSGEN_MEASURES,
        *filter(None, [measures_section(manifest)]),
        tasks_section(manifest),
        spec_section(manifest),
        splits_section(manifest),
        probe_section(manifest),
        validation_section(report),
        load_section(manifest),
        score_section(manifest, baselines),
        *filter(None, [results_section(manifest)]),
        regenerate_section(manifest),
        seeding_section([entry.spec for entry in manifest.configs.values()]),
        files_section(manifest),
        section("Citation", code(CITATION, "bibtex")),
    ]
    return "\n\n".join(section.strip() for section in sections) + "\n"


def write_card(
    root: Path,
    report: Report | None = None,
    baselines: dict[str, dict[str, dict[str, float]]] | None = None,
    manifest: Manifest | None = None,
) -> Path:
    """Re-render ``root/README.md`` from the folder's manifest and files (atomic replace)."""
    root = Path(root)
    path = card_path(root)
    text = render_card(manifest or Dataset.open(root).manifest, report, baselines, root=root)
    return write_atomically(path, text.encode(), follow=False)  # a pipe there: replaced


def card_path(root: Path) -> Path:
    """``root/README.md``; :class:`UsageError` when it is a link (never written through)."""
    path = Path(root) / CARD_NAME
    if path.is_symlink():
        raise UsageError(
            f"{path} is a link (to {os.readlink(path)}), not the dataset's own card; "
            "nothing was written: remove the link and run again"
        )
    return path


def unvalidated_card(root: Path, manifest: Manifest) -> None:
    """The ``finish`` step of a dataset written without validation: a card that says so."""
    write_card(root, manifest=manifest)
