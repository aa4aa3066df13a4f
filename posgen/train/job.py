"""One training job: what ``posgen train`` and every sweep worker run around the loop.

The job locks its work folder, keeps the checkpoint (``checkpoint.pt`` ending with its sha256,
and ``progress.json``, readable without torch), reads the data once and writes each run folder
whole. Tests stop a job with ``POSGEN_SIGNAL_AT`` (:func:`posgen.signals.point`) at ``load``,
``step:N`` (across resumptions), ``validation``, ``checkpoint``, ``write`` and ``final``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from posgen import signals
from posgen.encodings import PERequest
from posgen.errors import (
    DataError,
    RunError,
    UsageError,
    human_bytes,
    out_of_memory,
    problem_lines,
    shown,
)
from posgen.scoring.folder import score_reference
from posgen.scoring.prediction_files import write_predictions
from posgen.scoring.reliance import score_probe
from posgen.spec import PROBE_SPLIT, read_bounded
from posgen.store.dataset import Dataset
from posgen.store.safety import (
    FILE_TMP_TAG,
    OutputExistsError,
    atomic_folder,
    durable_file,
    exclusive,
    hidden_stem,
    read_only_folder,
    write_atomically,
)
from posgen.train import METRICS, MODEL, PREDICTIONS, PROBE_PREDICTIONS, RESULTS, is_run
from posgen.train.config import TrainConfig
from posgen.train.run_record import DataRecord, ModelInfo, PositionEncodingRecord, RunRecord

if TYPE_CHECKING:  # torch is imported when a job runs: `posgen sweep --status` needs none
    import torch

    from posgen.encodings import ResolvedPE
    from posgen.train.trainer import RunData, Selection, Trained

CHECKPOINT = "checkpoint.pt"
TRAILER_TAG = b"\nposgen-checkpoint sha256 "
TRAILER_BYTES = len(TRAILER_TAG) + 64 + 1 + 16 + 1
"""A checkpoint ends with ``TRAILER_TAG``, the sha256 and the size of the bytes before it."""
PROGRESS = "progress.json"
RESUME_TAG = ".posgen-resume"
PER_ENCODING = ("val_id_accuracy", "far_reliance_id", "far_reliance_ood")
"""Epoch-log figures the training records per encoding (``name/label``)."""


def resume_folder(out: Path) -> Path:
    """Where ``posgen train --out OUT`` keeps its checkpoint until OUT is written.

    >>> resume_folder(Path("runs/rec-res")).as_posix()
    'runs/.rec-res.posgen-resume'
    """
    out = Path(out)
    return out.with_name(hidden_stem(out.name) + RESUME_TAG)


def read_progress(folder: Path) -> dict[str, Any] | None:
    """A work folder's ``progress.json`` (None when absent, unreadable or no file: a link is
    not followed, and a pipe is opened without waiting and never read); no torch needed."""
    try:
        value = json.loads(read_bounded(Path(folder) / PROGRESS, 4096, follow=False))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def check_work(work: Path, name: str, keeper: str = "the job") -> None:
    """:class:`UsageError` naming the work folder ``work`` unless the job may use it: missing,
    or this user's, writable and holding only the job's own files (its checkpoint, its progress
    and their files being written). The job removes it when done, so it is never a folder of
    other files (another run, the user's); its checkpoint is first written after an epoch, so a
    read-only one is refused before any work."""
    if not Path(work).is_dir() or Path(work).is_symlink():
        return
    why, fix = None, f"make it writable (chmod -R u+rwx {shlex.quote(str(work))}) or remove it"
    if os.stat(work).st_uid != os.geteuid():
        why, fix = "belongs to another user", "choose another --out"
    elif (stuck := read_only_folder(work, written=True)) is not None:
        readable = os.access(stuck, os.R_OK | os.X_OK)
        article, kind = ("a", "read-only") if readable else ("an", "unreadable")
        why = f"is {kind}" if stuck == work else f"holds {article} {kind} folder, {stuck}"
    if why:
        raise UsageError(f"{name}: {work}, where {keeper} keeps its checkpoint, {why}; {fix}")
    own = (CHECKPOINT, PROGRESS)
    temporary = tuple(hidden_stem(file) + FILE_TMP_TAG for file in own)
    try:
        names = os.listdir(work)
    except OSError:
        return
    if foreign := sorted(n for n in names if n not in own and not n.startswith(temporary)):
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UsageError(
            f"{name}: {work} holds {shown(foreign[0], 100)}{more}, not only a checkpoint: the "
            "job keeps its checkpoint there and removes the folder when done; move it away"
        )


class DamagedCheckpoint(DataError):
    """A checkpoint that cannot be read or checked: named, never resumed (exit 1)."""


class RefusedCheckpoint(UsageError):
    """A whole checkpoint not resumed, and kept: another run's, or one this user may not read
    (exit 2)."""


@dataclass(frozen=True)
class _Job:
    """What every run folder of one training shares."""

    data: Path
    run_data: RunData
    config: TrainConfig
    seed: int
    preset_name: str
    device: torch.device
    save: bool


def _record_of(pe: Any) -> PositionEncodingRecord:
    """The run record's section on ``pe``; a plugin whose fields do not fit it (a summary
    that is not text, ...) is one :class:`UsageError` naming it."""
    try:
        return PositionEncodingRecord(**pe.record())
    except ValidationError as error:
        raise UsageError(
            f"--pe {pe.request.name} ({pe.encoding.source}): a run folder cannot record it: "
            f"{problem_lines(error)[0]}"
        ) from None


def train_runs(
    data: Path | Dataset,
    config_name: str,
    pes: Sequence[str | PERequest | ResolvedPE],
    config: TrainConfig,
    seed: int,
    outs: Sequence[Path],
    preset_name: str,
    device: torch.device | None = None,
    progress: Callable[[int], Any] | None = None,
    run_data: RunData | None = None,
    save: bool = False,
    work: Path | None = None,
    key: str = "",
    name: str = "",
    estimate: int | None = None,
    restart_other: bool = False,
) -> list[dict[str, Any]]:
    """Train once for ``pes`` and write run folder ``outs[i]`` for ``pes[i]``; each written
    run's summary. With a ``work`` folder the job is resumable: it locks it, resumes from its
    checkpoint of training ``key``, writes only the missing runs and removes it when done
    (``name`` names the job in messages; ``estimate`` is quoted when memory runs out). A
    checkpoint lacking one of ``pes`` is refused, or with ``restart_other`` trained anew (a
    sweep whose grid grew). ``progress(total steps)`` makes a tqdm-like bar."""
    from posgen.train import trainer

    def run(pes: Sequence[Any], outs: Sequence[Path]) -> list[dict[str, Any]]:
        signals.point("load")
        folder = data.root if isinstance(data, Dataset) else Path(data)
        loaded = run_data or trainer.RunData.load(data, config_name)
        target = device or trainer.pick_device()
        job = _Job(folder, loaded, config, seed, preset_name, target, save)
        resolved = [trainer.resolve_pe(pe, config, loaded.train.spec) for pe in pes]
        for pe in resolved:  # what its run folder records, checked before any training
            _record_of(pe)
        code = _plugin_code(resolved)
        resume = None if work is None else _load_checkpoint(work, key, name, job.device)
        held = {} if resume is None else resume["selections"]  # the encodings it trains
        missing = [pe.label for pe in resolved if resume is not None and pe.label not in held]
        if missing:
            if not restart_other:
                raise RefusedCheckpoint(
                    f"{name}: its checkpoint {work} is of a run with other flags (it trains "
                    f"{', '.join(sorted(held))}, not {', '.join(missing)}); rerun with those, "
                    "or remove it to start over"
                )
            resume = None  # the same training for more encodings: from its first step
        if resume is not None:
            _check_plugin_code(resume, resolved, code, work, name)
        bar = None if progress is None else progress(trainer.total_steps(config, loaded))
        if bar is not None and resume is not None:
            bar.update(resume["position"]["step"])

        def events(moment: str, step: int) -> None:
            signals.point(moment, step if moment == "step" else None)
            if moment == "step" and bar is not None:
                bar.update(1)

        checkpoint = None if work is None else partial(_save_checkpoint, work, key, code)
        try:  # a plugin's code runs in training and in the writes: its failure is named
            try:
                trained = trainer.train(
                    loaded, resolved, config, seed, job.device, resume, checkpoint, events
                )
            except trainer.UnfitCheckpoint as error:
                raise _damaged(work, name, str(error)) from None
            finally:  # closed before any error line, so stderr ends with that line
                if bar is not None:
                    with signals.held():
                        bar.close()
            return [
                _write_run(job, trained, selection, Path(out))
                for selection, out in zip(trained.selections, outs, strict=True)
            ]
        except (Exception, SystemExit) as error:
            trainer.plugin_failed(error, resolved)
            raise

    if work is None:
        return run(pes, outs)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    with exclusive(work):
        if not work.exists():  # a worker of the same training finished while we waited
            return []
        check_work(work, name)  # the API's and a sweep's work folders too
        todo = [(pe, Path(out)) for pe, out in zip(pes, outs, strict=True) if not is_run(out)]
        keep = False
        try:
            summaries = run(*zip(*todo, strict=True)) if todo else []
        except (DamagedCheckpoint, RefusedCheckpoint):
            keep = True  # as it is, for the user to look at and remove (or rerun to resume)
            raise
        except signals.Interrupted as stop:
            if stop.completed:
                shutil.rmtree(work, ignore_errors=True)
            raise
        except (trainer.Diverged, trainer.PluginFailed):
            shutil.rmtree(work, ignore_errors=True)  # a resume would fail again
            raise
        except OutputExistsError:
            shutil.rmtree(work, ignore_errors=True)  # this run cannot be resumed into it
            raise RunError(
                f"{name} appeared while the run trained (made by something else); it was "
                "kept, and this run was not written"
            ) from None
        except (MemoryError, RuntimeError) as error:
            if not out_of_memory(error):
                raise
            smaller = "--batch-size, --eval-batch-size or the model size"
            advice = f"no partial run folder was left; lower {smaller}"
            if read_progress(work) is not None:
                advice = (
                    f"checkpoint kept in {work}: rerun the same command to resume, or remove it "
                    f"and lower {smaller}"
                )
            quoted = "" if estimate is None else f" with an estimate of {human_bytes(estimate)}"
            raise RunError(f"out of memory ({type(error).__name__}){quoted}; {advice}") from None
        finally:
            if read_progress(work) is None and not keep:  # nothing to resume: leave nothing
                shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return summaries


def _plugin_code(resolved: Sequence[ResolvedPE]) -> dict[str, dict[str, str]]:
    """Each plugin encoding's label -> the file of the module its ``--pe`` or entry point
    imports and the sha256 of its bytes now (a built-in's code is posgen's: none)."""
    code = {}
    for pe in resolved:
        module = sys.modules.get(pe.encoding.module) if pe.encoding.module else None
        file = getattr(module, "__file__", None)
        if file is None:  # a built-in, or a module without a file: nothing to fingerprint
            continue
        loader = getattr(module, "__loader__", None)  # its importer reads it (a zip archive's)
        read = loader.get_data if callable(getattr(loader, "get_data", None)) else None
        try:
            data = read(file) if read is not None else Path(file).read_bytes()
            digest = hashlib.sha256(data).hexdigest()
        except (OSError, ImportError) as error:  # removed or unreadable since it was imported
            digest = f"unreadable ({type(error).__name__})"
        code[pe.label] = {"file": str(file), "sha256": digest}
    return code


def _check_plugin_code(
    saved: dict[str, Any],
    resolved: Sequence[ResolvedPE],
    code: dict[str, dict[str, str]],
    work: Path,
    name: str,
) -> None:
    """:class:`RefusedCheckpoint` when a plugin's module file differs from the one the
    checkpoint was trained with (a checkpoint of an older posgen records none)."""
    recorded = saved.get("plugins")
    for pe in resolved:
        then = recorded.get(pe.label) if isinstance(recorded, dict) else None
        now = code.get(pe.label)
        if not isinstance(then, dict) or now is None or then.get("sha256") == now["sha256"]:
            continue
        was = "" if then.get("file") == now["file"] else f" (it was {then.get('file')})"
        raise RefusedCheckpoint(
            f"{name}: its checkpoint {work} was trained with other code of the plugin "
            f"{pe.label} ({pe.encoding.source}): {now['file']}{was} changed since; it was not "
            f"resumed and is kept. Restore that file to resume, or start over: rm -r "
            f"{shlex.quote(str(work))}, then rerun the same command"
        )


def _save_checkpoint(
    work: Path, key: str, code: dict[str, dict[str, str]], state: dict[str, Any]
) -> None:
    """Replace the checkpoint whole (a kill leaves the old one or the new one), then
    ``progress.json``; ``code``: the plugins' module files it is trained with."""
    import torch

    with durable_file(work / CHECKPOINT, follow=False) as sink:
        torch.save({"key": key, "plugins": code, **state}, sink)
        sink.handle.write(TRAILER_TAG + f"{sink.digest.hexdigest()} {sink.size:016d}\n".encode())
        signals.point("checkpoint")
    at = state["position"]
    summary = {"epoch": at["epoch"], "step": at["step"], "done": at["done"]}
    write_atomically(work / PROGRESS, (json.dumps(summary) + "\n").encode(), follow=False)


