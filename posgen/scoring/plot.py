"""Accuracy against position, with the OOD boundary marked (needs the ``plot`` extra)."""

from __future__ import annotations

import gzip
import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from posgen import signals
from posgen.errors import RunError, UsageError, shown
from posgen.scoring.metrics import ScoredSplit, ScoreReport
from posgen.scoring.reliance import RelianceReport
from posgen.store.safety import write_atomically


class PlotUnavailable(UsageError, RuntimeError):
    """matplotlib is not installed."""


PLOT_HINT = "plotting needs matplotlib: pip install 'posgen[plot]'"


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, imported with signals held (a signal
    meanwhile is raised once the import is done); :class:`PlotUnavailable` without it."""
    with signals.deferred():
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ModuleNotFoundError:
            raise PlotUnavailable(PLOT_HINT) from None
        except ImportError as error:  # installed, but a library of it did not load (ulimit -v)
            reason = shown(error, 300)
            raise RunError(f"matplotlib is installed but could not be loaded: {reason}") from None
    return plt


def plot_problem(path: Path) -> str | None:
    """Why nothing can be drawn into ``path`` (matplotlib missing, or a suffix of no image
    format it writes), or ``None``; checked before any work starts.

    >>> plot_problem(Path("curve.xyz"))[:52]
    "'.xyz' is not an image format matplotlib writes; use"
    """
    try:
        pyplot()
    except PlotUnavailable:
        return PLOT_HINT
    import matplotlib
    from matplotlib.backend_bases import FigureCanvasBase

    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    tex = matplotlib.rcParams["pgf.texsystem"]
    if shutil.which(tex) is None:  # .pgf is drawn by TeX
        formats.remove("pgf")
    suffix = Path(path).suffix.lower()
    if suffix[1:] in formats:
        return None
    why = f"needs {tex}, which is not installed" if suffix == ".pgf" else None
    return (
        f"{suffix or '(no suffix)'!r} {why or 'is not an image format matplotlib writes'}; use "
        + ", ".join(f".{name}" for name in formats)
    )


@contextmanager
def position_figure(
    report: ScoredSplit, path: Path, ylabel: str, title: str, legend: str
) -> Iterator[Any]:
    """Axes of a figure against position (OOD boundary marked), saved to ``path`` when the
    caller has drawn its lines."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(8, 4), dpi=120)
    try:
        yield axes
        if report.ood_boundary < report.length:
            axes.axvline(report.ood_boundary, color="k", ls="--", lw=1)
            axes.text(report.ood_boundary, 1.02, f" OOD from L={report.ood_boundary}", va="bottom")
        axes.set_xlim(0, report.length)
        axes.set_ylim(0, 1.08)
        axes.set_xlabel("position t")
        axes.set_ylabel(ylabel)
        axes.set_title(title, fontsize=10)
        axes.legend(loc=legend, fontsize=8)
        figure.tight_layout()
        save_figure(figure, path)
    finally:
        plt.close(figure)


def _name(report: ScoredSplit) -> str:
    return " / ".join(part for part in (report.config, report.split) if part)


def plot_curve(report: ScoreReport, path: Path, title: str | None = None) -> Path:
    """Draw the per-position and per-bucket accuracy of ``report`` into ``path`` (PNG, SVG...)."""
    curve = report.curve
    accuracy = [float("nan") if a is None else a for a in curve.accuracy]
    title = title or f"POSGEN {_name(report)} (spec {report.spec_id})"
    with position_figure(report, path, "teacher-forced accuracy", title, "upper right") as axes:
        axes.plot(curve.position, accuracy, lw=0.8, alpha=0.6, label="per position")
        for bucket in report.buckets:
            if bucket.accuracy is not None:
                axes.hlines(bucket.accuracy, bucket.start, bucket.stop - 1, color="C1", lw=2)
        axes.plot([], [], color="C1", lw=2, label=f"per {report.bucket_width} positions")
        axes.axhline(1 / report.modulus, color="grey", ls=":", lw=1, label="chance 1/m")
    return Path(path)


def plot_reliance(report: RelianceReport, path: Path, title: str | None = None) -> Path:
    """Draw far- and local-reliance against position (per position and per bucket)."""
    curve = report.curve
    title = title or f"POSGEN {_name(report)}: what the predictions follow"
    ylabel = "share of probed targets (answers differ)"
    with position_figure(report, path, ylabel, title, "center right") as axes:
        for name, values, color in (
            ("far_reliance", curve.far_reliance, "C0"),
            ("local_reliance", curve.local_reliance, "C3"),
        ):
            shown = [float("nan") if v is None else v for v in values]
            axes.plot(curve.position, shown, lw=0.8, alpha=0.5, color=color)
            for bucket in report.buckets:
                value = getattr(bucket, name)
                if value is not None:
                    axes.hlines(value, bucket.start, bucket.stop - 1, color=color, lw=2)
            axes.plot([], [], color=color, lw=2, label=name.replace("_", "-"))
    return Path(path)


# What would make a format's file differ run to run (the time it was drawn, random SVG ids) is
# left out or fixed, so the same figure is the same bytes: svgz is svg gzipped with mtime 0, and
# PostScript's date is 1970 (SOURCE_DATE_EPOCH=0, the one way matplotlib fixes it).
NO_DATE = {"svg": "Date", "pdf": "CreationDate"}


def save_figure(figure: Any, path: Path) -> Path:
    """Save a matplotlib figure atomically (drawn in memory, then written whole), in the
    format of ``path``'s suffix; the same figure gives the same bytes on every run."""
    import matplotlib

    buffer = io.BytesIO()
    suffix = Path(path).suffix[1:].lower() or "png"
    kind = "svg" if suffix == "svgz" else suffix
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = "0"
    try:
        with matplotlib.rc_context({"svg.hashsalt": "posgen"}):
            metadata = {"metadata": {NO_DATE[kind]: None}} if kind in NO_DATE else {}
            figure.savefig(buffer, format=kind, **metadata)
    finally:
        if epoch is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = epoch
    data = gzip.compress(buffer.getvalue(), mtime=0) if suffix == "svgz" else buffer.getvalue()
    return write_atomically(Path(path), data)
