"""`posgen score` and `posgen baseline`: tables, JSON, plots, and bad files that exit 2."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posgen import write_dataset
from posgen.scoring import baseline_scores, load_reference, write_predictions
from posgen.spec import default_benchmark
from posgen.store.manifest import read_manifest
from tests.cli_support import assert_clean_error
from tests.cli_support import invoke as run

ROWS = 40


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("score") / "ds"
    bench = default_benchmark(("cot", "recursive"), train_size=3000, val_size=20, test_size=ROWS)
    write_dataset(bench, out)
    return out


@pytest.fixture(scope="module")
def test_tokens(data):
    return load_reference(data, "cot", "test").tokens


@pytest.mark.parametrize("suffix", [".parquet", ".arrow", ".jsonl", ".npy"])
def test_oracle_baseline_file_scores_exactly_one(data, tmp_path, suffix):
    preds = tmp_path / f"oracle{suffix}"
    made = run("baseline", "--kind", "oracle", "--data", data, "--config", "cot", "--out", preds)
    assert made.exit_code == 0, made.output
    assert "ID 100.00%, OOD 100.00%" in made.output
    result = run("score", "--data", data, "--config", "cot", "--predictions", preds)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    spec_id = read_manifest(data).configs["cot"].spec_id
    assert lines[0].startswith(f"config cot, split test, spec {spec_id}: {ROWS} rows of 256")
    assert lines[1].split()[-3:] == ["100.00%", "2,400", "tokens"]  # ID [4, 64)
    assert lines[2].split()[-3:] == ["100.00%", "7,680", "tokens"]  # OOD [64, 256)
    assert len([line for line in lines if line.strip().startswith("[")]) == 16


def test_near_only_and_majority_baselines_score_near_chance(data, tmp_path):
    for kind in ("near-only", "majority"):
        preds = tmp_path / f"{kind}.parquet"
        made = run("baseline", "--kind", kind, "--data", data, "--config", "recursive",
                   "--out", preds, "-q")  # fmt: skip
        assert made.exit_code == 0
        assert made.output == ""
        out = tmp_path / f"{kind}.json"
        run("score", "--data", data, "--config", "recursive", "--predictions", preds,
            "--json", out)  # fmt: skip
        report = json.loads(out.read_text())
        assert report["ood"]["tokens"] == ROWS * 192
        assert 0.02 < report["ood"]["accuracy"] < 0.12  # 1/17 = 0.059


def test_baseline_scores_gives_id_and_ood_accuracy_per_kind(data):
    scores = baseline_scores(data, "cot")
    assert list(scores) == ["oracle", "near-only", "majority"]
    assert scores["oracle"] == {"id_accuracy": 1.0, "ood_accuracy": 1.0}
    assert all(0 < s["ood_accuracy"] < 0.15 for k, s in scores.items() if k != "oracle")


def test_json_to_stdout_is_the_full_sorted_report(data, tmp_path, test_tokens):
    preds = tmp_path / "p.npy"
    np.save(preds, test_tokens)
    result = run("score", "--data", data, "--config", "cot", "--predictions", preds,
                 "--json", "-", "--bucket-width", "64")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert list(report) == sorted(report)
    assert report["bucket_width"] == 64
    assert [b["start"] for b in report["buckets"]] == [4, 64, 128, 192]
    assert report["spec_id"] == read_manifest(data).configs["cot"].spec_id


def test_known_errors_show_in_the_table_and_the_first_error_distribution(
    data, tmp_path, test_tokens
):
    preds = test_tokens.copy()
    preds[0, 100] = (preds[0, 100] + 1) % 17
    preds[1, 10] = (preds[1, 10] + 1) % 17
    np.save(tmp_path / "p.npy", preds)
    result = run("score", "--data", data, "--config", "cot", "--predictions",
                 tmp_path / "p.npy", "--json", tmp_path / "r.json")  # fmt: skip
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["id"]["correct"] == report["id"]["tokens"] - 1
    assert report["ood"]["correct"] == report["ood"]["tokens"] - 1
    assert report["first_error"] == {"median": 55.0, "never": ROWS - 2, "position": [10, 100],
                                     "rows": [1, 1]}  # fmt: skip
    assert report["ood_exact_match"] == {"accuracy": (ROWS - 1) / ROWS, "correct": ROWS - 1,
                                         "tokens": ROWS}  # fmt: skip
    assert "[96, 112)" in result.output


def test_plot_draws_a_png(data, tmp_path, test_tokens):
    pytest.importorskip("matplotlib")
    np.save(tmp_path / "p.npy", test_tokens)
    result = run("score", "--data", data, "--config", "cot", "--predictions",
                 tmp_path / "p.npy", "--plot", tmp_path / "curve.png")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_exits_2_with_the_install_hint(data, tmp_path, monkeypatch):
    monkeypatch.setattr("posgen.cli.score.plot_available", lambda: False)
    result = run("score", "--data", data, "--config", "cot", "--predictions",
                 tmp_path / "p.npy", "--plot", tmp_path / "curve.png")  # fmt: skip
    assert result.exit_code == 2
    assert result.output == "error: --plot: plotting needs matplotlib: pip install 'posgen[plot]'\n"


def parquet_with(path, ids, rows, name="predictions"):
    column = pa.array([list(map(int, row)) for row in rows], type=pa.list_(pa.int64()))
    pq.write_table(pa.table({"id": pa.array(ids, type=pa.int64()), name: column}), path)


BAD_FILES = {
    # case: (ids and rows from the true test tokens, the message expected)
    "wrong length": (
        lambda t: (list(range(ROWS)), t[:, :100]),
        "have shape (40, 100); expected (40, 256) (whole rows) or (40, 252)",
    ),
    "unknown ids": (
        lambda t: (list(range(1, ROWS + 1)), t),
        "1 prediction ids are not in the data (e.g. 40); the data has 40 rows, ids 0..39",
    ),
    "out-of-range tokens": (
        lambda t: (list(range(ROWS)), t + 17),
        "outside the vocabulary 0..16 (m = 17)",
    ),
    "missing rows": (
        lambda t: (list(range(ROWS - 2)), t[:-2]),
        "predictions miss 2 of 40 rows (e.g. ids 38, 39)",
    ),
    "repeated ids": (
        lambda t: ([0, *range(ROWS - 1)], t),
        "1 ids appear more than once in the predictions (e.g. 0)",
    ),
    "ragged rows": (
        lambda t: (list(range(ROWS)), [*t[:-1].tolist(), t[-1, :-3].tolist()]),
        "row id 39 has 253 predictions, row id 0 has 256",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_prediction_files_exit_2_with_one_line(data, tmp_path, test_tokens, case):
    build, expected = BAD_FILES[case]
    ids, rows = build(test_tokens.astype(np.int64))
    path = tmp_path / "bad.parquet"
    parquet_with(path, ids, rows)
    result = run("score", "--data", data, "--config", "cot", "--predictions", path)
    assert assert_clean_error(result, 2, expected).startswith(f"error: {path}: ")
    assert result.output.count("\n") == 1, result.output


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "p.jsonl",
            '{"id": 0, "predictions": [1, 2]}\n{"id": 1',
            "p.jsonl: line 2: not valid JSON",
        ),
        (
            "p.jsonl",
            '{"id": 0, "predictions": [1.5]}\n',
            "p.jsonl: line 1: predictions must be integers",
        ),
        ("p.jsonl", '{"predictions": [1]}\n', "p.jsonl: line 1: expected an object with 'id'"),
        ("p.csv", "0,1,2\n", "unknown predictions format '.csv'"),
        ("p.parquet", "not parquet", "p.parquet: not a readable parquet file"),
        ("p.npy", "not npy", "p.npy: not a readable npy file"),
    ],
)
def test_unreadable_prediction_files_exit_2(data, tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content)
    result = run("score", "--data", data, "--config", "cot", "--predictions", path)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1
    assert expected in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config", "nope"], "error: no config 'nope' in"),
        (
            ["--split", "dev"],
            "error: no split 'dev' in config 'cot'; splits: train, validation, test",
        ),
        ([], "configs cot, recursive: pick one with --config"),
    ],
)
def test_unknown_config_or_split_exits_2(data, tmp_path, test_tokens, args, expected):
    path = tmp_path / "p.npy"
    np.save(path, test_tokens)
    config = [] if "--config" in args or not args else ["--config", "cot"]
    result = run("score", "--data", data, *config, *args, "--predictions", path)
    assert result.exit_code == 2
    assert expected in result.output


def test_a_folder_without_a_manifest_exits_2(tmp_path):
    result = run("score", "--data", tmp_path, "--predictions", tmp_path / "p.npy")
    assert result.exit_code == 2
    assert "has no posgen.json: not a posgen dataset" in result.output


def test_baseline_refuses_to_overwrite_and_unknown_formats(data, tmp_path, test_tokens):
    path = tmp_path / "p.parquet"
    write_predictions(path, np.arange(ROWS), test_tokens, modulus=17)
    again = run("baseline", "--kind", "oracle", "--data", data, "--config", "cot", "--out", path)
    assert again.exit_code == 2
    assert "exists; pass --overwrite" in again.output
    csv = run("baseline", "--kind", "oracle", "--data", data, "--config", "cot", "--out",
              tmp_path / "p.csv")  # fmt: skip
    assert csv.exit_code == 2
    assert "unknown predictions format '.csv'" in csv.output


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_predictions_made_for_other_data_are_refused_not_scored_at_chance(data, tmp_path, suffix):
    other = tmp_path / "other"
    write_dataset(
        default_benchmark(("cot",), seed=1, train_size=3000, val_size=20, test_size=ROWS), other
    )
    preds = tmp_path / f"oracle{suffix}"
    made = run("baseline", "--kind", "oracle", "--data", other, "--config", "cot", "--out", preds)
    assert made.exit_code == 0, made.output
    result = run("score", "--data", data, "--config", "cot", "--predictions", preds)
    theirs = read_manifest(other).configs["cot"].spec_id
    line = assert_clean_error(result, 2, f"made for split test of spec {theirs}")
    assert read_manifest(data).configs["cot"].spec_id in line


def test_test_predictions_are_refused_on_the_probe_split(data, tmp_path):
    preds = tmp_path / "oracle.parquet"
    made = run("baseline", "--kind", "oracle", "--data", data, "--config", "cot", "--out", preds)
    assert made.exit_code == 0, made.output
    args = ("--data", data, "--config", "cot", "--split", "probe", "--predictions", preds)
    assert_clean_error(run("score", *args), 2, "made for split test", "not split probe")
