"""Storage formats behind one interface: Parquet (the Hub's) and Arrow IPC (``save_to_disk``).

Every table has ``id`` (int64) and ``tokens`` (a list of uint8, or uint16 when m > 256); probe
splits add ``source_id``, ``replaced``, ``probed`` and ``far_rule`` (:func:`probe_schema`).

>>> format_of(Path("data/cot/train-00000-of-00001.parquet")).name
'parquet'
"""

from __future__ import annotations

import glob
import json
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import posgen
from posgen.errors import UsageError, counted
from posgen.generator import (
    DEFAULT_BLOCK_ROWS,
    ProbeBlock,
    block_rows_for,
    generate_rows,
    probe_rows,
    storage_dtype,
)
from posgen.spec import TaskSpec, is_probe_split
from posgen.store.manifest import (
    ARROW_DATASET_DICT,
    ARROW_SPLIT_INFO,
    ARROW_SPLIT_STATE,
    CARD_NAME,
    DEFAULT_ROW_GROUP_BYTES,
    MANIFEST_NAME,
    SPLIT_GLOBS,
    FileEntry,
    Manifest,
    Shard,
    hf_config,
    rows_per,
)
from posgen.store.safety import durable_file, write_atomically

if TYPE_CHECKING:
    import datasets

READ_BATCH_TOKENS = 1 << 22  # tokens per record batch read back: bounds readers' memory


