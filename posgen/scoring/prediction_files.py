"""Prediction files (read, written, matched to data rows by ``id``) and model inputs.

Formats, by extension: ``.parquet`` and ``.arrow``/``.feather`` (an integer ``id`` column and
a list-of-integers ``predictions`` or ``tokens`` column), ``.jsonl`` (``{"id": 0,
"predictions": [...]}`` per line), ``.npy`` (2-D integers, row ``i`` for id ``i``). A row
holds ``L'`` predictions (seed window ignored) or ``L' - w``. Parquet and Arrow files that
posgen writes name the data they were made for (``made_for``: spec id, split).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "p.jsonl"
>>> write_predictions(path, np.array([1, 0]), np.array([[4, 5], [6, 7]]), modulus=17)
>>> read_predictions(path).tokens.tolist(), read_predictions(path).ids.tolist()
([[4, 5], [6, 7]], [1, 0])
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq

from posgen.errors import counted, machine_limit, not_utf8
from posgen.generator import storage_dtype
from posgen.scoring.metrics import (
    ScoringError,
    as_array,
    integer_array,
    outside_vocabulary,
    require_integers,
)
from posgen.spec import TaskSpec
from posgen.store.formats import PARQUET_OPTIONS, read_ipc, readable, token_type
from posgen.store.safety import durable_file

FORMATS: dict[str, str] = {  # file extension -> format
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".jsonl": "jsonl",
    ".npy": "npy",
}

PREDICTION_COLUMNS = ("predictions", "tokens")  # accepted names, preferred first
MADE_FOR_KEYS = (b"posgen.spec_id", b"posgen.split")  # schema metadata: the data it was made for


@dataclass(frozen=True)
class Predictions:
    """Rows of predictions (``tokens``, ``(rows, width)``) and the data id of each row."""

    ids: np.ndarray
    tokens: np.ndarray
    made_for: tuple[str, str] | None = None  # (spec id, split) the file names, if any


def file_format(path: Path) -> str:
    """The format of ``path`` from its extension; :class:`ScoringError` if unknown."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ScoringError(
            f"unknown predictions format {suffix or '(no extension)'!r}; "
            f"use one of {', '.join(FORMATS)}"
        )
    return FORMATS[suffix]


def read_predictions(path: Path, fits: tuple[int, int] | None = None) -> Predictions:
    """Read a predictions file; errors name ``path``. With ``fits`` (rows, positions of the
    data), a file that declares more is refused before it is decompressed."""
    if not isinstance(path, str | os.PathLike):
        raise ScoringError(f"predictions: a file's path, not {type(path).__name__}")
    path = Path(path)
    try:
        kind = file_format(path)
        if not path.is_file():
            kind = "a folder" if path.is_dir() else "a pipe or a device"
            raise ScoringError(f"not a regular file ({kind})" if path.exists() else "no such file")
        try:
            if kind == "npy":
                npy_layout(path)
                tokens = np.load(path, allow_pickle=False)
                return Predictions(np.arange(tokens.shape[0], dtype=np.int64), tokens)
            if kind == "jsonl":
                return _read_jsonl(path)
            if kind == "parquet":
                table = _read_parquet(path, fits)
            elif fits is not None:
                table = read_ipc(path, length=fits[1], max_rows=fits[0])
            else:
                table = feather.read_table(path)
        except (pa.ArrowException, OSError) as error:  # ArrowInvalid, NotImplemented, ...
            if machine_limit(error):  # ArrowMemoryError, no thread: a limit, not a bad file
                raise
            raise ScoringError(f"not a readable {kind} file: {_first_line(error)}") from None
        return _from_table(table)
    except ScoringError as error:
        raise ScoringError(f"{path}: {error}") from None


def _read_parquet(path: Path, fits: tuple[int, int] | None) -> pa.Table:
    """The ``id`` and predictions columns of a Parquet file (other columns are never read),
    its footer checked against ``fits`` first; without either column, its empty schema."""
    with pq.ParquetFile(readable(path)) as handle:
        names = handle.schema_arrow.names
        name = next((c for c in PREDICTION_COLUMNS if c in names), None)
        if "id" not in names or name is None or names.count("id") + names.count(name) > 2:
            return handle.schema_arrow.empty_table()  # _from_table names what is wrong
        meta = handle.metadata
        values = sum(
            meta.row_group(g).column(c).num_values
            for g in range(meta.num_row_groups)
            for c in range(meta.num_columns)
            if meta.row_group(g).column(c).path_in_schema.split(".")[0] == name
        )
        # twice the split's values at most: a row too long (an argmax of all L' + 1 logits)
        # is read, and the shape check names it, as for Arrow, .npy and .jsonl
        if fits is not None and (meta.num_rows > fits[0] or values > 2 * fits[0] * fits[1]):
            raise ScoringError(
                f"declares {counted(meta.num_rows, 'row')} of {values:,} values in all in "
                f"'{name}'; the data has {counted(fits[0], 'row')} of {fits[1]:,} positions"
            )
        return handle.read(columns=["id", name])


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


