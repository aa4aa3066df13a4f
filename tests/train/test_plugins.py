"""Position-encoding plugins: the README's, listed, trained and in the results; one clashing with
a built-in or a table replaced behind posgen's back is one ``error:`` line, exit 2."""
# ruff: noqa: E402

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import zipfile
import zipimport
from dataclasses import asdict

import pytest

torch = pytest.importorskip("torch")

import numpy as np
from safetensors.torch import load_file, save_file
from transformers import AttentionInterface, LlamaForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

import posgen
import posgen.signals
from posgen.encodings import ENCODINGS, Lengths, PEError, PERequest, resolve
from posgen.encodings.builtin import TRANSFORMERS_ROPE_TYPES, alibi_bias, bias_encoding
from posgen.encodings.model import PE_FILE, load_model
from posgen.errors import UsageError
from posgen.scoring.prediction_files import read_predictions
from posgen.train.config import preset
from posgen.train.trainer import RunData, build_model, lm_tensors, predict

LENGTHS = Lengths(train=64, test=256, head_dim=8, heads=2)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def dist_info(plugin_site, name: str, version: str, groups: dict[str, dict[str, str]]) -> None:
    """A dist-info with ``groups`` (group -> name -> target) as entry points, as pip writes it."""
    dist = f"{name}-{version}.dist-info"
    plugin_site(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, points in groups.items():
        lines += [f"[{group}]", *(f"{point} = {target}" for point, target in points.items())]
    plugin_site(f"{dist}/entry_points.txt", "\n".join(lines) + "\n")


def test_the_readme_plugin_installed_is_listed_trains_with_its_frequencies_and_ranks(
    cli, train_tiny, plugin_site, readme_block, tmp_path
):
    plugin_site("mype/__init__.py", readme_block("# mype/__init__.py"))
    project = tomllib.loads(readme_block("# pyproject.toml"))["project"]
    assert list(project["entry-points"]) == ["posgen.position_encodings"]
    dist_info(plugin_site, project["name"], project["version"], project["entry-points"])
    result = cli("train", "--list-pe")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("base500 "))
    assert "train-time" in line and "entry point mype:BASE500 (mype)" in line
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


def test_bias_encoding_takes_a_function_or_a_module_not_both():
    with pytest.raises(ValueError, match="give a bias function or module=, not both"):
        bias_encoding("both", "x", alibi_bias, module=lambda parameters, lengths: None)


def _edit_json(name: str, **changes):
    def edit(model):
        body = json.loads((model / name).read_text())
        (model / name).write_text(json.dumps({**body, **changes}))

    return edit


def _without_the_norm(model) -> None:
    """model.safetensors less one tensor (another tool's file, or an edited one)."""
    weights = load_file(model / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if k != "model.norm.weight"}, model / "model.safetensors"
    )


def _write(name: str, text: str):
    return lambda model: (model / name).write_text(text)


NO_MODEL = "no saved model here"
MODEL = "run/model"
SAVED_MODEL_DAMAGES = {  # case -> (damage to RUN/model, folder loaded, file named, problem)
    "run": (lambda m: (m / PE_FILE).unlink(), "run", "run",
            "no saved model here (train with --save-model; it writes RUN/model)"),
    "run-model": (lambda m: (m / PE_FILE).unlink(), MODEL, MODEL, NO_MODEL),
    "nothing": (lambda m: None, "nothing", "nothing", NO_MODEL),
    "not-json": (_write(PE_FILE, "{"), "run", f"{MODEL}/{PE_FILE}",
                 "not a posgen model's encoding (JSONDecodeError"),
    "no-request": (_write(PE_FILE, "{}"), "run", f"{MODEL}/{PE_FILE}",
                   "not a posgen model's encoding (KeyError"),
    "bad-lengths": (_write(PE_FILE, '{"request": {"name": "rope"}, "lengths": 1}'), "run",
                    f"{MODEL}/{PE_FILE}", "not a posgen model's encoding (TypeE"),
    "no-evaluation-rope": (
        _write(PE_FILE, json.dumps({"request": {"name": "rope"}, "lengths": asdict(LENGTHS)})),
        "run", f"{MODEL}/{PE_FILE}", "not a posgen model's encoding (KeyError"),
    "randomized-positions-of-3": (_edit_json(PE_FILE, request={"name": "rope", "randomized": 3}),
                                  "run", MODEL, "--randomized-positions 3: the range must hold"),
    "config-deleted": (lambda m: (m / "config.json").unlink(), "run", f"{MODEL}/config.json",
                       "missing"),
    "weights-deleted": (lambda m: (m / "model.safetensors").unlink(), "run",
                        f"{MODEL}/model.safetensors", "missing"),
    "weights-truncated": (lambda m: os.truncate(m / "model.safetensors", 100), "run",
                          f"{MODEL}/model.safetensors", "not readable"),
    "config-of-hidden-65536": (_edit_json("config.json", hidden_size=65536), "run",
                               f"{MODEL}/config.json", "its sizes do not fit model.safetensors"),
    "weights-without-the-norm": (_without_the_norm, "run", MODEL, "the weights do not fit config"),
    "config-of-0-heads": (_edit_json("config.json", num_attention_heads=0), "run",
                          f"{MODEL}/config.json", "not a Llama config"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SAVED_MODEL_DAMAGES))
