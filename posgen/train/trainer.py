"""The training loop: train a stock ``transformers`` Llama on one POSGEN config.

:func:`train` trains with AdamW and a one-cycle cosine schedule stepped per batch. At the end
of every ``eval_every``-th epoch and of the last one it validates with the evaluation
frequencies and keeps each encoding's weights of best validation ID accuracy (the first on a
tie). It hands the checkpoint (:func:`state`) to a callback at every epoch's end and when a
signal stops it between steps; it writes no files (:mod:`posgen.train.job` does, into
``.RUN.posgen-resume/``).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import math
import platform
import time
from collections.abc import Callable, Iterator, Sequence
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
from posgen.generator import expected_targets
from posgen.scoring.folder import score_aligned
from posgen.scoring.prediction_files import (
    NaNLogits,
    lm_arrays,
    predictions_from_logits,
    vocab_size,
)
from posgen.scoring.reliance import score_probe
from posgen.spec import PROBE_SPLIT, TaskSpec
from posgen.store.dataset import Dataset, ProbeSplit, ReferenceSplit
from posgen.store.manifest import DamagedDataset
from posgen.train.config import TrainConfig

PositionIds = Callable[[int, int, int], torch.Tensor]
"""``(first row, rows, length) -> position ids (rows, length)`` of an evaluation split."""


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
    """bf16 autocast with ``config.bf16`` (CUDA only: a ``ValueError`` on CPU), else nothing."""
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
    """``pe`` resolved for ``spec``'s lengths and ``config``'s model size."""
    if isinstance(pe, ResolvedPE):
        return pe
    head_dim = config.hidden // config.heads
    shape = Lengths(spec.train_length, spec.test_lengths[0], head_dim, config.heads)
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
    size = config.model_dump(include={"hidden", "heads", "layers", "intermediate"})
    vocab = vocab_size(spec) + (spec.modulus if config.question_ids else 0)
    return llama_for(resolved, vocab=vocab, bos=spec.modulus, **size)


def lm_tensors(
    reference: ReferenceSplit | ProbeSplit,
    length: int | None = None,
    rows: Any = None,
    question_ids: bool = False,
) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``labels`` (int64) of a split's rows (all or ``rows``, cut to
    ``length``). ``question_ids``: x_0 .. x_{j-1} get ids m + 1 + x of their own, e.g. m 17,
    j 1: ``BOS 5 ...`` -> ``17 23 ...``."""
    tokens = reference.tokens if rows is None else reference.tokens[rows]
    tokens = tokens if length is None else tokens[:, :length]
    spec = reference.spec
    arrays = lm_arrays(tokens, spec.modulus, spec.window)
    if question_ids:
        arrays["input_ids"][:, 1 : 1 + spec.far] += spec.modulus + 1
    return {name: torch.from_numpy(arrays[name]) for name in ("input_ids", "labels")}


def position_inputs(position_ids: torch.Tensor | None, device: torch.device) -> dict[str, Any]:
    """Model keyword arguments for explicit position ids (none: transformers' 0 .. T-1); the
    all-ones mask keeps transformers from reading gapped ids as packed rows."""
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
    first: int = 0,
) -> np.ndarray:
    """Teacher-forced argmax predictions ``(rows, L)`` of ``input_ids`` ``(rows, L + 1)`` over
    the m tokens (never BOS); ``positions`` of rows from ``first`` on: explicit position ids.
    Logits NaN at a position: :class:`NaNLogits` naming its row (counted from ``first``)."""
    model.eval()
    out = []
    for start in range(0, input_ids.shape[0], batch_size):
        batch = input_ids[start : start + batch_size]
        ids = None if positions is None else positions(first + start, *batch.shape)
        logits = model(input_ids=batch.to(device), **position_inputs(ids, device)).logits
        try:
            out.append(predictions_from_logits(logits[..., :modulus].float().cpu().numpy()))
        except NaNLogits as error:
            raise NaNLogits(first + start + error.row, error.t) from None
    model.train()
    return np.concatenate(out).astype(np.int64, copy=False)


def evaluation_positions(pe: ResolvedPE, seed: int, split: str) -> PositionIds | None:
    """Position ids of an evaluation split's rows (randomized positions only)."""
    if pe.randomized is None:
        return None
    sampler = RandomPositions(seed, pe.randomized)
    return lambda start, rows, length: sampler.evaluation(split, start, rows, length)


