"""Scoring API: known figures on hand-built predictions, baselines, files, model inputs."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from posgen.errors import UsageError
from posgen.generator import generate_split, probe_rows
from posgen.scoring import (
    IGNORE_INDEX,
    LMInputs,
    ReferenceSplit,
    ScoringError,
    baseline_predictions,
    lm_arrays,
    predictions_from_logits,
    probe_from_table,
    reliance_arrays,
    score,
    score_arrays,
    score_probe,
    vocab_size,
    write_predictions,
)
from posgen.scoring.prediction_files import Predictions, read_predictions
from posgen.spec import TaskSpec
from posgen.store.formats import probe_schema, probe_table, to_dataset_dict
from posgen.tasks import TASKS

KW = {"window": 4, "ood_boundary": 8, "modulus": 17}  # positions 4..7 are ID, 8..11 OOD


@pytest.fixture
def hand_built(oracle) -> tuple[np.ndarray, np.ndarray]:
    """Three rows from the plain-loop oracle, with known errors planted in the predictions."""
    starts = ([0, 1, 2, 3], [5, 5, 5, 5], [1, 0, 16, 2])
    reference = np.array([oracle.grow_row("recursive", w, 12, 17, 3, 1) for w in starts])
    predictions = reference.copy()
    for row, t in [(0, 5), (0, 9), (1, 10)]:  # row 0: wrong at 5 (ID), 9 (OOD); row 1: at 10
        predictions[row, t] = (reference[row, t] + 1) % 17
    return reference, predictions  # row 2: all correct


def test_hand_built_errors_give_the_known_figures_in_any_row_order(hand_built):
    reference, predictions = hand_built
    report = score_arrays(reference, predictions, bucket_width=4, **KW)
    assert (report.id.correct, report.id.tokens, report.id.accuracy) == (11, 12, 11 / 12)
    assert (report.ood.correct, report.ood.tokens, report.ood.accuracy) == (10, 12, 10 / 12)
    assert (report.overall.correct, report.overall.tokens) == (21, 24)
    assert report.curve.position == list(range(4, 12))
    assert report.curve.correct == [3, 2, 3, 3, 3, 2, 2, 3]
    assert report.curve.tokens == [3] * 8
    assert report.curve.accuracy[1] == pytest.approx(2 / 3)
    assert [(b.start, b.stop, b.ood, b.correct, b.tokens) for b in report.buckets] == [
        (4, 8, False, 11, 12),
        (8, 12, True, 10, 12),
    ]
    assert (report.ood_exact_match.correct, report.ood_exact_match.tokens) == (1, 3)
    assert (report.exact_match.correct, report.exact_match.tokens) == (1, 3)
    assert (report.first_error.position, report.first_error.rows) == ([5, 10], [1, 1])
    assert (report.first_error.never, report.first_error.median) == (1, 7.5)
    ids = np.array([2, 0, 1])  # rows matched by id
    spec = TaskSpec(task="recursive", train_length=8, test_length=12)
    assert score(reference, predictions[ids], spec, ids=ids).curve == report.curve


def test_buckets_seed_window_and_train_split(hand_built):
    reference, predictions = hand_built
    report = score_arrays(reference, predictions, bucket_width=5, **KW)
    assert [(b.start, b.stop) for b in report.buckets] == [(4, 5), (5, 8), (8, 10), (10, 12)]
    assert sum(b.tokens for b in report.buckets) == report.overall.tokens
    assert score_arrays(reference, predictions[:, 4:], bucket_width=5, **KW) == report
    seed_garbage = reference.copy()
    seed_garbage[:, :4] = 99  # the seed window is never scored, even out of the vocabulary
    assert score_arrays(reference, seed_garbage, **KW).overall.accuracy == 1.0
    train = score_arrays(reference[:, :8], predictions[:, :8], **KW)
    assert (train.ood.tokens, train.ood.accuracy, train.ood_exact_match.tokens) == (0, None, 0)
    assert train.id.tokens == 12


@pytest.mark.parametrize("kind", [np.uint8, np.int16, np.uint64])
def test_numpy_scalar_frames_score_as_python_ints_do(hand_built, kind):
    reference, predictions = hand_built  # np.uint8: 4 * (w // 4 + 1) overflowed
    numpy_kw = {name: kind(value) for name, value in {**KW, "bucket_width": 4}.items()}
    assert score_arrays(reference, predictions, **numpy_kw) == score_arrays(
        reference, predictions, bucket_width=4, **KW
    )
    huge = score_arrays(reference, predictions, **{**KW, "ood_boundary": np.uint64(2**64 - 1)})
    assert huge.ood_boundary == 2**64 - 1 and huge.ood.tokens == 0  # was pydantic's error


SPECS = [{"modulus": 17, "near": 3, "far": 1}, {"modulus": 5, "near": 1, "far": 2},
         {"modulus": 300, "near": 2, "far": 2}]  # fmt: skip


@pytest.mark.parametrize("fields", SPECS)
@pytest.mark.parametrize("seeding", ["disjoint", "paper"])
def test_oracle_scores_exactly_one_on_every_task_and_catches_a_corrupted_token(fields, seeding):
    for task in TASKS:
        spec = TaskSpec(task=task, seeding=seeding, train_length=16, test_length=40,
                        train_size=30, val_size=10, test_size=20, **fields)  # fmt: skip
        test = generate_split(spec, "test")
        report = score(test, baseline_predictions("oracle", spec, test), spec)
        assert (report.id.accuracy, report.ood.accuracy) == (1.0, 1.0)
        assert (report.ood.tokens, report.spec_id) == (20 * 24, spec.spec_id)
    test[2, 20] = (test[2, 20] + 1) % spec.modulus
    report = score(test, baseline_predictions("oracle", spec, test), spec)
    assert report.ood.correct < report.ood.tokens


@pytest.mark.parametrize("modulus", [17, 65536])  # contexts as one code, or renumbered
def test_near_only_takes_memory_of_a_few_columns_whatever_k(modulus):
    """Every near context was built as a (positions, k) int64 matrix, copied three times: at
    m = 65536, k = 1024 and L' = 16,384, 629 MB for a split of 16 KB."""
    import tracemalloc

    spec = TaskSpec(task="cot", modulus=modulus, near=512, far=1, train_length=514,
                    test_length=4096, train_size=2, val_size=1, test_size=1)  # fmt: skip
    train, test = generate_split(spec, "train"), generate_split(spec, "test")
    tracemalloc.start()
    try:
        predictions = baseline_predictions("near-only", spec, test, train)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20  # one context matrix: 3,584 x 512 x 8 B = 14.7 MB
    assert (predictions[:, : spec.window] == test[:, : spec.window]).all()


