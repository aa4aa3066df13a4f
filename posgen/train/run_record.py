"""The run record: one typed file, ``results.json``, per run folder (no torch needed).

:func:`read_run` reads it bounded and checks it whole; a problem is one :class:`DamagedRun`
line naming the file and the field (exit 1). ``python -m posgen.train.run_record`` rewrites
``run_record.schema.json``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from posgen.errors import DataError, UsageError, counted, problem_lines, shown
from posgen.scoring.metrics import ScoreReport, bucket_edges
from posgen.scoring.reliance import RelianceReport
from posgen.spec import MAX_ROWS, PROBE_SPLIT, ConfigName, TaskSpec
from posgen.store.manifest import unregistered
from posgen.train import RESULTS
from posgen.train.config import TrainConfig, known_preset

MAX_RECORD_BYTES = 128 << 20  # the scores take about 60 bytes a position: 1 M positions fit
MAX_COUNT = 2**53  # largest count a report may hold (exact as a float)
MAX_THREADS = 1024
MAX_LAYERS = 64
MAX_SECONDS = 1e9  # a run time (about 31 years): run times summed stay finite
SCHEMA_FILE = Path(__file__).with_name("run_record.schema.json")
SHA256 = re.compile(r"[0-9a-f]{64}")
ZEROED = "0" * 64  # no file hashes to it: a record holding one was edited


class DamagedRun(DataError, ValueError):
    """A run folder's record that cannot be read or does not fit its model (exit 1)."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataRecord(_Record):
    """The data a run trained and was tested on."""

    folder: str = Field(
        max_length=4096,
        description="Dataset folder as given to posgen train (absolute for . or ..).",
    )
    config: ConfigName = Field(description="Config (task) trained on.")
    files: dict[str, str] = Field(
        min_length=1,
        description="sha256 of every file the run read (path -> hex digest), each checked "
        "against the manifest as read.",
    )

    @field_validator("files")
    @classmethod
    def _digests(cls, files: dict[str, str]) -> dict[str, str]:
        for path, digest in files.items():
            if not SHA256.fullmatch(digest):
                raise ValueError(f"{shown(path, 80)}: {shown(digest, 80)} is not a sha256 digest")
            if digest == ZEROED:
                raise ValueError(f"{shown(path, 80)}: an all-zero sha256 (a placeholder)")
        return files


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
    randomized_positions: int | None = Field(
        ge=1, lt=2**63, description="Range R of randomized positions (L'+1 <= R < 2^63)."
    )
    confound: str | None = Field(None, description="How the model differs from the Llama block.")


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

    @field_validator("layers")
    @classmethod
    def _each_layer_once(cls, layers: list[AttentionLayer]) -> list[AttentionLayer]:
        if [entry.layer for entry in layers] != list(range(len(layers))):
            given, last = shown([entry.layer for entry in layers], 60), len(layers) - 1
            raise ValueError(f"layer indices {given} must be 0 .. {last}, each once, in order")
        return layers

    def problems(self, spec: TaskSpec, layers: int) -> list[str]:
        """Whether these are the figures of a model of ``layers`` layers on ``spec``'s test rows:
        as many targets as the rows hold in each region (None: a region without any)."""
        if len(self.layers) != layers or self.rows > spec.test_size:
            had, rows = counted(len(self.layers), "layer"), counted(self.rows, "row")
            trained = f"{counted(layers, 'layer')} and tests {counted(spec.test_size, 'row')}"
            return [f"attention: {had} of {rows}, but the run trained {trained}"]
        length, boundary = spec.test_length[0], spec.train_length
        widths = {"id": min(boundary, length) - spec.window, "ood": length - boundary}
        for entry in self.layers:
            for name, width in widths.items():
                region, targets = getattr(entry, name), self.rows * max(width, 0)
                if (region.targets if region else 0) != targets:
                    found = region.targets if region else None
                    return [f"attention.layers.{entry.layer}.{name}.targets: {found}, but "
                            f"{self.rows} rows hold {targets}"]  # fmt: skip
        return []


ACCURACY = ("correct", "tokens", "accuracy")  # a score curve's columns (besides positions)
CURVE_COLUMNS = ("counted", "far", "local", "far_reliance", "local_reliance")  # and reliance


def _ratio_problems(name: str, part: Any, words: tuple[str, str, str] = ACCURACY) -> list[str]:
    """Whether ``part``'s share is its hits / total (None for 0 total)."""
    hits, total, share = words
    correct, tokens, accuracy = (getattr(part, word) for word in words)
    if not 0 <= correct <= tokens <= MAX_COUNT:
        given = f"{shown(correct, 30)} of {shown(tokens, 30)}"
        return [f"{name}: counts must satisfy 0 <= {hits} <= {total} <= 2^53 (given {given})"]
    expected = correct / tokens if tokens else None
    if (expected is None) != (accuracy is None) or (
        expected is not None and accuracy is not None and not math.isclose(expected, accuracy)
    ):
        return [f"{name}.{share}: {accuracy} is not {hits} / {total} ({correct} / {tokens})"]
    return []


