"""Far-reliance: the oracle follows the far rule, the local predictor never does, and a mix of
them (and wrong tokens) is scored exactly, through the API and ``posgen score --split probe``."""

from __future__ import annotations

import json
import re
from importlib.util import find_spec

import numpy as np
import pytest

from posgen.errors import UsageError
from posgen.scoring import (
    RelianceReport,
    ScoringError,
    baseline_predictions,
    load_probe,
    load_reference,
    score_file,
    score_probe,
    score_reference,
    write_predictions,
)
from posgen.store.dataset import SplitError
from posgen.tasks import TASKS


@pytest.fixture
def folder(small_dataset):
    """The three tasks, L = 64, probe splits probe (L' = 96) and probe_128, several files each."""
    return small_dataset


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("split", ["probe", "probe_128"])
def test_the_oracle_scores_far_reliance_one_and_the_local_predictor_zero(folder, task, split):
    probe = load_probe(folder, task, split)
    oracle = score_probe(probe, baseline_predictions("oracle", probe.spec, probe.tokens))
    local = score_probe(probe, baseline_predictions("local", probe.spec, probe.tokens))
    assert oracle.id.counted > 0
    assert oracle.ood.counted > 0
    follows_far = {"id_far_reliance": 1.0, "ood_far_reliance": 1.0, "id_local_reliance": 0.0,
                   "ood_local_reliance": 0.0}  # fmt: skip
    assert oracle.summary() == follows_far
    assert local.summary() == {name: 1.0 - value for name, value in follows_far.items()}


def _mixed(probe, seed: int) -> tuple[np.ndarray, dict]:
    """Predictions following the far rule, the stored token or neither, at random per probed
    target, and the counts [probed, counted, far, local] a plain loop expects per position."""
    rng = np.random.default_rng(seed)
    predictions = probe.tokens.astype(np.int64).copy()
    expected: dict = {}
    probed = (probe.probed_rows.tolist(), probe.probed.tolist(), probe.far_rule.tolist())
    for row, t, far in zip(*probed, strict=True):
        local, choice = int(probe.tokens[row, t]), rng.integers(3)
        if choice == 0:
            predictions[row, t] = far
        elif choice == 2:
            predictions[row, t] = min({0, 1, 2} - {far, local})  # neither
        said, counts = int(predictions[row, t]), expected.setdefault(t, [0, 0, 0, 0])
        counts[0] += 1
        if far != local:
            counts[1:] = [counts[1] + 1, counts[2] + (said == far), counts[3] + (said == local)]
    return predictions, expected


@pytest.mark.parametrize("task", TASKS)
def test_a_mixed_prediction_file_is_scored_exactly(cli, folder, tmp_path, task):
    probe = load_probe(folder, task, "probe")
    predictions, expected = _mixed(probe, seed=len(task))
    path = tmp_path / "p.parquet"
    order = np.random.default_rng(1).permutation(probe.tokens.shape[0])  # any row order
    write_predictions(path, probe.ids[order], predictions[order], probe.spec.modulus)
    args = ["score", "--data", folder, "--config", task, "--split", "probe"]
    result = cli(*args, "--predictions", path, "--json", "-")
    assert result.exit_code == 0, result.output
    report = RelianceReport.model_validate_json(result.stdout)
    for name in ("id", "ood"):
        ts = [t for t in expected if (t < probe.spec.train_length) == (name == "id")]
        probed, counted, far, local = (sum(expected[t][i] for t in ts) for i in range(4))
        got = getattr(report, name)
        assert (got.probed, got.counted, got.far, got.local) == (probed, counted, far, local)
        assert got.far_reliance == far / counted
    curve = report.curve
    for i, t in enumerate(curve.position):
        _, counted, far, local = expected.get(t, [0, 0, 0, 0])
        assert (curve.counted[i], curve.far[i], curve.local[i]) == (counted, far, local)