def test_predictions_from_logits_take_memory_of_the_predictions_not_of_the_logits():
    """The argmax of the view logits[:, :-1] copied it whole (8.4 MB here), and the NaN check
    held a mask of it (2.1 MB)."""
    import tracemalloc

    logits = np.random.default_rng(0).standard_normal((8, 257, 1024), dtype=np.float32)
    tracemalloc.start()
    try:
        predictions = predictions_from_logits(logits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # the predictions: 8 x 257 x 8 B
    assert np.array_equal(predictions, logits[:, :-1].argmax(-1))


@pytest.mark.parametrize("task", TASKS)
def test_near_only_scores_close_to_one_over_m(task):
    spec = TaskSpec(task=task, train_size=3000, val_size=50, test_size=500)
    train, test = generate_split(spec, "train"), generate_split(spec, "test")
    report = score(test, baseline_predictions("near-only", spec, test, train), spec)
    chance = 1 / spec.modulus
    assert 0.5 * chance < report.ood.accuracy < 1.5 * chance
    assert 0.5 * chance < report.overall.accuracy < 1.5 * chance


def test_near_only_recalls_paper_seeded_test_rows_since_they_are_train_rows():
    """paper seeding: test = rows [val_size, val_size + test_size) of the same cycled list as
    train, so on cot with 120 train rows every test context was seen with its target."""
    spec = TaskSpec(task="cot", train_size=120, val_size=30, test_size=25, seeding="paper")
    train, test = generate_split(spec, "train"), generate_split(spec, "test")
    assert (test[:, :64] == train[30:55]).all()
    report = score(test, baseline_predictions("near-only", spec, test, train), spec)
    assert report.id.accuracy == 1.0


FIT = {  # kind -> (task, fit rows, rows to predict, the predictions)
    # the most common follower of each near context: after 3, 5 follows twice; an unseen
    # context (2) gets the most common fit target (3 and 5 tie twice: the smaller, 3)
    "near-only": ("recursive", [[0, 3, 5, 3, 5, 3, 7, 9]], [[1, 2, 3, 8]], [[1, 2, 3, 5]]),
    # the most common token per position of the fit rows; past their reach (4, 5), the most
    # common overall (4 and 8 tie twice: the smaller, 4)
    "majority": ("cot", [[0, 0, 4, 9], [1, 1, 4, 8], [2, 2, 6, 8]], [[0] * 6],
                 [[0, 0, 4, 8, 4, 4]]),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(FIT))
def test_near_only_and_majority_predict_what_their_fit_split_says(kind):
    task, fit, tokens, expected = FIT[kind]
    spec = TaskSpec(task=task, near=1, far=1, train_length=4, test_length=len(tokens[0]),
                    seeding="paper")  # fmt: skip
    out = baseline_predictions(kind, spec, np.array(tokens, np.uint8), np.array(fit))
    assert out.tolist() == expected


COT = TaskSpec(task="cot", train_size=4, val_size=4, test_size=4)
BAD_ARGUMENTS = {  # score(tokens, tokens, COT) with arguments changed (a function: of tokens)
    "no spec": ({"spec": None}, "spec: a posgen TaskSpec (the split's spec), not NoneType"),
    "ragged predictions": ({"predictions": [[1, 2], [3]]}, "predictions: not an array"),
    "predictions read_predictions returned": ({"predictions": lambda t: Predictions(
        np.arange(4), t)}, "predictions: an array of token ids, not Predictions (pass its .tokens"),
    "predictions of 2 rows": ({"predictions": lambda t: t[:2]}, "predictions have shape (2, 256)"),
    "predictions of -1": ({"predictions": np.full((4, 256), -1)},
                          "prediction -1 is outside the vocabulary 0..16 (m = 17)"),
    "predictions of BOS (an argmax over m + 1 logits)": ({"predictions": np.full((4, 256), 17)},
        "prediction 17 is outside the vocabulary 0..16 (m = 17): it is BOS's id; take the argmax "
        "over the m token logits, logits[..., :m]"),
    "float ids (0.5 was read as 0)": ({"ids": [0.5, 1, 2, 3]}, "ids must be integer ids"),
    "ids of strings": ({"ids": ["a", "b", "c", "d"]}, "ids must be integer ids, got dtype <U1"),
    "ids of None": ({"ids": [None] * 4}, "ids must be integer ids, got dtype object"),
    "ids past int64 (were wrapped to -1)": ({"ids": np.array([2**64 - 1, 1, 2, 3], np.uint64)},
                                            "ids: id 18446744073709551615 is outside int64"),
    "reference ids past int64": ({"reference": lambda t: pa.table({"id": pa.array(
        [0, 1, 2, 2**63 + 1], pa.uint64()), "tokens": pa.array(t.tolist())}),
        "ids": np.arange(4)},
        "reference ids: id 9223372036854775809 is outside int64"),
    "negative reference tokens": ({"reference": lambda t: t.astype(np.int64) - 1},
                                  "reference token -1 is outside"),
    "float reference": ({"reference": lambda t: t + 0.5},
                        "reference tokens must be integer token ids"),
    "reference ids of strings": ({"reference": lambda t: pa.table(
        {"id": ["a", "b", "c", "d"], "tokens": pa.array(t.tolist())})},
        "reference ids must be integer ids"),
    "reference tokens of strings": ({"reference": pa.table({"tokens": ["x"] * 4})},
                                    "reference tokens: a column of string"),
    "reference rows of 100": ({"reference": lambda t: t[:, :100], "predictions": lambda t: t},
                              "reference rows have 100 tokens"),
    "reference past the spec's m": ({"spec": TaskSpec(task="cot", modulus=13)},
                                    "outside the spec's vocabulary 0..12"),
    "bucket width a string": ({"bucket_width": "16"}, "bucket width must be an integer, not str"),
    "bucket width None": ({"bucket_width": None}, "bucket width must be an integer"),
    "config an int": ({"config": 3}, "config must be a name (str), not int"),
    "a reference table of no tokens": ({"reference": pa.table({"id": [0, 1]})},
                                       "reference has no 'tokens' column; columns: ['id']"),
    "a reference of one row, 1-D": ({"reference": lambda t: t[0]},
                                    "reference tokens must be (rows, length), got shape (256,)"),
    "2 ids for 4 rows of predictions": ({"ids": [0, 1]}, "2 ids for predictions of shape (4, 256)"),
    "a ReferenceSplit of another spec (the report named the spec given)": (
        {"reference": lambda t: ReferenceSplit("cot", "test", COT, t),
         "spec": COT.model_copy(update={"seed": 1})},
        f"reference is split test of spec {COT.spec_id}, not of the spec given"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_score_given_an_argument_it_cannot_use_raises_one_clear_error(case):
    tokens = generate_split(COT, "test")
    changed, fragment = BAD_ARGUMENTS[case]
    changed = {name: value(tokens) if callable(value) else value for name, value in changed.items()}
    with pytest.raises(UsageError, match=re.escape(fragment)) as caught:
        score(**{"reference": tokens, "predictions": tokens, "spec": COT, **changed})
    assert "\n" not in str(caught.value)


ZEROS, FRAME = (
    (np.zeros((1, 8), int), np.zeros((1, 8), int)),
    {"window": 4, "ood_boundary": 6, "modulus": 17},
)


def test_a_reference_split_a_table_without_ids_and_no_rows_are_read_as_their_tokens(tmp_path):
    tokens = generate_split(COT, "test")
    overall = score(tokens, tokens, COT).overall
    assert score(ReferenceSplit("cot", "test", COT, tokens), tokens, COT).overall == overall
    assert score(pa.table({"tokens": list(tokens)}), tokens, COT).overall == overall
    assert lm_arrays(np.zeros((0, 5), int), 17, 4)["input_ids"].shape == (0, 6)  # no rows
    write_predictions(tmp_path / "p.arrow", np.arange(4), tokens, 17)  # read without fits
    assert np.array_equal(read_predictions(tmp_path / "p.arrow").tokens, tokens)


FLOATS = "tokens must be integer token ids, got dtype float64"
LOGITS = "logits must be (rows, L + 1, vocab)"
API_REFUSALS = {  # a call given what it cannot use -> the error (not numpy's or an AttributeError)
    "lm_arrays of floats (0.5 was cut to 0)": (lambda: lm_arrays(np.array([[0.5, 1.0]]), 17, 1),
                                               FLOATS),
    "lm_arrays of one row": (lambda: lm_arrays(np.arange(3), 17, 1),
                             "tokens must be (rows, length), got shape (3,)"),
    "lm_arrays of BOS (m) as a token": (lambda: lm_arrays(np.array([[0, 17]]), 17, 1),
                                        "token 17 is outside the vocabulary 0..16 (m = 17)"),
    "lm_arrays of uint64 2^64 - 1 (was -1)": (
        lambda: lm_arrays(np.array([[2**64 - 1, 1]], np.uint64), 17, 1),
        "token 18446744073709551615 is outside the vocabulary"),
    "lm_arrays of a negative window (nothing masked)": (
        lambda: lm_arrays(np.ones((1, 4), int), 17, -1), "got m = 17, w = -1"),
    "lm_arrays of a float m (BOS cut to 17)": (lambda: lm_arrays(np.ones((1, 4), int), 17.5, 1),
                                               "modulus must be an integer, not float"),
    "LMInputs of floats": (lambda: LMInputs(17, 1)({"tokens": [0.5, 1.0]}), FLOATS),
    "LMInputs of a ragged batch": (lambda: LMInputs(17, 1)({"tokens": [[0, 1], [2]]}),
                                   "tokens: not an array"),
    "vocab_size of a dict": (lambda: vocab_size({"modulus": 17}),
                             "vocab_size takes a TaskSpec, not a dict"),
    "logits a string": (lambda: predictions_from_logits("x"), LOGITS),
    "logits 1-D": (lambda: predictions_from_logits(np.zeros(3)), LOGITS),
    "logits of no positions": (lambda: predictions_from_logits(np.zeros((2, 0))), LOGITS),
    "logits NaN from row 1, t = 2 on (were token 0)": (lambda: predictions_from_logits(nan_from(2)),
                                                        "logits are NaN at row 1, t = 2"),
    "logits with one NaN among a position's (argmax took it)": (
        lambda: predictions_from_logits(nan_from(3, tokens=slice(2, 3))),
        "logits are NaN at row 1, t = 3"),
    "logits of text (argmax sorted it)": (lambda: predictions_from_logits(np.full((1, 2, 3), "a")),
                                          "logits must be real numbers, got dtype <U1"),
    "logits a tensor that needs gradients (a RuntimeError)": (
        lambda: predictions_from_logits(grad_tensor()),
        "logits: not an array (Can't call numpy() on Tensor that requires grad"),
    "logits of objects (a TypeError)": (
        lambda: predictions_from_logits(np.array([[[None, 1], [2, 3]]], dtype=object)),
        "logits must be real numbers, got dtype object"),
    "score_arrays with m = 0": (lambda: score_arrays(np.zeros((1, 8), int), np.zeros((1, 8), int),
                                                     window=4, ood_boundary=6, modulus=0),
                                "modulus must be at least 2, got 0"),
    "score_arrays of one row, 1-D": (lambda: score_arrays(np.zeros(8, int), np.zeros(8, int),
        window=4, ood_boundary=6, modulus=17), "tokens must be (rows, length), got shape (8,)"),
    "score_arrays with bucket width 0": (lambda: score_arrays(*ZEROS, bucket_width=0, **FRAME),
                                         "bucket width must be at least 1, got 0"),
    "score_arrays with window 0": (lambda: score_arrays(*ZEROS, **{**FRAME, "window": 0}),
                                   "seed window 0 must be in [1, 8)"),
    "score_arrays with the OOD boundary at the window": (
        lambda: score_arrays(*ZEROS, **{**FRAME, "ood_boundary": 4}),
        "OOD boundary 4 must exceed the seed window 4"),
    "baseline_predictions of an unknown kind": (
        lambda: baseline_predictions("bogus", COT, ZEROS[0]),
        "unknown baseline 'bogus'; known: oracle, near-only, majority, local"),
    "baseline_predictions of majority without fit tokens": (
        lambda: baseline_predictions("majority", COT, ZEROS[0]),
        "the majority baseline needs fit tokens (e.g. the train split)"),
    "write_predictions to a .txt": (lambda: write_predictions("/dev/null/p.txt", [0], [[1]], 17),
                                    "/dev/null/p.txt: unknown predictions format '.txt'"),
    "write_predictions of .npy ids out of order": (
        lambda: write_predictions("/dev/null/p.npy", [1, 0], [[1], [2]], 17),
        "/dev/null/p.npy: .npy rows must be ids 0..n-1 in order"),
    "reliance_arrays of 2-D rows": (lambda: probed(rows=lambda r: r[None]),
                                    "probed rows must be one row number a target, got shape (1,"),
    "reliance_arrays of one row fewer than positions": (lambda: probed(rows=lambda r: r[:-1]),
        "probed rows, positions and far-rule answers must be equally long"),
    "score_probe of a table without its spec": (
        lambda: score_probe(pa.table({"tokens": [[0]]}), np.zeros((1, 1), int)),
        "score_probe needs the spec for a table or dataset"),
    "reliance_arrays of rows + 0.5 (were cut)": (lambda: probed(rows=lambda r: r + 0.5),
                                                 "probed rows must be integer row numbers"),
    "reliance_arrays of rows - 4 (wrapped)": (lambda: probed(rows=lambda r: r - 4),
                                              "probed rows must lie in [0, 4)"),
    "reliance_arrays of rows past the split (IndexError)": (lambda: probed(rows=lambda r: r + 4),
                                                            "probed rows must lie in [0, 4)"),
    "reliance_arrays of far-rule answers past m": (lambda: probed(far_rule=lambda f: f + 17),
                                                   "far-rule answers must lie in [0, 17)"),
    "reliance_arrays of rows None": (lambda: probed(rows=lambda r: None),
                                     "probed rows: an array of row numbers, not NoneType"),
    "score_probe of an array": (lambda: score_probe(np.zeros((4, 256), int), None, COT),
                                "score_probe reads a ProbeSplit, a datasets.Dataset or a "
                                "pyarrow.Table with the probe columns, not ndarray"),
    "score_probe of a ProbeSplit and another spec (was ignored)": (
        lambda: score_probe(cot_probe(), cot_probe().tokens, COT.model_copy(update={"seed": 1})),
        f"the probe split is of spec {COT.spec_id}, not of the spec given"),
    "score_probe of ragged predictions": (lambda: score_probe(cot_probe(), [[1, 2], [3]]),
                                          "predictions: not an array"),
    "score_probe of ragged ids": (lambda: score_probe(cot_probe(), cot_probe().tokens,
                                                      ids=[[0], [1, 2]]), "ids: not an array"),
    "score_probe of what read_predictions returns": (
        lambda: score_probe(cot_probe(), Predictions(cot_probe().ids, cot_probe().tokens)),
        "predictions: an array of token ids, not Predictions (pass its .tokens"),
}  # fmt: skip


def grad_tensor():
    """Logits (1, 3, 4) as a torch tensor that needs gradients (skipped without torch)."""
    return pytest.importorskip("torch").ones(1, 3, 4, requires_grad=True)


def test_bfloat16_logits_predict_as_their_float32_values_do():
    """bf16 autocast's logits: numpy has no bfloat16, posgen widens them (exactly)."""
    torch = pytest.importorskip("torch")
    logits = torch.randn(3, 9, 17, generator=torch.Generator().manual_seed(0))
    bf16 = logits.to(torch.bfloat16)
    assert predictions_from_logits(bf16).tolist() == predictions_from_logits(bf16.float()).tolist()


def nan_from(t: int, tokens: slice = slice(None)) -> np.ndarray:
    """Logits (2 rows, 6 positions, 4 tokens) of row 1 NaN from position ``t`` on (``tokens``)."""
    logits = np.zeros((2, 6, 4), dtype=np.float32)
    logits[1, t:, tokens] = np.nan
    return logits


def cot_probe():
    """The probe split of COT, in memory."""
    return probe_from_table(probe_table(probe_rows(COT, "probe", 0, 4), probe_schema(17)), COT)


def probed(**changed):
    """reliance_arrays on cot_probe() with its own predictions, ``changed`` (name: a function
    of the probe's array) applied."""
    probe = cot_probe()
    given = {"rows": probe.probed_rows, "positions": probe.probed, "far_rule": probe.far_rule}
    given.update({name: change(given[name]) for name, change in changed.items()})
    frame = {"window": 4, "ood_boundary": 64, "modulus": 17}
    return reliance_arrays(probe.tokens, probe.tokens, **given, **frame)


@pytest.mark.parametrize("case", list(API_REFUSALS))
def test_model_inputs_logits_and_probes_it_cannot_use_are_one_clear_error(case):
    call, said = API_REFUSALS[case]
    with pytest.raises(ScoringError, match=re.escape(said)):
        call()


WRITE_REFUSALS = {  # write_predictions(path, ids=[0, 1], tokens=[[1, 2], [3, 4]], m=17) changed
    "a modulus past 65536 (npy held uint16)": ({"modulus": 10**6}, "modulus must be a spec's m"),
    "float ids": ({"ids": np.array([0.5, 1.5])}, "ids must be integers"),
    "an id twice": ({"ids": np.array([0, 0])}, "ids appear more than once"),
    "rows of no predictions": ({"tokens": np.zeros((2, 0), int)}, "rows of no predictions"),
    "no rows at all": ({"ids": np.zeros(0, int), "tokens": np.zeros((0, 0), int)},
                       "no rows to write"),
    "made_for a string": ({"made_for": "ab"}, "made_for is a (spec id, split) pair"),
    "BOS at m = 256": ({"tokens": np.array([[256, 1], [1, 1]]), "modulus": 256},
                       "prediction 256 is outside the vocabulary 0..255"),
    "a negative prediction": ({"tokens": np.array([[-1, 1], [1, 1]])}, "prediction -1 is outside"),
    "float predictions": ({"tokens": np.array([[0.5, 1], [1, 1]])}, "must be integers"),
    "an id past int64": ({"ids": np.array([2**64 - 1, 0], np.uint64)},
                         "id 18446744073709551615 is outside int64"),
    "one row for two ids": ({"tokens": np.array([[1, 2]])}, "one row per id"),
}  # fmt: skip


@pytest.mark.parametrize("suffix", [".npy", ".parquet", ".arrow", ".jsonl"])
@pytest.mark.parametrize("case", list(WRITE_REFUSALS))
def test_write_predictions_refuses_what_it_would_write_wrongly(tmp_path, suffix, case):
    changed, fragment = WRITE_REFUSALS[case]
    arguments = {"ids": np.arange(2), "tokens": np.array([[1, 2], [3, 4]]), "modulus": 17}
    path = tmp_path / f"p{suffix}"
    with pytest.raises(ScoringError, match=re.escape(fragment)):
        write_predictions(path, **{**arguments, **changed})
    assert not path.exists()


FORMS = [(form, batched) for form in (None, "numpy", "torch", "arrow") for batched in (0, 1)]


# an unbatched map in the arrow format gets a one-row table: a batch of one
@pytest.mark.parametrize(("form", "batched"), [f for f in FORMS if f != ("arrow", 0)])
def test_lm_inputs_map_a_split_in_any_format_and_perfect_logits_score_one(form, batched):
    if form == "torch":
        pytest.importorskip("torch")
    spec = TaskSpec(task="cot", train_size=6, val_size=3, test_size=3)
    test = to_dataset_dict(spec)["test"]  # a datasets split is a reference
    inputs = LMInputs.for_spec(spec)
    mapped = test.with_format(form).map(inputs, batched=bool(batched), remove_columns=["tokens"])
    mapped, tokens = mapped.with_format(None), generate_split(spec, "test")
    assert mapped["input_ids"] == [[17, *row] for row in tokens.tolist()]
    assert mapped[0]["labels"] == [IGNORE_INDEX] * 5 + tokens[0, 4:].tolist()
    assert mapped[0]["attention_mask"] == [1] * 257
    assert mapped.column_names[0] == "id" or form == "arrow"  # arrow: the new columns first
    input_ids = np.array(mapped["input_ids"])
    logits = np.zeros((*input_ids.shape, spec.modulus + 1), dtype=np.float32)
    np.put_along_axis(logits[:, :-1], input_ids[:, 1:, None], 1.0, axis=-1)  # predicts next id
    report = score(test, predictions_from_logits(logits), spec)
    assert (report.id.accuracy, report.ood.accuracy, report.rows) == (1.0, 1.0, 3)


ARROW_WRITERS = {  # columns the reader must let through (pyarrow, datasets' ds.map, LargeList)
    "a dictionary-encoded extra column": lambda n, rows: {
        "cat": pa.array(["a", "b"] * (n // 2)).dictionary_encode()},
    "the input tokens beside the predictions": lambda n, rows: {
        "tokens": pa.array(list(rows), pa.list_(pa.uint8()))},
    "predictions as a large list": lambda n, rows: {
        "predictions": pa.array(list(rows), pa.large_list(pa.int64()))},
    "predictions as a list view": lambda n, rows: {"predictions": pa.ListViewArray.from_arrays(
        np.arange(n, dtype=np.int32) * rows.shape[1], np.full(n, rows.shape[1], np.int32),
        rows.reshape(-1))},
}  # fmt: skip


@pytest.mark.parametrize("suffix", [".arrow", ".parquet"])
@pytest.mark.parametrize("compression", ["uncompressed", "zstd"])
@pytest.mark.parametrize("case", sorted(ARROW_WRITERS))
def test_arrow_predictions_with_extra_columns_read_as_written(tmp_path, case, compression, suffix):
    """Extra columns count neither against a batch's size (400 rows: past its 64 KiB slack)
    nor a Parquet footer's values; a dictionary column is no problem either."""
    n, positions = 400, 256
    rows = np.random.default_rng(0).integers(0, 17, (n, positions), dtype=np.int64)
    columns = {"id": np.arange(n), "predictions": pa.array(list(rows), pa.list_(pa.int64()))}
    path = tmp_path / f"p{suffix}"
    table = pa.table({**columns, **ARROW_WRITERS[case](n, rows)})
    if suffix == ".parquet":
        pq.write_table(table, path, compression="none" if compression == "uncompressed" else
                       compression)  # fmt: skip
    else:
        feather.write_feather(table, path, compression=compression)
    read = read_predictions(path, fits=(n, positions))
    assert np.array_equal(read.tokens, rows) and np.array_equal(read.ids, np.arange(n))
