"""The commands that score predictions: ``score`` (a model's predictions in; ID/OOD
accuracy, or far-reliance on a probe split, out as a table, JSON and a plot) and
``baseline`` (reference predictions: oracle, near-only, majority, local)."""

from __future__ import annotations

from pathlib import Path

import click

from posgen import signals
from posgen.cli import (
    PathArg,
    data_option,
    json_option,
    out_option,
    plot_option,
    quiet_option,
    refuse_outputs,
)
from posgen.errors import RunError, UsageProblems, counted
from posgen.scoring.baselines import BASELINES, PROBE_BASELINES, baseline_predictions
from posgen.scoring.folder import score_aligned, score_reference
from posgen.scoring.metrics import DEFAULT_BUCKET_WIDTH, ScoreReport, ScoringError
from posgen.scoring.plot import plot_curve, plot_problem, plot_reliance
from posgen.scoring.prediction_files import file_format, write_predictions
from posgen.scoring.reliance import Reliance, RelianceReport, score_probe
from posgen.spec import is_probe_split
from posgen.store.dataset import Dataset
from posgen.store.safety import write_atomically


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _heading(report: ScoreReport | RelianceReport, rows: str) -> tuple[str, str, str]:
    """A table's first line, and the labels of its ID and OOD lines."""
    w, boundary, length = report.seed_window, report.ood_boundary, report.length
    title = f"config {report.config}, split {report.split}, spec {report.spec_id}: "
    title += (
        f"{counted(report.rows, rows)} of {length} tokens (seed window {w}, OOD from {boundary})"
    )
    return title, f"ID  [{w}, {min(boundary, length)})", f"OOD [{boundary}, {length})"


def report_table(report: ScoreReport) -> str:
    """The short text table: ID, OOD, exact match, then one line per bucket."""
    title, id_label, ood_label = _heading(report, "row")

    def line(name: str, accuracy: float | None, count: int, unit: str = "") -> str:
        return f"  {name:<18}{_percent(accuracy):>9}  {count:>12,}{unit}"

    lines = [title, line(id_label, report.id.accuracy, report.id.tokens, " tokens")]
    if report.ood.tokens:
        exact = report.ood_exact_match
        lines.append(line(ood_label, report.ood.accuracy, report.ood.tokens, " tokens"))
        lines.append(line("OOD exact match", exact.accuracy, exact.tokens, " rows"))
    lines.append(f"  {'positions':<18}{'accuracy':>9}  {'tokens':>12}")
    lines += [
        line(f"[{b.start}, {b.stop})", b.accuracy, b.tokens, " OOD" if b.ood else "")
        for b in report.buckets
    ]
    return "\n".join(lines)


def reliance_table(report: RelianceReport) -> str:
    """Far- and local-reliance, ID and OOD, then one line per bucket, with counts."""
    title, id_label, ood_label = _heading(report, "probe row")

    def line(name: str, item: Reliance, mark: str = "") -> str:
        return (
            f"  {name:<18}{_percent(item.far_reliance):>9}{_percent(item.local_reliance):>11}  "
            f"{item.counted:>10,}  {item.probed:>10,}{mark}"
        )

    lines = [
        title,
        f"  {'positions':<18}{'far-rel.':>9}{'local-rel.':>11}  {'counted':>10}  {'probed':>10}",
        line(id_label, report.id),
    ]
    if report.length > report.ood_boundary:
        lines.append(line(ood_label, report.ood))
    lines += [line(f"[{b.start}, {b.stop})", b, " OOD" if b.ood else "") for b in report.buckets]
    lines.append("  counted: probed targets whose far-rule answer differs from the stored token")
    return "\n".join(lines)


