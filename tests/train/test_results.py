"""``posgen results`` of ``trained_runs`` (rope and yarn, seeds 1, 2); lax input refused."""
# ruff: noqa: E402

from __future__ import annotations

import csv
import json
import re
import shutil
import statistics

import pytest

torch = pytest.importorskip("torch")

from posgen.card import results_section
from posgen.encodings import Lengths, PERequest, resolve
from posgen.errors import UsageError
from posgen.scoring import load_probe, read_predictions, score_probe
from posgen.scoring.reliance import measure_sentences
from posgen.store.manifest import read_manifest
from posgen.train import PREDICTIONS, PROBE_PREDICTIONS
from posgen.train.results import ResultsError, effective_length, find_runs
from posgen.train.run_record import DamagedRun, read_run


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
    entry = reported["json"]["ds"]  # what the cards render as it is: its sentences included
    assert entry["measures"] == measure_sentences("ds", entry)
    assert entry["measures"][0].startswith("cot on ds measures ")
    text = reported["md"]
    assert "Produced by `make results`." in text
    assert "- Wall time: 10.0 min" in text
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


RECORD_TEXT = {  # a run record's free text that reaches the tables -> text breaking a table
    "label": {"position_encoding": {"label": "rope|x\n## injected\x00" + "L" * 5000}},
    "folder": {"data": {"folder": "/tmp/da|ta\nnew"}},
}


@pytest.mark.parametrize("field", sorted(RECORD_TEXT))
def test_a_run_records_free_text_keeps_the_tables_whole(
    cli, trained_runs, edited_run, tmp_path, field
):
    edited_run(trained_runs / "rope-1", tmp_path / "runs" / "a", **RECORD_TEXT[field])
    assert cli("results", tmp_path / "runs", "--out", tmp_path / "R.md").exit_code == 0
    lines = (tmp_path / "R.md").read_text().splitlines()
    rows = [line.replace("\\|", "") for line in lines if line.startswith("|")]
    assert {row.count("|") for row in rows} == {9, 12}  # 8 and 11 columns, every row
    assert max(map(len, rows)) < 600
    assert not [line for line in lines if line.startswith(("new", "## injected")) or "\0" in line]


@pytest.mark.parametrize("kind", ["eee", "hf"])
def test_export_file_names_never_collide_and_fit_whatever_the_labels(
    cli, trained_runs, edited_run, tmp_path, kind
):
    labels = ["a/b", "a_b", "L" * 300]
    for n, label in enumerate(labels):
        pe = {"label": label}
        edited_run(trained_runs / "rope-1", tmp_path / "runs" / str(n), position_encoding=pe)
    result = cli("results", tmp_path / "runs", "--format", kind, "--out", tmp_path / "E")
    assert result.exit_code == 0, result.output
    cells = sorted((tmp_path / "E").glob("*/*/*"))  # DATA/TASK/PE(.json)
    assert len(cells) == len(labels) and max(len(cell.name) for cell in cells) < 140


def test_results_without_run_folders_is_one_error_line(assert_clean_error, cli, tmp_path):
    result = cli("results", tmp_path, tmp_path, "--out", tmp_path / "R.md")  # named once
    line = assert_clean_error(result, 2)
    assert line == f"error: no finished run folders in {tmp_path}"
    assert result.output.strip() == line  # nothing but the error line
    assert not (tmp_path / "R.md").exists()


def test_card_shows_reference_results_only_for_the_data_they_were_trained_on(tiny_training_dataset):
    manifest = read_manifest(tiny_training_dataset)
    cell = {"n": 3, "id_mean": 1.0, "id_std": 0.0, "ood_mean": 0.5, "ood_std": 0.1}
    spec_ids = {name: config.spec_id for name, config in manifest.configs.items()}
    entry = {"spec_ids": spec_ids, "tasks": {"cot": {"rope": cell}}}
    section = results_section(manifest, {manifest.benchmark.name: entry})
    assert section.splitlines()[-1] == "| cot | rope | 3 | 1.000 ± 0.000 | 0.500 ± 0.100 | - | - |"
    assert "with each position embedding below" in section  # not "the paper's four": all rows
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
    presets = json.loads(out_json.read_text())["settings"]["presets"]
    assert [p for p in presets if "seeds" in p] == []  # not the preset's, unused, seeds
    for pe, cell in entry["tasks"]["cot"].items():
        positions, accuracy = cell["curve"]["position"], cell["curve"]["accuracy"]
        expected = effective_length(positions, accuracy, 4, cell["ood_boundary"], 1 / 17)
        assert cell["effective_length"] == expected, pe
        assert [row["effective_length"] for row in rows if row["pe"] == pe] == [
            "" if expected is None else str(expected)
        ]


