"""The probe check: every probe row is its regenerated source row altered exactly as the rule
says (:func:`posgen.generator.alter_rows`), and every ``far_rule`` entry is h of the operands."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from posgen.errors import counted, machine_limit, shown
from posgen.generator import ProbeBlock, alter_rows, far_rule_answers, generate_rows
from posgen.spec import probe_source
from posgen.store.formats import probe_schema
from posgen.validate.report import CheckResult
from posgen.validate.schema import column_problems, list_column, prefetch
from posgen.validate.sources import SplitData

COLUMNS = ("id", "tokens", "source_id", "replaced", "probed", "far_rule")
# probed rows from which a split where no far-rule answer differs from the unaltered token fails
# (by chance that takes a row's shifts summing to 0 mod m: 1/m per row)
MEASURING_ROWS = 16


@dataclass
class ProbeTally:
    """Counts of each kind of problem, with the first example of each."""

    rows: int = 0
    tokens: int = 0
    probed: int = 0
    probed_rows: int = 0  # rows with a probed target
    telling: int = 0  # probed targets whose far-rule answer differs from the unaltered token
    counts: dict[str, int] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, count: int, example: str) -> None:
        if count:
            self.counts[kind] = self.counts.get(kind, 0) + int(count)
            self.first.setdefault(kind, example)

    def problems(self) -> list[str]:
        return [f"{self.counts[k]} {k}; first: {self.first[k]}" for k in self.counts]


def check_probe_split(data: SplitData) -> tuple[CheckResult, ProbeTally]:
    """Check one probe split of ``data`` (its parts, in row order)."""
    spec, tally = data.spec, ProbeTally()
    want = probe_schema(spec.modulus)
    next_id = 0
    for part in data.parts:
        if part.path is not None and not part.path.is_file():
            tally.add("file(s) missing", 1, f"{part.label}: not read")
            continue
        try:
            schema = part.schema()
            wrong = [
                f"'{f.name}' is {_type(schema, f.name)}, expected {f.type}"
                for f in want
                if _type(schema, f.name) != f.type
            ] or column_problems(schema, want)
            if wrong:
                tally.add("column type problem(s)", len(wrong), f"{part.label}: {wrong[0]}")
                continue
            first = part.first_id if part.first_id is not None else next_id
            for batch in prefetch(part.batches(data.length or 1, COLUMNS)):
                _check_batch(data, part.label, batch, first, tally)
                first += batch.num_rows
            next_id = first
        except (pa.ArrowException, OSError) as error:
            if machine_limit(error):  # ArrowMemoryError, no thread: a limit, not damage
                raise
            tally.add("unreadable part(s)", 1, f"{part.label}: {shown(error)}")
    problems = tally.problems()
    unmeasured = not problems and tally.telling == 0 and tally.probed_rows >= MEASURING_ROWS
    if unmeasured:
        example = " (with m = 2 and an even j, flipping every question token keeps the answer)"
        problems.append(
            f"far-reliance cannot be measured: at none of the {tally.probed:,} probed targets "
            "does the far-rule answer differ from the unaltered token"
            + (example if (spec.task, spec.modulus, spec.far % 2) == ("cot", 2, 0) else "")
        )
    message = (
        f"{counted(tally.rows, 'probe row')} match{'es its' if tally.rows == 1 else ' their'} "
        f"{probe_source(data.split)} row{'s' * (tally.rows != 1)} and the "
        f"rule's replacements; {tally.probed:,} far-rule answers recomputed, "
        f"{tally.telling:,} of them unlike the unaltered token"
    )
    where = {"config": data.config, "split": data.split}
    failures = sum(tally.counts.values()) + unmeasured
    return CheckResult.of("probe", problems, message, **where, failures=failures), tally


def _type(schema: pa.Schema, name: str) -> pa.DataType | str:
    return schema.field(name).type if name in schema.names else "missing"


def _check_batch(
    data: SplitData, label: str, batch: pa.RecordBatch, first: int, tally: ProbeTally
) -> None:
    spec, length, n = data.spec, data.length, batch.num_rows
    tally.rows += n
    if n == 0:
        return
    null_columns = [name for name in COLUMNS if batch.column(name).null_count]
    if null_columns:
        tally.add("column(s) with nulls", len(null_columns), f"{label}: {null_columns[0]}")
        return
    for name, kind, example in (  # both are the row's own index
        ("id", "id(s) out of sequence", "{label} has id {found} where {row} belongs"),
        ("source_id", "source id(s) not the row's own index", "{label} row {row} says {found}"),
    ):
        found = batch.column(name).to_numpy()
        bad = np.flatnonzero(found != np.arange(first, first + n, dtype=np.int64))
        if bad.size:
            where = {"label": label, "row": first + bad[0], "found": found[bad[0]]}
            tally.add(kind, bad.size, example.format(**where))
    offsets, values, _ = list_column(batch.column("tokens"))
    lengths = np.diff(offsets)
    if length is None or (lengths != length).any():
        row = int(np.argmax(lengths != length)) if length is not None else 0
        tally.add(
            "row(s) of the wrong length",
            int(np.count_nonzero(lengths != length)) or n,
            f"{label} row {first + row} has {lengths[row]} tokens, not {length}",
        )
        return
    tokens = values[offsets[0] : offsets[-1]].reshape(n, length)
    tally.tokens += int(tokens.size)
    source = generate_rows(spec, probe_source(data.split), first, first + n)
    expected = alter_rows(spec, data.split, first, source.copy())
    for name in ("replaced", "probed"):
        _compare_lists(label, first, batch, name, expected, tally)
    altered = source != expected.tokens
    wrong = tokens != expected.tokens
    for kind, where in (
        ("token(s) differ from the source row", wrong & ~altered),
        ("replaced token(s) not the rule's replacement", wrong & altered),
    ):
        cells = np.argwhere(where)
        if cells.size:
            row, t = (int(v) for v in cells[0])
            example = (
                f"{label} row {first + row} position {t} holds {tokens[row, t]}, "
                f"expected {expected.tokens[row, t]}"
            )
            tally.add(kind, cells.shape[0], example)
    _check_far_rule(data, label, batch, first, tokens, tally, None if wrong.any() else expected)


def _relative(batch: pa.RecordBatch, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (from 0) and values of the list column ``name``."""
    offsets, values, _ = list_column(batch.column(name))
    return offsets - offsets[0], values[offsets[0] : offsets[-1]]


