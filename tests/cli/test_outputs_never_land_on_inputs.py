"""Issue 27, class 1: no command writes over what it reads or into a dataset folder.

Every command that writes (``baseline --out``, ``sweep --out``, ``validate --json``,
``generate``/``publish``/``merge`` into a dataset, ``score --json``/``--plot``,
``train --out``) makes the one check of :func:`posgen.cli.runner.output_problems` before any
work: an output that is an input, lies inside a folder read, or lies inside a dataset folder
(links resolved) is one ``error:`` line, exit 2, and not a byte under the test's folder
changes. A dataset target may replace a dataset (``--overwrite``), never sit inside one.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from posgen import write_dataset
from posgen.spec import default_benchmark

ROOT = Path(__file__).resolve().parents[2]
SHARD = "data/cot/test-00000-of-00001.parquet"
PROBE_SHARD = "data/cot-probe/probe-00000-of-00001.parquet"
SMALL = ["--task", "cot", "--train-size", "32", "--val-size", "8", "--test-size", "8"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A one-config dataset (cot, 32/8/8 rows, L = 64, L' = 256): copied by every test."""
    out = tmp_path_factory.mktemp("outputs") / "ds"
    write_dataset(default_benchmark(("cot",), train_size=32, val_size=8, test_size=8), out)
    return out


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (links not followed), and every folder."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path)] = f"link to {path.readlink()}"
        elif path.is_file():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[str(path)] = "folder"
    return found


def baseline(ds: Path, out: Path, *extra: str) -> list[object]:
    return ["baseline", "--kind", "oracle", "--data", ds, "--config", "cot", "--out", out, *extra]


def grid(t: Path) -> Path:
    path = t / "grid.toml"
    path.write_text(f'datasets = ["{t / "ds"}"]\npes = ["rope"]\n')
    return path


def score(t: Path) -> list[object]:
    return ["score", "--data", t / "ds", "--predictions", t / "oracle.parquet"]


def train(ds: Path, out: Path) -> list[object]:
    return ["train", "--data", ds, "--pe", "rope", "--out", out, "-q"]


# case -> (the command line, given the test's folder t and its dataset t/ds; a fragment of
# the error line)
CASES = {
    "baseline --out onto the test shard, --overwrite": (
        lambda t: baseline(t / "ds", t / "ds" / SHARD, "--overwrite"),
        "dataset folder",
    ),
    "baseline --out onto the probe shard, --overwrite": (
        lambda t: [
            *baseline(t / "ds", t / "ds" / PROBE_SHARD, "--overwrite"),
            "--split",
            "probe",
        ],
        "dataset folder",
    ),
    "baseline --out a new file inside the dataset": (
        lambda t: baseline(t / "ds", t / "ds" / "oracle.parquet"),
        "dataset folder",
    ),
    "baseline --out a new file deep inside the dataset": (
        lambda t: baseline(t / "ds", t / "ds" / "data" / "cot" / "x" / "oracle.jsonl"),
        "dataset folder",
    ),
    "baseline --out inside the dataset through a link": (
        lambda t: baseline(t / "ds", t / "link" / "cot" / "oracle.npy"),
        "dataset folder",
    ),
    "baseline --out onto the test shard of a dataset named through a link": (
        lambda t: baseline(t / "dslink", t / "ds" / SHARD, "--overwrite"),
        "dataset folder",
    ),
    "baseline --out inside another dataset": (
        lambda t: baseline(t / "ds", t / "other" / "oracle.parquet"),
        "dataset folder",
    ),
    "sweep --out inside the dataset": (
        lambda t: ["sweep", grid(t), "--out", t / "ds" / "sweep"],
        "dataset folder",
    ),
    "sweep --out the dataset's data folder": (
        lambda t: ["sweep", grid(t), "--out", t / "ds" / "data"],
        "dataset folder",
    ),
    "sweep --out inside the dataset through a link": (
        lambda t: ["sweep", grid(t), "--out", t / "link" / "sweep"],
        "dataset folder",
    ),
    "sweep --out the dataset folder itself": (
        lambda t: ["sweep", grid(t), "--out", t / "ds"],
        "dataset folder",
    ),
    "validate --json onto a shard of SOURCE": (
        lambda t: ["validate", t / "ds", "--json", t / "ds" / SHARD],
        "dataset folder",
    ),
    "validate --json a new file inside SOURCE": (
        lambda t: ["validate", t / "ds", "--json", t / "ds" / "report.json"],
        "dataset folder",
    ),
    "validate --json onto the shard that is SOURCE": (
        lambda t: ["validate", t / "plain" / "x.parquet", "--json", t / "plain" / "x.parquet"],
        "which this command reads",
    ),
    "validate --json inside a SOURCE folder without a manifest": (
        lambda t: ["validate", t / "plain", "--task", "cot", "--json", t / "plain" / "r.json"],
        "inside SOURCE",
    ),
    "validate --json onto the --spec file": (
        lambda t: ["validate", t / "plain", "--spec", t / "spec.toml", "--json", t / "spec.toml"],
        "--spec",
    ),
    "generate --out inside the dataset": (
        lambda t: ["generate", *SMALL, "--out", t / "ds" / "inner"],
        "dataset folder",
    ),
    "generate --out inside the dataset's data, --overwrite": (
        lambda t: ["generate", *SMALL, "--out", t / "ds" / "data" / "cot", "--overwrite"],
        "dataset folder",
    ),
    "generate --part 1/2 --out inside the dataset": (
        lambda t: ["generate", *SMALL, "--part", "1/2", "--out", t / "ds" / "parts"],
        "dataset folder",
    ),
    "publish --out inside the dataset": (
        lambda t: ["publish", t / "spec.toml", "--out", t / "ds" / "hub"],
        "dataset folder",
    ),
    "merge OUT inside the dataset": (
        lambda t: ["merge", t / "ds" / "merged"],
        "dataset folder",
    ),
    "merge OUT inside a PART folder": (
        lambda t: ["merge", t / "plain" / "merged", t / "plain"],
        "inside PARTS",
    ),
    "score --json onto the dataset's test shard": (
        lambda t: [*score(t), "--json", t / "ds" / SHARD],
        "dataset folder",
    ),
    "score --plot inside the dataset": (
        lambda t: [*score(t), "--plot", t / "ds" / "curve.png"],
        "dataset folder",
    ),
    "score --json onto --predictions": (
        lambda t: [*score(t), "--json", t / "oracle.parquet"],
        "--predictions",
    ),
    "train --out inside the dataset through a link": (
        lambda t: train(t / "ds", t / "link" / "run"),
        "dataset folder",
    ),
}


