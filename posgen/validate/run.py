"""The validation run: stream every split once, feeding every per-row check.

One pass per split reads bounded batches (:func:`posgen.store.formats.read_batch_rows`)
and feeds the schema tally, the window recomputation, the hygiene keys and the audit
counters; cross-split hygiene is settled once all splits of a config are read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from posgen.validate.audit import BalanceTally, operand_sensitivity, shortcut_hits
from posgen.validate.copies import ShortcutTally
from posgen.validate.hygiene import HygieneTally
from posgen.validate.lookback import LookbackTally
from posgen.validate.prefetch import prefetch
from posgen.validate.schema import Decoded, decode_batch, type_problems
from posgen.validate.sources import SplitData
from posgen.validate.window import expected_targets


class AuditThresholds(BaseModel):
    """Limits that turn the audit into pass/fail (``None``: report only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_balance_tv: float | None = Field(
        None, ge=0, le=1, description="Fail when a position's target TV from uniform exceeds it."
    )
    max_shortcut_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Fail when a shortcut (periodic or context copy, linear rule, shorter "
        "local rule, or a question-consistency look-back of at most k + 2 below the rule's) "
        "covers a larger share of the ID or OOD targets.",
    )
    min_operand_sensitivity: float | None = Field(
        None, ge=0, le=1, description="Fail when fewer single-operand changes change h."
    )


@dataclass
class SplitTally:
    """Everything streamed from one split."""

    data: SplitData
    hygiene: HygieneTally
    balance: BalanceTally | None
    shortcuts: ShortcutTally | None = None
    lookbacks: LookbackTally | None = None
    rows: int = 0
    tokens: int = 0
    type_problems: list[str] = field(default_factory=list)
    read_problems: list[str] = field(default_factory=list)
    bad_length: int = 0
    first_bad_length: tuple[str, int, int] | None = None
    out_of_range: int = 0
    first_out_of_range: tuple[str, int, int, int] | None = None
    nulls: int = 0
    bad_ids: int = 0
    first_bad_id: tuple[str, int, int] | None = None
    window_failures: int = 0
    window_rows: int = 0
    first_window: tuple[int, int, int, int] | None = None  # (row id, t, expected, found)
    shortcut_hits: int = 0
    periodic_rows: int = 0
    sensitivity: tuple[float, int] | None = None


def _feed(tally: SplitTally, part_label: str, decoded: Decoded) -> None:
    spec, tokens = tally.data.spec, decoded.tokens
    tally.rows += decoded.rows
    tally.tokens += int(tokens.size)
    tally.nulls += decoded.nulls
    if decoded.bad_length:
        tally.bad_length += decoded.bad_length
        if tally.first_bad_length is None:
            tally.first_bad_length = (part_label, *decoded.first_bad_length)
    if decoded.out_of_range:
        tally.out_of_range += decoded.out_of_range
        if tally.first_out_of_range is None:
            tally.first_out_of_range = (part_label, *decoded.first_out_of_range)
    if decoded.bad_ids:
        tally.bad_ids += decoded.bad_ids
        if tally.first_bad_id is None:
            tally.first_bad_id = (part_label, *decoded.first_bad_id)
    if tokens.shape[0] == 0 or tokens.shape[1] <= spec.window:
        return
    expected = expected_targets(spec, tokens)
    wrong = expected != tokens[:, spec.window :]
    count = int(np.count_nonzero(wrong))
    if count:
        tally.window_failures += count
        tally.window_rows += int(np.count_nonzero(wrong.any(axis=1)))
        if tally.first_window is None:
            row, column = divmod(int(np.argmax(wrong.reshape(-1))), wrong.shape[1])
            tally.first_window = (
                int(decoded.ids[row]),
                spec.window + column,
                int(expected[row, column]),
                int(tokens[row, spec.window + column]),
            )
    tally.hygiene.add(tokens)
    if tally.balance is not None:
        tally.balance.add(tokens)
    if tally.shortcuts is not None:
        tally.shortcuts.add(tokens)
    if tally.lookbacks is not None:
        tally.lookbacks.add(tokens)
    hits, periodic = shortcut_hits(tokens, spec.train_length, spec.window)
    tally.shortcut_hits += hits
    tally.periodic_rows += periodic
    if tally.sensitivity is None:
        tally.sensitivity = operand_sensitivity(spec, tokens)


def _row_count(data: SplitData) -> int | None:
    """Rows of the split as its parts record them (manifest, in-memory table), else the
    spec's size of that split, else None."""
    counts = [part.table.num_rows if part.table is not None else part.rows for part in data.parts]
    if counts and all(count is not None for count in counts):
        return sum(counts)
    if data.split in data.spec.split_names:
        return data.spec.split_size(data.split)
    return None


def stream_split(data: SplitData) -> SplitTally:
    """Read every part of a split once, feeding every tally."""
    spec = data.spec
    balance = BalanceTally(spec, data.length) if data.length else None
    lookbacks = LookbackTally(spec, data.length, _row_count(data)) if data.length else None
    tally = SplitTally(
        data,
        HygieneTally(spec.modulus, spec.window),
        balance,
        ShortcutTally.for_spec(spec),
        lookbacks,
    )
    next_id = 0
    for part in data.parts:
        if part.path is not None and not part.path.is_file():
            if not data.from_manifest:  # a listed file that is missing fails integrity
                tally.read_problems.append(f"{part.label}: missing, not read")
            continue
        try:
            problems = type_problems(part.schema(), spec.modulus, data.from_manifest)
            tally.type_problems += [f"{part.label}: {p}" for p in problems]
            if any(("tokens" in p and "not a list" in p) or "no 'tokens'" in p for p in problems):
                continue
            first = part.first_id if part.first_id is not None else next_id
            for batch in prefetch(part.batches(data.length or 1)):
                decoded = decode_batch(batch, data.length, spec.modulus, first)
                _feed(tally, part.label, decoded)
                first += batch.num_rows
            next_id = first
        except (pa.ArrowException, OSError) as error:
            tally.read_problems.append(f"{part.label}: unreadable ({' '.join(str(error).split())})")
    return tally
