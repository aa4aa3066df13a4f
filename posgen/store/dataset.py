"""The one handle on a dataset folder: :class:`Dataset`, which parses ``posgen.json`` once.
Reads are pinned: a folder replaced meanwhile is read again, whole, and the handle follows it
(every answer, spec or rows, describes one state of the folder).

>>> check_dataset(Path("/nonexistent/ds"))
['/nonexistent/ds has no posgen.json: not a posgen dataset']
"""

from __future__ import annotations

import functools
import hashlib
import os
import weakref
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posgen.errors import PosgenError, RunError, UsageError, counted, machine_limit, shown
from posgen.generator import storage_dtype
from posgen.spec import TaskSpec, read_bounded
from posgen.store.formats import (
    DATA_SUFFIXES,
    Format,
    card_configs,
    feature_entry,
    folder_format,
    list_values,
    manifest_format,
    read_batch_rows,
    split_schema,
    table_tokens,
)
from posgen.store.manifest import (
    CARD_NAME,
    MANIFEST_NAME,
    PARTS_DIR,
    ConfigEntry,
    DamagedDataset,
    FileEntry,
    Manifest,
    NotADataset,
    read_manifest,
    sha256_file,
)
from posgen.store.safety import walk

if TYPE_CHECKING:
    import datasets

T = TypeVar("T")
ATTEMPTS = 3  # reads tried on a folder that is replaced again and again
PROBE_COLUMNS = ("id", "tokens", "probed", "far_rule")
MAX_CARD_BYTES = 2**20  # a card holds about 30 kB; more is not read
SHA_CHANGED = f"sha256 differs from the manifest {MANIFEST_NAME} (bytes changed, or files swapped)"
Where = tuple[str, str, str]  # (config, split, spec id)


class SplitError(UsageError, ValueError):
    """A config or split the folder does not have, or a table that is no probe split."""


def named(value: Any, what: str) -> Any:
    """``value``, a name (a str) or None, else :class:`SplitError`."""
    if value is not None and not isinstance(value, str):
        raise SplitError(f"{what} must be a name (str), not {type(value).__name__}")
    return value


