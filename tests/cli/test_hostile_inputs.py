"""Hostile and careless input beyond the spec flags (issue 13): one ``error:`` line each."""

from __future__ import annotations

import ctypes
import inspect
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import tracemalloc
from pathlib import Path
from unittest.mock import Mock

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import example, given
from hypothesis import strategies as st

import posgen
from posgen.cli import main
from posgen.cli.sweep import resolve_encoding
from posgen.scoring.metrics import ScoringError
from posgen.scoring.prediction_files import read_predictions
from posgen.spec import TaskSpec, default_benchmark
from posgen.store.dataset import data_files
from posgen.store.formats import FORMATS, to_dataset_dict
from posgen.store.safety import HashingFile
from posgen.train import FILES
from posgen.train.config import expand, jobs_of, read_grid
from posgen.train.results import find_runs
from posgen.train.sweep import Sweep
from posgen.validate import SourceError, validate
from posgen.validate.sources import resolve

GUARD = 600  # seconds: only a hung process waits this long (a failure guard)
ROOT = Path(__file__).resolve().parents[2]
SMALL = {"train_size": 50, "val_size": 10, "test_size": 10}  # tiny_cot (tests/conftest.py)
SMALL_FLAGS = ["--task", "cot", "--train-size", "50", "--val-size", "10", "--test-size", "10"]


def peak_memory(cli, *args: object):
    """``posgen *args`` in-process: its click ``Result`` and the peak bytes Python allocated."""
    tracemalloc.start()
    try:
        return cli(*args), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def command_args(command: str, data: Path, predictions: Path) -> list[object]:
    """A valid ``posgen COMMAND`` reading ``data`` (and ``predictions``), output flags left out."""
    return {
        "generate": ["generate", *SMALL_FLAGS],
        "publish": ["publish", ROOT / "task_specs" / "paper.toml"],
        "baseline": ["baseline", "--kind", "majority", "--data", data],
        "score": ["score", "--data", data, "--predictions", predictions],
        "validate": ["validate", data],
    }[command]


# --- prediction files that lie, overflow or are not UTF-8 text (score) ------------------
def npy_header(shape, descr="<i2", data=b"\0" * 1000, version="1_0"):
    def write(path):
        with open(path, "wb") as handle:
            header = {"descr": descr, "fortran_order": False, "shape": shape}
            getattr(np.lib.format, f"write_array_header_{version}")(handle, header)
            handle.write(data)

    return write


def negative_buffer(path: Path) -> None:
    """A zstd row of 2^24 zero tokens whose id buffer states -2^24 bytes."""
    row = pa.ListArray.from_arrays([0, 2**24], np.zeros(2**24, np.uint8))
    feather.write_feather(pa.table({"id": [0], "predictions": row}), path, compression="zstd")
    raw = path.read_bytes()
    at = raw.find(struct.pack("<q", 8) + b"\x28\xb5\x2f\xfd")  # 8 bytes once inflated, zstd
    path.write_bytes(raw[:at] + struct.pack("<q", -(2**24)) + raw[at + 8 :])


def empty_words(path: Path) -> None:
    """One row whose extra column's dictionary holds 2^22 empty strings (16 MB of offsets)."""
    offsets = pa.py_buffer(np.zeros(2**22 + 1, np.int32))
    words = pa.StringArray.from_buffers(2**22, offsets, pa.py_buffer(b""))
    column = pa.DictionaryArray.from_arrays(pa.array([0], pa.int32()), words)
    table = pa.table({"id": [0], "predictions": [ROW], "cat": column})
    feather.write_feather(table, path, compression="zstd")


def write_content(path: Path, content) -> None:
    """Text or bytes as they are, an array as ``.npy``, columns as Parquet, or ``content(path)``."""
    if isinstance(content, str | bytes):
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    elif isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=False)
    elif isinstance(content, dict):
        pq.write_table(pa.table(content), path)
    else:
        content(path)


