"""Where the rows come from (a dataset folder, a Parquet or Arrow file, ``datasets`` objects),
as :class:`SplitData` whose parts stream record batches of bounded size.

>>> from posgen.spec import TaskSpec
>>> spec = TaskSpec(task="cot", test_length=[256, 512])
>>> infer_split(spec, 64), infer_split(spec, 512), infer_split(spec, 100)
('train', 'test_512', None)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from posgen.errors import UsageError, counted, shown
from posgen.spec import TaskSpec
from posgen.store.dataset import Dataset, inside
from posgen.store.formats import DATA_SUFFIXES, FileFacts, Format, format_of, read_batch_rows
from posgen.store.manifest import MANIFEST_NAME, Manifest, unfinished
from posgen.store.safety import walk


class SourceError(UsageError, ValueError):
    """The source or the arguments cannot be validated (a usage error, exit status 2)."""


@dataclass(frozen=True)
class Part:
    """One readable unit of a split: a file (``path``) or an in-memory ``table``."""

    label: str
    path: Path | None = None
    table: pa.Table | None = None
    first_id: int | None = None
    rows: int | None = None
    storage: Format | None = None
    max_rows: int | None = None  # rows an Arrow file is not read past: its split's, or listed

    def schema(self) -> pa.Schema:
        if self.table is not None:
            return self.table.schema
        return (self.storage or format_of(self.path)).schema(self.path)

    def batches(
        self, length: int, columns: tuple[str, ...] = ("id", "tokens")
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of rows of ``length`` tokens, files read for ``columns`` only."""
        rows = read_batch_rows(length)
        if self.table is not None:
            yield from self.table.to_batches(max_chunksize=rows)
        else:
            storage = self.storage or format_of(self.path)
            yield from storage.batches(self.path, rows, columns, length, self.max_rows)


@dataclass(frozen=True)
class SplitData:
    """One split of one config: its spec, expected row length, and parts in row order."""

    config: str
    split: str
    spec: TaskSpec
    length: int | None
    parts: list[Part] = field(default_factory=list)
    from_manifest: bool = False


@dataclass(frozen=True)
class Source:
    """What :func:`resolve` found: the folder and manifest (if any) and the splits to check."""

    splits: list[SplitData]
    root: Path | None = None
    manifest: Manifest | None = None
    given_spec: TaskSpec | None = None


def infer_split(spec: TaskSpec, length: int) -> str | None:
    """The split whose row length is ``length`` (train, test or test_<L'>), if any."""
    for split in spec.split_names:
        if split != "validation" and spec.split_length(split) == length:
            return split
    return None


def known_splits(spec: TaskSpec) -> tuple[str, ...]:
    return (*spec.split_names, *spec.probe_names)


def longest_row(spec: TaskSpec) -> int:
    return max(spec.split_length(split) for split in known_splits(spec))


def split_rows(spec: TaskSpec, split: str | None = None) -> int:
    """Rows ``split`` holds (the largest split's where it is none of them): a file's most."""
    names = [split] if split in known_splits(spec) else known_splits(spec)
    return max(spec.split_size(name) for name in names)


def token_lists(schema: pa.Schema) -> bool:
    """Whether ``schema`` has ``tokens``, a list of integers: what rows are read for."""
    kind = schema.field("tokens").type if "tokens" in schema.names else pa.null()
    listy = pa.types.is_list(kind) or pa.types.is_large_list(kind)
    return (listy or pa.types.is_fixed_size_list(kind)) and pa.types.is_integer(kind.value_type)


def _split_of(spec: TaskSpec, name: str | None, part: Part) -> tuple[str, int | None]:
    if name is not None and name in known_splits(spec):
        return name, spec.split_length(name)
    length = None
    # the first row's length, an Arrow file's batch checked for rows of the longest split
    with suppress(pa.ArrowException, OSError, KeyError, TypeError):
        if token_lists(part.schema()):  # a list of 10 MB strings is no row
            batch = next((b for b in part.batches(longest_row(spec)) if b.num_rows), None)
            first = batch.column("tokens")[0] if batch else None
            length = len(first) if first is not None and first.is_valid else None
    inferred = infer_split(spec, length) if length is not None else None
    return name or inferred or "data", None if inferred is None else spec.split_length(inferred)


def _need_spec(spec: TaskSpec | None, what: str) -> TaskSpec:
    if spec is None:
        raise SourceError(f"{what} has no {MANIFEST_NAME}: give the spec (flags or --spec)")
    return spec