@click.command(
    "score",
    epilog="""\b
Examples:
  posgen score --data out/posgen-v1 --config cot --predictions preds.parquet
  posgen score --data out/paper --config recursive --split test --predictions p.npy \\
      --json scores.json --plot curve.png --bucket-width 32
  posgen score --data out/posgen-v1 --config cot --split probe --predictions probe.parquet
""",
)
@data_option()
@click.option("--config", help="Config to score (may be left out when the folder has one).")
@click.option("--split", default="test", show_default=True, help="Split the predictions are for.")
@click.option(
    "--predictions",
    required=True,
    type=PathArg(dir_okay=False, path_type=Path),
    help="Predictions file: .parquet, .arrow, .jsonl (rows matched by id) or .npy (row i = id i).",
)
@json_option("Write the full report as JSON here ('-': standard output, no table).", stdout=True)
@plot_option("Draw accuracy against position here (PNG; needs the `plot` extra).")
@click.option(
    "--bucket-width",
    type=click.IntRange(min=1),
    default=DEFAULT_BUCKET_WIDTH,
    show_default=True,
    help="Positions per bucket in the table and the JSON.",
)
def score_command(
    data: Path,
    config: str | None,
    split: str,
    predictions: Path,
    json_out: Path | None,
    plot_out: Path | None,
    bucket_width: int,
) -> None:
    """Score teacher-forced predictions of one split: ID and OOD accuracy, curve, plot.

    The prediction for position t is the model's argmax given the true tokens before t.
    Rows hold every position (seed window ignored) or only positions w .. L'-1.
    On a probe split (probe, probe_<L'>) it reports far-reliance and local-reliance
    instead: the share of probed targets (where the far-rule answer differs from the
    stored token) predicted as the far-rule answer, and as the stored token.
    """
    if plot_out is not None and (problem := plot_problem(plot_out)) is not None:
        raise UsageProblems([f"--plot: {problem}"])
    refuse_outputs(
        {"--json": json_out, "--plot": plot_out}, {"the --predictions file": [predictions]}
    )
    dataset = Dataset.open(data)
    read = dataset.probe if is_probe_split(split) else dataset.split
    report = score_reference(read(config, split), predictions, bucket_width)
    reliance = isinstance(report, RelianceReport)
    table = reliance_table(report) if reliance else report_table(report)  # type: ignore[arg-type]
    to_stdout = json_out is not None and str(json_out) == "-"
    click.echo(report.to_json() if to_stdout else table, nl=not to_stdout)
    signals.point("score-write")
    if json_out is not None and not to_stdout:
        write_atomically(json_out, report.to_json().encode())
    if plot_out is not None:
        (plot_reliance if reliance else plot_curve)(report, plot_out)  # type: ignore[arg-type]


@click.command(
    "baseline",
    epilog="""\b
Examples:
  posgen baseline --kind oracle --data out/posgen-v1 --config cot --out oracle.parquet
  posgen baseline --kind near-only --data out/paper --config recursive --out near.jsonl
  posgen score --data out/paper --config recursive --predictions near.jsonl
""",
)
@click.option(
    "--kind",
    required=True,
    type=click.Choice(list(dict.fromkeys((*BASELINES, *PROBE_BASELINES)))),
    help="Which predictor (local: probe splits only).",
)
@data_option()
@click.option("--config", help="Config (may be left out when the folder has one).")
@click.option("--split", default="test", show_default=True, help="Split to predict.")
@click.option(
    "--fit-split",
    default="train",
    show_default=True,
    help="Split near-only and majority learn from (the oracle learns nothing).",
)
@out_option("Predictions file to write: .parquet, .arrow, .jsonl or .npy.", folder=False)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@quiet_option()
def baseline_command(
    kind: str,
    data: Path,
    config: str | None,
    split: str,
    fit_split: str,
    out: Path,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Write a reference predictor's predictions in the format `posgen score` reads.

    \b
    oracle     h of the true preceding operands at each position: the ceiling (100%);
               on a probe split it follows the far rule (far-reliance 1)
    near-only  best guess from the k near tokens alone (fitted on --fit-split): ~1/m;
               more on paper seeding, whose test rows repeat train rows
    majority   most common token per position of --fit-split
    local      probe splits only: the stored, unaltered token (far-reliance 0)
    """
    try:
        file_format(out)
    except ScoringError as error:
        raise UsageProblems([f"--out: {error}"]) from None
    refuse_outputs({"--out": out}, {"--data": [data]})
    if out.exists() and not overwrite:
        raise UsageProblems([f"{out} exists; pass --overwrite to replace it"])
    if kind == "local" and not is_probe_split(split):
        raise UsageProblems([f"--kind local predicts probe splits only, not {split!r}"])
    dataset = Dataset.open(data)
    reference = dataset.split(config, split)
    spec = reference.spec
    fit = None if kind in PROBE_BASELINES else dataset.split(reference.config, fit_split).tokens
    try:
        predictions = baseline_predictions(kind, spec, reference.tokens, fit)
    except ScoringError:
        raise
    except ValueError as error:
        raise RunError(f"{reference.config}/{split} holds invalid rows: {error}") from None
    made_for = (spec.spec_id, split)
    write_predictions(out, reference.ids, predictions, spec.modulus, made_for)  # WriteFailed: 1
    if not quiet:
        if is_probe_split(split):
            probe = score_probe(dataset.probe(reference.config, split), predictions)
            shown = (
                ("ID far-reliance", probe.id.far_reliance),
                ("OOD far-reliance", probe.ood.far_reliance),
            )
        else:
            report = score_aligned(reference, predictions)
            shown = (("ID", report.id.accuracy), ("OOD", report.ood.accuracy))
        figures = ", ".join(f"{name} {_percent(value)}" for name, value in shown)
        click.echo(
            f"wrote {out}: {kind} predictions for {reference.config}/{split} "
            f"({counted(reference.tokens.shape[0], 'row')}); {figures}"
        )
