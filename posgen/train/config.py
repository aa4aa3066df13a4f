"""What a run is (no torch needed): its preset, the grids of a sweep, its memory estimate.

``paper`` is the authors' setup (a GPU); ``cpu`` trains the paper's four encodings on two CPU
cores in about 40 minutes. A sweep's grid file (TOML, YAML or JSON; :class:`Grid`) crosses
datasets x configs x encodings x presets x seeds; each run is named by :func:`stable_hash` of
its resolved config, and runs whose encodings train alike share one :class:`JobSpec`::

    datasets = ["out/posgen-v1"]
    pes = ["rope", "yarn", { name = "linear", parameters = { factor = 2 } }]
    seeds = [5549, 4955]                 # 2 seeds x 3 pes -> 6 runs in 2 trainings
    [[presets]]
    name = "cpu"
    overrides = { epochs = 2 }
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import resource
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from posgen.encodings import PERequest, as_request
from posgen.errors import (
    PosgenError,
    UsageError,
    UsageProblems,
    human_bytes,
    problem_lines,
    shown,
)
from posgen.spec import SpecFileError, TaskSpec, read_spec_file
from posgen.store.manifest import read_manifest

PAPER_SEEDS = [5549, 4955, 42, 3701, 49]
"""The authors' five seeds."""


class TrainConfig(BaseModel):
    """Model size and optimisation of one run; every field can be overridden by a flag.
    Strict: ``"3"`` is no number and ``true`` no integer (a grid's ``epochs = "3"`` is refused).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    layers: int = Field(ge=1, le=64, description="Decoder layers.")
    hidden: int = Field(ge=8, le=8192, description="Model width d_model.")
    heads: int = Field(ge=1, le=128, description="Attention heads (hidden / heads must be even).")
    intermediate: int = Field(ge=1, le=65536, description="Feed-forward width d_ff.")
    lr: float = Field(gt=0, le=1.0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(ge=0, le=1.0, description="AdamW weight decay.")
    warmup: float = Field(gt=0, lt=1.0, description="One-cycle warm-up fraction of steps.")
    batch_size: int = Field(ge=1, le=65536, description="Training rows per step.")
    eval_batch_size: int = Field(ge=1, le=65536, description="Rows per evaluation forward.")
    epochs: int = Field(ge=1, le=10_000, description="Passes over the train split.")
    eval_every: int = Field(1, ge=1, le=10_000, description="Validate every this many epochs.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many steps (smoke runs); the schedule spans them."
    )
    probe_every: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Score far-reliance on the probe split every this many epochs, with each "
        "validation (0: only the kept model's, at the end).",
    )
    question_ids: bool = Field(
        False,
        description="Give the question tokens x_0 .. x_{j-1} input ids of their own (m + 1 + x), "
        "so a model can tell them apart from the chain (cot).",
    )
    seeds: list[int] = Field(min_length=1, description="Seeds `make results` runs.")
    bf16: bool = Field(
        False,
        description="bf16 autocast for the forward passes (CUDA only; CPU runs always "
        "compute in float32).",
    )

    @model_validator(mode="after")
    def _even_heads(self) -> TrainConfig:
        if self.hidden % self.heads or (self.hidden // self.heads) % 2:
            raise ValueError(
                f"hidden ({self.hidden}) must be a multiple of heads ({self.heads}) "
                "with an even head dimension (rotary pairs)"
            )
        return self


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "layers": 6,
        "hidden": 512,
        "heads": 8,
        "intermediate": 2048,
        "lr": 2e-4,
        "weight_decay": 0.01,
        "warmup": 0.1,
        "batch_size": 128,
        "eval_batch_size": 64,
        "epochs": 150,
        "eval_every": 2,
        "seeds": PAPER_SEEDS,
    },
    "cpu": {
        "layers": 2,
        "hidden": 64,
        "heads": 4,
        "intermediate": 256,
        "lr": 3e-3,
        "weight_decay": 0.01,
        "warmup": 0.1,
        "batch_size": 64,
        "eval_batch_size": 250,
        "epochs": 3,
        "eval_every": 1,
        "seeds": PAPER_SEEDS[:3],
    },
}


def known_preset(name: str) -> str:
    """``name`` if it names a preset, else a ValueError listing the presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {shown(name, 60)!r}; use one of {', '.join(PRESETS)}")
    return name


