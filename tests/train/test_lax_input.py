"""Issue 27, class 11: lax input (a non-finite ``--wall-seconds``; a grid's ``seeds = [true]``:
tests/sweep/test_sweep.py) is refused, and a default spelled out (``--pe-param
rope_theta=10000``) is the default."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from posgen.cli.sweep import resolve_encoding  # noqa: E402
from posgen.encodings import Lengths, PERequest, resolve  # noqa: E402
from posgen.train.config import Grid, expand  # noqa: E402

LENGTHS = Lengths(train=64, test=256, head_dim=8, heads=2)


WALL = ["nan", "NaN", "-nan", "inf", "Infinity", "1e400"]


@pytest.mark.parametrize("value", WALL)
def test_wall_seconds_must_be_a_finite_number(assert_clean_error, cli, recorded, tmp_path, value):
    out = tmp_path / "R.md"
    result = cli("results", tmp_path, "--out", out, "--wall-seconds", value)
    with recorded("bad_input", f"class 11: --wall-seconds {value}"):
        assert_clean_error(result, 2, "--wall-seconds", "not a finite number")
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


def test_a_parameter_other_than_its_default_keeps_its_label():
    spelled = resolve(PERequest(name="rope", parameters={"rope_theta": 500}), LENGTHS)
    assert spelled.label == "rope(rope_theta=500)"


def test_a_grid_naming_rope_twice_one_with_its_default_spelled_out_makes_one_run(
    recorded,
    tiny_training_dataset,
):
    spelled = {"name": "rope", "parameters": {"rope_theta": 10000}}
    body = {"datasets": [str(tiny_training_dataset)], "configs": ["cot"], "seeds": [1]}
    grid = Grid.model_validate({**body, "pes": ["rope", spelled]})
    runs = expand(grid, resolve_encoding)
    with recorded("bad_input", "class 11: a grid of rope and rope with rope_theta=10000"):
        assert [run.pe for run in runs] == ["rope"]


def test_rope_theta_10000_lands_in_the_results_cell_of_rope(recorded, train_tiny, cli, tmp_path):
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