def test_load_model_of_a_missing_or_damaged_saved_model_is_one_usage_error_naming_the_file(
    trained_runs, tmp_path, case
):
    damage, where, named, problem = SAVED_MODEL_DAMAGES[case]
    damage(shutil.copytree(trained_runs / "rope-1", tmp_path / "run") / "model")
    with pytest.raises(UsageError) as error:
        posgen.load_model(tmp_path / where)
    assert str(error.value).startswith(f"{tmp_path / named}: {problem}")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("folder", [123, None, b"run", ["run"]], ids=repr)
def test_load_model_of_something_that_is_no_path_is_a_usage_error_naming_the_argument(folder):
    with pytest.raises(
        UsageError, match=f"load_model: folder must be .*, not {type(folder).__name__}"
    ):
        posgen.load_model(folder)


# --- a plugin never replaces a built-in ----------------------------------------------------

HEADER = """
import torch
from posgen.encodings import PositionEncoding
from posgen.encodings.builtin import bias_encoding, rope_encoding


def freqs(config, device=None, seq_len=None, **kwargs):
    dim = config.hidden_size // config.num_attention_heads
    return (500.0 ** (-torch.arange(0, dim, 2, dtype=torch.float) / dim)).to(device), 1.0


def zero_bias(position_ids, heads, parameters):
    rows, length = position_ids.shape
    return torch.zeros(rows, heads, length, length)


SLOPE = torch.nn.Parameter(torch.tensor(0.5))  # outside any model: never trained, never saved


def leaked_bias(position_ids, heads, parameters):
    p = position_ids.float()
    return (-SLOPE * (p[:, :, None] - p[:, None, :]))[:, None].expand(-1, heads, -1, -1)


def masked_bias(position_ids, heads, parameters):  # every key blocked, even a query's own
    rows, length = position_ids.shape
    return torch.full((rows, heads, length, length), -float("inf"))


def nan_bias(position_ids, heads, parameters):
    return torch.full((1, heads, 3, 3), float("nan"))


def no_module(parameters, lengths):
    return None


def fails(parameters, lengths):
    raise RuntimeError("a plugin's bug")


class Fixed(torch.nn.Module):
    def __init__(self, parameters, lengths):
        super().__init__()
        self.heads = lengths.heads

    def forward(self, position_ids):
        return zero_bias(position_ids, self.heads, {})
"""

BUILT_INS = "rope yarn linear dynamic longrope llama3 resonance resonance_yarn proportional nope"
NAMED, OWN = "built-in position encoding NAME", "rope type 'NAME' is transformers' own"
TYPED = 'rope_encoding("mine_NAME", "mine", freqs, rope_type="NAME")'
TAKEN = "rope type 'NAME' is taken by the built-in encoding NAME"
THE_NAME = "the name of a built-in position encoding"

