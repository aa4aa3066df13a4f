"""``results.json``: the record every ``posgen train`` run writes (no torch needed).

One file holds what it takes to compare a run with any other: the posgen version, the
dataset (folder name, config, spec id, and the sha256 of every file the run read, each
checked against the manifest as it was read), the position encoding with *every* parameter
(defaults included) and its rope parameters in training and evaluation, the preset and its
fields, the seed, ID and OOD accuracy, accuracy at every position, the full ``posgen score``
report, and the wall time. ``posgen results`` reads these
(:func:`posgen.train.run_record.read_run`, bounded and checked with the run's other files),
and for run folders written before this file existed builds the same record from
``config.json`` and ``scores.json`` (``legacy`` true, no checksums).

The JSON Schema is exported to ``posgen/train/run_record.schema.json``
(``python -m posgen.train.run_record`` rewrites it; a test checks it for drift).

>>> RunRecord.model_json_schema()["properties"]["schema_version"]["const"]
1
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import sys
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import from_json

from posgen import __version__
from posgen.errors import DataError, problem_lines, shown
from posgen.scoring.metrics import ScoreReport
from posgen.scoring.reliance import RelianceReport
from posgen.spec import MAX_LENGTH, MAX_ROWS, ConfigName, TaskSpec
from posgen.train.config import PRESETS, TrainConfig

RESULTS = "results.json"
"""The run record's file name in a run folder."""
SCHEMA_FILE = Path(__file__).with_name("run_record.schema.json")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataRecord(_Record):
    """The data a run trained and was tested on."""

    folder: str = Field(description="Dataset folder as given to posgen train.")
    name: str = Field(description="The folder's name (how results group runs).")
    config: str = Field(description="Config (task) trained on.")
    spec_id: str = Field(description="Spec id of the config.")
    train_length: int = Field(ge=1, description="L.")
    test_length: int = Field(ge=1, description="L'.")
    files: dict[str, str] = Field(
        description="sha256 of every file the run read (path -> hex digest), each checked "
        "against the manifest as read."
    )


class PositionEncodingRecord(_Record):
    """The position encoding, with every parameter."""

    name: str = Field(description="Registered name (built in or plugin).")
    label: str = Field(description="Name, parameters set on the command line, +randomized.")
    source: str = Field(description="built-in, an entry point, or a module reference.")
    summary: str
    when: Literal["train-time", "evaluation-time"]
    parameters: dict[str, Any] = Field(description="Every parameter, defaults included.")
    rope_parameters: dict[str, dict[str, Any]] = Field(
        description="Llama rope_parameters in training ('train') and in evaluation."
    )
    attention: str | None = Field(description="Registered attention function (None: sdpa).")
    input_positions: str | None = Field(description="Module factory added to the inputs.")
    randomized_positions: int | None = Field(description="Range R of randomized positions.")
    confound: str | None = Field(None, description="How the model differs from the Llama block.")


class PerPosition(_Record):
    """Test accuracy at every scored position (w .. L'-1)."""

    position: list[int]
    accuracy: list[float | None]


class RunRecord(_Record):
    """One run's ``results.json``."""

    schema_version: Literal[1] = 1
    posgen_version: str
    legacy: bool = Field(False, description="Built from an older run folder's files.")
    data: DataRecord
    position_encoding: PositionEncodingRecord
    preset: str
    train: dict[str, Any] = Field(description="The preset's fields with overrides.")
    seed: int
    best_epoch: int = Field(ge=0)
    best_val_id_accuracy: float
    id_accuracy: float | None = Field(description="Test accuracy at positions [w, L).")
    ood_accuracy: float | None = Field(description="Test accuracy at positions [L, L').")
    per_position: PerPosition
    wall_seconds: float | None = Field(
        ge=0,
        description="From the start of training to the written run (shared trainings "
        "count their training once per run).",
    )
    train_seconds: float | None = Field(ge=0, description="Seconds in training steps.")
    device: str
    torch_threads: int | None
    versions: dict[str, str]
    scores: ScoreReport = Field(description="The posgen score report of the test predictions.")

    def to_json(self) -> str:
        """Stable JSON: sorted keys, two-space indent, trailing newline."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    def config_view(self) -> dict[str, Any]:
        """The fields ``posgen results`` reads from a run's ``config.json``."""
        return {
            "pe": self.position_encoding.label,
            "position_encoding": self.position_encoding.model_dump(mode="json"),
            "data": self.data.folder,
            "config": self.data.config,
            "spec_id": self.data.spec_id,
            "seed": self.seed,
            "best_epoch": self.best_epoch,
            "preset": self.preset,
            "train": self.train,
            "device": self.device,
            "torch_threads": self.torch_threads,
            "versions": self.versions,
        }


