"""Train a stock ``transformers`` Llama on one POSGEN config and write its run folder.

A run: build ``LlamaForCausalLM`` from a config (nothing downloaded), train on ``train``
with AdamW and a one-cycle cosine schedule stepped per batch, validate every
``eval_every`` epochs with the evaluation frequencies (:mod:`posgen.train.rope`), keep the
weights with the best validation ID accuracy, predict ``test`` with them and score the
predictions with :mod:`posgen.scoring` (the one metric implementation).

Validation scores only ID positions ``[w, L)``; the model is causal and its frequencies
do not depend on the row length, so validation rows are cut to length ``L`` (4x less
work at L' = 4L) with the same predictions there (``tests/test_train.py`` checks it).

Validation rows cut to L see the training lengths: encodings that scale themselves by the
row length (``dynamic``, ``longrope``) are validated unscaled and tested scaled.

Position encodings that share their training (equal
:meth:`~posgen.train.registry.ResolvedPE.training_key`: ``rope``, ``yarn``, ``linear`` and
``llama3``; ``resonance`` and its evaluation-time variants) train identically for a seed,
so :func:`train_runs` can train once and serve several: each selects its own checkpoint by
its own validation accuracy and gets its own complete run folder, byte for byte what a run
of its own writes (also checked by the tests).

Randomized positions (:mod:`posgen.train.randomized`) give the training batches, the
validation and the test rows their drawn position ids (with an all-ones attention mask:
transformers would otherwise read gapped position ids as packed sequences).

Run folder::

    config.json         resolved run config: preset fields, pe, rope parameters, data spec id,
                        versions, device, best epoch
    metrics.jsonl       one line per epoch: train loss, learning rate, validation ID accuracy,
                        seconds so far (all, and in training steps only)
    predictions.parquet test predictions (``posgen score --predictions`` reads them)
    scores.json         the ``posgen.scoring`` report of those predictions on ``test``
    probe_predictions.parquet  predictions of the ``probe`` split, same weights
    probe_scores.json   their far-reliance report (``posgen score --split probe``)
    results.json        the run record (:mod:`posgen.train.run_record`): versions, data
                        checksums, every position-encoding parameter, accuracies, wall time
    model/              the selected weights (only with ``save_model``; :func:`load_model`)
"""

from __future__ import annotations

import copy
import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import LlamaForCausalLM

from posgen import __version__, signals
from posgen.scoring.folder import score_aligned, score_reference
from posgen.scoring.lm_inputs import lm_arrays, predictions_from_logits, vocab_size
from posgen.scoring.prediction_files import write_predictions
from posgen.scoring.reference import ReferenceSplit, load_splits
from posgen.scoring.reliance import ProbeSplit, RelianceReport, load_probe, score_probe
from posgen.spec import PROBE_SPLIT, TaskSpec
from posgen.store.manifest import read_manifest
from posgen.store.pinned import read_whole
from posgen.store.transaction import atomic_folder
from posgen.train.checkpoint import Checkpoints, Position, kill_point, stop_requests
from posgen.train.config import TrainConfig
from posgen.train.encoding import Lengths, PERequest
from posgen.train.model import llama_for, parameter_groups, save_model
from posgen.train.randomized import RandomPositions
from posgen.train.registry import ResolvedPE, as_request, resolve
from posgen.train.rope import use_frequencies
from posgen.train.run_record import (
    CONFIG,
    METRICS,
    PREDICTIONS,
    PROBE_PREDICTIONS,
    PROBE_SCORES,
    RESULTS,
    SCORES,
    RunConfig,
    build_record,
)
from posgen.train.run_record import FILES as FILES

MODEL = "model"
"""The saved weights' subfolder (``save_model``)."""


def versions() -> dict[str, str]:
    """Versions of the packages a run depends on."""
    return {
        "posgen": __version__,
        "python": platform.python_version(),
        **{name: version(name) for name in ("torch", "transformers", "numpy", "pyarrow")},
    }


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present (``auto``), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def seeds_for(seed: int) -> tuple[int, int]:
    """Independent ``(initialisation, batch order)`` seeds from one run seed (SeedSequence)."""
    init, order = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    return int(init) >> 1, int(order) >> 1


