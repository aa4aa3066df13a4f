"""Aggregate ``posgen train`` run folders into the results table (no torch needed).

Runs are grouped by (data folder, task, position encoding) into cells, mean and sample std
over seeds; copies of a run and cells mixing settings are refused::

    runs/posgen-v1/cot/rope/seed42/results.json   ID 1.000  OOD 0.512
    runs/posgen-v1/cot/rope/seed49/results.json   ID 0.998  OOD 0.488
    -> posgen-v1 | cot | rope | 2 | 0.999 ± 0.001 | 0.500 ± 0.017
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import platform
import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posgen.encodings import pe_order
from posgen.errors import UsageError, counted, mean_std_cell, shown
from posgen.scoring.metrics import bucket_edges
from posgen.scoring.plot import save_figure
from posgen.scoring.reliance import measure_sentences
from posgen.store.safety import OLD_TAG, TMP_TAG, walk
from posgen.train import FILES, MODEL
from posgen.train.run_record import RunRecord


class ResultsError(UsageError, ValueError):
    """The run folders given cannot be aggregated as they are (exit 2)."""


@dataclass(frozen=True)
class Run:
    """One finished run folder and its record."""

    path: Path
    record: RunRecord


def _run_like(names: Iterable[str]) -> bool:
    return any(name in FILES for name in names)


def _unfinished(path: Path) -> str | None:
    """Why ``path`` is a run folder that is not finished (None when it is one)."""
    if TMP_TAG in path.name or OLD_TAG in path.name:
        return f"{path}: the build folder of a run that was killed or is still running"
    missing = [name for name in FILES if not os.path.lexists(path / name)]  # damage: read_run
    return f"{path}: not a finished run (no {', '.join(missing)})" if missing else None


def _holding_link(link: Path, roots: Sequence[str]) -> str | None:
    """Why the walk does not follow ``link`` (None when it may): a link to a folder holding
    one of the folders given (``/``, a parent), outside them all, would walk past what was
    named, up to the whole file system."""
    if not os.path.islink(link):
        return None
    target = os.path.realpath(link)
    if any(os.path.commonpath([target, root]) == root for root in roots):
        return None  # inside a folder given: walked anyway, each folder once
    held = [root for root in roots if os.path.commonpath([target, root]) == target]
    if not held:
        return None
    return f"{link}: a link to {target}, a folder holding {held[0]} (not followed)"


def find_runs(paths: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """Run folders among ``paths`` and below them (links followed, each once, never into a
    run's ``model/`` nor to a folder holding one of ``paths``), sorted, and why unfinished
    ones were skipped."""
    found: list[Path] = []
    seen: set[str] = set()
    skipped: list[str] = []
    if isinstance(paths, str | os.PathLike):  # one path, not its characters ("/" first)
        paths = [paths]
    paths = list(paths)
    if bad := [path for path in paths if not isinstance(path, str | os.PathLike)]:
        raise ResultsError(f"a run folder is a path, not {type(bad[0]).__name__}")
    paths = list(map(Path, paths))
    roots = [os.path.realpath(path) for path in paths]
    for path in paths:
        if not path.is_dir():
            file = "is a file, not a folder: give the run folder"
            raise ResultsError(f"{path}: {file if path.exists() else 'no such folder'}")
        if _run_like(os.listdir(path)) and (why := _unfinished(path)) is not None:
            raise ResultsError(f"{why}; it cannot be counted")
        for folder, dirs, files in walk(path, followlinks=True, strict=True):  # none unseen
            here = Path(folder)
            real = os.path.realpath(here)
            if real in seen:
                dirs[:] = []
                continue
            seen.add(real)
            for name in sorted(d for d in dirs if d.startswith(".")):
                if _run_like(os.listdir(here / name)):
                    skipped.append(f"skipped {_unfinished(here / name)} (not counted)")
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in list(dirs):
                if (why := _holding_link(here / name, roots)) is not None:
                    skipped.append(f"skipped {why}")
                    dirs.remove(name)
            if not _run_like(files):
                continue
            if (why := _unfinished(here)) is not None:
                skipped.append(f"skipped {why} (not counted)")
            else:
                found.append(here)
                dirs[:] = [d for d in dirs if d != MODEL]
    return sorted(found), skipped


def check_distinct(runs: Sequence[Run]) -> None:
    """Refuse a table of runs on different datasets under one folder name, a cell mixing
    encodings of one label (two plugins' sources) or settings, and copies of one run, in that
    order."""
    by_seed: dict[tuple[Any, ...], Run] = {}
    by_table: dict[tuple[str, str], Run] = {}
    by_cell: dict[tuple[str, str, str], Run] = {}
    for run in runs:
        seed, cell = (*run.record.key, run.record.seed), "/".join(run.record.key)
        first = by_table.setdefault(run.record.key[:2], run)
        if _data(run) != _data(first):
            ids = (first.record.spec.spec_id, run.record.spec.spec_id)
            which = f"spec ids {ids[0]} and {ids[1]}" if ids[0] != ids[1] else "other files"
            raise ResultsError(
                f"{first.path} and {run.path} are in one table "
                f"({'/'.join(run.record.key[:2])}) but were trained on different datasets "
                f"whose folders share the name {run.record.key[0]} ({which}); give runs of "
                "one dataset per folder name"
            )
        other = by_cell.setdefault(run.record.key, run)
        sources = (other.record.position_encoding.source, run.record.position_encoding.source)
        if sources[0] != sources[1]:
            raise ResultsError(
                f"{other.path} and {run.path} are in one cell ({cell}) but are different "
                f"encodings of one label, from {sources[0]} and {sources[1]}: their seeds "
                "are never averaged; give one plugin another name"
            )
        if _settings(run) != _settings(other):
            raise ResultsError(
                f"{other.path} and {run.path} are in one cell ({cell}) but were "
                "trained with different settings (preset or --flags); give runs of one setting"
            )
        if (copy := by_seed.setdefault(seed, run)) is not run:
            raise ResultsError(
                f"{copy.path} and {run.path} are the same run ({cell}, seed "
                f"{run.record.seed}): copies are never averaged; give one of them"
            )


def _data(run: Run) -> tuple[Any, ...]:
    return (run.record.spec.spec_id, tuple(sorted(run.record.data.files.items())))


def _settings(run: Run) -> tuple[Any, ...]:
    train = run.record.train.model_dump(mode="json", exclude={"seeds"})
    return (run.record.preset, json.dumps(train, sort_keys=True))


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values that are not None (None when there
    are none, and the std for one value).

    >>> mean_std([1.0, 0.5, None])
    (0.75, 0.3535533905932738)
    """
    present = [value for value in values if value is not None]
    spread = statistics.stdev(present) if len(present) > 1 else None
    return (statistics.fmean(present) if present else None), spread


def pooled(curves: Sequence[Any], hits: str, counts: str) -> list[float]:
    """Per-position ratio of ``hits`` to ``counts`` summed over ``curves`` (same positions).

    >>> from types import SimpleNamespace as C
    >>> pooled([C(c=[1, 0], t=[2, 0]), C(c=[1, 0], t=[2, 0])], "c", "t")
    [0.5, nan]
    """
    hit, count = (
        [sum(values) for values in zip(*(getattr(c, name) for c in curves), strict=True)]
        for name in (hits, counts)
    )
    return [h / n if n else math.nan for h, n in zip(hit, count, strict=True)]


def far_reliance(runs: Sequence[Run]) -> dict[str, Any]:
    """Far-reliance of a cell's runs: ID and OOD mean ± std, and the seed-pooled curve."""
    reports = [run.record.probe_scores for run in runs]
    out: dict[str, Any] = {"far_n": len(reports)}
    for region in ("id", "ood"):
        mean, std = mean_std([getattr(r, region).far_reliance for r in reports])
        out[f"far_{region}_mean"], out[f"far_{region}_std"] = mean, std
    shares = pooled([r.curve for r in reports], "far", "counted")  # nan: no probed target
    shares = [None if math.isnan(share) else share for share in shares]  # null in the JSON
    out["far_curve"] = {"position": reports[0].curve.position, "far_reliance": shares}
    return out


ATTENTION_FIGURES = ("entropy", "normalized_entropy", "far_share")


def _mean(values: Iterable[float | None]) -> float | None:
    return mean_std(list(values))[0]


def attention_summary(runs: Sequence[Run]) -> dict[str, Any]:
    """Per layer and region, each figure's mean over the seeds that measured it, and its mean
    over layers: ``attn_flat_{id,ood}`` (normalized entropy), ``attn_far_{id,ood}``."""
    records = [run.record.attention for run in runs if run.record.attention is not None]
    out: dict[str, Any] = {"attn_n": len(records)}
    layers: list[dict[str, Any]] = []
    for index in range(max((len(r.layers) for r in records), default=0)):
        entry: dict[str, Any] = {"layer": index}
        for region in ("id", "ood"):
            parts = [getattr(r.layers[index], region) for r in records if index < len(r.layers)]
            parts = [p for p in parts if p is not None]
            means = {name: _mean(getattr(p, name) for p in parts) for name in ATTENTION_FIGURES}
            entry[region] = means if parts else None
        layers.append(entry)
    if layers:
        out["attention"] = layers
    for region in ("id", "ood"):
        regions = [layer[region] for layer in layers if layer[region] is not None]
        out[f"attn_flat_{region}"] = _mean(r["normalized_entropy"] for r in regions)
        out[f"attn_far_{region}"] = _mean(r["far_share"] for r in regions)
    return out


def length_buckets(window: int, boundary: int, length: int) -> list[tuple[int, int]]:
    """The exports' length buckets: ID ``[w, L)``, then OOD in steps of L up to L'.

    >>> length_buckets(4, 64, 256)
    [(4, 64), (64, 128), (128, 192), (192, 256)]
    """
    return list(itertools.pairwise(bucket_edges(window, length, boundary, width=boundary)))


def _bucket_ratio(curve: Any, hits: str, counts: str, start: int, end: int) -> float | None:
    columns = (curve.position, getattr(curve, hits), getattr(curve, counts))
    pairs = [(h, n) for p, h, n in zip(*columns, strict=True) if start <= p < end]
    total = sum(n for _, n in pairs)
    return sum(h for h, _ in pairs) / total if total else None


def buckets(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Per length bucket and metric (test ``accuracy``, probe ``far_reliance``), the per-run
    ratio's mean, sample std and n."""
    scores = runs[0].record.scores
    metrics = (
        ("accuracy", [r.record.scores.curve for r in runs], "correct", "tokens"),
        ("far_reliance", [r.record.probe_scores.curve for r in runs], "far", "counted"),
    )
    out = []
    for start, end in length_buckets(scores.seed_window, scores.ood_boundary, scores.length):
        for metric, curves, hits, counts in metrics:
            values = [_bucket_ratio(c, hits, counts, start, end) for c in curves]
            measured = sum(value is not None for value in values)
            if measured:
                mean, std = mean_std(values)
                bucket = {"start": start, "end": end, "mean": mean, "std": std}
                out.append({"metric": metric, **bucket, "n": measured})
    return out


def trend(positions: Sequence[int], values: Sequence[float]) -> float:
    """Least-squares slope times the span of ``positions``: the fitted change across them.

    >>> round(trend([0, 1, 2], [0.5, 0.6, 0.7]), 6), trend([4], [0.5])  # one position: no fit
    (0.2, 0.0)
    """
    if len(positions) < 2:
        return 0.0
    slope = statistics.linear_regression(positions, values).slope
    return slope * (positions[-1] - positions[0])


def cell(runs: Sequence[Run]) -> dict[str, Any]:
    reports = [run.record.scores for run in runs]
    id_mean, id_std = mean_std([r.id.accuracy or 0.0 for r in reports])
    ood_mean, ood_std = mean_std([r.ood.accuracy for r in reports])
    boundary = reports[0].ood_boundary
    positions = reports[0].curve.position
    curve = pooled([r.curve for r in reports], "correct", "tokens")
    id_positions = [p for p in positions if p < boundary]
    id_curve = curve[: len(id_positions)]
    encoding = runs[0].record.position_encoding
    return {
        "seeds": sorted(run.record.seed for run in runs),
        "n": len(runs),
        "ood_boundary": boundary,
        "length": reports[0].length,
        "id_mean": id_mean,
        "id_std": id_std,
        "ood_mean": ood_mean,
        "ood_std": ood_std,
        "id_curve_range": max(id_curve) - min(id_curve) if id_curve else None,
        "id_curve_trend": trend(id_positions, id_curve) if id_curve else None,
        "best_epochs": [run.record.best_epoch for run in runs],
        "effective_length": effective_length(
            positions, curve, reports[0].seed_window, boundary, 1 / reports[0].modulus
        ),
        "when": encoding.when,
        "source": encoding.source,
        "confound": encoding.confound,
        "curve": {"position": positions, "accuracy": curve},
        **far_reliance(runs),
        **attention_summary(runs),
        "buckets": buckets(runs),
    }


def cells(results: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any], Any]]:
    """``(data, task, pe, cell, data entry)`` of every cell of :func:`aggregate`'s results."""
    for data, entry in results.items():
        for task, pes in entry["tasks"].items():
            for pe, cell in pes.items():
                yield data, task, pe, cell, entry


def aggregate(runs: Sequence[Run]) -> dict[str, Any]:
    """Cells by data folder: ``{data: {"spec_ids", "tasks": {task: {pe: cell}}}}``, the
    encodings in table order."""
    groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.record.key].append(run)
    out: dict[str, Any] = {}
    for data, task, pe in sorted(groups, key=lambda k: (k[0], k[1], pe_order(k[2]))):
        members = groups[data, task, pe]
        entry = out.setdefault(data, {"spec_ids": {}, "tasks": {}})
        entry["spec_ids"][task] = members[0].record.spec.spec_id
        entry["tasks"].setdefault(task, {})[pe] = cell(sorted(members, key=lambda r: r.path))
    return out


