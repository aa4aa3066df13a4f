"""The validation report: one result per check, facts per config and split.

>>> report = Report(checks=[CheckResult(check="schema", config="cot", split="train",
...                                     ok=True, message="64 tokens a row")])
>>> report.ok, report.to_dict()["checks"][0]["failures"]
(True, 0)
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

CheckName = Literal["integrity", "schema", "window", "bounded_window", "hygiene", "audit", "probe"]
CHECKS: tuple[str, ...] = get_args(CheckName)


class CheckResult(BaseModel):
    """The outcome of one check on one config and split (``None``: not tied to one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    check: CheckName = Field(description="Which check produced this result.")
    config: str | None = Field(None, description="Config checked, if the check is per config.")
    split: str | None = Field(None, description="Split checked, if the check is per split.")
    ok: bool = Field(description="Whether the check passed.")
    message: str = Field(max_length=4000, description="One readable line.")
    failures: int = Field(0, ge=0, description="How many items failed (files, rows, positions).")

    @classmethod
    def of(
        cls,
        check: str,
        problems: list[Any],
        ok_message: str,
        *,
        config: str | None = None,
        split: str | None = None,
        failures: int | None = None,
        prefix: str = "",
    ) -> CheckResult:
        """Passed with ``ok_message`` without ``problems``; else failed, naming the first three.

        >>> CheckResult.of("schema", ["a", "b", "c", "d"], "fine").message
        'a; b; c (+1 more)'
        """
        if not problems:
            return cls(check=check, config=config, split=split, ok=True, message=ok_message)
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        return cls(
            check=check,
            config=config,
            split=split,
            ok=False,
            message=prefix + "; ".join(str(p) for p in problems[:3]) + more,
            failures=len(problems) if failures is None else failures,
        )


class Report(BaseModel):
    """Every check's result and the facts measured on the data."""

    model_config = ConfigDict(extra="forbid")

    checks: list[CheckResult] = Field(default_factory=list, description="Results, in order.")
    facts: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict, description="config -> split -> measured facts."
    )
    tokens_checked: int = Field(0, ge=0, description="Tokens read and checked.")
    seconds: float = Field(0.0, ge=0, description="Wall time of the validation.")

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed_kinds(self) -> list[str]:
        """The checks that failed at least once, in check order."""
        failed = {check.check for check in self.checks if not check.ok}
        return [name for name in CHECKS if name in failed]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON values (the ``--json`` output)."""
        return {
            "ok": self.ok,
            "failed_checks": self.failed_kinds,
            "tokens_checked": self.tokens_checked,
            "seconds": self.seconds,
            "tokens_per_second": self.tokens_checked / self.seconds if self.seconds else 0.0,
            "checks": [check.model_dump(mode="json") for check in self.checks],
            "facts": self.facts,
        }

    def summary(self, verbose: bool = False) -> str:
        """Failed checks (every check when ``verbose``), a facts table and a verdict line."""
        lines = []
        passed: dict[str, int] = {}
        for check in self.checks:
            if check.ok and not verbose:
                passed[check.check] = passed.get(check.check, 0) + 1
                continue
            where = "/".join(part for part in (check.config, check.split) if part) or "-"
            status = "ok  " if check.ok else "FAIL"
            lines.append(f"{status} {check.check:<14} {where:<24} {check.message}")
        if passed:
            lines.append("ok   " + ", ".join(f"{name} x{count}" for name, count in passed.items()))
        lines += ["", *_facts_table(self.facts), ""]
        rate = self.tokens_checked / self.seconds / 1e6 if self.seconds else 0.0
        verdict = "all checks passed" if self.ok else "FAILED: " + ", ".join(self.failed_kinds)
        lines.append(
            f"{verdict} ({self.tokens_checked:,} tokens in {self.seconds:.2f} s, "
            f"{rate:.1f} M tokens/s)"
        )
        return "\n".join(lines)


FACT_COLUMNS = (
    ("rows", "rows", "{}"),
    ("length", "length", "{}"),
    ("deps", "dependency_count", "{}"),
    ("lookback", "max_lookback", "{}"),
    ("repeated", "repeated_rows", "{}"),
    ("max TV", "target_balance_max_tv", "{:.3f}"),
    ("eff. lookback", "effective_lookback_max", "{}"),
    ("shorter ID", "shorter_lookback_id", "{}"),
    ("shorter OOD", "shorter_lookback_ood", "{}"),
    ("copy-k ID", "copy_k_share_id", "{:.3f}"),
    ("copy-k OOD", "copy_k_share_ood", "{:.3f}"),
    ("copy-w OOD", "copy_w_share_ood", "{:.3f}"),
    ("shortcut", "periodic_shortcut_share", "{:.4f}"),
    ("q<=k+2 ID", "question_short_share_id", "{:.3f}"),
    ("q<=k+2 OOD", "question_short_share_ood", "{:.3f}"),
    ("sensitivity", "operand_sensitivity", "{:.3f}"),
)


def _facts_table(facts: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    header = ["config/split", *(title for title, _, _ in FACT_COLUMNS), "shared windows"]
    rows = [header]
    for config, splits in facts.items():
        for split, fact in splits.items():
            shared = fact.get("shared_windows", {})
            rows.append(
                [
                    f"{config}/{split}",
                    *(
                        "n/a" if fact.get(key, 0) is None else form.format(fact.get(key, 0))
                        for _, key, form in FACT_COLUMNS
                    ),
                    # n/a: no other split was validated with it (--split) to compare
                    ", ".join(f"{n} with {s}" for s, n in shared.items() if n)
                    or ("0" if shared else "n/a"),
                ]
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