def _check_far_rule(
    data: SplitData,
    label: str,
    batch: pa.RecordBatch,
    first: int,
    tokens: np.ndarray,
    tally: ProbeTally,
    rebuilt: ProbeBlock | None,
) -> None:
    """Every stored far-rule answer is h of the operands stored, at its stored position."""
    spec, length = data.spec, tokens.shape[1]
    probed_offsets, probed = _relative(batch, "probed")
    far_offsets, stored = _relative(batch, "far_rule")
    uneven = np.flatnonzero(np.diff(probed_offsets) != np.diff(far_offsets))
    if uneven.size:
        example = f"{label} row {first + uneven[0]}"
        tally.add("row(s) with a far_rule list unlike their probed list", uneven.size, example)
        return
    rows_of = np.repeat(np.arange(tokens.shape[0]), np.diff(probed_offsets))
    outside = np.flatnonzero((probed < spec.window) | (probed >= length))
    if outside.size:
        example = f"{label} row {first + rows_of[outside[0]]} lists {probed[outside[0]]}"
        tally.add(f"probed position(s) outside [{spec.window}, {length})", outside.size, example)
        return
    same = rebuilt is not None and np.array_equal(probed_offsets, rebuilt.probed_offsets)
    if same and np.array_equal(probed, rebuilt.probed):
        answers = rebuilt.far_rule
    else:
        answers = far_rule_answers(spec, tokens, rows_of, probed)
    tally.probed += int(answers.size)
    tally.probed_rows += int(np.count_nonzero(np.diff(probed_offsets)))
    tally.telling += int(np.count_nonzero(answers != tokens[rows_of, probed]))
    bad = np.flatnonzero(stored != answers)
    if bad.size:
        row, t = int(rows_of[bad[0]]), int(probed[bad[0]])
        example = (
            f"{label} row {first + row} position {t} says {stored[bad[0]]}, "
            f"h gives {answers[bad[0]]}"
        )
        tally.add("far-rule answer(s) not h of the stored operands", bad.size, example)


def _compare_lists(
    label: str, first: int, batch: pa.RecordBatch, name: str, rule: ProbeBlock, tally: ProbeTally
) -> None:
    """Count the rows whose list column ``name`` is not the rule's (``rule.<name>``)."""
    values, offsets = getattr(rule, name), getattr(rule, f"{name}_offsets")
    got_offsets, got = _relative(batch, name)
    if np.array_equal(got_offsets, offsets) and np.array_equal(got, values):
        return
    kind = f"row(s) whose {name} positions are not the rule's"
    for row in range(offsets.size - 1):
        mine = got[got_offsets[row] : got_offsets[row + 1]]
        rule = values[offsets[row] : offsets[row + 1]]
        if not np.array_equal(mine, rule):
            example = (
                f"{label} row {first + row} lists {mine[:6].tolist()}, the rule {rule[:6].tolist()}"
            )
            tally.add(kind, 1, example)
