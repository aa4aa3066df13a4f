"""Grid files of ``posgen sweep``: datasets x configs x position encodings x presets x seeds.

A grid file (TOML, YAML or JSON) is a :class:`Grid`::

    datasets = ["out/posgen-v1", "out/paper"]   # folders written by `posgen generate`
    configs = ["cot"]                           # optional; default: every config of each
    pes = ["rope", "yarn", { name = "linear", parameters = { factor = 2 } }]
    seeds = [5549, 4955]                        # optional; default: each preset's seeds

    [[presets]]
    name = "cpu"
    overrides = { epochs = 2, max_steps = 40 }  # any preset field but seeds

    [slurm]                                     # optional: `--executor slurm` settings
    partition = "gpu"
    time_min = 240

``pes`` holds what ``posgen train`` takes: a name of ``--pe`` (built in, a plugin, or
``package.module:name``), or a table of a name, its ``parameters`` (``--pe-param``) and
``randomized`` positions (``--randomized-positions``); ``pes = "all"`` is every registered
encoding. Each is resolved for each dataset and preset by the trainer's own resolution
(:func:`posgen.train.trainer.resolve_pe`), so a name it refuses is refused here.

It expands into one :class:`RunSpec` per (seed, dataset, config, preset, pe), seeds
outermost, so an interrupted sweep has whole tables for its first seeds. A run is named by
:func:`stable_hash` of its resolved config: the dataset's folder name and spec id, the
config, the position encoding's label and every resolved parameter, the preset name, every
resolved preset field and the seed (not the dataset's path, so a sweep folder survives
moving the data). The same run in two grids is the same folder, trained once. Runs whose
encodings train alike (equal ``training_key``: ``rope``, ``yarn``, ``linear``...;
``resonance`` and its evaluation-time variants) share one :class:`JobSpec`, one training
that writes each of their folders.

Worked example: ``pes = ["rope", "yarn", "nope"]``, two seeds, one config -> 6 runs,
4 trainings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from posgen.encodings import PERequest
from posgen.errors import PosgenError, UsageError, problem_lines
from posgen.spec import TaskSpec
from posgen.spec_files import SpecFileError, read_spec_file
from posgen.store.manifest import read_manifest
from posgen.train.config import TrainConfig, known_preset, preset

HASH_CHARS = 16
"""Hex digits of a run's hash (64 bits: a collision needs ~4 billion runs)."""


class GridError(UsageError, ValueError):
    """A grid file that cannot be used: one line per problem, exit status 2."""


class PresetEntry(BaseModel):
    """A preset and its overridden fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="A preset name (posgen train --preset).")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Preset fields to override (not seeds)."
    )

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        return known_preset(name)

    @field_validator("overrides")
    @classmethod
    def _fields(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        if "seeds" in overrides:
            raise ValueError("seeds are set by the grid's seeds, not a preset override")
        unknown = sorted(set(overrides) - set(TrainConfig.model_fields))
        if unknown:
            raise ValueError(f"unknown preset field {', '.join(unknown)}")
        return overrides

    def resolved(self) -> TrainConfig:
        """The preset with its overrides (validated by :class:`TrainConfig`)."""
        return preset(self.name, **self.overrides)


class SlurmSettings(BaseModel):
    """Resources of one run on a Slurm cluster (``--executor slurm``); flags override them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = Field(None, max_length=200, description="Slurm partition.")
    account: str | None = Field(None, max_length=200, description="Slurm account.")
    time_min: int = Field(240, ge=1, le=60 * 24 * 30, description="Minutes per run.")
    gpus: int = Field(1, ge=0, le=16, description="GPUs per run.")
    cpus: int = Field(2, ge=1, le=256, description="CPUs per run.")
    mem_gb: int = Field(16, ge=1, le=4096, description="Memory per run (GB).")
    max_parallel: int = Field(
        32, ge=1, le=10_000, description="Runs of the job array running at once."
    )


class Grid(BaseModel):
    """What a sweep runs; see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    datasets: list[Path] = Field(min_length=1, max_length=64)
    configs: list[str] = Field(default_factory=list, max_length=256)
    pes: list[PERequest] | Literal["all"] = Field(min_length=1, max_length=256)
    presets: list[PresetEntry] = Field(
        default_factory=lambda: [PresetEntry(name="cpu")], min_length=1, max_length=64
    )
    seeds: list[int] | None = Field(None, min_length=1, max_length=1000)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)

    @field_validator("pes", mode="before")
    @classmethod
    def _pes(cls, pes: Any) -> list[PERequest] | str:
        """Names and tables become requests here, so each problem is one line."""
        if pes == "all":
            return pes
        if not isinstance(pes, list):
            raise ValueError("use a list of encodings (names or tables) or 'all'")
        requests = []
        for index, pe in enumerate(pes):
            try:
                requests.append(_request(pe if not isinstance(pe, str) else {"name": pe}))
            except ValidationError as error:
                raise ValueError(f"{index}.{problem_lines(error)[0]}") from None
        _unique([request.model_dump_json() for request in requests], "pes")
        return requests

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None:
            for seed in seeds:
                if not 0 <= seed < 2**63:
                    raise ValueError(f"seed {seed} is outside 0 .. 2**63 - 1")
            _unique(seeds, "seeds")
        return seeds

    @field_validator("configs")
    @classmethod
    def _configs(cls, configs: list[str]) -> list[str]:
        return _unique(configs, "configs")


def _request(pe: str | PERequest | dict[str, Any]) -> PERequest:
    if isinstance(pe, PERequest):
        return pe
    return PERequest(name=pe) if isinstance(pe, str) else PERequest.model_validate(pe)


def _unique(values: list[Any], name: str) -> list[Any]:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{name} repeat {', '.join(repeated)}")
    return values


def read_grid(path: Path) -> Grid:
    """Parse and check a grid file; every problem a :class:`GridError` line naming it."""
    try:
        data = read_spec_file(path)
    except SpecFileError as error:
        raise GridError(str(error).replace("spec file", "grid file", 1)) from None
    try:
        grid = Grid.model_validate(data)
        for index, entry in enumerate(grid.presets):
            _resolve(entry, f"presets.{index}")
    except ValidationError as error:
        raise GridError("\n".join(f"{path}: {line}" for line in problem_lines(error))) from None
    except GridError as error:
        raise GridError(f"{path}: {error}") from None
    return grid


def _resolve(entry: PresetEntry, where: str) -> TrainConfig:
    try:
        return entry.resolved()
    except ValidationError as error:
        raise GridError(
            "\n".join(f"{where}.overrides.{line}" for line in problem_lines(error))
        ) from None


def stable_hash(payload: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``payload`` (sorted keys), first :data:`HASH_CHARS`.

    >>> stable_hash({"b": 1, "a": [2]}) == stable_hash({"a": [2], "b": 1})
    True
    """
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