def names(value: Any, what: str, one: str) -> list[str]:
    """``value``, one name or a list (tuple) of names, as a list, else :class:`SplitError`
    naming ``what`` (the list) or ``one`` (an item): a str is one name, never its letters."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple):
        raise SplitError(f"{what} must be a name or a list, not {type(value).__name__}")
    if any(item is None for item in value):
        raise SplitError(f"{one} must be a name (str), not NoneType")
    return [named(item, one) for item in value]


def flag(value: Any, what: str) -> bool:
    """``value``, True or False, else :class:`SplitError` (a string such as "no" is no flag)."""
    if not isinstance(value, bool | np.bool_):
        raise SplitError(f"{what} must be True or False, not {type(value).__name__}")
    return bool(value)


def dataset_path(path: Any) -> Path:
    """``path`` (a str or a path) as a Path, else :class:`SplitError`."""
    if not isinstance(path, str | os.PathLike):
        raise SplitError(f"a dataset folder must be a path, not {type(path).__name__}")
    return Path(path)


class DatasetReplaced(RunError):
    """The folder was replaced during every attempt to read it (exit 1)."""


@dataclass(frozen=True)
class _Split:
    config: str | None
    split: str | None
    spec: TaskSpec
    tokens: np.ndarray  # in id order

    @property
    def ids(self) -> np.ndarray:
        return np.arange(self.tokens.shape[0], dtype=np.int64)


@dataclass(frozen=True)
class ReferenceSplit(_Split):
    """One split of a dataset folder: its spec and its tokens in id order."""

    files: tuple[tuple[str, str], ...] = ()  # (path, sha256) of the files read


@dataclass(frozen=True)
class ProbeSplit(_Split):
    """A probe split: tokens in id order, and the probed targets with their far-rule answers."""

    probed_rows: np.ndarray
    probed: np.ndarray
    far_rule: np.ndarray


@dataclass(frozen=True)
class Problem:
    """One problem with one file; ``str()`` gives the line every command prints."""

    shown: str
    message: str
    config: str | None = None
    split: str | None = None

    def __str__(self) -> str:
        return f"{self.shown}: {self.message}"


def _identity(path: Path | int) -> tuple[int, int] | None:
    try:
        stat = os.fstat(path) if isinstance(path, int) else os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def pinned(root: str | Path, read: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """``read()`` of ``root``, run again (its errors dropped) if ``root`` was replaced meanwhile.

    >>> pinned("/nonexistent", lambda: 1)
    1
    """
    root = Path(root)
    for _ in range(attempts):
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return read()
        try:
            pin = _identity(fd)
            try:
                result = read()
            except Exception:
                if _identity(root) == pin:
                    raise
                continue
            if _identity(root) == pin:
                return result
        finally:
            os.close(fd)
    raise DatasetReplaced(
        f"{root} was replaced {attempts} times while being read (a run is rewriting it); "
        "nothing was checked: run again once it is done"
    )


def _pinned_read(read: Callable[..., T]) -> Callable[..., T]:
    """``read`` pinned (:meth:`Dataset.read`); a file that cannot be decoded is damage."""

    @functools.wraps(read)
    def wrapper(self: Dataset, *args: Any, **kwargs: Any) -> T:
        try:
            return self.read(lambda handle: read(handle, *args, **kwargs))
        except (PosgenError, OSError, MemoryError):  # ArrowMemoryError: a limit, not damage
            raise
        except (pa.ArrowException, ValueError) as error:
            if machine_limit(error):  # no thread: a limit, not damage
                raise
            raise DamagedDataset(
                self.root, [f"{self.root}: {' '.join(str(error).split())}"]
            ) from None

    return wrapper


class _Folder:
    """A dataset folder held open, so that no folder replacing it can take its inode (which
    would make the replacement look like the folder a manifest was read from)."""

    def __init__(self, fd: int) -> None:
        self.identity = _identity(fd)
        weakref.finalize(self, os.close, fd)

    @classmethod
    def held(cls, fd: int | None) -> _Folder | None:
        return None if fd is None else cls(fd)


@dataclass(frozen=True)
class _State:
    """What a handle knows of its folder, replaced as one when the folder is."""

    manifest: Manifest
    format: Format
    folder: _Folder | None  # None: the manifest's folder could not be held (read again)


class Dataset:
    """A dataset folder, its manifest parsed and checked once.

    >>> import tempfile
    >>> from posgen.spec import default_benchmark
    >>> from posgen.store.writer import write_dataset
    >>> root = Path(tempfile.mkdtemp()) / "ds"
    >>> _ = write_dataset(default_benchmark(("cot",), train_size=8, val_size=2, test_size=2), root)
    >>> data = Dataset.open(root)
    >>> data.configs, data.split("cot", "test").tokens.shape
    (['cot'], (2, 256))
    """

    def __init__(
        self, root: str | Path, manifest: Manifest | None = None, folder: int | None = None
    ) -> None:
        if manifest is None:  # Dataset(path): Dataset.open(path)
            vars(self).update(vars(Dataset.open(root)))
            return
        self.root = root
        self._state = _State(manifest, manifest_format(manifest), _Folder.held(folder))

    @classmethod
    def open(cls, path: str | Path) -> Dataset:
        """Open ``path``: ``NotADataset`` without ``posgen.json``, else checked whole."""
        root = dataset_path(path)

        def opened() -> Dataset:
            try:  # before the manifest is read: a swap after it is seen
                folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                return cls(root, read_manifest(root))  # names what is wrong with ``root``
            try:
                return cls(root, read_manifest(root), folder)
            except BaseException:
                os.close(folder)
                raise

        return pinned(root, opened)

    def _current(self) -> _State:
        """The handle's state, first the replacing folder's, whole, if ``root`` was replaced
        since it was read (one ``stat``): every answer describes one state of the folder."""
        state = self._state
        if state.folder is None or _identity(self.root) != state.folder.identity:
            state = self._state = Dataset.open(self.root)._state
        return state

    @property
    def manifest(self) -> Manifest:
        """``posgen.json`` of the folder as it is now (read again when it was replaced)."""
        return self._current().manifest

    @property
    def format(self) -> Format:
        return self._current().format

    def read(self, read: Callable[[Dataset], T]) -> T:
        """``read(handle)``, pinned: a folder replaced since it was opened is opened again, and
        the handle (its manifest, configs and specs) follows it."""
        if not callable(read):
            raise SplitError(f"read must be a function of the handle, not {type(read).__name__}")

        def attempt() -> T:
            self._current()
            return read(self)

        return pinned(self.root, attempt)

    @property
    def configs(self) -> list[str]:
        return list(self.manifest.configs)

    def resolve_config(self, config: str | None) -> str:
        """``config``, or the folder's only config when ``config`` is None."""
        if named(config, "config") is not None:
            return config
        if len(self.configs) != 1:
            raise SplitError(
                f"{self.root} has configs {', '.join(self.configs)}: pick one with --config"
            )
        return self.configs[0]

    def spec(self, config: str | None = None) -> TaskSpec:
        """The spec of ``config`` (the only config when None)."""
        return self._entry(config)[1].spec

    def _entry(self, config: str | None) -> tuple[str, ConfigEntry]:
        """``config`` (the only one when None) and its manifest entry."""
        config = self.resolve_config(config)
        if config not in self.manifest.configs:
            known = ", ".join(self.configs)
            raise SplitError(f"no config {shown(config, 60)!r} in {self.root}; configs: {known}")
        return config, self.manifest.configs[config]

    def split(self, config: str | None, split: str = "test") -> ReferenceSplit:
        """One split's tokens ``(rows, length)`` in id order, and its spec (``config``: the
        only one when None); the probe splits: :meth:`probe`."""
        return self.splits(config, [split])[split]

    @_pinned_read
    def splits(
        self, config: str | None, splits: Sequence[str], cut: Collection[str] = ()
    ) -> dict[str, ReferenceSplit]:
        """The tokens of ``splits``, each file checked as read (rows of the splits in ``cut``:
        their first train-length tokens)."""
        splits, cut = names(splits, "splits", "split"), names(cut, "cut", "split")
        config, entry = self._entry(config)
        for split in splits:
            if split not in entry.splits:
                known = ", ".join(entry.ordered_splits)
                raise SplitError(
                    f"no split {shown(split, 60)!r} in config {config!r}; splits: {known}"
                )
        out = {}
        for split in splits:
            info = entry.splits[split]
            for file in info.files:  # the rows posgen.json claims, checked before memory is taken
                if (path := inside(self.root, file.path)) is not None and path.is_file():
                    path.open("rb").close()  # PermissionError: not damage (the CLI: exit 2)
                problems = file_problems(
                    self.root, self.format, (config, split, entry.spec_id), file, hashes=False
                )
                if problems:
                    raise DamagedDataset(self.root, [str(problems[0])])
            length = min(info.length, entry.spec.train_length) if split in cut else info.length
            tokens = np.empty((info.rows, length), dtype=storage_dtype(entry.spec.modulus))
            batch = read_batch_rows(info.length)
            for file in info.files:
                buffer = self._read_file((config, split, entry.spec_id), file)
                batches = self.format.batches(buffer, max(1, min(file.rows, batch)))
                self._fill(tokens, batches, file, entry.spec.modulus, info.length)
            files = tuple((file.path, file.sha256) for file in info.files)
            out[split] = ReferenceSplit(config, split, entry.spec, tokens, files)
        return out

    def _fill(
        self, tokens: np.ndarray, batches: Any, file: FileEntry, modulus: int, length: int
    ) -> None:
        """Copy one file's rows into ``tokens[first_id:]``, checking ids, nulls, the row
        ``length`` and the vocabulary."""
        row, shown = file.first_id, self.root / file.path

        def damaged(message: str) -> DamagedDataset:
            return DamagedDataset(self.root, [f"{shown}: {message}"])

        for batch in batches:
            table = pa.Table.from_batches([batch]).select(["id", "tokens"])
            ids = table.column("id").to_numpy()
            if not np.array_equal(ids, np.arange(row, row + len(ids))):
                raise damaged(f"does not hold rows {row}.. in order")
            if _null_count(table.column("tokens")):
                raise damaged("null values in tokens")
            try:
                values = table_tokens(table)
            except ValueError as error:
                raise damaged(str(error)) from None
            if values.shape[0] and values.shape[1] != length:
                raise damaged(f"rows {'shorter' if values.shape[1] < length else 'longer'} "
                              "than the manifest's")  # fmt: skip
            if values.size and int(values.max()) >= modulus:
                at = int(np.argmax(values.max(axis=1) >= modulus))
                raise damaged(
                    f"row {row + at} holds token {int(values[at].max())}, "
                    f"outside the vocabulary 0..{modulus - 1}"
                )
            tokens[row : row + len(ids)] = values[:, : tokens.shape[1]]
            row += len(ids)
        if row != file.first_id + file.rows:
            raise damaged(
                f"{counted(row - file.first_id, 'row')}, the manifest records {file.rows}"
            )

    @_pinned_read
    def probe(self, config: str | None, split: str = "probe") -> ProbeSplit:
        """The probe split ``config``/``split``, every file checked as read."""
        config, entry = self._entry(config)
        if named(split, "split") not in entry.spec.probe_names or split not in entry.splits:
            known = ", ".join(entry.spec.probe_names)
            raise SplitError(
                f"no probe split {shown(repr(split), 60)} in config {config!r}; probe splits: "
                f"{known}"
            )
        info, tables = entry.splits[split], []
        for file in info.files:
            buffer = self._read_file((config, split, entry.spec_id), file)
            batches = list(self.format.batches(buffer, max(1, file.rows), PROBE_COLUMNS))
            tables.append(pa.Table.from_batches(batches).select(list(PROBE_COLUMNS)))
        try:  # the files match the manifest: rows unlike a probe split's are damage
            probe = probe_from_table(pa.concat_tables(tables), entry.spec, config, split)
        except SplitError as error:
            files = ", ".join(str(self.root / file.path) for file in info.files)
            raise DamagedDataset(self.root, [f"{files}: {error}"]) from None
        if probe.tokens.shape != (info.rows, info.length):
            raise SplitError(
                f"{config}/{split} holds tokens of shape {probe.tokens.shape}; the manifest says "
                f"({info.rows}, {info.length})"
            )
        return probe

    def _read_file(self, where: Where, entry: FileEntry) -> pa.Buffer:
        """The bytes of one listed file, read once and checked in memory."""
        path, data = inside(self.root, entry.path), None
        if path is not None and path.is_file():
            try:
                data = read_bounded(path, entry.bytes)
            except PermissionError:
                raise  # not damage: the user may not read it (the CLI says so, exit 2)
            except OSError:
                pass  # file_problems names it
        problems = file_problems(self.root, self.format, where, entry, data=data)
        if problems or data is None:  # the first problem names the file: one line, as before
            raise DamagedDataset(
                self.root, [str(problems[0]) if problems else f"{path}: unreadable"]
            )
        return pa.py_buffer(data)

    def lines(self, configs: list[str] | None = None, hashes: bool = True) -> list[str]:
        """One line per problem of the files of ``configs`` (all when None)."""
        configs = None if configs is None else names(configs, "configs", "config")
        hashes = flag(hashes, "hashes")
        known = ", ".join(self.configs)
        unknown = [c for c in configs or [] if c not in self.manifest.configs]
        if unknown:
            return [f"{self.root / MANIFEST_NAME}: no config {c!r}; has {known}" for c in unknown]
        problems = check_files(self.root, self.manifest, configs, hashes)
        return [str(p) for p in problems + card_problems(self.root, self.manifest, configs)]

    @_pinned_read
    def verify(self, configs: list[str] | str | None = None) -> Manifest:
        """The manifest once every file of ``configs`` (a name or names; all when None) matches
        it, else :class:`DamagedDataset`."""
        configs = None if configs is None else names(configs, "configs", "config")
        for config in configs or []:
            self._entry(config)
        lines = self.lines(configs)
        if lines:
            raise DamagedDataset(self.root, lines)
        return self.manifest

    def load(self, config: str | None = None, verify: bool = True) -> datasets.DatasetDict:
        """Every split of ``config`` (``cot`` or ``cot-probe``; when None, the card's default:
        the config named ``default``, else the first) as ``datasets`` loads it; with ``verify``,
        exactly the files ``posgen.json`` lists, checked first (not those the card or the
        sidecars name)."""
        verify = flag(verify, "verify")

        def read(handle: Dataset) -> datasets.DatasetDict:
            if not verify:
                name = named(config, "config") or handle.manifest.default_config
                return handle.format.load(handle.root, name)
            configs = {
                name: (source, splits) for name, source, splits in handle.manifest.hf_configs()
            }
            name = named(config, "config") or handle.manifest.default_config
            if name not in configs:
                known = ", ".join(configs)
                raise SplitError(f"no config {name!r} in {handle.root}; configs: {known}")
            source, splits = configs[name]
            handle.verify([source] if config else None)
            listed = {s: [handle.root / f.path for f in info.files] for s, info in splits.items()}
            return handle.format.load_files(listed)

        return self.read(read)


