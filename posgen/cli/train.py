"""``posgen train``: train a stock Llama with any registered position encoding. torch and
transformers (the ``train`` extra) are imported only when a run starts or ``--list-pe`` runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from posgen import signals
from posgen.cli import (
    check_run_target,
    data_option,
    force_option,
    out_option,
    quiet_option,
    refuse_in_the_way,
    reported,
    require_extra,
)
from posgen.encodings import NO_TABLE, PERequest
from posgen.errors import RunError, UsageProblems, problem_lines
from posgen.store.dataset import Dataset, SplitError
from posgen.store.safety import OLD_TAG, TMP_TAG, owner_alive
from posgen.train.config import (
    PRESETS,
    RunEstimate,
    TrainConfig,
    available_bytes,
    estimate_run,
    identity,
    preset,
    refusal,
    stable_hash,
)
from posgen.train.job import RESUME_TAG, check_work, resume_folder

OVERRIDES = tuple(name for name in TrainConfig.model_fields if name not in ("seeds", "bf16"))
"""TrainConfig fields a flag overrides (``--batch-size`` sets ``batch_size``)."""
MODEL_FLAGS = "--hidden/--heads"
"""What a problem of the whole model (not of one field) is about: the head dimension."""
MAX_THREADS = 256
"""Most ``--threads`` accepted (more is never faster, and 10^9 aborts inside OpenMP)."""


def _override_options(function: Any) -> Any:
    for name in reversed(OVERRIDES):
        field = TrainConfig.model_fields[name]
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            option = click.option(flag, name, is_flag=True, default=None, help=field.description)
        else:
            kind = float if field.annotation is float else int
            option = click.option(flag, name, type=kind, help=f"{field.description} [preset]")
        function = option(function)
    return function


def list_encodings(context: click.Context, _: click.Parameter, value: bool) -> None:
    """``--list-pe``: one line per registered encoding (defaults shown for L=64, L'=256)."""
    if not value or context.resilient_parsing:
        return
    require_extra()
    from posgen.encodings import Lengths, PEError, listing

    try:
        lines = listing(Lengths(train=64, test=256, head_dim=16, heads=4))
    except PEError as error:
        raise UsageProblems([str(error)]) from None
    click.echo("\n".join(lines))
    context.exit(0)


@click.command(
    "train",
    epilog="""\b
Examples:
  posgen train --list-pe
  posgen train --data out/posgen-v1 --config recursive --pe resonance --out runs/rec-res
  posgen train --data out/paper --config cot --pe yarn --preset cpu --seed 42 --epochs 5 \\
      --out runs/cot-yarn-42
  posgen train --data out/paper --config cot --pe linear --pe-param factor=2 \\
      --pe-param scale_at=train --out runs/cot-linear2
  posgen train --data out/paper --config cot --pe alibi --randomized-positions auto \\
      --out runs/cot-alibi-rand
  posgen score --data out/posgen-v1 --config recursive \\
      --predictions runs/rec-res/predictions.parquet
""",
)
@data_option()
@click.option("--config", help="Config (task) to train on (may be left out when there is one).")
@click.option(
    "--list-pe",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=list_encodings,
    help="List every position encoding (built in and plugins) and exit.",
)
@click.option(
    "--pe", required=True, help="Position encoding: a name from --list-pe or package.module:name."
)
@click.option(
    "--pe-param",
    "pe_params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A parameter of the position encoding (repeatable). [defaults from L and L']",
)
@click.option(
    "--randomized-positions",
    "randomized",
    metavar="R|auto",
    help="Randomized positions (Ruoss et al.): position ids drawn sorted from 0..R-1 "
    "(auto: R = L'+1).",
)
@click.option("--save-model", is_flag=True, help="Also save the selected weights in OUT/model.")
@click.option(
    "--preset",
    "preset_name",
    default="cpu",
    show_default=True,
    type=click.Choice(list(PRESETS)),
    help="Model and schedule: cpu (small, minutes) or paper (the authors' setup, a GPU).",
)
@click.option(
    "--seed", type=click.IntRange(min=0, max=2**63 - 1), help="Run seed. [the preset's first seed]"
)
@out_option("Run folder to create (must not exist; never inside a dataset folder).", folder=True)
@_override_options
@click.option(
    "--device",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "cpu", "cuda"]),
    help="auto: CUDA when present, else CPU.",
)
@click.option(
    "--bf16",
    is_flag=True,
    default=None,
    help="bf16 autocast for the forward passes (needs CUDA; CPU runs are float32).",
)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(min=1, max=MAX_THREADS),
    help="torch CPU threads (keep 1 when runs go in parallel; 1 and 2 are byte-identical "
    "run to run).",
)
@force_option("Train even when the memory estimate exceeds the memory available.")
@quiet_option("No progress bar, no summary.")
def train_command(
    data: Path,
    config: str | None,
    pe: str,
    pe_params: tuple[str, ...],
    randomized: str | None,
    save_model: bool,
    preset_name: str,
    seed: int | None,
    out: Path,
    device: str,
    bf16: bool | None,
    threads: int,
    force: bool,
    quiet: bool,
    **overrides: Any,
) -> None:
    """Train a Llama from scratch on one config; write its record, log and predictions.

    The dataset is read once, checked against its manifest, and the run trains, validates
    and scores on those bytes. The checkpoint with the best validation ID accuracy predicts
    the test split; the predictions are scored by posgen's scoring (the same figures as
    `posgen score`). A run that would not fit in memory is refused (see --force).
    """
    try:
        train_config = preset(preset_name, **overrides, bf16=bf16 or None)
    except ValidationError as error:  # each problem named by its flag as spelled (--batch-size)
        lines = []
        for line in problem_lines(error):
            field, _, message = line.partition(": ")
            flag = MODEL_FLAGS if field == "spec" else "--" + field.replace("_", "-")
            lines.append(f"{flag}: {message}")
        raise UsageProblems(lines) from None
    try:
        request = PERequest.parse(pe, pe_params, randomized)
    except ValidationError as error:
        raise UsageProblems([f"--pe: {line}" for line in problem_lines(error)]) from None
    except ValueError as error:
        raise UsageProblems([str(error)]) from None
    check_run_target(out)
    tagged = any(tag in out.name for tag in (TMP_TAG, OLD_TAG)) or out.name.endswith(RESUME_TAG)
    if tagged and out.name.startswith("."):  # a later run would take it for its own leftover
        raise UsageProblems([
            f"--out {out}: a name posgen gives its own hidden folders (.NAME{TMP_TAG}*, "
            f".NAME{OLD_TAG}*, .NAME{RESUME_TAG}); choose another name"
        ])  # fmt: skip
    resume = resume_folder(out)
    refuse_in_the_way(resume, out, "posgen train keeps the run's checkpoint")
    check_work(resume, f"--out {out}", "posgen train")  # before any work
    dataset = Dataset.open(data)
    name = dataset.resolve_config(config)
    try:
        spec = dataset.spec(name)
    except SplitError as error:  # the handle's check, said of the flag
        raise UsageProblems([f"--config: {error}"]) from None
    positions = request.randomized if isinstance(request.randomized, int) else None
    table = request.name not in NO_TABLE  # a plugin's is known once it is imported
    estimate = memory_estimate(dataset, name, train_config, positions, table)
    if not force and (problem := refusal(estimate, available_bytes())) is not None:
        raise UsageProblems([problem])
    with signals.deferred():  # an exception inside `import torch` can be lost or mangled
        signals.point("import")
        require_extra()
        import torch
        from tqdm.auto import tqdm

        from posgen.encodings import PEError
        from posgen.train.job import read_progress, train_runs
        from posgen.train.trainer import pick_device, resolve_pe
    torch.set_num_threads(threads)
    target = pick_device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise UsageProblems(["--device cuda: no CUDA device is available"])
    if train_config.bf16 and target.type != "cuda":
        raise UsageProblems(["--bf16: needs a CUDA device (CPU runs compute in float32)"])
    run_seed = train_config.seeds[0] if seed is None else seed
    try:
        resolved = resolve_pe(request, train_config, spec)
    except PEError as error:
        raise UsageProblems([str(error)]) from None
    if table and resolved.encoding.input_positions is None:  # a plugin without a table
        estimate = memory_estimate(dataset, name, train_config, table=False)
    args = (data.resolve().name, spec.spec_id, name, preset_name, train_config, run_seed)
    key = stable_hash(identity(*args, training=resolved.training_key()))
    if owner_alive(resume):
        raise UsageProblems([f"--out {out}: another posgen train is training it now"])
    if read_progress(resume) is not None and not quiet:
        click.echo(f"{out}: resuming from its checkpoint ({resume})", err=True)

    def left(completed: bool) -> str:
        if completed:
            return f"{out} was already complete"
        if read_progress(resume) is None:
            return f"no partial run folder was left; {out} was not created"
        return f"checkpoint kept in {resume}: rerun the same command to resume"

    def bar(total: int) -> Any:
        label = f"{name} {resolved.label}"
        return tqdm(total=total, unit="step", file=sys.stderr, disable=quiet, desc=label)

    with reported(left, str):
        summaries = train_runs(
            dataset,
            name,
            [resolved],
            train_config,
            run_seed,
            [out],
            preset_name,
            device=target,
            progress=bar,
            save=save_model,
            work=resume,
            key=key,
            name=f"--out {out}",
            estimate=estimate.total,
        )
    if not summaries:
        raise RunError(f"--out {out} appeared while the run trained (made by something else)")
    if not quiet:
        summary = summaries[0]
        click.echo(
            f"{out}: best epoch {summary['best_epoch']}, test ID {_shown(summary['id_accuracy'])}, "
            f"OOD {_shown(summary['ood_accuracy'])}"
        )


def memory_estimate(
    dataset: Dataset,
    name: str,
    train_config: TrainConfig,
    positions: int | None = None,
    table: bool = True,
) -> RunEstimate:
    """The memory estimate of a run on config ``name``; ``positions``: the range of randomized
    position ids; ``table``: whether the encoding may have a table of input positions."""
    largest = max((file.bytes for _, _, file in dataset.manifest.files([name])), default=0)
    spec = dataset.manifest.configs[name].spec
    return estimate_run(train_config, spec, largest, positions, table)


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