def preset(name: str, **overrides: Any) -> TrainConfig:
    """The preset ``name`` with fields overridden (``None`` values are ignored)."""
    known_preset(name)
    fields = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**fields)


HASH_CHARS = 16
"""Hex digits of a run's hash (64 bits: a collision needs ~4 billion runs)."""
HASH_PATTERN = rf"^[0-9a-f]{{{HASH_CHARS}}}$"
"""What a run's or a training's key is: it names a folder, so never ``..`` or a path."""


class GridError(UsageError, ValueError):
    """A grid file that cannot be used: one line per problem, exit status 2."""


class GridProblems(UsageProblems, GridError):
    """A grid file with several problems: one line each."""


class PresetEntry(BaseModel):
    """A preset and its overridden fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, AfterValidator(known_preset)] = Field(
        description="A preset name (posgen train --preset)."
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Preset fields to override (not seeds)."
    )

    @field_validator("overrides")
    @classmethod
    def _fields(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        if "seeds" in overrides:
            raise ValueError("seeds are set by the grid's seeds, not a preset override")
        unknown = sorted(set(overrides) - set(TrainConfig.model_fields))
        if unknown:
            raise ValueError(f"unknown preset field {shown(', '.join(unknown), 100)}")
        empty = sorted(name for name, value in overrides.items() if value is None)
        if empty:
            raise ValueError(
                f"{', '.join(empty)}: null overrides nothing; give a value or leave it out"
            )
        return overrides

    def resolved(self) -> TrainConfig:
        """The preset with its overrides (validated by :class:`TrainConfig`)."""
        return preset(self.name, **self.overrides)


class SlurmSettings(BaseModel):
    """Resources of one run on a Slurm cluster (``--executor slurm``); flags override them."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

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
    configs: Annotated[list[str], AfterValidator(lambda names: _unique(names, "configs"))] = Field(
        default_factory=list, max_length=256
    )
    pes: list[PERequest] | Literal["all", "builtin"] = Field(min_length=1, max_length=256)
    presets: list[PresetEntry] = Field(
        default_factory=lambda: [PresetEntry(name="cpu")], min_length=1, max_length=64
    )
    seeds: list[StrictInt] | None = Field(None, min_length=1, max_length=1000)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)

    @field_validator("pes", mode="before")
    @classmethod
    def _pes(cls, pes: Any) -> list[PERequest] | str:
        if pes in ("all", "builtin"):
            return pes
        if not isinstance(pes, list):
            raise ValueError("use a list of encodings (names or tables), 'all' or 'builtin'")
        requests = []
        for index, pe in enumerate(pes):
            try:
                requests.append(
                    as_request(pe) if isinstance(pe, str) else PERequest.model_validate(pe)
                )
            except ValidationError as error:
                line = problem_lines(error)[0]
                where = "" if line.startswith("spec: ") else "."
                raise ValueError(f"{index}{where or ': '}{line.removeprefix('spec: ')}") from None
        _unique([request.model_dump_json() for request in requests], "pes")
        return requests

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int] | None) -> list[int] | None:
        for seed in seeds or []:
            if not 0 <= seed < 2**63:
                raise ValueError(f"seed {seed} is outside 0 .. 2**63 - 1")
        return None if seeds is None else _unique(seeds, "seeds")


def _unique(values: list[Any], name: str) -> list[Any]:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{name} repeat {shown(', '.join(repeated), 100)}")
    return values


