"""Check 2, schema: column types, one fixed row length per split, ids, tokens in [0, m).

:func:`decode_batch` turns an Arrow batch into a ``(rows, length)`` array of the rows that
have the split's length, and tallies what is wrong with the others.

>>> import pyarrow as pa
>>> batch = pa.record_batch({"tokens": pa.array([[0, 1, 2], [3, 4], [5, 17, 6]],
...                                              pa.list_(pa.uint8()))})
>>> d = decode_batch(batch, length=3, modulus=17, first_id=0)
>>> d.tokens.tolist(), d.bad_length, d.out_of_range, d.first_out_of_range
([[0, 1, 2], [5, 17, 6]], 1, 1, (2, 1, 17))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from posgen.store.formats import token_type


@dataclass
class Decoded:
    """One batch: ids and tokens of the rows with the right length, and what was wrong."""

    ids: np.ndarray
    tokens: np.ndarray
    rows: int
    bad_length: int = 0
    first_bad_length: tuple[int, int] | None = None  # (row id, length)
    out_of_range: int = 0
    first_out_of_range: tuple[int, int, int] | None = None  # (row id, position, value)
    nulls: int = 0
    bad_ids: int = 0
    first_bad_id: tuple[int, int] | None = None  # (expected, found)


def type_problems(schema: pa.Schema, modulus: int, exact: bool) -> list[str]:
    """Column-type problems; ``exact`` demands posgen's own schema (manifest data)."""
    if "tokens" not in schema.names:
        return [f"no 'tokens' column (columns: {', '.join(schema.names)})"]
    problems = []
    kind = schema.field("tokens").type
    listy = pa.types.is_list(kind) or pa.types.is_large_list(kind)
    if not (listy or pa.types.is_fixed_size_list(kind)) or not pa.types.is_integer(kind.value_type):
        return [f"'tokens' is {kind}, not a list of integers"]
    if exact and kind != pa.list_(token_type(modulus)):
        problems.append(f"'tokens' is {kind}, expected {pa.list_(token_type(modulus))}")
    if "id" in schema.names and not pa.types.is_integer(schema.field("id").type):
        problems.append(f"'id' is {schema.field('id').type}, not an integer")
    elif exact and ("id" not in schema.names or schema.field("id").type != pa.int64()):
        problems.append("'id' column is missing or not int64")
    return problems


def _flat(column: pa.Array) -> tuple[np.ndarray, np.ndarray, int]:
    """(offsets, values, null rows) of a list column, whatever its list type."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    nulls = column.null_count
    if pa.types.is_fixed_size_list(column.type):
        size = column.type.list_size
        offsets = np.arange(len(column) + 1, dtype=np.int64) * size + column.offset * size
    else:
        offsets = column.offsets.to_numpy().astype(np.int64, copy=False)
    values = column.values
    if values.null_count:
        nulls += values.null_count
        values = values.fill_null(0)
    return offsets, values.to_numpy(zero_copy_only=False), nulls


def decode_batch(batch: pa.RecordBatch, length: int | None, modulus: int, first_id: int) -> Decoded:
    """Split a batch into good rows (``length`` tokens) and tallies of bad ones."""
    names = batch.schema.names
    n = batch.num_rows
    expected_ids = np.arange(first_id, first_id + n, dtype=np.int64)
    id_column = batch.column(names.index("id")) if "id" in names else None
    if id_column is not None and pa.types.is_integer(id_column.type):
        # ids of another type are reported by type_problems; rows are then numbered in order
        ids = id_column.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        ids = expected_ids
    offsets, values, nulls = _flat(batch.column(names.index("tokens")))
    lengths = np.diff(offsets)
    good = lengths == length if length is not None else np.zeros(n, dtype=bool)
    if good.all():
        tokens = values[offsets[0] : offsets[-1]].reshape(n, length) if n else np.empty((0, 0))
    else:
        starts = offsets[:-1][good]
        tokens = values[starts[:, None] + np.arange(length or 0)] if length else np.empty((0, 0))
    decoded = Decoded(ids=ids[good], tokens=tokens, rows=n, nulls=nulls)
    bad = np.flatnonzero(~good)
    if bad.size:
        decoded.bad_length = int(bad.size)
        decoded.first_bad_length = (int(ids[bad[0]]), int(lengths[bad[0]]))
    live = values[offsets[0] : offsets[-1]]
    if live.size and (live.min() < 0 or live.max() >= modulus):
        wrong = np.flatnonzero((live < 0) | (live >= modulus))
        row = int(np.searchsorted(offsets, wrong[0] + offsets[0], side="right") - 1)
        position = int(wrong[0] + offsets[0] - offsets[row])
        decoded.out_of_range = int(wrong.size)
        decoded.first_out_of_range = (int(ids[row]), position, int(live[wrong[0]]))
    mismatch = np.flatnonzero(ids != expected_ids)
    if mismatch.size:
        decoded.bad_ids = int(mismatch.size)
        decoded.first_bad_id = (int(expected_ids[mismatch[0]]), int(ids[mismatch[0]]))
    return decoded
