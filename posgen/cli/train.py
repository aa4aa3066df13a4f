"""``posgen train``: train a stock Llama with any registered position encoding.

torch and transformers are imported only when a run starts or ``--list-pe`` lists the
encodings (the ``train`` extra), so ``posgen -h`` and every other command stay torch-free.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from posgen import signals
from posgen.cli.common import RunFailure, UsageProblems, require_extra
from posgen.cli.options import config_option, data_option, force_option, out_option, quiet_option
from posgen.cli.runner import check_run_target, reported
from posgen.errors import problem_lines
from posgen.scoring.reference import pick_config
from posgen.signals import Interrupted
from posgen.spec import TaskSpec
from posgen.store.lock import exclusive, owner_alive
from posgen.store.manifest import read_manifest
from posgen.store.targets import OutputExistsError
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
from posgen.train.encoding import PERequest
from posgen.train.progress import resume_folder
from posgen.units import human_bytes

# flag -> (TrainConfig field, click type)
OVERRIDES: dict[str, tuple[str, Any]] = {
    "--layers": ("layers", int),
    "--hidden": ("hidden", int),
    "--heads": ("heads", int),
    "--intermediate": ("intermediate", int),
    "--lr": ("lr", float),
    "--weight-decay": ("weight_decay", float),
    "--warmup": ("warmup", float),
    "--batch-size": ("batch_size", int),
    "--eval-batch-size": ("eval_batch_size", int),
    "--epochs": ("epochs", int),
    "--eval-every": ("eval_every", int),
    "--max-steps": ("max_steps", int),
}


FLAGS = {name: flag for flag, (name, _) in OVERRIDES.items()}
"""TrainConfig field -> the flag that sets it."""
MODEL_FLAGS = "--hidden/--heads"
"""What a problem of the whole model (not of one field) is about: the head dimension."""
MAX_THREADS = 256
"""Most ``--threads`` accepted (more is never faster, and 10^9 aborts inside OpenMP)."""


def resolve_train_config(preset_name: str, overrides: dict[str, Any]) -> TrainConfig:
    """The preset with the flags' overrides, every problem an :class:`UsageProblems` line
    naming its flag as it is spelled (``--batch-size``)."""
    try:
        return preset(preset_name, **overrides)
    except ValidationError as error:
        lines = []
        for line in problem_lines(error):
            field, _, message = line.partition(": ")
            flag = FLAGS.get(field, MODEL_FLAGS if field == "spec" else f"--{field}")
            lines.append(f"{flag}: {message}")
        raise UsageProblems(lines) from None


def _override_options(function: Any) -> Any:
    for flag, (name, kind) in reversed(OVERRIDES.items()):
        help_text = TrainConfig.model_fields[name].description
        function = click.option(flag, name, type=kind, help=f"{help_text} [preset]")(function)
    return function


def list_encodings(context: click.Context, _: click.Parameter, value: bool) -> None:
    """``--list-pe``: one line per registered encoding (defaults shown for L=64, L'=256)."""
    if not value or context.resilient_parsing:
        return
    require_extra()
    from posgen.train.encoding import Lengths
    from posgen.train.registry import PEError, listing

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
@config_option("Config (task) to train on (may be left out when there is one).")
@click.option(
    "--list-pe",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=list_encodings,
    help="List every position encoding (built in and plugins) and exit.",
)
@click.option(
    "--pe",
    required=True,
    help="Position encoding: a name from --list-pe or package.module:name.",
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
    "--seed",
    type=click.IntRange(min=0, max=2**63 - 1),
    help="Run seed. [the preset's first seed]",
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
    threads: int,
    force: bool,
    quiet: bool,
    **overrides: Any,
) -> None:
    """Train a Llama from scratch on one config; write config, log, predictions and scores.

    The dataset is read once, checked against its manifest, and the run trains, validates
    and scores on those bytes. The checkpoint with the best validation ID accuracy predicts
    the test split; the predictions are scored by posgen's scoring (the same figures as
    `posgen score`). A run that would not fit in memory is refused (see --force).
    """
    train_config = resolve_train_config(preset_name, overrides)
    try:
        request = PERequest.parse(pe, pe_params, randomized)
    except ValidationError as error:
        raise UsageProblems([f"--pe: {line}" for line in problem_lines(error)]) from None
    except ValueError as error:
        raise UsageProblems([str(error)]) from None
    check_run_target(out)
    positions = request.randomized if isinstance(request.randomized, int) else None
    name, spec, estimate = memory_estimate(data, config, train_config, positions)
    if not force and (problem := refusal(estimate, available_bytes())) is not None:
        raise UsageProblems([problem])
    with signals.deferred():  # an exception inside `import torch` can be lost or mangled
        signals.point("import")
        require_extra()
        import torch
        from tqdm.auto import tqdm

        from posgen.train.registry import PEError
        from posgen.train.trainer import RunData, pick_device, resolve_pe, train_runs
    torch.set_num_threads(threads)
    target = pick_device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise UsageProblems(["--device cuda: no CUDA device is available"])
    run_seed = train_config.seeds[0] if seed is None else seed
    try:
        resolved = resolve_pe(request, train_config, spec)
    except PEError as error:
        raise UsageProblems([str(error)]) from None
    from posgen.train.checkpoint import Checkpoints

    key = stable_hash(
        identity(
            data.resolve().name,
            spec.spec_id,
            name,
            preset_name,
            train_config,
            run_seed,
            training=resolved.training_key(),
        )
    )
    resume = resume_folder(out)
    if owner_alive(resume):
        raise UsageProblems([f"--out {out}: another posgen train is training it now"])
    resume.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(resume, key)
    with exclusive(resume):
        if checkpoints.progress() is not None and not quiet:
            click.echo(f"{out}: resuming from its checkpoint ({resume})", err=True)

        def train() -> dict[str, Any]:
            signals.point("load")
            run_data = RunData.load(data, name)
            return train_runs(
                data,
                name,
                [resolved],
                train_config,
                run_seed,
                [out],
                preset_name,
                device=target,
                progress=lambda total: tqdm(
                    total=total,
                    unit="step",
                    file=sys.stderr,
                    disable=quiet,
                    desc=f"{name} {resolved.label}",
                ),
                run_data=run_data,
                save=save_model,
                checkpoints=checkpoints,
            )[0]

        summary = _train_resumably(out, resume, checkpoints, estimate, train)
    if not quiet:
        click.echo(
            f"{out}: best epoch {summary['best_epoch']}, test ID {_shown(summary['id_accuracy'])}, "
            f"OOD {_shown(summary['ood_accuracy'])}"
        )


def memory_estimate(
    data: Path, config: str | None, train_config: TrainConfig, positions: int | None = None
) -> tuple[str, TaskSpec, RunEstimate]:
    """The config (the only one when ``config`` is None), its spec and the run's memory
    estimate, from one read of the manifest (no data read; the run reads the data once);
    ``positions``: the range of randomized position ids, if given."""
    manifest = read_manifest(data)
    name = pick_config(list(manifest.configs), config, data)
    if name not in manifest.configs:
        known = ", ".join(manifest.configs)
        raise UsageProblems([f"--config: no config {name!r} in {data}; configs: {known}"])
    spec = manifest.configs[name].spec
    largest = max((file.bytes for _, _, file in manifest.files([name])), default=0)
    return name, spec, estimate_run(train_config, spec, largest_file=largest, positions=positions)


def _train_resumably(
    out: Path,
    resume: Path,
    checkpoints: Any,
    estimate: RunEstimate,
    train: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Run ``train``; a signal leaves its checkpoint in ``resume`` (exit 128 + signal, one
    line), success removes it, and a failure before any checkpoint leaves nothing. Every
    failure is one line: a folder that appeared at ``out``, a failed write, memory that
    ran out past the estimate."""
    from posgen.train.checkpoint import CheckpointMismatch

    def left(completed: bool) -> str:
        if completed:
            return f"{out} was already complete"
        if checkpoints.progress() is None:
            return f"no partial run folder was left; {out} was not created"
        return f"checkpoint kept in {resume}: rerun the same command to resume"

    try:
        with reported(left, str):
            summary = train()
    except CheckpointMismatch:
        raise UsageProblems(
            [
                f"--out {out}: its checkpoint {resume} is of a run with other flags; rerun "
                "with those, or remove it to start over"
            ]
        ) from None
    except Interrupted as stop:
        if stop.completed:
            shutil.rmtree(resume, ignore_errors=True)
        raise
    except OutputExistsError:
        shutil.rmtree(resume, ignore_errors=True)  # this run cannot be resumed into it
        raise RunFailure(
            f"--out {out} appeared while the run trained (made by something else); it was "
            "kept, and this run was not written"
        ) from None
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        smaller = "--batch-size, --eval-batch-size or the model size"
        kept = checkpoints.progress() is not None
        advice = (
            f"checkpoint kept in {resume}: rerun the same command to resume, or remove it "
            f"and lower {smaller}"
            if kept
            else f"no partial run folder was left; lower {smaller}"
        )
        raise RunFailure(
            f"out of memory ({type(error).__name__}) with an estimate of "
            f"{human_bytes(estimate.total)}; {advice}"
        ) from None
    finally:
        if checkpoints.progress() is None:  # nothing to resume from: leave nothing
            shutil.rmtree(resume, ignore_errors=True)
    shutil.rmtree(resume, ignore_errors=True)
    return summary


def _out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says an allocation failed (torch's own error, or its message)."""
    import torch

    return isinstance(error, MemoryError | torch.OutOfMemoryError) or "allocate" in str(error)


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
