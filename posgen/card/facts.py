"""Card sections that restate facts: the spec, splits, files, validation, loading and use.

Every figure is read from ``posgen.json`` (which the writer filled from the files) or from a
:class:`~posgen.validate.report.Report` (only its deterministic parts: never ``seconds``,
never the messages of passing checks), so the same data always gives the same card. The
regenerate section embeds the exact spec as JSON and every file's sha256, so ``posgen
generate`` in a fresh folder can be checked byte for byte.

>>> print(table(["task", "w"], [["cot", 4]]))
| task | w |
|---|---|
| cot | 4 |
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from posgen.generator import disjoint_offset, paper_row_offset
from posgen.spec import TaskSpec, is_probe_split, probe_source
from posgen.store.manifest import Manifest

if TYPE_CHECKING:
    from posgen.validate.report import CheckResult, Report


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
            f"C({spec.modulus}, {spec.window}) = {spec.seed_space:,}"
        )
    first = disjoint_offset(spec, split)
    return (
        f"disjoint: indices [{first:,}, {first + rows:,}) of a permutation of "
        f"Z_{spec.modulus}^{spec.window} ({spec.seed_space:,} windows), seed {spec.seed}"
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
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def code(text: str, language: str = "") -> str:
    """A fenced code block."""
    return f"```{language}\n{text.rstrip()}\n```"


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

SHARE_COUNTS = {
    f"{kind}_share_{region}": f"{kind}_hits_{region}"
    for kind in ("copy_k", "copy_w", "linear_rule")
    for region in ("id", "ood")
}
"""Shares shown with the count of targets behind them: ``share (hits)``."""

AUDIT_NOTES = """\
- *dependencies per target*: how many earlier positions each target was proven to read
  (w = j + k for every task); *max look-back*: the largest distance from a target to an operand.
- *repeated rows*: rows whose whole sequence occurs earlier in the split.
- *seed windows shared with*: rows whose seed window also starts a row of the other split.
- *target balance (max TV)*: the largest total-variation distance, over positions, between the
  targets at that position and the uniform distribution on {0, ..., m-1}.
- *effective look-back (max)*: the largest, over the split's positions t, of the smallest D
  such that x_t is a function of x_{t-D} .. x_{t-1} for every seed window (next to *max
  look-back*, the rule's). *shorter look-back*: positions (out of L - w ID and L' - L OOD)
  where that D is below the rule's look-back t - (earliest operand). Exact: GF(m) linear
  algebra for additive h and prime m, or every seed window enumerated (all functions) when
  m^w is small; n/a otherwise. Example: cot with mod_addition has x_t = 2 x_{t-1} - x_{t-k-1}
  for every t >= w + 1, effective look-back k + 1 where the rule says t.
- Shares are over the split's targets (rows x (L - w) ID, rows x (L' - L) OOD), with the
  count of targets in parentheses.
- *k-/w-context copy share*: share of the targets equal to the token that followed the most
  recent earlier occurrence of the same k (or w) preceding tokens in the same row (an
  induction-head copy); a copy is right by chance about once in m where a context recurs.
- *linear-rule share*: share of the targets that the shortest local rules of the additive
  skeleton (same task, m, k, j with mod_addition) predict, at the positions where those rules
  are shorter than the task's (1.0 there for mod_addition; chance level for other h if that
  shortcut is closed; n/a for composite m).
- *periodic shortcut share*: share of targets that a short-period copy rule would predict.
- *operand sensitivity*: share of single-operand changes that change the target.
- *near-determined positions*: positions t whose target is a fixed function of its k near
  tokens alone, for every seed window (`posgen.validate.shortcuts`: exact for additive h and
  prime m; n/a otherwise). There the far operands are redundant, so the position does not
  test long-range dependency. In the paper's setup only semirecursive has such positions
  (e.g. x_6 = x_3 + 3 x_4 mod 17), recursive and cot have none."""


def _shared(value: Any) -> str:
    if not value:
        return "none"
    return ", ".join(f"{split}: {count:,}" for split, count in sorted(value.items()))


def checks_table(checks: list[CheckResult]) -> str:
    """One row per kind of check: how many passed, how many failed, total failures."""
    kinds: dict[str, list[int]] = {}
    for check in checks:
        tally = kinds.setdefault(check.check, [0, 0, 0])
        tally[0 if check.ok else 1] += 1
        tally[2] += check.failures
    rows = [[kind, passed, failed, failures] for kind, (passed, failed, failures) in kinds.items()]
    return table(["check", "passed", "failed", "failures"], rows)


def failed_checks(checks: list[CheckResult]) -> str:
    """The failing checks with their messages."""
    rows = [[c.check, c.config, c.split, c.failures, c.message] for c in checks if not c.ok]
    return table(["check", "config", "split", "failures", "message"], rows)


def facts_table(facts: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The audit figures of every split."""
    rows = []
    for config, splits in facts.items():
        for split, values in splits.items():
            row: list[Any] = [config, split]
            for key, _ in FACT_COLUMNS:
                value = values.get(key)
                if key == "shared_windows":
                    value = _shared(value)
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


def _region_cell(audit: dict[str, Any], region: str, share: str, count: str | None) -> str:
    figures = audit.get(region)
    if figures is None:
        return "n/a"
    if count is None:
        return f"{figures[share]:.4f}"
    return f"{figures[share]:.4f} ({figures[count]:,})"


def _percentiles(audit: dict[str, Any], region: str) -> str:
    figures = audit.get(region)
    if figures is None or figures["median"] is None:
        return "n/a"
    return " / ".join(str(figures[key]) for key in ("p10", "median", "p90", "max"))


def question_table(facts: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The question-consistency look-backs of every split (``question_lookback`` facts)."""
    rows = []
    for config, splits in facts.items():
        for split, values in splits.items():
            audit = values.get("question_lookback")
            if not audit or not audit["computed"]:
                rows.append([config, split, *["n/a"] * 8])
                continue
            rows.append(
                [
                    config,
                    split,
                    audit["rows"],
                    audit["candidates"],
                    _region_cell(audit, "id", "short_share", "short"),
                    _region_cell(audit, "ood", "short_share", "short"),
                    _region_cell(audit, "id", "shortcut_share", None),
                    _region_cell(audit, "ood", "shortcut_share", None),
                    _percentiles(audit, "id"),
                    _percentiles(audit, "ood"),
                ]
            )
    header = [
        "config",
        "split",
        "rows audited",
        "candidates (m^j)",
        "<= k + 2, ID",
        "<= k + 2, OOD",
        "below the rule's, ID",
        "below the rule's, OOD",
        "D\\* ID (10% / median / 90% / max)",
        "D\\* OOD (10% / median / 90% / max)",
    ]
    return table(header, rows)


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
    failures = ["Failing checks:", failed_checks(checks)] if failed else []
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


def seeding_section(specs: list[TaskSpec]) -> str:
    """How the seed windows of ``specs`` relate to the authors' original code."""
    seedings = {spec.seeding for spec in specs}
    texts = {"disjoint": DISJOINT_SEEDING, "paper": PAPER_SEEDING}
    used = [text for seeding, text in texts.items() if seeding in seedings]
    return section("Seeding and the authors' original code", *used)


def citation_section() -> str:
    """BibTeX of the Resonance RoPE paper, which introduced POSGEN."""
    return section("Citation", code(CITATION, "bibtex"))
