"""Every file name and path template of a dataset folder, and where every row goes.

A folder holds ``posgen.json`` (the manifest), ``README.md`` (the card), the shards
(:data:`SHARD_PATHS`) and, while a ``--part`` run is unfinished, ``.posgen-parts/``. The row
layout depends on the spec and two sizes only (shard and row-group bytes), never on block
size or worker count, so the files are the same bytes however they are produced.

>>> from posgen.spec import TaskSpec
>>> plan = plan_split("cot", TaskSpec(task="cot"), "train", shard_bytes=300_000)
>>> [(s.start, s.stop) for s in plan]
[(0, 4687), (4687, 9374), (9374, 10000)]
>>> plan[1].path
'data/cot/train-00001-of-00003.parquet'
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from posgen.errors import shown
from posgen.spec import BenchmarkSpec, TaskSpec, is_probe_split, probe_config

MANIFEST_NAME = "posgen.json"
CARD_NAME = "README.md"
PARTS_DIR = ".posgen-parts"
TMP_TAG = ".posgen-tmp-"
"""Build folders: ``.NAME.posgen-tmp-XXXX``, siblings of the target."""
OLD_TAG = ".posgen-old-"
"""A replaced dataset, parked while the new one is renamed in."""
FILE_TMP_TAG = ".tmp-"
"""A file being written: ``.NAME.tmp-PID-XXXX``, renamed to NAME when complete."""

SHARD_PATHS = {
    "parquet": "data/{config}/{split}-{index:05d}-of-{count:05d}.parquet",
    "arrow": "{config}/{split}/data-{index:05d}-of-{count:05d}.arrow",
}
"""Path of shard ``index`` of ``count`` of a split, relative to the folder, per format."""
SPLIT_GLOBS = {
    "parquet": "data/{config}/{split}-*.parquet",
    "arrow": "{config}/{split}/data-*.arrow",
}
"""The card's ``data_files`` pattern of a split (matches exactly its shards)."""
ARROW_DATASET_DICT = "{config}/dataset_dict.json"
ARROW_SPLIT_INFO = "{config}/{split}/dataset_info.json"
ARROW_SPLIT_STATE = "{config}/{split}/state.json"
"""The sidecars ``datasets.load_from_disk(DIR/CONFIG)`` reads next to Arrow IPC shards."""


def hf_config(config: str, split: str) -> str:
    """The ``datasets`` config (and folder name) that holds ``split`` of ``config``: the
    config itself, or ``<config>-probe`` for probe splits.

    >>> hf_config("cot", "test"), hf_config("cot", "probe_512")
    ('cot', 'cot-probe')
    """
    return probe_config(config) if is_probe_split(split) else config


def part_record_name(index: int, count: int) -> str:
    """File name of the record of part ``index`` of ``count``.

    >>> part_record_name(2, 3)
    'part-00002-of-00003.json'
    """
    return f"part-{index:05d}-of-{count:05d}.json"


HIDDEN_STEM_BYTES = 224
"""Longest ``.NAME`` kept whole in a hidden sibling's name: a tag, a PID and 8 hex digits
(at most 31 bytes) still fit the 255 bytes a file name may have."""


def hidden_stem(name: str) -> str:
    """``.NAME``, or for a name too long to take a tag, its start and a hash of the whole.

    >>> hidden_stem("ds")
    '.ds'
    >>> stem = hidden_stem("a" * 255)
    >>> len(stem), stem[-9:]
    (224, '~b0f3323e')
    """
    stem = f".{name}"
    if len(os.fsencode(stem)) <= HIDDEN_STEM_BYTES:
        return stem
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
    keep = stem
    while len(os.fsencode(keep)) > HIDDEN_STEM_BYTES - 9:
        keep = keep[:-1]
    return f"{keep}~{digest}"


def hidden_sibling(path: Path, tag: str, pid: bool = True) -> Path:
    """A fresh hidden sibling of ``path``: ``.NAME`` + ``tag`` + ``PID-`` + 8 hex digits."""
    owner = f"{os.getpid()}-" if pid else ""
    return path.with_name(f"{hidden_stem(path.name)}{tag}{owner}{uuid.uuid4().hex[:8]}")