MAX_RUNS = 20_000
"""Most runs one grid may make (the benchmark's full table is about 1,000)."""


def check_run_count(grid: Grid, configs: list[int] | None = None, pes: int | None = None) -> None:
    """A :class:`GridError` when ``grid`` makes more than :data:`MAX_RUNS` runs, counted before
    any is expanded; ``configs``: each dataset's configs, ``pes``: the encodings of ``"all"``."""
    dataset_configs = sum(configs or [max(1, len(grid.configs))] * len(grid.datasets))
    encodings = len(grid.pes) if isinstance(grid.pes, list) else (pes or 1)
    seeds = sum(len(grid.seeds or PRESETS[entry.name]["seeds"]) for entry in grid.presets)
    count = dataset_configs * encodings * seeds
    if count > MAX_RUNS:
        raise GridError(
            f"the grid makes {count:,} runs ({dataset_configs} dataset configs x {encodings} "
            f"encodings x {seeds} preset seeds), more than the limit of {MAX_RUNS:,}; split it "
            "into smaller grids (each can sweep into the same folder)"
        )


def read_grid(path: Path) -> Grid:
    """Parse and check a grid file; every problem a :class:`GridError` line naming it."""
    try:
        data = read_spec_file(path)
    except SpecFileError as error:
        raise GridError(str(error).replace("spec file", "grid file", 1)) from None
    try:
        grid = Grid.model_validate(data)
    except ValidationError as error:
        raise GridProblems([f"{path}: {line}" for line in problem_lines(error)]) from None
    for index, entry in enumerate(grid.presets):
        try:
            entry.resolved()
        except ValidationError as error:
            where = f"{path}: presets.{index}.overrides"
            raise GridProblems([f"{where}.{line}" for line in problem_lines(error)]) from None
    try:
        check_run_count(grid)
    except GridError as error:
        raise GridError(f"{path}: {error}") from None
    return grid


def run_settings(train: TrainConfig) -> dict[str, Any]:
    """The training settings a run is named and recognised by: every field, ``bf16`` only when
    on (the runs of every earlier sweep keep their names)."""
    return train.model_dump(mode="json", exclude=None if train.bf16 else {"bf16"})