def predict_split(
    model: LlamaForCausalLM,
    split: ReferenceSplit | ProbeSplit,
    pe: ResolvedPE,
    config: TrainConfig,
    device: torch.device,
    seed: int,
) -> np.ndarray:
    """Predictions of ``split`` with ``pe``'s evaluation frequencies, inputs built per batch; the
    probe split takes the test rows' position ids (probe row i is test row i altered). Logits
    NaN at a position are :class:`Diverged`: no prediction, and no score, is made of them."""
    use_frequencies(model, pe.rope(evaluation=True))
    name = "validation" if split.split == "validation" else "test"
    positions = evaluation_positions(pe, seed, name)
    out = np.empty(split.tokens.shape, dtype=split.tokens.dtype)
    size = config.eval_batch_size
    with precision(config, device):
        for start in range(0, split.tokens.shape[0], size):
            rows = slice(start, start + size)
            ids = lm_tensors(split, rows=rows, question_ids=config.question_ids)["input_ids"]
            try:
                out[rows] = predict(model, ids, size, device, split.spec.modulus, positions, start)
            except NaNLogits as error:
                bf16 = ", train without --bf16" if config.bf16 else ""
                raise Diverged(
                    f"the model's logits are not finite (NaN) at {split.split} row {error.row}, "
                    f"t = {error.t}: no prediction or score is made of them, the run failed and "
                    f"no run folder was written; lower --lr{bf16} or change the position "
                    "encoding's parameters"
                ) from None
    return out


@dataclass
class Selection:
    """The best validation ID accuracy of one position embedding so far, and its weights."""

    pe: ResolvedPE
    accuracy: float = -1.0
    epoch: int = 0
    state: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class RunData:
    """A config's splits (validation cut to L) and the sha256 of every file read."""

    train: ReferenceSplit
    validation: ReferenceSplit
    test: ReferenceSplit
    probe: ProbeSplit
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, data: Path | Dataset, config: str) -> RunData:
        """Read the splits once, checked against the manifest and pinned, through ``data``."""

        def read(dataset: Dataset) -> RunData:
            splits = dataset.splits(config, ("train", "validation", "test"), cut=("validation",))
            files = {path: digest for split in splits.values() for path, digest in split.files}
            probe_files = dataset.manifest.configs[config].splits[PROBE_SPLIT].files
            files |= {file.path: file.sha256 for file in probe_files}
            check_rule(dataset.root, splits["test"])
            return cls(**splits, files=files, probe=dataset.probe(config, PROBE_SPLIT))

        dataset = data if isinstance(data, Dataset) else Dataset.open(data)
        return dataset.read(read)


def check_rule(root: Path, test: ReferenceSplit) -> None:
    """:class:`DamagedDataset` when the first test row's targets are not what the task and op
    registered in this process compute (a task of one's own whose rule was edited since the
    dataset was written: its far operands would be read at other positions)."""
    spec, row = test.spec, test.tokens[:1]
    wrong = np.flatnonzero(expected_targets(spec, row)[0] != row[0, spec.window :])
    if wrong.size:
        t = spec.window + int(wrong[0])
        raise DamagedDataset(root, [
            f"test row 0, t = {t}: the stored token {int(row[0, t])} is not what task "
            f"{spec.task!r} and op {spec.op!r}, as registered in this process, compute: they "
            f"differ from the ones that wrote it; register those (posgen validate {root} "
            "checks every token)"
        ])  # fmt: skip


class Diverged(RunError):
    """The training loss is NaN or infinite, or the logits of a split predicted are NaN: the
    run stops, nothing is written (exit 1)."""


class PluginFailed(RunError):
    """A plugin encoding's code failed in training or the writes: nothing is written (exit 1)."""


def diverged(loss: torch.Tensor, where: str) -> None:
    """Raise :class:`Diverged` when ``loss`` is not finite, saying ``where``."""
    if not bool(torch.isfinite(loss)):
        raise Diverged(
            f"training loss became {float(loss)} at {where}: the run diverged and no run folder "
            "was written; lower --lr or change the position encoding's parameters"
        )


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


def epoch_order(rows: int, seed: int) -> Iterator[torch.Tensor]:
    """Row order of each epoch in turn, from the run's batch-order seed; made one at a time
    (held for 10,000 epochs of a large split, they are gigabytes)."""
    generator = torch.Generator().manual_seed(seeds_for(seed)[1])
    while True:
        yield torch.randperm(rows, generator=generator)


