"""A dataset folder's layout and its typed manifest ``posgen.json`` (:func:`read_manifest` is
its only reader). Where each row goes depends on the spec and the shard bytes only.

>>> plan = plan_split("cot", TaskSpec(task="cot"), "train", shard_bytes=300_000)
>>> [(s.start, s.stop) for s in plan], plan[1].path
([(0, 4687), (4687, 9374), (9374, 10000)], 'data/cot/train-00001-of-00003.parquet')
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    model_validator,
)

import posgen
from posgen.errors import DataError, UsageError, counted, problem_lines, shown
from posgen.spec import (
    MAX_LENGTH,
    MAX_ROWS,
    MAX_TEST_LENGTHS,
    BenchmarkSpec,
    ConfigName,
    TaskSpec,
    is_probe_split,
    probe_config,
    read_bounded,
)
from posgen.tasks import TASKS, op_names

MANIFEST_NAME = "posgen.json"
CARD_NAME = "README.md"
PARTS_DIR = ".posgen-parts"
SHARD_PATHS = {  # shard ``index`` of ``count`` of a split, per format
    "parquet": "data/{config}/{split}-{index:05d}-of-{count:05d}.parquet",
    "arrow": "{config}/{split}/data-{index:05d}-of-{count:05d}.arrow",
}
SPLIT_GLOBS = {
    "parquet": "data/{config}/{split}-*.parquet",
    "arrow": "{config}/{split}/data-*.arrow",
}
# the sidecars ``datasets.load_from_disk(DIR/CONFIG)`` reads next to Arrow IPC shards
ARROW_DATASET_DICT = "{config}/dataset_dict.json"
ARROW_SPLIT_INFO = "{config}/{split}/dataset_info.json"
ARROW_SPLIT_STATE = "{config}/{split}/state.json"
DEFAULT_SHARD_BYTES = 256 * 2**20  # raw token bytes per shard
DEFAULT_ROW_GROUP_BYTES = 4 * 2**20
MAX_PARTS = 99_999  # part records are named with five digits
_PART = re.compile(r"\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*")


def hf_config(config: str, split: str) -> str:
    """The ``datasets`` config holding ``split``: ``config``, or ``<config>-probe``."""
    return probe_config(config) if is_probe_split(split) else config


def part_record_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}.json"


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of one split, stored in the file ``path`` (relative)."""

    config: str
    split: str
    index: int
    count: int
    start: int
    stop: int
    path: str

    @property
    def rows(self) -> int:
        return self.stop - self.start