# (the plugin's X, for each NAME of the names; a fragment of the error line)
CLASHES = [
    ('rope_encoding("NAME", "mine", freqs, rope_type="mine_NAME")', BUILT_INS.split(), NAMED),
    ('rope_encoding("NAME", "mine", None, lambda lengths: {"rope_theta": 500.0})', ["rope"], NAMED),
    ('bias_encoding("NAME", "mine", zero_bias)', ["alibi", "rope"], NAMED),
    ('PositionEncoding(name="NAME", summary="mine")', ["rope", "learned", "sinusoidal"], THE_NAME),
    (TYPED, TRANSFORMERS_ROPE_TYPES, OWN),
    ('rope_encoding("NAME", "mine", freqs)', ["default"], OWN),
    (TYPED, ["resonance", "resonance_yarn", "resonance_linear"], TAKEN),
    ('bias_encoding("NAME", "mine", leaked_bias)', ["global"], "returns a tensor that needs grad"),
    ('bias_encoding("NAME", "mine", module=Fixed)', ["empty"], "module owns no trainable param"),
    ('bias_encoding("NAME", "mine", masked_bias)', ["masked"], "-inf at every key query 0 reads"),
    ('bias_encoding("NAME", "mine", nan_bias)', ["nan"], "its bias is NaN or +inf at a key"),
    ('bias_encoding("NAME", "mine", module=no_module)', ["none"], "factory returned a NoneType"),
    ('bias_encoding("NAME", "mine", zero_bias, check=fails)', ["checked"], "check failed (Runtim"),
    ('PositionEncoding(name=NAME, summary="mine")', ["5", '""', '"a b|c"'], "name is 1 to 200"),
    ('PositionEncoding(name="NAME", summary=None)', ["nosummary"], "record it: summary: Input"),
    ('PositionEncoding(name="NAME", summary="s", confound=5)', ["confound"], "record it: confound"),
]
CASES = {  # the plugin's X -> a fragment of the error line
    x.replace("NAME", name): fragment.replace("NAME", name)
    for x, names, fragment in CLASHES
    for name in sorted(names)
}


def intact() -> dict[str, object]:
    """What no plugin may change: rope functions, ALiBi's attention, the resolved RoPE, ALiBi."""
    return {
        "rope functions": dict(ROPE_INIT_FUNCTIONS),
        "alibi attention": AttentionInterface().get("posgen_bias_alibi"),
        "rope": resolve(PERequest(name="rope"), LENGTHS).record(),
        "alibi": resolve(PERequest(name="alibi"), LENGTHS).record(),
    }


@pytest.fixture
def plugins(plugin_site, tmp_path):
    """``write(definition) -> module``: a plugin module of HEADER and ``X = definition``."""
    numbers = itertools.count()

    def write(definition: str) -> str:
        name = f"clash_{next(numbers)}_{abs(hash(str(tmp_path))) % 10**6}"
        plugin_site(f"{name}.py", f"{HEADER}\nX = {definition}\n")
        return name

    return write


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_plugin_clashing_or_unable_to_learn_is_one_error_line_and_changes_nothing(
    assert_clean_error, train_tiny, recorded, plugins, tmp_path, case
):
    before = intact()
    module = plugins(case)
    result = train_tiny(f"{module}:X", tmp_path / "run")
    with recorded("hostile", f"class 2: {case}"):
        line = assert_clean_error(result, 2, CASES[case])
        assert line.startswith(f"error: --pe {module}:X")
        assert not (tmp_path / "run").exists()
        assert intact() == before


GRID_CASES = {  # pes = [the plugin, rope]
    "plugin named rope": 'rope_encoding("rope", "mine", freqs)',
    "plugin of rope type default": 'rope_encoding("mine", "m", freqs, rope_type="default")',
    "plugin named linear": 'rope_encoding("linear", "mine", freqs)',
    "bias plugin named alibi": 'bias_encoding("alibi", "mine", zero_bias)',
}


@pytest.fixture
def sweep(cli, tiny_training_dataset, tmp_path):
    """``sweep(pes)``: ``posgen sweep --out tmp_path/sweep`` of a grid of ``pes`` on cot, seed 1."""

    def run(pes: list[str]):
        body = {"datasets": [str(tiny_training_dataset)], "configs": ["cot"], "pes": pes}
        (tmp_path / "grid.json").write_text(json.dumps({**body, "seeds": [1]}))
        return cli("sweep", tmp_path / "grid.json", "--out", tmp_path / "sweep")

    return run


@pytest.mark.parametrize("case", sorted(GRID_CASES))
def test_a_grid_with_a_clashing_plugin_is_refused_when_it_is_read(
    assert_clean_error, sweep, recorded, plugins, tmp_path, case
):
    before = intact()
    result = sweep([f"{plugins(GRID_CASES[case])}:X", "rope"])
    with recorded("hostile", f"class 2: pes = [{case}, rope]"):
        assert_clean_error(result, 2, "pes.0", "built-in" if "named" in case else "own")
        assert not (tmp_path / "sweep").exists()
        assert intact() == before


