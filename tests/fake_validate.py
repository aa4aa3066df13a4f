"""STAND-IN for ``posgen.validate`` (being written in parallel; not in this branch yet).

It follows the validator's contract (``validate(source, spec=None, config=None,
split=None) -> Report`` with ``ok`` and ``to_dict()``) closely enough to test the card and
publish logic. It checks only that the folder's files match the manifest's checksums; the
audit figures are placeholders derived from the manifest. Tests install it with the
``fake_validator`` fixture; after the merge the real validator replaces it everywhere else.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posgen.store.manifest import read_manifest, sha256_file

CHECKS = ("integrity", "schema", "window", "bounded_window", "hygiene", "audit")
SECONDS = 12.3456789
"""A timing no card may contain (renderers must be deterministic)."""


@dataclass
class Report:
    ok: bool
    tokens_checked: int
    checks: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "tokens_checked": self.tokens_checked,
            "seconds": SECONDS,
            "checks": self.checks,
            "facts": self.facts,
        }


def make_module(fail: str | None = None) -> types.ModuleType:
    """A module object standing in for ``posgen.validate``; ``fail`` names a check to fail."""
    calls: list[Path] = []

    def validate(source, spec=None, config=None, split=None) -> Report:
        root = Path(source)
        calls.append(root)
        manifest = read_manifest(root)
        checks, facts, tokens = [], {}, 0
        for name, entry in manifest.configs.items():
            for split_name, info in entry.ordered_splits.items():
                intact = all(sha256_file(root / item.path) == item.sha256 for item in info.files)
                for kind in CHECKS:
                    ok = intact and kind != fail
                    checks.append(
                        {
                            "check": kind,
                            "config": name,
                            "split": split_name,
                            "ok": ok,
                            "message": "ok" if ok else f"{kind} failed in {root}",
                            "failures": 0 if ok else 3,
                        }
                    )
                tokens += info.rows * info.length
                others = [s for s in entry.ordered_splits if s != split_name]
                facts.setdefault(name, {})[split_name] = {
                    "rows": info.rows,
                    "length": info.length,
                    "dependency_count": info.seed_window,
                    "max_lookback": info.seed_window,
                    "repeated_rows": 0,
                    "shared_windows": dict.fromkeys(others, 0),
                    "target_balance_max_tv": 0.0625,
                    "periodic_shortcut_share": 0.0,
                    "operand_sensitivity": 1.0,
                }
        return Report(all(c["ok"] for c in checks), tokens, checks, facts)

    module = types.ModuleType("posgen.validate")
    module.__doc__ = "Stand-in for the real validator (tests only)."
    module.validate = validate
    module.Report = Report
    module.calls = calls
    return module