def load(path: str | Path, config: str | None = None, verify: bool = True) -> datasets.DatasetDict:
    """``posgen.load``: :meth:`Dataset.load`; ``verify=False`` reads no manifest."""
    if flag(verify, "verify"):
        return Dataset.open(path).load(config)
    root = dataset_path(path)
    if not root.is_dir():  # datasets would look for it on the Hub
        raise NotADataset(root, [f"{root}: no such folder; nothing was read (not a Hub id)"])
    config = named(config, "config") or None  # "": the default config, as load_dataset's
    try:
        if config in (".", "..") or "/" in (config or ""):  # a path: never read outside root
            raise ValueError(config)
        return pinned(root, lambda: folder_format(root, config).load(root, config))
    except ValueError:  # datasets' "BuilderConfig 'zzz' not found"
        import datasets

        if config is None or config in (known := datasets.get_dataset_config_names(str(root))):
            raise
        raise SplitError(
            f"no config {shown(config)!r} in {root}; configs: {', '.join(known)}"
        ) from None


def probe_from_table(
    table: pa.Table, spec: TaskSpec, config: str | None = None, split: str | None = None
) -> ProbeSplit:
    """A :class:`ProbeSplit` from a table with the probe columns, rows in id order."""
    missing = [name for name in PROBE_COLUMNS if name not in table.column_names]
    if missing:
        raise SplitError(f"not a probe split: no {', '.join(missing)} column")
    nulls = [name for name in PROBE_COLUMNS if _null_count(table.column(name))]
    if nulls:
        raise SplitError(f"null values in {', '.join(nulls)}")
    ids = table.column("id").to_numpy()
    if not np.array_equal(ids, np.arange(ids.size)):
        order = np.argsort(ids, kind="stable")
        if not np.array_equal(ids[order], np.arange(ids.size)):
            raise SplitError("probe ids must be 0 .. rows-1")
        table = table.take(pa.array(order))
    try:
        tokens = table_tokens(table)
    except ValueError as error:
        raise SplitError(f"probe tokens: {error}") from None
    counts, probed = list_values(table.column("probed"))
    far_counts, far_rule = list_values(table.column("far_rule"))
    if not np.array_equal(counts, far_counts):
        raise SplitError("probe rows whose far_rule and probed lists differ in length")
    if probed.size and (int(probed.min()) < spec.window or int(probed.max()) >= tokens.shape[1]):
        raise SplitError(f"probed positions outside [{spec.window}, {tokens.shape[1]})")
    rows = np.repeat(np.arange(tokens.shape[0]), counts)
    return ProbeSplit(
        config, split, spec, tokens, rows, probed.astype(np.int64), far_rule.astype(np.int64)
    )


