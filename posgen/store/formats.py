"""Storage formats behind one interface: Parquet (the Hub's) and Arrow IPC (``save_to_disk``).

A :class:`Format` knows its shard suffix and path template (from :mod:`posgen.store.layout`),
how to write one shard, how to read a shard's facts and record batches back, which sidecar
files it needs, and how ``datasets`` loads it. Everything else (the writer, the check, the
card, validate, scoring, ``posgen.load``) is written once against this interface, so a
command works on both formats or on neither.

>>> FORMATS["parquet"].suffix, FORMATS["arrow"].suffix
('.parquet', '.arrow')
>>> format_of(Path("data/cot/train-00000-of-00001.parquet")).name
'parquet'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

import posgen
from posgen.arrow_io import PARQUET_OPTIONS, open_writer, row_tables, split_schema
from posgen.errors import UsageError
from posgen.generator import DEFAULT_BLOCK_ROWS, block_rows_for
from posgen.spec import TaskSpec, is_probe_split
from posgen.store.layout import (
    ARROW_DATASET_DICT,
    ARROW_SPLIT_INFO,
    ARROW_SPLIT_STATE,
    SPLIT_GLOBS,
    Shard,
    hf_config,
    rows_per,
)
from posgen.store.manifest import FileEntry, Manifest
from posgen.store.safety import HashingFile, durable_file, write_atomically

if TYPE_CHECKING:
    import datasets

Source = Path | pa.Buffer
"""A shard to read: its path, or its bytes already read (and checked) into memory."""
Progress = Callable[[int], None]
"""Called with the number of tokens just written."""


class FormatUnsupported(UsageError, ValueError):
    """A file or folder in no format posgen reads, or a feature one format lacks."""


@dataclass(frozen=True)
class FileFacts:
    """What one shard holds, read from the file alone: schema, rows, tokens, provenance."""

    schema: pa.Schema
    rows: int
    tokens: int
    metadata: dict[str, str]


def shard_metadata(shard: Shard, spec: TaskSpec) -> dict[str, str]:
    """Provenance stored in every Parquet file's schema metadata."""
    return {
        "posgen.version": posgen.__version__,
        "posgen.config": shard.config,
        "posgen.split": shard.split,
        "posgen.spec_id": spec.spec_id,
        "posgen.shard": f"{shard.index}/{shard.count}",
        "posgen.rows": f"{shard.start}:{shard.stop}",
    }


def file_entry(shard: Shard, sink: HashingFile) -> FileEntry:
    """The manifest entry of a shard written through ``sink``."""
    return FileEntry(
        path=shard.path,
        rows=shard.rows,
        first_id=shard.start,
        bytes=sink.size,
        sha256=sink.digest.hexdigest(),
    )


def hf_features(spec: TaskSpec, split: str = "train") -> dict[str, Any]:
    """The ``datasets`` features of a split's table, as ``dataset_info.json`` spells them."""
    token = "uint8" if spec.token_bytes == 1 else "uint16"

    def values(dtype: str) -> dict[str, Any]:
        return {"feature": {"dtype": dtype, "_type": "Value"}, "_type": "List"}

    features = {"id": {"dtype": "int64", "_type": "Value"}, "tokens": values(token)}
    if is_probe_split(split):
        features["source_id"] = {"dtype": "int64", "_type": "Value"}
        features["replaced"] = values("uint32")
        features["probed"] = values("uint32")
        features["far_rule"] = values(token)
    return features


class Format:
    """One storage format; subclasses fill in the file-level parts."""

    name: ClassVar[str]
    suffix: ClassVar[str]

    def split_glob(self, config: str, split: str) -> str:
        """The ``data_files`` pattern of a split in the card (matches exactly its shards)."""
        return SPLIT_GLOBS[self.name].format(config=hf_config(config, split), split=split)

    def write_shard(
        self,
        root: Path,
        shard: Shard,
        spec: TaskSpec,
        row_group_bytes: int,
        block_rows: int = DEFAULT_BLOCK_ROWS,
        progress: Progress | None = None,
    ) -> FileEntry:
        """Generate and write one shard (temporary name, fsync, rename); its manifest entry."""
        raise NotImplementedError

    def facts(self, path: Source) -> FileFacts:
        """Schema, rows, tokens and provenance of one shard (raises on unreadable files)."""
        raise NotImplementedError

    def schema(self, path: Path) -> pa.Schema:
        """The file's Arrow schema, without reading its data."""
        raise NotImplementedError

    def batches(
        self, path: Source, rows: int, columns: tuple[str, ...] = ("id", "tokens")
    ) -> Iterator[pa.RecordBatch]:
        """The shard's ``columns`` (those it has) as record batches of at most ``rows`` rows."""
        raise NotImplementedError

    def write_sidecars(self, root: Path, manifest: Manifest) -> None:
        """Files besides the shards, manifest and card that the format needs."""

    def parquet_options(self) -> dict[str, Any] | None:
        """What the manifest records of the encoding (Parquet only)."""
        return None

    def load(self, root: Path, config: str | None) -> datasets.DatasetDict:
        """Every split of ``config`` as ``datasets`` loads it from ``root``."""
        raise NotImplementedError