ROW = list(range(8))
DEEP = "[" * 100_000 + "]" * 100_000
BAD_PREDICTIONS = {  # case (its first word: the file's suffix) -> (content, error fragment)
    "jsonl prediction over 2^63": (json.dumps({"id": 0, "predictions": [2**64]}), "outside int64"),
    "jsonl id over 2^63": (json.dumps({"id": 2**63, "predictions": ROW}), "outside int64"),
    "jsonl id below -2^63": (json.dumps({"id": -(2**63) - 1, "predictions": ROW}), "outside int64"),
    "jsonl 100k-deep nesting": ('{"id": 0, "predictions": ' + DEEP + "}\n", "nested too deeply"),
    "jsonl deep object": ('{"a":' * 50_000 + "0" + "}" * 50_000, "nested"),
    "jsonl Latin-1 text": ('{"id": 0, "predictions": [1], "n": "é"}\n'.encode("latin-1"),
                           "not UTF-8"),
    "jsonl UTF-16 text": ('{"id": 0, "predictions": [1]}\n'.encode("utf-16"), "UTF-16"),
    "jsonl UTF-16-BE text": (b"\xfe\xff" + '{"id": 0}\n'.encode("utf-16-be"), "UTF-16"),
    "jsonl NaN prediction": ('{"id": 0, "predictions": [NaN]}\n', "integers"),
    "jsonl float id": ('{"id": 0.5, "predictions": [1]}\n', "integer 'id'"),
    "jsonl bool predictions": ('{"id": 0, "predictions": [true]}\n', "integers"),
    "npy header claims 10^6 x 256": (npy_header((10**6, 256)), "header claims"),
    "npy 2.0 header claims 10^6 x 256": (npy_header((10**6, 256), version="2_0"),
                                         "header claims"),
    "npy header claims 2^40 rows": (npy_header((2**40, 2**20), "<i8"), "header claims"),
    "npy shorter than its header": (npy_header((10, 256), "<u1", b"\0" * 2559), "header claims"),
    "npy header claims 2^31 rows of no positions": (npy_header((2**31, 0), "<i8", b""),
                                                    "at least one row"),
    "npy 3-D": (np.zeros((2, 3, 4), np.uint8), "2-D"),
    "npy timedelta64": (np.zeros((10, 256), "m8[s]"), "timedelta64"),
    "npy datetime64": (np.zeros((10, 256), "M8[D]"), "datetime64"),
    "npy float": (np.zeros((10, 256), np.float32), "float32"),
    "npy bool": (np.zeros((10, 256), bool), "bool"),
    "npy complex": (np.zeros((10, 256), np.complex64), "complex64"),
    "npy object (pickle)": (npy_header((10, 256), "|O"), "object"),
    "npy not numpy": (b"\x93NUMPY\x09\x09garbage", "not a readable npy"),
    "parquet string ids": ({"id": ["a"] * 10, "predictions": [ROW] * 10}, "'id' must be integers"),
    "parquet uint64 ids over 2^63": ({"id": pa.array([2**64 - 1] * 10, pa.uint64()),
                                      "predictions": [ROW] * 10}, "outside int64"),
    "parquet no predictions column": ({"id": list(range(10)), "rows": [ROW] * 10},
                                      "needs an 'id' column and a 'predictions' column"),
    "parquet predictions not lists": ({"id": list(range(10)), "predictions": list(range(10))},
                                      "'predictions' must be a list of integers, got int64"),
    "parquet a null row": ({"id": list(range(10)), "predictions": [ROW] * 9 + [None]},
                           "'predictions' holds nulls"),
    "arrow made for a spec id not UTF-8": (lambda path: feather.write_feather(pa.table(
        {"id": range(10), "predictions": [ROW] * 10}).replace_schema_metadata(
        {b"posgen.spec_id": b"\xff", b"posgen.split": b"test"}), path),
        "its posgen.spec_id or posgen.split metadata is not UTF-8"),
    "parquet float predictions": ({"id": list(range(10)), "predictions": [[0.5] * 8] * 10},
                                  "integers"),
    "parquet zstd row of 2^24 tokens in 1 KB": (lambda path: pq.write_table(pa.table({
        "id": [0], "predictions": pa.ListArray.from_arrays([0, 2**24], np.zeros(2**24, np.uint8))
    }), path, compression="zstd"), "declares 1 row of 16,777,216 values in all"),
    "arrow zstd row of 2^24 tokens in 1 KB": (lambda path: feather.write_feather(pa.table({
        "id": [0], "predictions": pa.ListArray.from_arrays([0, 2**24], np.zeros(2**24, np.uint8))
    }), path, compression="zstd"), "batch of 1 row would decompress to 16,777,"),
    "arrow zstd row of 2^24 tokens behind a negative buffer size": (negative_buffer,
        "a damaged record batch header (a buffer of -16,777,216 bytes)"),
    "arrow zstd dictionary of 2^22 entries for one row": (empty_words,
        "its dictionaries would decompress to 16,777,"),
    "arrow two id columns": (lambda path: feather.write_feather(pa.Table.from_arrays(
        [pa.array(range(10)), pa.array(range(10)), pa.array([ROW] * 10)],
        names=["id", "id", "predictions"]), path), "has 2 columns named 'id'; keep one"),
    "parquet two predictions columns": (lambda path: pq.write_table(pa.Table.from_arrays(
        [pa.array(range(10)), pa.array([ROW] * 10), pa.array([ROW] * 10)],
        names=["id", "predictions", "predictions"]), path), "2 columns named 'predictions'"),
    "arrow made for a spec id of two lines": (lambda path: feather.write_feather(pa.table(
        {"id": range(10), "predictions": [ROW] * 10}).replace_schema_metadata(
        {"posgen.spec_id": "abc\nerror: forged", "posgen.split": "test"}), path),
        "made for split test of spec abc error: forged, not split test"),
    "feather lz4 of more rows than the data": (lambda path: feather.write_feather(pa.table({
        "id": range(11), "predictions": [ROW] * 11}), path, compression="lz4"),
        "holds 11 rows or more; the data has 10: not read"),
    "jsonl 5000-digit id": ('{"id": ' + "1" * 5000 + ', "predictions": [1]}\n', "too long"),
    "parquet a pipe": (os.mkfifo, "not a regular file (a pipe or a device)"),  # was: no such file
    "jsonl a link to /dev/zero": (lambda path: path.symlink_to("/dev/zero"), "not a regular file"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_PREDICTIONS))
def test_bad_prediction_files_are_one_error_line(
    cli, assert_clean_error, recorded, tiny_cot, tmp_path, case
):
    content, fragment = BAD_PREDICTIONS[case]
    path = tmp_path / f"p.{case.split()[0]}"
    write_content(path, content)
    result, peak = peak_memory(cli, "score", "--data", tiny_cot, "--predictions", path)
    kind = "bomb" if any(w in case for w in ("claims", "deep", "zstd")) else "hostile"
    with recorded(kind, f"predictions:{case}"):
        assert_clean_error(result, 2, fragment, str(path))
        assert peak < 200 * 2**20  # the lying headers ask for 512 MB and more: never allocated