def _damaged(work: Path, name: str, why: str) -> DamagedCheckpoint:
    """The one line on the checkpoint of ``work`` that is not resumed, and how to start over."""
    return DamagedCheckpoint(
        f"{name}: its checkpoint {work / CHECKPOINT} {shown(why, 200)}; it was not resumed. To "
        f"start over: rm -r {shlex.quote(str(work))}, then rerun the same command"
    )


def _load_checkpoint(
    work: Path, key: str, name: str, device: torch.device
) -> dict[str, Any] | None:
    """The checkpoint of ``work`` (None when there is none), checked against its checksum."""
    import torch

    path = work / CHECKPOINT
    if not os.path.lexists(path):
        return None
    try:
        if not stat.S_ISREG(path.lstat().st_mode):  # never followed, never a pipe's wait
            raise ValueError("is not a file (a folder, a link or a pipe)")
        raw = read_bounded(path, sys.maxsize, follow=False)  # as large as it is
        if not raw:
            raise ValueError("is empty")
        payload, trailer = raw[:-TRAILER_BYTES], raw[-TRAILER_BYTES:]
        fields = trailer.removeprefix(TRAILER_TAG).split()
        if len(raw) < TRAILER_BYTES or not trailer.startswith(TRAILER_TAG) or len(fields) != 2:
            raise ValueError("carries no checksum (truncated, or not written by posgen)")
        if fields[1] != f"{len(payload):016d}".encode():
            said = fields[1].decode(errors="replace").lstrip("0") or 0
            raise ValueError(
                f"is not whole ({len(payload):,} bytes, its checksum line says {said})"
            )
        if hashlib.sha256(payload).hexdigest().encode() != fields[0]:
            raise ValueError("does not match the sha256 it carries (altered or damaged)")
        saved = torch.load(io.BytesIO(payload), map_location=device, weights_only=True)
        if not isinstance(saved, dict):
            raise ValueError(f"holds a {type(saved).__name__}, not a checkpoint")
        parts = ("position", "selections", "model", "optimizer", "schedule", "rng")
        if lacking := [part for part in parts if not isinstance(saved.get(part), dict)]:
            raise ValueError(f"does not fit this run ({', '.join(lacking)}: missing or no dict)")
        if type(saved["position"].get("step")) is not int:
            raise ValueError("does not fit this run (its step: missing or no whole number)")
    except PermissionError:  # the user's to fix, not damage: never 'rm -r' it
        raise RefusedCheckpoint(
            f"{name}: its checkpoint {path} cannot be read (permission denied); it was not "
            f"resumed and is kept: make it readable (chmod u+r), then rerun the same command"
        ) from None
    except Exception as error:
        why = str(error) if isinstance(error, ValueError) else f"cannot be read ({error})"
        raise _damaged(work, name, why) from None
    if saved.get("key") != key:
        raise RefusedCheckpoint(
            f"{name}: its checkpoint {work} is of another run (the data folder's name, config, "
            "preset, settings, seed or encoding differ); rerun with those, or remove it to "
            "start over"
        )
    return saved


