"""``validate(source, spec)``: every check on a dataset, as one :class:`Report`; one pass per
split feeds every tally, and failure messages say where (file, or split, row, position)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from posgen.errors import counted, machine_limit, shown
from posgen.generator import expected_targets, seed_windows
from posgen.spec import TaskSpec, is_probe_split
from posgen.store.dataset import pinned
from posgen.store.manifest import DamagedDataset, NotADataset
from posgen.validate.audits import (
    BalanceTally,
    HygieneTally,
    LookbackTally,
    ShortcutTally,
    operand_sensitivity,
    shortcut_hits,
)
from posgen.validate.probes import check_probe_split
from posgen.validate.report import CheckResult, Report
from posgen.validate.schema import (
    Decoded,
    check_integrity,
    damaged_result,
    decode_batch,
    prefetch,
    type_problems,
)
from posgen.validate.shortcuts import local_rules, near_determined_counts, rule_lookbacks
from posgen.validate.sources import SourceError, SplitData, resolve


class AuditThresholds(BaseModel):
    """Limits that turn the audit into pass/fail (``None``: report only): a position's target
    TV from uniform, the share of ID or OOD targets a shortcut (:data:`SHARE_FACTS`) covers,
    and the least share of single-operand changes that change h."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_balance_tv: float | None = Field(None, ge=0, le=1)
    max_shortcut_share: float | None = Field(None, ge=0, le=1)
    min_operand_sensitivity: float | None = Field(None, ge=0, le=1)


@dataclass
class SplitTally:
    """Everything streamed from one split."""

    data: SplitData
    hygiene: HygieneTally
    balance: BalanceTally | None
    shortcuts: ShortcutTally
    lookbacks: LookbackTally | None
    rows: int = 0
    tokens: int = 0
    part_problems: list[str] = field(default_factory=list)  # a part's types, or unreadable
    problems: dict[str, list] = field(default_factory=dict)  # kind -> [count, (part, *first)]
    nulls: int = 0
    window_failures: int = 0
    window_rows: int = 0
    first_window: tuple[int, int, int, int] | None = None  # (row id, t, expected, found)
    shortcut_hits: int = 0
    periodic_rows: int = 0
    sensitivity: tuple[float, int] | None = None


def _seed_windows(spec: TaskSpec, split: str, ids: np.ndarray) -> np.ndarray | None:
    """The seed windows of rows ``ids`` of ``split`` (None for probe or unknown splits, or ids
    not a run of the split's rows)."""
    if split not in spec.split_names or ids.size == 0:
        return None
    start, stop = int(ids[0]), int(ids[0]) + ids.size
    in_order = np.array_equal(ids, np.arange(start, stop))  # range(): item by item, ~60x slower
    if start < 0 or stop > spec.split_size(split) or not in_order:
        return None
    return seed_windows(spec, split, start, stop)


def _feed(tally: SplitTally, part_label: str, decoded: Decoded) -> None:
    spec, tokens = tally.data.spec, decoded.tokens
    tally.rows += decoded.rows
    tally.tokens += int(tokens.size)
    tally.nulls += decoded.nulls
    for kind, (count, first) in decoded.problems.items():
        tally.problems.setdefault(kind, [0, (part_label, *first)])[0] += count
    if tokens.shape[0] == 0 or tokens.shape[1] <= spec.window:
        return
    seeds = _seed_windows(spec, tally.data.split, decoded.ids)  # every token, from its row id
    head = tokens[:, : spec.window] if seeds is None else seeds
    want = np.concatenate([head, expected_targets(spec, tokens)], axis=1)
    wrong = want != tokens
    bad_rows = wrong.any(axis=1)
    count = int(np.count_nonzero(wrong))
    if count:
        tally.window_failures += count
        tally.window_rows += int(np.count_nonzero(bad_rows))
        if tally.first_window is None:
            row = int(np.argmax(bad_rows))
            t = int(np.argmax(wrong[row]))
            tally.first_window = (int(decoded.ids[row]), t, int(want[row, t]), int(tokens[row, t]))
    for streamed in (tally.hygiene, tally.balance, tally.shortcuts, tally.lookbacks):
        streamed.add(tokens)  # balance, lookbacks: None only for a split of no length, never fed
    hits, periodic = shortcut_hits(tokens, spec.train_length, spec.window)
    tally.shortcut_hits += hits
    tally.periodic_rows += periodic
    if tally.sensitivity is None:
        tally.sensitivity = operand_sensitivity(spec, tokens)