@given(
    rows=st.integers(0, 2**31), width=st.integers(0, 2**31), held=st.integers(0, 4096),
    descr=st.sampled_from(["<u1", "<i2", "<i8", ">u2", "<f4", "<m8[s]", "|b1"]),
)  # fmt: skip
def test_npy_headers_are_checked_against_the_file_before_reading(
    recorded, rows, width, held, descr
):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.npy"
        npy_header((rows, width), descr, b"\1" * held)(path)
        dtype = np.dtype(descr)
        honest = rows * width * dtype.itemsize == held and dtype.kind in "iu" and rows * width
        with recorded("bomb", f"npy:{rows}x{width}:{descr}:{held}"):
            if honest:
                assert read_predictions(path).tokens.shape == (rows, width)
            else:
                with pytest.raises(ScoringError) as error:
                    read_predictions(path)
                assert str(path) in str(error.value)


ARROW_ROWS = pa.table({"id": range(5), "predictions": [[1, 2, 3]] * 5})


@example("uncompressed", [(108, 238), (891, 197), (1392, 84)], 0)  # a field name not UTF-8
@example("uncompressed", [(79, 11)], 0)  # an unknown type id
@given(
    compression=st.sampled_from(["uncompressed", "zstd", "lz4"]),
    flips=st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 2**16),
)
def test_a_damaged_arrow_predictions_file_is_read_or_refused_never_an_internal_error(
    compression, flips, cut
):  # the record batch headers posgen parses itself, and pyarrow's own readers
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.arrow"
        feather.write_feather(ARROW_ROWS, path, compression=compression, chunksize=2)
        raw = bytearray(path.read_bytes())
        for at, value in flips:
            raw[at % len(raw)] = value
        path.write_bytes(bytes(raw[: max(8, len(raw) - cut % 64)]))
        try:
            read = read_predictions(path, fits=(5, 3))
        except ScoringError as error:
            assert str(error).startswith(f"{path}: ")
        else:
            assert read.tokens.shape[0] <= 5


# --- bare data given to validate -------------------------------------------------------
BARE_FLAGS = ["--task", "cot", "-m", "17", "-k", "3", "-j", "1", "--train-length", "8",
              "--test-length", "8", "--split", "test"]  # fmt: skip
TOKENS = pa.array([[1, 2, 3, 4, 5, 6, 7, 8]] * 2, pa.list_(pa.uint8()))


def _tokens(value, kind=None):
    return pa.array([[value, 2, 3, 4, 5, 6, 7, 8]] * 2, pa.list_(kind or pa.int64()))


BARE = {
    "string id": dict(id=pa.array(["a", "b"]), tokens=TOKENS),
    "list id": dict(id=pa.array([[1], [2]]), tokens=TOKENS),
    "null ids": dict(id=pa.array([None, 1], pa.int64()), tokens=TOKENS),
    "float id": dict(id=pa.array([0.0, 1.0]), tokens=TOKENS),
    "token -1": dict(id=pa.array([0, 1]), tokens=_tokens(-1)),
    "token 65535": dict(id=pa.array([0, 1]), tokens=_tokens(65535)),
    "token 2^63-1": dict(id=pa.array([0, 1]), tokens=_tokens(2**63 - 1)),
    "token 2^64-1": dict(id=pa.array([0, 1]), tokens=_tokens(2**64 - 1, pa.uint64())),
    "token -2^63": dict(id=pa.array([0, 1]), tokens=_tokens(-(2**63))),
    "float tokens": dict(id=pa.array([0, 1]), tokens=pa.array([[0.5] * 8] * 2)),
    "string tokens": dict(id=pa.array([0, 1]), tokens=pa.array(["abcdefgh"] * 2)),
    "no tokens": dict(id=pa.array([0, 1]), other=pa.array([1, 2])),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BARE))
def test_bare_parquet_with_wrong_types_fails_validation_cleanly(
    assert_clean_error, cli, recorded, tmp_path, case
):
    path = tmp_path / "bare.parquet"
    pq.write_table(pa.table(BARE[case]), path)
    result = cli("validate", path, *BARE_FLAGS)
    with recorded("hostile", f"bare parquet:{case}"):
        if result.exit_code == 2:  # refused as input
            assert_clean_error(result, 2, "bare.parquet")
        else:  # read, and failed validation
            assert result.exit_code == 1, result.output
            assert "FAIL schema" in result.output
            assert "bare.parquet" in result.output
            assert "Traceback" not in result.output


# --- spec files that are bombs ---------------------------------------------------------
def _alias_bomb(levels: int, in_field: bool) -> str:
    """A YAML billion laughs: each anchored list holds the previous one 9 times."""
    if in_field:
        items = [f"*b{i - 1}" if i else "1" for i in range(levels)]
        lists = (f"&b{i} [" + ", ".join([item] * 9) + "]" for i, item in enumerate(items))
        return f"task: cot\nmodulus: [{', '.join(lists)}]\n"
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\nconfigs:\n  cot: {task: cot}\n"