def total_steps(config: TrainConfig, run_data: RunData) -> int:
    """Optimiser steps of the run: every batch of every epoch, or ``max_steps`` if fewer."""
    total = math.ceil(run_data.train.tokens.shape[0] / config.batch_size) * config.epochs
    return total if config.max_steps is None else min(total, config.max_steps)


def optimizer_and_schedule(
    model: LlamaForCausalLM, config: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW and torch's one-cycle cosine schedule (the authors' choice), stepped per batch.
    A warm-up ending exactly at step 1 becomes 1.5 steps (OneCycleLR divides by 0 there)."""
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.weight_decay), lr=config.lr, weight_decay=config.weight_decay
    )
    warmup = 1.5 / total_steps if math.isclose(config.warmup * total_steps, 1.0) else config.warmup
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, config.lr, total_steps=total_steps, pct_start=warmup, anneal_strategy="cos"
    )
    return optimizer, schedule


def train(
    run_data: RunData,
    pes: Sequence[str | PERequest | ResolvedPE],
    config: TrainConfig,
    seed: int,
    device: torch.device,
    resume: dict[str, Any] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    events: Callable[[str, int], None] | None = None,
) -> Trained:
    """Train once for ``pes`` (encodings that train alike), keeping each one's best weights.

    ``checkpoint`` gets the state at every epoch's end and when a signal stops the run (between
    steps); resuming from it takes the very step an uninterrupted run would. ``events`` gets
    ``(moment, step)`` after every step and validation."""
    resolved = [resolve_pe(pe, config, run_data.train.spec) for pe in pes]
    if len({pe.training_key() for pe in resolved}) != 1:
        names = ", ".join(pe.label for pe in resolved)
        raise ValueError(f"{names} do not share their training frequencies")
    precision(config, device)  # bf16 on a CPU is refused before anything is built
    events = events or (lambda moment, step: None)
    model = build_model(config, run_data.train, resolved[0], seed).to(device)
    rows = run_data.train.tokens.shape[0]  # held at its stored width; batches widened one by one
    total = total_steps(config, run_data)
    optimizer, schedule = optimizer_and_schedule(model, config, total)
    parts = {"model": model, "optimizer": optimizer, "schedule": schedule}
    train_rope = resolved[0].rope(evaluation=False)
    randomized = resolved[0].randomized
    sampler = None if randomized is None else RandomPositions(seed, randomized)
    selections = [Selection(pe) for pe in resolved]
    end = Position(epoch=config.epochs + 1, offset=rows, step=total)
    at = Position() if resume is None else restore(resume, selections, parts, end)
    orders = itertools.islice(epoch_order(rows, seed), at.epoch - 1, None)
    started = time.perf_counter() - at.seconds  # wall time counts every attempt
    model.train()

    def save() -> None:
        if checkpoint is not None:
            at.seconds = time.perf_counter() - started
            checkpoint(state(at, selections, parts))

    def evaluate(selection: Selection, probe: bool) -> dict[str, float | None]:
        """Validate, keeping the weights when best; with ``probe`` also its far-reliance."""
        label, pe = selection.pe.label, selection.pe
        predictions = predict_split(model, run_data.validation, pe, config, device, seed)
        accuracy = float(score_aligned(run_data.validation, predictions).id.accuracy or 0.0)
        if accuracy > selection.accuracy:
            selection.accuracy, selection.epoch = accuracy, at.epoch
            selection.state = copy.deepcopy(model.state_dict())
        figures = {f"val_id_accuracy/{label}": accuracy}
        if probe:
            predictions = predict_split(model, run_data.probe, pe, config, device, seed)
            reliance = score_probe(run_data.probe, predictions)
            figures[f"far_reliance_id/{label}"] = reliance.id.far_reliance
            figures[f"far_reliance_ood/{label}"] = reliance.ood.far_reliance
        return figures

    try:
        while not at.done:
            order = next(orders)
            for begin in range(at.offset, rows, config.batch_size):
                if at.step >= total:
                    break
                step_started = time.perf_counter()
                batch = order[begin : begin + config.batch_size].numpy()
                tensors = lm_tensors(run_data.train, rows=batch, question_ids=config.question_ids)
                shape = tensors["input_ids"].shape
                positions = None if sampler is None else sampler.training(at.step, *shape)
                inputs = {name: tensor.to(device) for name, tensor in tensors.items()}
                with signals.deferred():  # a signal stops the run between steps, not within
                    with precision(config, device):
                        loss = model(**inputs, **position_inputs(positions, device)).loss
                    if device.type == "cpu":  # free here; a GPU is checked once an epoch
                        diverged(loss.detach(), f"step {at.step + 1} (epoch {at.epoch})")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    at.step, at.offset = at.step + 1, begin + config.batch_size
                    at.losses.append(loss.detach())
                at.train_seconds += time.perf_counter() - step_started  # steps only
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
                    probe = config.probe_every and (at.epoch % config.probe_every == 0 or last)
                    for selection in selections:
                        record |= evaluate(selection, bool(probe))
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
    return Trained(model, selections, at.log, started)


def plugin_failed(error: BaseException, resolved: Sequence[ResolvedPE]) -> None:
    """Raise :class:`PluginFailed` naming the plugin encodings of a run that failed with an
    unexpected ``error`` (not posgen's, the disk's, memory or a signal; ``sys.exit`` too)."""
    plugins = [pe for pe in resolved if pe.encoding.source != "built-in"]
    expected = isinstance(error, PosgenError | OSError | signals.Interrupted | KeyboardInterrupt)
    if not plugins or expected or out_of_memory(error):
        return
    named = ", ".join(f"{pe.label} ({pe.encoding.source})" for pe in plugins)
    reason = shown(str(error), 300) or "(no message)"
    raise PluginFailed(
        f"training failed with the plugin encoding {named}: {type(error).__name__}: {reason} "
        "(most likely a bug in the plugin; no run folder was written)"
    ) from None


def state(at: Position, selections: list[Selection], parts: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint: all a resumed run needs (``parts``: model, optimizer, schedule by name)."""
    losses = torch.stack(at.losses).cpu() if at.losses else None
    return {
        "position": {**vars(at), "losses": losses, "log": json.dumps(at.log)},
        "selections": {
            s.pe.label: {"accuracy": s.accuracy, "epoch": s.epoch, "state": s.state}
            for s in selections
        },
        **{name: part.state_dict() for name, part in parts.items()},
        "rng": {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }


class UnfitCheckpoint(ValueError):
    """A checked checkpoint whose contents do not fit this training (another layout or
    version, a position past the run's end): never resumed."""


def restore(
    saved: dict[str, Any], selections: list[Selection], parts: dict[str, Any], end: Position
) -> Position:
    """Load a :func:`state` dict into the training; where it stands (at most ``end``: the
    last step, the epoch after the last and the rows of one). :class:`UnfitCheckpoint`
    when its contents do not fit."""
    try:
        at = _restored(saved, selections, parts)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as error:
        if out_of_memory(error):
            raise
        why = shown(str(error), 150) or "(no message)"
        raise UnfitCheckpoint(f"does not fit this run ({type(error).__name__}: {why})") from None
    fits = [
        (at.step, 0, end.step), (at.epoch, 1, end.epoch), (at.offset, 0, end.offset)
    ]  # fmt: skip
    ended = at.step == end.step or at.epoch == end.epoch
    if not all(type(v) is int and low <= v <= high for v, low, high in fits) or not (
        isinstance(at.done, bool) and isinstance(at.log, list)
        and all(isinstance(line, dict) for line in at.log)
        and (not at.done or (ended and all(s.state for s in selections)))
    ):  # fmt: skip
        said = f"epoch {at.epoch!r}, step {at.step!r}, offset {at.offset!r}"
        raise UnfitCheckpoint(f"does not fit this run (it stands at {shown(said, 150)})")
    return at


def _restored(
    saved: dict[str, Any], selections: list[Selection], parts: dict[str, Any]
) -> Position:
    for selection in selections:
        entry = saved["selections"][selection.pe.label]
        selection.accuracy, selection.epoch = entry["accuracy"], entry["epoch"]
        selection.state = entry["state"]
    for name, part in parts.items():
        part.load_state_dict(saved[name])
    torch.set_rng_state(saved["rng"]["cpu"].cpu())
    cuda = saved["rng"]["cuda"]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([rng.cpu() for rng in cuda])
    at = dict(saved["position"])
    device = next(parts["model"].parameters()).device
    at["losses"] = [] if at["losses"] is None else list(at["losses"].to(device).unbind())
    at["log"] = json.loads(at["log"])
    return Position(**at)