def task_lengths(entry: dict[str, Any], task: str) -> str:
    """``L = 64, L' = 256`` of ``task``'s cells."""
    first = next(iter(entry["tasks"][task].values()))
    return f"L = {first['ood_boundary']}, L' = {first['length']}"


def run_settings(runs: Sequence[Run]) -> dict[str, Any]:
    """Presets, model sizes, devices, threads and versions the runs used (distinct values)."""

    def distinct(getter: Any) -> list[Any]:
        values = {json.dumps(getter(run.record), sort_keys=True) for run in runs}
        return [json.loads(v) for v in sorted(values)]

    return {
        "presets": distinct(
            lambda r: {"preset": r.preset, **r.train.model_dump(mode="json", exclude={"seeds"})}
        ),  # without the preset's default seeds: each cell lists the seeds its runs used
        "devices": distinct(lambda r: r.device),
        "torch_threads": distinct(lambda r: r.torch_threads),
        "versions": distinct(lambda r: r.versions),
        "train_seconds": sum(run.record.wall_seconds or 0.0 for run in runs),
    }


def tables(results: dict[str, Any]) -> list[str]:
    """Markdown tables, one per data folder: task x pe, ID and OOD mean ± std, seeds."""
    lines: list[str] = []
    for data, entry in results.items():
        lengths = {task_lengths(entry, task) for task in entry["tasks"]}
        per_task = "; ".join(f"{task}: {task_lengths(entry, task)}" for task in entry["tasks"])
        lengths_text = next(iter(lengths)) if len(lengths) == 1 else per_task
        lines += [
            f"### {_cell(data)}",
            "",
            f"Test split, {lengths_text}; mean ± std "
            "over n seeds. ID-curve range and trend: max - min and fitted change of the "
            "per-position ID accuracy across [w, L). Far-reliance (probe split, same "
            "weights): share of probed targets predicted as the far-rule answer where it "
            "differs from the stored token (1: the model reads the far operand; 0: it "
            "predicts from near tokens alone). Attention (one extra forward pass over the "
            "first test rows, mean over layers, heads and seeds; per layer in the JSON), ID -> "
            "OOD: flatness, the attention entropy / log(t + 1) (1: uniform over the inputs, 0: "
            "on one input), and far share, the attention mass on the target's far operands.",
            "",
            "| task | PE | n | ID accuracy | OOD accuracy | ID far-reliance | OOD far-reliance "
            "| ID-curve range | ID-curve trend | attention flatness | attention far share |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for task, pes in entry["tasks"].items():
            for pe, c in pes.items():
                spreads = [_spread(c, name) for name in ("id", "ood", "far_id", "far_ood")]
                curve = [_num(c["id_curve_range"]), _num(c["id_curve_trend"], signed=True)]
                attention = [_pair(c, f"attn_{name}") for name in ("flat", "far")]
                lines.append(_row([task, pe, c["n"], *spreads, *curve, *attention]))
        lines.append("")
    return lines


def _num(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else format(value, "+.3f" if signed else ".3f")


def _pair(cell: dict[str, Any], name: str) -> str:
    """``ID -> OOD`` of figure ``name`` (``-`` when neither was measured).

    >>> _pair({"f_id": 0.9, "f_ood": 0.5}, "f"), _pair({}, "f")
    ('0.900 -> 0.500', '-')
    """
    before, after = cell.get(f"{name}_id"), cell.get(f"{name}_ood")
    return "-" if before is None and after is None else f"{_num(before)} -> {_num(after)}"


def _spread(cell: dict[str, Any], name: str) -> str:
    return mean_std_cell(cell.get(f"{name}_mean"), cell.get(f"{name}_std"))


def _cell(value: Any) -> str:
    """``value`` as one line of markdown (control characters as spaces), cut as
    :func:`~posgen.errors.shown` cuts it, ``|`` escaped.

    >>> _cell("rope|x\\n## y\\x00")
    'rope\\\\|x ## y'
    """
    text = "".join(c if c.isprintable() else " " for c in str(value))
    return shown(text).replace("|", "\\|")


def _row(values: Sequence[Any]) -> str:
    return "| " + " | ".join(map(_cell, values)) + " |"


CURVES = ("curve", "far_curve")


def summary_json(results: dict[str, Any]) -> dict[str, Any]:
    """What the data cards read: the results without the curves, with what each task measures."""
    return {
        data: {
            **{k: v for k, v in entry.items() if k != "tasks"},
            "tasks": {
                task: {pe: {k: v for k, v in c.items() if k not in CURVES} for pe, c in pes.items()}
                for task, pes in entry["tasks"].items()
            },
            "measures": measure_sentences(data, entry),
        }
        for data, entry in results.items()
    }


def plot_results(results: dict[str, Any], path: Path) -> Path:
    """Accuracy (and far-reliance, a row below) against position: a panel per (data, task), a
    line per pe, L marked."""
    from posgen.scoring.plot import pyplot

    plt = pyplot()
    every_pe = sorted({pe for _, _, pe, _, _ in cells(results)}, key=pe_order)
    style = {
        pe: {"color": plt.get_cmap("tab20")(i % 20), "ls": ("-", "--", ":")[i // 20 % 3]}
        for i, pe in enumerate(every_pe)
    }
    columns = max(len(entry["tasks"]) for entry in results.values())
    rows = 2 * len(results)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.5 * columns, 3.2 * rows), dpi=110, squeeze=False
    )
    try:
        for ax in axes.flat:
            ax.set_visible(False)
        for row, (data, entry) in enumerate(results.items()):
            for col, (task, pes) in enumerate(entry["tasks"].items()):
                for offset, key, value, label in (
                    (0, "curve", "accuracy", "test accuracy (mean over seeds)"),
                    (1, "far_curve", "far_reliance", "far-reliance (probe split)"),
                ):
                    ax = axes[2 * row + offset][col]
                    ax.set_visible(True)
                    for pe, c in pes.items():
                        ax.plot(c[key]["position"], c[key][value], lw=0.9, label=pe, **style[pe])
                    ax.axvline(next(iter(pes.values()))["ood_boundary"], color="k", ls="--", lw=0.8)
                    ax.set_ylim(0, 1.05)
                    far = " / far-reliance" if offset else ""
                    ax.set_title(f"{data} / {task}{far}", fontsize=9)
                    ax.set_xlabel("position t", fontsize=8)
                    if col == 0:
                        ax.set_ylabel(label, fontsize=8)
        handles = [plt.Line2D([], [], lw=1.5, **style[pe]) for pe in every_pe]
        figure.legend(handles, every_pe, loc="center right", fontsize=8, frameon=False)
        figure.tight_layout(rect=(0, 0, 0.87, 1))
        save_figure(figure, path)
    finally:
        plt.close(figure)
    return Path(path)


def results_markdown(
    results: dict[str, Any],
    settings: dict[str, Any],
    command: str | None = None,
    wall_seconds: float | None = None,
    plot: str | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The RESULTS.md document: command, hardware, wall time, versions, tables, plot."""
    cpu = platform.processor() or platform.machine()
    with suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [line for line in lines if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    lines = ["# POSGEN reference results", ""]
    if command:
        lines += [f"Produced by `{command}`.", ""]
    lines += [
        f"- Hardware: {cpu}, {os.cpu_count()} logical cores ({platform.platform()})",
        f"- Devices: {', '.join(settings['devices'])}; torch threads per run: "
        f"{', '.join(map(str, settings['torch_threads']))}",
    ]
    if wall_seconds is not None:
        lines.append(f"- Wall time: {wall_seconds / 60:.1f} min")
    lines += [f"- {note}" for note in notes]
    lines.append(f"- Training time summed over runs: {settings['train_seconds'] / 60:.1f} min")
    for v in settings["versions"]:
        lines.append("- Versions: " + ", ".join(f"{k} {v[k]}" for k in sorted(v)))
    for p in settings["presets"]:
        lines.append("- Preset: " + ", ".join(f"{k} {p[k]}" for k in p if k != "seeds"))
    every = [(f"{data}/{task}/{pe}", c) for data, task, pe, c, _ in cells(results)]
    seeds = sorted({seed for _, c in every for seed in c["seeds"]})
    short = [f"{_cell(name)} ({c['n']})" for name, c in every if c["n"] < len(seeds)]
    lines += [
        "",
        "YaRN variants train with the unscaled frequencies and use the scaled ones for "
        "validation and test (as the authors' code does); each run keeps the checkpoint with "
        "the best validation ID accuracy.",
    ]
    if short:
        lines += [
            "",
            f"**Incomplete:** the runs use {len(seeds)} seeds "
            f"({', '.join(map(str, seeds))}); fewer finished for "
            f"{counted(len(short), 'cell')}: {', '.join(short)}. "
            + (
                f"Rerun `{command}` to train the missing runs (finished ones are kept)."
                if command
                else "Train the missing runs (`posgen sweep` on the same grid and --out "
                "keeps the finished ones), then run `posgen results` again."
            ),
        ]
    measures = [s for data, entry in results.items() for s in measure_sentences(_cell(data), entry)]
    if measures:
        lines += ["", "## What each task measures", "", *[f"- {s}" for s in measures]]
    lines += ["", *ranking_lines(results), "## Tables by data folder", "", *tables(results)]
    if plot:
        lines += [f"![accuracy against position]({plot})", ""]
    return "\n".join(lines)


EFFECTIVE_TOLERANCE = 0.05  # how far (absolute accuracy) a block may fall below the reference
EFFECTIVE_BLOCK = 8  # positions averaged per block (smooths period-2 curves and noise)
EFFECTIVE_DEFINITION = (
    "Effective length E: the ID reference is the mean per-position test accuracy (pooled over "
    "seeds) over [w + 1, L) (t = w is left out: every model holds it at chance); the positions "
    f"from w + 1 on are cut into blocks of {EFFECTIVE_BLOCK} (from w + 1 up to L, from L on), "
    "and E is the first position of the first block whose mean accuracy is more than "
    f"{EFFECTIVE_TOLERANCE} below the reference (L' when none is: no drop measured); '-' "
    f"when the reference is within {EFFECTIVE_TOLERANCE} of chance (1/m), where no drop "
    "could show."
)

CSV_COLUMNS = (  # noqa: SIM905 (one line per column would be 17 lines)
    "data task pe rank n seeds ood_mean ood_std id_mean id_std effective_length when confound "
    "far_id_mean far_id_std far_ood_mean far_ood_std source"
).split()


def effective_length(
    positions: Sequence[int],
    accuracy: Sequence[float],
    window: int,
    boundary: int,
    chance: float,
    tolerance: float = EFFECTIVE_TOLERANCE,
    block: int = EFFECTIVE_BLOCK,
) -> int | None:
    """*Effective length* (:data:`EFFECTIVE_DEFINITION`); None near chance.

    >>> effective_length(range(4, 16), [0.06] + [1.0] * 5 + [0.3] * 6, 4, 8, 1 / 17, block=2)
    10
    """
    pairs = [
        (p, a)
        for p, a in zip(positions, accuracy, strict=True)
        if p > window and a is not None and not math.isnan(a)
    ]
    reference = _mean(a for p, a in pairs if p < boundary)
    if reference is None or reference - tolerance <= chance or not pairs:
        return None
    for part in ([x for x in pairs if x[0] < boundary], [x for x in pairs if x[0] >= boundary]):
        for chunk in (part[i : i + block] for i in range(0, len(part), block)):
            if sum(a for _, a in chunk) / len(chunk) < reference - tolerance:
                return chunk[0][0]
    return positions[-1] + 1


def ranked(pes: dict[str, dict[str, Any]]) -> list[tuple[int, str, dict[str, Any]]]:
    """``(rank, pe, cell)`` by mean OOD accuracy, best first (cells without OOD last); cells of
    one mean share a rank (1, 1, 3), never ranked apart by their names."""
    order = sorted(
        pes.items(), key=lambda kv: (kv[1]["ood_mean"] is None, -(kv[1]["ood_mean"] or 0), kv[0])
    )
    out: list[tuple[int, str, dict[str, Any]]] = []
    for index, (pe, cell) in enumerate(order, 1):
        tied = bool(out) and out[-1][2]["ood_mean"] == cell["ood_mean"]
        out.append((out[-1][0] if tied else index, pe, cell))
    return out


def ranking_lines(results: dict[str, Any]) -> list[str]:
    """Markdown: per data folder and task, the PEs ranked by OOD accuracy."""
    lines = [
        "## Position encodings ranked by OOD accuracy",
        "",
        f"Mean ± sample std over n seeds. {EFFECTIVE_DEFINITION} When: train-time PEs use the "
        "same rope in training and evaluation; evaluation-time PEs train unscaled. Source: "
        "where the encoding came from (built-in, a plugin's module:NAME or its entry point).",
        "",
    ]
    for data, entry in results.items():
        for task, pes in entry["tasks"].items():
            lines += [
                f"### {_cell(data)} / {task} ({task_lengths(entry, task)})",
                "",
                "| rank | PE | n | OOD accuracy | ID accuracy | effective length | when | source |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for rank, pe, cell in ranked(pes):
                length = cell.get("effective_length")
                length = "-" if length is None else length
                spreads = [_spread(cell, "ood"), _spread(cell, "id")]
                facts = [cell.get(name) or "-" for name in ("when", "source")]
                lines.append(_row([rank, pe, cell["n"], *spreads, length, *facts]))
            confounds = [
                _cell(f"{pe}: {c['confound']}") for pe, c in pes.items() if c.get("confound")
            ]
            if confounds:
                lines += ["", "Not the Llama block: " + "; ".join(confounds) + "."]
            lines.append("")
    return lines


def csv_text(results: dict[str, Any]) -> str:
    """One CSV row per (data, task, pe) cell, ranked within each task."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for data, entry in results.items():
        for task, pes in entry["tasks"].items():
            for rank, pe, cell in ranked(pes):
                values = {"data": data, "task": task, "pe": pe, "rank": rank, **cell}
                values["seeds"] = " ".join(map(str, cell["seeds"]))
                writer.writerow(["" if values.get(c) is None else values[c] for c in CSV_COLUMNS])
    return out.getvalue()
