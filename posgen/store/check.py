"""The one check that a dataset folder holds what its manifest lists, file by file.

Used by ``posgen.load`` (before loading), ``posgen validate`` (its integrity check),
``posgen merge`` (after finishing) and the card (before reading ``dataset_info``), so a
damaged file is reported in the same words everywhere:

- ``posgen.json`` is present, fits the typed manifest and its spec ids match its specs
  (:func:`posgen.store.manifest.read_manifest`);
- every listed file stays inside the folder (symlinks included), exists with the recorded
  size and sha256, and holds the recorded rows; a Parquet footer names the config, split,
  spec id and rows the manifest puts it under (two files swapped are caught);
- no unlisted data file sits in the folder (``datasets`` would load it too).

Tokens are not recomputed here; ``posgen validate`` does that.

>>> check_dataset(Path("/nonexistent/ds"))
['/nonexistent/ds has no posgen.json: not a posgen dataset']
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from posgen.store.formats import DATA_SUFFIXES, FileFacts, Format, Source, manifest_format
from posgen.store.layout import MANIFEST_NAME, PARTS_DIR
from posgen.store.manifest import (
    DamagedDataset,
    FileEntry,
    Manifest,
    read_bounded,
    read_manifest,
    sha256_file,
)
from posgen.store.pinned import read_whole


@dataclass(frozen=True)
class Problem:
    """One problem with one file; ``str()`` gives the line every command prints."""

    shown: str
    message: str
    config: str | None = None
    split: str | None = None

    def __str__(self) -> str:
        return f"{self.shown}: {self.message}"


def inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` if it resolves inside ``root`` (symlinks followed), else None.

    >>> inside(Path("/tmp"), "x/y") == Path("/tmp/x/y")
    True
    """
    path = Path(root) / relative
    try:
        if not path.resolve().is_relative_to(Path(root).resolve()):
            return None
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return path


def read_facts(fmt: Format, path: Source) -> FileFacts | str:
    """The file's facts, or why it cannot be read as ``fmt``."""
    try:
        return fmt.facts(path)
    except (OSError, pa.ArrowException, ValueError, KeyError) as error:
        reason = " ".join(str(error).split())[:200]
        return f"not readable as {fmt.name.capitalize()} ({reason})"


def _content_problems(fmt: Format, path: Source, where: Where, entry: FileEntry) -> list[str]:
    facts = read_facts(fmt, path)
    if isinstance(facts, str):
        return [facts]
    config, split, spec_id, _ = where
    lines = []
    if facts.rows != entry.rows:
        lines.append(f"{facts.rows} rows, {MANIFEST_NAME} records {entry.rows}")
    if facts.metadata:  # Parquet footers name their place; IPC shards carry no provenance
        rows = f"{entry.first_id}:{entry.first_id + entry.rows}"
        found = tuple(facts.metadata.get(f"posgen.{k}") for k in ("config", "split", "spec_id"))
        found += (facts.metadata.get("posgen.rows"),)
        if found != (config, split, spec_id, rows):
            lines.append(
                f"holds config/split/spec/rows {'/'.join(map(str, found))}, {MANIFEST_NAME} "
                f"lists it as {config}/{split}/{spec_id}/{rows} (files swapped or replaced)"
            )
    return lines


Where = tuple[str, str, str, int]
"""A file's place: ``(config, split, spec id, row length)``."""


def file_problems(
    root: Path, fmt: Format, where: Where, entry: FileEntry, hashes: bool = True
) -> list[Problem]:
    """What is wrong with one listed file (empty when it matches its entry)."""
    shown = str(Path(root) / entry.path)

    def problem(message: str) -> Problem:
        return Problem(shown, message, where[0], where[1])

    path = inside(root, entry.path)
    if path is None:
        return [problem("leads outside the dataset folder (a symlink or ..); not read")]
    if not path.is_file():
        return [problem(f"file is missing (listed in {MANIFEST_NAME})")]
    try:
        size = path.stat().st_size
        lines = []
        if size != entry.bytes:
            state = "truncated" if size < entry.bytes else "longer than recorded"
            lines.append(f"{size:,} bytes, {MANIFEST_NAME} records {entry.bytes:,} ({state})")
        if hashes and sha256_file(path) != entry.sha256:
            lines.append(
                f"sha256 differs from the manifest {MANIFEST_NAME} (bytes changed, or files "
                "swapped)"
            )
    except OSError as error:
        return [problem(f"unreadable ({error.strerror or error})")]
    lines += _content_problems(fmt, path, where, entry)
    return [problem(line) for line in lines]