def data_files(data: Path, config: str) -> dict[str, str]:
    """``path -> sha256`` of every file of ``config`` in the folder's manifest."""
    from posgen.store.manifest import read_manifest

    manifest = read_manifest(Path(data))
    return {entry.path: entry.sha256 for _, _, entry in manifest.files([config])}


def _per_position(report: ScoreReport) -> PerPosition:
    return PerPosition(position=report.curve.position, accuracy=report.curve.accuracy)


def _legacy_encoding(config: dict[str, Any]) -> PositionEncodingRecord:
    rope = config.get("rope_parameters", {})
    when = "train-time" if rope.get("train") == rope.get("evaluation") else "evaluation-time"
    return PositionEncodingRecord(
        name=config["pe"],
        label=config["pe"],
        source="built-in",
        summary="",
        when=when,
        parameters={},
        rope_parameters=rope,
        attention=None,
        input_positions=None,
        randomized_positions=None,
    )


def build_record(
    config: dict[str, Any],
    report: ScoreReport,
    data: Path,
    train_seconds: float | None,
    wall_seconds: float | None,
    legacy: bool = False,
    files: dict[str, str] | None = None,
) -> RunRecord:
    """The record of a run from its resolved ``config.json`` and its test report.

    ``files`` (path -> sha256) are the data files the run read; without them, those of the
    config in ``data``'s manifest now.
    """
    encoding = config.get("position_encoding")
    return RunRecord(
        posgen_version=config.get("versions", {}).get("posgen", __version__),
        legacy=legacy,
        data=DataRecord(
            folder=str(config["data"]),
            name=Path(config["data"]).name,
            config=config["config"],
            spec_id=config["spec_id"],
            train_length=report.ood_boundary,
            test_length=report.length,
            files={} if legacy else files or data_files(data, config["config"]),
        ),
        position_encoding=(
            PositionEncodingRecord(**encoding) if encoding else _legacy_encoding(config)
        ),
        preset=config["preset"],
        train=config["train"],
        seed=config["seed"],
        best_epoch=config["best_epoch"],
        best_val_id_accuracy=config["best_val_id_accuracy"],
        id_accuracy=report.id.accuracy,
        ood_accuracy=report.ood.accuracy,
        per_position=_per_position(report),
        wall_seconds=wall_seconds,
        train_seconds=train_seconds,
        device=config["device"],
        torch_threads=config.get("torch_threads"),
        versions=config["versions"],
        scores=report,
    )


def schema_text() -> str:
    """The exported JSON Schema of :class:`RunRecord`."""
    return json.dumps(RunRecord.model_json_schema(), indent=2, sort_keys=True) + "\n"


CONFIG = "config.json"
METRICS = "metrics.jsonl"
PREDICTIONS = "predictions.parquet"
SCORES = "scores.json"
PROBE_PREDICTIONS = "probe_predictions.parquet"
PROBE_SCORES = "probe_scores.json"
"""The far-reliance report on the probe split (absent in runs older than probe splits)."""
FILES = (CONFIG, METRICS, PREDICTIONS, SCORES, PROBE_PREDICTIONS, PROBE_SCORES, RESULTS)
"""What a finished run folder holds (folders written before ``results.json`` or the probe
split lack those)."""
MAX_CONFIG_BYTES = 1 << 20
"""A run's ``config.json`` is about 3 KB; larger ones are refused unread."""
MAX_SCORES_BYTES = 128 << 20
"""``scores.json`` grows with the row length (about 60 bytes a position): 1 M positions fit."""
MAX_METRICS_LINE = 1 << 16
"""Longest ``metrics.jsonl`` line read (one epoch's record is about 200 bytes)."""
MAX_COUNT = 2**53
"""Largest count a report may hold (exact as a float): more than any split has tokens."""
MAX_THREADS = 1024
"""Most torch threads a run may name (``--threads`` is bounded lower)."""


class DamagedRun(DataError, ValueError):
    """A run folder's file that cannot be read or does not fit its model (exit 1)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelInfo(_Model):
    """The model a run trained."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_name: str = Field(alias="class", max_length=200)
    parameters: int = Field(ge=1, le=10**13)


