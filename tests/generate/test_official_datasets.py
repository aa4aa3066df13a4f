"""Every Parquet file of the official datasets (probe splits included) is pinned by its bytes and
its content, every config by its spec id (``official_pins.json``, taken before issue 25). An
encoding change made on purpose changes ``sha256``, never ``content``: re-pin the bytes only."""

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
    pins = PINS[name]["files"]
    assert [f for f in files if content_digest(folder / f) != pins[f]["content"]] == []


def test_official_parquet_files_stay_byte_identical(official_folder):
    name, folder = official_folder
    pins = PINS[name]["files"].items()
    sha = {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f, _ in pins}
    assert [f for f, pin in pins if sha[f] != pin["sha256"]] == []