def stream_split(data: SplitData) -> SplitTally:
    """Read every part of a split once, feeding every tally."""
    spec = data.spec
    # rows as the parts record them (manifest, in-memory table), else the spec's split size
    counts = [part.table.num_rows if part.table is not None else part.rows for part in data.parts]
    rows = sum(counts) if counts and None not in counts else None
    if rows is None and data.split in spec.split_names:
        rows = spec.split_size(data.split)
    tally = SplitTally(
        data,
        HygieneTally(spec.modulus, spec.window),
        BalanceTally(spec, data.length) if data.length else None,
        ShortcutTally(spec),
        LookbackTally(spec, data.length, rows) if data.length else None,
    )
    next_id = 0
    for part in data.parts:
        if part.path is not None and not part.path.is_file():
            if not data.from_manifest:  # a listed file that is missing fails integrity
                tally.part_problems.append(f"{part.label}: missing, not read")
            continue
        try:
            problems = type_problems(part.schema(), spec.modulus, data.from_manifest)
            tally.part_problems += [f"{part.label}: {p}" for p in problems]
            if any(("tokens" in p and "not a list" in p) or "no 'tokens'" in p for p in problems):
                continue
            first = part.first_id if part.first_id is not None else next_id
            for batch in prefetch(part.batches(data.length or 1)):
                decoded = decode_batch(batch, data.length, spec.modulus, first)
                _feed(tally, part.label, decoded)
                first += batch.num_rows
            next_id = first
        except (pa.ArrowException, OSError) as error:
            if machine_limit(error):  # ArrowMemoryError, no thread: a limit, not damage
                raise
            tally.part_problems.append(f"{part.label}: unreadable ({shown(error)})")
    return tally


def _result(
    tally: SplitTally, check: str, problems: list[str], ok_message: str, failures: int
) -> CheckResult:
    where = {"config": tally.data.config, "split": tally.data.split}
    return CheckResult.of(check, problems, ok_message, **where, failures=max(1, failures))


SCHEMA_LINES = {  # kind -> its line, from (count, *first, row length, m)
    "bad_length": "{0} row(s) not {4} tokens long; first: {1} row {2} has {3}",
    "out_of_range": "{0} token(s) outside [0, {6}); first: {1} row {2} position {3} holds {4}",
    "bad_ids": "{0} id(s) out of sequence; first: {1} has id {3} where {2} belongs",
}


def schema_result(tally: SplitTally) -> CheckResult:
    """Types, row length, ids, nulls and token range of one split."""
    data, spec = tally.data, tally.data.spec
    problems = list(tally.part_problems)
    if data.length is None:
        lengths = ", ".join(map(str, sorted({spec.split_length(s) for s in spec.split_names})))
        problems.append(
            f"split {data.split}: rows do not have any of the spec's lengths ({lengths})"
        )
    unknown = data.length is not None and data.split not in spec.split_names
    if unknown:
        problems.append(  # its seed windows are checked against no split's
            f"split {shown(data.split, 60)!r} is none of the spec's "
            f"({', '.join(spec.split_names)}): its seed windows cannot be checked"
        )
    # rows past the split's size: the spec generates none (their seed windows go unchecked)
    extra = tally.rows - spec.split_size(data.split) if data.split in spec.split_names else 0
    if extra > 0:
        problems.append(
            f"{tally.rows} rows; split {data.split} of the spec holds {spec.split_size(data.split)}"
        )
    found = tally.problems
    for kind in ("bad_length", "out_of_range", "nulls", "bad_ids"):
        if kind == "nulls" and tally.nulls:
            problems.append(f"{tally.nulls} null value(s) in 'tokens'")
        elif kind in found and not (kind == "bad_length" and data.length is None):  # said above
            count, first = found[kind]
            problems.append(SCHEMA_LINES[kind].format(count, *first, data.length, spec.modulus))
    failures = len(tally.part_problems) + tally.nulls
    failures += sum(count for count, _ in found.values()) + (data.length is None) + max(0, extra)
    failures += unknown
    message = (
        f"{counted(tally.rows, 'row')} of {data.length} tokens in [0, {spec.modulus}), ids in order"
    )
    return _result(tally, "schema", problems, message, failures)