def test_cells_of_one_ood_mean_share_a_rank_whatever_their_names():
    from posgen.train.results import ranked

    means = {"rope": 0.5, "base500": 0.5, "alibi": 0.25, "zeta": 0.75, "none": None}
    pes = {pe: {"ood_mean": mean} for pe, mean in means.items()}
    ranks = [(rank, pe) for rank, pe, _ in ranked(pes)]
    assert ranks == [(1, "zeta"), (2, "base500"), (2, "rope"), (4, "alibi"), (5, "none")]


@pytest.mark.parametrize("fmt", ["markdown", "csv", "json"])
def test_out_or_json_dash_prints_what_the_file_would_hold(
    assert_clean_error, cli, trained_runs, tmp_path, fmt
):
    written = cli("results", trained_runs, "--format", fmt, "--out", tmp_path / "r", "--json",
                  tmp_path / "s.json")  # fmt: skip
    printed = cli("results", trained_runs, "--format", fmt, "--out", "-")
    assert (written.exit_code, printed.exit_code) == (0, 0), printed.output
    assert printed.stdout == (tmp_path / "r").read_text()
    assert printed.stderr == "-: 4 runs, 1 task\n" and not (tmp_path / "-").exists()
    summary = cli("results", trained_runs, "--format", fmt, "--out", tmp_path / "r2", "--json", "-")
    assert summary.stdout == (tmp_path / "s.json").read_text()
    both = cli("results", trained_runs, "--out", "-", "--json", "-")
    assert_clean_error(both, 2, "--out - and --json -: one of them may print, not both")
    folder = cli("results", trained_runs, "--format", "eee", "--out", "-")
    assert_clean_error(folder, 2, "--out -: --format eee writes a folder; give its path")


def test_each_config_of_a_folder_keeps_its_own_lengths_in_tables_and_exports(cli, tmp_path):
    from posgen import write_dataset
    from posgen.spec import BenchmarkSpec, TaskSpec
    from posgen.train.config import preset
    from posgen.train.job import train_runs

    sizes = {"train_size": 64, "val_size": 8, "test_size": 8}
    configs = {"cot": TaskSpec(task="cot", train_length=32, test_length=128, **sizes),
               "recursive": TaskSpec(task="recursive", **sizes)}  # fmt: skip
    write_dataset(BenchmarkSpec(name="mixed", configs=configs), tmp_path / "ds")
    config = preset("cpu", layers=1, hidden=16, heads=2, intermediate=32, epochs=1, max_steps=1)
    for task in configs:  # cot at L = 32, L' = 128 beside recursive at 64 and 256
        train_runs(tmp_path / "ds", task, ["rope"], config, 1, [tmp_path / "runs" / task], "cpu")
    args = ["results", tmp_path / "runs", "--out"]
    assert cli(*args, tmp_path / "R.md").exit_code == 0
    text = (tmp_path / "R.md").read_text()
    assert "### ds / cot (L = 32, L' = 128)" in text
    assert "### ds / recursive (L = 64, L' = 256)" in text
    assert "Test split, cot: L = 32, L' = 128; recursive: L = 64, L' = 256;" in text
    assert cli(*args, tmp_path / "eee", "--format", "eee").exit_code == 0
    record = json.loads((tmp_path / "eee" / "ds" / "cot" / "rope.json").read_text())
    regions = {
        (int(d["bucket_start"]), d["region"])
        for d in (e["metric_config"]["additional_details"] for e in record["evaluation_results"])
    }
    assert (4, "ID") in regions and (32, "OOD") in regions and (64, "OOD") in regions


def test_results_call_cells_complete_or_name_those_missing_a_seed_others_have(
    cli, trained_runs, reported, tmp_path
):
    assert "Incomplete" not in reported["md"]
    partial = tmp_path / "runs"
    shutil.copytree(trained_runs, partial)
    shutil.rmtree(partial / "yarn-2")
    line = "the runs use 2 seeds (1, 2); fewer finished for 1 cell: ds/cot/yarn (1)."
    for command, advice in (
        ([], "then run `posgen results` again"),
        (["--command", "make results"], "Rerun `make results` to train the missing runs"),
    ):
        out = tmp_path / "R.md"
        result = cli("results", partial, "--out", out, *command)
        assert result.exit_code == 0, result.output
        assert line in out.read_text() and advice in out.read_text()


# --- lax input ---------------------------------------------------------------------------------

LENGTHS = Lengths(train=64, test=256, head_dim=8, heads=2)
WALL = {  # --wall-seconds -> what the line says
    **dict.fromkeys(["nan", "NaN", "-nan", "inf", "Infinity", "1e400"], "not a finite number"),
    **dict.fromkeys(["1e308", "-1"], "not in the range 0<=x<=1000000000"),
}


