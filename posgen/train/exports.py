"""``posgen results --format eee|hf``: each results cell (data, task, pe) as one model's record.

- ``eee``: ``OUT/<data>/<task>/<pe>.json``, an `Every Eval Ever
  <https://github.com/evaleval/every_eval_ever>`_ record (schema 0.2.1): one entry per metric
  and length bucket.
- ``hf``: ``OUT/<data>/<task>/<pe>/.eval_results/<metric>.yaml``, the Hugging Face Hub's
  evaluation-results files (``dataset.id``: the data folder's name).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from posgen import __version__
from posgen.errors import UsageError, counted
from posgen.spec import PROBE_SPLIT, probe_config
from posgen.train.results import cells

EEE_SCHEMA_VERSION = "0.2.1"
HF_METRICS = (
    ("id_accuracy", "id_mean", "id_std", "test accuracy, ID positions [w, L)"),
    ("ood_accuracy", "ood_mean", "ood_std", "test accuracy, OOD positions [L, L')"),
    ("id_far_reliance", "far_id_mean", "far_id_std", "probe far-reliance, ID positions"),
    ("ood_far_reliance", "far_ood_mean", "far_ood_std", "probe far-reliance, OOD positions"),
)

DESCRIPTIONS = {
    "accuracy": "Teacher-forced next-token accuracy on the test split",
    "far_reliance": "Share of probed targets predicted as the far-rule answer (probe split; "
    "1: the model reads the far operands, 0: it predicts from near tokens alone)",
}


def _safe(name: str) -> str:
    """A file-name-safe form of a label, never ``.`` or ``..``.

    >>> _safe("pkg.mod:NAME/x"), _safe(".."), _safe("")
    ('pkg.mod_NAME_x', '__', '_')
    """
    safe = "".join(c if c.isalnum() or c in "-_.+=" else "_" for c in name)
    return safe if safe.strip(".") else "_" * max(1, len(safe))


MAX_NAME_BYTES = 120  # longest safe form kept whole (file names stop at 255 bytes)


def _names(names: Iterable[str]) -> dict[str, str]:
    """Each name's :func:`_safe` form, cut and with 8 hex digits of its SHA-256 added when
    another name has the same form or it is longer than :data:`MAX_NAME_BYTES`.

    >>> _names(["a/b", "a_b", "rope"])
    {'a/b': 'a_b-c14cddc0', 'a_b': 'a_b-648fa9b3', 'rope': 'rope'}
    """
    safe = {name: _safe(name) for name in names}
    taken = Counter(safe.values())
    for name, form in safe.items():
        if taken[form] > 1 or len(form.encode()) > MAX_NAME_BYTES:
            cut = form.encode()[:MAX_NAME_BYTES].decode(errors="ignore")
            safe[name] = f"{cut}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return safe


def _strings(values: dict[str, Any]) -> dict[str, str]:
    """``additional_details``: every value a string."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def _scored(task: str, metric: str) -> dict[str, str]:
    """The config and split ``metric`` was computed on: accuracy on ``test``, far-reliance on
    the probe config's ``probe`` split.

    >>> _scored("cot", "ood_far_reliance")
    {'config': 'cot-probe', 'split': 'probe'}
    """
    if metric.endswith("far_reliance"):
        return {"config": probe_config(task), "split": PROBE_SPLIT}
    return {"config": task, "split": "test"}


