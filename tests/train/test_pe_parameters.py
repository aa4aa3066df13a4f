"""A bad parameter is one ``error:`` line, exit 2, before torch is imported; a plugin that
breaks is one line naming it; a loss that turns NaN stops the run."""
# ruff: noqa: E402

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from posgen.encodings import ENCODINGS, NO_TABLE, Lengths, PERequest
from posgen.encodings.parameters import PARAMETERS, check_parameters
from posgen.train.trainer import Diverged, diverged

SMALL = ["--batch-size=16", "--eval-batch-size=8"]

# (issue 27 class, --pe, --pe-param values, a fragment of the error line); class 4: values that
# trained to NaN or were taken silently, class 5: values that gave internal errors
BAD = [
    (4, "rope", ["rope_theta=0"], "greater than 1"),
    (4, "rope", ["rope_theta=-1"], "greater than 1"),
    (4, "rope", ["rope_theta=1e-300"], "greater than 1"),
    (4, "linear", ["factor=0"], "at least 0.01"),
    (4, "linear", ["factor=NaN"], "finite"),
    (4, "linear", ["factor=Infinity"], "finite"),
    (4, "linear", ["factor=-Infinity"], "finite"),
    (4, "linear", ["factor=true"], "not true or false"),
    (4, "linear", ["factor=-2"], "at least"),
    (4, "dynamic", ["factor=-1"], "at least"),
    (4, "longrope", ["factor=-1"], "at least"),
    (4, "longrope", ["long_factor=[1, NaN]"], "finite"),
    (4, "longrope", ["long_factor=[]"], "use a number or a list of 1 to 4096 numbers"),
    (4, "yarn", ["factor=0.5"], "at least 1"),
    (4, "yarn", ["truncate=1"], "true or false"),
    (4, "linear", ["scale_at=never"], "evaluation, train"),
    (4, "linear", ["factor=2", "factor=3"], "given twice"),
    (4, "linear", ["x" * 500 + "=2", "x" * 500 + "=3"], f"--pe-param {'x' * 57}... is given twice"),
    (4, "yarn+logn", ["factor=0.5"], "at least 1"),
    (4, "logn", ["train_positions=1"], "at least 2"),
    (4, "rope+logn", ["train_positions=1.5"], "whole number"),
    (4, "t5", ["buckets=1"], "at least 2"),
    (4, "fire", ["c=0"], "greater than 0"),
    (4, "xpos", ["gamma=x"], "use a number"),
    (4, "cope", ["positions=1"], "at least 2"),
    (4, "nope", ["partial_rotary_factor=0.5"], "at most 0 (NoPE rotates no pair"),  # RoPE, not NoPE
    (4, "nope+logn", ["rope_theta=500"], "at least 10000 (NoPE rotates nothing"),  # changed nothing
    (5, "linear", ["factor=abc"], "use a number"),
    (5, "linear", ["factor=[1,2]"], "use a number"),
    (5, "rope", ["rope_theta=nan"], "use a number"),
    (5, "rope", ["rope_theta=" + "9" * 400], "at most 2^53"),
    (5, "yarn", ["beta_fast=-1"], "greater than 0"),
    (5, "yarn", ["original_max_position_embeddings=0"], "at least 1"),
    (5, "llama3", ["low_freq_factor=0"], "greater than 0"),
    (5, "proportional", ["partial_rotary_factor=2"], "at most 1"),
    (5, "proportional", ["partial_rotary_factor=-0.5"], "at least 0"),
    (5, ":NAME", [], "package.module:NAME"),
    (5, "../dir/mod:NAME", [], "not a file path"),
]


@pytest.mark.parametrize(
    ("kind", "pe", "params", "fragment"), BAD, ids=[f"{c[1]} {' '.join(c[2])}" for c in BAD]
)
def test_a_bad_parameter_is_one_line_exit_2_before_torch(
    assert_clean_error, train_tiny, recorded, tmp_path, monkeypatch, kind, pe, params, fragment
):
    imported: list[int] = []

    def stop() -> None:
        imported.append(1)
        raise RuntimeError("the run got as far as importing torch")

    monkeypatch.setattr("posgen.cli.train.require_extra", stop)
    out = tmp_path / "run"
    result = train_tiny(pe, out, *(f"--pe-param={param}" for param in params), *SMALL)
    with recorded("bad_input", f"issue 27 class {kind}: --pe {pe} {' '.join(params)}"):
        assert_clean_error(result, 2, fragment)
        assert imported == []
        assert list(tmp_path.iterdir()) == []