def stable_hash(payload: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``payload`` (sorted keys), first :data:`HASH_CHARS`."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


class RunSpec(BaseModel):
    """One run of a sweep: what it trains, its key (hash) and its training's key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=HASH_PATTERN, description="The run's hash (its folder's name).")
    job: str = Field(pattern=HASH_PATTERN, description="Its training's hash.")
    data: str = Field(description="The dataset folder, absolute.")
    dataset: str
    spec_id: str
    config: str
    pe: str = Field(description="The position encoding's label (posgen results groups by it).")
    pe_request: PERequest
    preset: str
    train: dict[str, Any]
    seed: StrictInt = Field(ge=0, lt=2**63)

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
        "train": run_settings(train),
        "seed": seed,
        **encoding,
    }


Resolver = Callable[[PERequest, TaskSpec, TrainConfig], Any]
"""Resolves a request for a config's spec and a model size (raises ``ValueError``): a
:class:`posgen.encodings.ResolvedPE` (its label, parameters and training key)."""


def expand(
    grid: Grid,
    resolve: Resolver,
    every_pe: Callable[[], list[str]] = list,
    builtin_pe: Callable[[], list[str]] = list,
) -> list[RunSpec]:
    """Every run of ``grid`` (seeds outermost), each encoding resolved by ``resolve``;
    ``every_pe``/``builtin_pe`` list the names of ``pes = "all"``/``"builtin"``. A
    :class:`GridError` names a missing dataset or config, or an encoding the trainer refuses."""
    datasets = []
    for index, folder in enumerate(grid.datasets):
        try:
            manifest = read_manifest(folder)
        except PosgenError as error:
            raise GridError(f"datasets.{index}: {'; '.join(error.lines)}") from None
        except OSError as error:
            raise GridError(f"datasets.{index}: {folder}: {error.strerror or error}") from None
        except ValueError as error:  # a NUL byte in the path
            raise GridError(f"datasets.{index}: {str(folder)!r}: {error}") from None
        names = grid.configs or list(manifest.configs)
        missing = [name for name in names if name not in manifest.configs]
        if missing:
            known = ", ".join(manifest.configs)
            raise GridError(
                f"datasets.{index}: {folder} has no config {shown(', '.join(missing), 100)}; "
                f"configs: {known}"
            )
        folder = folder.resolve()  # named as its runs' records name it (a link: its target's)
        datasets.append([(folder, manifest.configs[name], name) for name in names])
    listed = {"all": every_pe, "builtin": builtin_pe}
    pes = listed[grid.pes]() if isinstance(grid.pes, str) else grid.pes
    requests = [as_request(pe) for pe in pes]
    check_run_count(grid, [len(configs) for configs in datasets], len(requests))
    presets = [(entry.name, entry.resolved()) for entry in grid.presets]
    seeds = grid.seeds or list(dict.fromkeys(s for _, train in presets for s in train.seeds))
    configs = [config for configs in datasets for config in configs]
    runs: dict[str, RunSpec] = {}  # presets that resolve alike give the same runs, once
    sources: dict[str, tuple[int, str]] = {}  # label -> the first pes entry and its source
    every = itertools.product(seeds, configs, presets, enumerate(requests))
    for seed, (folder, entry, name), (preset_name, train), (index, request) in every:
        if grid.seeds is None and seed not in train.seeds:
            continue
        try:
            pe = resolve(request, entry.spec, train)
        except ValueError as error:
            raise GridError(f"pes.{index}: {error}") from None
        first, source = sources.setdefault(pe.label, (index, pe.encoding.source))
        if source != pe.encoding.source:
            raise GridError(
                f"pes.{index}: {request.name} is position encoding {pe.label!r} from "
                f"{pe.encoding.source}, and so is pes.{first} from {source}; their runs and "
                "results cells could not be told apart (give one plugin another name)"
            )
        args = (folder.name, entry.spec_id, name, preset_name, train, seed)
        run = identity(*args, pe=pe.label, pe_parameters=pe.parameters)
        key = stable_hash(run)
        runs[key] = runs.get(key) or RunSpec(
            key=key,
            job=stable_hash(identity(*args, training=pe.training_key())),
            data=str(folder.resolve()),
            pe_request=request,
            **{k: v for k, v in run.items() if k != "pe_parameters"},
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


BASE_BYTES = 768 * 2**20
"""Resident memory of the process before any data or model (measured: about 380 MiB)."""
FLOAT = 4


@dataclass(frozen=True)
class RunEstimate:
    """The parts of a run's memory, in bytes."""

    parameters: int
    model: int
    activations: int
    data: int

    @property
    def total(self) -> int:
        """Everything, the process included."""
        return BASE_BYTES + self.model + self.activations + self.data


def parameter_count(config: TrainConfig, vocab: int) -> int:
    """Parameters of the Llama :func:`posgen.train.trainer.build_model` builds.

    >>> parameter_count(preset("cpu"), 18)
    133696
    """
    d, ff = config.hidden, config.intermediate
    per_layer = 4 * d * d + 3 * d * ff + 2 * d
    return 2 * vocab * d + config.layers * per_layer + d


def estimate_run(
    config: TrainConfig,
    spec: TaskSpec,
    largest_file: int = 0,
    positions: int | None = None,
    table: bool = True,
) -> RunEstimate:
    """An upper bound on the memory (bytes, fp32) of a run: the process, the model with AdamW
    state and a best copy, a training and an evaluation batch's activations, the data; a
    position table of ``positions`` rows (default L'+1) with ``table``.

    >>> estimate = estimate_run(preset("cpu"), TaskSpec(task="recursive"), largest_file=10**6)
    >>> estimate.parameters, round(estimate.total / 2**20)  # 133,696 and a table of 257 x 64
    (150144, 1733)
    """
    vocab = spec.modulus + 1
    rows = max(positions or 0, max(spec.test_lengths) + 1) if table else 0
    params = parameter_count(config, vocab) + rows * config.hidden
    model = params * FLOAT * 6  # weights, gradients, AdamW's 2 moments, best copy and its successor
    d, ff, heads, layers = config.hidden, config.intermediate, config.heads, config.layers
    rows, seq = min(config.batch_size, spec.train_size), spec.train_length + 1
    train = layers * (rows * seq * (12 * d + 6 * ff) + 3 * rows * heads * seq * seq)
    train += 5 * rows * seq * vocab
    eval_rows = min(config.eval_batch_size, max(spec.val_size, spec.test_size))
    eval_seq = max(spec.test_lengths) + 1
    evaluation = eval_rows * eval_seq * (6 * d + 4 * ff) + 2 * eval_rows * heads * eval_seq**2
    evaluation += 2 * eval_rows * eval_seq * vocab
    tokens = (spec.train_size + spec.val_size) * spec.train_length
    data = spec.token_bytes * (tokens + 2 * spec.test_size * spec.test_lengths[0])
    data += 2 * largest_file + 16 * (rows * seq + eval_rows * eval_seq)
    return RunEstimate(params, model, FLOAT * (train + evaluation), data)


def available_bytes(
    proc: Path = Path("/proc"), cgroup: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """Memory this process can still use: the least of ``MemAvailable``, what its memory
    cgroup's limit leaves (v2, then v1; its own folder, then the mount's root) and what its
    ``RLIMIT_AS`` leaves (``proc``, ``cgroup``: where ``/proc`` and ``/sys/fs/cgroup`` are)."""
    found = []
    with suppress(OSError, ValueError, IndexError):
        meminfo = (proc / "meminfo").read_text()
        found.append(int(meminfo.split("MemAvailable:")[1].split()[0]) * 1024)
    own: dict[str, str] = {}
    with suppress(OSError, ValueError):
        for line in (proc / "self" / "cgroup").read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            if controllers == "" or "memory" in controllers.split(","):
                own["v2" if controllers == "" else "v1"] = where.strip("/")
    for version, root, limit, usage in (
        ("v2", cgroup, "memory.max", "memory.current"),
        ("v1", cgroup / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"),
    ):
        for folder in dict.fromkeys((root / own.get(version, ""), root)):
            with suppress(OSError):
                cap, used = ((folder / name).read_text().strip() for name in (limit, usage))
                if cap.isdigit() and used.isdigit() and int(cap) < 2**60:
                    found.append(max(0, int(cap) - int(used)))
    if not found:
        with suppress(ValueError, OSError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY and soft >= 0:
        used = 0
        with suppress(OSError, ValueError, IndexError):
            status = (proc / "self" / "status").read_text()
            used = int(status.split("VmSize:")[1].split()[0]) * 1024
        found.append(max(0, soft - used))
    return min(found) if found else None


def refusal(
    estimate: RunEstimate,
    available: int | None,
    fix: str = "lower --batch-size, --eval-batch-size or the model size",
) -> str | None:
    """Why the run should not start (None when it fits or nothing is known), with the figures
    and ``fix``, what to lower."""
    if available is None or estimate.total <= available:
        return None
    e = estimate
    return (
        f"the run would need about {human_bytes(e.total)} of memory ({e.parameters:,} "
        f"parameters with AdamW state {human_bytes(e.model)}, activations "
        f"{human_bytes(e.activations)}, data {human_bytes(e.data)}, process "
        f"{human_bytes(BASE_BYTES)}) but only {human_bytes(available)} is available; "
        f"{fix}, or pass --force to try anyway"
    )
