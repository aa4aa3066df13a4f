"""Damaged files and an edited or hostile ``posgen.json`` are caught before anything is read,
naming the file, in every reader; no listed path leads outside the folder."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from unittest.mock import Mock

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from posgen import write_dataset
from posgen.card import write_card
from posgen.scoring import load_reference, write_predictions
from posgen.spec import BenchmarkSpec, TaskSpec, default_benchmark
from posgen.store import DamagedDataset, check_dataset, read_manifest
from posgen.store.dataset import Dataset, SplitError, check_files, load
from posgen.store.manifest import NotADataset
from posgen.validate import validate

# small_dataset (tests/conftest.py): three train shards per config, one test shard
TRAIN0, TRAIN1, TRAIN2 = (f"data/cot/train-0000{i}-of-00003.parquet" for i in range(3))
OTHER = "data/semirecursive/train-00000-of-00003.parquet"
TEST_FILE = "data/cot/test-00000-of-00001.parquet"
VALIDATION = "data/cot/validation-00000-of-00001.parquet"
PROBE_FILE = "data/cot-probe/probe_128-00000-of-00001.parquet"


def rewrite(change: Callable[[bytes], bytes], name: str = TRAIN1) -> Callable[[Path], str]:
    def damage(root: Path) -> str:
        (root / name).write_bytes(change((root / name).read_bytes()))
        return name

    return damage


def flip(data: bytes, spot: int) -> bytes:
    return data[:spot] + bytes([data[spot] ^ 0x01]) + data[spot + 1 :]


def swap(a: str, b: str, fix: tuple[str, ...] = ()) -> Callable[[Path], str]:
    """Swap two files; ``fix`` swaps these keys of their entries too: ``bytes`` and ``sha256``
    (only footers tell), or ``path`` (``load_dataset`` finds files by name)."""

    def damage(root: Path) -> str:
        os.rename(root / a, root / "swap.tmp")
        os.rename(root / b, root / a)
        os.rename(root / "swap.tmp", root / b)
        if fix:
            body = json.loads((root / "posgen.json").read_text())
            entries = {f["path"]: f for c in body["configs"].values()
                       for s in c["splits"].values() for f in s["files"]}  # fmt: skip
            for key in fix:
                entries[a][key], entries[b][key] = entries[b][key], entries[a][key]
            (root / "posgen.json").write_text(json.dumps(body))
        return a

    return damage


def edit(change: Callable[[dict], object]) -> Callable[[Path], str]:
    def damage(root: Path) -> str:
        body = json.loads((root / "posgen.json").read_text())
        change(body)
        (root / "posgen.json").write_text(json.dumps(body))
        return "posgen.json"

    return damage


def saying(fragment: str, change: Callable[[dict], object]) -> Callable[[Path], str]:
    """``edit(change)``, which the error line names by ``fragment``."""
    return lambda root: edit(change)(root) and fragment


def renamed_test_split(body: dict) -> None:
    splits = body["configs"]["cot"]["splits"]
    body["configs"]["cot"]["splits"] = {"s" * 500: splits.pop("test"), **splits}


def split(body: dict) -> dict:
    return body["configs"]["cot"]["splits"]["test"]


def file0(body: dict) -> dict:
    return split(body)["files"][0]


def spec(body: dict) -> dict:
    return body["configs"]["cot"]["spec"]


def with_ids(body: dict, **fields) -> dict:
    """A careful edit: cot's spec ``fields`` and every spec id changed together."""
    cot = body["configs"]["cot"]
    cot["spec"] = TaskSpec(**{**cot["spec"], **fields}).canonical()
    cot["spec_id"] = TaskSpec(**cot["spec"]).spec_id
    configs = {name: entry["spec"] for name, entry in body["configs"].items()}
    body["benchmark"]["spec_id"] = BenchmarkSpec(
        name=body["benchmark"]["name"], configs=configs
    ).spec_id
    return body


def nested(depth: int) -> Callable[[Path], str]:
    deep = "[" * depth + "]" * depth
    key = b'"description": "'
    return rewrite(lambda data: data.replace(key, f'"x": {deep}, '.encode() + key), "posgen.json")


