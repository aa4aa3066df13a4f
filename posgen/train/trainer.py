"""The training loop: train a stock ``transformers`` Llama on one POSGEN config.

:func:`train` trains with AdamW and a one-cycle cosine schedule stepped per batch, validates
every ``eval_every`` epochs with the evaluation frequencies and keeps the weights with the
best validation ID accuracy. It writes no files (the job around it does:
:mod:`posgen.train.job`). Validation rows are cut to L (only ID positions are scored; the
model is causal). Encodings with one :meth:`~posgen.encodings.ResolvedPE.training_key` train
identically, so one :func:`train` serves them all, each selecting its own checkpoint.
"""

from __future__ import annotations

import contextlib
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
from posgen.encodings import Lengths, PERequest, ResolvedPE, as_request, resolve
from posgen.encodings.builtin import RandomPositions
from posgen.encodings.model import check_encoding, llama_for, parameter_groups, use_frequencies
from posgen.errors import PosgenError, RunError, out_of_memory, shown
from posgen.scoring.folder import score_aligned
from posgen.scoring.prediction_files import lm_arrays, predictions_from_logits, vocab_size
from posgen.scoring.reliance import RelianceReport, score_probe
from posgen.spec import PROBE_SPLIT, TaskSpec
from posgen.store.dataset import Dataset, ProbeSplit, ReferenceSplit
from posgen.train.config import TrainConfig


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


def precision(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when ``config.bf16`` (CUDA only: a CPU device raises ``ValueError``);
    otherwise nothing at all, so float32 runs compute exactly what they computed before."""
    if not config.bf16:
        return contextlib.nullcontext()
    if device.type != "cuda":
        raise ValueError("bf16 needs a CUDA device (CPU runs compute in float32)")
    return torch.autocast("cuda", dtype=torch.bfloat16)


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
    resolved = resolve(as_request(pe), shape)
    check_encoding(resolved)
    return resolved


def build_model(
    config: TrainConfig, reference: ReferenceSplit, pe: str | PERequest | ResolvedPE, seed: int
) -> LlamaForCausalLM:
    """A freshly initialised Llama for ``reference``'s vocabulary, with ``pe``'s training setup."""
    spec = reference.spec
    resolved = resolve_pe(pe, config, spec)
    torch.manual_seed(seeds_for(seed)[0])
    return llama_for(
        resolved,
        vocab=vocab_size(spec) + (spec.modulus if config.question_ids else 0),
        bos=spec.modulus,
        hidden=config.hidden,
        heads=config.heads,
        layers=config.layers,
        intermediate=config.intermediate,
    )


def lm_tensors(
    reference: ReferenceSplit | ProbeSplit,
    length: int | None = None,
    rows: Any = None,
    question_ids: bool = False,
) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``labels`` (int64) of a split's rows (all, or those in ``rows``;
    cut to ``length`` tokens if given). Built per batch: the split stays at its stored width.

    ``question_ids``: the question tokens x_0 .. x_{j-1} (inputs 1 .. j, after BOS = m) get
    ids m + 1 + x of their own, e.g. m 17, j 1: ``BOS 5 ...`` -> ``17 23 ...``."""
    tokens = reference.tokens if rows is None else reference.tokens[rows]
    tokens = tokens if length is None else tokens[:, :length]
    spec = reference.spec
    arrays = lm_arrays(tokens, spec.modulus, spec.window)
    if question_ids:
        arrays["input_ids"][:, 1 : 1 + spec.far] += spec.modulus + 1
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
    """Teacher-forced argmax predictions ``(rows, L)`` of ``input_ids`` ``(rows, L + 1)``, over
    the m tokens only (BOS is never a target); ``positions``: explicit position ids."""
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
    question_ids: bool = False,
) -> np.ndarray:
    """:func:`predict` of a split's rows, inputs built one batch at a time (``question_ids``:
    see :func:`lm_tensors`); predictions at the split's stored width (tokens 0 .. m-1)."""
    rows = reference.tokens.shape[0]
    out = np.empty(reference.tokens.shape, dtype=reference.tokens.dtype)
    modulus = reference.spec.modulus
    for start in range(0, rows, batch_size):
        batch_rows = slice(start, start + batch_size)
        ids = lm_tensors(reference, rows=batch_rows, question_ids=question_ids)["input_ids"]
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
    probe: ProbeSplit
    """The ``probe`` split (every spec has one), read in the same pinned read."""

    files: dict[str, str] = field(default_factory=dict)
    """``path -> sha256`` of every file read (checked against the manifest as read)."""

    @classmethod
    def load(cls, data: Path | Dataset, config: str) -> RunData:
        """Read the three splits and the probe split once, checked and pinned, through the
        dataset handle ``data`` (a path is opened), at their stored width; validation rows
        cut to L."""

        def read(dataset: Dataset) -> RunData:
            names = ("train", "validation", "test")
            splits = dataset.splits(config, names, cut=("validation",))
            files = {path: digest for split in splits.values() for path, digest in split.files}
            entry = dataset.manifest.configs[config]
            probe = dataset.probe(config, PROBE_SPLIT)
            files |= {file.path: file.sha256 for file in entry.splits[PROBE_SPLIT].files}
            return cls(**splits, files=files, probe=probe)

        dataset = data if isinstance(data, Dataset) else Dataset.open(data)
        return dataset.read(read)


