"""The run record: one typed file, ``results.json``, per run folder (no torch needed).

:class:`RunRecord` states once what the run was (data, spec, file checksums, position
encoding, preset, seed, model, versions, device) and what it found (best epoch, test scores,
probe scores, wall time). :func:`read_run` is the one reader: bounded, no NaN or Infinity,
checked whole (the scores are of the record's own spec and add up); a problem is one
:class:`DamagedRun` line naming the file and the field (exit 1). ``python -m
posgen.train.run_record`` rewrites ``run_record.schema.json``.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "results.json").write_text('{"seed": -1}')
>>> try:
...     read_run(folder)
... except DamagedRun as error:
...     print(error.lines[0].split(": ", 1)[1])
data: Field required (and 14 more problems)
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import from_json

from posgen.errors import DataError, problem_lines, shown
from posgen.scoring.metrics import ScoreReport
from posgen.scoring.reliance import RelianceReport
from posgen.spec import MAX_LENGTH, MAX_ROWS, ConfigName, TaskSpec
from posgen.train.config import PRESETS, TrainConfig

RESULTS = "results.json"
METRICS = "metrics.jsonl"
PREDICTIONS = "predictions.parquet"
PROBE_PREDICTIONS = "probe_predictions.parquet"
FILES = (RESULTS, METRICS, PREDICTIONS, PROBE_PREDICTIONS)
"""What a finished run folder holds (and ``model/`` with ``--save-model``)."""
MAX_RECORD_BYTES = 128 << 20
"""The scores grow with the row length (about 60 bytes a position): 1 M positions fit."""
MAX_COUNT = 2**53
"""Largest count a report may hold (exact as a float): more than any split has tokens."""
MAX_THREADS = 1024
"""Most torch threads a run may name (``--threads`` is bounded lower)."""
SCHEMA_FILE = Path(__file__).with_name("run_record.schema.json")


class DamagedRun(DataError, ValueError):
    """A run folder's record that cannot be read or does not fit its model (exit 1)."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataRecord(_Record):
    """The data a run trained and was tested on."""

    folder: str = Field(max_length=4096, description="Dataset folder as given to posgen train.")
    config: ConfigName = Field(description="Config (task) trained on.")
    files: dict[str, str] = Field(
        description="sha256 of every file the run read (path -> hex digest), each checked "
        "against the manifest as read."
    )