def resolve_pe(pe: str | PERequest | ResolvedPE, config: TrainConfig, spec: TaskSpec) -> ResolvedPE:
    """``pe`` (a name, a request or already resolved) for the data of ``spec`` (its train
    length L and validation/test length L') and the model size of ``config``."""
    if isinstance(pe, ResolvedPE):
        return pe
    shape = Lengths(
        train=spec.train_length,
        test=spec.test_lengths[0],
        head_dim=config.hidden // config.heads,
        heads=config.heads,
    )
    return resolve(as_request(pe), shape)


def build_model(
    config: TrainConfig, reference: ReferenceSplit, pe: str | PERequest | ResolvedPE, seed: int
) -> LlamaForCausalLM:
    """A freshly initialised Llama for ``reference``'s vocabulary, with ``pe``'s training setup."""
    spec = reference.spec
    resolved = resolve_pe(pe, config, spec)
    torch.manual_seed(seeds_for(seed)[0])
    return llama_for(
        resolved,
        vocab=vocab_size(spec),
        bos=spec.modulus,
        hidden=config.hidden,
        heads=config.heads,
        layers=config.layers,
        intermediate=config.intermediate,
    )


def lm_tensors(
    reference: ReferenceSplit | ProbeSplit, length: int | None = None, rows: Any = None
) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``labels`` (int64) of a split's rows (all, or those in ``rows``;
    cut to ``length`` tokens if given). Built per batch: the split stays at its stored width."""
    tokens = reference.tokens if rows is None else reference.tokens[rows]
    tokens = tokens if length is None else tokens[:, :length]
    arrays = lm_arrays(tokens, reference.spec.modulus, reference.spec.window)
    return {name: torch.from_numpy(arrays[name]) for name in ("input_ids", "labels")}


PositionIds = Callable[[int, int, int], torch.Tensor]
"""``(first row, rows, length) -> position ids (rows, length)`` of an evaluation split."""


def position_inputs(position_ids: torch.Tensor | None, device: torch.device) -> dict[str, Any]:
    """Model keyword arguments for explicit position ids (none: transformers' 0 .. T-1).

    The all-ones attention mask keeps transformers from reading gapped ids as packed rows.
    """
    if position_ids is None:
        return {}
    return {
        "position_ids": position_ids.to(device),
        "attention_mask": torch.ones_like(position_ids, device=device),
    }


@torch.no_grad()
def predict(
    model: LlamaForCausalLM,
    input_ids: torch.Tensor,
    batch_size: int,
    device: torch.device,
    modulus: int,
    positions: PositionIds | None = None,
) -> np.ndarray:
    """Teacher-forced argmax predictions ``(rows, L)`` of ``input_ids`` ``(rows, L + 1)``.

    The argmax runs over the m tokens only: BOS (id m) is never a target, and a prediction
    of it would be outside the vocabulary that posgen scores. ``positions`` gives the rows'
    position ids (randomized positions); by default transformers' ``0 .. L``.
    """
    model.eval()
    out = []
    for start in range(0, input_ids.shape[0], batch_size):
        batch = input_ids[start : start + batch_size]
        ids = None if positions is None else positions(start, batch.shape[0], batch.shape[1])
        logits = model(input_ids=batch.to(device), **position_inputs(ids, device)).logits
        out.append(predictions_from_logits(logits[..., :modulus].float().cpu().numpy()))
    model.train()
    return np.concatenate(out).astype(np.int64, copy=False)


def predict_split(
    model: LlamaForCausalLM,
    reference: ReferenceSplit,
    batch_size: int,
    device: torch.device,
    positions: PositionIds | None = None,
) -> np.ndarray:
    """:func:`predict` of a split's rows, inputs built one batch at a time; predictions at the
    split's stored width (the tokens are 0 .. m-1)."""
    rows = reference.tokens.shape[0]
    out = np.empty(reference.tokens.shape, dtype=reference.tokens.dtype)
    modulus = reference.spec.modulus
    for start in range(0, rows, batch_size):
        ids = lm_tensors(reference, rows=slice(start, start + batch_size))["input_ids"]
        shifted = None
        if positions is not None:
            shifted = lambda first, n, length, at=start: positions(at + first, n, length)  # noqa: E731
        out[start : start + batch_size] = predict(model, ids, batch_size, device, modulus, shifted)
    return out


def epoch_order(rows: int, epochs: int, seed: int) -> list[torch.Tensor]:
    """Row order of every epoch: torch permutations from the run's batch-order seed."""
    generator = torch.Generator().manual_seed(seeds_for(seed)[1])
    return [torch.randperm(rows, generator=generator) for _ in range(epochs)]


def warmup_fraction(warmup: float, total_steps: int) -> float:
    """``warmup``, unless the warm-up would end exactly at step 1 (OneCycleLR divides by 0 there).

    >>> warmup_fraction(0.1, 200), warmup_fraction(0.1, 10)
    (0.1, 0.15)
    """
    return 1.5 / total_steps if math.isclose(warmup * total_steps, 1.0) else warmup


def optimizer_and_schedule(
    model: LlamaForCausalLM, config: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW and torch's one-cycle cosine schedule (the authors' choice), stepped per batch."""
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.weight_decay), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        total_steps=total_steps,
        pct_start=warmup_fraction(config.warmup, total_steps),
        anneal_strategy="cos",
    )
    return optimizer, schedule


@dataclass
class Selection:
    """The best validation ID accuracy of one position embedding so far, and its weights."""

    pe: ResolvedPE
    accuracy: float = -1.0
    epoch: int = 0
    state: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class RunData:
    """The three splits of a config: train, validation (cut to L) and test."""

    train: ReferenceSplit
    validation: ReferenceSplit
    test: ReferenceSplit

    files: dict[str, str] = field(default_factory=dict)
    """``path -> sha256`` of every file read (checked against the manifest as read)."""
    probe: ProbeSplit | None = None
    """The ``probe`` split, read in the same pinned read (None when the config has none)."""

    @classmethod
    def load(cls, data: Path, config: str) -> RunData:
        """Read the three splits and the probe split once, checked and pinned
        (:func:`load_splits`, :func:`posgen.store.pinned.read_whole`), at their stored
        width; validation rows cut to L."""

        def read() -> RunData:
            names = ("train", "validation", "test")
            splits = load_splits(data, config, names, cut=("validation",))
            files = {path: digest for split in splits.values() for path, digest in split.files}
            entry = read_manifest(data).configs[config]
            probe = None
            if PROBE_SPLIT in entry.splits:
                probe = load_probe(data, config, PROBE_SPLIT)
                files |= {file.path: file.sha256 for file in entry.splits[PROBE_SPLIT].files}
            return cls(**splits, files=files, probe=probe)

        return read_whole(Path(data), read)


ProgressFactory = Callable[[int], Any]


def _null_progress(total: int) -> Any:
    return None


def train_runs(
    data: Path,
    config_name: str,
    pes: Sequence[str | PERequest | ResolvedPE],
    config: TrainConfig,
    seed: int,
    outs: Sequence[Path],
    preset_name: str,
    device: torch.device | None = None,
    progress: ProgressFactory = _null_progress,
    run_data: RunData | None = None,
    save: bool = False,
    checkpoints: Checkpoints | None = None,
) -> list[dict[str, Any]]:
    """Train once for ``pes`` (all with the same training); write one folder each.

    ``save`` also writes each run's selected weights to ``<out>/model``. With
    ``checkpoints`` the training resumes from the checkpoint there, saves one at the end of
    every epoch, and on a signal saves one and stops (:mod:`posgen.train.checkpoint`); the
    run folders are the same bytes either way. Returns each run's summary (``{"pe", "out",
    "best_epoch", "id_accuracy", "ood_accuracy"}``). Without ``checkpoints`` a signal stops
    the loop between two steps (:class:`posgen.signals.Interrupted`).
    """
    device = device or pick_device()
    run_data = run_data or RunData.load(data, config_name)
    resolved = [resolve_pe(pe, config, run_data.train.spec) for pe in pes]
    if len({pe.training_key() for pe in resolved}) != 1:
        names = ", ".join(pe.label for pe in resolved)
        raise ValueError(f"{names} do not share their training frequencies")
    model = build_model(config, run_data.train, resolved[0], seed).to(device)
    rows = run_data.train.tokens.shape[0]  # held at its stored width; batches widened one by one
    total = total_steps(config, run_data)
    optimizer, schedule = optimizer_and_schedule(model, config, total)
    train_rope = resolved[0].rope(evaluation=False)
    sampler = random_positions(resolved[0], seed)
    selections = [Selection(pe) for pe in resolved]
    at = Position()
    if checkpoints is not None:
        at = checkpoints.load(selections, model, optimizer, schedule, device) or at
    orders = epoch_order(rows, config.epochs, seed)
    bar = progress(total)
    if bar is not None and at.step:
        bar.update(at.step)
    started = time.perf_counter() - at.seconds  # wall time counts every attempt
    model.train()

    def save_checkpoint() -> None:
        if checkpoints is not None:
            at.seconds = time.perf_counter() - started
            checkpoints.save(at, selections, model, optimizer, schedule)

    with stop_requests(checkpoints is not None) as stop:
        while not at.done:
            order = orders[at.epoch - 1]
            for begin in range(at.offset, rows, config.batch_size):
                if at.step >= total:
                    break
                step_started = time.perf_counter()
                batch_rows = order[begin : begin + config.batch_size].numpy()
                tensors = lm_tensors(run_data.train, rows=batch_rows)
                batch = tensors["input_ids"]
                position_ids = None
                if sampler is not None:
                    position_ids = sampler.training(at.step, batch.shape[0], batch.shape[1])
                with signals.deferred():  # without checkpoints: stop between steps, not within
                    loss = model(
                        input_ids=batch.to(device),
                        labels=tensors["labels"].to(device),
                        **position_inputs(position_ids, device),
                    ).loss
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    at.step, at.offset = at.step + 1, begin + config.batch_size
                    at.losses.append(loss.detach())
                    signals.point("step")
                # seconds in training steps only (no validation): the harness benchmark's
                at.train_seconds += time.perf_counter() - step_started
                if bar is not None:
                    bar.update(1)
                kill_point("step", at.step)
                if stop is not None and stop.requested:
                    save_checkpoint()
                    stop.stop()
            record: dict[str, Any] = {
                "epoch": at.epoch,
                "step": at.step,
                "train_loss": float(torch.stack(at.losses).mean()) if at.losses else None,
                "lr": schedule.get_last_lr()[0],
            }
            record.update(
                _validated(
                    model,
                    run_data,
                    selections,
                    config,
                    device,
                    at,
                    seed,
                    train_rope,
                    total,
                )
            )
            record["seconds"] = round(time.perf_counter() - started, 3)
            record["train_seconds"] = round(at.train_seconds, 3)
            at.log.append(record)
            at.done = at.step >= total or at.epoch == config.epochs
            at.epoch, at.offset, at.losses = at.epoch + 1, 0, []
            save_checkpoint()
            if stop is not None and stop.requested:
                stop.stop()
    if bar is not None and hasattr(bar, "close"):
        bar.close()
    summaries = []
    for selection, out in zip(selections, outs, strict=True):
        job = RunJob(run_data, config, seed, Path(out), data, preset_name, device, started, save)
        summaries.append(_write_run(model, selection, at.log, job))
    return summaries


def _validated(
    model: LlamaForCausalLM,
    run_data: RunData,
    selections: list[Selection],
    config: TrainConfig,
    device: torch.device,
    at: Position,
    seed: int,
    train_rope: dict[str, Any],
    total: int,
) -> dict[str, float]:
    """Validate every selection when the epoch is due (every ``eval_every`` epochs, and the
    last), keeping the weights of each one's best epoch; their accuracies by label."""
    epoch = at.epoch
    if not (epoch % config.eval_every == 0 or at.step >= total or epoch == config.epochs):
        return {}
    accuracies = {}
    for selection in selections:
        accuracy = _validate(model, run_data, selection.pe, config, device, seed)
        accuracies[f"val_id_accuracy/{selection.pe.label}"] = accuracy
        if accuracy > selection.accuracy:
            selection.accuracy, selection.epoch = accuracy, epoch
            selection.state = copy.deepcopy(model.state_dict())
    use_frequencies(model, train_rope)
    return accuracies