class Diverged(RunError):
    """The training loss is NaN or infinite: the run stops, nothing is written (exit 1)."""


def diverged(loss: torch.Tensor, where: str) -> None:
    """Raise :class:`Diverged` when ``loss`` is not finite, saying ``where``."""
    if not bool(torch.isfinite(loss)):
        raise Diverged(
            f"training loss became {float(loss)} at {where}: the run diverged and no run folder "
            "was written; lower --lr or change the position encoding's parameters"
        )


Events = Callable[[str, int], None]
"""``(moment, step)``: called after every step (``"step"``) and validation (``"validation"``);
the job uses it for its progress and test hooks."""


def _no_events(moment: str, step: int) -> None:
    pass


@dataclass
class Position:
    """Where a training stands: the next batch is ``offset`` rows into epoch ``epoch``."""

    epoch: int = 1
    offset: int = 0
    step: int = 0
    losses: list[torch.Tensor] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    train_seconds: float = 0.0
    done: bool = False


@dataclass
class Trained:
    """A finished training: its model (last weights), each encoding's selection, the log."""

    model: LlamaForCausalLM
    selections: list[Selection]
    log: list[dict[str, Any]]
    started: float


def train(
    run_data: RunData,
    pes: Sequence[str | PERequest | ResolvedPE],
    config: TrainConfig,
    seed: int,
    device: torch.device,
    resume: dict[str, Any] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    events: Events = _no_events,
) -> Trained:
    """Train once for ``pes`` (one shared training), keeping each encoding's best weights.

    ``checkpoint`` gets the state dict at every epoch's end and when a signal stops the run
    (between steps); resuming from it takes the very step an uninterrupted run would."""
    resolved = [resolve_pe(pe, config, run_data.train.spec) for pe in pes]
    if len({pe.training_key() for pe in resolved}) != 1:
        names = ", ".join(pe.label for pe in resolved)
        raise ValueError(f"{names} do not share their training frequencies")
    precision(config, device)  # bf16 on a CPU is refused before anything is built
    model = build_model(config, run_data.train, resolved[0], seed).to(device)
    rows = run_data.train.tokens.shape[0]  # held at its stored width; batches widened one by one
    total = total_steps(config, run_data)
    optimizer, schedule = optimizer_and_schedule(model, config, total)
    train_rope = resolved[0].rope(evaluation=False)
    sampler = random_positions(resolved[0], seed)
    selections = [Selection(pe) for pe in resolved]
    at = Position() if resume is None else restore(resume, selections, model, optimizer, schedule)
    orders = epoch_order(rows, config.epochs, seed)
    started = time.perf_counter() - at.seconds  # wall time counts every attempt
    model.train()

    def save() -> None:
        if checkpoint is not None:
            at.seconds = time.perf_counter() - started
            checkpoint(state(at, selections, model, optimizer, schedule))

    try:
        while not at.done:
            order = orders[at.epoch - 1]
            for begin in range(at.offset, rows, config.batch_size):
                if at.step >= total:
                    break
                step_started = time.perf_counter()
                tensors = lm_tensors(
                    run_data.train,
                    rows=order[begin : begin + config.batch_size].numpy(),
                    question_ids=config.question_ids,
                )
                batch = tensors["input_ids"]
                positions = None
                if sampler is not None:
                    positions = sampler.training(at.step, batch.shape[0], batch.shape[1])
                with signals.deferred():  # a signal stops the run between steps, not within
                    with precision(config, device):
                        loss = model(
                            input_ids=batch.to(device),
                            labels=tensors["labels"].to(device),
                            **position_inputs(positions, device),
                        ).loss
                    if device.type == "cpu":  # free here; a GPU is checked once an epoch
                        diverged(loss.detach(), f"step {at.step + 1} (epoch {at.epoch})")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    at.step, at.offset = at.step + 1, begin + config.batch_size
                    at.losses.append(loss.detach())
                # seconds in training steps only (no validation): the harness benchmark's
                at.train_seconds += time.perf_counter() - step_started
                events("step", at.step)
            with signals.deferred():
                mean = torch.stack(at.losses).mean() if at.losses else None
                if mean is not None:
                    diverged(mean, f"epoch {at.epoch} (its mean up to step {at.step})")
                record: dict[str, Any] = {
                    "epoch": at.epoch,
                    "step": at.step,
                    "train_loss": None if mean is None else float(mean),
                    "lr": schedule.get_last_lr()[0],
                }
                last = at.step >= total or at.epoch == config.epochs
                if at.epoch % config.eval_every == 0 or last:
                    for selection in selections:
                        accuracy = _validate(model, run_data, selection.pe, config, device, seed)
                        record[f"val_id_accuracy/{selection.pe.label}"] = accuracy
                        if accuracy > selection.accuracy:
                            selection.accuracy, selection.epoch = accuracy, at.epoch
                            selection.state = copy.deepcopy(model.state_dict())
                        if config.probe_every and (at.epoch % config.probe_every == 0 or last):
                            reliance = _probe(model, run_data, selection.pe, config, device, seed)
                            record[f"far_reliance_id/{selection.pe.label}"] = (
                                reliance.id.far_reliance
                            )
                            record[f"far_reliance_ood/{selection.pe.label}"] = (
                                reliance.ood.far_reliance
                            )
                    use_frequencies(model, train_rope)
                    events("validation", at.step)
                record["seconds"] = round(time.perf_counter() - started, 3)
                record["train_seconds"] = round(at.train_seconds, 3)
                at.log.append(record)
                at.done = last
                at.epoch, at.offset, at.losses = at.epoch + 1, 0, []
                save()
    except signals.Interrupted:
        save()  # at a step or epoch boundary: the state is whole
        raise
    except Exception as error:
        plugin_failed(error, resolved)
        raise
    return Trained(model, selections, at.log, started)


