"""Up-front estimates for the runner (:mod:`posgen.cli.runner`): refuse runs whose output
cannot fit on disk or would take absurdly long, and targets no folder can be created at.

The estimate is exact for the raw tokens: the sum over every split of
rows x length x bytes per token (1 byte for m <= 256, else 2); a probe split counts at
most a probed position (4 bytes) and a far-rule answer per token on top. The Parquet files
are usually smaller (zstd), so a refusal means the data surely cannot be stored uncompressed;
``--force`` runs anyway. Time is estimated at :data:`PLANNING_RATE` tokens per second.

Worked example, the paper preset (3 configs; train 10,000 x 64, validation and test
1,000 x 256 each, and a probe split of 1,000 x 256; m = 17 so 1 byte a token)::

    3 x (10,000 x 64 + 1,000 x 256 + 1,000 x 256 + 1,000 x 256 x (1 + 4 + 1)) B = 8,064,000 B

>>> from posgen.spec import default_benchmark
>>> estimate = estimate_benchmark(default_benchmark())
>>> estimate.tokens, estimate.raw_bytes, estimate.largest
(4224000, 8064000, 'recursive/probe: 1,000 rows x 256 tokens x 6 B')
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from posgen.cli.guard import os_error_problem
from posgen.spec import BenchmarkSpec, is_probe_split
from posgen.units import human_bytes, human_seconds

PLANNING_RATE = 5_000_000
"""Tokens per second assumed for the estimate: the slowest whole-pipeline rate (generate,
encode, write, fsync) seen on a shared 2-core machine, so estimates err on the long side."""
MAX_SECONDS = 24 * 3600
"""Runs estimated to take longer than this are refused without ``--force``."""


@dataclass(frozen=True)
class Estimate:
    """What a benchmark costs: tokens, raw bytes and planned seconds."""

    tokens: int
    raw_bytes: int
    splits: int
    largest: str

    @property
    def seconds(self) -> float:
        """Planned run time at :data:`PLANNING_RATE`."""
        return self.tokens / PLANNING_RATE

    @property
    def formula(self) -> str:
        """The estimate spelled out, e.g. ``9 splits of rows x length x bytes, largest ...``."""
        return f"sum over {self.splits} splits of rows x length x bytes; largest {self.largest}"


def estimate_benchmark(bench: BenchmarkSpec) -> Estimate:
    """Tokens and raw bytes of every split of every config of ``bench``."""
    tokens = raw = 0
    largest, largest_bytes, splits = "", -1, 0
    for config, spec in bench.configs.items():
        for split in (*spec.split_names, *spec.probe_names):
            rows, length = spec.split_size(split), spec.split_length(split)
            per_token = spec.token_bytes
            if is_probe_split(split):  # at most one probed position (4 B) and answer a token
                per_token += 4 + spec.token_bytes
            size = rows * length * per_token
            tokens += rows * length
            raw += size
            splits += 1
            if size > largest_bytes:
                largest_bytes = size
                largest = f"{config}/{split}: {rows:,} rows x {length:,} tokens x "
                largest += f"{per_token} B"
    return Estimate(tokens=tokens, raw_bytes=raw, splits=splits, largest=largest)


def existing_ancestor(path: Path) -> Path:
    """The nearest path at or above ``path`` that exists (where the output will live)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor)


@dataclass(frozen=True)
class Blocked:
    """Why no folder can be created at a target, and the exit status that says so: 2 when
    the path given cannot be used (a file in the way, no permission), 1 when the file system
    failed (a read-only mount, an I/O error), by the rule of :mod:`posgen.cli.guard`."""

    line: str
    exit_code: int


def unwritable(out: Path) -> Blocked | None:
    """Why no folder can be created at ``out`` (None when one can), found by trying.

    A file is created and removed in the nearest existing folder above ``out``, so
    read-only mounts, missing permissions and a file in the way are all caught up front.
    """
    out = Path(out)
    base = existing_ancestor(out.parent)
    if not base.is_dir():
        return Blocked(f"cannot create {out}: {base} is a file, not a folder", 2)
    try:
        with tempfile.TemporaryFile(dir=base, prefix=".posgen-probe-"):
            pass
    except OSError as error:
        reason = str(error.strerror or error)
        line = f"cannot create {out}: {base} is not writable ({reason[:1].lower()}{reason[1:]})"
        return Blocked(line, os_error_problem(error)[1])
    return None


def free_bytes(path: Path) -> int:
    """Bytes available to this user on the file system that will hold ``path``."""
    base = existing_ancestor(path)
    return shutil.disk_usage(base if base.is_dir() else base.parent).free


def refusals(bench: BenchmarkSpec, out: Path) -> list[str]:
    """Why ``bench`` should not be generated into ``out`` (empty when it may).

    One line per reason, each with the estimate, ending in how to override it.
    """
    estimate = estimate_benchmark(bench)
    lines = []
    where = existing_ancestor(out)
    free = free_bytes(out)
    if estimate.raw_bytes > free:
        lines.append(
            f"{out} would need about {human_bytes(estimate.raw_bytes)} "
            f"({estimate.raw_bytes:,} bytes: {estimate.formula}) but only "
            f"{human_bytes(free)} are free on {where}; pass --force to try anyway"
        )
    if estimate.seconds > MAX_SECONDS:
        lines.append(
            f"generating {estimate.tokens:,} tokens would take about "
            f"{human_seconds(estimate.seconds)} at {PLANNING_RATE / 1e6:.0f} M tokens/s "
            f"(limit {human_seconds(MAX_SECONDS)}; {estimate.formula}); "
            "pass --force to run it anyway"
        )
    return lines