def _reliance_problems(name: str, part: Any) -> list[str]:
    if part.far + part.local > part.counted:
        return [f"{name}: far {part.far} + local {part.local} exceed the {part.counted} counted"]
    lines = _ratio_problems(name, part, ("far", "counted", "far_reliance"))
    return lines or _ratio_problems(name, part, ("local", "counted", "local_reliance"))


def _points(report: Any, columns: tuple[str, ...]) -> Iterator[tuple[int, Any]]:
    """``(position, point)`` of every curve position, the point holding ``columns``."""
    for index, position in enumerate(report.curve.position):
        yield position, SimpleNamespace(**{c: getattr(report.curve, c)[index] for c in columns})


def _curve_problems(report: Any, columns: tuple[str, ...]) -> list[str]:
    """Whether ``report``'s curve has every position once, one value a column each."""
    expected = list(range(report.seed_window, report.length))
    if report.curve.position != expected:
        return [f"curve.position: must be {report.seed_window} .. {report.length - 1}"]
    if {len(getattr(report.curve, column)) for column in columns} != {len(expected)}:
        return [f"curve: {', '.join(columns)} must each have one value per position"]
    return []


def _regions(report: Any) -> dict[str, slice]:
    """The curve's ID, OOD and overall positions."""
    boundary = min(report.ood_boundary, report.length) - report.seed_window
    return {"id": slice(0, boundary), "ood": slice(boundary, None), "overall": slice(None)}


class RunScores(ScoreReport):
    """A :class:`ScoreReport` whose counts add up: every position ``w .. L'-1`` in the curve
    once, one prediction a row; ID, OOD and overall the curve's sums; each accuracy its ratio."""

    def problems(self) -> list[str]:
        curve = self.curve
        if lines := _curve_problems(self, ACCURACY):
            return lines
        if any(t != self.rows for t in curve.tokens):
            return [
                f"curve.tokens: every position has {counted(self.rows, 'prediction')} (one per row)"
            ]
        for position, point in _points(self, ACCURACY):
            if lines := _ratio_problems(f"curve[{position}]", point):
                return lines
        lines = []
        for name, region in _regions(self).items():
            part = getattr(self, name)
            correct, tokens = sum(curve.correct[region]), sum(curve.tokens[region])
            if (part.correct, part.tokens) != (correct, tokens):
                given = f"{shown(part.correct, 30)} of {shown(part.tokens, 30)}"
                lines.append(f"{name}: {given} does not match the curve "
                             f"({correct} of {tokens})")  # fmt: skip
            lines += _ratio_problems(name, part)
        for name in ("ood_exact_match", "exact_match"):
            lines += _ratio_problems(name, getattr(self, name))
        return lines


class RunProbeScores(RelianceReport):
    """A :class:`RelianceReport` whose counts add up: every position in the curve once, at most
    one probed target a row, far + local <= counted, each share its ratio; ID, OOD, overall
    and the buckets the curve's sums, with at least as many probed targets as counted ones."""

    def problems(self) -> list[str]:
        w, rows = self.seed_window, self.rows
        if lines := _curve_problems(self, CURVE_COLUMNS):
            return lines
        for position, point in _points(self, CURVE_COLUMNS):
            if not 0 <= point.counted <= rows or point.far < 0 or point.local < 0:
                counts = f"{point.counted} counted, far {point.far}, local {point.local}"
                limit = f"at most one target a row ({counted(rows, 'row')})"
                return [f"curve[{position}]: {counts}: {limit}"]
            if lines := _reliance_problems(f"curve[{position}]", point):
                return lines
        lines = []
        for name, region in _regions(self).items():
            lines += self._sums(name, getattr(self, name), region)
        if self.overall.probed != self.id.probed + self.ood.probed:
            given = (shown(n, 30) for n in (self.overall.probed, self.id.probed, self.ood.probed))
            lines.append("overall.probed: {} is not ID + OOD ({} + {})".format(*given))
        edges = bucket_edges(w, self.length, self.ood_boundary, self.bucket_width)
        spans = list(itertools.pairwise(edges))
        if [(b.start, b.stop) for b in self.buckets] != spans:
            return [*lines, f"buckets: must span {spans[:3]}... ({len(spans)} buckets of "
                            f"width {self.bucket_width})"]  # fmt: skip
        for bucket in self.buckets:
            name = f"buckets[{bucket.start}, {bucket.stop})"
            if bucket.ood != (bucket.start >= self.ood_boundary):
                lines.append(f"{name}.ood: {bucket.ood} for a bucket from {bucket.start}")
            lines += self._sums(name, bucket, slice(bucket.start - w, bucket.stop - w))
        if sum(b.probed for b in self.buckets) != self.overall.probed:
            lines.append(f"buckets: {shown(sum(b.probed for b in self.buckets), 30)} probed in "
                         f"all, not overall's {shown(self.overall.probed, 30)}")  # fmt: skip
        return lines

    def _sums(self, name: str, part: Any, region: slice) -> list[str]:
        """``part`` (a region or a bucket) against the curve's sums over ``region``."""
        curve = self.curve
        sums = tuple(sum(getattr(curve, column)[region]) for column in ("counted", "far", "local"))
        if (part.counted, part.far, part.local) != sums:
            return [f"{name}: counted {part.counted}, far {part.far}, local {part.local} do not "
                    f"match the curve ({sums[0]}, {sums[1]}, {sums[2]})"]  # fmt: skip
        positions = len(curve.counted[region])
        if not part.counted <= part.probed <= self.rows * positions:
            probed = shown(part.probed, 30)
            return [f"{name}.probed: {probed} probed targets for {part.counted} counted ones "
                    f"over {positions} positions of {self.rows} rows"]  # fmt: skip
        return _reliance_problems(name, part)