class RopeParameters(_Model):
    """The rope parameters a run trained and evaluated with (``transformers``' dicts)."""

    train: dict[str, Any]
    evaluation: dict[str, Any]


class RunConfig(_Model):
    """``config.json``: what a run was, resolved (preset fields, data, versions, outcome)."""

    pe: str = Field(min_length=1, max_length=500, description="The position encoding's label.")
    position_encoding: PositionEncodingRecord | None = Field(
        None, description="The encoding with every parameter (absent in older run folders)."
    )
    preset: str
    seed: int = Field(ge=0, lt=2**63)
    train: TrainConfig
    data: str = Field(max_length=4096, description="The --data folder as given.")
    config: ConfigName
    spec_id: str = Field(pattern=r"^[0-9a-f]{8,64}$")
    spec: TaskSpec
    rope_parameters: RopeParameters
    model: ModelInfo
    best_epoch: int = Field(ge=1, le=10_000)
    best_val_id_accuracy: float = Field(ge=0.0, le=1.0)
    device: Literal["cpu", "cuda"]
    torch_threads: int = Field(ge=1, le=MAX_THREADS)
    versions: dict[str, str] = Field(max_length=64)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset; known: {', '.join(PRESETS)}")
        return value

    @property
    def key(self) -> tuple[str, str, str]:
        """``(data folder name, task, pe)``: the results cell the run belongs to."""
        return (Path(self.data).name, self.config, self.pe)


class EpochRecord(_Model):
    """One line of ``metrics.jsonl``."""

    epoch: int = Field(ge=1, le=10_000)
    step: int = Field(ge=0)
    train_loss: float | None = Field(ge=0.0)
    lr: float = Field(ge=0.0)
    val_id_accuracy: float | None = Field(None, ge=0.0, le=1.0)
    seconds: float = Field(ge=0.0)
    train_seconds: float = Field(ge=0.0)


def _ratio_problems(name: str, correct: int, tokens: int, accuracy: float | None) -> list[str]:
    if not 0 <= correct <= tokens <= MAX_COUNT:
        given = f"{shown(correct, 30)} of {shown(tokens, 30)}"
        return [f"{name}: counts must satisfy 0 <= correct <= tokens <= 2^53 (given {given})"]
    expected = correct / tokens if tokens else None
    if (expected is None) != (accuracy is None) or (
        expected is not None and accuracy is not None and not math.isclose(expected, accuracy)
    ):
        return [f"{name}.accuracy: {accuracy} is not correct / tokens ({correct} / {tokens})"]
    return []


class RunScores(ScoreReport):
    """``scores.json``: a :class:`ScoreReport` whose counts add up.

    Every position ``w .. L'-1`` is in the curve once, with one prediction per row; ID,
    OOD and overall are the curve's sums; each accuracy is its ratio.
    """

    def problems(self) -> list[str]:
        """What does not add up (empty when everything does)."""
        lines: list[str] = []
        curve = self.curve
        expected = list(range(self.seed_window, self.length))
        if len(expected) > MAX_LENGTH or self.rows > MAX_ROWS:
            return [f"rows/length: larger than any split ({self.rows} x {self.length})"]
        if curve.position != expected:
            return [f"curve.position: must be {self.seed_window} .. {self.length - 1}"]
        sizes = {len(curve.correct), len(curve.tokens), len(curve.accuracy)}
        if sizes != {len(expected)}:
            return ["curve: correct, tokens and accuracy must each have one value per position"]
        if any(t != self.rows for t in curve.tokens):
            return [f"curve.tokens: every position has {self.rows} predictions (one per row)"]
        for i, (c, t, a) in enumerate(
            zip(curve.correct, curve.tokens, curve.accuracy, strict=True)
        ):
            lines += _ratio_problems(f"curve[{expected[i]}]", c, t, a)
            if lines:
                return lines
        boundary = min(self.ood_boundary, self.length) - self.seed_window
        sums = {
            "id": (sum(curve.correct[:boundary]), sum(curve.tokens[:boundary])),
            "ood": (sum(curve.correct[boundary:]), sum(curve.tokens[boundary:])),
            "overall": (sum(curve.correct), sum(curve.tokens)),
        }
        for name, (correct, tokens) in sums.items():
            part = getattr(self, name)
            if (part.correct, part.tokens) != (correct, tokens):
                lines.append(f"{name}: {part.correct} of {part.tokens} does not match the curve "
                             f"({correct} of {tokens})")  # fmt: skip
            lines += _ratio_problems(name, part.correct, part.tokens, part.accuracy)
        for name in ("ood_exact_match", "exact_match"):
            part = getattr(self, name)
            lines += _ratio_problems(name, part.correct, part.tokens, part.accuracy)
        return lines