class ParquetFormat(Format):
    """Parquet shards under ``data/``, found by ``load_dataset`` through the card's configs."""

    name = "parquet"
    suffix = ".parquet"

    def write_shard(self, root, shard, spec, row_group_bytes, block_rows=DEFAULT_BLOCK_ROWS,
                    progress=None):  # fmt: skip
        """Row groups start at ``shard.start`` + multiples of the group size, whatever the
        block, so the bytes depend on the shard and the spec only."""
        schema = split_schema(spec, shard.split, shard_metadata(shard, spec))
        length = spec.split_length(shard.split)
        per_group = rows_per(row_group_bytes, spec, shard.split)
        step = block_rows_for(spec, length, block_rows, per_group)
        with durable_file(root / shard.path) as sink, open_writer(sink, schema) as writer:
            for table in row_tables(spec, shard.split, shard.start, shard.stop, step, schema,
                                    block_rows):  # fmt: skip
                writer.write_table(table, row_group_size=per_group)
                if progress is not None:
                    progress(table.num_rows * length)
                del table
        return file_entry(shard, sink)

    def facts(self, path: Source) -> FileFacts:
        meta = pq.read_metadata(_readable(path))
        schema = meta.schema.to_arrow_schema()
        column = schema.get_field_index("tokens")
        tokens = 0
        if column >= 0:
            tokens = sum(
                meta.row_group(i).column(column).num_values for i in range(meta.num_row_groups)
            )
        provenance = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
        return FileFacts(schema, meta.num_rows, tokens, provenance)

    def schema(self, path: Path) -> pa.Schema:
        return pq.read_schema(path)

    def batches(self, path, rows, columns=("id", "tokens")):  # fmt: skip
        handle = pq.ParquetFile(_readable(path))
        present = [n for n in columns if n in handle.schema_arrow.names]
        yield from handle.iter_batches(batch_size=rows, columns=present)

    def parquet_options(self) -> dict[str, Any] | None:
        return PARQUET_OPTIONS

    def load(self, root: Path, config: str | None) -> datasets.DatasetDict:
        import datasets

        return datasets.load_dataset(str(root), config)


def _readable(source: Source) -> Any:
    """What pyarrow's readers take: the path, or a reader over bytes already in memory."""
    return pa.BufferReader(source) if isinstance(source, pa.Buffer) else source


def open_ipc(path: Source) -> Any:
    """An Arrow IPC file or stream reader over ``path`` (memory-mapped) or bytes in memory."""
    source = path if isinstance(path, pa.Buffer) else pa.memory_map(str(path))
    try:
        return pa.ipc.open_file(source)
    except pa.ArrowInvalid:
        return pa.ipc.open_stream(source)