class RunRecord(_Record):
    """One run's ``results.json``."""

    schema_version: Literal[1] = Field(description="The record's version (required: 1).")
    data: DataRecord
    spec: TaskSpec
    position_encoding: PositionEncodingRecord
    preset: Annotated[str, AfterValidator(known_preset)]
    train: TrainConfig = Field(description="The preset's fields with overrides.")
    seed: int = Field(ge=0, lt=2**63)
    model: ModelInfo
    best_epoch: int = Field(ge=1, le=10_000)
    best_val_id_accuracy: float = Field(ge=0.0, le=1.0)
    wall_seconds: float | None = Field(
        ge=0,
        le=MAX_SECONDS,
        description="From the start of training to the written run (shared trainings "
        "count their training once per run).",
    )
    train_seconds: float | None = Field(
        ge=0, le=MAX_SECONDS, description="Seconds in training steps."
    )
    device: Literal["cpu", "cuda"]
    torch_threads: int = Field(ge=1, le=MAX_THREADS)
    versions: dict[str, str] = Field(max_length=64)
    scores: RunScores = Field(description="The posgen score report of the test predictions.")
    probe_scores: RunProbeScores = Field(
        description="The far-reliance report of the probe predictions (every spec has a probe "
        "split, and every run scores it)."
    )
    attention: AttentionDiagnostics | None = Field(
        None,
        description="Attention entropy and far-operand share per layer, ID and OOD "
        "(None: a run from before they were measured).",
    )

    @property
    def key(self) -> tuple[str, str, str]:
        """``(data folder name, task, pe)``: the results cell the run belongs to."""
        return (Path(self.data.folder).name, self.data.config, self.position_encoding.label)

    def to_json(self) -> str:
        """Stable JSON: sorted keys, two-space indent, trailing newline."""
        body = self.model_dump(mode="json", by_alias=True)
        return json.dumps(body, indent=2, sort_keys=True, allow_nan=False) + "\n"

    def problems(self) -> list[str]:
        """A best epoch past those trained; scores of other data or whose counts do not add up."""
        if self.best_epoch > self.train.epochs:
            return [f"best_epoch: {self.best_epoch}, but the run trained {self.train.epochs} "
                    "epochs"]  # fmt: skip
        randomized, positions = self.position_encoding.randomized_positions, self.spec.test_length
        if randomized is not None and randomized <= positions[0]:
            return [f"position_encoding.randomized_positions: {randomized}, but the range must "
                    f"hold the test rows' {positions[0] + 1} positions (L'+1)"]  # fmt: skip
        if self.attention and (lines := self.attention.problems(self.spec, self.train.layers)):
            return lines
        lines = []
        for name, report, split in (
            ("scores", self.scores, "test"),
            ("probe_scores", self.probe_scores, PROBE_SPLIT),
        ):
            if wrong := self._other_data(name, report, split):
                return wrong
            lines += [f"{name}.{line}" for line in report.problems()]
        return lines

    def _other_data(self, name: str, report: Any, split: str) -> list[str]:
        """A line when ``report`` is not of this run's data: its spec, config and ``split``."""
        spec = self.spec
        facts: dict[str, tuple[Any, Any]] = {
            "spec_id": (report.spec_id, spec.spec_id),
            "config": (report.config, self.data.config),
            "split": (report.split, split),
            "modulus": (report.modulus, spec.modulus),
            "seed_window": (report.seed_window, spec.window),
            "ood_boundary": (report.ood_boundary, spec.train_length),
            "length": (report.length, spec.split_length(split)),
            "rows": (report.rows, spec.split_size(split)),
        }
        for field, (found, wanted) in facts.items():
            if found != wanted:
                return [f"{name}.{field}: {shown(found, 60)}, but the run names "
                        f"{shown(wanted, 60)} (scores of other data)"]  # fmt: skip
        return []


