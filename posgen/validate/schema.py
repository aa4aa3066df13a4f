"""Checks 1 and 2: integrity (listed files unchanged, the given spec the data's, nothing
unlisted) and schema (column types, row length, ids, tokens in [0, m)).

>>> import pyarrow as pa
>>> batch = pa.record_batch({"tokens": pa.array([[0, 1, 2], [3, 4], [5, 17, 6]],
...                                              pa.list_(pa.uint8()))})
>>> d = decode_batch(batch, length=3, modulus=17, first_id=0)
>>> d.tokens.tolist(), d.problems["bad_length"], d.problems["out_of_range"]
([[0, 1, 2], [5, 17, 6]], (1, (1, 2)), (1, (2, 1, 17)))
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import pyarrow as pa

from posgen.errors import shown
from posgen.store.dataset import card_problems, check_files
from posgen.store.formats import row_schema, token_type
from posgen.store.manifest import DamagedDataset
from posgen.validate.report import CheckResult
from posgen.validate.sources import Source, token_lists


@dataclass
class Decoded:
    """One batch's rows of the right length, and ``problems``: kind -> (count, first)."""

    ids: np.ndarray
    tokens: np.ndarray
    rows: int
    nulls: int = 0
    problems: dict[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)


def type_problems(schema: pa.Schema, modulus: int, exact: bool) -> list[str]:
    """Column-type problems; ``exact`` demands posgen's own schema (manifest data)."""
    if "tokens" not in schema.names:
        return [f"no 'tokens' column (columns: {shown(', '.join(schema.names), 100) or 'none'})"]
    problems = []
    kind = schema.field("tokens").type
    if not token_lists(schema):
        return [f"'tokens' is {kind}, not a list of integers"]
    if exact and kind != pa.list_(token_type(modulus)):
        problems.append(f"'tokens' is {kind}, expected {pa.list_(token_type(modulus))}")
    if "id" in schema.names and not pa.types.is_integer(schema.field("id").type):
        problems.append(f"'id' is {schema.field('id').type}, not an integer")
    elif exact and ("id" not in schema.names or schema.field("id").type != pa.int64()):
        problems.append("'id' column is missing or not int64")
    if exact and not problems:
        problems += column_problems(schema, row_schema(modulus))
    return problems


def column_problems(schema: pa.Schema, want: pa.Schema) -> list[str]:
    """posgen's own columns, in its order, none nullable (what ``load_dataset`` can cast).

    >>> column_problems(pa.schema([("tokens", pa.list_(pa.uint8())), ("id", pa.int64())]),
    ...                 row_schema(17))
    ['columns tokens (nullable), id (nullable); expected id, tokens (in this order, none nullable)']
    """

    def names(found: pa.Schema) -> str:
        return ", ".join(f.name + (" (nullable)" if f.nullable else "") for f in found)

    if names(schema) == names(want):
        return []
    return [f"columns {names(schema)}; expected {names(want)} (in this order, none nullable)"]


def list_column(column: pa.Array) -> tuple[np.ndarray, np.ndarray, int]:
    """(offsets, values, null rows) of a list column, whatever its list type."""
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
        # a null id, or an unsigned one past int64 (wrapped negative), is out of sequence
        ids = id_column.cast(pa.int64(), safe=False).fill_null(-1).to_numpy(zero_copy_only=False)
    else:
        ids = expected_ids
    offsets, values, nulls = list_column(batch.column(names.index("tokens")))
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
        decoded.problems["bad_length"] = (int(bad.size), (int(ids[bad[0]]), int(lengths[bad[0]])))
    live = values[offsets[0] : offsets[-1]]
    if live.size and (live.min() < 0 or live.max() >= modulus):
        wrong = np.flatnonzero((live < 0) | (live >= modulus))
        row = int(np.searchsorted(offsets, wrong[0] + offsets[0], side="right") - 1)
        position = int(wrong[0] + offsets[0] - offsets[row])
        first = (int(ids[row]), position, int(live[wrong[0]]))
        decoded.problems["out_of_range"] = (int(wrong.size), first)
    mismatch = np.flatnonzero(ids != expected_ids)
    if mismatch.size:
        first = (int(expected_ids[mismatch[0]]), int(ids[mismatch[0]]))
        decoded.problems["bad_ids"] = (int(mismatch.size), first)
    return decoded


def check_integrity(source: Source) -> list[CheckResult]:
    """One result per (config, split) of the manifest, and one for unlisted files."""
    if source.manifest is None or source.root is None:
        return []
    configs = list(dict.fromkeys(data.config for data in source.splits))
    problems = check_files(source.root, source.manifest, configs)
    results, given, compared = [], source.given_spec, set()
    for data in source.splits:  # the given spec is compared on the first split of a config
        config, recorded = data.config, source.manifest.configs[data.config].spec
        head = []
        if config not in compared and given is not None and given.spec_id != recorded.spec_id:
            a, b = given.canonical(), recorded.canonical()
            diff = ", ".join(f"{key} {a[key]!r} vs {b[key]!r}" for key in a if a[key] != b[key])
            head.append(
                f"the given spec ({given.spec_id}) does not match the data's spec "
                f"({recorded.spec_id})" + (f": {diff}" if diff else "")
            )
        compared.add(config)
        mine = [str(p) for p in problems if (p.config, p.split) == (config, data.split)]
        files = len(source.manifest.configs[config].splits[data.split].files)
        message = f"{files} file(s) match the manifest (sha256, rows, spec id)"
        results.append(
            CheckResult.of("integrity", head + mine, message, config=config, split=data.split)
        )
    unlisted = [p for p in problems if p.config is None]
    prefix = f"{len(unlisted)} data file(s) not in the manifest: " if unlisted else ""
    card = card_problems(source.root, source.manifest, configs)  # the files load_dataset reads
    message = "no unlisted data files; the card's configs are the listed files"
    results.append(CheckResult.of("integrity", unlisted + card, message, prefix=prefix))
    return results


def damaged_result(error: DamagedDataset) -> CheckResult:
    """The one failing result of a folder whose manifest cannot be used."""
    return CheckResult.of("integrity", list(error.lines) or [str(error)], "")


T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order, read by a background thread up to ``depth`` ahead."""
    with ThreadPoolExecutor(1, thread_name_prefix="posgen-prefetch") as reader:
        pending = deque(reader.submit(next, items, _DONE) for _ in range(depth))
        while (item := pending.popleft().result()) is not _DONE:
            pending.append(reader.submit(next, items, _DONE))
            yield item