def total_steps(config: TrainConfig, run_data: RunData) -> int:
    """Optimiser steps of the run: every batch of every epoch, or ``max_steps`` if fewer."""
    rows = run_data.train.tokens.shape[0]
    total = math.ceil(rows / config.batch_size) * config.epochs
    return total if config.max_steps is None else min(total, config.max_steps)


def random_positions(pe: ResolvedPE, seed: int) -> RandomPositions | None:
    """The run's randomized position draws, if ``pe`` asks for them."""
    return None if pe.randomized is None else RandomPositions(seed, pe.randomized)


def evaluation_positions(pe: ResolvedPE, seed: int, split: str) -> PositionIds | None:
    """Position ids of an evaluation split's rows (randomized positions only)."""
    sampler = random_positions(pe, seed)
    if sampler is None:
        return None
    return lambda start, rows, length: sampler.evaluation(split, start, rows, length)


def _validate(
    model: LlamaForCausalLM,
    run_data: RunData,
    pe: ResolvedPE,
    config: TrainConfig,
    device: torch.device,
    seed: int,
) -> float:
    """Validation ID accuracy of ``model`` with ``pe``'s evaluation frequencies."""
    use_frequencies(model, pe.rope(evaluation=True))
    positions = evaluation_positions(pe, seed, "validation")
    predictions = predict_split(
        model, run_data.validation, config.eval_batch_size, device, positions
    )
    signals.point("validation")
    accuracy = score_aligned(run_data.validation, predictions).id.accuracy
    return float(accuracy or 0.0)