def read_batch_rows(length: int) -> int:
    """Rows of ``length`` tokens per record batch read back (at least one)."""
    return max(1, READ_BATCH_TOKENS // max(1, length))


PARQUET_OPTIONS: dict[str, Any] = {
    # zstd-1 over BYTE_STREAM_SPLIT tokens writes, reads and packs best (BENCHMARKS.md, "Parquet
    # settings"); ascending probe positions pack as deltas; only ``id`` has statistics.
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": False,
    "column_encoding": {
        "tokens.list.element": "BYTE_STREAM_SPLIT",
        "far_rule.list.element": "BYTE_STREAM_SPLIT",
        "replaced.list.element": "DELTA_BINARY_PACKED",
        "probed.list.element": "DELTA_BINARY_PACKED",
    },
    "write_statistics": ["id"],
}


def token_type(modulus: int) -> pa.DataType:
    return pa.uint8() if storage_dtype(modulus) == np.uint8 else pa.uint16()


def row_schema(
    modulus: int, metadata: dict[str, str] | None = None, probe: bool = False
) -> pa.Schema:
    """The schema of every POSGEN table (``probe``: of a probe split)."""
    token, position = pa.list_(token_type(modulus)), pa.list_(pa.uint32())
    columns = [("id", pa.int64()), ("tokens", token)]
    if probe:
        columns += [("source_id", pa.int64()), ("replaced", position)]
        columns += [("probed", position), ("far_rule", token)]
    return pa.schema([pa.field(n, t, nullable=False) for n, t in columns], metadata=metadata)


def probe_schema(modulus: int, metadata: dict[str, str] | None = None) -> pa.Schema:
    return row_schema(modulus, metadata, probe=True)


def split_schema(spec: TaskSpec, split: str, metadata: dict[str, str] | None = None) -> pa.Schema:
    return row_schema(spec.modulus, metadata, is_probe_split(split))


def numpy_array(values: np.ndarray) -> pa.Array:
    """A 1-d numpy array as an Arrow array over the same memory (``pa.array`` copies, and
    imports pandas).

    >>> numpy_array(np.arange(3, dtype=np.int32)).to_pylist()
    [0, 1, 2]
    """
    flat = np.ascontiguousarray(values)
    return pa.Array.from_buffers(
        pa.from_numpy_dtype(flat.dtype), flat.size, [None, pa.py_buffer(flat)]
    )


def _list_array(values: np.ndarray, offsets: np.ndarray, kind: pa.DataType) -> pa.ListArray:
    flat = numpy_array(values.astype(kind.value_type.to_pandas_dtype()))
    return pa.ListArray.from_arrays(numpy_array(offsets.astype(np.int32)), flat, type=kind)


def probe_table(block: ProbeBlock, schema: pa.Schema) -> pa.Table:
    """A table of the probe rows in ``block`` (ids = source ids)."""
    ids = numpy_array(np.arange(block.start, block.start + block.rows, dtype=np.int64))
    return pa.Table.from_arrays(
        [
            ids,
            token_lists(block.tokens, schema.field("tokens").type),
            ids,
            _list_array(block.replaced, block.replaced_offsets, schema.field("replaced").type),
            _list_array(block.probed, block.probed_offsets, schema.field("probed").type),
            _list_array(block.far_rule, block.probed_offsets, schema.field("far_rule").type),
        ],
        schema=schema,
    )


def rows_to_table(first_id: int, rows: np.ndarray, schema: pa.Schema) -> pa.Table:
    """A table over ``rows`` ``(n, length)``, ids ``first_id ..``, tokens not copied."""
    n = rows.shape[0]
    ids = numpy_array(np.arange(first_id, first_id + n, dtype=np.int64))
    return pa.Table.from_arrays(
        [ids, token_lists(rows, schema.field("tokens").type)], schema=schema
    )


def token_lists(rows: np.ndarray, kind: pa.DataType) -> pa.ListArray:
    """``rows`` ``(n, length)`` as a list array of type ``kind``, tokens not copied."""
    n, length = rows.shape
    if n * length >= 2**31:
        raise ValueError("a table holds fewer than 2**31 tokens; use smaller row groups")
    offsets = numpy_array(np.arange(0, (n + 1) * length, length, dtype=np.int32))
    values = numpy_array(np.ascontiguousarray(rows).reshape(-1))
    return pa.ListArray.from_arrays(offsets, values, type=kind)


def list_values(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """``(lengths, values)`` of a list column, the values not copied where they can be read."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not hasattr(array, "offsets"):
        raise ValueError(f"a column of {array.type}, not of lists")
    offsets = array.offsets.to_numpy()
    return np.diff(offsets), array.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]


def table_tokens(table: pa.Table) -> np.ndarray:
    """The ``tokens`` column as a ``(rows, length)`` array; rows must share one length."""
    lengths, values = list_values(table.column("tokens"))
    if len(lengths) == 0:
        return np.empty((0, 0), dtype=values.dtype)
    if lengths.min() != lengths.max():
        raise ValueError("rows have different lengths")
    return values.reshape(len(lengths), int(lengths[0]))


def open_writer(where: Path | BinaryIO, schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet writer with the project's settings."""
    return pq.ParquetWriter(
        str(where) if isinstance(where, Path) else where, schema, **PARQUET_OPTIONS
    )


def row_tables(
    spec: TaskSpec,
    split: str,
    start: int,
    stop: int,
    step: int,
    schema: pa.Schema,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> Iterator[pa.Table]:
    """Rows ``[start, stop)`` of ``split`` as tables of at most ``step`` rows (bounded memory).

    >>> spec = TaskSpec(task="cot", train_size=5)
    >>> [t.num_rows for t in row_tables(spec, "train", 0, 5, 2, row_schema(17))]
    [2, 2, 1]
    """
    for first in range(start, stop, step):
        last = min(stop, first + step)
        if is_probe_split(split):
            yield probe_table(probe_rows(spec, split, first, last, block_rows), schema)
        else:
            yield rows_to_table(first, generate_rows(spec, split, first, last, block_rows), schema)


def split_table(spec: TaskSpec, split: str) -> pa.Table:
    """A whole split as one Arrow table (in row-group sized chunks)."""
    schema = row_schema(spec.modulus, {"posgen.spec_id": spec.spec_id, "posgen.split": split})
    per_group = rows_per(DEFAULT_ROW_GROUP_BYTES, spec, split)
    step = block_rows_for(spec, spec.split_length(split), per_group=per_group)
    return pa.concat_tables(row_tables(spec, split, 0, spec.split_size(split), step, schema))


def to_dataset_dict(spec: TaskSpec) -> datasets.DatasetDict:
    """Every split of ``spec`` as a ``datasets.DatasetDict``, in memory, no disk.

    >>> dd = to_dataset_dict(TaskSpec(task="cot", train_size=4, val_size=2, test_size=2))
    >>> dd["train"].num_rows, len(dd["test"][0]["tokens"])
    (4, 256)
    """
    if not isinstance(spec, TaskSpec):
        hint = " (a benchmark: call it on each of bench.configs.values())"
        hint = hint if hasattr(spec, "configs") else ""
        raise TypeError(
            f"to_dataset_dict takes a TaskSpec, not a {type(spec).__name__}{hint}; "
            "e.g. to_dataset_dict(TaskSpec(task='cot'))"
        )
    import datasets
    from datasets.table import InMemoryTable

    return datasets.DatasetDict(
        {
            split: datasets.Dataset(
                InMemoryTable(split_table(spec, split)),
                split=datasets.NamedSplit(split),
                fingerprint=f"posgen-{spec.spec_id}-{split}",
            )
            for split in spec.split_names
        }
    )


Source = Path | pa.Buffer  # a shard's path, or its bytes already read and checked
Progress = Callable[[int], None]  # called with the number of tokens just written


class FormatUnsupported(UsageError, ValueError):
    """A file or folder in no format posgen reads, or a feature one format lacks."""


@dataclass(frozen=True)
class FileFacts:
    """What one shard holds, read from the file alone."""

    schema: pa.Schema
    rows: int
    tokens: int
    metadata: dict[str, str]
    problem: str | None = None  # what makes it no shard its readers take, whatever it holds


def hf_features(spec: TaskSpec, split: str = "train") -> dict[str, Any]:
    """The ``datasets`` features of a split, as ``dataset_info.json`` spells them.

    >>> hf_features(TaskSpec(task="cot"))["tokens"]
    {'feature': {'dtype': 'uint8', '_type': 'Value'}, '_type': 'List'}
    """

    def feature(kind: pa.DataType) -> dict[str, Any]:
        if pa.types.is_list(kind):
            return {"feature": feature(kind.value_type), "_type": "List"}
        return {"dtype": str(kind), "_type": "Value"}

    return {field.name: feature(field.type) for field in split_schema(spec, split)}


def feature_entry(field: pa.Field) -> dict[str, str]:
    """The ``datasets`` YAML form of one column (ints and lists of ints, as POSGEN writes).

    >>> [feature_entry(f) for f in row_schema(17)]
    [{'name': 'id', 'dtype': 'int64'}, {'name': 'tokens', 'list': 'uint8'}]
    """
    if pa.types.is_list(field.type):
        return {"name": field.name, "list": str(field.type.value_type)}
    return {"name": field.name, "dtype": str(field.type)}


class Format:
    """A storage format: how a shard is written, its ``facts`` and ``batches`` read back, its
    sidecars, and how ``datasets`` loads a folder or exactly the files named."""

    name: ClassVar[str]

    def split_glob(self, config: str, split: str) -> str:
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
        """Generate and write one shard atomically; its manifest entry (the bytes do not depend
        on ``block_rows``)."""
        length = spec.split_length(shard.split)
        with durable_file(root / shard.path) as sink:
            writer, schema, chunk = self.writer_for(sink, shard, spec, row_group_bytes)
            step = block_rows_for(spec, length, block_rows, chunk)
            with writer:
                for table in row_tables(spec, shard.split, shard.start, shard.stop, step, schema,
                                        block_rows):  # fmt: skip
                    writer.write_table(table, chunk)
                    if progress is not None:
                        progress(table.num_rows * length)
                    del table
        return FileEntry(
            path=shard.path,
            rows=shard.rows,
            first_id=shard.start,
            bytes=sink.size,
            sha256=sink.digest.hexdigest(),
        )

    def sidecars(self, manifest: Manifest) -> dict[str, bytes]:
        """Files besides the shards, manifest and card that ``datasets`` needs, by path."""
        return {}

    def write_sidecars(self, root: Path, manifest: Manifest) -> None:
        for path, body in self.sidecars(manifest).items():
            write_atomically(root / path, body)

    def is_cache(self, path: str) -> bool:
        """Whether ``path`` (relative to the folder) is a cache ``datasets`` wrote."""
        return False


class ParquetFormat(Format):
    """Parquet shards under ``data/``, found by ``load_dataset`` through the card."""

    name = "parquet"

    def writer_for(self, sink, shard, spec, row_group_bytes):  # fmt: skip
        provenance = {
            "posgen.version": posgen.__version__,
            "posgen.config": shard.config,
            "posgen.split": shard.split,
            "posgen.spec_id": spec.spec_id,
            "posgen.shard": f"{shard.index}/{shard.count}",
            "posgen.rows": f"{shard.start}:{shard.stop}",
        }
        schema = split_schema(spec, shard.split, provenance)
        return open_writer(sink, schema), schema, rows_per(row_group_bytes, spec, shard.split)

    def facts(self, path: Source) -> FileFacts:
        meta = pq.read_metadata(readable(path))
        schema = meta.schema.to_arrow_schema()
        leaves = [i for i in range(meta.num_columns)  # a column's index is not its field's
                  if meta.schema.column(i).path.split(".")[0] == "tokens"]  # fmt: skip
        tokens = sum(
            meta.row_group(g).column(i).num_values
            for g in range(meta.num_row_groups)
            for i in leaves
        )
        provenance = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
        return FileFacts(schema, meta.num_rows, tokens, provenance)

    def schema(self, path: Path) -> pa.Schema:
        return pq.read_schema(readable(path))

    def batches(self, path, rows, columns=("id", "tokens"), length=None, max_rows=None):
        handle = pq.ParquetFile(readable(path))
        present = [n for n in columns if n in handle.schema_arrow.names]
        yield from handle.iter_batches(batch_size=rows, columns=present)

    def load(self, root: Path, config: str | None) -> datasets.DatasetDict:
        return _load_dataset(fsspec_path(root), config)

    def load_files(self, files: dict[str, list[Path]]) -> datasets.DatasetDict:
        return _load_dataset(  # data_files are patterns: a folder "ds[1]" is escaped
            "parquet",
            data_files={s: [glob.escape(fsspec_path(p)) for p in ps] for s, ps in files.items()},
        )


def _load_dataset(*args: Any, **kwargs: Any) -> datasets.DatasetDict:
    """``datasets.load_dataset``; a cache it cannot make or write (an unwritable HOME) is one
    :class:`UsageError` that says how to move it."""
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except PermissionError as error:
        cache, failed = Path(datasets.config.HF_DATASETS_CACHE), Path(error.filename or "")
        if not error.filename or not (cache.is_relative_to(failed) or failed.is_relative_to(cache)):
            raise  # a data file, named by the caller's check
        raise UsageError(
            f"datasets cannot write its cache ({failed}: permission denied); set "
            "HF_DATASETS_CACHE (or HF_HOME) to a folder you can write"
        ) from None


def fsspec_path(path: Path) -> str:
    """``path`` as ``datasets`` takes it (through fsspec, which reads ``::`` as a chain of file
    systems: such a path is refused, not looked for elsewhere)."""
    if "::" in str(path):
        raise UsageError(
            f"{path}: datasets cannot read a path holding '::' (fsspec's separator of chained "
            "file systems); rename the folder"
        )
    return str(path)


def readable(source: Source) -> Any:
    """What pyarrow's readers take: the file opened by its bytes (pyarrow encodes a ``str``
    path as UTF-8: a non-ASCII name under an ASCII locale failed), or a reader over bytes."""
    if isinstance(source, pa.Buffer):
        return pa.BufferReader(source)
    return pa.OSFile(os.fsencode(source))


def _mapped(path: Path) -> pa.MemoryMappedFile:
    """``path`` memory-mapped, opened by its bytes (as :func:`readable`)."""
    return pa.memory_map(os.fsencode(path))


def open_ipc(path: Source) -> Any:
    """An Arrow IPC file or stream reader over ``path`` (memory-mapped) or bytes."""
    source = path if isinstance(path, pa.Buffer) else _mapped(path)
    try:
        return pa.ipc.open_file(source)
    except pa.ArrowInvalid:
        return pa.ipc.open_stream(source)


TOKEN_BYTES = 32  # a token may take once decompressed (four int64 list columns), plus
ROW_SLACK = 1024  # a row


def checked_batches(
    path: Path, length: int, max_rows: int | None = None
) -> Iterator[pa.RecordBatch]:
    """The record batches of an Arrow IPC file or stream, read as a stream once every header
    was checked, nothing decompressed: a batch may take :data:`TOKEN_BYTES` a token of rows of
    ``length`` tokens (plus :data:`ROW_SLACK` a row, 64 KiB a batch), the dictionaries together
    what the rows may, the file ``max_rows`` rows; else ``pyarrow.ArrowInvalid``."""
    row_bytes, rows = TOKEN_BYTES * length + ROW_SLACK, 0
    dictionaries = dictionary_bytes = 0
    for message in _messages(path):
        if message.type == "schema":
            continue
        if message.type not in ("record batch", "dictionary"):
            raise pa.ArrowInvalid(f"holds a {message.type} message, not a record batch")
        if message.type == "dictionary":  # its entries are no rows: it shares theirs, below
            dictionaries += 1
            dictionary_bytes += _batch_claim(message, dictionary=True)[1]
            continue
        claimed, size, _ = _batch_claim(message)
        rows += claimed
        if max_rows is not None and rows > max_rows:
            raise pa.ArrowInvalid(
                f"holds {counted(rows, 'row')} or more; the data has {max_rows:,}: not read"
            )
        if size > claimed * row_bytes + (1 << 16):
            raise pa.ArrowInvalid(
                f"a record batch of {counted(claimed, 'row')} would decompress to {size:,} bytes, "
                f"more than rows of {length:,} tokens may take ({row_bytes:,} bytes a row): "
                "not read"
            )
    if dictionary_bytes > rows * row_bytes + dictionaries * (1 << 16):
        raise pa.ArrowInvalid(
            f"its dictionaries would decompress to {dictionary_bytes:,} bytes, more than its "
            f"{counted(rows, 'row')} of {length:,} tokens may take ({row_bytes:,} bytes a row): "
            "not read"
        )
    reader = pa.ipc.open_stream(_source(path))
    _whole(reader.schema)
    for batch in reader:
        yield _whole(batch)


def stream_schema(path: Source) -> pa.Schema:
    """The schema of an Arrow IPC file's first message (not the footer's copy)."""
    message = next(iter(_messages(path)), None)
    if message is None or message.type != "schema":
        raise pa.ArrowInvalid("does not start with a schema")
    return _whole(pa.ipc.read_schema(message))


def _source(path: Source) -> pa.NativeFile:
    """``path`` mapped (or its bytes), at the start of its IPC stream (past a file's magic)."""
    source = pa.BufferReader(path) if isinstance(path, pa.Buffer) else _mapped(path)
    source.seek(8 if source.read(6) == b"ARROW1" else 0)
    return source


def _messages(path: Source) -> pa.ipc.MessageReader:
    return pa.ipc.MessageReader.open_stream(_source(path))


def _whole(value: Any) -> Any:
    """A schema or record batch validated whole: damage pyarrow meets only later is
    ``ArrowInvalid`` now."""
    try:
        schema = value.schema if isinstance(value, pa.RecordBatch) else value
        str(schema), schema.names, schema.metadata  # each decodes what it holds
        if isinstance(value, pa.RecordBatch):
            value.validate(full=True)
            value.columns  # noqa: B018 - wraps every column (an unknown type id: KeyError)
    except UnicodeDecodeError:
        raise pa.ArrowInvalid("a damaged schema: a name that is not UTF-8") from None
    except KeyError as error:
        raise pa.ArrowInvalid(f"a damaged schema: unknown type id {error}") from None
    return value


def read_ipc(path: Path, length: int, max_rows: int) -> pa.Table:
    """The whole file, read as :func:`checked_batches` reads it."""
    batches = list(checked_batches(path, length, max_rows))
    return pa.Table.from_batches(batches) if batches else stream_schema(path).empty_table()


def _batch_claim(message: pa.ipc.Message, dictionary: bool = False) -> tuple[int, int, list[int]]:
    """(rows, bytes once decompressed, each field node's length) of a record batch (or
    dictionary) message, from its flatbuffer header and the 8-byte size each compressed buffer
    starts with; uncompressed buffers count 0 (they are mapped)."""
    meta, body = message.metadata.to_pybytes(), memoryview(message.body or b"")

    def field(table: int, index: int) -> int | None:  # where the table's field lies, if set
        vtable = table - struct.unpack_from("<i", meta, table)[0]
        if 4 + 2 * index >= struct.unpack_from("<H", meta, vtable)[0]:
            return None
        at = struct.unpack_from("<H", meta, vtable + 4 + 2 * index)[0]
        return table + at if at else None

    def target(at: int | None) -> int:
        if at is None:
            raise ValueError("no such field")
        return at + struct.unpack_from("<I", meta, at)[0]

    try:
        batch = target(field(target(0), 2))
        if dictionary:
            batch = target(field(batch, 1))
        rows = struct.unpack_from("<q", meta, at)[0] if (at := field(batch, 0)) else 0
        nodes = target(field(batch, 1))  # FieldNode {length, null_count}
        count = struct.unpack_from("<I", meta, nodes)[0]
        lengths = [struct.unpack_from("<q", meta, nodes + 4 + 16 * i)[0] for i in range(count)]
        compressed = field(batch, 3) is not None
        buffers = target(field(batch, 2))
        total = 0
        for i in range(struct.unpack_from("<I", meta, buffers)[0]):
            offset, length = struct.unpack_from("<qq", meta, buffers + 4 + 16 * i)
            if offset < 0 or length < 0 or offset + length > len(body):
                raise ValueError("a buffer outside the message")
            stated = struct.unpack_from("<q", body, offset)[0] if compressed and length else 0
            if stated < -1:  # -1: stored uncompressed; pyarrow refuses the rest only after
                raise ValueError(f"a buffer of {stated:,} bytes")  # inflating the others
            total += length - 8 if stated == -1 else stated
        if rows < 0 or total < 0:
            raise ValueError("a negative size")
    except (struct.error, ValueError) as error:
        raise pa.ArrowInvalid(f"a damaged record batch header ({error})") from None
    return rows, total, lengths


def _nodes(kind: pa.DataType) -> int:
    """Field nodes a column of type ``kind`` has in a record batch: its own and its children's."""
    return 1 + sum(_nodes(kind.field(i).type) for i in range(kind.num_fields))


class ArrowFormat(Format):
    """Arrow IPC streams in ``save_to_disk`` folders, one per config (``load_from_disk``)."""

    name = "arrow"

    def writer_for(self, sink, shard, spec, row_group_bytes):  # fmt: skip
        info = json.dumps({"info": {"features": hf_features(spec, shard.split)}})
        schema = split_schema(spec, shard.split, {"huggingface": info})
        chunk = block_rows_for(spec, spec.split_length(shard.split))
        return pa.ipc.new_stream(sink, schema), schema, chunk

    def facts(self, path: Source) -> FileFacts:
        """Read from the batches' headers: nothing is decompressed."""
        schema, rows, tokens = stream_schema(path), 0, 0
        column = schema.get_field_index("tokens")
        kind = schema.field(column).type if column >= 0 else pa.null()
        listed = pa.types.is_list(kind) or pa.types.is_large_list(kind)
        listed = listed or pa.types.is_fixed_size_list(kind)  # each: one node for its values
        node = sum(_nodes(f.type) for f in list(schema)[:column]) + 1  # the tokens' values
        source = _source(path)
        ipc_file = source.tell() > 0  # past a file's 8-byte magic; a stream starts at 0
        for message in pa.ipc.MessageReader.open_stream(source):
            if message.type == "record batch":
                claimed, _, lengths = _batch_claim(message)
                rows += claimed
                tokens += lengths[node] if listed and node < len(lengths) else 0
        problem = "an Arrow IPC file (Feather), not the IPC stream load_from_disk reads"
        return FileFacts(schema, rows, tokens, {}, problem if ipc_file else None)

    def schema(self, path: Source) -> pa.Schema:
        return stream_schema(path) if isinstance(path, Path) else open_ipc(path).schema

    def batches(self, path, rows, columns=("id", "tokens"), length=None, max_rows=None):
        """With ``length`` (tokens a row), read as :func:`checked_batches` reads."""
        if length is not None and isinstance(path, Path):
            chunks: Iterator[pa.RecordBatch] = checked_batches(path, length, max_rows)
        else:
            reader = open_ipc(path)
            many = getattr(reader, "num_record_batches", None)
            chunks = (reader.get_batch(i) for i in range(many)) if many is not None else reader
        for batch in chunks:
            present = [n for n in columns if n in batch.schema.names]
            if present != batch.schema.names:
                batch = batch.select(present)
            for start in range(0, batch.num_rows, rows):
                yield batch.slice(start, rows)

    def sidecars(self, manifest: Manifest) -> dict[str, bytes]:
        out = {ARROW_DATASET_DICT.format(config=folder): {"splits": list(splits)}
               for folder, _, splits in manifest.hf_configs()}  # fmt: skip
        for folder, config, splits in manifest.hf_configs():
            spec = manifest.configs[config].spec
            for split, info in splits.items():
                where = {"config": folder, "split": split}
                out[ARROW_SPLIT_INFO.format(**where)] = {"features": hf_features(spec, split)}
                out[ARROW_SPLIT_STATE.format(**where)] = {
                    "_data_files": [{"filename": Path(f.path).name} for f in info.files],
                    "_fingerprint": f"posgen-{spec.spec_id}-{split}",
                    "_format_columns": None,
                    "_format_kwargs": {},
                    "_format_type": None,
                    "_output_all_columns": False,
                    "_split": split,
                }
        return {path: (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
                for path, body in out.items()}  # fmt: skip

    def is_cache(self, path: str) -> bool:
        """``CONFIG/SPLIT/cache-*.arrow``: what ``Dataset.map`` writes beside the files."""
        parts = Path(path).parts
        return len(parts) == 3 and parts[2].startswith("cache-") and parts[2].endswith(".arrow")

    def load(self, root: Path, config: str | None) -> datasets.DatasetDict:
        import datasets

        if config is None:  # the card's default config, as load_dataset's; else the first
            pattern = ARROW_DATASET_DICT.format(config="*")
            folders = sorted(Path(p).parent.name for p in Path(root).glob(pattern))
            default = datasets.get_dataset_default_config_name(fsspec_path(root))
            config = default if default in folders else folders[0]
        return datasets.load_from_disk(fsspec_path(root / config))

    def load_files(self, files: dict[str, list[Path]]) -> datasets.DatasetDict:
        import datasets

        return datasets.DatasetDict(
            {
                split: datasets.concatenate_datasets(
                    [datasets.Dataset.from_file(str(path)) for path in paths]
                )
                for split, paths in files.items()
            }
        )


FORMATS: dict[str, Format] = {f.name: f for f in (ParquetFormat(), ArrowFormat())}
DATA_SUFFIXES = (".parquet", ".arrow", ".feather")  # .feather is Arrow IPC too


def format_of(path: Path) -> Format:
    """The format of one data file, by its suffix (one of :data:`DATA_SUFFIXES`)."""
    return FORMATS["parquet" if Path(path).suffix.lower() == ".parquet" else "arrow"]


def manifest_format(manifest: Manifest) -> Format:
    return FORMATS[manifest.storage_format]


def written_paths(manifest: Manifest) -> set[str]:
    """Every file posgen writes into the dataset folder of ``manifest`` (relative paths): the
    manifest, the card, the data files and the format's sidecars."""
    paths = {MANIFEST_NAME, CARD_NAME, *(entry.path for _, _, entry in manifest.files())}
    return paths | set(manifest_format(manifest).sidecars(manifest))


def card_configs(manifest: Manifest) -> list[dict[str, Any]]:
    """The card's ``configs`` (what ``load_dataset`` reads), ``Manifest.default_config``
    marked default."""
    fmt = manifest_format(manifest)
    return [
        {
            "config_name": name,
            "data_files": [{"split": s, "path": fmt.split_glob(source, s)} for s in splits],
            **({"default": True} if name == manifest.default_config else {}),
        }
        for name, source, splits in manifest.hf_configs()
    ]


def check_features(storage: str, part: tuple[int, int] | None) -> None:
    """Refuse an unknown format, and ``--part`` with any but Parquet."""
    if storage not in FORMATS:
        raise FormatUnsupported(f"unknown format {storage!r}; formats: {', '.join(FORMATS)}")
    if part is not None and storage != "parquet":
        raise FormatUnsupported(f"--part writes Parquet only; drop --format {storage}")


def folder_format(root: Path, config: str | None) -> Format:
    """The format of an unchecked folder: Arrow IPC if it has a ``save_to_disk`` folder."""
    pattern = ARROW_DATASET_DICT.format(config=config or "*")
    return FORMATS["arrow"] if any(Path(root).glob(pattern)) else FORMATS["parquet"]
