"""The official specs' datasets never change by accident: every Parquet file of ``paper``,
``posgen-v1`` and ``posgen-v2`` (probe splits included) is pinned by its bytes and by its
content (every column, row by row), and every config by its spec id.

The pins (``official_pins.json``) were taken before the restructuring of issue 25. A change
of the Parquet encoding made on purpose changes ``sha256`` but never ``content``: say so
and re-pin the bytes only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

PINS = json.loads((Path(__file__).with_name("official_pins.json")).read_text())


def content_digest(path: Path) -> str:
    """sha256 over every column of a Parquet file, by name, as Python values row by row."""
    table = pq.read_table(path)
    digest = hashlib.sha256()
    for name in sorted(table.column_names):
        digest.update(name.encode())
        digest.update(json.dumps(table.column(name).to_pylist(), sort_keys=True).encode())
    return digest.hexdigest()


@pytest.fixture(params=sorted(PINS))
def official_folder(request, official) -> tuple[str, Path]:
    """The official spec's dataset, as ``posgen publish`` (and so ``posgen generate``) writes
    it, shared with the card tests."""
    return request.param, official(request.param)[0]


def test_official_datasets_keep_their_spec_ids(official_folder):
    name, folder = official_folder
    manifest = json.loads((folder / "posgen.json").read_text())
    ids = {config: entry["spec_id"] for config, entry in manifest["configs"].items()}
    assert ids == PINS[name]["spec_ids"]


def test_official_datasets_keep_every_row_of_every_split(official_folder):
    name, folder = official_folder
    files = sorted(p.relative_to(folder).as_posix() for p in (folder / "data").rglob("*.parquet"))
    assert files == sorted(PINS[name]["files"])
    changed = [
        file
        for file in files
        if content_digest(folder / file) != PINS[name]["files"][file]["content"]
    ]
    assert changed == []


def test_official_parquet_files_stay_byte_identical(official_folder):
    name, folder = official_folder
    changed = [
        file
        for file, pin in PINS[name]["files"].items()
        if hashlib.sha256((folder / file).read_bytes()).hexdigest() != pin["sha256"]
    ]
    assert changed == []