def test_a_grid_of_two_plugins_with_one_name_is_refused_when_it_is_read(
    assert_clean_error, sweep, recorded, plugins, tmp_path
):
    first = plugins('rope_encoding("twin", "mine", freqs, rope_type="twin_a")')
    second = plugins('rope_encoding("twin", "mine", freqs, rope_type="twin_b")')
    result = sweep(["rope", f"{first}:X", f"{second}:X"])
    with recorded("hostile", "pes = [rope, two plugins named twin]"):
        assert_clean_error(result, 2, "pes.2", "pes.1", "could not be told apart")
        assert not (tmp_path / "sweep").exists()


def test_rope_and_a_plugin_of_its_own_name_train_with_their_own_frequencies_after_every_clash(
    train_tiny, recorded, plugins, tmp_path
):
    for number, definition in enumerate(CASES):
        module = plugins(definition)
        train_tiny(f"{module}:X", tmp_path / f"r{number}")
    module = plugins('rope_encoding("mine500", "mine", freqs)')
    frequencies = {}
    for pe in ("rope", f"{module}:X"):
        out = tmp_path / pe.replace(":", "-")
        result = train_tiny(pe, out, "--save-model")
        assert result.exit_code == 0, result.output
        frequencies[pe] = load_model(out / "model")[0].model.rotary_emb.inv_freq
    record = json.loads((tmp_path / "rope" / "results.json").read_text())
    with recorded("hostile", "class 2: rope's frequencies after every refused plugin"):
        for pe, base in (("rope", 10_000.0), (f"{module}:X", 500.0)):
            want = base ** (-torch.arange(0, 8, 2, dtype=torch.float) / 8)
            torch.testing.assert_close(frequencies[pe], want)
        assert record["position_encoding"]["source"] == "built-in"
        # the same plugin module imported again (a new process, a reload) registers again
        sys.modules.pop(module)
        assert ENCODINGS[f"{module}:X"].name == "mine500"


def test_a_second_plugin_taking_the_first_ones_rope_type_is_refused(recorded, plugins):
    first = plugins('rope_encoding("shared_a", "mine", freqs, rope_type="shared_type")')
    second = plugins('rope_encoding("shared_b", "mine", freqs, rope_type="shared_type")')
    assert ENCODINGS[f"{first}:X"].name == "shared_a"
    taken = f"rope type 'shared_type' is taken by {first}.freqs"
    with (
        recorded("hostile", "class 2: two plugins, one rope type"),
        pytest.raises(PEError, match=taken),
    ):
        ENCODINGS[f"{second}:X"]
    ROPE_INIT_FUNCTIONS.pop("shared_type", None)  # the test's own registration


# case -> (the table, the entry replaced behind posgen's back, the encoding trained, fragment)
REPLACED = {
    "transformers' linear frequencies": (ROPE_INIT_FUNCTIONS, "linear", "linear", "'linear'"),
    "transformers' yarn frequencies": (ROPE_INIT_FUNCTIONS, "yarn", "yarn", "'yarn'"),
    "the Resonance frequencies": (ROPE_INIT_FUNCTIONS, "resonance", "resonance", "'resonance'"),
    "Llama's default rope type": (ROPE_INIT_FUNCTIONS, "default", "rope", "'default'"),
    "alibi's attention": (AttentionInterface._global_mapping, "posgen_bias_alibi", "alibi", ""),
}


@pytest.mark.parametrize("case", sorted(REPLACED))
def test_a_frequency_table_or_attention_replaced_behind_posgens_back_is_refused(
    assert_clean_error, train_tiny, recorded, monkeypatch, tmp_path, case
):
    table, key, pe, fragment = REPLACED[case]

    def fake(*args, **kwargs):  # pragma: no cover - never called
        raise AssertionError("trained with a replaced function")

    monkeypatch.setitem(table, key, fake)
    result = train_tiny(pe, tmp_path / "run")
    with recorded("hostile", f"class 2: {case} replaced"):
        assert_clean_error(result, 2, f"--pe {pe}", fragment, "was replaced")
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("rope", "is the name of a built-in"),
        ("yarn+logn", "names a built-in with a modifier"),
        ("twice", "is also the name of entry point twice"),  # a second distribution's too
    ],
)
def test_an_entry_point_named_like_a_built_in_is_one_error_line_not_dropped_or_used(
    assert_clean_error, cli, recorded, plugins, plugin_site, name, fragment
):
    before = intact()
    module = plugins('rope_encoding("mine_ep", "mine", freqs, rope_type="mine_ep")')
    dist_info(plugin_site, "clashing", "0.1", {"posgen.position_encodings": {name: f"{module}:X"}})
    dist_info(plugin_site, "second", "0.1", {"posgen.position_encodings": {"twice": f"{module}:X"}})
    with recorded("hostile", f"an entry point named {name}"):
        assert_clean_error(cli("train", "--list-pe"), 2, f"entry point {name}", fragment)
        assert intact() == before


