"""`posgen score` and `posgen baseline`: tables, JSON, plots, and bad input that exits 2."""

from __future__ import annotations

import builtins
import json
from importlib.util import find_spec

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posgen import write_dataset
from posgen.scoring import baseline_scores, load_reference
from posgen.scoring.plot import PLOT_HINT, PlotUnavailable
from posgen.spec import default_benchmark
from posgen.store.manifest import read_manifest

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


def score(cli, data, predictions, *args):
    return cli("score", "--data", data, "--config", "cot", "--predictions", predictions, *args)


@pytest.mark.parametrize("suffix", [".parquet", ".arrow", ".jsonl", ".npy"])
def test_oracle_baseline_file_scores_exactly_one(cli, data, tmp_path, suffix):
    preds = tmp_path / f"oracle{suffix}"
    made = cli("baseline", "--kind", "oracle", "--data", data, "--config", "cot", "--out", preds)
    assert made.exit_code == 0, made.output
    assert "ID 100.00%, OOD 100.00%" in made.output
    result = score(cli, data, preds)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    spec_id = read_manifest(data).configs["cot"].spec_id
    assert lines[0].startswith(f"config cot, split test, spec {spec_id}: {ROWS} rows of 256")
    assert lines[1].split()[-3:] == ["100.00%", "2,400", "tokens"]  # ID [4, 64)
    assert lines[2].split()[-3:] == ["100.00%", "7,680", "tokens"]  # OOD [64, 256)
    assert len([line for line in lines if line.strip().startswith("[")]) == 16


def test_a_split_of_no_ood_position_shows_no_ood_row(cli, data, tmp_path):
    preds, split = tmp_path / "oracle.npy", ["--config", "cot", "--split", "train"]
    made = cli("baseline", "--kind", "oracle", "--data", data, *split, "--out", preds)
    assert made.exit_code == 0, made.output
    result = cli("score", "--data", data, "--predictions", preds, *split)
    assert result.exit_code == 0 and "100.00%" in result.output, result.output
    assert "OOD exact match" not in result.output, result.output


def test_a_split_of_one_row_is_said_to_hold_1_row(cli, tmp_path):
    write_dataset(
        default_benchmark(("cot",), train_size=1, val_size=1, test_size=1), tmp_path / "d"
    )
    made = cli(
        "baseline", "--kind", "oracle", "--data", tmp_path / "d", "--out", tmp_path / "o.npy"
    )
    assert "cot/test (1 row); ID 100.00%" in made.output, made.output
    result = score(cli, tmp_path / "d", tmp_path / "o.npy")
    assert ": 1 row of 256 tokens (seed window" in result.output, result.output
    (tmp_path / "none.jsonl").write_text("")
    none = score(cli, tmp_path / "d", tmp_path / "none.jsonl")
    assert "predictions miss 1 of 1 row (e.g. id 0)" in none.output, none.output


@pytest.mark.parametrize("kind", ["near-only", "majority"])
def test_near_only_and_majority_baselines_score_near_chance(cli, data, tmp_path, kind):
    preds, out = tmp_path / f"{kind}.parquet", tmp_path / f"{kind}.json"
    made = cli("baseline", "--kind", kind, "--data", data, "--config", "recursive",
               "--out", preds, "-q")  # fmt: skip
    assert (made.exit_code, made.output) == (0, "")
    cli("score", "--data", data, "--config", "recursive", "--predictions", preds, "--json", out)
    report = json.loads(out.read_text())
    assert report["ood"]["tokens"] == ROWS * 192
    assert 0.02 < report["ood"]["accuracy"] < 0.12  # 1/17 = 0.059


def test_baseline_scores_gives_id_and_ood_accuracy_per_kind(data):
    scores = baseline_scores(data, "cot")
    assert list(scores) == ["oracle", "near-only", "majority"]
    assert scores["oracle"] == {"id_accuracy": 1.0, "ood_accuracy": 1.0}
    assert all(0 < s["ood_accuracy"] < 0.15 for k, s in scores.items() if k != "oracle")


def test_known_errors_show_in_the_table_the_json_and_the_png_plot(
    cli, data, tmp_path, test_tokens, monkeypatch
):
    preds = test_tokens.copy()
    preds[0, 100] = (preds[0, 100] + 1) % 17
    preds[1, 10] = (preds[1, 10] + 1) % 17
    np.save(tmp_path / "p.npy", preds)
    plot = ["--plot", tmp_path / "curve.png"] if find_spec("matplotlib") else []
    result = score(cli, data, tmp_path / "p.npy", "--json", tmp_path / "r.json", *plot)
    assert result.exit_code == 0, result.output
    assert "[96, 112)" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["id"]["correct"] == report["id"]["tokens"] - 1
    assert report["ood"]["correct"] == report["ood"]["tokens"] - 1
    assert report["first_error"] == {"median": 55.0, "never": ROWS - 2, "position": [10, 100],
                                     "rows": [1, 1]}  # fmt: skip
    assert report["ood_exact_match"] == {"accuracy": (ROWS - 1) / ROWS, "correct": ROWS - 1,
                                         "tokens": ROWS}  # fmt: skip
    if plot:
        assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stdout = score(cli, data, tmp_path / "p.npy", "--json", "-", "--bucket-width", "64")
    assert stdout.exit_code == 0, stdout.output
    body = json.loads(stdout.output)  # the full report, sorted
    assert list(body) == sorted(body)
    assert (body["bucket_width"], [b["start"] for b in body["buckets"]]) == (64, [4, 64, 128, 192])
    spec_id = read_manifest(data).configs["cot"].spec_id
    assert (body["first_error"], body["spec_id"]) == (report["first_error"], spec_id)
    monkeypatch.chdir(tmp_path)  # only "-" itself is standard output: ./- is a file
    assert score(cli, data, tmp_path / "p.npy", "--json", "./-").exit_code == 0
    assert json.loads((tmp_path / "-").read_text())["first_error"] == report["first_error"]


