"""Where every row goes: shards of a split, and row groups inside a shard.

The layout is a function of the spec and two sizes (shard and row-group bytes), never of
block size or worker count, so the files are the same bytes however they are produced.

>>> from posgen.spec import TaskSpec
>>> plan = plan_split("cot", TaskSpec(task="cot"), "train", shard_bytes=300_000)
>>> [(s.start, s.stop) for s in plan]
[(0, 4687), (4687, 9374), (9374, 10000)]
>>> plan[1].path
'data/cot/train-00001-of-00003.parquet'
"""

from __future__ import annotations

from dataclasses import dataclass

from posgen.spec import BenchmarkSpec, TaskSpec

DEFAULT_SHARD_BYTES = 256 * 2**20
"""Raw token bytes per Parquet shard (the Hub recommends shards of a few hundred MB)."""
DEFAULT_ROW_GROUP_BYTES = 4 * 2**20
"""Raw token bytes per row group. Measured (lz4, one core): groups of 1-4 Mi tokens write
1.3-2x faster than 16-64 Mi (the encoder's buffers stay in cache) and cost nothing to read."""


GENERATION_BYTES = 64 * 2**20
"""Most raw token bytes generated at once (bounds memory for any length); the same budget as
:data:`posgen.generator.BLOCK_BYTES`."""


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of one split, stored in the file ``path`` (relative)."""

    config: str
    split: str
    index: int
    count: int
    start: int
    stop: int
    path: str

    @property
    def rows(self) -> int:
        return self.stop - self.start


def rows_per(byte_budget: int, spec: TaskSpec, split: str) -> int:
    """How many rows of ``split`` fit ``byte_budget`` raw token bytes (at least one)."""
    return max(1, byte_budget // (spec.split_length(split) * spec.token_bytes))


def generation_rows(spec: TaskSpec, split: str, per_group: int, block_rows: int) -> int:
    """Rows generated at once: whole row groups, at most ``block_rows`` rows and
    :data:`GENERATION_BYTES` when a group allows it (the kernel wants >= 8-16k rows).

    >>> generation_rows(TaskSpec(task="cot"), "train", per_group=1000, block_rows=65536)
    65000
    """
    row_bytes = spec.split_length(split) * spec.token_bytes
    want = min(max(1, block_rows), max(1, GENERATION_BYTES // row_bytes))
    return max(1, want // per_group) * per_group


def parse_part(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``.

    >>> parse_part("2/3")
    (2, 3)
    """
    index, sep, count = text.partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise ValueError(f"expected I/N (e.g. 0/4), got {text!r}")
    i, n = int(index), int(count)
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"part {text!r}: need N >= 1 and 0 <= I < N")
    return i, n


def part_of(shards: list[Shard], index: int, count: int) -> list[Shard]:
    """The shards part ``index`` of ``count`` writes: every count-th shard in output order.

    >>> from posgen.spec import BenchmarkSpec
    >>> plan = plan_benchmark(BenchmarkSpec(name="b", configs={"cot": TaskSpec(task="cot")}))
    >>> [s.path for s in part_of(plan, 1, 2)]
    ['data/cot/validation-00000-of-00001.parquet']
    """
    return shards[index::count]


def plan_split(
    config: str, spec: TaskSpec, split: str, shard_bytes: int = DEFAULT_SHARD_BYTES
) -> list[Shard]:
    """The shards of one split, in order."""
    size = spec.split_size(split)
    per_shard = rows_per(shard_bytes, spec, split)
    count = -(-size // per_shard)
    return [
        Shard(
            config=config,
            split=split,
            index=i,
            count=count,
            start=i * per_shard,
            stop=min(size, (i + 1) * per_shard),
            path=f"data/{config}/{split}-{i:05d}-of-{count:05d}.parquet",
        )
        for i in range(count)
    ]


def plan_benchmark(bench: BenchmarkSpec, shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[Shard]:
    """Every shard of every split of every config, in output order."""
    return [
        shard
        for config, spec in bench.configs.items()
        for split in spec.split_names
        for shard in plan_split(config, spec, split, shard_bytes)
    ]