def test_every_rope_parameter_of_the_table_refuses_nan_and_booleans():
    for name, parameter in PARAMETERS.items():
        if parameter.kind in ("number", "integer", "numbers"):
            for value in (math.nan, math.inf, True):
                with pytest.raises(ValueError, match=name):
                    check_parameters("rope", {name: value})


def test_the_defaults_of_every_built_in_pass_their_own_table():
    lengths = Lengths(train=64, test=256, head_dim=16, heads=4)
    for name, encoding in ENCODINGS.items():
        check_parameters(name, encoding.defaults(lengths))
        assert (name in NO_TABLE) == (encoding.input_positions is None), name
    assert "rope" in ENCODINGS and "no_such" not in ENCODINGS and 5 not in ENCODINGS


def test_a_parameter_spelled_out_at_its_default_is_accepted():
    assert PERequest.parse("rope", ["rope_theta=10000"], None).parameters == {"rope_theta": 10000}
    given = {"truncate": False, "original_max_position_embeddings": 64.0}  # 64.0: a grid's JSON
    assert check_parameters("yarn", given) == {**given, "original_max_position_embeddings": 64}
    own = {"x": [1, 2.5, "a", None, [True]]}  # a plugin's own parameter: plain JSON, kept
    assert check_parameters("mine", own) == own


# --- plugins and relations: after the import, before any training -------------------------------

BROKEN = {  # issue 27 case -> (--pe, then --pe-param values; exit code; error line fragments)
    "class 5: module raises on import": (["h27raises:X"], 2, "h27raises:X", "RuntimeError: boom"),
    "class 5: module calls sys.exit(3) on import": (["h27exits:X"], 2, "h27exits:X",
                                                    "SystemExit: 3"),
    "class 5: frequencies of the wrong shape": (["h27plugins:WRONG_SHAPE"], 2, "h27_wrong_shape"),
    "class 5: frequencies that are None": (["h27plugins:NONE"], 2, "h27_none", "module h27plugins"),
    "class 5: NaN frequencies": (["h27plugins:NAN"], 2, "h27_nan", "not finite"),
    "class 5: a bias of rank 2": (["h27plugins:RANK"], 2, "h27plugins:RANK",
                                  "its bias of position ids"),
    "class 5: llama3 high_freq_factor = low_freq_factor": (
        ["llama3", "low_freq_factor=2", "high_freq_factor=2"], 2,
        "high_freq_factor must be greater than low_freq_factor"),
    "yarn mscale alone (transformers ignores it: the run was yarn)": (
        ["yarn", "mscale=2"], 2, "mscale and mscale_all_dim act only together"),
    "class 4: training loss NaN": (["h27plugins:DIVERGE"], 1, "training loss became nan at step 1",
                                   "no run folder"),
    "class 10: a plugin's bug in training": (["h27plugins:LATE"], 1, "plugin encoding h27_late",
                                             "a bug at 65 positions"),
    "a plugin calling sys.exit(0) in training": (["h27plugins:QUITS"], 1,
                                                 "plugin encoding h27_quits", "SystemExit: 0"),
    "a plugin's bug on the test rows": (["h27plugins:TEST_ROWS"], 1, "plugin encoding h27_test_r",
                                        "RuntimeError: a bug on test rows"),
    "a bias NaN past L only": (["h27plugins:NAN_PAST_L"], 2, "h27_nan_past_l (module h27plugins",
                               "row of 257 tokens", "not finite"),
    "a plugin's defaults raise": (["h27plugins:DEFAULTS"], 2, "h27plugins:DEFAULTS (module",
                                  "its defaults failed (RuntimeError: no defaults here)"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_encoding_or_training_is_one_line_naming_it_nothing_written(
    assert_clean_error, train_tiny, recorded, tmp_path, hostile_plugins, case
):
    (pe, *params), code, *fragments = BROKEN[case]
    result = train_tiny(pe, tmp_path / "run", *(f"--pe-param={p}" for p in params), *SMALL)
    with recorded("hostile", f"issue 27 {case}"):
        line = assert_clean_error(result, code, *fragments)
        assert "internal error" not in line
        assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile-site"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_loss_that_is_not_finite_stops_the_run_where_a_gpu_checks_it(value):
    diverged(torch.tensor(2.5), "epoch 1")
    with pytest.raises(Diverged, match=f"training loss became {value} at epoch 3"):
        diverged(torch.tensor(value), "epoch 3 (its mean up to step 9)")
