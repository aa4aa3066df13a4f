"""The manifest ``posgen.json``, typed: every config's spec, the versions, the storage format,
and per split its rows, row length, OOD boundary and files (path, rows, first id, bytes,
sha256). No timestamps: the same spec gives the same bytes. :func:`read_manifest` is the only
reader; file paths stay inside the folder.

>>> FileEntry(path="/etc/passwd", rows=1, first_id=0, bytes=1, sha256="0" * 64)
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for FileEntry
path
  Value error, must be a relative path inside the dataset folder, got '/etc/passwd' ...
"""

from __future__ import annotations

import hashlib
import json
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
from posgen.errors import DataError, UsageError, problem_lines
from posgen.spec import MAX_LENGTH, MAX_ROWS, BenchmarkSpec, ConfigName, TaskSpec, probe_config
from posgen.store.layout import MANIFEST_NAME, Shard, unfinished
from posgen.store.safety import write_atomically

FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 64 * 2**20
"""A manifest larger than this is refused unread (a real one holds about 200 bytes a file)."""
MAX_FILES = 1_000_000
"""Files per split a manifest may list."""
STORAGE_NOTE = {"arrow": "arrow-ipc (datasets save_to_disk; load_from_disk(DIR/CONFIG))"}
"""The ``storage`` line of non-Parquet manifests (Parquet manifests record ``parquet``)."""


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class DamagedDataset(DataError, ValueError):
    """A dataset folder does not match its manifest; ``lines`` holds one problem each."""

    def __init__(self, root: Path, lines: list[str]) -> None:
        self.root = Path(root)
        self.problems = list(lines)
        super().__init__(f"{root} is damaged:\n" + "\n".join(lines))

    @property
    def lines(self) -> list[str]:
        return [" ".join(line.split()) for line in self.problems]

    @property
    def headline(self) -> str | None:  # type: ignore[override]
        return f"{self.root} is damaged; nothing was changed"


class NotADataset(UsageError, DamagedDataset):
    """The folder has no manifest at all: not a posgen dataset (a usage error, exit 2)."""

    @property
    def headline(self) -> str | None:  # type: ignore[override]
        return None


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def relative_path(value: str) -> str:
    """``value`` if it is a relative POSIX path without ``..``, else ``ValueError``.

    >>> relative_path("data/cot/train-00000-of-00001.parquet")
    'data/cot/train-00000-of-00001.parquet'
    >>> relative_path("data/../../x")
    Traceback (most recent call last):
    ...
    ValueError: must be a relative path inside the dataset folder, got 'data/../../x'
    """
    if (
        value.startswith("/")
        or "\\" in value
        or ":" in value
        or any(part in ("..", ".", "") for part in value.split("/"))
    ):
        raise ValueError(f"must be a relative path inside the dataset folder, got {value!r}")
    return value


class FileEntry(_Model):
    """One data file: where it is, which rows it holds, its size and checksum."""

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
            raise ValueError(f"the files hold {listed} rows, the split says {self.rows}")
        first = 0
        for f in self.files:
            if f.first_id != first:
                raise ValueError(f"{f.path}: first id {f.first_id}, expected {first}")
            first += f.rows
        return self


class ConfigEntry(_Model):
    """One config: its task spec, spec id and splits (exactly the spec's splits)."""

    spec_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    spec: TaskSpec
    splits: dict[str, SplitEntry] = Field(min_length=1, max_length=32)

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
        if set(self.splits) == set(spec.split_names) and spec.probe_names:
            raise ValueError(
                "no probe splits: written by a posgen older than the probe splits; regenerate "
                "it with `posgen generate --spec ... --overwrite`"
            )
        if set(self.splits) != set(names):
            raise ValueError(
                f"splits {', '.join(self.splits)} are not the spec's ({', '.join(names)})"
            )
        for name, split in self.splits.items():
            want = (spec.split_size(name), spec.split_length(name), spec.window)
            found = (split.rows, split.length, split.seed_window)
            if found != want or split.ood_boundary != spec.train_length:
                raise ValueError(
                    f"split {name}: {split.rows} rows of length {split.length}, the spec has "
                    f"{want[0]} of length {want[1]}"
                )
        return self

    @property
    def ordered_splits(self) -> dict[str, SplitEntry]:
        """The splits in spec order (train, validation, test, test_<L'>, probe, probe_<L'>)."""
        return {
            name: self.splits[name] for name in (*self.spec.split_names, *self.spec.probe_names)
        }


class BenchmarkEntry(_Model):
    """The benchmark's name, description and spec id."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    description: str = Field("", max_length=4000)
    spec_id: str = Field(pattern=r"^[0-9a-f]{16}$")


class Manifest(_Model):
    """The whole of ``posgen.json``; ``parquet`` for Parquet folders, ``storage`` otherwise."""

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
        return self

    @property
    def storage_format(self) -> str:
        """``"parquet"`` or ``"arrow"``: the format of the folder's data files."""
        if self.storage is None:
            return "parquet"
        return next(name for name, note in STORAGE_NOTE.items() if note == self.storage)

    @property
    def bench(self) -> BenchmarkSpec:
        """The benchmark spec this manifest records."""
        return BenchmarkSpec(
            name=self.benchmark.name,
            description=self.benchmark.description,
            configs={name: entry.spec for name, entry in self.configs.items()},
        )

    def hf_configs(self) -> list[tuple[str, str, dict[str, SplitEntry]]]:
        """``(datasets config, posgen config, splits)``: each config, then its probe config.

        A config's probe splits have other columns, and ``datasets`` gives all splits of one
        config one feature set, so they form the config ``<config>-probe``.
        """
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
    """The manifest of ``bench`` stored as the shards ``plan``, whose files have ``entries``."""
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


def write_manifest(root: Path, manifest: Manifest) -> Path:
    """Write ``root/posgen.json`` atomically (a temporary sibling, fsynced, renamed)."""
    path = Path(root) / MANIFEST_NAME
    write_atomically(path, manifest.to_json().encode())
    return path


def read_bounded(path: Path, limit: int, chunk: int = 1 << 20) -> bytes:
    """At most ``limit + 1`` bytes of ``path``, read a chunk at a time (memory follows the
    file's real size, not the limit)."""
    parts = []
    with open(path, "rb") as handle:
        while sum(map(len, parts)) <= limit and (block := handle.read(chunk)):
            parts.append(block)
    return b"".join(parts)[: limit + 1]


def read_manifest(root: str | Path) -> Manifest:
    """The manifest of the dataset folder ``root``, checked whole.

    Raises :class:`NotADataset` when ``root`` has no ``posgen.json`` and
    :class:`DamagedDataset` (one line per problem, each naming the file) when it cannot be
    read, is not JSON, does not fit the model, or records specs whose ids do not match.
    """
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
        reason = " ".join(str(error).split())[:200]
        raise DamagedDataset(root, [f"{path}: unreadable or not valid JSON ({reason})"]) from None
    if not isinstance(body, dict) or not isinstance(body.get("configs"), dict):
        raise DamagedDataset(root, [f"{path}: not a posgen manifest (no 'configs' table)"])
    try:
        manifest = Manifest.model_validate(body)
    except ValidationError as error:
        raise DamagedDataset(root, [f"{path}: {line}" for line in problem_lines(error)]) from None
    except RecursionError:
        raise DamagedDataset(root, [f"{path}: nested too deeply"]) from None
    return manifest