INT64 = (-(2**63), 2**63 - 1)


def npy_layout(path: Path) -> None:
    """Check a ``.npy`` header against the file's size before anything is allocated."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        start = handle.read(12)
        width = 2 if start[6:7] == b"\x01" else 4  # bytes of the header length (v1: 2)
        header_bytes = int.from_bytes(start[8 : 8 + width], "little") if len(start) >= 12 else 0
        if not start.startswith(b"\x93NUMPY") or 8 + width + header_bytes > size:
            raise ScoringError(
                f"not a readable npy file: no complete header ({size:,} bytes in all)"
            )
        handle.seek(0)
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        except (ValueError, OSError, SyntaxError, TypeError) as error:
            raise ScoringError(f"not a readable npy file: {_first_line(error)}") from None
        offset = handle.tell()
    if len(shape) != 2:
        raise ScoringError(f"expected a 2-D array (rows, positions), got shape {shape}")
    if 0 in shape:  # (2**31, 0) holds no bytes yet would make 2**31 row ids
        raise ScoringError(f"expected at least one row and one position, got shape {shape}")
    require_integers(dtype)
    need = shape[0] * shape[1] * dtype.itemsize
    if need != size - offset:
        raise ScoringError(
            f"the header claims shape {shape} of {dtype} ({need:,} bytes of data), "
            f"the file holds {size - offset:,}"
        )


def _read_jsonl(path: Path) -> Predictions:
    ids: list[int] = []
    rows: list[list[int]] = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if number == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise ScoringError("the file is UTF-16 text; write it as UTF-8")
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as error:
                raise ScoringError(f"line {number}: {not_utf8(raw, error)}") from None
            except RecursionError:  # the C decoder stops cleanly at the recursion limit
                raise ScoringError(
                    f"line {number}: nested too deeply to be a predictions row"
                ) from None
            except json.JSONDecodeError as error:
                raise ScoringError(f"line {number}: not valid JSON ({error.msg})") from None
            except ValueError:  # an integer of more digits than Python converts (4300)
                raise ScoringError(
                    f"line {number}: a number too long to be an id or a token"
                ) from None
            if not isinstance(record, dict) or "id" not in record:
                raise ScoringError(f"line {number}: expected an object with 'id' and predictions")
            name = next((c for c in PREDICTION_COLUMNS if c in record), None)
            values = record.get(name) if name else None
            row_id = record["id"]
            if not _is_int(row_id) or not isinstance(values, list):
                raise ScoringError(
                    f"line {number}: expected an integer 'id' and a list 'predictions'"
                )
            if rows and len(values) != len(rows[0]):
                raise ScoringError(
                    f"line {number}: row id {row_id} has {counted(len(values), 'prediction')}, "
                    f"earlier rows have {len(rows[0])}"
                )
            if not all(_is_int(v) for v in values):
                raise ScoringError(f"line {number}: predictions must be integers")
            if not all(INT64[0] <= v <= INT64[1] for v in (row_id, *values)):
                raise ScoringError(f"line {number}: an id or prediction is outside int64")
            ids.append(row_id)
            rows.append(values)
    width = len(rows[0]) if rows else 0
    tokens = np.array(rows, dtype=np.int64).reshape(len(rows), width)
    return Predictions(ids=np.array(ids, dtype=np.int64), tokens=tokens)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


LIST_TYPES = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list,
              pa.types.is_list_view, pa.types.is_large_list_view)  # fmt: skip


def _from_table(table: pa.Table) -> Predictions:
    names = table.column_names
    name = next((c for c in PREDICTION_COLUMNS if c in names), None)
    if "id" not in names or name is None:
        raise ScoringError(f"needs an 'id' column and a 'predictions' column; has {names}")
    repeated = next((c for c in ("id", name) if names.count(c) > 1), None)
    if repeated is not None:  # pyarrow's table.column(name) would raise a KeyError
        raise ScoringError(f"has {names.count(repeated)} columns named '{repeated}'; keep one")
    id_column = table.column("id")
    if not pa.types.is_integer(id_column.type) or id_column.null_count:
        raise ScoringError(f"'id' must be integers without nulls, got {id_column.type}")
    if id_column.type == pa.uint64() and len(id_column) and pc.max(id_column).as_py() > INT64[1]:
        raise ScoringError(f"'id' holds {pc.max(id_column).as_py()}, outside int64")
    column = table.column(name).combine_chunks()
    if not any(kind(column.type) for kind in LIST_TYPES):
        raise ScoringError(f"'{name}' must be a list of integers, got {column.type}")
    if not pa.types.is_integer(column.type.value_type):
        raise ScoringError(f"'{name}' must hold integers, got {column.type.value_type}")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(column)
    if column.null_count or values.null_count:
        raise ScoringError(f"'{name}' holds nulls")
    if lengths.size and lengths.min() != lengths.max():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise ScoringError(
            f"row id {id_column[row]} has {counted(int(lengths[row]), 'prediction')}, "
            f"row id {id_column[0]} has {lengths[0]}"
        )
    width = int(lengths[0]) if lengths.size else 0
    tokens = values.to_numpy(zero_copy_only=False).reshape(len(column), width)
    ids = id_column.to_numpy().astype(np.int64, copy=False)
    values = [(table.schema.metadata or {}).get(key) for key in MADE_FOR_KEYS]
    if any(value is None for value in values):
        return Predictions(ids=ids, tokens=tokens)
    try:
        made_for = tuple(value.decode("utf-8") for value in values)
    except UnicodeDecodeError:
        raise ScoringError("its posgen.spec_id or posgen.split metadata is not UTF-8") from None
    return Predictions(ids=ids, tokens=tokens, made_for=made_for)


def align_to_ids(ids: np.ndarray, predictions: np.ndarray, reference_ids: np.ndarray) -> np.ndarray:
    """``predictions`` reordered to ``reference_ids``; every data row exactly once.

    >>> align_to_ids(np.array([2, 0, 1]), np.array([[20], [0], [10]]), np.arange(3)).tolist()
    [[0], [10], [20]]
    """
    ids, reference_ids = _int64_ids(ids, "ids"), _int64_ids(reference_ids, "reference ids")
    predictions = np.asarray(predictions)
    if ids.ndim != 1 or predictions.ndim != 2 or predictions.shape[0] != ids.shape[0]:
        raise ScoringError(f"{ids.shape[0]} ids for predictions of shape {predictions.shape}")
    unique, counts = np.unique(ids, return_counts=True)
    if unique.size != ids.size:
        repeated = unique[counts > 1]
        raise ScoringError(
            f"{counted(repeated.size, 'id')} appear{'s' if repeated.size == 1 else ''} more than "
            f"once in the predictions (e.g. {_examples(repeated)})"
        )
    order = np.argsort(reference_ids, kind="stable")
    known = reference_ids[order]
    slot = np.searchsorted(known, ids).clip(0, max(known.size - 1, 0))
    found = known[slot] == ids if known.size else np.zeros(ids.shape, dtype=bool)
    if not found.all():
        unknown = ids[~found]
        raise ScoringError(
            f"{counted(unknown.size, 'prediction id')} {'is' if unknown.size == 1 else 'are'} not "
            f"in the data (e.g. {_examples(unknown)}); the data has {counted(known.size, 'row')}"
            + (f", ids {known[0]}..{known[-1]}" if known.size else "")
        )
    if ids.size != known.size:
        missing = np.setdiff1d(known, ids)
        raise ScoringError(
            f"predictions miss {missing.size} of {counted(known.size, 'row')} "
            f"(e.g. id{'s' * (missing.size > 1)} {_examples(missing)})"
        )
    out = np.empty_like(predictions)
    out[order[slot]] = predictions
    return out


def _int64_ids(value: Any, what: str) -> np.ndarray:
    """Ids as int64; a uint64 id past 2^63 - 1 is refused, never wrapped to a negative one."""
    ids = integer_array(value, what, "ids")
    if ids.size and ids.dtype.kind == "u" and int(ids.max()) > INT64[1]:
        raise ScoringError(f"{what}: id {int(ids.max())} is outside int64")
    return ids.astype(np.int64, copy=False)


def _examples(values: np.ndarray, count: int = 3) -> str:
    shown = ", ".join(str(int(v)) for v in values[:count])
    return shown + (", ..." if values.size > count else "")


def write_predictions(
    path: Path,
    ids: np.ndarray,
    tokens: np.ndarray,
    modulus: int,
    made_for: tuple[str, str] | None = None,
) -> None:
    """Write predictions atomically in the format of ``path``'s extension (``.npy``: ids
    0..n-1); Parquet and Arrow files record ``made_for`` (spec id, split)."""
    path = Path(path)
    try:
        kind = file_format(path)
    except ScoringError as error:
        raise ScoringError(f"{path}: {error}") from None
    if isinstance(modulus, bool) or not isinstance(modulus, int) or not 2 <= modulus <= 65536:
        raise ScoringError(f"{path}: modulus must be a spec's m, 2..65536; got {modulus!r}")
    if made_for is not None and not (
        isinstance(made_for, tuple)
        and len(made_for) == 2
        and all(isinstance(x, str) for x in made_for)
    ):
        raise ScoringError(f"{path}: made_for is a (spec id, split) pair; got {made_for!r}")
    raw_ids, tokens = np.asarray(ids), np.asarray(tokens)
    if raw_ids.ndim != 1 or (raw_ids.size and raw_ids.dtype.kind not in "iu"):
        raise ScoringError(f"{path}: ids must be integers, one per row; got {raw_ids.dtype}")
    if raw_ids.size and int(raw_ids.max()) > INT64[1]:
        raise ScoringError(f"{path}: id {int(raw_ids.max())} is outside int64")
    ids = raw_ids.astype(np.int64)
    if tokens.ndim != 2 or len(tokens) != len(ids) or tokens.dtype.kind not in "iu":
        raise ScoringError(
            f"{path}: predictions must be integers, one row per id ({len(ids)} ids; got "
            f"{tokens.dtype} of shape {tokens.shape})"
        )
    if tokens.size == 0:
        empty = "rows of no predictions" if len(ids) else "no rows to write"
        raise ScoringError(f"{path}: {empty} (shape {tokens.shape})")
    if np.unique(ids).size != ids.size:
        raise ScoringError(f"{path}: ids appear more than once; write each row once")
    if problem := outside_vocabulary(tokens, modulus, "prediction"):
        raise ScoringError(f"{path}: {problem}")
    if kind == "npy" and not np.array_equal(ids, np.arange(ids.size)):
        raise ScoringError(f"{path}: .npy rows must be ids 0..n-1 in order")
    with durable_file(path) as sink:  # a failed write leaves an older file whole
        if kind == "npy":
            np.save(sink, tokens.astype(storage_dtype(modulus)))
        elif kind == "jsonl":
            for row_id, row in zip(ids.tolist(), tokens.tolist(), strict=True):
                sink.write((json.dumps({"id": row_id, "predictions": row}) + "\n").encode())
        else:
            metadata = None if made_for is None else dict(zip(MADE_FOR_KEYS, made_for, strict=True))
            list_type = pa.list_(token_type(modulus))
            id_field = pa.field("id", pa.int64(), nullable=False)
            schema = pa.schema(
                [id_field, pa.field("predictions", list_type, nullable=False)], metadata=metadata
            )
            rows, width = tokens.shape
            values = pa.array(np.ascontiguousarray(tokens).reshape(-1), type=list_type.value_type)
            offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
            column = pa.ListArray.from_arrays(offsets, values, type=list_type)
            table = pa.Table.from_arrays([pa.array(ids, type=pa.int64()), column], schema=schema)
            if kind == "parquet":
                pq.write_table(table, sink, **PARQUET_OPTIONS)
            else:
                feather.write_feather(table, sink, compression="uncompressed")


IGNORE_INDEX = -100  # the label Hugging Face losses skip


def vocab_size(spec: TaskSpec) -> int:
    """Embedding rows a model needs: the m tokens and BOS (id m)."""
    if not isinstance(spec, TaskSpec):
        raise ScoringError(f"vocab_size takes a TaskSpec, not a {type(spec).__name__}")
    return spec.modulus + 1


def lm_arrays(tokens: np.ndarray, modulus: int, window: int) -> dict[str, np.ndarray]:
    """``input_ids``, ``labels``, ``attention_mask`` (int64, ``(rows, L + 1)``) for token rows.

    >>> lm_arrays(np.array([[0, 1, 2, 3, 6]]), modulus=17, window=4)["labels"].tolist()
    [[-100, -100, -100, -100, -100, 6]]
    """
    tokens = integer_array(tokens, "tokens")  # 0.5 was cut to 0
    if tokens.ndim != 2:
        raise ScoringError(f"tokens must be (rows, length), got shape {tokens.shape}")
    rows, length = tokens.shape
    for name, value in (("modulus", modulus), ("window", window)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ScoringError(f"{name} must be an integer, not {type(value).__name__}")
    modulus, window = int(modulus), int(window)
    if modulus < 2 or not 0 <= window <= length:
        raise ScoringError(
            f"need m >= 2 and a window in [0, {length}]; got m = {modulus}, w = {window}"
        )
    if problem := outside_vocabulary(tokens, modulus, "token"):  # m is BOS's id
        raise ScoringError(problem)
    input_ids = np.empty((rows, length + 1), dtype=np.int64)
    input_ids[:, 0] = modulus
    input_ids[:, 1:] = tokens
    labels = input_ids.copy()
    labels[:, : window + 1] = IGNORE_INDEX
    return {"input_ids": input_ids, "labels": labels, "attention_mask": np.ones_like(input_ids)}


@dataclass(frozen=True)
class LMInputs:
    """``tokens`` -> model inputs (vocabulary m + 1, BOS = m, labels -100 on BOS and the seed
    window), for single rows or ``ds.map(LMInputs.for_spec(spec), batched=True)``.

    >>> inputs = LMInputs(modulus=17, window=4)({"tokens": [0, 1, 2, 3, 6, 12]})
    >>> inputs["input_ids"], inputs["labels"]
    ([17, 0, 1, 2, 3, 6, 12], [-100, -100, -100, -100, -100, 6, 12])
    """

    modulus: int
    window: int

    @classmethod
    def for_spec(cls, spec: TaskSpec) -> LMInputs:
        return cls(modulus=spec.modulus, window=spec.window)

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        tokens = example["tokens"]
        if isinstance(tokens, pa.Array | pa.ChunkedArray):  # a dataset in the arrow format
            tokens = tokens.to_pylist()
        single = len(tokens) == 0 or np.ndim(tokens[0]) == 0  # one row, or a batch of rows
        rows = np.atleast_2d(integer_array(tokens, "tokens"))  # 0.5 was cut to 0
        arrays = lm_arrays(rows, self.modulus, self.window)
        return {name: (array[0] if single else array).tolist() for name, array in arrays.items()}


class NaNLogits(ScoringError):
    """Logits NaN at row ``row``, position ``t`` (argmax would read them as token 0)."""

    def __init__(self, row: int, t: int) -> None:
        super().__init__(
            f"logits are NaN at row {row}, t = {t}: there is no prediction to read there "
            "(an argmax would take the first NaN's token)"
        )
        self.row, self.t = row, t


def predictions_from_logits(logits: Any) -> np.ndarray:
    """Teacher-forced argmax predictions ``(rows, L)`` from logits ``(rows, L + 1, vocab)``
    (anything ``np.asarray`` accepts); index i predicts ``input_ids[i + 1]`` = x_i. Pass the
    m token logits, ``logits[..., :m]``, or an untrained model may predict BOS (id m). A NaN
    among a position's logits is :class:`NaNLogits` naming the first (+-inf are ordered).

    >>> logits = np.zeros((1, 3, 18)); logits[0, 0, 5] = logits[0, 1, 9] = 1
    >>> predictions_from_logits(logits).tolist()
    [[5, 9]]
    """
    array = as_array(logits, "logits")
    if array.ndim != 3 or 0 in array.shape:
        raise ScoringError(f"logits must be (rows, L + 1, vocab), got shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise ScoringError(f"logits must be real numbers, got dtype {array.dtype}")
    # Reduced whole, then cut: a reduction of the view array[:, :-1] would copy it whole.
    if array.dtype.kind == "f" and (nan := np.isnan(array.max(axis=-1)[:, :-1])).any():
        row, t = np.argwhere(nan)[0]  # max is NaN where any logit is
        raise NaNLogits(int(row), int(t))
    return np.ascontiguousarray(array.argmax(axis=-1)[:, :-1])