def _null_count(column: pa.ChunkedArray) -> int:
    """Null rows and, in a list column, null values."""
    inner = pc.list_flatten(column).null_count if hasattr(column.type, "value_type") else 0
    return column.null_count + inner


def inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` if it resolves inside ``root`` (symlinks followed), else None."""
    path = Path(root) / relative
    try:
        if not path.resolve().is_relative_to(Path(root).resolve()):
            return None
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return path


def file_problems(
    root: Path,
    fmt: Format,
    where: Where,
    entry: FileEntry,
    hashes: bool = True,
    data: bytes | None = None,
) -> list[Problem]:
    """What is wrong with one listed file; ``data``: its bytes, when already read."""
    config, split, spec_id = where

    def problems(*messages: str) -> list[Problem]:
        return [Problem(str(Path(root) / entry.path), m, config, split) for m in messages]

    path = inside(root, entry.path)
    if path is None:
        return problems("leads outside the dataset folder (a symlink or ..); not read")
    if not path.is_file():
        return problems(f"file is missing (listed in {MANIFEST_NAME})")
    lines = []
    try:
        size = path.stat().st_size
        if size != entry.bytes:
            state = "truncated" if size < entry.bytes else "longer than recorded"
            lines.append(f"{size:,} bytes, {MANIFEST_NAME} records {entry.bytes:,} ({state})")
        digest = hashlib.sha256(data).hexdigest() if data is not None else None
        if hashes and (digest or sha256_file(path)) != entry.sha256:
            lines.append(SHA_CHANGED)
    except OSError as error:
        return problems(f"unreadable ({error.strerror or error})")
    if lines and data is not None:  # the bytes read are not the listed ones: not parsed
        return problems(*lines)
    try:
        facts = fmt.facts(pa.py_buffer(data) if data is not None else path)
    except (OSError, pa.ArrowException, ValueError, KeyError) as error:
        if machine_limit(error):  # ArrowMemoryError, no thread: a limit, not damage
            raise
        return problems(*lines, f"not readable as {fmt.name.capitalize()} ({shown(error)})")
    if facts.problem is not None:
        lines.append(facts.problem)
    if facts.rows != entry.rows:
        lines.append(f"{counted(facts.rows, 'row')}, {MANIFEST_NAME} records {entry.rows}")
    if facts.metadata:  # Parquet footers name their place; IPC shards carry no provenance
        rows = f"{entry.first_id}:{entry.first_id + entry.rows}"
        found = tuple(facts.metadata.get(f"posgen.{k}") for k in ("config", "split", "spec_id"))
        found += (facts.metadata.get("posgen.rows"),)
        if found != (config, split, spec_id, rows):
            lines.append(
                f"holds config/split/spec/rows {'/'.join(map(str, found))}, {MANIFEST_NAME} "
                f"lists it as {config}/{split}/{spec_id}/{rows} (files swapped or replaced)"
            )
    return problems(*lines)


def data_files(root: Path, fmt: Format) -> list[str]:
    """Relative paths of every data file in ``root`` (hidden folders and caches skipped)."""
    found = []
    for folder, dirs, files in walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in DATA_SUFFIXES:
                found.append(str((Path(folder) / name).relative_to(root)))
    return [path for path in found if not fmt.is_cache(path)]


def check_files(
    root: Path, manifest: Manifest, configs: list[str] | None = None, hashes: bool = True
) -> list[Problem]:
    """Every problem of the files of ``configs``, then the data files not listed."""
    fmt = manifest_format(manifest)
    problems = []
    for config, split, entry in manifest.files(configs):
        where = (config, split, manifest.configs[config].spec_id)
        problems += file_problems(root, fmt, where, entry, hashes)
    lists = f"is not what {MANIFEST_NAME} lists (datasets would load other files)"
    owners = {hf: (config, next(iter(splits))) for hf, config, splits in manifest.hf_configs()}
    for path, body in fmt.sidecars(manifest).items():  # what datasets follows to the shards
        parts = Path(path).parts  # CONFIG/dataset_dict.json or CONFIG/SPLIT/NAME
        config, split = owners[parts[0]]
        if configs is not None and config not in configs:
            continue
        found = inside(root, path)
        try:
            same = found is not None and found.is_file() and read_bounded(found, len(body)) == body
        except OSError:
            same = False
        if not same:
            where = (config, parts[1] if len(parts) > 2 else split)
            problems.append(
                Problem(str(Path(root) / path), f"{lists}; regenerate the dataset", *where)
            )
    listed = {entry.path for _, _, entry in manifest.files()}
    return problems + [
        Problem(str(Path(root) / path), f"not listed in {MANIFEST_NAME} (datasets would load it)")
        for path in data_files(root, fmt)
        if path not in listed and not path.startswith(PARTS_DIR)
    ]


def card_problems(
    root: Path, manifest: Manifest, configs: list[str] | None = None
) -> list[Problem]:
    """The card's ``configs`` (what ``load_dataset`` reads) where they differ from the manifest's
    for ``configs`` (all when None); a folder without a card has none."""
    path = Path(root) / CARD_NAME
    if not os.path.lexists(path):
        return []
    import yaml
    from huggingface_hub.repocard import REGEX_YAML_BLOCK  # as datasets finds the front matter

    try:
        text = read_bounded(path, MAX_CARD_BYTES)[:MAX_CARD_BYTES].decode("utf-8")
        block = REGEX_YAML_BLOCK.search(text)
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # safe_load's rules, in C
        found = yaml.load(block.group(2), Loader=loader) if block else None
    except PermissionError:
        raise  # not damage: the user may not read it (the CLI says so, exit 2)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError, ValueError):
        found = None
    listed = found.get("configs") if isinstance(found, dict) else None
    expected = {c["config_name"]: c for c in card_configs(manifest)}
    named = [n for n, source, _ in manifest.hf_configs() if configs is None or source in configs]
    if not isinstance(listed, list):
        wrong = ["none found"]
    else:
        card = {str(c.get("config_name")): c for c in listed if isinstance(c, dict)}
        wrong = [name for name in named if card.get(name) != expected[name]]
        if configs is None and len(listed) != len(expected):
            wrong.append(f"{len(listed)} listed, {len(expected)} expected")
    wrong += card_info_problems(found, manifest, named)
    if not wrong:
        return []
    message = (
        f"its configs ({', '.join(wrong)}) are not the files {MANIFEST_NAME} lists (load_dataset "
        f"would read other data, or refuse it); re-render it with `posgen card {root}`"
    )
    return [Problem(str(path), message)]


def card_info_problems(card: Any, manifest: Manifest, named: list[str]) -> list[str]:
    """The configs of ``named`` whose ``dataset_info`` in the card is not posgen's: features
    (``load_dataset`` casts the files to them) or split sizes (it refuses the split when the
    rows differ: ``NonMatchingSplitsSizesError``)."""
    infos = card.get("dataset_info") if isinstance(card, dict) else None
    infos = [infos] if isinstance(infos, dict) else infos if isinstance(infos, list) else []
    expected = {
        name: (
            [feature_entry(f) for f in split_schema(manifest.configs[source].spec, split)],
            {split: entry.rows for split, entry in splits.items()},
        )
        for name, source, splits in manifest.hf_configs()
        for split in list(splits)[:1]
    }
    found = {info.get("config_name", "default"): info for info in infos if isinstance(info, dict)}
    wrong = []
    for name in named:
        info = found.get(name, {})
        if info.get("features", expected[name][0]) != expected[name][0]:
            wrong.append(f"{name} features")
        splits = info.get("splits")
        if splits is not None:
            sizes = splits if isinstance(splits, list) else [splits]
            sizes = {s.get("name"): s.get("num_examples") for s in sizes if isinstance(s, dict)}
            if sizes != expected[name][1]:
                wrong.append(f"{name} split sizes")
    return wrong


def check_dataset(
    root: str | Path, configs: list[str] | None = None, hashes: bool = True
) -> list[str]:
    """Problems of the dataset at ``root``, one line each, the manifest's own included."""
    root = Path(root)
    try:
        return Dataset.open(root).read(lambda handle: handle.lines(configs, hashes))
    except DamagedDataset as error:
        return error.lines
    except OSError as error:
        return [f"{root / MANIFEST_NAME}: unreadable ({error.strerror or error})"]
