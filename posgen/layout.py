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
DEFAULT_ROW_GROUP_BYTES = 64 * 2**20
"""Raw token bytes per row group: the unit generated and written at once."""


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