def _damaged(path: Path, lines: list[str]) -> DamagedRun:
    more = f" (and {len(lines) - 1} more problems)" if len(lines) > 1 else ""
    return DamagedRun(f"{shown(path)}: {lines[0]}{more}")


def _read_json(path: Path, limit: int) -> Any:
    """The JSON value of ``path``: bounded read, UTF-8, no NaN or Infinity, bounded nesting."""
    try:
        raw = _read_limited(path, limit)
    except FileNotFoundError:
        raise DamagedRun(f"{shown(path)}: missing (not a finished run folder)") from None
    except IsADirectoryError:
        raise DamagedRun(f"{shown(path)}: is a folder, not a file") from None
    except OSError as error:
        raise DamagedRun(f"{shown(path)}: unreadable ({error.strerror or error})") from None
    try:
        value = from_json(raw, allow_inf_nan=False)
    except ValueError as error:
        raise DamagedRun(f"{shown(path)}: not valid JSON ({shown(error, 120)})") from None
    where = _non_finite(value)
    if where is not None:
        raise DamagedRun(f"{shown(path)}: {where or 'value'}: not a finite number")
    return value


def _open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file (links followed). A FIFO or a
    device is refused without blocking on it or reading it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise DamagedRun(f"{shown(path)}: not a regular file (a pipe or a device); not read")
    return open(fd, "rb")


def _read_limited(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, refused unread when its size is over ``limit``."""
    with _open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise DamagedRun(f"{shown(path)}: larger than {limit:,} bytes; not read")
        raw = handle.read(size + 1)
        if len(raw) > size:  # the file grows while it is read: read on, up to the limit
            raw += handle.read(limit + 1 - len(raw))
    if len(raw) > limit:
        raise DamagedRun(f"{shown(path)}: larger than {limit:,} bytes; not read")
    return raw


def _non_finite(value: Any, where: str = "") -> str | None:
    """Where a float that is not finite sits in ``value`` (None when there is none)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    items: Any = ()
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def _validated(model: type[BaseModel], path: Path, value: Any) -> Any:
    if not isinstance(value, dict):
        raise DamagedRun(f"{shown(path)}: must be a JSON object, not {type(value).__name__}")
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise _damaged(path, problem_lines(error)) from None


def read_config(folder: Path) -> RunConfig:
    """The run's ``config.json``, checked (:class:`DamagedRun` naming the field if not)."""
    path = Path(folder) / CONFIG
    config = _validated(RunConfig, path, _read_json(path, MAX_CONFIG_BYTES))
    encoding = config.position_encoding
    if encoding is not None and encoding.label != config.pe:
        raise DamagedRun(f"{shown(path)}: pe: {shown(config.pe, 60)} is not the label of its "
                         f"position_encoding ({shown(encoding.label, 60)})")  # fmt: skip
    if config.spec.spec_id != config.spec_id:
        raise DamagedRun(f"{shown(path)}: spec_id: {config.spec_id} is not the id of its spec "
                         f"({config.spec.spec_id})")  # fmt: skip
    return config


def read_scores(folder: Path, config: RunConfig) -> RunScores:
    """The run's ``scores.json``, checked whole and against the run's ``config``."""
    path = Path(folder) / SCORES
    scores = _validated(RunScores, path, _read_json(path, MAX_SCORES_BYTES))
    check_scores(path, scores, config.spec_id, config.config, config.spec)
    return scores


def check_scores(
    path: Path, scores: RunScores, spec_id: str, config: str, spec: TaskSpec | None
) -> None:
    """Refuse scores of other data than the run names, or whose counts do not add up."""
    facts: dict[str, tuple[Any, Any]] = {
        "spec_id": (scores.spec_id, spec_id),
        "config": (scores.config, config),
        "split": (scores.split, "test"),
    }
    if spec is not None:
        facts |= {
            "modulus": (scores.modulus, spec.modulus),
            "seed_window": (scores.seed_window, spec.window),
            "ood_boundary": (scores.ood_boundary, spec.train_length),
            "length": (scores.length, spec.test_lengths[0]),
            "rows": (scores.rows, spec.test_size),
        }
    for name, (found, wanted) in facts.items():
        if found != wanted:
            raise DamagedRun(
                f"{shown(path)}: {name}: {shown(found, 60)}, but the run names "
                f"{shown(wanted, 60)} (scores of other data)"
            )
    problems = scores.problems()
    if problems:
        raise _damaged(path, problems)


def last_epoch(folder: Path) -> EpochRecord | None:
    """The last line of ``metrics.jsonl`` (read from the end, at most
    :data:`MAX_METRICS_LINE` bytes), or None when the file is empty."""
    path = Path(folder) / METRICS
    try:
        with _open_regular(path) as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - MAX_METRICS_LINE - 1))
            tail = handle.read(MAX_METRICS_LINE + 1)
    except FileNotFoundError:
        raise DamagedRun(f"{shown(path)}: missing (not a finished run folder)") from None
    except OSError as error:
        raise DamagedRun(f"{shown(path)}: unreadable ({error.strerror or error})") from None
    lines = tail.rstrip(b"\n").split(b"\n")
    if not lines[-1]:
        return None
    if len(lines) == 1 and size > len(tail):
        raise DamagedRun(f"{shown(path)}: last line longer than {MAX_METRICS_LINE:,} bytes")
    try:
        value = from_json(lines[-1], allow_inf_nan=False)
    except ValueError as error:
        raise DamagedRun(f"{shown(path)}: last line is not JSON ({shown(error, 120)})") from None
    return _validated(EpochRecord, path, value)