def rows_per(byte_budget: int, spec: TaskSpec, split: str) -> int:
    """How many rows of ``split`` fit ``byte_budget`` raw token bytes (at least one)."""
    return max(1, byte_budget // (spec.split_length(split) * spec.token_bytes))


def parse_part(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N <= MAX_PARTS``; ASCII digits only.

    >>> parse_part("2/3")
    (2, 3)
    >>> parse_part("\u0660/\u0662")  # Arabic-Indic digits are not ASCII
    Traceback (most recent call last):
    ...
    ValueError: expected I/N (e.g. 0/4), got '\u0660/\u0662'
    """
    match = _PART.fullmatch(text)
    if match is None:
        raise ValueError(f"expected I/N (e.g. 0/4), got {shown(text, 40)!r}")
    i, n = int(match[1]), int(match[2])
    if not 1 <= n <= MAX_PARTS or not 0 <= i < n:
        raise ValueError(f"part {text!r}: need 0 <= I < N <= {MAX_PARTS:,}")
    return i, n


def part_of(shards: list[Shard], index: int, count: int) -> list[Shard]:
    """The shards part ``index`` of ``count`` writes: every count-th shard in output order."""
    return shards[index::count]


def plan_split(
    config: str,
    spec: TaskSpec,
    split: str,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    storage: str = "parquet",
) -> list[Shard]:
    """The shards of one split, in order, named as format ``storage`` names them."""
    size = spec.split_size(split)
    per_shard = rows_per(shard_bytes, spec, split)
    count = -(-size // per_shard)
    return [
        Shard(
            config=config,
            split=split,
            index=i,
            count=count,
            start=i * per_shard,
            stop=min(size, (i + 1) * per_shard),
            path=SHARD_PATHS[storage].format(
                config=hf_config(config, split), split=split, index=i, count=count
            ),
        )
        for i in range(count)
    ]


def plan_benchmark(
    bench: BenchmarkSpec, shard_bytes: int = DEFAULT_SHARD_BYTES, storage: str = "parquet"
) -> list[Shard]:
    """Every shard of every split of every config, in output order."""
    return [
        shard
        for config, spec in bench.configs.items()
        for split in (*spec.split_names, *spec.probe_names)
        for shard in plan_split(config, spec, split, shard_bytes, storage)
    ]


def unfinished(root: Path) -> str | None:
    """Why ``root`` is not loadable yet when it is an unfinished part folder, else None."""
    staging = Path(root) / PARTS_DIR
    if (Path(root) / MANIFEST_NAME).exists() or not staging.is_dir():
        return None
    names = sorted(p.name for p in staging.glob("part-*-of-*.json"))
    count = names[0].removesuffix(".json").rpartition("-of-")[2].lstrip("0") if names else ""
    done = f" ({len(names)} of {count} parts written)" if count.isdigit() else ""
    return (
        f"{root} is an unfinished --part run{done}: write the missing parts, then "
        f"`posgen merge {root}`"
    )


# --- the manifest --------------------------------------------------------------------------

FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 64 * 2**20  # refused unread (a real one holds about 200 bytes a file)
MAX_FILES = 1_000_000  # files per split
# the ``storage`` line of non-Parquet manifests (Parquet manifests record ``parquet``)
STORAGE_NOTE = {"arrow": "arrow-ipc (datasets save_to_disk; load_from_disk(DIR/CONFIG))"}


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class DamagedDataset(DataError, ValueError):
    """A dataset folder does not match its manifest; ``lines`` holds one problem each."""

    def __init__(self, root: Path, lines: list[str], left: str = "nothing was changed") -> None:
        self.root, self.left = Path(root), left
        self.problems = list(lines)
        super().__init__(f"{root} is damaged:\n" + "\n".join(lines))

    @property
    def lines(self) -> list[str]:
        return [" ".join(line.split()) for line in self.problems]

    @property
    def headline(self) -> str | None:  # type: ignore[override]
        return f"{self.root} is damaged; {self.left}"


class NotADataset(UsageError, DamagedDataset):
    """The folder has no manifest at all: not a posgen dataset (a usage error, exit 2)."""

    def __init__(self, root: Path, lines: list[str], left: str = "nothing was changed") -> None:
        super().__init__(root, lines, left)
        self.args = ("\n".join(lines),)  # its lines: not 'ROOT is damaged', it never was one

    @property
    def headline(self) -> str | None:  # type: ignore[override]
        return None


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def relative_path(value: str) -> str:
    """``value`` if it is a relative POSIX path without ``..``, else ``ValueError``."""
    if (
        value.startswith("/")
        or "\\" in value
        or ":" in value
        or any(part in ("..", ".", "") for part in value.split("/"))
    ):
        raise ValueError(f"must be a relative path inside the dataset folder, got {value!r}")
    return value


class FileEntry(_Model):
    path: Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(relative_path)]
    rows: int = Field(ge=0, le=MAX_ROWS)
    first_id: int = Field(ge=0, le=MAX_ROWS)
    bytes: int = Field(ge=0, le=2**62)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SplitEntry(_Model):
    """One split: rows, row length, seed window, OOD boundary and its files in row order."""

    rows: int = Field(ge=0, le=MAX_ROWS)
    length: int = Field(ge=1, le=MAX_LENGTH)
    seed_window: int = Field(ge=1, le=MAX_LENGTH)
    ood_boundary: int = Field(ge=1, le=MAX_LENGTH)
    files: list[FileEntry] = Field(max_length=MAX_FILES)

    @model_validator(mode="after")
    def _files_cover_the_rows(self) -> SplitEntry:
        listed = sum(f.rows for f in self.files)
        if listed != self.rows:
            raise ValueError(f"the files hold {counted(listed, 'row')}, the split says {self.rows}")
        first = 0
        for f in self.files:
            if f.first_id != first:
                raise ValueError(f"{shown(f.path, 100)}: first id {f.first_id}, expected {first}")
            first += f.rows
        return self


class ConfigEntry(_Model):
    spec_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    spec: TaskSpec
    splits: dict[str, SplitEntry] = Field(min_length=1, max_length=2 + 2 * MAX_TEST_LENGTHS)

    @field_serializer("spec")
    def _canonical(self, spec: TaskSpec) -> dict[str, Any]:
        return spec.canonical()

    @model_validator(mode="after")
    def _splits_of_the_spec(self) -> ConfigEntry:
        spec = self.spec
        if self.spec_id != spec.spec_id:
            raise ValueError(
                f"spec_id {self.spec_id!r} does not match its spec ({spec.spec_id}); "
                "the manifest was edited"
            )
        names = (*spec.split_names, *spec.probe_names)
        if set(self.splits) != set(names):
            raise ValueError(
                f"splits {shown(', '.join(self.splits), 100)} are not the spec's "
                f"({', '.join(names)})"
            )
        for name, split in self.splits.items():
            want = (spec.split_size(name), spec.split_length(name), spec.window)
            found = (split.rows, split.length, split.seed_window)
            if found != want or split.ood_boundary != spec.train_length:
                raise ValueError(
                    f"split {name}: {counted(split.rows, 'row')} of length {split.length}, the "
                    f"spec has {want[0]} of length {want[1]}"
                )
        return self

    @property
    def ordered_splits(self) -> dict[str, SplitEntry]:
        return {
            name: self.splits[name] for name in (*self.spec.split_names, *self.spec.probe_names)
        }


class BenchmarkEntry(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    description: str = Field("", max_length=4000)
    spec_id: str = Field(pattern=r"^[0-9a-f]{16}$")


class Manifest(_Model):
    """``posgen.json``: ``parquet`` options for Parquet folders, a ``storage`` line otherwise."""

    format: Literal["posgen-dataset"] = "posgen-dataset"
    format_version: Literal[1] = FORMAT_VERSION
    posgen_version: str = Field(min_length=1, max_length=64)
    libraries: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=64)]] = (
        Field(default_factory=dict, max_length=16)
    )
    parquet: dict[str, Any] | None = None
    benchmark: BenchmarkEntry
    configs: dict[ConfigName, ConfigEntry] = Field(min_length=1, max_length=64)
    storage: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _one_storage(self) -> Manifest:
        recorded, actual = self.benchmark.spec_id, self.bench.spec_id
        if recorded != actual:
            raise ValueError(
                f"benchmark spec_id {recorded!r} does not match its specs ({actual}); "
                "the manifest was edited"
            )
        if (self.parquet is None) == (self.storage is None):
            raise ValueError("a manifest records either 'parquet' options or a 'storage' line")
        if self.storage is not None and self.storage not in STORAGE_NOTE.values():
            raise ValueError(f"unknown storage {self.storage!r}")
        for config, entry in self.configs.items():  # the card and the sidecars find files by
            for split, info in entry.splits.items():  # path: one elsewhere is another split's
                for index, item in enumerate(info.files):
                    where = {"config": hf_config(config, split), "split": split}
                    path = SHARD_PATHS[self.storage_format].format(
                        **where, index=index, count=len(info.files)
                    )
                    if item.path != path:
                        raise ValueError(
                            f"{config}/{split} lists {shown(item.path, 100)} where its file "
                            f"{index} is {path} (load_dataset would read it as another split)"
                        )
        return self

    @property
    def storage_format(self) -> str:
        if self.storage is None:
            return "parquet"
        return next(name for name, note in STORAGE_NOTE.items() if note == self.storage)

    @property
    def bench(self) -> BenchmarkSpec:
        return BenchmarkSpec(
            name=self.benchmark.name,
            description=self.benchmark.description,
            configs={name: entry.spec for name, entry in self.configs.items()},
        )

    @property
    def default_config(self) -> str:
        """The config loaded when none is named: the one named ``default`` (``datasets`` takes
        that name as the default, and refuses two), else the first."""
        return "default" if "default" in self.configs else next(iter(self.configs))

    def hf_configs(self) -> list[tuple[str, str, dict[str, SplitEntry]]]:
        """``(datasets config, posgen config, splits)``: each config, then ``<config>-probe``."""
        return [
            (probe_config(name) if probe else name, name, {n: entry.splits[n] for n in names})
            for name, entry in self.configs.items()
            for probe, names in ((False, entry.spec.split_names), (True, entry.spec.probe_names))
            if names
        ]

    def files(self, configs: list[str] | None = None) -> list[tuple[str, str, FileEntry]]:
        """``(config, split, entry)`` of every listed file, in output order."""
        return [
            (name, split, item)
            for name, entry in self.configs.items()
            if configs is None or name in configs
            for split, info in entry.ordered_splits.items()
            for item in info.files
        ]

    def to_json(self) -> str:
        """The file's text: two-space indent, keys in a fixed order, trailing newline."""
        body = self.model_dump(mode="json")
        for optional in ("parquet", "storage"):
            if body[optional] is None:
                del body[optional]
        return json.dumps(body, indent=2) + "\n"


def build_manifest(
    bench: BenchmarkSpec,
    plan: list[Shard],
    entries: list[FileEntry],
    storage: str,
    parquet_options: dict[str, Any],
) -> Manifest:
    """The manifest of ``bench`` stored as the shards ``plan`` with file ``entries``."""
    files: dict[tuple[str, str], list[FileEntry]] = {}
    for shard, entry in zip(plan, entries, strict=True):
        files.setdefault((shard.config, shard.split), []).append(entry)
    return Manifest(
        posgen_version=posgen.__version__,
        libraries={"numpy": np.__version__, "pyarrow": pa.__version__},
        parquet=parquet_options if storage == "parquet" else None,
        storage=STORAGE_NOTE.get(storage),
        benchmark=BenchmarkEntry(
            name=bench.name, description=bench.description, spec_id=bench.spec_id
        ),
        configs={
            config: ConfigEntry(
                spec_id=spec.spec_id,
                spec=spec,
                splits={
                    split: SplitEntry(
                        rows=spec.split_size(split),
                        length=spec.split_length(split),
                        seed_window=spec.window,
                        ood_boundary=spec.train_length,
                        files=files.get((config, split), []),
                    )
                    for split in (*spec.split_names, *spec.probe_names)
                },
            )
            for config, spec in bench.configs.items()
        },
    )


def read_manifest(root: str | Path) -> Manifest:
    """The manifest of ``root``, checked whole (:class:`NotADataset`, :class:`DamagedDataset`)."""
    root = Path(root)
    path = root / MANIFEST_NAME
    try:
        raw = read_bounded(path, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        why = unfinished(root) or f"{root} has no {MANIFEST_NAME}: not a posgen dataset"
        raise NotADataset(root, [why]) from None
    except NotADirectoryError:
        raise NotADataset(root, [f"{root}: not a folder; not a posgen dataset"]) from None
    except PermissionError:
        raise  # not damage: the user may not read it (the CLI says so, exit 2)
    except OSError as error:
        raise DamagedDataset(root, [f"{path}: unreadable ({error.strerror or error})"]) from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise DamagedDataset(root, [f"{path}: larger than {MAX_MANIFEST_BYTES:,} bytes"])
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = shown(error)
        raise DamagedDataset(root, [f"{path}: unreadable or not valid JSON ({reason})"]) from None
    if not isinstance(body, dict) or not isinstance(body.get("configs"), dict):
        raise DamagedDataset(root, [f"{path}: not a posgen manifest (no 'configs' table)"])
    try:
        manifest = Manifest.model_validate(body)
    except ValidationError as error:
        lines = [f"{path}: {line}" for line in problem_lines(error)]
        if line := unregistered(body, path, "a dataset"):
            lines.append(line)
        raise DamagedDataset(root, lines) from None
    except RecursionError:
        raise DamagedDataset(root, [f"{path}: nested too deeply"]) from None
    return manifest


def unregistered(body: dict[str, Any], path: object, what: str) -> str | None:
    """The line naming the tasks and ops the raw manifest ``body`` names that this process has
    not registered (``what``: a dataset, a run), or None.

    >>> print(unregistered({"configs": {"x": {"spec": {"task": "third"}}}}, "p", "a run"))
    p: task 'third' not registered in this process: a run of a task or op of your own is read \
where it is registered (posgen.register_task, posgen.register_op), as it was written; the \
posgen command imports the modules named in POSGEN_TASKS (POSGEN_TASKS=mytask PYTHONPATH=. \
posgen ...)
    """
    names = {"task": set(TASKS), "op": set(op_names())}
    found: dict[str, None] = {}
    for entry in body.get("configs", {}).values():
        spec = entry.get("spec") if isinstance(entry, dict) else None
        for field, known in names.items():
            value = spec.get(field) if isinstance(spec, dict) else None
            if isinstance(value, str) and value not in known:
                found[f"{field} {shown(repr(value), 80)}"] = None
    if not found:
        return None
    return (
        f"{path}: {' and '.join(found)} not registered in this process: {what} of a task or op "
        "of your own is read where it is registered (posgen.register_task, posgen.register_op), "
        "as it was written; the posgen command imports the modules named in POSGEN_TASKS "
        "(POSGEN_TASKS=mytask PYTHONPATH=. posgen ...)"
    )