def unlink(name: str, then: Callable[[Path], object] = lambda path: None) -> Callable:
    """Delete ``name``; ``then`` may put something else (a folder, a pipe) in its place."""

    def damage(root: Path) -> str:
        (root / name).unlink()
        then(root / name)
        return name

    return damage


def extra(root: Path) -> str:
    shutil.copy(root / TRAIN1, root / "data/cot/train-00003-of-00003.parquet")
    return "data/cot/train-00003-of-00003.parquet"


def card_edited(old: str, new: str) -> Callable[[Path], str]:

    def damage(root: Path) -> str:
        card = write_card(root)
        card.write_text(card.read_text().replace(old, new))
        return "README.md"

    return damage


DAMAGE: dict[str, Callable[[Path], str]] = {
    "truncated to half": rewrite(lambda data: data[: len(data) // 2]),
    "truncated by one byte": rewrite(lambda data: data[:-1]),
    "truncated to nothing": rewrite(lambda data: b""),
    "extended by 7 bytes": rewrite(lambda data: data + b"\0" * 7),
    "probe shard truncated": rewrite(lambda data: data[:-20], PROBE_FILE),
    "byte flipped in the header": rewrite(lambda data: flip(data, 4)),
    "byte flipped in the data": rewrite(lambda data: flip(data, len(data) // 2)),
    "byte flipped in the footer": rewrite(lambda data: flip(data, len(data) - 12)),
    "shards of one split swapped": swap(TRAIN1, TRAIN2),
    "shards of two configs swapped": swap(TRAIN0, OTHER),
    "swapped with the manifest fixed up": swap(TRAIN0, TRAIN1, ("bytes", "sha256")),
    "files of two splits renamed, paths in the manifest too": swap(
        TEST_FILE, VALIDATION, ("path",)),
    "shard deleted": unlink(TRAIN1),
    "shard rewritten with its first row only": lambda root: pq.write_table(
        pq.read_table(root / TEST_FILE).slice(0, 1), root / TEST_FILE
    ) or "1 row, posgen.json records",
    "unlisted shard added": extra,
    "manifest: spec field edited": edit(lambda b: spec(b).update(train_size=121)),
    "manifest: spec and ids edited": edit(lambda b: with_ids(b, seed=5)),  # footers disagree
    "manifest: path removed": edit(lambda b: file0(b).pop("path")),
    "manifest: a file of 1 row": saying("the files hold 1 row, the split says",
                                        lambda b: file0(b).update(rows=1)),
    "manifest: a split named by 500 characters": saying(f"splits {'s' * 97}... are not the",
                                                        renamed_test_split),
    "manifest: a path of 500 characters": saying(f"lists data/cot/{'x' * 88}... where",
        lambda b: file0(b).update(path=f"data/cot/{'x' * 500}.parquet")),
    "manifest: not JSON": rewrite(lambda data: data[:-40], "posgen.json"),
    "manifest: deleted": unlink("posgen.json"),
    "card: a split pointed at another config's files": card_edited(
        "path: data/cot/test-*.parquet", "path: data/recursive/test-*.parquet"),
    "card: front matter not YAML": card_edited("configs:", "configs: [\n"),
    "card: tokens typed as strings (load_dataset casts to the card's features)": card_edited(
        "list: uint8", "list: string"),
    "card: split sizes edited (load_dataset refuses them)": card_edited(
        "num_examples: ", "num_examples: 9"),
}  # fmt: skip
ENTRY_EDITS = {  # an edited file entry may be blamed on the file it describes
    "manifest: sha256 edited": edit(lambda b: file0(b).update(sha256="0" * 64)),
    "manifest: bytes edited": edit(lambda b: file0(b).update(bytes=1)),
    "manifest: rows edited": edit(lambda b: file0(b).update(rows=99)),
}
EDITS: dict[str, Callable[[Path], str]] = {
    "files: null": edit(lambda b: split(b).update(files=None)),
    "files: []": edit(lambda b: split(b).update(files=[])),
    "sha256 missing": edit(lambda b: file0(b).pop("sha256")),
    "sha256 not hex": edit(lambda b: file0(b).update(sha256="xyz")),
    "benchmark missing": edit(lambda b: b.pop("benchmark")),
    "benchmark: null": edit(lambda b: b.update(benchmark=None)),
    "configs: []": edit(lambda b: b.update(configs=[])),
    "configs: {}": edit(lambda b: b.update(configs={})),
    "config: null": edit(lambda b: b["configs"].update(cot=None)),
    "modulus: 1": edit(lambda b: spec(b).update(modulus=1)),
    "spec: a string": edit(lambda b: b["configs"]["cot"].update(spec="cot")),
    "test_length: []": edit(lambda b: spec(b).update(test_length=[])),
    "splits: {}": edit(lambda b: b["configs"]["cot"].update(splits={})),
    "split removed": edit(lambda b: b["configs"]["cot"]["splits"].pop("test")),
    "probe splits removed": edit(lambda b: b["configs"]["cot"]["splits"].pop("probe")),
    "rows: a string": edit(lambda b: file0(b).update(rows="ten")),
    "rows: -1": edit(lambda b: file0(b).update(rows=-1)),
    "rows: 10**30": edit(lambda b: file0(b).update(rows=10**30)),
    "bytes: a float": edit(lambda b: file0(b).update(bytes=1.5)),
    "first_id: null": edit(lambda b: file0(b).update(first_id=None)),
    "path: a number": edit(lambda b: file0(b).update(path=123)),
    "path: null": edit(lambda b: file0(b).update(path=None)),
    "unknown top-level key": edit(lambda b: b.update(extra=1)),
    "unknown file key": edit(lambda b: file0(b).update(extra=1)),
    "format_version: 2": edit(lambda b: b.update(format_version=2)),
    "libraries: a string": edit(lambda b: b.update(libraries="numpy")),
    "benchmark name empty": edit(lambda b: b["benchmark"].update(name="")),
    "benchmark spec_id edited": edit(lambda b: b["benchmark"].update(spec_id="0" * 16)),
    "parquet options removed": edit(lambda b: b.pop("parquet")),
    "storage unknown": edit(lambda b: b.update(parquet=None, storage="zip")),
    "top level: a list": rewrite(lambda _: b"[]", "posgen.json"),
    "top level: null": rewrite(lambda _: b"null", "posgen.json"),
    "empty file": rewrite(lambda _: b"", "posgen.json"),
    "not UTF-8": rewrite(lambda _: b"\xff\xfe{\x00", "posgen.json"),
    "nested 100k deep": nested(100_000),
    "nested 500 deep": nested(500),
    "posgen.json is a folder": unlink("posgen.json", Path.mkdir),
    "posgen.json is a pipe": unlink("posgen.json", os.mkfifo),  # read, it would wait for ever
}


def outside_copy(root: Path) -> Path:  # what an escaping path would hash
    outside = root.parent / "outside" / "x.parquet"
    outside.parent.mkdir(exist_ok=True)
    shutil.copy(root / TEST_FILE, outside)
    return outside


def escaping(path_of: Callable[[Path], str]) -> Callable[[Path], str]:
    return lambda root: edit(lambda b: file0(b).update(path=path_of(outside_copy(root))))(root)


def symlinked_file(root: Path) -> str:  # an identical file: only the link rule catches it
    outside = outside_copy(root)
    (root / TEST_FILE).unlink()
    os.symlink(outside, root / TEST_FILE)
    return TEST_FILE


def symlinked_folder(root: Path) -> str:
    shutil.move(root / "data" / "cot", root.parent / "outside-cot")
    os.symlink(root.parent / "outside-cot", root / "data" / "cot", target_is_directory=True)
    return "data/cot"


ESCAPES: dict[str, Callable[[Path], str]] = {
    "absolute path": escaping(str),
    "../ path": escaping(lambda _: "../outside/x.parquet"),
    "data/../../ path": escaping(lambda _: "data/../../outside/x.parquet"),
    "backslash path": edit(lambda b: file0(b).update(path=TEST_FILE.replace("/", "\\"))),
    "file symlinked outside": symlinked_file,
    "folder symlinked outside": symlinked_folder,
    "file a symlink loop": unlink(TEST_FILE, lambda path: path.symlink_to(path.name)),
}


@pytest.mark.parametrize("case", list(DAMAGE) + list(ENTRY_EDITS))
def test_damage_is_caught_before_loading_naming_the_file(cli, recorded, small_copy, case):
    name = {**DAMAGE, **ENTRY_EDITS}[case](small_copy)
    lines = check_dataset(small_copy)
    result = cli("validate", small_copy)
    blamed = (name, TEST_FILE) if case in ENTRY_EDITS else (name,)
    with recorded("damage", case):
        assert any(str(small_copy) in line and name in line for line in lines), lines
        with pytest.raises(DamagedDataset) as caught:
            load(small_copy, "cot")
        assert name in str(caught.value)
        # a folder without posgen.json is not a dataset at all: a usage error (2) is fair
        assert result.exit_code in ((1,) if (small_copy / "posgen.json").exists() else (1, 2))
        assert "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit | type(None)), repr(result.exception)
        assert any(Path(b).name in result.output for b in blamed), result.output


MEMORY_LIMITS = {  # command -> what pyarrow failed to allocate in (as under ulimit -v), its args
    "validate": ("ParquetFormat.batches", lambda data, preds, out: ["validate", data]),
    "baseline": ("ParquetFormat.facts",
                 lambda data, preds, out: ["baseline", "--kind", "oracle", "--data", data,
                                           "--out", out / "p.jsonl"]),
    "score": ("ParquetFormat.batches",
              lambda data, preds, out: ["score", "--data", data, "--predictions", preds]),
}  # fmt: skip
LIMIT_ERRORS = {  # what pyarrow raised -> what the line says
    "memory": (pa.ArrowMemoryError("malloc of size 64 failed"), "out of memory"),
    "thread": (
        pa.ArrowException("Unknown error: Failed to launch worker thread: Resource unavailable"),
        "no thread could be started",
    ),
}


@pytest.mark.parametrize("limit", LIMIT_ERRORS)
@pytest.mark.parametrize("command", MEMORY_LIMITS)
def test_healthy_data_under_a_memory_limit_is_out_of_memory_never_damage(
    assert_clean_error, cli, monkeypatch, tiny_cot, tiny_oracle, tmp_path, command, limit
):
    (error, said), (where, args) = LIMIT_ERRORS[limit], MEMORY_LIMITS[command]
    monkeypatch.setattr(f"posgen.store.formats.{where}", Mock(side_effect=error))
    line = assert_clean_error(cli(*args(tiny_cot, tiny_oracle, tmp_path)), 1, said, str(error))
    assert "damaged" not in line and "unreadable" not in line, line


def test_only_the_verified_load_notices_an_edited_manifest(small_copy):
    DAMAGE["manifest: spec field edited"](small_copy)
    assert load(small_copy, "cot", verify=False)["train"].num_rows == 120  # silently wrong
    with pytest.raises(DamagedDataset, match="the manifest was edited"):
        load(small_copy, "cot")


@pytest.fixture(scope="module")
def preds(small_dataset, tmp_path_factory) -> Path:
    test = load_reference(small_dataset, "cot", "test")
    path = tmp_path_factory.mktemp("preds") / "preds.npy"
    write_predictions(path, test.ids, test.tokens, modulus=17)
    return path


def refused_cleanly(result) -> bool:  # exit 1, error lines or FAIL integrity, no traceback
    said = "error: " in result.stderr or "FAIL integrity" in result.stdout
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    return result.exit_code == 1 and said and not crashed and "Traceback" not in result.output


def readers_that_did_not_refuse(root: Path, preds: Path, cli) -> list[str]:
    before = (root / "README.md").read_bytes()
    results = {
        "validate": cli("validate", root),
        "score": cli("score", "--data", root, "--config", "cot", "--predictions", preds),
        "card": cli("card", root),
        "merge": cli("merge", root),
    }
    wrong = [f"{k}: {r.exit_code} {r.output[-300:]}" for k, r in results.items()
             if not refused_cleanly(r) or (k == "card" and "(validated)" in r.output)]  # fmt: skip
    if (root / "README.md").read_bytes() != before:
        wrong.append("card: the card was rewritten")
    with contextlib.suppress(DamagedDataset):
        load(root, "cot")
        wrong.append("load: loaded")
    return wrong + ([] if check_dataset(root) else ["check_dataset: no problem found"])


@pytest.mark.parametrize("name", list(EDITS) + list(ESCAPES))
def test_an_edited_manifest_or_a_path_leading_out_is_refused_by_every_command_never_read(
    cli, record, small_copy, preds, name
):
    {**EDITS, **ESCAPES}[name](small_copy)
    wrong = readers_that_did_not_refuse(small_copy, preds, cli)
    if name in ESCAPES:  # and the check says why
        lines = check_dataset(small_copy)
        said = ("leads outside the dataset folder", "relative path inside")
        if not any(words in line for line in lines for words in said):
            wrong.append(f"the escape is not named: {lines}")
    kind, key = ("path_escape", name) if name in ESCAPES else ("damage", f"manifest edit: {name}")
    record(kind, key, not wrong)
    assert not wrong, wrong


def test_manifest_paths_must_be_relative_and_inside(small_dataset):
    entry = read_manifest(small_dataset).configs["cot"].splits["test"].files[0]
    for bad in ("/etc/passwd", "../x", "data/../../x", "a//b", "./a", "C:/x", "a\\b", ""):
        with pytest.raises(ValueError, match=r"relative path inside|at least 1"):
            type(entry).model_validate({**entry.model_dump(), "path": bad})


def test_rows_a_consistent_manifest_claims_are_checked_against_the_files_before_memory(
    small_copy,
):  # spec, spec ids and row counts edited to agree on 10^10 test rows: none is allocated
    body = with_ids(json.loads((small_copy / "posgen.json").read_text()), test_size=10**10,
                    seeding="paper")  # fmt: skip
    for name, split in body["configs"]["cot"]["splits"].items():
        if name not in ("train", "validation"):  # the test and probe splits: one file each
            (file,) = split["files"]
            split["rows"] = file["rows"] = 10**10
    (small_copy / "posgen.json").write_text(json.dumps(body))
    with pytest.raises(DamagedDataset, match=r"posgen\.json records 10000000000"):
        Dataset.open(small_copy).split("cot", "test")


def test_an_unknown_config_is_a_usage_error_whichever_way_it_is_asked_for(small_dataset):
    handle = Dataset.open(small_dataset)
    for read in (lambda: handle.verify(["nope"]), lambda: handle.load("nope"),
                 lambda: load(small_dataset, "nope"), lambda: handle.split("nope"),
                 lambda: load(small_dataset, "nope", verify=False)):  # fmt: skip
        with pytest.raises(SplitError, match=r"no config 'nope' .*; .*cot"):
            read()
    [line] = check_dataset(small_dataset, ["nope"])  # a line, as for any other problem
    assert re.fullmatch(
        rf"{re.escape(str(small_dataset))}/posgen.json: no config 'nope'; has .*cot.*", line
    )
    assert handle.verify("cot") == handle.manifest  # one name: that config, not its letters
    assert list(handle.splits("cot", "test")) == ["test"]  # one split, not 't', 'e', ...


OPEN = Dataset.open
WRONG_TYPES = {  # a read given an argument of the wrong type -> the error line
    "load(None)": (lambda root: load(None), "a dataset folder must be a path, not NoneType"),
    "load(bytes)": (lambda root: load(bytes(root)), "must be a path, not bytes"),
    "load(verify=False) of 3": (lambda root: load(3, verify=False), "must be a path, not int"),
    "open(3)": (lambda root: OPEN(3), "must be a path, not int"),
    "load(config=[cot])": (lambda root: load(root, ["cot"]), "must be a name (str), not list"),
    "split(config=3)": (lambda root: OPEN(root).split(3), "config must be a name"),
    "probe(split=5)": (lambda root: OPEN(root).probe("cot", 5), "split must be a name"),
    "probe([cot])": (lambda root: OPEN(root).probe(["cot"]), "config must be a name"),
    "probe(split=None)": (lambda root: OPEN(root).probe("cot", None), "probe split None"),
    "verify(3)": (lambda root: OPEN(root).verify(3), "a name or a list, not int"),
    "split(cot, 3)": (lambda root: OPEN(root).split("cot", 3), "split must be a name"),
    "split(cot, [test])": (lambda root: OPEN(root).split("cot", ["test"]),
                           "split must be a name (str), not"),
    "splits(cot, 3)": (lambda root: OPEN(root).splits("cot", 3), "splits must be a name"),
    "splits(cot, [None])": (lambda root: OPEN(root).splits("cot", [None]),
                            "split must be a name (str), not"),
    "splits(cut=3)": (lambda root: OPEN(root).splits("cot", ["test"], cut=3),
                      "cut must be a name or"),
    "handle load(3, verify=False)": (lambda root: OPEN(root).load(3, verify=False),
                                     "config must be a name (str), not"),
    "lines(3)": (lambda root: OPEN(root).lines(3), "configs must be a name or a list"),
    "lines(hashes='no')": (lambda root: OPEN(root).lines(hashes="no"),
                           "hashes must be True or False, not"),
    "read(3)": (lambda root: OPEN(root).read(3), "read must be a function of the handle"),
    "handle load(verify='no')": (lambda root: OPEN(root).load(verify="no"),
                                 "verify must be True or False, not str"),
    "load(verify='no')": (lambda root: load(root, verify="no"), "verify must be True or False"),
    "load(verify=0)": (lambda root: load(root, verify=0), "verify must be True or False, not int"),
    "handle load(verify=None)": (lambda root: OPEN(root).load("cot", verify=None),
                                 "verify must be True or False"),
}  # fmt: skip
MISSING = "no such folder; nothing was read (not a Hub id)"  # datasets asked the Hub, 23 s


def test_load_without_verify_of_a_folder_that_is_not_there_never_asks_the_hub(tmp_path):
    for path in (tmp_path / "nope", tmp_path / "nope" / "ds"):
        with pytest.raises(NotADataset, match=re.escape(f"{path}: {MISSING}")) as raised:
            load(path, verify=False)
        assert str(raised.value) == f"{path}: {MISSING}"  # not 'is damaged': it never was one


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_an_argument_of_the_wrong_type_is_a_usage_error_naming_it(small_dataset, case):
    read, said = WRONG_TYPES[case]
    with pytest.raises(SplitError, match=re.escape(said)):
        read(small_dataset)


ARROW_TEST = "cot/test/data-00000-of-00001.arrow"


def arrow_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    write_dataset(default_benchmark(("cot",), train_size=8, val_size=2, test_size=2), root,
                  storage="arrow")  # fmt: skip
    return root


@pytest.mark.parametrize("writer", ["stream", "file"])
def test_an_arrow_shard_replaced_by_one_of_many_rows_is_named_from_its_headers(tmp_path, writer):
    """A few KB that would decompress to 16 MB: named from headers, read no further."""
    root = arrow_dataset(tmp_path)
    rows = pa.ListArray.from_arrays(np.arange(0, 2**24 + 1, 2**8, dtype=np.int32),
                                    np.zeros(2**24, np.uint8))  # fmt: skip
    table = pa.table({"id": np.arange(2**16), "tokens": rows})
    path = root / ARROW_TEST
    if writer == "file":
        feather.write_feather(table, path, compression="zstd")
    else:
        options = pa.ipc.IpcWriteOptions(compression="zstd")
        with pa.ipc.new_stream(path, table.schema, options=options) as stream:
            stream.write_table(table)
    default = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(default)  # what pyarrow allocates, counted apart
    pa.set_memory_pool(pool)
    try:
        problems = [str(p) for p in check_files(root, read_manifest(root), hashes=False)]
        with pytest.raises(DamagedDataset, match="longer than recorded"):
            Dataset.open(root).split("cot", "test")
        report = validate(root)  # its rows are read no further than the manifest lists
    finally:
        pa.set_memory_pool(default)
    assert any("65,536 rows, posgen.json records 2" in p for p in problems), problems
    assert not report.ok and pool.max_memory() < 2**22, pool.max_memory()


def test_an_arrow_shard_rewritten_as_an_ipc_file_with_its_sums_recorded_is_refused(
    record_files, tmp_path
):
    """load_from_disk reads IPC streams only: right rows in an IPC file are damage."""
    root, name = arrow_dataset(tmp_path), ARROW_TEST
    table = pa.ipc.open_stream(pa.py_buffer((root / name).read_bytes())).read_all()
    feather.write_feather(table, root / name, compression="uncompressed")
    record_files(root, name)
    failed = [c.message for c in validate(root).checks if not c.ok]
    assert [c for c in failed if f"{name}: an Arrow IPC file" in c], failed
    with pytest.raises(DamagedDataset, match="not the IPC stream load_from_disk reads"):
        load(root)


def _lists(name: str, change: Callable[[list], object], nullable: bool = False):
    """Rewrite list column ``name``: ``change`` edits its rows (lists) in place."""

    def damage(table):
        rows = table.column(name).to_pylist()
        change(rows)
        kind = table.schema.field(name).type
        kind = pa.list_(pa.field("item", kind.value_type, nullable)) if nullable else kind
        index = table.schema.get_field_index(name)
        return table.set_column(index, pa.field(name, kind), pa.array(rows, kind))

    return damage


def _ids(change: Callable[[list], object]):
    """Rewrite the id column: ``change`` edits its values (a list) in place."""

    def damage(table):
        ids = table.column("id").to_pylist()
        change(ids)
        field = table.schema.field("id")
        return table.set_column(
            table.schema.get_field_index("id"), field, pa.array(ids, field.type)
        )

    return damage


def _first_probed(change: Callable[[list], object]) -> Callable[[list], object]:
    return lambda rows: change(rows[next(i for i, r in enumerate(rows) if r)])


def rewritten(root: Path, name: str, change: Callable, record_files: Callable) -> None:
    """``change`` one file's table, its sums recorded (only the reader's checks can tell)."""
    table = pq.read_table(root / name)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), root / name)
    record_files(root, name)


READ_DAMAGE = {  # case -> (file, split, change, problem)
    "a probed position past the row": (PROBE_FILE, "probe_128",
        _lists("probed", _first_probed(lambda r: r.__setitem__(0, 10**6))),
        "probed positions outside [4, 128)"),
    "a far_rule list cut short": (PROBE_FILE, "probe_128",
        _lists("far_rule", _first_probed(lambda r: r.pop())),
        "probe rows whose far_rule and probed lists differ in length"),
    "a null probed position": (PROBE_FILE, "probe_128",
        _lists("probed", _first_probed(lambda r: r.__setitem__(0, None)), nullable=True),
        "null values in probed"),
    "rows one token longer": (TRAIN0, "train",
        _lists("tokens", lambda rows: [row.append(0) for row in rows]),
        "rows longer than the manifest's"),
    "a null token": (TRAIN0, "train",
        _lists("tokens", lambda rows: rows[0].__setitem__(5, None), nullable=True),
        "null values in tokens"),
    "ids out of order": (TRAIN0, "train", _ids(lambda ids: ids.reverse()),
        "does not hold rows 0.. in order"),
    "one row a token longer": (TRAIN0, "train", _lists("tokens", lambda rows: rows[0].append(0)),
        "rows have different lengths"),
    "a probe id twice": (PROBE_FILE, "probe_128", _ids(lambda ids: ids.__setitem__(1, 0)),
        "probe ids must be 0 .. rows-1"),
    "one probe row a token longer": (PROBE_FILE, "probe_128",
        _lists("tokens", lambda rows: rows[0].append(0)), "probe tokens: rows have different"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(READ_DAMAGE))
def test_rows_unlike_the_splits_with_their_sums_recorded_are_damage_naming_the_file(
    cli, record_files, small_copy, case
):
    name, split, change, said = READ_DAMAGE[case]
    rewritten(small_copy, name, change, record_files)
    data = Dataset.open(small_copy)
    with pytest.raises(DamagedDataset, match=re.escape(f"{name}: {said}")):
        data.probe("cot", split) if split.startswith("probe") else data.split("cot", split)
    out = small_copy.parent / "oracle.parquet"
    result = cli("baseline", "--kind", "oracle", "--data", small_copy, "--config", "cot",
                 "--split", split, "--out", out)  # fmt: skip
    assert result.exit_code == 1 and name in result.output, result.output
    assert "Traceback" not in result.output and "Warning" not in result.output