def eee_record(
    data: str, task: str, pe: str, cell: dict[str, Any], entry: dict[str, Any], now: float
) -> dict[str, Any]:
    """One cell as an Every Eval Ever record."""
    model_id = f"posgen/{data}/{task}/{pe}"
    stamp = f"{now:.0f}"
    results = []
    for bucket in cell.get("buckets", []):
        metric, start, end = bucket["metric"], bucket["start"], bucket["end"]
        spec = {**_scored(task, metric), "spec_id": entry["spec_ids"][task]}
        source = {
            "dataset_name": data,
            "source_type": "other",
            "additional_details": _strings(spec),
        }
        region = "ID" if end <= cell["ood_boundary"] else "OOD"
        details = {"metric": metric, "bucket_start": start, "bucket_end": end, "region": region}
        uncertainty: dict[str, Any] = {"num_samples": bucket["n"]}
        if bucket["std"] is not None:
            uncertainty["standard_deviation"] = bucket["std"]
            uncertainty["standard_error"] = {
                "value": bucket["std"] / bucket["n"] ** 0.5,
                "method": "analytic (sample std over seeds / sqrt(n))",
            }
        results.append(
            {
                "evaluation_name": f"posgen {task} {metric} positions [{start}, {end})",
                "source_data": source,
                "metric_config": {
                    "evaluation_description": f"{DESCRIPTIONS[metric]}, positions "
                    f"[{start}, {end}) ({region}); mean over seeds",
                    "lower_is_better": False,
                    "score_type": "continuous",
                    "min_score": 0.0,
                    "max_score": 1.0,
                    "additional_details": _strings(details),
                },
                "score_details": {
                    "score": bucket["mean"],
                    "uncertainty": uncertainty,
                    "details": _strings({"seeds": " ".join(map(str, cell["seeds"]))}),
                },
            }
        )
    return {
        "schema_version": EEE_SCHEMA_VERSION,
        "evaluation_id": f"{model_id}/{stamp}",
        "retrieved_timestamp": stamp,
        "source_metadata": {
            "source_name": "posgen results",
            "source_type": "evaluation_run",
            "source_organization_name": "posgen",
            "evaluator_relationship": "first_party",
        },
        "model_info": {
            "name": f"Llama, position encoding {pe}, trained on {data}/{task}",
            "id": model_id,
            "developer": "posgen",
            "additional_details": _strings(
                {"position_encoding": pe, "source": cell.get("source") or "", "n": cell["n"]}
            ),
        },
        "eval_library": {"name": "posgen", "version": __version__},
        "evaluation_results": results,
    }


def hf_entries(data: str, task: str, cell: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``{metric file stem: [entry]}`` of one cell (metrics without a value are left out)."""
    out = {}
    for stem, mean_key, std_key, description in HF_METRICS:
        if (mean := cell.get(mean_key)) is None:
            continue
        std = cell.get(std_key)
        spread = "" if std is None else f" ± {std:.4f} (sample std)"
        out[stem] = [
            {
                "dataset": {"id": data, "task_id": task, **_scored(task, stem)},
                "value": round(float(mean), 6),
                "notes": f"{description}; mean over n = {counted(cell['n'], 'seed')}{spread}; "
                f"L = {cell['ood_boundary']}, L' = {cell['length']}",
            }
        ]
    return out


def export_time() -> float:
    """Now, or ``SOURCE_DATE_EPOCH`` when set (a rerun writes the same bytes)."""
    fixed = os.environ.get("SOURCE_DATE_EPOCH")
    if fixed is None:
        return time.time()
    if not (fixed.isascii() and fixed.isdigit()) or len(fixed) > 12:  # "²".isdigit() too
        raise UsageError(f"SOURCE_DATE_EPOCH must be whole seconds since 1970, got {fixed!r}")
    return float(fixed)


def write_export(results: dict[str, Any], folder: Path, kind: str) -> None:
    """Write the ``kind`` (``eee`` or ``hf``) files of ``results`` under ``folder``."""
    now = export_time()
    datas = _names(results)
    tasks = {data: _names(entry["tasks"]) for data, entry in results.items()}
    pes = {(d, t): _names(row) for d, e in results.items() for t, row in e["tasks"].items()}
    for data, task, pe, cell, entry in cells(results):
        base = Path(folder) / datas[data] / tasks[data][task]
        name = pes[data, task][pe]
        if kind == "eee":
            base.mkdir(parents=True, exist_ok=True)
            record = eee_record(data, task, pe, cell, entry, now)
            (base / f"{name}.json").write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
            continue
        target = base / name / ".eval_results"
        target.mkdir(parents=True, exist_ok=True)
        for stem, entries in hf_entries(data, task, cell).items():
            text = yaml.safe_dump(entries, sort_keys=False, allow_unicode=True)
            (target / f"{stem}.yaml").write_text(text)
