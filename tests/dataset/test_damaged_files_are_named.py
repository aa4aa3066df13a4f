"""Damaged files on disk (truncated, flipped, swapped, missing, extra, an edited
``posgen.json``) are caught at load time and by ``posgen validate``, naming the file."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from posgen import write_dataset
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.store import DamagedDataset, check_dataset
from posgen.store.dataset import load

ROOT = Path(__file__).resolve().parents[2]
TRAIN0 = "data/cot/train-00000-of-00003.parquet"
TRAIN1 = "data/cot/train-00001-of-00003.parquet"
TRAIN2 = "data/cot/train-00002-of-00003.parquet"
OTHER = "data/semirecursive/train-00000-of-00003.parquet"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A small two-config dataset with three train shards per config."""
    fields = dict(train_size=300, val_size=20, test_size=20, test_length=[96, 128])
    bench = BenchmarkSpec(
        name="damage",
        configs={t: TaskSpec(task=t, **fields) for t in ("cot", "semirecursive")},
    )
    out = tmp_path_factory.mktemp("pristine") / "ds"
    write_dataset(bench, out, shard_bytes=8000)
    return out


def rewrite(change: Callable[[bytes], bytes], name: str = TRAIN1) -> Callable[[Path], str]:
    """Damage: the file ``name`` rewritten as ``change`` of its bytes."""

    def damage(root: Path) -> str:
        (root / name).write_bytes(change((root / name).read_bytes()))
        return name

    return damage


def flipped(offset_of: Callable[[int], int]) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        at = offset_of(len(data))
        return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]

    return change


def swap(a: str, b: str) -> Callable[[Path], str]:
    def damage(root: Path) -> str:
        tmp = root / "swap.tmp"
        os.rename(root / a, tmp)
        os.rename(root / b, root / a)
        os.rename(tmp, root / b)
        return a

    return damage


def edit_manifest(change: Callable[[dict], None]) -> Callable[[Path], str]:
    def damage(root: Path) -> str:
        manifest = json.loads((root / "posgen.json").read_text())
        change(manifest)
        (root / "posgen.json").write_text(json.dumps(manifest, indent=2))
        return "posgen.json"

    return damage


def first_file(manifest: dict) -> dict:
    return manifest["configs"]["cot"]["splits"]["train"]["files"][1]


def set_spec(manifest: dict, **fields) -> None:
    manifest["configs"]["cot"]["spec"].update(fields)


def set_spec_and_id(manifest: dict) -> None:
    """A careful edit: the spec and its id changed together (footers still disagree)."""
    set_spec(manifest, seed=5)
    spec = TaskSpec(**manifest["configs"]["cot"]["spec"])
    manifest["configs"]["cot"]["spec_id"] = spec.spec_id
    bench = BenchmarkSpec(
        name=manifest["benchmark"]["name"],
        configs={k: v["spec"] for k, v in manifest["configs"].items()},
    )
    manifest["benchmark"]["spec_id"] = bench.spec_id


def delete(root: Path) -> str:
    (root / TRAIN1).unlink()
    return TRAIN1


def extra(root: Path) -> str:
    shutil.copy(root / TRAIN1, root / "data/cot/train-00003-of-00003.parquet")
    return "data/cot/train-00003-of-00003.parquet"


def no_manifest(root: Path) -> str:
    (root / "posgen.json").unlink()
    return "posgen.json"


def same_size_swap(root: Path) -> str:
    """Swap two shards and fix the manifest's sizes and sums to match (only footers tell)."""
    swap(TRAIN0, TRAIN1)(root)
    manifest = json.loads((root / "posgen.json").read_text())
    files = manifest["configs"]["cot"]["splits"]["train"]["files"]
    files[0]["bytes"], files[1]["bytes"] = files[1]["bytes"], files[0]["bytes"]
    files[0]["sha256"], files[1]["sha256"] = files[1]["sha256"], files[0]["sha256"]
    (root / "posgen.json").write_text(json.dumps(manifest))
    return TRAIN0


DAMAGE: dict[str, Callable[[Path], str]] = {
    "truncated to half": rewrite(lambda data: data[: len(data) // 2]),
    "truncated by one byte": rewrite(lambda data: data[:-1]),
    "truncated to nothing": rewrite(lambda data: b""),
    "extended by 7 bytes": rewrite(lambda data: data + b"\0" * 7),
    "byte flipped in the header": rewrite(flipped(lambda n: 4)),
    "byte flipped in the data": rewrite(flipped(lambda n: n // 2)),
    "byte flipped in the footer": rewrite(flipped(lambda n: n - 12)),
    "shards of one split swapped": swap(TRAIN1, TRAIN2),
    "shards of two configs swapped": swap(TRAIN0, OTHER),
    "swapped with the manifest fixed up": same_size_swap,
    "shard deleted": delete,
    "unlisted shard added": extra,
    "manifest: spec field edited": edit_manifest(lambda m: set_spec(m, train_size=301)),
    "manifest: spec and ids edited": edit_manifest(set_spec_and_id),
    "manifest: sha256 edited": edit_manifest(lambda m: first_file(m).update(sha256="0" * 64)),
    "manifest: bytes edited": edit_manifest(lambda m: first_file(m).update(bytes=1)),
    "manifest: rows edited": edit_manifest(lambda m: first_file(m).update(rows=99)),
    "manifest: path removed": edit_manifest(lambda m: first_file(m).pop("path")),
    "manifest: not JSON": rewrite(lambda data: data[:-40], "posgen.json"),
    "manifest: deleted": no_manifest,
}


ENTRY_EDITS = ("manifest: sha256 edited", "manifest: bytes edited", "manifest: rows edited")


@pytest.fixture
def damaged(pristine, tmp_path, request) -> tuple[Path, str]:
    root = tmp_path / "ds"
    shutil.copytree(pristine, root)
    return root, DAMAGE[request.param](root)


def test_the_pristine_dataset_passes_and_loads(pristine):
    assert check_dataset(pristine) == []
    assert load(pristine, "cot")["train"].num_rows == 300


@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
def test_damage_is_caught_before_loading_naming_the_file(recorded, damaged, request):
    root, name = damaged
    lines = check_dataset(root)
    with recorded("damage", request.node.callspec.id):
        assert any(str(root) in line and name in line for line in lines), lines
        with pytest.raises(DamagedDataset) as caught:
            load(root, "cot")
        assert name in str(caught.value)


@pytest.mark.parametrize("damaged", ["manifest: spec field edited"], indirect=True)
def test_only_the_verified_load_notices_an_edited_manifest(damaged):
    root, _ = damaged
    assert load(root, "cot", verify=False)["train"].num_rows == 300  # silently wrong
    with pytest.raises(DamagedDataset, match="the manifest was edited"):
        load(root, "cot")


@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
def test_posgen_validate_exits_1_naming_the_damaged_file(cli, damaged, request):
    root, name = damaged
    result = cli("validate", root)  # in-process: the CLI's own exit code and output
    text = result.output
    # a folder without posgen.json is not a dataset at all: a usage error (2) is fair too
    assert result.exit_code in ((1, 2) if not (root / "posgen.json").exists() else (1,)), text
    assert "Traceback" not in text
    assert isinstance(result.exception, SystemExit | type(None)), repr(result.exception)
    # an edited file entry may be blamed on the file it describes rather than on posgen.json
    entry_edit = request.node.callspec.id in ENTRY_EDITS
    assert Path(name).name in text or (entry_edit and Path(TRAIN1).name in text), text
