"""Counts the hardening tests collect and ``conftest.py`` prints in the session summary.

Each kind of check records ``(key, ok)``: the key names one distinct case (a bad input,
a kill point, a damage), ``ok`` whether it was handled as required. Tests still assert;
the counts say how much was tried.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

CASES: dict[str, dict[str, bool]] = defaultdict(dict)

LABELS = {
    "bad_input": "distinct bad inputs tried, {ok} rejected cleanly "
    "(exit 2, one error line per problem naming the field, no traceback, nothing created)",
    "valid_spec": "random valid specs generated, {ok} validated against the oracle",
    "kill": "kill points signalled mid-run, {ok} survived with nothing lost "
    "(target absent or complete, old dataset intact, rerun byte-identical)",
    "kill_finished": "kill points reached after the run had finished (dataset complete)",
    "disk": "disk-full / unwritable cases, {ok} failed cleanly (path named, nothing left)",
    "resources": "oversized specs, {ok} refused up front with the estimate",
    "damage": "damage cases on real files, {ok} detected with the file named",
    "hostile": "hostile inputs outside the spec flags (permissions, names, prediction and "
    "data files, API misuse), {ok} answered with one error line or a clean result",
    "bomb": "resource bombs (alias bombs, deep nesting, lying headers, huge counts), "
    "{ok} refused before using the memory they ask for",
    "path_escape": "path-escape attempts, {ok} refused without reading or writing outside",
    "race": "concurrency races (readers during a replace, owners in other PID namespaces, "
    "killed parents' workers, parts finishing at once), {ok} seen whole with nothing lost",
    "target": "targets holding something else (user files, other datasets, symlinks), "
    "{ok} refused or followed with no file outside the target changed",
    "unexpected": "unexpected exceptions at the top of the CLI, {ok} shown as one error line",
}


def record(kind: str, key: str, ok: bool) -> None:
    """Note one case; the same key twice counts once (hypothesis replays examples)."""
    CASES[kind][key] = CASES[kind].get(key, True) and ok


def summary_lines() -> list[str]:
    """One line per kind that ran, e.g. ``bad inputs: 412 distinct ..., 412 rejected ...``."""
    lines = []
    for kind, label in LABELS.items():
        cases = CASES.get(kind)
        if cases:
            ok = sum(cases.values())
            lines.append(f"{len(cases)} {label.format(ok=ok)}")
    return lines


@contextmanager
def recorded(kind: str, key: str) -> Iterator[None]:
    """Record the case as handled when the block's asserts pass, as not handled when one fails.

    Lets a hardening test assert one condition per ``assert`` and still be counted::

        with recorded("disk", "file-size limit 0"):
            assert proc.returncode == 1
            assert not out.exists()
    """
    try:
        yield
    except BaseException:
        record(kind, key, False)
        raise
    record(kind, key, True)