class ModelInfo(_Record):
    """The model a run trained."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_name: str = Field(alias="class", max_length=200)
    parameters: int = Field(ge=1, le=10**13)


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


MAX_LAYERS = 64
"""Most decoder layers a run may have (:class:`~posgen.train.config.TrainConfig`'s bound)."""


class AttentionRegion(_Record):
    """One layer's attention over the targets of one region (ID or OOD), averaged over heads,
    rows and targets."""

    entropy: float = Field(
        ge=0,
        le=64,
        description="Mean attention entropy in nats (uniform over t + 1 inputs: log(t + 1)).",
    )
    normalized_entropy: float = Field(
        ge=0, le=1, description="Entropy / log(t + 1), averaged (1: flat, 0: on one input)."
    )
    far_share: float | None = Field(
        ge=0,
        le=1,
        description="Attention mass on the inputs holding the target's far "
        "operands (None: the task has none).",
    )
    targets: int = Field(ge=1, le=MAX_COUNT, description="Targets averaged (rows x positions).")


class AttentionLayer(_Record):
    """One decoder layer's attention figures, ID against OOD."""

    layer: int = Field(ge=0, lt=MAX_LAYERS)
    id: AttentionRegion | None
    ood: AttentionRegion | None


class AttentionDiagnostics(_Record):
    """Attention entropy and far-operand share per layer, from one extra forward pass of the
    selected weights over the first ``rows`` test rows (:mod:`posgen.train.attention`)."""

    rows: int = Field(ge=1, le=MAX_ROWS)
    layers: list[AttentionLayer] = Field(min_length=1, max_length=MAX_LAYERS)


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
                given = f"{shown(part.correct, 30)} of {shown(part.tokens, 30)}"
                lines.append(f"{name}: {given} does not match the curve "
                             f"({correct} of {tokens})")  # fmt: skip
            lines += _ratio_problems(name, part.correct, part.tokens, part.accuracy)
        for name in ("ood_exact_match", "exact_match"):
            part = getattr(self, name)
            lines += _ratio_problems(name, part.correct, part.tokens, part.accuracy)
        return lines


class RunRecord(_Record):
    """One run's ``results.json``."""

    schema_version: Literal[1] = 1
    data: DataRecord
    spec: TaskSpec
    position_encoding: PositionEncodingRecord
    preset: str
    train: TrainConfig = Field(description="The preset's fields with overrides.")
    seed: int = Field(ge=0, lt=2**63)
    model: ModelInfo
    best_epoch: int = Field(ge=1, le=10_000)
    best_val_id_accuracy: float = Field(ge=0.0, le=1.0)
    wall_seconds: float | None = Field(
        ge=0,
        description="From the start of training to the written run (shared trainings "
        "count their training once per run).",
    )
    train_seconds: float | None = Field(ge=0, description="Seconds in training steps.")
    device: Literal["cpu", "cuda"]
    torch_threads: int = Field(ge=1, le=MAX_THREADS)
    versions: dict[str, str] = Field(max_length=64)
    scores: RunScores = Field(description="The posgen score report of the test predictions.")
    probe_scores: RelianceReport | None = Field(
        None, description="The far-reliance report of the probe predictions (None: no probe)."
    )
    attention: AttentionDiagnostics | None = Field(
        None,
        description="Attention entropy and far-operand share per layer, ID and OOD "
        "(None: a run from before they were measured).",
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset; known: {', '.join(PRESETS)}")
        return value

    @property
    def key(self) -> tuple[str, str, str]:
        """``(data folder name, task, pe)``: the results cell the run belongs to."""
        return (Path(self.data.folder).name, self.data.config, self.position_encoding.label)

    def to_json(self) -> str:
        """Stable JSON: sorted keys, two-space indent, trailing newline."""
        return (
            json.dumps(
                self.model_dump(mode="json", by_alias=True),
                indent=2,
                sort_keys=True,
                allow_nan=False,
            )
            + "\n"
        )

    def problems(self) -> list[str]:
        """Scores of other data than the record names, or whose counts do not add up."""
        scores, spec = self.scores, self.spec
        facts: dict[str, tuple[Any, Any]] = {
            "spec_id": (scores.spec_id, spec.spec_id),
            "config": (scores.config, self.data.config),
            "split": (scores.split, "test"),
            "modulus": (scores.modulus, spec.modulus),
            "seed_window": (scores.seed_window, spec.window),
            "ood_boundary": (scores.ood_boundary, spec.train_length),
            "length": (scores.length, spec.test_lengths[0]),
            "rows": (scores.rows, spec.test_size),
        }
        for name, (found, wanted) in facts.items():
            if found != wanted:
                return [f"scores.{name}: {shown(found, 60)}, but the run names "
                        f"{shown(wanted, 60)} (scores of other data)"]  # fmt: skip
        return [f"scores.{line}" for line in scores.problems()]


def _damaged(path: Path, lines: list[str]) -> DamagedRun:
    more = f" (and {len(lines) - 1} more problems)" if len(lines) > 1 else ""
    return DamagedRun(f"{shown(path)}: {lines[0]}{more}")


def _read_json(path: Path, limit: int) -> Any:
    """The JSON value of ``path``: a regular file (a folder, FIFO or device is refused
    unread), at most ``limit`` bytes, UTF-8, no NaN or Infinity."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        info = os.fstat(fd)
        mode, size = info.st_mode, info.st_size
        if not stat.S_ISREG(mode):
            os.close(fd)
            kind = "a folder" if stat.S_ISDIR(mode) else "a pipe or a device"
            raise DamagedRun(f"{shown(path)}: not a regular file ({kind}); not read")
        if size > limit:
            os.close(fd)
            raise DamagedRun(f"{shown(path)}: larger than {limit:,} bytes; not read")
        with open(fd, "rb") as handle:
            raw = handle.read(size + 1)
            if len(raw) > size:  # it grows while it is read: read on, up to the limit
                raw += handle.read(limit + 1 - len(raw))
    except FileNotFoundError:
        raise DamagedRun(f"{shown(path)}: missing (not a finished run folder)") from None
    except OSError as error:
        raise DamagedRun(f"{shown(path)}: unreadable ({error.strerror or error})") from None
    if len(raw) > limit:
        raise DamagedRun(f"{shown(path)}: larger than {limit:,} bytes; not read")
    try:
        value = from_json(raw, allow_inf_nan=False)
    except ValueError as error:
        raise DamagedRun(f"{shown(path)}: not valid JSON ({shown(error, 120)})") from None
    where = _non_finite(value)
    if where is not None:
        raise DamagedRun(f"{shown(path)}: {where or 'value'}: not a finite number")
    return value


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


def is_run(path: Path) -> bool:
    """Whether ``path`` is a finished run folder (it has its record; a damaged one is read,
    and refused, by :func:`read_run`)."""
    return os.path.lexists(Path(path) / RESULTS)


def read_run(folder: Path) -> RunRecord:
    """A finished run's record, read (bounded) and checked whole."""
    path = Path(folder) / RESULTS
    value = _read_json(path, MAX_RECORD_BYTES)
    if not isinstance(value, dict):
        raise DamagedRun(f"{shown(path)}: must be a JSON object, not {type(value).__name__}")
    try:
        record = RunRecord.model_validate(value)
    except ValidationError as error:
        raise _damaged(path, problem_lines(error)) from None
    problems = record.problems()
    if problems:
        raise _damaged(path, problems)
    return record


def schema_text() -> str:
    """The exported JSON Schema of :class:`RunRecord`."""
    return json.dumps(RunRecord.model_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m posgen.train.run_record: rewrite the exported schema
    SCHEMA_FILE.write_text(schema_text())
    sys.stdout.write(f"{SCHEMA_FILE}\n")