class RunSpec(BaseModel):
    """One run of a sweep: what it trains, its key (hash) and its training's key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    job: str
    data: str = Field(description="The dataset folder, absolute.")
    dataset: str
    spec_id: str
    config: str
    pe: str = Field(description="The position encoding's label (posgen results groups by it).")
    pe_request: PERequest
    preset: str
    train: dict[str, Any]
    seed: int

    @property
    def folder(self) -> str:
        """The run folder, relative to the sweep folder."""
        return f"runs/{self.key}"


def identity(
    dataset: str,
    spec_id: str,
    config: str,
    preset_name: str,
    train: TrainConfig,
    seed: int,
    **encoding: Any,
) -> dict[str, Any]:
    """What names a run (``encoding``: its label and parameters) or a training (``encoding``:
    its training key): everything its folders' bytes depend on but the data's path."""
    return {
        "dataset": dataset,
        "spec_id": spec_id,
        "config": config,
        "preset": preset_name,
        "train": train.model_dump(mode="json"),
        "seed": seed,
        **encoding,
    }


class ResolvedEncoding(BaseModel):
    """What expansion needs of a resolved position encoding."""

    model_config = ConfigDict(frozen=True)

    label: str
    parameters: dict[str, Any]
    training_key: str


Resolver = Callable[[PERequest, TaskSpec, TrainConfig], ResolvedEncoding]
"""Resolves a request for a config's spec and a model size (raises ``ValueError``)."""


def expand(
    grid: Grid, resolve: Resolver, every_pe: Callable[[], list[str]] = list
) -> list[RunSpec]:
    """Every run of ``grid`` (seeds outermost); ``resolve`` resolves each encoding as the
    trainer does, ``every_pe`` lists the registered names (for ``pes = "all"``).

    Raises :class:`GridError` naming a dataset that is missing or lacks a config, or an
    encoding the trainer refuses.
    """
    datasets = []
    for index, folder in enumerate(grid.datasets):
        try:
            manifest = read_manifest(folder)
        except PosgenError as error:
            raise GridError(f"datasets.{index}: {'; '.join(error.lines)}") from None
        except OSError as error:
            raise GridError(f"datasets.{index}: {folder}: {error.strerror or error}") from None
        names = grid.configs or list(manifest.configs)
        missing = [name for name in names if name not in manifest.configs]
        if missing:
            known = ", ".join(manifest.configs)
            raise GridError(
                f"datasets.{index}: {folder} has no config {', '.join(missing)}; configs: {known}"
            )
        datasets.append((Path(folder), manifest, names))
    requests = [_request(pe) for pe in (every_pe() if grid.pes == "all" else grid.pes)]
    presets = [(entry.name, entry.resolved()) for entry in grid.presets]
    seeds = grid.seeds or list(dict.fromkeys(s for _, train in presets for s in train.seeds))
    runs: dict[str, RunSpec] = {}  # presets that resolve alike give the same runs, once
    for seed in seeds:
        for folder, manifest, names in datasets:
            for name in names:
                entry = manifest.configs[name]
                for preset_name, train in presets:
                    if grid.seeds is None and seed not in train.seeds:
                        continue
                    for index, request in enumerate(requests):
                        try:
                            pe = resolve(request, entry.spec, train)
                        except ValueError as error:
                            raise GridError(f"pes.{index}: {error}") from None
                        args = (folder.name, entry.spec_id, name, preset_name, train, seed)
                        run = identity(*args, pe=pe.label, pe_parameters=pe.parameters)
                        key = stable_hash(run)
                        runs[key] = runs.get(key) or RunSpec(
                            key=key,
                            job=stable_hash(identity(*args, training=pe.training_key)),
                            data=str(folder.resolve()),
                            dataset=folder.name,
                            spec_id=entry.spec_id,
                            config=name,
                            pe=pe.label,
                            pe_request=request,
                            preset=preset_name,
                            train=run["train"],
                            seed=seed,
                        )
    return list(runs.values())


class JobSpec(BaseModel):
    """One training: the runs it serves (same data, preset, seed and training frequencies)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    runs: list[RunSpec]


def jobs_of(runs: list[RunSpec]) -> list[JobSpec]:
    """Runs grouped by training, in the order of their first run."""
    grouped: dict[str, list[RunSpec]] = {}
    for run in runs:
        grouped.setdefault(run.job, []).append(run)
    return [JobSpec(key=key, runs=members) for key, members in grouped.items()]