@dataclass(frozen=True)
class RunJob:
    """What every run folder of one training shares."""

    run_data: RunData
    config: TrainConfig
    seed: int
    out: Path
    data: Path
    preset_name: str
    device: torch.device
    started: float
    save: bool


def _write_run(
    model: LlamaForCausalLM,
    selection: Selection,
    log: list[dict[str, Any]],
    job: RunJob,
) -> dict[str, Any]:
    """Predict test with the selected weights and write the run folder atomically."""
    run_data, config = job.run_data, job.config
    spec = run_data.train.spec
    pe = selection.pe
    model.load_state_dict(selection.state)
    evaluation = pe.rope(evaluation=True)
    use_frequencies(model, evaluation)
    test = run_data.test
    positions = evaluation_positions(pe, job.seed, "test")
    predictions = predict_split(model, test, config.eval_batch_size, job.device, positions)
    resolved = {
        "pe": pe.label,
        "position_encoding": pe.record(),
        "preset": job.preset_name,
        "seed": job.seed,
        "train": config.model_dump(mode="json"),
        "data": str(job.data),
        "config": test.config,
        "spec_id": spec.spec_id,
        "spec": spec.model_dump(mode="json"),
        "rope_parameters": {"train": pe.rope(evaluation=False), "evaluation": evaluation},
        "model": {"class": type(model).__name__, "parameters": model.num_parameters()},
        "best_epoch": selection.epoch,
        "best_val_id_accuracy": selection.accuracy,
        "device": job.device.type,
        "torch_threads": torch.get_num_threads(),
        "versions": versions(),
    }
    # the typed model the readers use (posgen.train.run_record): what is written reads back
    resolved = RunConfig.model_validate(resolved).model_dump(mode="json", by_alias=True)
    with atomic_folder(job.out) as build:
        (build / CONFIG).write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
        lines = [json.dumps(_run_record(record, pe.label), sort_keys=True) + "\n" for record in log]
        (build / METRICS).write_text("".join(lines))
        write_predictions(
            build / PREDICTIONS, test.ids, predictions, spec.modulus, (spec.spec_id, test.split)
        )
        signals.point("write")
        kill_point("final")
        # scored on the test rows this run read (pinned), not on --data read again
        report = score_reference(test, build / PREDICTIONS)
        (build / SCORES).write_text(report.to_json())
        probe = _write_probe(build, model, job, test.config, positions)
        if job.save:
            save_model(model, pe, build / MODEL)
        wall = time.perf_counter() - job.started
        record = build_record(
            resolved, report, job.data, log[-1]["train_seconds"], wall, files=run_data.files
        )
        (build / RESULTS).write_text(record.to_json())
    return {
        "pe": pe.label,
        "out": str(job.out),
        "best_epoch": selection.epoch,
        **report.summary(),
        **probe.summary(),
    }


def _write_probe(
    build: Path,
    model: LlamaForCausalLM,
    job: RunJob,
    config_name: str,
    positions: PositionIds | None,
) -> RelianceReport:
    """Predict the ``probe`` split with the current weights (and the test rows' position
    ids: probe row i is test row i altered); write the predictions and their far-reliance
    report into the run folder ``build``."""
    probe = job.run_data.probe or load_probe(job.data, config_name, PROBE_SPLIT)
    predictions = predict_split(model, probe, job.config.eval_batch_size, job.device, positions)
    made_for = (probe.spec.spec_id, PROBE_SPLIT)
    write_predictions(
        build / PROBE_PREDICTIONS, probe.ids, predictions, probe.spec.modulus, made_for
    )
    report = score_probe(probe, predictions)
    (build / PROBE_SCORES).write_text(report.to_json())
    return report


def _run_record(record: dict[str, Any], pe: str) -> dict[str, Any]:
    """One epoch's log line for ``pe``: its own validation accuracy, no other embedding's."""
    line = {k: v for k, v in record.items() if not k.startswith("val_id_accuracy/")}
    key = f"val_id_accuracy/{pe}"
    if key in record:
        line["val_id_accuracy"] = record[key]
    return line