def plugin_failed(error: Exception, resolved: Sequence[ResolvedPE]) -> None:
    """Raise a :class:`RunError` naming the plugin encodings of a training that failed with an
    unexpected ``error`` (not posgen's own, not memory): a plugin's bug is said as one."""
    plugins = [pe for pe in resolved if pe.encoding.source != "built-in"]
    if not plugins or isinstance(error, PosgenError) or out_of_memory(error):
        return
    named = ", ".join(f"{pe.label} ({pe.encoding.source})" for pe in plugins)
    reason = shown(str(error), 300) or "(no message)"
    raise RunError(
        f"training failed with the plugin encoding {named}: {type(error).__name__}: {reason} "
        "(most likely a bug in the plugin; no run folder was written)"
    ) from None


def state(
    at: Position,
    selections: list[Selection],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """The checkpoint dict: everything a resumed run needs to take the next step."""
    return {
        "position": {
            "epoch": at.epoch,
            "offset": at.offset,
            "step": at.step,
            "losses": torch.stack(at.losses).cpu() if at.losses else None,
            "log": json.dumps(at.log),
            "seconds": at.seconds,
            "train_seconds": at.train_seconds,
            "done": at.done,
        },
        "selections": {
            s.pe.label: {"accuracy": s.accuracy, "epoch": s.epoch, "state": s.state}
            for s in selections
        },
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "rng": {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }


def restore(
    saved: dict[str, Any],
    selections: list[Selection],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
) -> Position:
    """Load a :func:`state` dict into the training; where it stands. A ``KeyError`` names an
    encoding the checkpoint has no selection for."""
    for selection in selections:
        entry = saved["selections"][selection.pe.label]
        selection.accuracy, selection.epoch = entry["accuracy"], entry["epoch"]
        selection.state = entry["state"]
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    torch.set_rng_state(saved["rng"]["cpu"].cpu())
    cuda = saved["rng"]["cuda"]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([rng.cpu() for rng in cuda])
    at = dict(saved["position"])
    device = next(model.parameters()).device
    at["losses"] = [] if at["losses"] is None else list(at["losses"].to(device).unbind())
    at["log"] = json.loads(at["log"])
    return Position(**at)


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


def _predict_now(
    model: LlamaForCausalLM,
    split: ReferenceSplit,
    pe: ResolvedPE,
    config: TrainConfig,
    device: torch.device,
    positions: PositionIds | None,
) -> np.ndarray:
    """Predictions of ``split`` by the current weights with ``pe``'s evaluation frequencies,
    as the run's evaluations take them (precision, question ids)."""
    use_frequencies(model, pe.rope(evaluation=True))
    with precision(config, device):
        return predict_split(
            model, split, config.eval_batch_size, device, positions, config.question_ids
        )


def _validate(
    model: LlamaForCausalLM,
    run_data: RunData,
    pe: ResolvedPE,
    config: TrainConfig,
    device: torch.device,
    seed: int,
) -> float:
    """Validation ID accuracy of ``model`` with ``pe``'s evaluation frequencies."""
    positions = evaluation_positions(pe, seed, "validation")
    predictions = _predict_now(model, run_data.validation, pe, config, device, positions)
    accuracy = score_aligned(run_data.validation, predictions).id.accuracy
    return float(accuracy or 0.0)


def _probe(
    model: LlamaForCausalLM,
    run_data: RunData,
    pe: ResolvedPE,
    config: TrainConfig,
    device: torch.device,
    seed: int,
) -> RelianceReport:
    """Far-reliance of ``model`` now on the probe split (``probe_every``), with ``pe``'s
    evaluation frequencies and the test rows' position ids (probe row i is test row i
    altered), as the run's final probe scores are taken."""
    positions = evaluation_positions(pe, seed, "test")
    predictions = _predict_now(model, run_data.probe, pe, config, device, positions)
    return score_probe(run_data.probe, predictions)
