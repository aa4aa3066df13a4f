"""An output on an input, inside a folder read or a dataset, or on a run folder's own files
(links resolved) is one ``error:`` line, exit 2, before any work (``cli.output_problems``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from posgen import write_dataset
from posgen.spec import default_benchmark

ROOT = Path(__file__).resolve().parents[2]
SHARD = "data/cot/test-00000-of-00001.parquet"
PROBE = "data/cot-probe/probe-00000-of-00001.parquet"
BASELINE = "baseline --kind oracle --data {t}/ds --config cot --out "
SCORE = "score --data {t}/ds --predictions {t}/oracle.jsonl "
GENERATE = "generate --task cot --train-size 32 --val-size 8 --test-size 8 "
INSIDE = "dataset folder"
RUN = "a run folder's own"
CASES = {  # case -> (the command line, in the test's folder t; a fragment of the error line)
    "baseline onto the test shard": (BASELINE + "{t}/ds/{shard} --overwrite", INSIDE),
    "baseline onto probe shard": (BASELINE + "{t}/ds/{probe} --overwrite --split probe", INSIDE),
    "baseline inside the dataset": (BASELINE + "{t}/ds/oracle.parquet", INSIDE),
    "baseline deep inside the dataset": (BASELINE + "{t}/ds/data/cot/x/oracle.jsonl", INSIDE),
    "baseline inside the dataset by a link": (BASELINE + "{t}/link/cot/oracle.npy", INSIDE),
    "baseline onto the shard, data by a link": (
        BASELINE.replace("{t}/ds", "{t}/dslink") + "{t}/ds/{shard} --overwrite", INSIDE),
    "baseline inside another dataset": (BASELINE + "{t}/other/oracle.parquet", INSIDE),
    "sweep inside the dataset": ("sweep {t}/grid.toml --out {t}/ds/sweep", INSIDE),
    "sweep the dataset's data folder": ("sweep {t}/grid.toml --out {t}/ds/data", INSIDE),
    "sweep inside the dataset by a link": ("sweep {t}/grid.toml --out {t}/link/sweep", INSIDE),
    "sweep the dataset folder itself": ("sweep {t}/grid.toml --out {t}/ds", INSIDE),
    "validate --json onto a shard of SOURCE": ("validate {t}/ds --json {t}/ds/{shard}", INSIDE),
    "validate --json inside SOURCE": ("validate {t}/ds --json {t}/ds/r.json", INSIDE),
    "validate --json onto SOURCE itself": (
        "validate {t}/plain/x.parquet --json {t}/plain/x.parquet", "which this command reads"),
    "validate --json inside a bare SOURCE": (
        "validate {t}/plain --task cot --json {t}/plain/r.json", "inside SOURCE"),
    "validate --json onto --spec": (
        "validate {t}/plain --spec {t}/spec.toml --json {t}/spec.toml", "--spec"),
    "generate inside the dataset": (GENERATE + "--out {t}/ds/inner", INSIDE),
    "generate --overwrite inside data": (GENERATE + "--out {t}/ds/data/cot --overwrite", INSIDE),
    "generate --part inside the dataset": (GENERATE + "--part 1/2 --out {t}/ds/parts", INSIDE),
    "publish inside the dataset": ("publish {t}/spec.toml --out {t}/ds/hub", INSIDE),
    "generate --overwrite of a user's file": (
        GENERATE + "--out {t}/other --overwrite", "holds files that are not the dataset's"),
    "generate --spec inside --out": (
        "generate --spec {t}/other/spec.toml --out {t}/other --overwrite", "inside --out"),
    "publish SPEC inside --out": (
        "publish {t}/other/spec.toml --out {t}/other --overwrite", "inside --out"),
    "merge OUT inside the dataset": ("merge {t}/ds/merged", INSIDE),
    "merge OUT inside a PART": ("merge {t}/plain/merged {t}/plain", "inside PARTS"),
    "score --json onto the test shard": (SCORE + "--json {t}/ds/{shard}", INSIDE),
    "score --plot inside the dataset": (SCORE + "--plot {t}/ds/curve.png", INSIDE),
    "score --json onto --predictions": (SCORE + "--json {t}/oracle.jsonl", "--predictions"),
    "score --json onto a run's record": (SCORE + "--json {t}/run/results.json", RUN),
    "score --plot inside a run's model": (SCORE + "--plot {t}/run/model/c.png", RUN),
    "baseline onto run predictions": (BASELINE + "{t}/run/predictions.parquet --overwrite", RUN),
    "train inside the dataset by a link": ("train --data {t}/ds --pe rope --out {t}/link/run -q",
                                           INSIDE),
}  # fmt: skip
ALLOWED = {  # case -> (the command line, the file it writes)
    "baseline outside the dataset": (BASELINE + "{t}/out/oracle.parquet -q", "out/oracle.parquet"),
    "generate --overwrite of the dataset": (GENERATE + "--out {t}/ds --overwrite -q",
                                            "ds/posgen.json"),
    "generate --overwrite of an Arrow dataset": (
        GENERATE + "--format arrow --out {t}/arrow --overwrite -q", "arrow/posgen.json"),
    "validate --json beside the dataset": ("validate {t}/ds --json {t}/report.json", "report.json"),
    "baseline beside a user's posgen.json": (BASELINE + "{t}/mine/oracle.jsonl -q",
                                             "mine/oracle.jsonl"),
    "score --json beside a run's files": (SCORE + "--json {t}/run/s.json", "run/s.json"),
}  # fmt: skip


@pytest.fixture(scope="module")
def arrow_dataset(tmp_path_factory) -> Path:
    """A small cot dataset in Arrow storage, written once: read it, never change it."""
    out = tmp_path_factory.mktemp("arrow") / "arrow"
    write_dataset(default_benchmark(("cot",), train_size=32, val_size=8, test_size=8), out,
                  storage="arrow")  # fmt: skip
    return out


@pytest.fixture
def folder(tmp_path, tiny_cot, tiny_oracle, arrow_dataset) -> Path:
    """Datasets ``ds``, ``other`` (with a user's file) and ``arrow``, links to them, ``plain`` (a
    parquet file, no manifest), a spec, a grid, the oracle's predictions and a run folder."""
    shutil.copytree(tiny_cot, tmp_path / "ds")
    shutil.copytree(tiny_cot, tmp_path / "other")
    (tmp_path / "link").symlink_to(tmp_path / "ds" / "data")
    (tmp_path / "dslink").symlink_to(tmp_path / "ds")
    (tmp_path / "plain").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "posgen.json").write_text("{}")  # a user's file (write_dataset agrees)
    shutil.copy(tiny_cot / SHARD, tmp_path / "plain" / "x.parquet")
    shutil.copy(ROOT / "task_specs" / "posgen-v1.toml", tmp_path / "spec.toml")
    shutil.copy(tmp_path / "spec.toml", tmp_path / "other" / "spec.toml")  # a user's file
    shutil.copytree(arrow_dataset, tmp_path / "arrow", symlinks=True)
    (tmp_path / "grid.toml").write_text(f'datasets = ["{tmp_path / "ds"}"]\npes = ["rope"]\n')
    shutil.copy(tiny_oracle, tmp_path / "oracle.jsonl")
    (tmp_path / "run").mkdir()
    for name in ("results.json", "predictions.parquet"):  # is_run: a run folder
        (tmp_path / "run" / name).write_text("{}")
    return tmp_path


def run(line: str, folder: Path) -> list[str]:
    return line.format(t=folder, shard=SHARD, probe=PROBE).split()


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_output_on_an_input_or_inside_a_dataset_is_refused_before_any_work(
    assert_clean_error, cli, recorded, tree, folder, case
):
    line, fragment = CASES[case]
    before = tree(folder)
    result = cli(*run(line, folder))
    with recorded("target", f"class 1: {case}"):
        assert_clean_error(result, 2, fragment)
        assert tree(folder) == before


@pytest.mark.parametrize("case", sorted(ALLOWED))
def test_outputs_beside_the_inputs_are_written(cli, recorded, folder, case):
    line, written = ALLOWED[case]
    result = cli(*run(line, folder))
    with recorded("target", f"class 1: {case}"):
        assert result.exit_code == 0, result.output
        assert (folder / written).is_file()
