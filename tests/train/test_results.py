"""``posgen results``: aggregation of run folders (``trained_runs``: rope and yarn, seeds 1, 2)."""

from __future__ import annotations

import csv
import json
import shutil
import statistics

import pytest

torch = pytest.importorskip("torch")

from posgen.scoring import load_probe, read_predictions, score_probe  # noqa: E402
from posgen.store.manifest import read_manifest  # noqa: E402
from posgen.train.results import effective_length  # noqa: E402
from posgen.train.run_record import PREDICTIONS, PROBE_PREDICTIONS, read_run  # noqa: E402


def test_results_table_holds_accuracy_far_reliance_mean_std_seed_count_and_definitions(
    trained_runs, reported
):
    records = [read_run(trained_runs / f"yarn-{seed}") for seed in (1, 2)]
    ids = [record.scores.id.accuracy for record in records]
    cell = reported["json"]["ds"]["tasks"]["cot"]["yarn"]
    assert (cell["n"], cell["seeds"]) == (2, [1, 2])
    assert cell["id_mean"] == pytest.approx(statistics.mean(ids))
    assert cell["id_std"] == pytest.approx(statistics.stdev(ids))
    far = [record.probe_scores.ood.far_reliance for record in records]
    assert cell["far_ood_mean"] == pytest.approx(statistics.mean(far))
    text = reported["md"]
    assert "Produced by `make results`." in text
    header = "| task | PE | n | ID accuracy | OOD accuracy | ID far-reliance | OOD far-reliance"
    assert header in text
    row = f"| cot | yarn | 2 | {statistics.mean(ids):.3f} ± {statistics.stdev(ids):.3f} |"
    assert row in text
    assert reported["plot"].stat().st_size > 0
    assert "![accuracy against position](c.png)" in text
    assert "Effective length E: the ID reference is the mean per-position test accuracy" in text
    assert "blocks of 8" in text and "0.05 below the reference" in text


def test_every_run_scores_the_probe_split_with_the_same_weights_and_names_its_data(
    trained_runs, tiny_training_dataset
):
    run = trained_runs / "rope-1"
    report = read_run(run).probe_scores
    predictions = read_predictions(run / PROBE_PREDICTIONS)
    probe = load_probe(tiny_training_dataset, "cot", "probe")
    again = score_probe(probe, predictions.tokens, ids=predictions.ids)
    assert report.model_dump() == again.model_dump()
    spec_id = read_manifest(tiny_training_dataset).configs["cot"].spec_id
    assert read_predictions(run / PREDICTIONS).made_for == (spec_id, "test")
    assert predictions.made_for == (spec_id, "probe")


def test_results_without_run_folders_is_one_error_line(assert_clean_error, cli, tmp_path):
    result = cli("results", tmp_path, "--out", tmp_path / "R.md")
    line = assert_clean_error(result, 2)
    assert line == f"error: no finished run folders in {tmp_path}"
    assert result.output.strip() == line  # nothing but the error line
    assert not (tmp_path / "R.md").exists()


def test_card_shows_reference_results_only_for_the_data_they_were_trained_on(
    tiny_training_dataset,
):
    from posgen.card.tasks import results_section

    manifest = read_manifest(tiny_training_dataset)
    cell = {"n": 3, "id_mean": 1.0, "id_std": 0.0, "ood_mean": 0.5, "ood_std": 0.1}
    spec_ids = {name: config.spec_id for name, config in manifest.configs.items()}
    entry = {"spec_ids": spec_ids, "tasks": {"cot": {"rope": cell}}}
    section = results_section(manifest, {manifest.benchmark.name: entry})
    assert section.splitlines()[-1] == "| cot | rope | 3 | 1.000 ± 0.000 | 0.500 ± 0.100 | - | - |"
    other = {**entry, "spec_ids": {**spec_ids, "cot": "0" * 16}}
    assert results_section(manifest, {manifest.benchmark.name: other}) == ""


def test_csv_and_json_rank_pes_by_ood_accuracy_with_an_effective_length(
    cli, trained_runs, tmp_path
):
    out_csv, out_json = tmp_path / "r.csv", tmp_path / "r.json"
    for fmt, out in (("csv", out_csv), ("json", out_json)):
        result = cli("results", trained_runs, "--format", fmt, "--out", out)
        assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    oods = [float(row["ood_mean"]) for row in rows]
    assert oods == sorted(oods, reverse=True)
    assert [row["rank"] for row in rows] == ["1", "2"]
    entry = json.loads(out_json.read_text())["results"]["ds"]
    for pe, cell in entry["tasks"]["cot"].items():
        positions, accuracy = cell["curve"]["position"], cell["curve"]["accuracy"]
        expected = effective_length(positions, accuracy, 4, entry["ood_boundary"], 1 / 17)
        assert cell["effective_length"] == expected, pe
        assert [row["effective_length"] for row in rows if row["pe"] == pe] == [
            "" if expected is None else str(expected)
        ]


def test_results_call_cells_complete_or_name_those_missing_a_seed_others_have(
    cli, trained_runs, reported, tmp_path
):
    assert "Incomplete" not in reported["md"]
    partial = tmp_path / "runs"
    shutil.copytree(trained_runs, partial)
    shutil.rmtree(partial / "yarn-2")
    line = "the runs use 2 seeds (1, 2); fewer finished for 1 cells: ds/cot/yarn (1)."
    for command, advice in (
        ([], "then run `posgen results` again"),
        (["--command", "make results"], "Rerun `make results` to train the missing runs"),
    ):
        out = tmp_path / "R.md"
        result = cli("results", partial, "--out", out, *command)
        assert result.exit_code == 0, result.output
        assert line in out.read_text() and advice in out.read_text()
