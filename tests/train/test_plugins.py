"""A position-encoding plugin written from the README alone: listed, trained, in the results;
broken bias plugins and saved models refused in one line."""
# ruff: noqa: E402

from __future__ import annotations

import json
import sys

import pytest

torch = pytest.importorskip("torch")

import numpy as np
from safetensors.torch import load_file

import posgen
from posgen.encodings.builtin import alibi_bias, bias_encoding
from posgen.encodings.model import load_model
from posgen.errors import UsageError
from posgen.scoring.prediction_files import read_predictions
from posgen.train.config import preset
from posgen.train.trainer import RunData, build_model, lm_tensors, predict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture
def installed(plugin_site, readme_block) -> dict:
    """The README's plugin and a dist-info of its pyproject's entry points (what ``pip install``
    writes) in a folder on ``sys.path``: ``importlib.metadata`` finds it as installed."""
    plugin_site("mype/__init__.py", readme_block("# mype/__init__.py"))
    project = tomllib.loads(readme_block("# pyproject.toml"))["project"]
    name, version = project["name"], project["version"]
    dist = f"{name}-{version}.dist-info"
    plugin_site(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, points in project["entry-points"].items():
        lines += [f"[{group}]", *(f"{point} = {target}" for point, target in points.items())]
    plugin_site(f"{dist}/entry_points.txt", "\n".join(lines) + "\n")
    return project


def test_the_readme_plugin_installed_under_the_documented_group_shows_in_list_pe(cli, installed):
    assert list(installed["entry-points"]) == ["posgen.position_encodings"]
    result = cli("train", "--list-pe")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("base500 "))
    assert "train-time" in line
    assert "entry point mype:BASE500 (mype)" in line


def test_installed_plugin_trains_with_its_frequencies_and_ranks_in_the_results(
    cli, train_tiny, installed, tmp_path
):
    out = tmp_path / "runs" / "ds" / "cot" / "base500" / "seed1"
    result = train_tiny("base500", out, "--save-model")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["position_encoding"]["rope_parameters"]["train"]["rope_type"] == "base500"
    model, _ = load_model(out / "model")
    want = 500.0 ** (-torch.arange(0, 8, 2, dtype=torch.float) / 8)
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, want)
    report = tmp_path / "R.md"
    result = cli("results", tmp_path / "runs", "--out", report)
    assert result.exit_code == 0, result.output
    assert "| 1 | base500 | 1 |" in report.read_text()


def test_readme_learned_bias_trains_saves_and_reloads_to_the_same_predictions(
    train_tiny, plugin_site, readme_block, tiny_training_dataset, tmp_path
):
    plugin_site("mybias/__init__.py", readme_block("# mybias/__init__.py"))
    mybias, out = "mybias:LOGBIAS", tmp_path / "run"
    result = train_tiny(mybias, out, "--max-steps=3", "--lr=0.01", "--save-model")
    assert result.exit_code == 0, result.output
    saved = load_file(out / "model" / "model.safetensors")
    own = sorted(key for key in saved if ".position_module." in key)
    module = "model.layers.0.self_attn.position_module.mlp"
    assert own == [f"{module}.{n}.{w}" for n in (0, 2) for w in ("bias", "weight")]
    reference = RunData.load(tiny_training_dataset, "cot").train
    config = preset("cpu", layers=1, hidden=16, heads=2, intermediate=32)
    fresh = build_model(config, reference, mybias, 1).state_dict()
    moved = [key for key in own if not torch.equal(saved[key], fresh[key])]
    assert moved == [key for key in own if not key.endswith("mlp.2.bias")]  # softmax-invariant

    model, pe = posgen.load_model(out)
    assert pe.name == "logbias" and not model.training
    test = RunData.load(tiny_training_dataset, "cot").test
    again = predict(model, lm_tensors(test)["input_ids"], 3, torch.device("cpu"), test.spec.modulus)
    np.testing.assert_array_equal(again, read_predictions(out / "predictions.parquet").tokens)


LEAKED = """
import torch
from torch import nn

from posgen.encodings.builtin import bias_encoding

SLOPE = nn.Parameter(torch.tensor(0.5))  # outside any model: never trained, never saved


def bias(position_ids, heads, parameters):
    p = position_ids.float()
    return (-SLOPE * (p[:, :, None] - p[:, None, :]))[:, None].expand(-1, heads, -1, -1)


class Fixed(nn.Module):
    def __init__(self, parameters, lengths):
        super().__init__()
        self.heads = lengths.heads

    def forward(self, position_ids):
        t = position_ids.shape[1]
        return torch.zeros(position_ids.shape[0], self.heads, t, t)


GLOBAL = bias_encoding("global", "weights outside the model", bias)
EMPTY = bias_encoding("empty", "a module without weights", module=Fixed)
"""


@pytest.mark.parametrize(("name", "message"), [
    ("GLOBAL", "--pe leaked:GLOBAL: its bias function returns a tensor that needs gradients"),
    ("EMPTY", "--pe leaked:EMPTY: its bias module owns no trainable parameters"),
], ids=["weights-outside-the-model", "module-without-weights"])  # fmt: skip
def test_a_bias_that_cannot_learn_what_it_claims_is_one_error_line(
    train_tiny, plugin_site, name, message, tmp_path
):
    plugin_site("leaked.py", LEAKED)
    result = train_tiny(f"leaked:{name}", tmp_path / "r")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    assert not (tmp_path / "r").exists()


def test_bias_encoding_takes_a_function_or_a_module_not_both():
    with pytest.raises(ValueError, match="give a bias function or module=, not both"):
        bias_encoding("both", "x", alibi_bias, module=lambda parameters, lengths: None)


@pytest.mark.parametrize(("where", "text", "problem"), [
    ("run", None, "no saved model here (train with --save-model; it writes RUN/model)"),
    ("run/model", None, "no saved model here"),
    ("nothing", None, "no saved model here"),
    ("run", "{", "not a posgen model's encoding (JSONDecodeError"),
    ("run", "{}", "not a posgen model's encoding (KeyError"),
    ("run", '{"request": {"name": "rope"}, "lengths": 1}', "not a posgen model's encoding (TypeE"),
], ids=["run", "run-model", "nothing", "not-json", "no-request", "bad-lengths"])  # fmt: skip
def test_load_model_of_a_folder_without_a_good_saved_model_is_one_usage_error(
    where, text, problem, tmp_path
):
    (tmp_path / "run" / "model").mkdir(parents=True)
    shown = tmp_path / where
    if text is not None:
        shown = tmp_path / "run" / "model" / "position_encoding.json"
        shown.write_text(text)
    with pytest.raises(UsageError) as error:
        posgen.load_model(tmp_path / where)
    assert str(error.value).startswith(f"{shown}: {problem}") and "\n" not in str(error.value)