def test_score_and_baseline_cli_on_a_probe_split(assert_clean_error, cli, folder, tmp_path):
    probe = load_probe(folder, "cot", "probe")
    path = tmp_path / "oracle.npy"
    predictions = baseline_predictions("oracle", probe.spec, probe.tokens)
    write_predictions(path, probe.ids, predictions, probe.spec.modulus)
    js, plot = tmp_path / "r.json", tmp_path / "r.png"
    plotting = ["--plot", plot] if find_spec("matplotlib") else []
    args = ["score", "--data", folder, "--config", "cot", "--split", "probe"]
    result = cli(*args, "--predictions", path, "--json", js, *plotting)
    assert result.exit_code == 0, result.output
    assert "far-rel." in result.stdout
    assert "100.00%" in result.stdout
    assert json.loads(js.read_text())["ood"]["far_reliance"] == 1.0
    assert not plotting or plot.stat().st_size > 0
    write_predictions(path, probe.ids[:3], probe.tokens[:3], probe.spec.modulus)  # wrong rows
    wrong = cli(*args, "--predictions", path)
    assert wrong.output.strip() == assert_clean_error(wrong, 2)  # nothing but the error line
    local = ["baseline", "--kind", "local", "--data", folder, "--config", "recursive"]
    result = cli(*local, "--split", "probe", "--out", tmp_path / "local.parquet")
    assert result.exit_code == 0, result.output
    assert "ID far-reliance 0.00%" in result.output


def test_score_file_scores_a_probe_split_by_its_far_reliance_as_the_cli_does(folder, tmp_path):
    probe = load_probe(folder, "cot", "probe")
    path = tmp_path / "local.npy"
    local = baseline_predictions("local", probe.spec, probe.tokens)
    write_predictions(path, probe.ids, local, probe.spec.modulus)
    report = score_file(folder, "cot", "probe", path)
    assert report == score_probe(probe, local)
    assert (report.id.far_reliance, report.id.local_reliance) == (0.0, 1.0)
    with pytest.raises(ScoringError, match="probe is a probe split, scored by its far-reliance"):
        score_reference(load_reference(folder, "cot", "probe"), path)


FILE_ARGUMENTS = {  # score_file(folder, config, split, predictions) changed -> the error line
    "split an int": ({"split": 3}, "split must be a name (str), not int"),  # was AttributeError
    "predictions None": ({"predictions": None}, "predictions: a file's path, not NoneType"),
    "predictions an int": ({"predictions": 3}, "predictions: a file's path, not int"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FILE_ARGUMENTS))
def test_score_file_given_an_argument_it_cannot_use_raises_one_clear_error(folder, case):
    changed, said = FILE_ARGUMENTS[case]  # pathlib's TypeError, is_probe_split's AttributeError
    arguments = {"dataset_dir": folder, "config": "cot", "split": "test", "predictions": "p.npy"}
    with pytest.raises(UsageError, match=re.escape(said)):
        score_file(**{**arguments, **changed})
    with pytest.raises(ScoringError, match="reference: a ReferenceSplit or ProbeSplit"):
        score_reference(None, "p.npy")  # was AttributeError: 'NoneType' has no 'spec'


def test_a_probe_table_in_shuffled_row_order_is_scored_with_predictions_in_that_order():
    """Two probe rows given id 1 first: predictions in the table's order (as score() reads a
    table) follow the far rule at both probed targets (far-reliance 1, not 0)."""
    import pyarrow as pa

    from posgen.spec import TaskSpec

    spec = TaskSpec(task="cot", train_length=6, test_length=7, train_size=8, val_size=4,
                    test_size=4)  # fmt: skip
    table = pa.table({
        "id": [1, 0], "tokens": [[1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]],
        "source_id": [1, 0], "replaced": [[0], [0]], "probed": [[4], [5]],
        "far_rule": [[1], [0]],
    })  # fmt: skip
    # id 1: target 4 far rule 1, stored 0; id 0: target 5 far rule 0 = stored (not counted)
    follows = np.array([[1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]])
    follows[0, 4] = 1  # row id 1 predicts the far-rule answer 1 at target 4
    report = score_probe(table, follows, spec)
    assert (report.id.counted, report.id.far) == (1, 1)
    assert report == score_probe(table, follows[::-1], spec, ids=np.array([0, 1]))
    with pytest.raises(SplitError, match="not a probe split: no probed, far_rule column"):
        score_probe(table.drop_columns(["probed", "far_rule"]), follows, spec)