@pytest.mark.parametrize(("name", "encoding"), [("renamed", "mine_r1"), ("a b", "mine_r2")])
def test_an_entry_point_named_unlike_its_encoding_is_one_error_line_not_listed_or_used(
    assert_clean_error, cli, recorded, plugins, plugin_site, name, encoding
):
    module = plugins(f'rope_encoding("{encoding}", "mine", freqs)')
    dist_info(plugin_site, "renaming", "0.1", {"posgen.position_encodings": {name: f"{module}:X"}})
    with recorded("hostile", f"an entry point {name} of the encoding {encoding}"):
        fragment = f"entry point {name} ({module}:X) holds the encoding '{encoding}'"
        assert_clean_error(cli("train", "--list-pe"), 2, fragment)


@pytest.mark.parametrize(
    ("x", "listed_says", "sweep_says"),  # the plugin's X; what --list-pe and a sweep of all say
    [
        ('rope_encoding("mine_bad", "mine", None, lambda lengths: 1 / 0)',
         "its defaults failed (ZeroDivisionError", "its defaults failed"),
        ('PositionEncoding(name="mine_bad", summary="mine", rope=lambda p, l, e: 1 / 0)',
         "its rope parameters failed (ZeroDivisionError", "its check failed (ZeroDivisionError"),
    ],
    ids=["defaults", "rope"],
)  # fmt: skip
def test_an_entry_point_whose_defaults_or_rope_raise_is_one_line_naming_it_in_list_pe_and_all(
    assert_clean_error, cli, sweep, recorded, plugins, plugin_site, tmp_path, x, listed_says,
    sweep_says
):  # fmt: skip
    module = plugins(x)
    dist_info(
        plugin_site, "broken", "0.1", {"posgen.position_encodings": {"mine_bad": f"{module}:X"}}
    )
    named = f"--pe mine_bad (entry point {module}:X (broken))"
    what = listed_says.split(" failed")[0].removeprefix("its ")
    with recorded("hostile", f"an entry point whose {what} raise"):
        listed = cli("train", "--list-pe")
        assert_clean_error(listed, 2, named, listed_says)
        assert_clean_error(sweep("all"), 2, "pes.", named, sweep_says)
        assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    ("defaults", "fragment"),
    [
        ('{"rope_theta": 1.0}', "rope_theta=1.0: must be greater than 1"),
        ('{"rope_theta": 500.0, "factor": -2.0}', "factor=-2.0"),
        ("[1, 2]", "its defaults are a list"),
        ('{"x": torch.tensor(1.0)}', "--pe-param x=<a Tensor>: use a finite number"),
        ('{"x": {1, 2}}', "--pe-param x=<a set>: use a finite number"),
        ('{"x": 10**5000}', "--pe-param x=<a int>: use a finite number (integers up to 2^53)"),
        ('{"x": 2**63}', "--pe-param x=9223372036854775808: use a finite number"),
        ("{1: 2.0}", "--pe-param 1=2.0: a parameter's name is text, not 1"),
        ('{"x": [1.0, float("nan")]}', "--pe-param x=[1.0, NaN]: use a finite number"),
    ],
)
def test_a_plugins_defaults_keep_the_ranges_a_pe_param_keeps(
    assert_clean_error, train_tiny, recorded, plugins, tmp_path, defaults, fragment
):
    module = plugins(f'rope_encoding("lowbase", "mine", None, lambda lengths: {defaults})')
    result = train_tiny(f"{module}:X", tmp_path / "run")
    with recorded("hostile", f"a plugin's defaults {defaults}"):
        assert_clean_error(result, 2, fragment)
        assert not (tmp_path / "run").exists()


# --- logits NaN at a position are never read as a prediction ------------------------------

DRIFTS = """
import torch
from posgen.encodings.builtin import bias_encoding


class Drifts(torch.nn.Module):  # a learned slope; NaN from position 100 on once it has moved
    def __init__(self, parameters, lengths):
        super().__init__()
        self.slope, self.heads = torch.nn.Parameter(torch.tensor(0.5)), lengths.heads

    def forward(self, position_ids):
        p = position_ids.float()
        bias = (-self.slope * (p[:, :, None] - p[:, None, :]).abs())[:, None]
        far = (position_ids >= 100)[:, None, :, None] & bool(self.slope.detach() != 0.5)
        return bias.expand(-1, self.heads, -1, -1).masked_fill(far, float("nan"))


X = bias_encoding("drifts", "NaN at far positions once trained", module=Drifts)
"""