def read_listed(root: Path, fmt: Format, where: Where, entry: FileEntry) -> pa.Buffer:
    """The bytes of one listed file, read once and checked against its entry.

    Size, sha256 and footer are checked on the bytes in memory, so what the caller parses
    is exactly what the manifest lists, even if the file changes afterwards. Raises
    :class:`DamagedDataset` with one line per problem (the lines :func:`file_problems`
    gives for the file on disk).
    """
    shown = str(Path(root) / entry.path)

    def damaged(messages: list[str]) -> DamagedDataset:
        return DamagedDataset(Path(root), [f"{shown}: {message}" for message in messages])

    path = inside(root, entry.path)
    if path is None:
        raise damaged(["leads outside the dataset folder (a symlink or ..); not read"])
    if not path.is_file():
        raise damaged([f"file is missing (listed in {MANIFEST_NAME})"])
    try:
        raw = read_bounded(path, entry.bytes)
    except PermissionError:
        raise  # not damage: the user may not read it (the CLI says so, exit 2)
    except OSError as error:
        raise damaged([f"unreadable ({error.strerror or error})"]) from None
    if len(raw) != entry.bytes:
        state = "truncated" if len(raw) < entry.bytes else "longer than recorded"
        raise damaged([f"{MANIFEST_NAME} records {entry.bytes:,} bytes ({state})"])
    if hashlib.sha256(raw).hexdigest() != entry.sha256:
        raise damaged(
            [f"sha256 differs from the manifest {MANIFEST_NAME} (bytes changed, or files swapped)"]
        )
    buffer = pa.py_buffer(raw)
    problems = _content_problems(fmt, buffer, where, entry)
    if problems:
        raise damaged(problems)
    return buffer


def data_files(root: Path) -> list[str]:
    """Relative paths of every data file in ``root`` (hidden folders skipped, links not
    followed)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in DATA_SUFFIXES:
                found.append(str((Path(folder) / name).relative_to(root)))
    return found


def unlisted_problems(root: Path, manifest: Manifest) -> list[Problem]:
    """Data files in the folder that the manifest does not list."""
    listed = {entry.path for _, _, entry in manifest.files()}
    return [
        Problem(str(Path(root) / path), f"not listed in {MANIFEST_NAME} (datasets would load it)")
        for path in data_files(root)
        if path not in listed and not path.startswith(PARTS_DIR)
    ]


def check_files(
    root: Path, manifest: Manifest, configs: list[str] | None = None, hashes: bool = True
) -> list[Problem]:
    """Every problem of the files of ``configs`` (all when None), then unlisted files."""
    fmt = manifest_format(manifest)
    problems = []
    for config, split, entry in manifest.files(configs):
        info = manifest.configs[config]
        where = (config, split, info.spec_id, info.splits[split].length)
        problems += file_problems(root, fmt, where, entry, hashes)
    return problems + unlisted_problems(root, manifest)


def check_dataset(
    root: str | Path, configs: list[str] | None = None, hashes: bool = True
) -> list[str]:
    """Problems found in the dataset at ``root`` (empty when it matches its manifest).

    ``configs`` limits the file checks to those configs; ``hashes=False`` skips the sha256
    pass (sizes, footers and the manifest are still checked). A folder replaced during the
    check is checked again (:func:`posgen.store.pinned.read_whole`).
    """
    root = Path(root)
    return read_whole(root, lambda: _check(root, configs, hashes))


def _check(root: Path, configs: list[str] | None, hashes: bool) -> list[str]:
    try:
        manifest = read_manifest(root)
    except DamagedDataset as error:
        return error.lines
    except OSError as error:
        return [f"{root / MANIFEST_NAME}: unreadable ({error.strerror or error})"]
    unknown = [c for c in configs or [] if c not in manifest.configs]
    if unknown:
        known = ", ".join(manifest.configs)
        return [f"{root / MANIFEST_NAME}: no config {c!r}; has {known}" for c in unknown]
    return [str(problem) for problem in check_files(root, manifest, configs, hashes)]


def verify_dataset(root: str | Path, configs: list[str] | None = None) -> Manifest:
    """The manifest of ``root``; :class:`DamagedDataset` if :func:`check_dataset` finds
    anything."""
    lines = check_dataset(root, configs)
    if lines:
        raise DamagedDataset(Path(root), lines)
    return read_manifest(root)