def test_plot_without_matplotlib_exits_2_with_the_install_hint(cli, data, tmp_path, monkeypatch):
    def missing():
        raise PlotUnavailable(PLOT_HINT)

    monkeypatch.setattr("posgen.scoring.plot.pyplot", missing)
    result = score(cli, data, tmp_path / "p.npy", "--plot", tmp_path / "curve.png")
    hint = "error: --plot: plotting needs matplotlib: pip install 'posgen[plot]'\n"
    assert (result.exit_code, result.output) == (2, hint)


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [
        (ModuleNotFoundError("No module named 'matplotlib'"), 2, PLOT_HINT),
        (  # installed, but a library fails to map (ulimit -v): no install hint
            ImportError("libXau.so.6: failed to map segment from shared object"),
            1,
            "matplotlib is installed but could not be loaded: libXau.so.6: failed to map segment",
        ),
    ],
    ids=["missing", "cannot-load"],
)
def test_plot_whose_matplotlib_cannot_be_imported_says_why(
    cli, data, tmp_path, monkeypatch, raised, code, line
):
    real = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise raised
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded)
    result = score(cli, data, tmp_path / "p.npy", "--plot", tmp_path / "curve.png")
    assert result.exit_code == code, result.output
    assert result.output.startswith(f"error: --plot: {line}" if code == 2 else f"error: {line}")


BAD_FILES = [
    # (file name, its text or a function of the true tokens giving (ids, rows), the message)
    ("p.parquet", lambda t: (list(range(ROWS)), t[:, :100]),
     "have shape (40, 100); expected (40, 256) (whole rows) or (40, 252)"),
    ("p.parquet", lambda t: (list(range(ROWS)), np.concatenate([t[:, :1], t], axis=1)),
     "have shape (40, 257); expected (40, 256) (whole rows) or (40, 252)"),  # all L' + 1 logits
    ("p.parquet", lambda t: (list(range(1, ROWS + 1)), t),
     "1 prediction id is not in the data (e.g. 40); the data has 40 rows, ids 0..39"),
    ("p.parquet", lambda t: (list(range(ROWS)), t + 17), "outside the vocabulary 0..16 (m = 17)"),
    ("p.parquet", lambda t: (list(range(ROWS - 2)), t[:-2]),
     "predictions miss 2 of 40 rows (e.g. ids 38, 39)"),
    ("p.parquet", lambda t: (list(range(ROWS - 1)), t[:-1]),
     "predictions miss 1 of 40 rows (e.g. id 39)"),
    ("p.parquet", lambda t: ([0, *range(ROWS - 1)], t),
     "1 id appears more than once in the predictions (e.g. 0)"),
    ("p.parquet", lambda t: (list(range(ROWS)), [*t[:-1].tolist(), t[-1, :-3].tolist()]),
     "row id 39 has 253 predictions, row id 0 has 256"),
    ("p.parquet", lambda t: (list(range(ROWS)), [*t[:-1].tolist(), t[-1, :1].tolist()]),
     "row id 39 has 1 prediction, row id 0 has 256"),
    ("p.jsonl", '{"id": 0, "predictions": [1, 2]}\n{"id": 1', "p.jsonl: line 2: not valid JSON"),
    ("p.jsonl", '{"predictions": [1]}\n', "p.jsonl: line 1: expected an object with 'id'"),
    ("p.jsonl", '{"id": 0, "predictions": [1, 2]}\n\n{"id": 1, "predictions": [1]}\n',
     "p.jsonl: line 3: row id 1 has 1 prediction,"),  # a blank line is skipped, and counted
    ("p.csv", "0,1,2\n", "unknown predictions format '.csv'"),
    ("p.parquet", "not parquet", "p.parquet: not a readable parquet file"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "content", "expected"), BAD_FILES)
