"""``validate(source, spec)``: every check on a dataset, as one :class:`Report`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from posgen.spec import TaskSpec, is_probe_split
from posgen.store.dataset import pinned
from posgen.store.manifest import DamagedDataset, NotADataset
from posgen.validate.integrity import check_integrity, damaged_result
from posgen.validate.probe_check import check_probe_split
from posgen.validate.report import Report
from posgen.validate.run import AuditThresholds, stream_split
from posgen.validate.shortcuts import near_determined_counts
from posgen.validate.sources import SourceError, resolve
from posgen.validate.verdicts import (
    audit_result,
    bounded_result,
    hygiene_results,
    schema_result,
    window_result,
)


def validate(
    source: Any,
    spec: TaskSpec | None = None,
    config: str | None = None,
    split: str | None = None,
    *,
    thresholds: AuditThresholds | None = None,
) -> Report:
    """Validate a dataset folder, a Parquet/Arrow file or a ``datasets`` object.

    ``spec`` is needed when there is no manifest (``posgen.json``); with a manifest it
    must match the data's spec (integrity fails otherwise). ``config`` and ``split``
    restrict the run. Raises :class:`posgen.validate.SourceError` for unusable input. A
    folder replaced while it is read (``generate --overwrite``) is read again, so the report
    is about one dataset (:func:`posgen.store.dataset.pinned`).
    """
    if isinstance(source, (str, Path)):  # a folder: the old or the new dataset, never both
        return pinned(source, lambda: _validate(source, spec, config, split, thresholds=thresholds))
    return _validate(source, spec, config, split, thresholds=thresholds)


def _validate(
    source: Any,
    spec: TaskSpec | None,
    config: str | None,
    split: str | None,
    *,
    thresholds: AuditThresholds | None,
) -> Report:
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
        hygiene, hygiene_facts = hygiene_results(tallies)
        for tally, hygiene_check in zip(tallies, hygiene, strict=True):
            bounded, count, lookback = bounded_result(tally)
            audit, audit_facts = audit_result(tally, limits)
            report.checks += [
                schema_result(tally),
                window_result(tally),
                bounded,
                hygiene_check,
                audit,
            ]
            report.tokens_checked += tally.tokens
            facts[tally.data.split] = {
                "rows": tally.rows,
                "length": tally.data.length or 0,
                "dependency_count": count,
                "max_lookback": lookback,
                **hygiene_facts[tally.data.split],
                **audit_facts,
                **near_determined_counts(tally.data.spec, tally.data.length or 0),
            }
    for data in probes:  # checked against the regenerated source rows (no audit facts)
        result, tally = check_probe_split(data)
        report.checks.append(result)
        report.tokens_checked += tally.tokens
    report.seconds = time.perf_counter() - started
    return report