def drifting_bias(plugin_site, monkeypatch) -> str:
    """The plugin DRIFTS: caught before only by chance, by the attention diagnostics' record."""
    plugin_site("drifts_nan.py", DRIFTS)
    return "drifts_nan:X"


def nan_past_the_attention(plugin_site, monkeypatch) -> str:
    """rope, its evaluation logits NaN from position 100 on (an overflow past the attention,
    which the attention diagnostics never see); before, every such position predicted 0."""
    original = LlamaForCausalLM.forward

    def forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if kwargs["input_ids"].shape[0] > 1 and not self.training:  # not the one-row check
            out.logits[:, 100:] = float("nan")
        return out

    monkeypatch.setattr(LlamaForCausalLM, "forward", forward)
    return "rope"


NAN_LOGITS = {  # case -> (plugin_site, monkeypatch) -> the --pe trained
    "a plugin's bias NaN at far positions once trained": drifting_bias,
    "rope's logits NaN past the attention": nan_past_the_attention,
}


@pytest.mark.parametrize("case", list(NAN_LOGITS))
def test_logits_nan_at_a_test_position_fail_the_run_naming_it_never_scored_as_token_0(
    assert_clean_error, train_tiny, recorded, plugin_site, monkeypatch, tmp_path, case
):
    pe = NAN_LOGITS[case](plugin_site, monkeypatch)
    result = train_tiny(pe, tmp_path / "run", "--max-steps=4", "--batch-size=16")
    with recorded("hostile", f"NaN logits: {case}"):
        assert_clean_error(result, 1, "logits are not finite (NaN) at test row 0, t = 100")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # nor a resume folder


# --- a checkpoint resumes only with the plugin code it was trained with --------------------


@pytest.mark.parametrize(
    ("named_by", "name"),
    [("module:NAME", "edited"), ("entry point", "ep"), ("zip archive", "zipped")],
)
def test_a_plugin_edited_between_a_kill_and_the_rerun_is_refused_and_its_checkpoint_kept(
    assert_clean_error,
    train_tiny,
    recorded,
    plugins,
    plugin_site,
    monkeypatch,
    tmp_path,
    named_by,
    name,
):
    """Before, the rerun resumed with the edited code: the run mixed two encodings (exit 0); a
    zip-imported module's file could not be read, so its edit was not seen (exit 0)."""
    module = plugins(f'rope_encoding("{name}", "mine", freqs)')  # a rope type of its own
    pe, source = f"{module}:X", tmp_path / "site" / f"{module}.py"
    original = source.read_text()
    write = source.write_text
    if named_by == "zip archive":  # imported from a zip on the path: __file__ is in it
        archive = tmp_path / "plugins.zip"
        source.unlink()
        source = archive / f"{module}.py"

        def write(text: str) -> None:
            with zipfile.ZipFile(archive, "w") as zipped:
                zipped.writestr(source.name, text)
            zipimport._zip_directory_cache.pop(str(archive), None)  # as a new process reads it
            sys.path_importer_cache.pop(str(archive), None)

        write(original)
        monkeypatch.syspath_prepend(str(archive))
    if named_by == "entry point":
        dist_info(plugin_site, name, "0.1", {"posgen.position_encodings": {name: pe}})
        pe = name
    out, work = tmp_path / "run", tmp_path / ".run.posgen-resume"
    monkeypatch.setenv(posgen.signals.HOOK_ENV, "step:1:SIGTERM")
    assert train_tiny(pe, out, "--batch-size=16").exit_code == 143
    monkeypatch.delenv(posgen.signals.HOOK_ENV)
    write(original.replace("500.0", "50.0"))  # another base: other frequencies
    sys.modules.pop(module)  # as a new process imports it
    before = (work / "checkpoint.pt").read_bytes()
    result = train_tiny(pe, out, "--batch-size=16")
    with recorded("hostile", f"a plugin ({named_by}) edited before its run resumed"):
        line = assert_clean_error(result, 2, f"was trained with other code of the plugin {name} (")
        assert f"{source} changed since; it was not resumed and is kept" in line
        assert f"rm -r {work}, then rerun the same command" in line
        assert (work / "checkpoint.pt").read_bytes() == before
        assert not out.exists()
    write(original)
    sys.modules.pop(module)
    assert train_tiny(pe, out, "--batch-size=16").exit_code == 0  # its own code: resumed
