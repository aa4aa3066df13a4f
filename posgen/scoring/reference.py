"""Reference tokens to score against, from a split of a folder, a ``datasets`` split or an array."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from posgen.scoring.metrics import ScoringError
from posgen.store.dataset import ReferenceSplit
from posgen.store.formats import table_tokens


def reference_arrays(reference: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, tokens)`` of an array, a ``pyarrow.Table`` or a ``datasets.Dataset``.

    Arrays get ids ``0 .. rows-1``; tables and datasets use their ``id`` column if any.

    >>> ids, tokens = reference_arrays(np.zeros((2, 5), dtype=np.uint8))
    >>> ids.tolist(), tokens.shape
    ([0, 1], (2, 5))
    """
    if isinstance(reference, ReferenceSplit):
        return reference.ids, reference.tokens
    table = reference if isinstance(reference, pa.Table) else None
    if table is None and hasattr(reference, "with_format") and hasattr(reference, "column_names"):
        table = reference.with_format("arrow")[:]  # a datasets.Dataset, row order kept
    if table is not None:
        if "tokens" not in table.column_names:
            raise ScoringError(f"reference has no 'tokens' column; columns: {table.column_names}")
        try:
            tokens = table_tokens(table)
        except ValueError as error:
            raise ScoringError(f"reference tokens: {error}") from None
        if "id" in table.column_names:
            ids = table.column("id").to_numpy().astype(np.int64, copy=False)
        else:
            ids = np.arange(tokens.shape[0], dtype=np.int64)
        return ids, tokens
    tokens = np.asarray(reference)
    if tokens.ndim != 2:
        raise ScoringError(f"reference tokens must be (rows, length), got shape {tokens.shape}")
    return np.arange(tokens.shape[0], dtype=np.int64), tokens
