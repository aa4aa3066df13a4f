"""``posgen baseline``: reference predictions (oracle, near-only, majority) for a split."""

from __future__ import annotations

from pathlib import Path

import click

from posgen.cli.common import RunFailure, UsageProblems
from posgen.cli.options import (
    config_option,
    data_option,
    out_option,
    overwrite_option,
    quiet_option,
    split_option,
)
from posgen.scoring.baselines import BASELINES, PROBE_BASELINES, baseline_predictions
from posgen.scoring.errors import ScoringError
from posgen.scoring.folder import score_aligned
from posgen.scoring.prediction_files import file_format, write_predictions
from posgen.scoring.reliance import score_probe
from posgen.spec import is_probe_split
from posgen.store.dataset import Dataset


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
@config_option("Config (may be left out when the folder has one).")
@split_option("Split to predict.", default="test")
@click.option(
    "--fit-split",
    default="train",
    show_default=True,
    help="Split near-only and majority learn from (the oracle learns nothing).",
)
@out_option("Predictions file to write: .parquet, .arrow, .jsonl or .npy.", folder=False)
@overwrite_option("Replace an existing --out file.")
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
    near-only  best guess from the k near tokens alone (fitted on --fit-split): ~1/m
    majority   most common token per position of --fit-split
    local      probe splits only: the stored, unaltered token (far-reliance 0)
    """
    try:
        file_format(out)
    except ScoringError as error:
        raise UsageProblems([f"--out: {error}"]) from None
    if out.exists() and not overwrite:
        raise UsageProblems([f"{out} exists; pass --overwrite to replace it"])
    if kind == "local" and not is_probe_split(split):
        raise UsageProblems([f"--kind local predicts probe splits only, not {split!r}"])
    dataset = Dataset.open(data)
    reference = dataset.split(config, split)
    spec = reference.spec
    fit = None
    if kind not in PROBE_BASELINES:
        fit = dataset.split(reference.config, fit_split).tokens
    try:
        predictions = baseline_predictions(kind, spec, reference.tokens, fit)
    except ScoringError as error:
        raise UsageProblems([str(error)]) from None
    except ValueError as error:
        raise RunFailure(f"{reference.config}/{split} holds invalid rows: {error}") from None
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
        figures = ", ".join(
            f"{name} {'-' if value is None else f'{100 * value:.2f}%'}" for name, value in shown
        )
        click.echo(
            f"wrote {out}: {kind} predictions for {reference.config}/{split} "
            f"({reference.tokens.shape[0]:,} rows); {figures}"
        )