def test_a_bad_prediction_file_exits_2_with_one_line(
    cli, assert_clean_error, data, tmp_path, test_tokens, name, content, expected
):
    path = tmp_path / name
    if callable(content):
        ids, rows = content(test_tokens.astype(np.int64))
        column = pa.array([list(map(int, row)) for row in rows], type=pa.list_(pa.int64()))
        pq.write_table(pa.table({"id": pa.array(ids, type=pa.int64()), "predictions": column}),
                       path)  # fmt: skip
    else:
        path.write_text(content)
    result = score(cli, data, path)
    line = assert_clean_error(result, 2, expected)
    assert result.output == line + "\n"
    assert not callable(content) or line.startswith(f"error: {path}: ")


BAD_USAGE = [
    # (arguments: {data} the dataset, {p} an existing test prediction file, {tmp} a folder)
    ("score --data {data} --config nope --predictions {p}", "error: no config 'nope' in"),
    ("score --data {data} --config cot --split dev --predictions {p}",
     "error: no split 'dev' in config 'cot'; splits: train, validation, test"),
    ("score --data {data} --config " + "x" * 500 + " --predictions {p}",
     f"error: no config '{'x' * 57}...' in"),
    ("score --data {data} --config cot --split " + "x" * 500 + " --predictions {p}",
     f"error: no split '{'x' * 57}...' in config 'cot'"),
    ("score --data {data} --config cot --split probe_" + "9" * 500 + " --predictions {p}",
     f"error: no probe split 'probe_{'9' * 50}... in config 'cot'"),
    ("score --data {data} --predictions {p}", "configs cot, recursive: pick one with --config"),
    ("score --data {tmp} --predictions {p}", "has no posgen.json: not a posgen dataset"),
    ("baseline --kind oracle --data {data} --config cot --out {p}", "exists; pass --overwrite"),
    ("baseline --kind oracle --data {data} --config cot --out {tmp}/new.csv",
     "unknown predictions format '.csv'"),
    ("baseline --kind local --data {data} --config recursive --split test --out {tmp}/new.npy",
     "error: --kind local predicts probe splits only"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected"), BAD_USAGE)
def test_bad_usage_exits_2_with_one_line_and_writes_nothing(
    assert_clean_error, cli, data, tmp_path, test_tokens, args, expected
):
    np.save(tmp_path / "p.npy", test_tokens)
    before = (tmp_path / "p.npy").read_bytes()
    places = {"data": data, "p": tmp_path / "p.npy", "tmp": tmp_path}
    result = cli(*[word.format(**places) for word in args.split()])
    line = assert_clean_error(result, 2, expected)
    assert result.output == line + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["p.npy"]
    assert (tmp_path / "p.npy").read_bytes() == before


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_predictions_made_for_other_data_are_refused_not_scored_at_chance(
    assert_clean_error, cli, data, tmp_path, suffix
):
    other = tmp_path / "other"
    write_dataset(default_benchmark(("cot",), seed=1, train_size=20, val_size=5, test_size=ROWS),
                  other)  # fmt: skip
    for source, split in ((other, "test"), (data, "probe")):
        preds = tmp_path / f"oracle{suffix}"
        made = cli("baseline", "--kind", "oracle", "--data", source, "--config", "cot",
                   "--out", preds, "--overwrite")  # fmt: skip
        assert made.exit_code == 0, made.output
        theirs = read_manifest(source).configs["cot"].spec_id
        result = score(cli, data, preds, "--split", split)
        line = assert_clean_error(result, 2, f"made for split test of spec {theirs}")
        assert f"not split {split} of spec {read_manifest(data).configs['cot'].spec_id}" in line


@pytest.mark.skipif(find_spec("matplotlib") is None, reason="needs the plot extra")
def test_a_pgf_plot_without_tex_is_refused_before_any_work(cli, data, tmp_path, monkeypatch):
    """matplotlib lists .pgf, but draws it with xelatex: it was 'internal error (RuntimeError)'."""
    monkeypatch.setattr("posgen.scoring.plot.shutil.which", lambda name: None)
    result = score(cli, data, tmp_path / "p.npy", "--plot", tmp_path / "curve.pgf")
    assert result.exit_code == 2 and "'.pgf' needs xelatex, which is not installed; use" in (
        result.output
    )
    assert not (tmp_path / "curve.pgf").exists()


@pytest.mark.skipif(find_spec("matplotlib") is None, reason="needs the plot extra")
@pytest.mark.parametrize("suffix", [".png", ".svg", ".svgz", ".pdf", ".ps", ".eps"])
def test_a_plot_drawn_again_is_the_same_bytes_whatever_the_date(
    cli, data, tmp_path, monkeypatch, suffix
):
    predictions = tmp_path / "p.parquet"
    made = cli(
        "baseline", "--kind", "near-only", "--data", data, "--config", "cot", "--out", predictions
    )
    assert made.exit_code == 0, made.output
    drawn = []
    for epoch in (None, "1000000000"):
        if epoch is None:
            monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
        else:
            monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        plot = tmp_path / f"curve-{len(drawn)}{suffix}"
        result = score(cli, data, predictions, "--plot", plot)
        assert result.exit_code == 0, result.output
        drawn.append(plot.read_bytes())
    assert drawn[0] == drawn[1]