SPEC_BOMBS = {
    "yaml alias bomb 9^9 at top level": (".yaml", _alias_bomb(9, False), "values"),
    "yaml alias bomb 9^9 in a field": (".yaml", _alias_bomb(9, True), "values"),
    "yaml alias bomb 9^6 in a field": (".yaml", _alias_bomb(6, True), "values"),
    "json nested 100k deep": (".json", DEEP, "levels deep"),
    "json objects nested 100k deep": (".json", '{"a":' * 100_000 + "1" + "}" * 100_000, "deep"),
    "toml arrays nested 100k deep": (".toml", "a = " + DEEP, "deep"),
    "yaml flow nested 100k deep": (".yaml", "a: " + DEEP, "deep"),
    "yaml block nested 40 deep": (".yaml", "".join(f"{' ' * i}k{i}:\n" for i in range(40))
                                  + " " * 40 + "v: 1\n", "deep"),
    "json nested 17 deep": (".json", '{"task": "cot", "x": ' + "[" * 17 + "]" * 17 + "}", "deep"),
    "json 2 MB": (".json", '{"task": "cot", "pad": "' + "x" * (2 * 2**20) + '"}', "larger than"),
    "json 200k values": (".json", json.dumps({"task": "cot", "x": [0] * 200_000}), "values"),
    "yaml not UTF-8": (".yaml", "task: cot\nname: caf\udce9\n", "not UTF-8"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(SPEC_BOMBS))
def test_spec_file_bombs_are_refused_with_bounded_work(
    cli, assert_clean_error, recorded, tmp_path, case
):
    suffix, text, fragment = SPEC_BOMBS[case]
    path = tmp_path / f"spec{suffix}"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    result, peak = peak_memory(cli, "generate", "--out", tmp_path / "ds", "--spec", path, "-q")
    with recorded("bomb", f"spec:{case}"):
        assert_clean_error(result, 2, fragment, str(path))
        assert not (tmp_path / "ds").exists()
        assert peak < 256 * 2**20


def test_errors_about_huge_values_show_a_bounded_excerpt(
    assert_clean_error, cli, recorded, tmp_path
):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"task": "cot", "modulus": [[list(range(40))] * 40] * 40}))
    result = cli("generate", "--out", tmp_path / "ds", "--spec", path)
    with recorded("hostile", "spec:huge value in an error"):
        assert_clean_error(result, 2, "modulus")
        assert len(result.output) < 400, result.output


@pytest.mark.parametrize("stem", ["my spec", "a+b (copy)", "été", "-lead", "x" * 80])
def test_a_spec_without_name_is_named_after_a_valid_form_of_its_stem(cli, recorded, tmp_path, stem):
    path = tmp_path / f"{stem}.toml"
    path.write_text('task = "cot"\n')
    result = cli("generate", "--out", tmp_path / "ds", "--spec", path, *SMALL_FLAGS[2:], "-q")
    name = json.loads((tmp_path / "ds" / "posgen.json").read_text())["benchmark"]["name"]
    with recorded("hostile", f"spec stem:{stem}"):
        assert result.exit_code == 0, result.output
        assert 1 <= len(name) <= 64
        assert " " not in name


# --- names the file system or UTF-8 cannot hold, and the longest it allows ---------------
NAMED = ["generate --out", "publish --out", "baseline --out", "score --json", "score --plot",
         "validate --json"]  # fmt: skip
SUFFIX = {"baseline --out": ".jsonl", "score --json": ".json", "score --plot": ".png"}
NAMES = ("a" * 256, "é" * 128, os.fsdecode(b"x\xff\xfe"))  # 256 bytes, 256 in UTF-8, not UTF-8
NAME_CASES = [(cmd, name + SUFFIX.get(cmd, "")) for cmd in NAMED for name in NAMES]
NAME_CASES += [("score --plot", f"curve{s}") for s in (".xyz", "", ".parquet", ".png.tmp")]


def short(name: str) -> str:
    return name if len(name) < 16 else f"{name[:3]}{len(name)}"


@pytest.mark.parametrize(
    ("cmd", "name"), NAME_CASES, ids=[f"{c}:{short(n)}" for c, n in NAME_CASES]
)
def test_output_names_too_long_not_utf8_or_of_no_image_format_are_refused_up_front(
    assert_clean_error, cli, recorded, tiny_cot, tiny_oracle, tmp_path, cmd, name
):
    command, flag = cmd.split()
    result = cli(*command_args(command, tiny_cot, tiny_oracle), flag, tmp_path / name)
    with recorded("hostile", f"name:{cmd}:{short(name)}"):
        assert_clean_error(result, 2, flag)
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("length", [233, 240, 255])
def test_output_names_up_to_the_file_system_limit_work(cli, recorded, tiny_cot, tmp_path, length):
    out = tmp_path / ("d" * length)
    made = cli("generate", "--out", out, *SMALL_FLAGS, "-q")
    preds = tmp_path / ("p" * (length - 6) + ".jsonl")
    scored = cli("baseline", "--kind", "oracle", "--data", out, "--out", preds, "-q")
    again = cli("generate", "--out", out, *SMALL_FLAGS, "-q", "--overwrite")
    with recorded("hostile", f"name of {length} bytes"):
        for result in (made, scored, again):
            assert result.exit_code == 0, result.output
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, preds.name])