def _damaged(path: Path, lines: list[str]) -> DamagedRun:
    more = f" (and {len(lines) - 1} more problems)" if len(lines) > 1 else ""
    return DamagedRun(f"{shown(path)}: {lines[0]}{more}")


def _read_json(path: Path, limit: int) -> Any:
    """The JSON value of a regular file of at most ``limit`` bytes, UTF-8, no repeated key, no
    NaN or Infinity."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a pipe or a device"
                raise DamagedRun(f"{shown(path)}: not a regular file ({kind}); not read")
            if info.st_size > limit:
                raise DamagedRun(f"{shown(path)}: larger than {limit:,} bytes; not read")
            with open(fd, "rb", closefd=False) as handle:
                raw = handle.read(info.st_size + 1)
                if len(raw) > info.st_size:  # it grows while it is read: on, up to the limit
                    raw += handle.read(limit + 1 - len(raw))
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise DamagedRun(f"{shown(path)}: missing (not a finished run folder)") from None
    except PermissionError:
        raise  # the user's to fix (exit 2), not damage
    except OSError as error:
        raise DamagedRun(f"{shown(path)}: unreadable ({error.strerror or error})") from None
    if len(raw) > limit:
        raise DamagedRun(f"{shown(path)}: larger than {limit:,} bytes; not read")
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys,
                           parse_constant=_no_constant)  # fmt: skip
    except RecursionError:
        raise DamagedRun(f"{shown(path)}: not valid JSON (nested too deeply)") from None
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError among them
        raise DamagedRun(f"{shown(path)}: not valid JSON ({shown(error, 120)})") from None
    if (where := _non_finite(value)) is not None:
        raise DamagedRun(f"{shown(path)}: {where or 'value'}: not a finite number")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when a key repeats."""
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise ValueError(f"the key {shown(key, 60)!r} is repeated in one object")
        value[key] = item
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _items(value: Any) -> Any:
    """The ``(key, item)`` pairs of a JSON object or list."""
    if isinstance(value, dict):
        return value.items()
    return enumerate(value) if isinstance(value, list) else ()


def _non_finite(value: Any, where: str = "") -> str | None:
    """Where a float that is not finite sits in ``value`` (None when there is none)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    for key, item in _items(value):
        if (found := _non_finite(item, f"{where}.{key}" if where else str(key))) is not None:
            return found
    return None


def _kind(value: Any) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    return {**kinds, dict: "an object", list: "a list"}.get(type(value), "null")


def _coerced(given: Any, held: Any, where: str = "") -> str | None:
    """Where the record as written holds another JSON kind than the record read from it
    (``"0.5"`` read as a number)."""
    if _kind(given) != _kind(held):
        value = shown(json.dumps(given), 40)
        return f"{where or 'value'}: {_kind(given)} ({value}) where the record holds {_kind(held)}"
    for key, item in _items(given):  # both objects or both lists here
        inside = key in (held if isinstance(held, dict) else range(len(held)))
        if inside and (found := _coerced(item, held[key], f"{where}.{key}" if where else str(key))):
            return found
    return None


def read_run(folder: Path) -> RunRecord:
    """A finished run's record, read (bounded) and checked whole."""
    if not isinstance(folder, str | os.PathLike):
        raise UsageError(f"read_run takes a run folder (a path), not {type(folder).__name__}")
    path = Path(folder) / RESULTS
    value = _read_json(path, MAX_RECORD_BYTES)
    if not isinstance(value, dict):
        raise DamagedRun(f"{shown(path)}: must be a JSON object, not {type(value).__name__}")
    try:
        record = RunRecord.model_validate(value)
    except ValidationError as error:
        if line := unregistered({"configs": {"run": value}}, shown(path), "a run"):
            raise UsageError(line) from None  # not damage: where it is read
        raise _damaged(path, problem_lines(error)) from None
    try:
        held = record.model_dump(mode="json", by_alias=True)
    except ValueError:  # pydantic writes at most some 250 levels (a PE parameter's lists)
        raise DamagedRun(f"{shown(path)}: nested too deeply; not read") from None
    if coerced := _coerced(value, held):
        raise DamagedRun(f"{shown(path)}: {coerced}")
    if problems := record.problems():
        raise _damaged(path, problems)
    return record


def schema_text() -> str:
    return json.dumps(RunRecord.model_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m posgen.train.run_record: rewrite the exported schema
    SCHEMA_FILE.write_text(schema_text())
    sys.stdout.write(f"{SCHEMA_FILE}\n")