def resolve(source: Any, spec: TaskSpec | None, config: str | None, split: str | None) -> Source:
    """Turn ``source`` and the filters into the splits to check (raises :class:`SourceError`)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir() and (path / MANIFEST_NAME).exists():
            return _from_manifest(path, spec, config, split)
        if path.is_dir() and unfinished(path):
            raise SourceError(unfinished(path))
        if path.is_dir():
            found = (Path(top) / name for top, _, names in walk(path) for name in names)
            files = sorted(p for p in found if p.is_file() and p.suffix in DATA_SUFFIXES)
            if not files:
                raise SourceError(f"{path} holds no .parquet, .arrow or .feather files")
            return _from_files(files, _need_spec(spec, str(path)), config, split, path)
        if path.is_file():
            if path.suffix.lower() not in DATA_SUFFIXES:
                raise SourceError(f"{path} is not a .parquet, .arrow or .feather file")
            return _from_files([path], _need_spec(spec, str(path)), config, split, path.parent)
        raise SourceError(f"{path} does not exist")
    return _from_datasets(source, spec, config, split)


def _from_manifest(
    root: Path, spec: TaskSpec | None, config: str | None, split: str | None
) -> Source:
    dataset = Dataset.open(root)  # DamagedDataset: the one integrity failure
    manifest, bench = dataset.manifest, dataset.manifest.bench
    configs = list(bench.configs)
    if config is None and spec is not None:
        matching = [c for c in configs if bench.configs[c].task == spec.task]
        config = configs[0] if len(configs) == 1 else (matching[0] if matching else None)
        if config is None:
            raise SourceError(f"no config of {root} has task {spec.task}; pick one with --config")
    if config is not None and config not in bench.configs:
        raise SourceError(
            f"{root} has no config {shown(config, 60)!r}; configs: {', '.join(configs)}"
        )
    splits = []
    for name in [config] if config else configs:
        entry = manifest.configs[name].ordered_splits
        used = spec or bench.configs[name]
        names = list(entry)
        if split is not None and split not in names:
            raise SourceError(
                f"config {name} has no split {shown(split, 60)!r}; splits: {', '.join(names)}"
            )
        for split_name in [split] if split else names:
            parts = [
                Part(
                    label=f.path,
                    # a path leading out of the folder is never read (integrity names it)
                    path=inside(root, f.path) or root / MANIFEST_NAME / f.path,
                    first_id=f.first_id,
                    rows=f.rows,
                    storage=dataset.format,
                    max_rows=f.rows,
                )
                for f in entry[split_name].files
            ]
            length = used.split_length(split_name) if split_name in known_splits(used) else None
            splits.append(SplitData(name, split_name, used, length, parts, from_manifest=True))
    return Source(splits=splits, root=root, manifest=manifest, given_spec=spec)


def _check_split(spec: TaskSpec, split: str | None) -> None:
    """Refuse a ``split`` the spec does not have."""
    if split is not None and split not in known_splits(spec):
        raise SourceError(
            f"the spec has no split {shown(split, 60)!r}; splits: {', '.join(known_splits(spec))}"
        )


def _from_files(
    files: list[Path], spec: TaskSpec, config: str | None, split: str | None, root: Path
) -> Source:
    _check_split(spec, split)
    grouped: dict[str, SplitData] = {}
    longest = longest_row(spec)
    for path in files:
        part = Part(label=str(path.relative_to(root)), path=path, max_rows=split_rows(spec))
        facts = format_of(path).facts(path) if format_of(path).name == "parquet" else None
        if facts is not None:  # its footer's claim, before a row is read
            _fits(part.label, facts, longest, part.max_rows)
        folder = path.parent.name if path.parent != root else None  # save_to_disk: SPLIT/
        names = (path.stem.split("-")[0], folder)  # test-00000.parquet, validation/data-0.arrow
        named = split or next((n for n in names if n in known_splits(spec)), None)
        split_name, length = _split_of(spec, named, part)
        part = replace(part, max_rows=split_rows(spec, split_name))
        if facts is not None:
            _fits(part.label, facts, longest, part.max_rows, split_name)
        data = grouped.setdefault(
            split_name, SplitData(config or spec.task, split_name, spec, length, [])
        )
        data.parts.append(part)
    order = {name: i for i, name in enumerate(known_splits(spec))}
    splits = sorted(grouped.values(), key=lambda d: order.get(d.split, len(order)))
    return Source(splits=splits, root=root, given_spec=spec)


def _fits(
    label: str, facts: FileFacts, longest: int, most: int, split: str = "the largest split"
) -> None:
    """Refuse a file declaring more rows than ``most`` or tokens than rows of ``longest`` hold."""
    if facts.rows > most:
        raise SourceError(
            f"{label} declares {facts.rows:,} rows; {split} of this spec holds {most:,}: not read"
        )
    if facts.tokens > facts.rows * longest:
        raise SourceError(
            f"{label} declares {facts.tokens:,} tokens in {counted(facts.rows, 'row')}; rows "
            f"of this spec hold at most {longest:,}: not read"
        )


def _from_datasets(source: Any, spec: TaskSpec | None, config: str | None, split: str | None):
    import datasets

    if isinstance(source, datasets.DatasetDict):
        spec = _need_spec(spec, "a DatasetDict")
        names = list(source)
        if split is not None and split not in names:
            raise SourceError(f"the DatasetDict has no split {split!r}; splits: {names}")
        items = [(name, source[name]) for name in ([split] if split else names)]
    elif isinstance(source, datasets.Dataset):
        spec = _need_spec(spec, "a Dataset")
        _check_split(spec, split)
        items = [(split or (str(source.split) if source.split else None), source)]
    else:
        raise SourceError(
            f"cannot validate a {type(source).__name__}: give a folder, a .parquet/.arrow "
            "file, or a datasets.Dataset / DatasetDict"
        )
    splits = []
    for name, dataset in items:
        if dataset._indices is not None:  # a select()/shuffle() view: materialize its rows
            dataset = dataset.flatten_indices()
        part = Part(label=f"<dataset {name or 'data'}>", table=dataset.data.table)
        split_name, length = _split_of(spec, name, part)
        splits.append(SplitData(config or spec.task, split_name, spec, length, [part]))
    return Source(splits=splits, given_spec=spec)
