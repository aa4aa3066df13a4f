"""Damage a real dataset folder so that one kind of validation check really fails.

Used through the ``validator`` fixture (tests/conftest.py) by the publish and card tests, and
by the card tests' failing report: the real validator runs on the damaged data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from posgen.spec import is_probe_split
from posgen.store.formats import open_writer, rows_to_table, table_tokens
from posgen.store.manifest import read_manifest, sha256_file


def _record(root: Path, change: Callable[[dict], None]) -> None:
    """Edit the raw ``posgen.json`` (as a careless user or a bad disk would)."""
    body = json.loads((root / "posgen.json").read_text())
    change(body)
    (root / "posgen.json").write_text(json.dumps(body, indent=2) + "\n")


def rewrite_rows(root: Path, change: Callable[[object], object], first_only: bool = False) -> None:
    """Apply ``change`` to the tokens of every Parquet file (or the first) of the splits that
    are not probe splits, and record the new bytes in the manifest, so that only the change
    itself is wrong."""
    manifest = read_manifest(root)
    new: dict[str, tuple[str, int]] = {}
    files = [entry for _, split, entry in manifest.files() if not is_probe_split(split)]
    for entry in files[:1] if first_only else files:
        path = root / entry.path
        table = pq.read_table(path)
        tokens = change(table_tokens(table).copy())
        with open_writer(path, table.schema) as writer:
            writer.write_table(rows_to_table(entry.first_id, tokens, table.schema))
        new[entry.path] = (sha256_file(path), path.stat().st_size)

    def refresh(body: dict) -> None:
        for config in body["configs"].values():
            for split in config["splits"].values():
                for item in split["files"]:
                    if item["path"] in new:
                        item["sha256"], item["bytes"] = new[item["path"]]

    _record(root, refresh)


def break_window(root: Path) -> None:
    """One target of row 0 of every file no longer follows its window."""
    modulus = next(iter(read_manifest(root).configs.values())).spec.modulus
    window = min(entry.spec.window for entry in read_manifest(root).configs.values())

    def change(tokens):
        tokens[0, window] = (int(tokens[0, window]) + 1) % modulus
        return tokens

    rewrite_rows(root, change)


def break_hygiene(root: Path) -> None:
    """Row 1 of the first file repeats row 0 (a repeated row in disjoint data)."""

    def change(tokens):
        tokens[1] = tokens[0]
        return tokens

    rewrite_rows(root, change, first_only=True)


def break_integrity(root: Path) -> None:
    """The manifest records another sha256 for the first file."""

    def change(body: dict) -> None:
        config = next(iter(body["configs"].values()))
        next(iter(config["splits"].values()))["files"][0]["sha256"] = "0" * 64

    _record(root, change)


BREAKS: dict[str, Callable[[Path], None]] = {
    "window": break_window,
    "hygiene": break_hygiene,
    "integrity": break_integrity,
}
