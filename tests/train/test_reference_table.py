"""The reference table: attention diagnostics, effective length, the source column, the
``eee`` and ``hf`` exports and the precision option."""
# ruff: noqa: E402

from __future__ import annotations

import contextlib
import csv
import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from posgen.spec import default_benchmark
from posgen.train import RESULTS
from posgen.train.attention import _recording, far_mask, summarize
from posgen.train.config import preset
from posgen.train.exports import hf_entries
from posgen.train.results import effective_length, length_buckets
from posgen.train.run_record import read_run
from posgen.train.trainer import build_model, precision

TINY = {"layers": 2, "hidden": 16, "heads": 2, "intermediate": 32, "batch_size": 32}
SEEDS = (1, 2)
COT = default_benchmark(("cot",)).configs["cot"]


# --- attention diagnostics ----------------------------------------------------------------
def _tiny_model(pe: str):
    return build_model(preset("cpu", **TINY), SimpleNamespace(spec=COT), pe, seed=3).eval()


@pytest.mark.parametrize("pe", ["rope", "alibi", "nope", "learned"])
def test_recorded_attention_is_causal_sums_to_one_leaves_outputs_alone_and_is_eagers(pe):
    model = _tiny_model(pe)
    ids = torch.randint(0, 17, (2, 12))
    sink: list[torch.Tensor] = []
    with torch.no_grad():
        before = model(input_ids=ids).logits
        with _recording(model, sink):
            during = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert torch.equal(before, during) and torch.equal(before, after)
    assert len(sink) == TINY["layers"]
    for probabilities in sink:
        torch.testing.assert_close(probabilities.sum(-1), torch.ones(2, 2, 12))
        assert not probabilities.triu(diagonal=1).any()
    if model.config._attn_implementation == "sdpa":  # not alibi's own attention function
        model.config._attn_implementation = "eager"
        with torch.no_grad():
            eager = model(input_ids=ids, output_attentions=True).attentions
        for probabilities, expected in zip(sink, eager, strict=True):
            torch.testing.assert_close(probabilities, expected.float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("task", ["recursive", "cot", "semirecursive"])
@pytest.mark.parametrize(("near", "far"), [(3, 1), (2, 3), (2, 0)])
def test_far_mask_marks_the_inputs_holding_each_targets_far_operands(task, near, far):
    mask = far_mask(task, near, far, 40)
    assert not mask[: near + far].any()
    for t in range(near + far, 40):  # the README's table: where the far operands of x_t sit
        window = near + far
        start = {"recursive": t - window, "cot": 0, "semirecursive": (t - window) // 2}[task]
        inputs = [p + 1 for p in range(start, start + far)]  # input 0 is BOS
        assert np.flatnonzero(mask[t]).tolist() == inputs, t


def test_uniform_attention_has_normalized_entropy_one_and_far_share_far_over_t_plus_one():
    length, window, boundary = 20, 4, 10
    causal = torch.tril(torch.ones(length, length))
    uniform = (causal / causal.sum(-1, keepdim=True))[None, None].expand(3, 2, -1, -1)
    far = far_mask("cot", near=3, far=1, length=length)
    regions = summarize(uniform, far, window, boundary, length)
    for region, (lo, hi) in {"id": (window, boundary), "ood": (boundary, length)}.items():
        figures = regions[region]
        assert figures.normalized_entropy == pytest.approx(1.0)
        expected = [math.log(t + 1) for t in range(lo, hi)]
        assert figures.entropy == pytest.approx(sum(expected) / len(expected))
        shares = [1 / (t + 1) for t in range(lo, hi)]
        assert figures.far_share == pytest.approx(sum(shares) / len(shares))
        assert figures.targets == 3 * (hi - lo)


def test_attention_on_one_input_has_entropy_zero_and_far_share_one():
    length = 12
    on_first = torch.zeros(1, 1, length, length)
    on_first[..., 1] = 1.0  # every query on input 1 (x_0: cot's far operand)
    on_first[..., 0, :] = torch.eye(length)[0]
    far = far_mask("cot", near=3, far=1, length=length)
    regions = summarize(on_first, far, 4, 8, length)
    assert regions["id"].entropy == pytest.approx(0.0, abs=1e-9)
    assert regions["id"].far_share == pytest.approx(1.0)
    assert regions["ood"].normalized_entropy == pytest.approx(0.0, abs=1e-9)
    assert summarize(on_first, far, 4, length, length)["ood"] is None  # L' = L: no OOD region


def test_every_run_records_attention_per_layer_and_results_shows_its_mean_per_cell(
    trained_runs, reported
):
    spec = read_run(trained_runs / "rope-1").spec
    records = [read_run(trained_runs / f"rope-{seed}").attention for seed in SEEDS]
    for attention in records:
        assert attention is not None and attention.rows == 8
        assert [layer.layer for layer in attention.layers] == list(range(TINY["layers"]))
        for layer in attention.layers:
            assert layer.id.targets == 8 * (spec.train_length - spec.window)
            assert layer.ood.targets == 8 * (spec.test_lengths[0] - spec.train_length)
            assert layer.id.far_share is not None and 0 <= layer.ood.far_share <= 1
    cell = reported["json"]["ds"]["tasks"]["cot"]["rope"]
    assert len(cell["attention"]) == TINY["layers"]
    for index, layer in enumerate(cell["attention"]):
        for region in ("id", "ood"):
            values = [getattr(r.layers[index], region).far_share for r in records]
            assert layer[region]["far_share"] == pytest.approx(sum(values) / len(values))
    flat = [layer["ood"]["normalized_entropy"] for layer in cell["attention"]]
    assert cell["attn_flat_ood"] == pytest.approx(sum(flat) / len(flat))
    assert "| attention flatness | attention far share |" in reported["md"]
    shown = f"{cell['attn_far_id']:.3f} -> {cell['attn_far_ood']:.3f}"
    assert f"| {shown} |" in reported["md"]


def test_an_attention_function_that_cannot_be_probed_is_refused_not_misread():
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from posgen.train.attention import NotMeasurable, attention_diagnostics

    def narrow(module, query, key, value, *args, **kwargs):  # assumes the values' width
        width = query.shape[-1]
        return value[..., :width].transpose(1, 2).contiguous(), None

    model = _tiny_model("rope")
    model.config._attn_implementation = "posgen_test_narrow"
    ALL_ATTENTION_FUNCTIONS["posgen_test_narrow"] = narrow
    try:
        test = SimpleNamespace(spec=COT, tokens=np.zeros((2, 256), dtype=np.int64))
        with pytest.raises(NotMeasurable):
            attention_diagnostics(model, test, torch.device("cpu"))
    finally:
        del ALL_ATTENTION_FUNCTIONS["posgen_test_narrow"]


def test_runs_without_attention_figures_show_a_dash(cli, trained_runs, tmp_path):
    old = tmp_path / "runs" / "old-1"
    shutil.copytree(trained_runs / "rope-1", old)
    record = json.loads((old / RESULTS).read_text())
    del record["attention"]  # a run from before the diagnostics
    (old / RESULTS).write_text(json.dumps(record))
    out = tmp_path / "R.md"
    assert cli("results", old.parent, "--out", out).exit_code == 0
    row = next(line for line in out.read_text().splitlines() if line.startswith("| cot | rope"))
    assert row.endswith("| - | - |")


# --- effective length ------------------------------------------------------------------------

W, L, END, CHANCE = 4, 64, 256, 1 / 17
POSITIONS = list(range(W, END))


def curve(id_value: float, ood: dict[int, float] | None = None, first: float = 0.06, gap=None):
    """Accuracy per position: ``first`` at w, ``id_value`` after, ``ood[p]`` from p, NaN at gap."""
    values = [first] + [id_value] * (END - W - 1)
    for start, value in sorted((ood or {}).items()):
        values[start - W :] = [value] * (END - start)
    if gap is not None:
        values[gap] = math.nan
    return values


@pytest.mark.parametrize(
    ("accuracy", "expected"),
    [
        (curve(0.98), END),  # no drop: L'
        (curve(0.98, {L: 0.3}), L),  # drops at L
        (curve(0.98, {128: 0.5}), 128),  # holds past L, then drops
        (curve(0.98, {100: 0.95}), END),  # within the tolerance (0.05)
        (curve(0.98, {100: 0.90}), 104),  # [96, 104) averages 0.94, [104, 112) 0.90 < 0.93
        (curve(0.98, first=0.0), END),  # t = w at chance is left out
        (curve(0.06), None),  # ID at chance: no drop could show
        (curve(0.10), None),  # reference within 0.05 of chance
        ([0.06] + [1.0, 0.06] * ((END - W - 1) // 2) + [1.0], END),  # period 2 is smoothed
        ([0.06] + [1.0, 0.06] * ((L - W) // 2) + [0.06] * (END - L - 1), L),  # OOD at chance
        (curve(0.98, {200: 0.2}, gap=10), 200),  # a position without a value is left out
    ],
)
def test_effective_length_on_constructed_curves(accuracy, expected):
    assert len(accuracy) == len(POSITIONS)
    assert effective_length(POSITIONS, accuracy, W, L, CHANCE) == expected


# --- source column, model/ folders -----------------------------------------------------------
@pytest.mark.parametrize("inside", [None, "metrics.jsonl"])
def test_save_model_folders_are_not_reported_as_runs(cli, trained_runs, tmp_path, inside):
    assert (trained_runs / "rope-1" / "model").is_dir()
    folder = tmp_path / "runs"
    shutil.copytree(trained_runs, folder)
    if inside is not None:  # even a file named like a run's own is the run's, not a run
        (folder / "rope-1" / "model" / inside).write_text("{}")
    out = tmp_path / "R.md"
    result = cli("results", folder, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert f"{out}: 4 runs, 1 task" in result.stdout


def test_results_name_where_each_encoding_came_from(cli, trained_runs, edited_run, tmp_path):
    plugin = tmp_path / "runs"
    pe = {"name": "myrope", "label": "myrope", "source": "mypkg.encodings:MYROPE",
          "confound": "adds a learned bias"}  # fmt: skip
    edited_run(trained_runs / "rope-1", plugin / "plugin-1", position_encoding=pe)
    shutil.copytree(trained_runs / "rope-1", plugin / "rope-1")
    out, table = tmp_path / "R.md", tmp_path / "r.csv"
    assert cli("results", plugin, "--out", out).exit_code == 0
    assert cli("results", plugin, "--format", "csv", "--out", table).exit_code == 0
    text = out.read_text()
    assert "| when | source |" in text
    assert "| train-time | mypkg.encodings:MYROPE |" in text
    assert "| train-time | built-in |" in text
    assert "\nNot the Llama block: myrope: adds a learned bias.\n" in text
    rows = {row["pe"]: row["source"] for row in csv.DictReader(table.open())}
    assert rows == {"myrope": "mypkg.encodings:MYROPE", "rope": "built-in"}


# --- eee and hf exports ----------------------------------------------------------------------
def _required(value: dict, names: str, where: str) -> None:
    missing = [name for name in names.split() if name not in value]
    assert not missing, f"{where}: missing {missing}"


def check_eee(record: dict) -> None:
    """The required fields, types and enums of Every Eval Ever's eval.schema.json (0.2.1)."""
    top = "schema_version evaluation_id retrieved_timestamp source_metadata model_info"
    _required(record, top + " eval_library evaluation_results", "record")
    assert all(isinstance(record[k], str) for k in top.split()[:3])
    source = record["source_metadata"]
    _required(source, "source_type source_organization_name evaluator_relationship", "sm")
    assert source["source_type"] in ("documentation", "evaluation_run")
    relationships = ("first_party", "third_party", "collaborative", "other")
    assert source["evaluator_relationship"] in relationships
    _required(record["model_info"], "name id", "model_info")
    _required(record["eval_library"], "name version", "eval_library")
    for block in (source, record["model_info"], record["eval_library"]):
        assert all(isinstance(v, str) for v in block.get("additional_details", {}).values())
    assert isinstance(record["evaluation_results"], list)
    for entry in record["evaluation_results"]:
        _required(entry, "evaluation_name source_data metric_config score_details", "result")
        _required(entry["source_data"], "dataset_name source_type", "source_data")
        assert entry["source_data"]["source_type"] in ("url", "hf_dataset", "other")
        metric, score = entry["metric_config"], entry["score_details"]
        assert isinstance(metric["lower_is_better"], bool)
        if metric.get("score_type") == "continuous":
            _required(metric, "min_score max_score", "metric_config")
        assert isinstance(score["score"], float)
        uncertainty = score.get("uncertainty", {})
        assert isinstance(uncertainty.get("num_samples", 0), int)
        assert "value" in uncertainty.get("standard_error", {"value": None})


def test_eee_export_is_a_record_per_cell_an_entry_per_metric_and_bucket_the_same_bytes_rerun(
    assert_clean_error, cli, tree, trained_runs, reported, tmp_path, monkeypatch
):
    """With SOURCE_DATE_EPOCH (whole seconds, else refused) every rerun is the same bytes."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    args = ["results", trained_runs, "--format", "eee", "--out"]
    assert [cli(*args, tmp_path / out).exit_code for out in "ab"] == [0, 0]
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    out = tmp_path / "a"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["ds/cot/rope.json", "ds/cot/yarn.json"]
    record = json.loads((out / files[0]).read_text())
    check_eee(record)
    assert record["retrieved_timestamp"] == "1767225600"
    buckets = length_buckets(4, 64, 256)
    assert buckets == [(4, 64), (64, 128), (128, 192), (192, 256)]
    entries = record["evaluation_results"]
    details = [entry["metric_config"]["additional_details"] for entry in entries]
    keys = [(d["metric"], int(d["bucket_start"]), int(d["bucket_end"])) for d in details]
    assert keys == [(m, s, e) for s, e in buckets for m in ("accuracy", "far_reliance")]
    runs_scores = [read_run(trained_runs / f"rope-{seed}").scores for seed in SEEDS]
    for entry, (metric, start, end) in zip(entries, keys, strict=True):
        source = entry["source_data"]["additional_details"]
        scored = ("cot", "test") if metric == "accuracy" else ("cot-probe", "probe")
        assert (source["config"], source["split"]) == scored  # where the figure was computed
        uncertainty = entry["score_details"]["uncertainty"]
        assert uncertainty["num_samples"] == 2 and uncertainty["standard_deviation"] >= 0
        if metric != "accuracy":
            continue
        per_run = []
        for scores in runs_scores:
            c = scores.curve
            inside = [i for i, p in enumerate(c.position) if start <= p < end]
            per_run.append(sum(c.correct[i] for i in inside) / sum(c.tokens[i] for i in inside))
        assert entry["score_details"]["score"] == pytest.approx(sum(per_run) / 2)
        assert uncertainty["standard_deviation"] == pytest.approx(np.std(per_run, ddof=1))
    cell = reported["json"]["ds"]["tasks"]["cot"]["rope"]
    id_entry = entries[0]["score_details"]["score"]
    assert id_entry == pytest.approx(cell["id_mean"])  # the ID bucket is the ID accuracy
    line = "SOURCE_DATE_EPOCH must be whole seconds since 1970"
    for odd in ("yesterday", "-1", "1e9", "\u00b2", "\u0661\u0662\u0663"):  # ², Arabic-Indic 123
        monkeypatch.setenv("SOURCE_DATE_EPOCH", odd)
        assert_clean_error(cli(*args, tmp_path / "c"), 2, line)
        assert not (tmp_path / "c").exists()


def test_hf_export_is_an_eval_results_yaml_per_metric(cli, trained_runs, reported, tmp_path):
    out = tmp_path / "hub"
    assert cli("results", trained_runs, "--format", "hf", "--out", out).exit_code == 0
    cell = reported["json"]["ds"]["tasks"]["cot"]["rope"]
    folder = out / "ds" / "cot" / "rope" / ".eval_results"
    metrics = ("id_accuracy", "ood_accuracy", "id_far_reliance", "ood_far_reliance")
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{m}.yaml" for m in metrics)
    scored = {"id_mean": ("cot", "test"), "far_ood_mean": ("cot-probe", "probe")}
    for name, key in (("id_accuracy", "id_mean"), ("ood_far_reliance", "far_ood_mean")):
        entries = yaml.safe_load((folder / f"{name}.yaml").read_text())
        assert isinstance(entries, list) and len(entries) == 1
        (entry,) = entries
        _required(entry, "dataset value", "entry")  # the Hub's required fields
        _required(entry["dataset"], "id task_id", "dataset")
        assert entry["dataset"]["task_id"] == "cot"
        assert (entry["dataset"]["config"], entry["dataset"]["split"]) == scored[key]
        assert entry["value"] == pytest.approx(cell[key], abs=1e-6)
    without_ood = {k: v for k, v in cell.items() if k not in ("ood_mean", "far_ood_mean")}
    assert sorted(hf_entries("ds", "cot", without_ood)) == ["id_accuracy", "id_far_reliance"]
    (one,) = hf_entries("ds", "cot", {**cell, "n": 1, "id_std": None})["id_accuracy"]
    assert "; mean over n = 1 seed; L = " in one["notes"]


@pytest.mark.parametrize("kind", ["eee", "hf"])
def test_export_to_a_path_that_exists_is_one_error_line_and_nothing_written(
    assert_clean_error, cli, trained_runs, tmp_path, kind
):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert_clean_error(cli("results", trained_runs, "--format", kind, "--out", taken), 2, "exists")
    assert taken.read_text() == "mine"


# --- precision -------------------------------------------------------------------------------
def test_float32_runs_use_no_autocast_and_bf16_on_cpu_is_refused_by_train_and_the_loop(
    assert_clean_error, train_tiny, tmp_path
):
    assert isinstance(precision(preset("cpu"), torch.device("cpu")), contextlib.nullcontext)
    with pytest.raises(ValueError, match="bf16 needs a CUDA device"):
        precision(preset("cpu", bf16=True), torch.device("cpu"))
    out = tmp_path / "run"  # posgen train says it as one line; the loop (a sweep's) raises
    line = assert_clean_error(train_tiny("rope", out, "--device", "cpu", "--bf16"), 2)
    assert line == "error: --bf16: needs a CUDA device (CPU runs compute in float32)"
    assert not out.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_run_trains_and_records_its_precision(cli, tiny_training_dataset, tmp_path):
    out = tmp_path / "run"
    result = cli(
        "train", "--data", tiny_training_dataset, "--config", "cot", "--pe", "rope",
        "--device", "cuda", "--bf16", "--max-steps", "2", "--epochs", "1", "--out", out, "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = read_run(out)
    assert record.device == "cuda" and record.train.bf16 and record.attention is not None
