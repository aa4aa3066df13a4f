"""Check 1, integrity: the files a manifest lists are there, unchanged, and nothing else is.

The file-versus-manifest check is :mod:`posgen.store.dataset` (the same lines ``posgen.load``
and ``posgen merge`` print); this module groups its problems into one result per (config,
split), adds whether the spec the user gave is the data's spec, and one result for unlisted
data files. A manifest that cannot be read at all is one failing result
(:func:`damaged_result`).
"""

from __future__ import annotations

from posgen.spec import TaskSpec
from posgen.store.dataset import Problem, check_files
from posgen.store.manifest import DamagedDataset
from posgen.validate.report import CheckResult
from posgen.validate.sources import Source

SHOWN = 3
"""Problems spelled out in one result's message (the rest are counted)."""


def check_integrity(source: Source) -> list[CheckResult]:
    """One result per (config, split) of the manifest, and one for unlisted files."""
    if source.manifest is None or source.root is None:
        return []
    configs = list(dict.fromkeys(data.config for data in source.splits))
    problems = check_files(source.root, source.manifest, configs)
    results = []
    for config in configs:
        recorded = source.manifest.configs[config].spec
        given = source.given_spec
        head = []
        if given is not None and given.spec_id != recorded.spec_id:
            head.append(
                f"the given spec ({given.spec_id}) does not match the data's spec "
                f"({recorded.spec_id})" + _spec_difference(given, recorded)
            )
        for data in source.splits:
            if data.config != config:
                continue
            mine = [str(p) for p in problems if (p.config, p.split) == (config, data.split)]
            files = len(source.manifest.configs[config].splits[data.split].files)
            results.append(_result(config, data.split, head + mine, files))
            head = []
    results.append(_unlisted([p for p in problems if p.config is None]))
    return results


def damaged_result(error: DamagedDataset) -> CheckResult:
    """The one failing result of a folder whose manifest cannot be used."""
    lines = error.lines
    more = f" (+{len(lines) - SHOWN} more)" if len(lines) > SHOWN else ""
    return CheckResult(
        check="integrity", ok=False, message="; ".join(lines[:SHOWN]) + more, failures=len(lines)
    )


def _spec_difference(given: TaskSpec, recorded: TaskSpec) -> str:
    a, b = given.canonical(), recorded.canonical()
    diff = [f"{key} {a[key]!r} vs {b[key]!r}" for key in a if a[key] != b[key]]
    return ": " + ", ".join(diff) if diff else ""


def _unlisted(problems: list[Problem]) -> CheckResult:
    if not problems:
        return CheckResult(check="integrity", ok=True, message="no unlisted data files")
    more = f" (+{len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
    return CheckResult(
        check="integrity",
        ok=False,
        message=f"{len(problems)} data file(s) not in the manifest: "
        + "; ".join(str(p) for p in problems[:SHOWN])
        + more,
        failures=len(problems),
    )


def _result(config: str, split: str, problems: list[str], files: int) -> CheckResult:
    if not problems:
        return CheckResult(
            check="integrity",
            config=config,
            split=split,
            ok=True,
            message=f"{files} file(s) match the manifest (sha256, rows, spec id)",
        )
    more = f" (+{len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
    return CheckResult(
        check="integrity",
        config=config,
        split=split,
        ok=False,
        message="; ".join(problems[:SHOWN]) + more,
        failures=len(problems),
    )