@pytest.mark.parametrize("value", WALL)
def test_wall_seconds_must_be_a_real_run_time(assert_clean_error, cli, recorded, tmp_path, value):
    out = tmp_path / "R.md"
    result = cli("results", tmp_path, "--out", out, "--wall-seconds", value)
    with recorded("bad_input", f"class 11: --wall-seconds {value}"):
        assert_clean_error(result, 2, "--wall-seconds", WALL[value])
        assert not out.exists()


# case -> (encoding, parameters given at their defaults)
DEFAULTS = {
    "rope_theta=10000": ("rope", {"rope_theta": 10000}),
    "rope_theta=10000.0": ("rope", {"rope_theta": 10000.0}),
    "resonance rope_theta=10000": ("resonance", {"rope_theta": 10000}),
    "yarn scale_at=evaluation": ("yarn", {"scale_at": "evaluation"}),
    "yarn beta_fast=2, beta_slow=1": ("yarn", {"beta_fast": 2, "beta_slow": 1.0}),
    "linear scale_at=evaluation": ("linear", {"scale_at": "evaluation"}),
    "dynamic factor=1": ("dynamic", {"factor": 1}),
    "proportional partial_rotary_factor=0.5": ("proportional", {"partial_rotary_factor": 0.5}),
    "nope partial_rotary_factor=0": ("nope", {"partial_rotary_factor": 0}),
}


@pytest.mark.parametrize("case", sorted(DEFAULTS))
def test_a_default_spelled_out_is_the_default(recorded, case):
    name, parameters = DEFAULTS[case]
    plain = resolve(PERequest(name=name), LENGTHS)
    spelled = resolve(PERequest(name=name, parameters=parameters), LENGTHS)
    with recorded("bad_input", f"class 11: --pe {name} --pe-param {case}"):
        assert spelled.label == plain.label == name
        assert spelled.parameters == plain.parameters
        assert spelled.training_key() == plain.training_key()
        assert spelled.record() == plain.record()


def test_rope_theta_10000_lands_in_the_cell_of_rope_and_500_keeps_its_label(
    recorded, train_tiny, cli, tmp_path
):
    spelled = resolve(PERequest(name="rope", parameters={"rope_theta": 500}), LENGTHS)
    assert spelled.label == "rope(rope_theta=500)"
    for seed, extra in ((1, []), (2, ["--pe-param", "rope_theta=10000"])):
        result = train_tiny("rope", tmp_path / "runs" / f"seed{seed}", "--seed", seed, *extra)
        assert result.exit_code == 0, result.output
    js = tmp_path / "r.json"
    result = cli("results", tmp_path / "runs", "--out", tmp_path / "R.md", "--json", js)
    with recorded("bad_input", "class 11: --pe-param rope_theta=10000 in the results"):
        assert result.exit_code == 0, result.output
        cells = json.loads(js.read_text())["ds"]["tasks"]["cot"]
        assert list(cells) == ["rope"]
        assert cells["rope"]["n"] == 2
        record = json.loads((tmp_path / "runs" / "seed2" / "results.json").read_text())
        assert record["position_encoding"]["label"] == "rope"


def test_positions_no_probe_row_probes_are_null_in_the_json_and_every_export_is_written(
    cli, tmp_path
):
    from posgen import write_dataset
    from posgen.spec import BenchmarkSpec, TaskSpec
    from posgen.train.config import preset
    from posgen.train.job import train_runs

    recursive = TaskSpec(task="recursive", train_size=16, val_size=4, test_size=4)
    write_dataset(BenchmarkSpec(name="few", configs={"recursive": recursive}), tmp_path / "ds")
    config = preset("cpu", layers=1, hidden=16, heads=2, intermediate=32, epochs=1, max_steps=1)
    run = tmp_path / "runs" / "rope"
    train_runs(tmp_path / "ds", "recursive", ["rope"], config, 1, [run], "cpu")
    counted = read_run(run).probe_scores.curve.counted
    assert 0 in counted  # 4 probe rows leave some positions unprobed
    for kind in ("json", "eee", "hf"):
        result = cli("results", run, "--format", kind, "--out", tmp_path / kind)
        assert result.exit_code == 0, result.output
    cell = json.loads((tmp_path / "json").read_text())["results"]["ds"]["tasks"]["recursive"]
    shares = cell["rope"]["far_curve"]["far_reliance"]
    assert [share is None for share in shares] == [count == 0 for count in counted]


def test_find_runs_reads_one_path_as_one_folder(trained_runs):
    found = find_runs(str(trained_runs))  # was read as "/", "t", "m", ...: "/" walked first
    assert found == find_runs([trained_runs]) and found[0]
    with pytest.raises(ResultsError, match="a run folder is a path, not NoneType"):
        find_runs([None])