def read_record(folder: Path) -> RunRecord:
    """The run's ``results.json`` (:class:`RunRecord`), read as bounded and checked as
    ``config.json`` and ``scores.json`` are: its scores add up and are of its data, and its
    headline figures are those of its scores."""
    path = Path(folder) / RESULTS
    value = _read_json(path, MAX_SCORES_BYTES)
    record = _validated(RunRecord, path, value)
    scores = _validated(RunScores, path, value["scores"])
    check_scores(path, scores, record.data.spec_id, record.data.config, None)
    figures = {
        "id_accuracy": (record.id_accuracy, scores.id.accuracy),
        "ood_accuracy": (record.ood_accuracy, scores.ood.accuracy),
        "data.train_length": (record.data.train_length, scores.ood_boundary),
        "data.test_length": (record.data.test_length, scores.length),
        "per_position.position": (record.per_position.position, scores.curve.position),
        "per_position.accuracy": (record.per_position.accuracy, scores.curve.accuracy),
    }
    for name, (found, wanted) in figures.items():
        if found != wanted:
            raise DamagedRun(f"{shown(path)}: {name}: not the figure of its scores")
    return record.model_copy(update={"scores": scores})


def read_run(folder: Path) -> RunRecord:
    """A finished run's record, every file of it read (bounded) and checked.

    ``config.json``, ``scores.json`` and the last line of ``metrics.jsonl`` are read and
    checked whatever else the folder holds; ``results.json``, when present, must agree with
    them (same scores, seed, data and encoding). Run folders written before it existed get a
    record built from the other files (``legacy``).
    """
    folder = Path(folder)
    config = read_config(folder)
    scores = read_scores(folder, config)
    epoch = last_epoch(folder) if os.path.lexists(folder / METRICS) else None
    if not os.path.lexists(folder / RESULTS):
        seconds = epoch.seconds if epoch is not None else None
        body = config.model_dump(mode="json", by_alias=True)
        return build_record(body, scores, Path(config.data), seconds, seconds, legacy=True)
    record = read_record(folder)
    agree = {
        "scores": record.scores == scores,
        "seed": record.seed == config.seed,
        "data.spec_id": record.data.spec_id == config.spec_id,
        "data.config": record.data.config == config.config,
        "position_encoding.label": record.position_encoding.label == config.pe,
        "preset": record.preset == config.preset,
    }
    for name, same in agree.items():
        if not same:
            raise DamagedRun(
                f"{shown(folder / RESULTS)}: {name}: differs from the run's {CONFIG} and "
                f"{SCORES} (files of different runs)"
            )
    return record


def read_probe(folder: Path) -> RelianceReport | None:
    """The run's ``probe_scores.json`` (bounded, typed), or None when the run has none."""
    path = Path(folder) / PROBE_SCORES
    if not os.path.lexists(path):
        return None
    return _validated(RelianceReport, path, _read_json(path, MAX_SCORES_BYTES))


if __name__ == "__main__":  # python -m posgen.train.run_record: rewrite the exported schema
    SCHEMA_FILE.write_text(schema_text())
    sys.stdout.write(f"{SCHEMA_FILE}\n")