@pytest.fixture
def folder(cli, tmp_path, dataset) -> Path:
    """The test's folder: the dataset ``ds``, another dataset ``other``, ``link`` (to
    ``ds/data``), ``dslink`` (to ``ds``), ``plain`` (parquet files without a manifest), a
    spec file and oracle predictions made outside."""
    shutil.copytree(dataset, tmp_path / "ds")
    shutil.copytree(dataset, tmp_path / "other")
    (tmp_path / "link").symlink_to(tmp_path / "ds" / "data")
    (tmp_path / "dslink").symlink_to(tmp_path / "ds")
    (tmp_path / "plain").mkdir()
    shutil.copy(dataset / SHARD, tmp_path / "plain" / "x.parquet")
    shutil.copy(ROOT / "task_specs" / "posgen-v1.toml", tmp_path / "spec.toml")
    result = cli(*baseline(tmp_path / "ds", tmp_path / "oracle.parquet", "-q"))
    assert result.exit_code == 0, result.output
    return tmp_path


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_output_on_an_input_or_inside_a_dataset_is_refused_before_any_work(
    assert_clean_error, cli, recorded, folder, case
):
    make, fragment = CASES[case]
    args = make(folder)
    before = snapshot(folder)
    result = cli(*args)
    with recorded("target", f"class 1: {case}"):
        assert_clean_error(result, 2, fragment)
        assert snapshot(folder) == before


ALLOWED = {
    "baseline --out outside the dataset": (
        lambda t: baseline(t / "ds", t / "out" / "oracle.parquet", "-q"),
        "out/oracle.parquet",
    ),
    "generate --out over the dataset itself, --overwrite (a dataset is replaced)": (
        lambda t: ["generate", *SMALL, "--out", t / "ds", "--overwrite", "-q"],
        "ds/posgen.json",
    ),
    "validate --json beside the dataset": (
        lambda t: ["validate", t / "ds", "--json", t / "report.json"],
        "report.json",
    ),
}


@pytest.mark.parametrize("case", sorted(ALLOWED))
def test_outputs_beside_the_inputs_are_written(cli, recorded, folder, case):
    make, written = ALLOWED[case]
    result = cli(*make(folder))
    with recorded("target", f"class 1: {case}"):
        assert result.exit_code == 0, result.output
        assert (folder / written).is_file()