def _dependencies(spec: TaskSpec) -> str:
    return f"{spec.window} dependenc{'y' if spec.window == 1 else 'ies'}"


def window_result(tally: SplitTally) -> CheckResult:
    """Every target equals h of the positions the rule names."""
    spec, data = tally.data.spec, tally.data
    checked = (data.length - spec.window) * (tally.tokens // data.length) if data.length else 0
    if tally.first_window is None:
        ok = checked > 0 or tally.rows == 0
        message = (
            f"{counted(checked, 'target')} equal {spec.op} of their {_dependencies(spec)}"
            if ok
            else "no row could be checked"
        )
        return _result(tally, "window", [] if ok else [message], message, 1)
    row, position, expected, found = tally.first_window
    problem = (
        f"split {data.split} row {row} position {position}: expected {expected}, found {found} "
        f"({tally.window_failures} position(s) failed in all, in {tally.window_rows} row(s))"
    )
    return _result(tally, "window", [problem], "", tally.window_failures)


def bounded_result(tally: SplitTally) -> tuple[CheckResult, int]:
    """Check 4: the rule names w distinct earlier positions for every t below the split's
    length (:func:`~posgen.tasks.far_start` refuses a rule that does not); the largest look-back."""
    spec, data = tally.data.spec, tally.data
    length = data.length or max(spec.split_length(s) for s in spec.split_names)
    lookback = int(rule_lookbacks(spec, length).max(initial=0))
    message = f"{_dependencies(spec)} per target, all earlier; largest look-back {lookback}"
    return _result(tally, "bounded_window", [], message, 1), lookback


def hygiene_results(tallies: list[SplitTally]) -> tuple[list[CheckResult], dict[str, Any]]:
    """Repeated rows per split and seed windows shared between splits (errors if disjoint)."""
    results, facts = [], {}
    for tally in tallies:
        shared = {
            other.data.split: tally.hygiene.shared_with(other.hygiene)
            for other in tallies
            if other is not tally
        }
        repeated = tally.hygiene.repeated_rows()
        repeated_windows = tally.hygiene.repeated_windows()
        facts[tally.data.split] = {
            "repeated_rows": repeated,
            "repeated_windows": repeated_windows,
            "shared_windows": shared,
        }
        numbers = [f"{repeated} repeated row(s)", f"{repeated_windows} repeated seed window(s)"]
        numbers += [f"{n} window(s) shared with {s}" for s, n in shared.items() if n]
        message, bad = ", ".join(numbers), repeated + repeated_windows + sum(shared.values())
        if tally.data.spec.seeding == "paper":
            message, bad = message + " (expected for paper seeding)", 0
        results.append(_result(tally, "hygiene", [message] if bad else [], message, bad))
    return results, facts


def shortcut_facts(tally: SplitTally) -> dict[str, Any]:
    """Local, copy and linear rules of one split: each share with its counts."""
    spec, length = tally.data.spec, tally.data.length or 0
    boundary = min(spec.train_length, length)
    facts: dict[str, Any] = {}
    rules = local_rules(spec, length) if length > spec.window and tally.tokens else None
    facts["local_rule_method"] = rules.method if rules else NOT_COMPUTED
    for region, lo, hi in (("id", spec.window, boundary), ("ood", boundary, length)):
        shorter = rules.shorter(lo, hi) if rules else None
        facts[f"positions_{region}"] = max(0, hi - lo)
        facts[f"shorter_lookback_{region}"] = shorter
        facts[f"shorter_lookback_share_{region}"] = (
            None if shorter is None else _share(shorter, max(0, hi - lo))
        )
    facts["effective_lookback_max"] = rules.largest(spec.window, length) if rules else None
    shortcuts = tally.shortcuts
    audited = shortcuts.rows
    targets = {  # the rows the copy and linear rules were measured on
        "id": audited * max(0, boundary - spec.window),
        "ood": audited * max(0, length - boundary),
    }
    facts.update(audited_rows=audited, targets_id=targets["id"], targets_ood=targets["ood"])
    for name, context in (("k", spec.near), ("w", spec.window)):  # k = w when j = 0
        for region in ("id", "ood"):
            hits, found = shortcuts.copies.get((context, region), (0, 0))
            facts[f"copy_{name}_hits_{region}"] = hits
            facts[f"copy_{name}_found_{region}"] = found
            facts[f"copy_{name}_share_{region}"] = _share(hits, targets[region])
    for region in ("id", "ood"):  # linear is None when the rules are not computed
        hits, covered = shortcuts.linear[region] if shortcuts.linear else (None, None)
        facts[f"linear_rule_hits_{region}"] = hits
        facts[f"linear_rule_covered_{region}"] = covered
        facts[f"linear_rule_share_{region}"] = (
            None if hits is None else _share(hits, targets[region])
        )
    facts.update(question_facts(tally))
    return facts


def question_facts(tally: SplitTally) -> dict[str, Any]:
    """The question-consistency audit: whole under ``question_lookback``, and flat per region."""
    audit = tally.lookbacks.result() if tally.lookbacks is not None else None
    facts: dict[str, Any] = {
        "question_lookback": audit.model_dump(mode="json") if audit else None,
        "question_lookback_method": audit.method if audit else "no rows of a known length",
    }
    for region in ("id", "ood"):
        figures = getattr(audit, region) if audit else None
        facts[f"question_short_{region}"] = figures.short if figures else None
        facts[f"question_short_share_{region}"] = figures.short_share if figures else None
        facts[f"question_shortcut_share_{region}"] = figures.shortcut_share if figures else None
    return facts


NOT_COMPUTED = "not computed (composite m or m^w too large to enumerate, or window too wide)"


def _share(hits: int, total: int) -> float:
    return hits / total if total else 0.0


SHARE_FACTS = {"periodic_shortcut_share": "periodic copy share"} | {  # --max-shortcut-share's
    f"{key}_{region}": f"{title} ({region.upper()})"
    for key, title in (
        ("copy_k_share", "k-context copy share"),
        ("copy_w_share", "w-context copy share"),
        ("linear_rule_share", "linear-rule share"),
        ("shorter_lookback_share", "share of positions with a shorter look-back"),
        (
            "question_shortcut_share",
            "share of targets whose question-consistency look-back is "
            "at most k + 2 and below the rule's",
        ),
    )
    for region in ("id", "ood")
}


def audit_result(tally: SplitTally, limits: AuditThresholds) -> tuple[CheckResult, dict[str, Any]]:
    """Balance, shortcuts (periodic, copy, linear, local rules) and operand sensitivity."""
    spec, data = tally.data.spec, tally.data
    tv = tally.balance.max_tv() if tally.balance else 0.0
    noise = tally.balance.noise_tv() if tally.balance else 0.0
    ood_rows = tally.tokens // data.length if data.length else 0
    ood = max(0, (data.length or 0) - spec.train_length) * ood_rows
    share = tally.shortcut_hits / ood if ood else 0.0
    sensitivity, probes = tally.sensitivity or (1.0, 0)
    facts = {
        "target_balance_max_tv": tv,
        "target_balance_noise_tv": noise,
        "periodic_shortcut_share": share,
        "periodic_rows": tally.periodic_rows,
        "operand_sensitivity": sensitivity,
        "operand_probes": probes,
        **shortcut_facts(tally),
    }
    problems = []
    if limits.max_balance_tv is not None and tv > limits.max_balance_tv:
        problems.append(f"target balance TV {tv:.4f} > {limits.max_balance_tv}")
    if limits.max_shortcut_share is not None:
        for key, title in SHARE_FACTS.items():
            value = facts.get(key)
            if value is not None and value > limits.max_shortcut_share:
                problems.append(f"{title} {value:.4f} > {limits.max_shortcut_share}")
    if limits.min_operand_sensitivity is not None and sensitivity < limits.min_operand_sensitivity:
        problems.append(f"operand sensitivity {sensitivity:.4f} < {limits.min_operand_sensitivity}")
    copies = ", ".join(
        f"{name}-context copy share {facts.get(f'copy_{name}_share_id', 0):.3f} ID / "
        f"{facts.get(f'copy_{name}_share_ood', 0):.3f} OOD"
        for name in ("k", "w")
    )
    shorter = (
        "local rules over all seed windows n/a (composite m, m^w too large, or window too wide)"
        if facts["shorter_lookback_id"] is None
        else f"{facts['shorter_lookback_id']}/{facts['positions_id']} ID and "
        f"{facts['shorter_lookback_ood']}/{facts['positions_ood']} OOD positions with a "
        f"shorter look-back"
    )
    message = (
        f"max target TV {tv:.3f} (chance ~{noise:.3f}), periodic shortcut share {share:.4f} "
        f"({counted(tally.periodic_rows, 'periodic row')}), {copies}, {shorter}, "
        f"{_question_message(facts)}, operand sensitivity {sensitivity:.3f}"
    )
    return _result(tally, "audit", problems, message, len(problems)), facts


def _question_message(facts: dict[str, Any]) -> str:
    audit = facts["question_lookback"]
    if audit is None or not audit["computed"]:
        return f"question-consistency look-back {facts['question_lookback_method']}"
    shares = " / ".join(
        f"{audit[region]['short_share']:.3f} {region.upper()}"
        for region in ("id", "ood")
        if audit[region] is not None
    )
    return (
        f"question-consistency look-back <= k + 2 at {shares} "
        f"({counted(audit['rows'], 'row')}, {counted(audit['candidates'], 'candidate')})"
    )


def validate(
    source: Any,
    spec: TaskSpec | None = None,
    config: str | None = None,
    split: str | None = None,
    *,
    thresholds: AuditThresholds | None = None,
) -> Report:
    """Validate a dataset folder, a Parquet/Arrow file or a ``datasets`` object; ``spec`` is
    needed without a manifest. :class:`SourceError` for unusable input."""
    for name, value, kind in (
        ("spec", spec, TaskSpec),
        ("thresholds", thresholds, AuditThresholds),
    ):
        if value is not None and not isinstance(value, kind):
            raise SourceError(
                f"{name} must be a {kind.__name__} or None, not {type(value).__name__}"
            )
    if isinstance(source, os.PathLike) and isinstance(os.fspath(source), str):
        source = Path(source)  # any path object, as posgen.load takes
    if isinstance(source, (str, Path)):  # a folder replaced while read is read again
        return pinned(source, lambda: _validate(source, spec, config, split, thresholds))
    return _validate(source, spec, config, split, thresholds)


def _validate(source: Any, spec: TaskSpec | None, config, split, thresholds) -> Report:
    started = time.perf_counter()
    limits = thresholds or AuditThresholds()
    try:
        resolved = resolve(source, spec, config, split)
    except NotADataset as error:
        raise SourceError(str(error.lines[0])) from None
    except DamagedDataset as error:  # damaged data (exit 1), not a usage error
        return Report(checks=[damaged_result(error)], seconds=time.perf_counter() - started)
    report = Report(checks=check_integrity(resolved))
    by_config: dict[str, list] = {}
    probes = []
    for data in resolved.splits:
        if is_probe_split(data.split):
            probes.append(data)
        else:
            by_config.setdefault(data.config, []).append(stream_split(data))
    for config_name, tallies in by_config.items():
        facts = report.facts.setdefault(config_name, {})
        hygiene_checks, hygiene_facts = hygiene_results(tallies)
        for tally, hygiene in zip(tallies, hygiene_checks, strict=True):
            bounded, lookback = bounded_result(tally)
            audit, audit_facts = audit_result(tally, limits)
            report.checks += [schema_result(tally), window_result(tally), bounded, hygiene, audit]
            report.tokens_checked += tally.tokens
            length = tally.data.length or 0
            facts[tally.data.split] = {
                "rows": tally.rows,
                "length": length,
                "dependency_count": tally.data.spec.window,
                "max_lookback": lookback,
                **hygiene_facts[tally.data.split],
                **audit_facts,
                # at the length rows were read at, not one the manifest only claims
                **near_determined_counts(tally.data.spec, length * bool(tally.tokens)),
            }
    for data in probes:  # checked against the regenerated source rows (no audit facts)
        result, tally = check_probe_split(data)
        report.checks.append(result)
        report.tokens_checked += tally.tokens
    report.seconds = time.perf_counter() - started
    return report
