"""Train a stock ``transformers`` Llama on one POSGEN config and write its run folder.

A run: build ``LlamaForCausalLM`` from a config (nothing downloaded), train on ``train``
with AdamW and a one-cycle cosine schedule stepped per batch, validate every
``eval_every`` epochs with the evaluation frequencies (:mod:`posgen.train.rope`), keep the
weights with the best validation ID accuracy, predict ``test`` with them and score the
predictions with :mod:`posgen.scoring` (the one metric implementation).

Validation scores only ID positions ``[w, L)``; the model is causal and its frequencies
do not depend on the row length, so validation rows are cut to length ``L`` (4x less
work at L' = 4L) with the same predictions there (``tests/test_train.py`` checks it).

Position embeddings that share their training frequencies (``rope`` and ``yarn``,
``resonance`` and ``resonance_yarn``) train identically for a seed, so :func:`train_runs`
can train once and serve several: each selects its own checkpoint by its own validation
accuracy and gets its own complete run folder, byte for byte what a run of its own writes
(also checked by the tests).

Run folder::

    config.json         resolved run config: preset fields, pe, rope parameters, data spec id,
                        versions, device, best epoch
    metrics.jsonl       one line per epoch: train loss, learning rate, validation ID accuracy,
                        seconds so far (all, and in training steps only)
    predictions.parquet test predictions (``posgen score --predictions`` reads them)
    scores.json         the ``posgen.scoring`` report of those predictions on ``test``
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
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from posgen import __version__, signals
from posgen.scoring.folder import score_aligned, score_reference
from posgen.scoring.lm_inputs import lm_arrays, predictions_from_logits, vocab_size
from posgen.scoring.prediction_files import write_predictions
from posgen.scoring.reference import ReferenceSplit, load_splits
from posgen.store.atomic import atomic_folder
from posgen.train.config import TrainConfig
from posgen.train.rope import rope_parameters, use_frequencies
from posgen.train.run_files import CONFIG, METRICS, PREDICTIONS, SCORES, RunConfig
from posgen.train.run_files import FILES as FILES


def training_embedding(pe: str) -> str:
    """The embedding ``pe`` trains with: YaRN variants train unscaled.

    >>> training_embedding("resonance_yarn"), training_embedding("rope")
    ('resonance', 'rope')
    """
    return pe.removesuffix("_yarn") if pe != "yarn" else "rope"


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


def lengths(reference: ReferenceSplit) -> tuple[int, int]:
    """``(L, L')``: the train length and the validation/test length of a split's spec."""
    return reference.spec.train_length, reference.spec.test_lengths[0]


def build_model(
    config: TrainConfig, reference: ReferenceSplit, pe: str, seed: int
) -> LlamaForCausalLM:
    """A freshly initialised Llama for ``reference``'s vocabulary, with ``pe``'s training rope."""
    spec = reference.spec
    hf_logging.set_verbosity_error()  # custom rope types have no transformers validator
    llama = LlamaConfig(
        vocab_size=vocab_size(spec),
        hidden_size=config.hidden,
        intermediate_size=config.intermediate,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=spec.test_lengths[0] + 1,
        rope_parameters=rope_parameters(pe, *lengths(reference), evaluation=False),
        bos_token_id=spec.modulus,
        eos_token_id=None,
        pad_token_id=None,
        tie_word_embeddings=False,
        use_cache=False,
    )
    torch.manual_seed(seeds_for(seed)[0])
    return LlamaForCausalLM(llama)


def lm_tensors(
    reference: ReferenceSplit, length: int | None = None, rows: Any = None
) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``labels`` (int64) of a split's rows (all, or those in ``rows``;
    cut to ``length`` tokens if given). Built per batch: the split stays at its stored width."""
    tokens = reference.tokens if rows is None else reference.tokens[rows]
    tokens = tokens if length is None else tokens[:, :length]
    arrays = lm_arrays(tokens, reference.spec.modulus, reference.spec.window)
    return {name: torch.from_numpy(arrays[name]) for name in ("input_ids", "labels")}


@torch.no_grad()
def predict(
    model: LlamaForCausalLM,
    input_ids: torch.Tensor,
    batch_size: int,
    device: torch.device,
    modulus: int,
) -> np.ndarray:
    """Teacher-forced argmax predictions ``(rows, L)`` of ``input_ids`` ``(rows, L + 1)``.

    The argmax runs over the m tokens only: BOS (id m) is never a target, and a prediction
    of it would be outside the vocabulary that posgen scores.
    """
    model.eval()
    out = []
    for start in range(0, input_ids.shape[0], batch_size):
        logits = model(input_ids=input_ids[start : start + batch_size].to(device)).logits
        out.append(predictions_from_logits(logits[..., :modulus].float().cpu().numpy()))
    model.train()
    return np.concatenate(out).astype(np.int64, copy=False)


def predict_split(
    model: LlamaForCausalLM, reference: ReferenceSplit, batch_size: int, device: torch.device
) -> np.ndarray:
    """:func:`predict` of a split's rows, inputs built one batch at a time; predictions at the
    split's stored width (the tokens are 0 .. m-1)."""
    rows = reference.tokens.shape[0]
    out = np.empty(reference.tokens.shape, dtype=reference.tokens.dtype)
    modulus = reference.spec.modulus
    for start in range(0, rows, batch_size):
        ids = lm_tensors(reference, rows=slice(start, start + batch_size))["input_ids"]
        out[start : start + batch_size] = predict(model, ids, batch_size, device, modulus)
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
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
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

    pe: str
    accuracy: float = -1.0
    epoch: int = 0
    state: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class RunData:
    """The three splits of a config: train, validation (cut to L) and test."""

    train: ReferenceSplit
    validation: ReferenceSplit
    test: ReferenceSplit

    @classmethod
    def load(cls, data: Path, config: str) -> RunData:
        """Read the three splits once, checked and pinned (:func:`load_splits`), at their
        stored width; validation rows cut to L."""
        splits = load_splits(data, config, ("train", "validation", "test"), cut=("validation",))
        return cls(**splits)


ProgressFactory = Callable[[int], Any]


def _null_progress(total: int) -> Any:
    return None


def train_runs(
    data: Path,
    config_name: str,
    pes: Sequence[str],
    config: TrainConfig,
    seed: int,
    outs: Sequence[Path],
    preset_name: str,
    device: torch.device | None = None,
    progress: ProgressFactory = _null_progress,
    run_data: RunData | None = None,
    memory_estimate: int | None = None,
) -> list[dict[str, Any]]:
    """Train once for ``pes`` (all with the same training embedding); write one folder each.

    Returns each run's summary (``{"pe", "out", "best_epoch", "id_accuracy", "ood_accuracy"}``).
    A signal stops the loop between two steps (:class:`posgen.signals.Interrupted`).
    """
    if len({training_embedding(pe) for pe in pes}) != 1:
        raise ValueError(f"{', '.join(pes)} do not share their training frequencies")
    device = device or pick_device()
    run_data = run_data or RunData.load(data, config_name)
    model = build_model(config, run_data.train, pes[0], seed).to(device)
    rows_total = run_data.train.tokens.shape[0]
    steps_per_epoch = math.ceil(rows_total / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    optimizer, schedule = optimizer_and_schedule(model, config, total)
    train_rope = rope_parameters(pes[0], *lengths(run_data.train), evaluation=False)
    selections = [Selection(pe) for pe in pes]
    log: list[dict[str, Any]] = []
    step = 0
    bar = progress(total)
    started = time.perf_counter()
    training = 0.0  # seconds in training steps only (no validation): the harness benchmark's
    model.train()
    for epoch, order in enumerate(epoch_order(rows_total, config.epochs, seed), 1):
        losses = []
        epoch_started = time.perf_counter()
        for start in range(0, order.shape[0], config.batch_size):
            if step >= total:
                break
            batch = lm_tensors(
                run_data.train, rows=order[start : start + config.batch_size].numpy()
            )
            with signals.deferred():  # a signal stops the run between steps, never within one
                loss = model(
                    input_ids=batch["input_ids"].to(device), labels=batch["labels"].to(device)
                ).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                losses.append(loss.detach())
                signals.point("step")
            if bar is not None:
                bar.update(1)
        training += time.perf_counter() - epoch_started
        last = step >= total
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "train_loss": float(torch.stack(losses).mean()) if losses else None,
            "lr": schedule.get_last_lr()[0],
        }
        if epoch % config.eval_every == 0 or last or epoch == config.epochs:
            for selection in selections:
                accuracy = _validate(model, run_data, selection.pe, config, device)
                record[f"val_id_accuracy/{selection.pe}"] = accuracy
                if accuracy > selection.accuracy:
                    selection.accuracy, selection.epoch = accuracy, epoch
                    selection.state = copy.deepcopy(model.state_dict())
            use_frequencies(model, train_rope)
        record["seconds"] = round(time.perf_counter() - started, 3)
        record["train_seconds"] = round(training, 3)
        log.append(record)
        if last:
            break
    if bar is not None and hasattr(bar, "close"):
        bar.close()
    summaries = []
    for selection, out in zip(selections, outs, strict=True):
        summaries.append(
            _write_run(
                model,
                run_data,
                selection,
                config,
                seed,
                Path(out),
                data,
                preset_name,
                log,
                device,
                memory_estimate,
            )
        )
    return summaries


def _validate(
    model: LlamaForCausalLM, run_data: RunData, pe: str, config: TrainConfig, device: torch.device
) -> float:
    """Validation ID accuracy of ``model`` with ``pe``'s evaluation frequencies."""
    use_frequencies(model, rope_parameters(pe, *lengths(run_data.train), evaluation=True))
    predictions = predict_split(model, run_data.validation, config.eval_batch_size, device)
    signals.point("validation")
    accuracy = score_aligned(run_data.validation, predictions).id.accuracy
    return float(accuracy or 0.0)


def _write_run(
    model: LlamaForCausalLM,
    run_data: RunData,
    selection: Selection,
    config: TrainConfig,
    seed: int,
    out: Path,
    data: Path,
    preset_name: str,
    log: list[dict[str, Any]],
    device: torch.device,
    memory_estimate: int | None = None,
) -> dict[str, Any]:
    """Predict test with the selected weights and write the run folder atomically."""
    spec = run_data.train.spec
    pe = selection.pe
    model.load_state_dict(selection.state)
    evaluation = rope_parameters(pe, *lengths(run_data.train), evaluation=True)
    use_frequencies(model, evaluation)
    test = run_data.test
    predictions = predict_split(model, test, config.eval_batch_size, device)
    resolved = RunConfig.model_validate(
        {
            "pe": pe,
            "preset": preset_name,
            "seed": seed,
            "train": config,
            "data": str(data),
            "config": test.config,
            "spec_id": spec.spec_id,
            "spec": spec,
            "rope_parameters": {
                "train": rope_parameters(pe, *lengths(run_data.train), evaluation=False),
                "evaluation": evaluation,
            },
            "model": {"class": type(model).__name__, "parameters": model.num_parameters()},
            "best_epoch": selection.epoch,
            "best_val_id_accuracy": selection.accuracy,
            "device": device.type,
            "torch_threads": torch.get_num_threads(),
            "memory_estimate": memory_estimate,
            "versions": versions(),
        }
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    with atomic_folder(out) as build:
        (build / CONFIG).write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
        lines = [json.dumps(_run_record(record, pe), sort_keys=True) + "\n" for record in log]
        (build / METRICS).write_text("".join(lines))
        write_predictions(build / PREDICTIONS, test.ids, predictions, spec.modulus)
        signals.point("write")
        # scored on the test rows this run read (pinned), not on --data read again
        report = score_reference(test, build / PREDICTIONS)
        (build / SCORES).write_text(report.to_json())
    return {
        "pe": pe,
        "out": str(out),
        "best_epoch": selection.epoch,
        **report.summary(),
    }


def _run_record(record: dict[str, Any], pe: str) -> dict[str, Any]:
    """One epoch's log line for ``pe``: its own validation accuracy, no other embedding's."""
    line = {k: v for k, v in record.items() if not k.startswith("val_id_accuracy/")}
    key = f"val_id_accuracy/{pe}"
    if key in record:
        line["val_id_accuracy"] = record[key]
    return line
