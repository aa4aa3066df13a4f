"""``results.json``: the record every ``posgen train`` run writes (no torch needed).

One file holds what it takes to compare a run with any other: the posgen version, the
dataset (folder name, config, spec id, and the sha256 of every file the run read, each
checked against the manifest as it was read), the position encoding with *every* parameter
(defaults included) and its rope parameters in training and evaluation, the preset and its
fields, the seed, ID and OOD accuracy, accuracy at every position, the full ``posgen score``
report, and the wall time. ``posgen results`` reads these
(:func:`posgen.train.run_files.read_run`, bounded and checked with the run's other files),
and for run folders written before this file existed builds the same record from
``config.json`` and ``scores.json`` (``legacy`` true, no checksums).

The JSON Schema is exported to ``posgen/train/run_record.schema.json``
(``python -m posgen.train.run_record`` rewrites it; a test checks it for drift).

>>> RunRecord.model_json_schema()["properties"]["schema_version"]["const"]
1
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from posgen import __version__
from posgen.scoring.metrics import ScoreReport

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


if __name__ == "__main__":  # python -m posgen.train.run_record: rewrite the exported schema
    SCHEMA_FILE.write_text(schema_text())
    sys.stdout.write(f"{SCHEMA_FILE}\n")