@pytest.mark.parametrize(
    ("folder", "said"),
    [("run", "missing (not a finished run folder)"), ("file", "unreadable (Not a directory)")],
)
def test_read_run_of_no_run_folder_is_damage_naming_the_record(tmp_path, folder, said):
    (tmp_path / "file").write_text("")
    (tmp_path / "run").mkdir()
    with pytest.raises(
        DamagedRun, match=re.escape(f"{tmp_path / folder / 'results.json'}: {said}")
    ):
        read_run(tmp_path / folder)


@pytest.mark.parametrize("folder", [None, 3, b"run"])  # TypeError from pathlib
def test_read_run_of_no_path_is_one_usage_error(folder):
    with pytest.raises(
        UsageError, match=f"read_run takes a run folder .a path., not {type(folder).__name__}"
    ):
        read_run(folder)


# --- hand-edited records ---------------------------------------------------------------------


def _edit(path: str, value: object = KeyError) -> object:
    """An edit of a record's JSON: the field at dotted ``path`` set to ``value`` (dropped when
    none is given)."""

    def edit(body: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            body = body[int(key)] if isinstance(body, list) else body[key]
        if value is KeyError:
            del body[last]
        else:
            body[int(last) if isinstance(body, list) else last] = value

    return edit


RANDOMIZED = "position_encoding.randomized_positions"
HAND_EDITED = {  # a record of rope-1 edited by hand -> what its one line names
    "no schema_version": (_edit("schema_version"), "schema_version: Field required"),
    "randomized positions 0": (_edit(RANDOMIZED, 0), RANDOMIZED),
    "randomized positions L'": (_edit(RANDOMIZED, 256), f"{RANDOMIZED}: 256, but the range"),
    "randomized positions 10^30": (_edit(RANDOMIZED, 10**30), RANDOMIZED),
    "randomized positions 2^63": (_edit(RANDOMIZED, 2**63), RANDOMIZED),
    "attention layer 0 twice": (_edit("attention.layers.1.layer", 0), "attention.layers"),
    "attention layers swapped": (
        lambda body: body["attention"]["layers"].reverse(),
        "attention.layers",
    ),
    "attention of a third layer": (
        lambda body: body["attention"]["layers"].append(
            dict(body["attention"]["layers"][1], layer=2)
        ),
        "attention: 3 layers",
    ),
    "attention of 9 rows of 8": (_edit("attention.rows", 9), "attention: 2 layers of 9 rows"),
    "attention of 1 layer of 2": (
        lambda body: body["attention"]["layers"].pop(),
        "attention: 1 layer of 8 rows, but the run trained 2 layers",
    ),
    "attention targets of other rows": (
        _edit("attention.layers.0.id.targets", 5),
        "attention.layers.0.id.targets: 5",
    ),
    "probe far + local hits past those counted": (
        _edit("probe_scores.curve.local.0", 8),
        "probe_scores.curve[4]: far 1 + local 8 exceed the 8 counted",
    ),
    "a curve column one short": (
        lambda body: body["scores"]["curve"]["correct"].pop(),
        "scores.curve: correct, tokens, accuracy must each have one",
    ),
    "a curve position of 7 predictions": (
        _edit("scores.curve.tokens.0", 7),
        "scores.curve.tokens: every position has 8 predictions",
    ),
    "a curve position of 9 correct of 8": (
        _edit("scores.curve.correct.0", 9),
        "scores.curve[4]: counts must satisfy 0 <= correct",
    ),
    "attention without its OOD region": (
        _edit("attention.layers.1.ood", None),
        "attention.layers.1.ood.targets: None",
    ),
}


@pytest.mark.parametrize("case", sorted(HAND_EDITED))
def test_a_hand_edited_record_whose_fields_disagree_is_damage_naming_the_file_and_field(
    assert_clean_error, cli, trained_runs, tmp_path, case
):
    edit, field = HAND_EDITED[case]
    run = shutil.copytree(trained_runs / "rope-1", tmp_path / "runs" / "edited")
    body = json.loads((run / "results.json").read_text())
    edit(body)
    (run / "results.json").write_text(json.dumps(body))
    out = tmp_path / "R.md"
    line = assert_clean_error(cli("results", tmp_path / "runs", "--out", out), 1, field)
    assert line.startswith(f"error: {run / 'results.json'}: ")
    assert not out.exists()


def test_the_records_posgen_train_writes_are_read_and_written_again_byte_for_byte(trained_runs):
    for run in sorted(trained_runs.iterdir()):
        assert read_run(run).to_json() == (run / "results.json").read_text()