NEWLINE_NAMES = {  # a command naming a path that holds a newline -> its error line's fragment
    "score --predictions": (lambda data, here: ["score", "--data", data, "--predictions",
                                                here / "no\nsuch.jsonl"], "no such.jsonl: no such"),
    "generate --out": (lambda data, here: ["generate", *SMALL_FLAGS, "--out", here / "a\nb"],
                       "a b exists; pass --overwrite"),
    "validate --config": (lambda data, here: ["validate", here / "a\nb", "--config", "x"],
                          "a b has no config 'x'"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(NEWLINE_NAMES))
def test_a_path_holding_a_newline_is_named_on_one_error_line(
    assert_clean_error, cli, recorded, tiny_cot, tmp_path, case
):  # each line of an error was its own 'error:' line, the rest of the path a forged one
    shutil.copytree(tiny_cot, tmp_path / "a\nb")
    args, fragment = NEWLINE_NAMES[case]
    result = cli(*args(tiny_cot, tmp_path))
    with recorded("hostile", f"newline in a path:{case}"):
        assert_clean_error(result, 2, fragment)


# --- Python API misuse -----------------------------------------------------------------
@pytest.mark.parametrize(
    "given", [default_benchmark(("cot",)), {"task": "cot"}, "cot", None, 3], ids=repr
)
def test_to_dataset_dict_refuses_anything_but_a_task_spec(record, given):
    with pytest.raises(TypeError, match="takes a TaskSpec") as caught:
        to_dataset_dict(given)
    record("hostile", f"to_dataset_dict:{type(given).__name__}", caught is not None)


@pytest.mark.parametrize("split", ["test_999", "", "train/../test", "TEST"])
@pytest.mark.parametrize("kind", ["Dataset", "DatasetDict", "parquet file", "folder"])
def test_validate_refuses_a_split_the_data_does_not_have(record, tiny_cot, tmp_path, kind, split):
    spec = TaskSpec(task="cot", **SMALL)
    dd = to_dataset_dict(spec)
    parquet = next((tiny_cot / "data" / "cot").glob("test-*.parquet"))
    source = {"Dataset": dd["test"], "DatasetDict": dd, "parquet file": parquet, "folder": tiny_cot}
    with pytest.raises(SourceError, match="split") as caught:
        validate(source[kind], spec, split=split)
    record("hostile", f"validate split:{kind}:{split!r}", caught is not None)


# --- permissions (chmod 000 files, folders without search or write permission) ----------
SCORE_O = "score --predictions o.jsonl --data"
SCORE_DS = "score --data ds --predictions"
ORACLE = "baseline --kind oracle --data"
GEN = f"generate -q {' '.join(SMALL_FLAGS)} --out"
TRAIN = "train --data ds --pe rope --layers 1 --hidden 16 --heads 2 --intermediate 32 --epochs 1 "
TRAIN += "--max-steps 2 -q --out"
PERMISSIONS = {  # label -> (command line in the prepared folder, exit status, the path named;
    # exit 0: the path written)
    "generate --out in noexec": (f"{GEN} noexec/x", 2, "noexec/x"),
    "generate --spec unreadable": ("generate --out g --spec secret.toml", 2, "secret.toml"),
    "publish --out in noexec": ("publish paper.toml --out noexec/x", 2, "noexec/x"),
    "validate unreadable posgen.json": ("validate manifest", 2, "manifest/posgen.json"),
    "validate unreadable shard": ("validate shard", (1, 2), "shard/data/cot/test"),
    "validate unsearchable data folder": ("validate datadir", (1, 2), "datadir/data"),
    "card unreadable posgen.json": ("card manifest", 2, "manifest/posgen.json"),
    "card unreadable shard": ("card shard", (1, 2), "shard/data/cot/test"),
    "card in noexec": ("card noexec/ds", 2, "noexec/ds"),
    "score --data unreadable posgen.json": (f"{SCORE_O} manifest", 2, "manifest/posgen.json"),
    "score --data unreadable shard": (f"{SCORE_O} shard", 2, "shard/data/cot/test"),
    "score --data in noexec": (f"{SCORE_O} noexec/ds", 2, "noexec/ds"),
    "score --predictions unreadable": (f"{SCORE_DS} secret.jsonl", 2, "secret.jsonl"),
    "score --predictions in noexec": (f"{SCORE_DS} noexec/p.jsonl", 2, "noexec/p.jsonl"),
    "baseline --data unreadable posgen.json": (f"{ORACLE} manifest --out b.jsonl", 2,
                                               "manifest/posgen.json"),
    "baseline --out in noexec": (f"{ORACLE} ds --out noexec/b.jsonl", 2, "noexec/b.jsonl"),
    "baseline --out in read-only": (f"{ORACLE} ds --out ro/b.jsonl", 2, "ro/b.jsonl"),
    "score --json in read-only": (f"{SCORE_O} ds --json ro/r.json", 2, "ro/r.json"),
    "validate --json in read-only": ("validate ds --json ro/r.json", 2, "ro/r.json"),
    "card of a read-only dataset": ("card rods", 2, "rods"),
    "sweep into a sweep folder with read-only runs": ("sweep paper.toml --out sw", 2, "sw/runs"),
    "sweep into a sweep folder with a read-only checkpoint folder": (
        "sweep grid.toml --out sk", 2, "sk/work/"),
    "generate --part into a read-only part folder": (f"{GEN} parts --part 1/2", 2, "parts:"),
    "merge of a read-only part folder": ("merge merged parts1 parts", 2, "parts/.posgen-parts"),
    "generate --overwrite a read-only dataset": (f"{GEN} rods --overwrite", 2, "rods"),
    "results of a run whose results.json is unreadable": (
        "results runs/r --out r.md", 2, "runs/r/results.json"),
    "results of a folder holding an unreadable folder": (
        "results tree --out r.md", 2, "tree/locked"),
    "train --out beside a read-only checkpoint folder": (f"{TRAIN} rt", 2, ".rt.posgen-resume"),
    "train --out beside an unreadable checkpoint folder": (f"{TRAIN} ru", 2,
        ".ru.posgen-resume, where posgen train keeps its checkpoint, is unreadable"),
    "train --out beside an unreadable checkpoint": (f"{TRAIN} rc", 2,
                                                    ".rc.posgen-resume/checkpoint.pt"),
    "merge of a part folder holding an unreadable file": (
        "merge mu pu pu1", 2, "pu/.posgen-parts/data/cot/test"),
    "validate --json into a write-only folder": (
        "validate ds --json drop/r.json", 0, "drop/r.json"),
    "baseline --out into a write-only folder": (
        f"{ORACLE} ds --out drop/b.jsonl", 0, "drop/b.jsonl"),
    "generate --out into a write-only folder": (f"{GEN} drop/g", 0, "drop/g/posgen.json"),
    "validate in noexec": ("validate noexec/ds", 2, "'noexec/ds': permission denied"),
    "merge of a part folder in noexec": ("merge m noexec/p", 2, "'noexec/p': permission denied"),
    "merge in place of an unreadable part file": (
        "merge pin", 2, "pin/.posgen-parts/data/cot/test"),
}  # fmt: skip
if os.geteuid() == 0:  # a folder given to another user (root's to give)
    PERMISSIONS["generate --overwrite another user's dataset"] = (
        f"{GEN} theirs --overwrite", 2, "theirs is another user's")  # fmt: skip


def _prepare_permissions(base: Path, data: Path, oracle: Path) -> None:
    for name in ("ds", "manifest", "shard", "datadir", "rods"):
        shutil.copytree(data, base / name)
    shutil.copy(ROOT / "task_specs" / "paper.toml", base / "paper.toml")
    for name in ("o.jsonl", "secret.jsonl"):
        shutil.copy(oracle, base / name)
    (base / "secret.toml").write_text('task = "cot"\n')
    # a run folder whose record is never reached; the checkpoint folders of posgen train
    # --out rt, rc and ru; a folder whose runs would be left out unseen; a sweep folder
    for name in ("noexec", "ro", "drop", "runs/r", ".rt.posgen-resume", ".rc.posgen-resume",
                 ".ru.posgen-resume", "tree/locked", "sw/runs"):  # fmt: skip
        (base / name).mkdir(parents=True)
    for name in FILES:
        (base / "runs" / "r" / name).write_text("{}")
    (base / ".rc.posgen-resume" / "checkpoint.pt").write_bytes(b"a checkpoint")
    (base / ".rc.posgen-resume" / "progress.json").write_text('{"epoch": 1, "step": 1}')
    (base / "sw" / "sweep.json").write_text("{}")
    for name, part in (("parts", "0/2"), ("parts1", "1/2")):
        made = CliRunner().invoke(main, [*GEN.split(), str(base / name), "--part", part])
        assert made.exit_code == 0, made.output
    shutil.copytree(base / "parts", base / "pu")  # parts, one with a file it cannot read
    shutil.copytree(base / "parts1", base / "pu1")
    shutil.copytree(base / "parts", base / "pin")  # both parts in one folder, merged in place
    shutil.copytree(base / "parts1" / ".posgen-parts", base / "pin" / ".posgen-parts",
                    dirs_exist_ok=True)  # fmt: skip
    for path in [base, *base.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o644)
    tiny = "layers = 1, hidden = 16, heads = 2, intermediate = 32, epochs = 1, max_steps = 2"
    grid = f'datasets = ["{base / "ds"}"]\npes = ["rope"]\nseeds = [1]\n[[presets]]\n'
    (base / "grid.toml").write_text(f'{grid}name = "cpu"\noverrides = {{ {tiny} }}\n')
    sweep = Sweep(base / "sk")  # its runs listed, none trained
    sweep.add(expand(read_grid(base / "grid.toml"), resolve_encoding))
    (job,) = jobs_of(sweep.read().runs)
    (base / "sk" / "work" / job.key).mkdir(parents=True)  # the training's checkpoint folder
    for path in [base / "parts", *(base / "parts").rglob("*")]:  # parts another user wrote
        path.chmod(0o555 if path.is_dir() else 0o444)
    for path in (base / "secret.jsonl", base / "secret.toml", base / "manifest" / "posgen.json",
                 base / "runs" / "r" / "results.json", base / ".rc.posgen-resume" / "checkpoint.pt",
                 *(base / "shard" / "data" / "cot").glob("test-*"),
                 *(base / "pu" / ".posgen-parts" / "data" / "cot").glob("test-*"),
                 *(base / "pin" / ".posgen-parts" / "data" / "cot").glob("test-*")):  # fmt: skip
        path.chmod(0o000)
    modes = {"ro": 0o555, "rods": 0o555, "sw/runs": 0o555, f"sk/work/{job.key}": 0o555,
             "noexec": 0o600, "drop": 0o300, "datadir/data/cot": 0o600, "tree/locked": 0o000,
             ".rt.posgen-resume": 0o555, ".ru.posgen-resume": 0o300}  # fmt: skip
    for name, mode in modes.items():  # rods: a dataset whose files cannot be deleted or added
        (base / name).chmod(mode)  # to; drop: a drop box, files go in, no listing is shown
    if os.geteuid() == 0:
        shutil.copytree(data, base / "theirs")
        for path in [base / "theirs", *(base / "theirs").rglob("*")]:
            os.chown(path, 65534, 65534)
            path.chmod(0o755 if path.is_dir() else 0o644)


PERMISSION_DRIVER = """
import json, sys
from click.testing import CliRunner
from posgen.cli import main
for label, (line, *_) in json.loads(sys.argv[1]).items():
    result = CliRunner().invoke(main, line.split())
    print(json.dumps([label, result.exit_code, result.output]), flush=True)
"""  # the cases in a child process as the same user, results as JSON lines


def _without_dac_override() -> None:
    """In root's child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, which
    bypass the mode bits (the same user runs the cases: the clone may sit anywhere)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_permission_errors_are_one_error_line_naming_the_path(
    record, tiny_cot, tiny_oracle, tmp_path
):
    if sys.platform != "linux":
        pytest.skip("file permissions as Linux enforces them")
    base = tmp_path / "perm"
    base.mkdir()
    try:
        _prepare_permissions(base, tiny_cot, tiny_oracle)
        root = str(Path(posgen.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *sys.path[1:]])}
        command = [sys.executable, "-c", PERMISSION_DRIVER, json.dumps(PERMISSIONS)]
        drop = _without_dac_override if os.geteuid() == 0 else None
        proc = subprocess.run(command, cwd=base, capture_output=True, text=True, timeout=GUARD,
                              env=env, preexec_fn=drop)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        results = {json.loads(line)[0]: json.loads(line)[1:] for line in proc.stdout.splitlines()}
        failures = []
        for label, (_, wanted, named) in PERMISSIONS.items():
            exit_code, output = results.get(label, (None, "no result"))
            lines = [line for line in output.splitlines() if line.startswith("error:")]
            reported = "FAIL" in output and named in output and exit_code == 1
            # one line, or a damage headline and the one problem, naming the file
            named_once = 1 <= len(lines) <= 2 and named in lines[-1]
            codes = wanted if isinstance(wanted, tuple) else (wanted,)
            wrong = [problem for problem, bad in [
                ("a traceback", "Traceback" in output),
                (f"exit {exit_code}, not {wanted}", exit_code not in codes),
                (f"{named} not named in one error line", not (named_once or reported)),
            ] if bad]  # fmt: skip
            if wanted == 0:  # a place the user may write in: written, no error
                wrong = [w for w in wrong if "not named" not in w] + (
                    [f"{named} not written"] if lines or not (base / named).exists() else []
                )
            record("hostile", f"permission:{label}", not wrong)
            if wrong:
                failures.append(f"{label}: {'; '.join(wrong)}: {output[-300:]}")
        assert not failures, "\n".join(failures)
    finally:
        for path in [base, *base.rglob("*")]:
            if path.is_dir():
                path.chmod(0o777)


STICKY = {"validate --json": "r.json", "score --json": "r.json", "score --plot": "c.png",
          "baseline --out": "b.jsonl", "generate --out": "ds"}  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
@pytest.mark.parametrize("cmd", sorted(STICKY))
def test_another_users_output_in_a_sticky_folder_is_refused_before_the_work(
    assert_clean_error, cli, recorded, tiny_cot, tiny_oracle, tmp_path, cmd
):  # as a user in /tmp: the command ran, then 'writing ... failed: Operation not permitted'
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    os.chown(shared, 65533, 65533)  # neither the folder nor the file is this user's
    theirs = shared / STICKY[cmd]
    if cmd == "generate --out":
        theirs.mkdir()
    else:
        theirs.write_bytes(b"theirs")
    os.chown(theirs, 65534, 65534)
    command, flag = cmd.split()
    extra = ["--overwrite"] if command in ("generate", "baseline") else []
    result = cli(*command_args(command, tiny_cot, tiny_oracle), flag, theirs, *extra)
    with recorded("hostile", f"another user's output in a sticky folder:{cmd}"):
        assert_clean_error(result, 2, str(theirs), "belongs to another user")
        assert sorted(p.name for p in shared.iterdir()) == [theirs.name]
        assert theirs.is_dir() if command == "generate" else theirs.read_bytes() == b"theirs"


# --- anything unexpected ---------------------------------------------------------------
UNEXPECTED = [  # raised inside a command -> its exit status and what its one line names
    (KeyError("config"), 1, "(KeyError)"),
    (TypeError("unsupported operand"), 1, "(TypeError)"),
    (RecursionError("depth"), 1, "(RecursionError)"),
    (MemoryError(), 1, "(MemoryError)"),
    (RuntimeError("can't start new thread"), 1, "(RuntimeError)"),  # under ulimit -v: no bug
    (UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates"), 1, "(UnicodeEncodeError)"),
    (OSError(5, "Input/output error", "ds/x.parquet"), 1, "ds/x.parquet"),
    (IsADirectoryError(21, "Is a directory", "p.jsonl"), 2, "p.jsonl"),
    (OSError("Arrow: end of stream"), 1, "Arrow: end of stream"),  # a library's: no errno
    # an import that fails is a usage error only when the module is missing; never a traceback
    (ModuleNotFoundError("No module named 'x'", name="x"), 2, "x is not available"),
    (ImportError("mtrand.so: failed to map segment", name="mtrand"), 1, "mtrand could not"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "code", "named"), UNEXPECTED, ids=[type(e).__name__ for e, *_ in UNEXPECTED]
)
@pytest.mark.parametrize("debug", ["", "flag", "env"])
def test_unexpected_errors_become_one_error_line_with_the_traceback_on_request(
    cli, error_lines, recorded, tiny_cot, tiny_oracle, monkeypatch, error, code, named, debug
):
    monkeypatch.setattr("posgen.cli.score.score_reference", Mock(side_effect=error))
    monkeypatch.delenv("POSGEN_DEBUG", raising=False)
    args = ["score", "--data", tiny_cot, "--predictions", tiny_oracle]
    env = {"POSGEN_DEBUG": "1"} if debug == "env" else None
    result = cli(*(["--debug"] if debug == "flag" else []), *args, env=env)
    lines = error_lines(result.stderr)
    with recorded("unexpected", f"{type(error).__name__}:{debug or 'plain'}"):
        assert isinstance(result.exception, SystemExit | type(None)), repr(result.exception)
        assert result.exit_code == code
        assert len(lines) == 1, result.stderr
        assert named in lines[0]
        assert ("out of memory" in lines[0]) == isinstance(error, MemoryError), lines[0]
        limit = isinstance(error, MemoryError) or "thread" in str(error)  # a limit is no bug
        unexpected = not (isinstance(error, OSError | ImportError) or limit)
        assert ("internal error" in lines[0]) == unexpected, lines[0]
        traced = bool(debug) and not isinstance(error, ImportError)
        assert ("Traceback" in result.output) == traced, result.output


@pytest.mark.parametrize("case", [
    "baseline --out oracle.parquet", "baseline --out oracle.arrow", "baseline --out oracle.jsonl",
    "baseline --out oracle.npy", "score --json report.json", "score --plot curve.png",
    "validate --json report.json",
])  # fmt: skip
@pytest.mark.parametrize("limit", [0, 100])
def test_a_failed_write_leaves_the_previous_output_whole(
    assert_clean_error, cli, recorded, tiny_cot, tiny_oracle, tmp_path, monkeypatch, case, limit
):
    """Every output file is written atomically: a disk full after ``limit`` bytes."""
    command, flag, name = case.split()
    out = tmp_path / name
    out.write_bytes(b"the user's previous file\n")
    original = HashingFile.write

    def write(self, data):
        if self.size + len(data) > limit:
            raise OSError(28, "No space left on device")
        return original(self, data)

    monkeypatch.setattr(HashingFile, "write", write)
    overwrite = ["--overwrite"] if command == "baseline" else []
    result = cli(*command_args(command, tiny_cot, tiny_oracle), flag, out, *overwrite)
    with recorded("disk", f"output:{command} {flag} {name}:{limit}"):
        assert_clean_error(result, 1, str(out))
        assert out.read_bytes() == b"the user's previous file\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == [name]


# --- parts: N bounded, ASCII digits ------------------------------------------------------
PARTS = {  # Arabic-Indic digits, fullwidth 2, superscripts, then ASCII
    "\u0660/\u0662": "hostile", "0/\uff12": "hostile", "\u00b9/\u00b2": "hostile",
    "0/99999999999999999999": "bomb", "0/100000": "bomb", "99998/99999999": "bomb",
    "0/" + "9" * 5000: "bomb", "1/1": "hostile", "-1/2": "hostile", "0x1/2": "hostile",
    "0/2/3": "hostile", "": "hostile",
}  # fmt: skip


@pytest.mark.parametrize("part", sorted(PARTS), ids=ascii)
def test_parts_are_bounded_and_ascii(cli, assert_clean_error, recorded, tmp_path, part):
    out = tmp_path / "ds"
    result, peak = peak_memory(cli, "generate", "--out", out, *SMALL_FLAGS, "--part", part, "-q")
    with recorded(PARTS[part], f"part:{part[:30]!a}"):
        assert_clean_error(result, 2, "--part")
        assert not out.exists()
        assert peak < 64 * 2**20


def test_a_part_record_claiming_a_huge_count_is_refused(
    assert_clean_error, cli, recorded, tmp_path
):
    out = tmp_path / "ds"
    made = cli("generate", "--out", out, *SMALL_FLAGS, "--part", "0/2", "-q")
    assert made.exit_code == 0, made.output
    record_path = next((out / ".posgen-parts").iterdir())
    record_path.write_text(json.dumps({**json.loads(record_path.read_text()), "count": 10**20}))
    result = cli("merge", out)
    with recorded("bomb", "part record count 10^20"):
        assert_clean_error(result, (1, 2), "count")
        assert not (out / "posgen.json").exists()


# --- outputs through links and pipes; huge flag values ----------------------------------
@pytest.mark.parametrize("kind", ["link to a file", "dangling link", "link in another folder",
                                  "fifo"])  # fmt: skip
def test_outputs_through_links_and_pipes_replace_what_they_name(
    cli, recorded, tiny_cot, tiny_oracle, tmp_path, kind
):
    real, out = tmp_path / "real.json", tmp_path / "out.json"
    received: list[bytes] = []
    if kind == "fifo":
        os.mkfifo(out)
        reader = threading.Thread(target=lambda: received.append(out.read_bytes()))
        reader.start()
    else:
        if kind == "link in another folder":
            real = tmp_path / "elsewhere" / "real.json"
            real.parent.mkdir()
        if kind != "dangling link":
            real.write_text("old\n")
        out.symlink_to(real)
    result = cli("score", "--data", tiny_cot, "--predictions", tiny_oracle, "--json", out)
    with recorded("hostile", f"output through {kind}"):
        assert result.exit_code == 0, result.output
        if kind == "fifo":
            reader.join(timeout=GUARD)  # the writer has closed the pipe: only a hang waits here
            assert json.loads(received[0])["rows"] == SMALL["test_size"]
        else:
            assert out.is_symlink()
            assert out.resolve() == real
            assert json.loads(real.read_text())["rows"] == SMALL["test_size"]
            assert sorted(p.name for p in real.parent.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("flag", [
    "validate --config", "validate --split", "score --config", "score --split", "generate --op",
    "baseline --fit-split",
])  # fmt: skip
def test_huge_flag_values_are_never_echoed_whole(
    assert_clean_error, cli, recorded, tiny_cot, tiny_oracle, tmp_path, flag
):
    command, option = flag.split()
    out = {"generate": ["--out", tmp_path / "ds"], "baseline": ["--out", tmp_path / "b.npy"]}
    args = [*command_args(command, tiny_cot, tiny_oracle), *out.get(command, [])]
    result = cli(*args, option, "x" * 20_000)
    with recorded("bomb", f"huge value:{flag}"):
        assert len(assert_clean_error(result, 2)) <= 1010


def test_a_folder_tree_nested_past_the_recursion_limit_is_walked(tmp_path):
    """``results``, ``validate DIR`` and the check for unlisted files (the limit is lowered)."""
    os.makedirs(os.path.join(tmp_path, *["a"] * 150))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + 100)
    try:
        runs = find_runs([tmp_path])
        files = data_files(tmp_path, FORMATS["parquet"])
        with pytest.raises(SourceError, match="holds no"):
            resolve(tmp_path, TaskSpec(task="cot"), None, None)
    finally:
        sys.setrecursionlimit(limit)
    assert (runs, files) == (([], []), [])
