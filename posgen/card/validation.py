"""The card's validation section, from a report of :func:`posgen.validate.validate`.

The report is used as ``Report.to_dict()`` returns it. Only deterministic parts are
rendered (never ``seconds``, never the messages of passing checks), so the same data
always gives the same card. Without a report the card says the data was not validated.
"""

from __future__ import annotations

from typing import Any

from posgen.card.markdown import table

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
    ("periodic_shortcut_share", "periodic shortcut share"),
    ("operand_sensitivity", "operand sensitivity"),
    ("near_determined_id", "near-determined positions, ID"),
    ("near_determined_ood", "near-determined positions, OOD"),
]

AUDIT_NOTES = """\
- *dependencies per target*: how many earlier positions each target was proven to read
  (w = j + k for every task); *max look-back*: the largest distance from a target to an operand.
- *repeated rows*: rows whose whole sequence occurs earlier in the split.
- *seed windows shared with*: rows whose seed window also starts a row of the other split.
- *target balance (max TV)*: the largest total-variation distance, over positions, between the
  targets at that position and the uniform distribution on {0, ..., m-1}.
- *periodic shortcut share*: share of targets that a short-period copy rule would predict.
- *operand sensitivity*: share of single-operand changes that change the target.
- *near-determined positions*: positions t whose target is a fixed function of its k near
  tokens alone, for every seed window (`posgen.shortcuts`: exact for additive h and prime m;
  n/a otherwise). There the far operands are redundant, so the position does not test
  long-range dependency. In the paper's setup only semirecursive has such positions
  (e.g. x_6 = x_3 + 3 x_4 mod 17), recursive and cot have none."""


def _shared(value: Any) -> str:
    if not value:
        return "none"
    return ", ".join(f"{split}: {count:,}" for split, count in sorted(value.items()))


def checks_table(checks: list[dict[str, Any]]) -> str:
    """One row per kind of check: how many passed, how many failed, total failures."""
    kinds: dict[str, list[int]] = {}
    for check in checks:
        tally = kinds.setdefault(check["check"], [0, 0, 0])
        tally[0 if check["ok"] else 1] += 1
        tally[2] += int(check["failures"])
    rows = [[kind, passed, failed, failures] for kind, (passed, failed, failures) in kinds.items()]
    return table(["check", "passed", "failed", "failures"], rows)


def failed_checks(checks: list[dict[str, Any]]) -> str:
    """The failing checks with their messages."""
    rows = [
        [c["check"], c.get("config"), c.get("split"), c["failures"], c["message"]]
        for c in checks
        if not c["ok"]
    ]
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
                row.append("n/a" if value is None else value)
            rows.append(row)
    return table(["config", "split", *(title for _, title in FACT_COLUMNS)], rows)


def validation_section(report: dict[str, Any] | None) -> str:
    """The whole section: status, checks, failures (if any) and audit figures."""
    parts = ["## Validation and audit", ""]
    if report is None:
        return "\n".join([*parts, NOT_VALIDATED])
    checks = report["checks"]
    failed = sum(not c["ok"] for c in checks)
    if report["ok"]:
        status = (
            f"**Validated: all {len(checks):,} checks passed**; "
            f"{report['tokens_checked']:,} tokens were recomputed from their windows."
        )
    else:
        status = (
            f"**Validation FAILED: {failed:,} of {len(checks):,} checks failed** "
            f"({report['tokens_checked']:,} tokens checked). Do not use this data."
        )
    parts += [status, "", checks_table(checks)]
    if failed:
        parts += ["", "Failing checks:", "", failed_checks(checks)]
    parts += [
        "",
        "Audit figures (from `posgen validate`):",
        "",
        facts_table(report.get("facts", {})),
        "",
        AUDIT_NOTES,
    ]
    return "\n".join(parts)