def hidden_siblings(path: Path, tags: tuple[str, ...]) -> list[Path]:
    """Existing hidden siblings of ``path`` with one of ``tags`` (no glob: any name is literal)."""
    if not path.parent.is_dir():
        return []
    prefixes = tuple(f"{hidden_stem(path.name)}{tag}" for tag in tags)
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(prefixes))


DEFAULT_SHARD_BYTES = 256 * 2**20
"""Raw token bytes per Parquet shard (the Hub recommends shards of a few hundred MB)."""
DEFAULT_ROW_GROUP_BYTES = 4 * 2**20
"""Raw token bytes per row group."""


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


MAX_PARTS = 99_999
"""Most parts of one run: part records are named with five digits (``part-00002-of-00003``)."""
_PART = re.compile(r"\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*")


def parse_part(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N <= MAX_PARTS``; ASCII digits only.

    >>> parse_part("2/3")
    (2, 3)
    >>> parse_part("0/99999999999999999999")
    Traceback (most recent call last):
    ...
    ValueError: expected I/N (e.g. 0/4), got '0/99999999999999999999'
    >>> parse_part("\u0660/\u0662")  # Arabic-Indic digits are not ASCII
    Traceback (most recent call last):
    ...
    ValueError: expected I/N (e.g. 0/4), got '\u0660/\u0662'
    """
    match = _PART.fullmatch(text)
    if match is None:
        raise ValueError(f"expected I/N (e.g. 0/4), got {shown(text, 40)!r}")
    i, n = int(match[1]), int(match[2])
    if not 1 <= n <= MAX_PARTS or not 0 <= i < n:
        raise ValueError(f"part {text!r}: need 0 <= I < N <= {MAX_PARTS:,}")
    return i, n


def part_of(shards: list[Shard], index: int, count: int) -> list[Shard]:
    """The shards part ``index`` of ``count`` writes: every count-th shard in output order.

    >>> from posgen.spec import BenchmarkSpec
    >>> plan = plan_benchmark(BenchmarkSpec(name="b", configs={"cot": TaskSpec(task="cot")}))
    >>> [s.path for s in part_of(plan, 1, 2)]
    ['data/cot/validation-00000-of-00001.parquet', 'data/cot-probe/probe-00000-of-00001.parquet']
    """
    return shards[index::count]


def plan_split(
    config: str,
    spec: TaskSpec,
    split: str,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    storage: str = "parquet",
) -> list[Shard]:
    """The shards of one split, in order, named as format ``storage`` names them."""
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
            path=SHARD_PATHS[storage].format(
                config=hf_config(config, split), split=split, index=i, count=count
            ),
        )
        for i in range(count)
    ]


def plan_benchmark(
    bench: BenchmarkSpec, shard_bytes: int = DEFAULT_SHARD_BYTES, storage: str = "parquet"
) -> list[Shard]:
    """Every shard of every split of every config, in output order.

    >>> bench = BenchmarkSpec(name="b", configs={"cot": TaskSpec(task="cot")})
    >>> plan_benchmark(bench, storage="arrow")[0].path
    'cot/train/data-00000-of-00001.arrow'
    """
    return [
        shard
        for config, spec in bench.configs.items()
        for split in (*spec.split_names, *spec.probe_names)
        for shard in plan_split(config, spec, split, shard_bytes, storage)
    ]


def unfinished(root: Path) -> str | None:
    """Why ``root`` is not loadable yet when it is an unfinished part folder, else None.

    >>> unfinished(Path("/nonexistent")) is None
    True
    """
    staging = Path(root) / PARTS_DIR
    if (Path(root) / MANIFEST_NAME).exists() or not staging.is_dir():
        return None
    names = sorted(p.name for p in staging.glob("part-*-of-*.json"))
    count = names[0].removesuffix(".json").rpartition("-of-")[2].lstrip("0") if names else ""
    done = f" ({len(names)} of {count} parts written)" if count.isdigit() else ""
    return (
        f"{root} is an unfinished --part run{done}: write the missing parts, then "
        f"`posgen merge {root}`"
    )
