"""``posgen results``: aggregation of run folders."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from posgen import write_dataset  # noqa: E402
from posgen.scoring import load_probe, read_predictions, score_probe  # noqa: E402
from posgen.spec import default_benchmark  # noqa: E402
from posgen.train.config import preset  # noqa: E402
from posgen.train.job import train_runs  # noqa: E402
from posgen.train.results import effective_length  # noqa: E402
from posgen.train.run_record import PROBE_PREDICTIONS, RESULTS, read_run  # noqa: E402


def run_folder(runs: Path, data: Path, task: str, pe: str, seed: int) -> Path:
    return runs / data.name / task / pe / f"seed{seed}"


TINY = {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32, "batch_size": 32}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """A data folder and a runs folder with rope and yarn runs of two seeds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("results")
    data = root / "tiny"
    write_dataset(default_benchmark(("cot",), train_size=64, val_size=8, test_size=8), data)
    config = preset("cpu", **TINY, epochs=1, max_steps=2)
    for seed in (1, 2):
        outs = [run_folder(root / "runs", data, "cot", pe, seed) for pe in ("rope", "yarn")]
        train_runs(data, "cot", ["rope", "yarn"], config, seed, outs, "cpu")
    torch.set_num_threads(threads)
    return data, root / "runs"


def test_results_table_holds_accuracy_and_far_reliance_mean_std_and_seed_count(cli, runs, tmp_path):
    data, folder = runs
    out, js, plot = tmp_path / "R.md", tmp_path / "r.json", tmp_path / "c.png"
    args = ["results", folder, "--out", out, "--json", js, "--plot", plot]
    result = cli(*args, "--command", "make results")
    assert result.exit_code == 0, result.output
    scores = [
        json.loads((run_folder(folder, data, "cot", "yarn", s) / RESULTS).read_text())["scores"]
        for s in (1, 2)
    ]
    ids = [s["id"]["accuracy"] for s in scores]
    reports = [read_run(run_folder(folder, data, "cot", "yarn", s)).probe_scores for s in (1, 2)]
    cell = json.loads(js.read_text())["tiny"]["tasks"]["cot"]["yarn"]
    assert cell["n"] == 2
    assert cell["seeds"] == [1, 2]
    assert cell["id_mean"] == pytest.approx(statistics.mean(ids))
    assert cell["id_std"] == pytest.approx(statistics.stdev(ids))
    assert cell["far_ood_mean"] == pytest.approx(
        statistics.mean(r.ood.far_reliance for r in reports)
    )
    text = out.read_text()
    assert "Produced by `make results`." in text
    header = "| task | PE | n | ID accuracy | OOD accuracy | ID far-reliance | OOD far-reliance"
    assert header in text
    row = f"| cot | yarn | 2 | {statistics.mean(ids):.3f} ± {statistics.stdev(ids):.3f} |"
    assert row in text
    assert plot.stat().st_size > 0
    assert "![accuracy against position](c.png)" in text


def test_every_run_scores_the_probe_split_with_the_same_weights(runs):
    data, folder = runs
    run = run_folder(folder, data, "cot", "rope", 1)
    report = read_run(run).probe_scores
    predictions = read_predictions(run / PROBE_PREDICTIONS)
    again = score_probe(load_probe(data, "cot", "probe"), predictions.tokens, ids=predictions.ids)
    assert report.model_dump() == again.model_dump()


def test_results_without_run_folders_is_one_error_line(assert_clean_error, cli, tmp_path):
    result = cli("results", tmp_path, "--out", tmp_path / "R.md")
    line = assert_clean_error(result, 2)
    assert line == f"error: no finished run folders in {tmp_path}"
    assert result.output.strip() == line  # nothing but the error line
    assert not (tmp_path / "R.md").exists()


def test_card_shows_reference_results_only_for_the_data_they_were_trained_on(runs):
    from posgen.card.tasks import results_section
    from posgen.store.manifest import read_manifest

    data, _ = runs
    manifest = read_manifest(data)
    cell = {"n": 3, "id_mean": 1.0, "id_std": 0.0, "ood_mean": 0.5, "ood_std": 0.1}
    spec_ids = {"cot": manifest.configs["cot"].spec_id}
    entry = {"spec_ids": spec_ids, "tasks": {"cot": {"rope": cell}}}
    section = results_section(manifest, {manifest.benchmark.name: entry})
    row = "| cot | rope | 3 | 1.000 ± 0.000 | 0.500 ± 0.100 | - | - |"
    assert section.splitlines()[-1] == row
    other = {**entry, "spec_ids": {"cot": "0" * 16}}
    assert results_section(manifest, {manifest.benchmark.name: other}) == ""


def test_csv_and_json_rank_pes_by_ood_accuracy_with_an_effective_length(cli, runs, tmp_path):
    import csv

    _, folder = runs
    out_csv, out_json = tmp_path / "r.csv", tmp_path / "r.json"
    for fmt, out in (("csv", out_csv), ("json", out_json)):
        result = cli("results", folder, "--format", fmt, "--out", out)
        assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    oods = [float(row["ood_mean"]) for row in rows]
    assert oods == sorted(oods, reverse=True)
    assert [row["rank"] for row in rows] == ["1", "2"]
    entry = json.loads(out_json.read_text())["results"]["tiny"]
    for pe, cell in entry["tasks"]["cot"].items():
        positions, accuracy = cell["curve"]["position"], cell["curve"]["accuracy"]
        expected = effective_length(positions, accuracy, 4, entry["ood_boundary"], 1 / 17)
        assert cell["effective_length"] == expected, pe
        assert [row["effective_length"] for row in rows if row["pe"] == pe] == [
            "" if expected is None else str(expected)
        ]


def test_results_call_cells_complete_or_name_those_missing_a_seed_others_have(cli, runs, tmp_path):
    import shutil

    data, folder = runs
    complete = tmp_path / "C.md"
    assert cli("results", folder, "--out", complete).exit_code == 0
    assert "Incomplete" not in complete.read_text()
    partial = tmp_path / "runs"
    shutil.copytree(folder, partial)
    shutil.rmtree(run_folder(partial, data, "cot", "yarn", 2))
    out = tmp_path / "R.md"
    result = cli("results", partial, "--out", out)
    assert result.exit_code == 0, result.output
    line = "the runs use 2 seeds (1, 2); fewer finished for 1 cells: tiny/cot/yarn (1)."
    assert line in out.read_text()
    assert "then run `posgen results` again" in out.read_text()
    made = tmp_path / "M.md"
    result = cli("results", partial, "--out", made, "--command", "make results")
    assert result.exit_code == 0, result.output
    assert "Rerun `make results` to train the missing runs" in made.read_text()


def test_run_predictions_name_the_spec_and_split_they_were_made_for(runs):
    from posgen.store.manifest import read_manifest
    from posgen.train.run_record import PREDICTIONS

    data, folder = runs
    run = run_folder(folder, data, "cot", "rope", 1)
    spec_id = read_manifest(data).configs["cot"].spec_id
    assert read_predictions(run / PREDICTIONS).made_for == (spec_id, "test")
    assert read_predictions(run / PROBE_PREDICTIONS).made_for == (spec_id, "probe")