def _write_run(job: _Job, trained: Trained, selection: Selection, out: Path) -> dict[str, Any]:
    """Predict test and probe with the selected weights and write the run folder atomically."""
    import torch

    from posgen.encodings.model import save_model
    from posgen.train.attention import NotMeasurable, attention_diagnostics
    from posgen.train.trainer import evaluation_positions, predict_split, versions

    pe, run_data, config, model = selection.pe, job.run_data, job.config, trained.model
    test, probe, spec = run_data.test, run_data.probe, run_data.test.spec
    model.load_state_dict(selection.state)
    predictions = predict_split(model, test, pe, config, job.device, job.seed)
    with atomic_folder(out) as build:
        own = {f"{name}/{pe.label}": name for name in PER_ENCODING}
        lines = []
        for record in trained.log:  # its own figures (``name/label``), no other encoding's
            line = {own.get(k, k): v for k, v in record.items() if "/" not in k or k in own}
            lines.append(json.dumps(line, sort_keys=True, allow_nan=False) + "\n")
        (build / METRICS).write_text("".join(lines))
        made_for = (spec.spec_id, test.split)
        write_predictions(build / PREDICTIONS, test.ids, predictions, spec.modulus, made_for)
        signals.point("write")
        signals.point("final")
        # scored on the test rows this run read (pinned), not on --data read again
        report = score_reference(test, build / PREDICTIONS)
        predictions = predict_split(model, probe, pe, config, job.device, job.seed)
        made_for = (spec.spec_id, PROBE_SPLIT)  # the probe split is of the test split's spec
        write_predictions(build / PROBE_PREDICTIONS, probe.ids, predictions, spec.modulus, made_for)
        probe_report = score_probe(probe, predictions)
        positions = evaluation_positions(pe, job.seed, "test")
        try:  # on the first test rows; an attention that cannot be probed: kept unmeasured
            attention = attention_diagnostics(
                model, test, job.device, positions, config.question_ids
            )
        except (NotMeasurable, RuntimeError) as error:
            if out_of_memory(error):
                raise
            attention = None
        if job.save:
            save_model(model, pe, build / MODEL)
        # `--data .` or `..` names no folder: the record keeps it absolute, so the run's
        # results cell has the dataset's name (and an export's path no `..`)
        folder = job.data if job.data.name not in ("", "..") else job.data.resolve()
        record = RunRecord(
            schema_version=1,
            # its bytes as text: under an ASCII locale a non-ASCII name is surrogate-escaped
            data=DataRecord(
                folder=os.fsencode(folder).decode("utf-8", "replace"),
                config=test.config,
                files=run_data.files,
            ),
            spec=spec,
            position_encoding=_record_of(pe),
            preset=job.preset_name,
            train=config,
            seed=job.seed,
            model=ModelInfo(class_name=type(model).__name__, parameters=model.num_parameters()),
            best_epoch=selection.epoch,
            best_val_id_accuracy=selection.accuracy,
            wall_seconds=time.perf_counter() - trained.started,
            train_seconds=trained.log[-1]["train_seconds"],
            device=job.device.type,
            torch_threads=torch.get_num_threads(),
            versions=versions(),
            scores=report.model_dump(),
            probe_scores=probe_report.model_dump(),
            attention=attention,
        )
        (build / RESULTS).write_text(record.to_json())
    summary = {"pe": pe.label, "out": str(out), "best_epoch": selection.epoch}
    return {**summary, **report.summary(), **probe_report.summary()}
