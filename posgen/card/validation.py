"""The card's validation section, from a report of :func:`posgen.validate.validate`.

Only deterministic parts of the :class:`~posgen.validate.report.Report` are rendered (never
``seconds``, never the messages of passing checks), so the same data always gives the same
card. Without a report the card says the data was not validated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from posgen.card.markdown import table

if TYPE_CHECKING:
    from posgen.validate.report import CheckResult, Report

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
    parts = ["## Validation and audit", ""]
    if report is None:
        return "\n".join([*parts, NOT_VALIDATED])
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
    parts += [status, "", checks_table(checks)]
    if failed:
        parts += ["", "Failing checks:", "", failed_checks(checks)]
    parts += [
        "",
        "Audit figures (from `posgen validate`):",
        "",
        facts_table(report.facts),
        "",
        AUDIT_NOTES,
        "",
        "Question-consistency look-backs (from `posgen validate`):",
        "",
        question_table(report.facts),
        "",
        QUESTION_NOTES,
    ]
    return "\n".join(parts)