class ArrowFormat(Format):
    """Arrow IPC streams in ``save_to_disk`` folders, one per config (``load_from_disk``).

    Writing IPC is a copy of the token buffer (no Parquet encoding), faster than Parquet
    (see ``make bench``); files hold 1 byte per uint8 token, uncompressed (Parquet with byte
    stream split and zstd-1: about 0.5 for m = 17).
    """

    name = "arrow"
    suffix = ".arrow"

    def write_shard(self, root, shard, spec, row_group_bytes, block_rows=DEFAULT_BLOCK_ROWS,
                    progress=None):  # fmt: skip
        """Record batches of one generator block (:func:`~posgen.generator.block_rows_for`
        at the default block size) from ``shard.start``, whatever ``block_rows``, so the
        bytes depend on the shard and the spec only."""
        info = json.dumps({"info": {"features": hf_features(spec, shard.split)}})
        schema = split_schema(spec, shard.split, {"huggingface": info})
        length = spec.split_length(shard.split)
        per_batch = block_rows_for(spec, length)
        step = block_rows_for(spec, length, block_rows, per_batch)
        with durable_file(root / shard.path) as sink, pa.ipc.new_stream(sink, schema) as writer:
            for table in row_tables(spec, shard.split, shard.start, shard.stop, step, schema,
                                    block_rows):  # fmt: skip
                writer.write_table(table, max_chunksize=per_batch)
                if progress is not None:
                    progress(table.num_rows * length)
        return file_entry(shard, sink)

    def facts(self, path: Source) -> FileFacts:
        reader = open_ipc(path)
        rows = tokens = 0
        for batch in reader:
            rows += batch.num_rows
            column = batch.schema.get_field_index("tokens")
            if column >= 0:
                tokens += len(batch.column(column).flatten())
        return FileFacts(reader.schema, rows, tokens, {})

    def schema(self, path: Path) -> pa.Schema:
        return open_ipc(path).schema

    def batches(self, path, rows, columns=("id", "tokens")):  # fmt: skip
        reader = open_ipc(path)
        many = getattr(reader, "num_record_batches", None)
        chunks = (reader.get_batch(i) for i in range(many)) if many is not None else reader
        for batch in chunks:
            present = [n for n in columns if n in batch.schema.names]
            if present != batch.schema.names:
                batch = batch.select(present)
            for start in range(0, batch.num_rows, rows):
                yield batch.slice(start, rows)

    def write_sidecars(self, root: Path, manifest: Manifest) -> None:
        for folder, config, splits in manifest.hf_configs():
            spec = manifest.configs[config].spec
            _dump(root / ARROW_DATASET_DICT.format(config=folder), {"splits": list(splits)})
            for split, info in splits.items():
                names = [Path(f.path).name for f in info.files]
                where = {"config": folder, "split": split}
                features = hf_features(spec, split)
                _dump(root / ARROW_SPLIT_INFO.format(**where), {"features": features})
                _dump(
                    root / ARROW_SPLIT_STATE.format(**where),
                    {
                        "_data_files": [{"filename": name} for name in names],
                        "_fingerprint": f"posgen-{spec.spec_id}-{split}",
                        "_format_columns": None,
                        "_format_kwargs": {},
                        "_format_type": None,
                        "_output_all_columns": False,
                        "_split": split,
                    },
                )

    def load(self, root: Path, config: str | None) -> datasets.DatasetDict:
        import datasets

        if config is None:  # the first config's folder, as load_dataset's default
            config = sorted(Path(p).parent.name for p in Path(root).glob(
                ARROW_DATASET_DICT.format(config="*")))[0]  # fmt: skip
        return datasets.load_from_disk(str(root / config))


def _dump(path: Path, body: dict[str, Any]) -> None:
    write_atomically(path, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())


FORMATS: dict[str, Format] = {f.name: f for f in (ParquetFormat(), ArrowFormat())}
"""Every storage format by name (the ``--format`` choices)."""
DATA_SUFFIXES = (".parquet", ".arrow", ".feather")
"""Data files a folder without a manifest may hold (``.feather`` is Arrow IPC too)."""


def format_of(path: Path) -> Format:
    """The format of one data file, by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return FORMATS["parquet"]
    if suffix in (".arrow", ".feather"):
        return FORMATS["arrow"]
    raise FormatUnsupported(f"{path} is not a .parquet, .arrow or .feather file")


def manifest_format(manifest: Manifest) -> Format:
    """The format of a dataset folder's files."""
    return FORMATS[manifest.storage_format]


def check_features(storage: str, part: tuple[int, int] | None) -> None:
    """Refuse what a format cannot do, in one place: ``--part`` runs write Parquet only."""
    if storage not in FORMATS:
        raise FormatUnsupported(f"unknown format {storage!r}; formats: {', '.join(FORMATS)}")
    if part is not None and storage != "parquet":
        raise FormatUnsupported(f"--part writes Parquet only; drop --format {storage}")


def folder_format(root: Path, config: str | None) -> Format:
    """The format of an unchecked folder, by its files: Arrow IPC when ``config`` (or any
    config) has a ``save_to_disk`` folder, else Parquet."""
    pattern = ARROW_DATASET_DICT.format(config=config or "*")
    return FORMATS["arrow"] if any(Path(root).glob(pattern)) else FORMATS["parquet"]
