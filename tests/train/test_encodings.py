"""Every ``--pe``: checked against independent computations, trained, saved and reloaded."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402

from posgen.encodings import (  # noqa: E402
    ENCODINGS,
    Lengths,
    PEError,
    PERequest,
    PositionEncoding,
    Registry,
    resolve,
)
from posgen.encodings.builtin import (  # noqa: E402
    ROPE_TYPES,
    RandomPositions,
    alibi_bias,
    alibi_slopes,
)
from posgen.encodings.model import ATTRIBUTE, llama_for, load_model  # noqa: E402
from posgen.scoring.prediction_files import read_predictions  # noqa: E402
from posgen.train.config import preset  # noqa: E402
from posgen.train.job import MODEL, train_runs  # noqa: E402
from posgen.train.run_record import SCHEMA_FILE, schema_text  # noqa: E402
from posgen.train.trainer import (  # noqa: E402
    RunData,
    build_model,
    evaluation_positions,
    lm_tensors,
    position_inputs,
    predict,
)

L, L_TEST, HEADS, HEAD_DIM = 64, 256, 2, 16
LENGTHS = Lengths(train=L, test=L_TEST, head_dim=HEAD_DIM, heads=HEADS)
TINY = {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32, "batch_size": 32}


def tiny(pe: str, evaluation: bool = False, **request) -> LlamaForCausalLM:
    torch.manual_seed(0)
    resolved = resolve(PERequest(name=pe, **request), LENGTHS)
    model = llama_for(resolved, 18, 17, HEADS * HEAD_DIM, HEADS, 1, 32, evaluation=evaluation)
    return model.eval()


def logits(model, ids, positions=None):
    with torch.no_grad():
        return model(input_ids=ids, **position_inputs(positions, torch.device("cpu"))).logits


IDS = torch.randint(0, 17, (2, 12), generator=torch.Generator().manual_seed(1))
SHIFTED = torch.arange(40, 52)[None].expand(2, -1)
GAPPED = torch.tensor([[0, 3, 4, 9, 20, 21, 30, 41, 42, 50, 60, 61]] * 2)


# --- the registry: one way in for built-ins and plugins ------------------------------------


def test_built_ins_are_registered_in_table_order_with_a_resonance_twin_per_rope_row():
    names = list(ENCODINGS)
    assert names[:4] == ["rope", "resonance", "yarn", "resonance_yarn"]
    assert len(names) == 24 and names[14:17] == ["alibi", "learned", "sinusoidal"]
    assert names[17:] == ["t5", "fire", "fire-random", "kerple", "xpos", "cope", "logn"]
    assert "resonance_longrope" not in names  # transformers switches only the type "longrope"
    for row in ROPE_TYPES:
        plain = ENCODINGS[row.name]
        assert plain.rope(plain.defaults(LENGTHS), LENGTHS, True)["rope_type"] == row.rope_type
        if not row.resonance:
            continue
        twin = ENCODINGS[row.twin]
        parameters = twin.defaults(LENGTHS)
        assert parameters == plain.defaults(LENGTHS) and twin.optional == plain.optional
        assert twin.max_positions is plain.max_positions
        assert twin.rope(parameters, LENGTHS, True)["rope_type"] == row.twin
        assert twin.rope(parameters, LENGTHS, False)["rope_type"] in ("resonance", row.twin)


def test_register_takes_encodings_and_lazy_references_and_refuses_a_name_twice():
    registry = Registry(builtin="json")  # a module that registers nothing
    registry.register(ENCODINGS["rope"])
    registry.register("posgen.encodings.builtin:nothing", name="lazy")
    assert list(registry) == ["rope", "lazy"]
    with pytest.raises(PEError, match="'rope' is already registered"):
        registry.register(PositionEncoding(name="rope", summary="again"))
    with pytest.raises(PEError, match=r"lazy: cannot import \(AttributeError"):
        registry["lazy"]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (PERequest(name="bogus"), "unknown position encoding 'bogus'; use one of rope, resonance,"),
        (
            PERequest(name="rope", parameters={"fator": 2}),
            "--pe-param fator: rope has no such parameter (parameters: rope_theta)",
        ),
        (
            # built unchecked: a request refuses it itself (tests/train/test_pe_parameters.py)
            PERequest.model_construct(name="linear", parameters={"scale_at": "never"}),
            "--pe linear: scale_at 'never': use one of evaluation, train",
        ),
        (
            PERequest(name="rope", randomized=100),
            "--randomized-positions 100: the range must hold the test rows' 257 positions (L'+1)",
        ),
        (PERequest(name="json:dumps"), "--pe json:dumps is a function, not a posgen Position"),
        (PERequest(name="no_such_mod:X"), "--pe no_such_mod:X: cannot import (ModuleNotFound"),
    ],
    ids=["unknown", "parameter", "scale_at", "range", "not-an-encoding", "no-module"],
)
def test_a_bad_request_is_one_pe_error_line(request_, message):
    with pytest.raises(PEError) as error:
        resolve(request_, LENGTHS)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_the_registry_and_the_table_order_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import posgen.card, posgen.encodings\n"
        "print(sorted(['alibi', 'yarn', 'rope'], key=posgen.encodings.pe_order))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "['rope', 'yarn', 'alibi']", done.stderr


# --- NoPE and partial rope: what the Llama block does, tested, not assumed ----------------


@pytest.mark.parametrize("positions", [SHIFTED, GAPPED], ids=["shifted", "gapped"])
def test_nope_logits_do_not_depend_on_the_positions(positions):
    model = tiny("nope")
    torch.testing.assert_close(logits(model, IDS, positions), logits(model, IDS), rtol=0, atol=0)


def test_rope_logits_do_depend_on_the_distances_between_positions():
    model = tiny("rope")
    assert not torch.allclose(logits(model, IDS, GAPPED), logits(model, IDS))


def test_partial_rope_rotates_the_first_pairs_only():
    inv_freq = tiny("proportional").model.rotary_emb.inv_freq
    expected = 10_000.0 ** (-np.arange(0, HEAD_DIM, 2) / HEAD_DIM)
    expected[HEAD_DIM // 4 :] = 0.0
    np.testing.assert_allclose(inv_freq.double().numpy(), expected, rtol=1e-6)


# --- ALiBi ---------------------------------------------------------------------------------


def published_slopes(heads: int) -> list[float]:
    """Press et al.: 2^(-8h/n) for n = the power of two <= heads, then the odd-indexed slopes
    of 2n for the remaining heads (their get_slopes), written out independently."""
    n = 1
    while n * 2 <= heads:
        n *= 2
    slopes = [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]
    extra = [2.0 ** (-8.0 * h / (2 * n)) for h in range(1, 2 * n + 1, 2)]
    return slopes + extra[: heads - n]


@pytest.mark.parametrize("heads", [1, 2, 4, 6, 8, 12])
def test_alibi_slopes_are_the_published_ones(heads):
    np.testing.assert_allclose(alibi_slopes(heads).numpy(), published_slopes(heads), rtol=1e-6)


def test_alibi_bias_is_minus_slope_times_distance_of_the_position_ids():
    positions = torch.tensor([[0, 2, 7]])
    bias = alibi_bias(positions, heads=4)
    for h, slope in enumerate(published_slopes(4)):
        for i, j in [(1, 0), (2, 0), (2, 1), (0, 0)]:
            want = -slope * (positions[0, i] - positions[0, j]).item()
            assert bias[0, h, i, j].item() == pytest.approx(want)


def test_alibi_attention_in_the_llama_block_adds_exactly_that_bias():
    model = tiny("alibi")
    attention = model.model.layers[0].self_attn
    torch.nn.init.zeros_(attention.q_proj.weight)  # logits = bias only
    hidden = torch.randn(1, 5, HEADS * HEAD_DIM, generator=torch.Generator().manual_seed(2))
    positions = torch.tensor([[0, 1, 3, 4, 8]])
    cos_sin = model.model.rotary_emb(hidden, positions)
    with torch.no_grad():
        out, _ = attention(hidden, position_embeddings=cos_sin, position_ids=positions)
        values = attention.v_proj(hidden).view(1, 5, HEADS, HEAD_DIM).transpose(1, 2)
        heads = []
        for h, slope in enumerate(published_slopes(HEADS)):
            p = positions[0].double()
            scores = -slope * (p[:, None] - p[None, :])
            scores = scores.masked_fill(torch.ones(5, 5).triu(1).bool(), -math.inf)
            heads.append(torch.softmax(scores, -1).float() @ values[0, h])
        want = attention.o_proj(torch.cat(heads, dim=-1))[None]
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


# --- rope types: transformers' own frequencies, Resonance rounded --------------------------


ROPE_PES = [name for name, encoding in ENCODINGS.items() if encoding.attention is None]
ROPE_PES = [name for name in ROPE_PES if ENCODINGS[name].input_positions is None]


def transformers_own(config) -> tuple[torch.Tensor, float]:
    """What transformers computes for the config's rope type, through its own functions."""
    rope_type = config.rope_parameters["rope_type"]
    if rope_type == "default":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        return LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    if rope_type == "resonance" or rope_type.startswith("resonance_"):
        base = "default" if rope_type == "resonance" else rope_type.removeprefix("resonance_")
        inner = dict(config.rope_parameters, rope_type=base)
        other = LlamaConfig(**{**config.to_dict(), "rope_parameters": inner})
        inv_freq, scaling = transformers_own(other)
        wavelengths = torch.round(2 * math.pi / inv_freq.double())
        return (2 * math.pi / wavelengths).float(), scaling
    return ROPE_INIT_FUNCTIONS[rope_type](config)


@pytest.mark.parametrize("evaluation", [False, True], ids=["train", "evaluation"])
@pytest.mark.parametrize("pe", ROPE_PES)
def test_every_rope_type_has_the_frequencies_transformers_computes_itself(pe, evaluation):
    rotary = tiny(pe, evaluation=evaluation).model.rotary_emb
    want, scaling = transformers_own(rotary.config)
    torch.testing.assert_close(rotary.inv_freq, want.float(), rtol=1e-6, atol=0)
    assert rotary.attention_scaling == pytest.approx(scaling)


def test_every_transformers_rope_type_is_in_the_vocabulary():
    shipped = {"default"} | {
        name
        for name, function in ROPE_INIT_FUNCTIONS.items()
        if function.__module__ == "transformers.modeling_rope_utils"
    }
    used = {
        ENCODINGS[pe].rope(ENCODINGS[pe].defaults(LENGTHS), LENGTHS, True)["rope_type"]
        for pe in ROPE_PES
    }
    assert shipped <= used


@pytest.mark.parametrize("rope_type", sorted(row.twin for row in ROPE_TYPES if row.resonance))
def test_resonance_wavelengths_are_integers(rope_type):
    rotary = tiny(rope_type, evaluation=True).model.rotary_emb
    inv_freq = rotary.inv_freq.double()
    wavelengths = 2 * math.pi / inv_freq[inv_freq > 0]
    np.testing.assert_allclose(wavelengths.numpy(), np.round(wavelengths.numpy()), atol=1e-3)


def test_dynamic_ntk_scales_only_past_l_plus_1_positions():
    model = tiny("dynamic")
    rotary = model.model.rotary_emb
    short = rotary(torch.zeros(1), torch.arange(L + 1)[None])[0]
    start = rotary.inv_freq.clone()
    rotary(torch.zeros(1), torch.arange(L_TEST + 1)[None])
    assert torch.equal(
        short[0, : L + 1],
        tiny("rope").model.rotary_emb(torch.zeros(1), torch.arange(L + 1)[None])[0][0],
    )
    assert bool((rotary.inv_freq[1:] < start[1:]).all())


# --- absolute and randomized positions -----------------------------------------------------


@pytest.fixture
def data(tiny_training_dataset) -> Path:
    return tiny_training_dataset


def test_learned_positions_past_l_are_untouched_by_training(data, tmp_path):
    config = preset("cpu", **TINY, epochs=1, max_steps=3, lr=1e-2)
    train_runs(data, "recursive", ["learned"], config, 3, [tmp_path / "run"], "cpu", save=True)
    trained, _ = load_model(tmp_path / "run" / MODEL)
    fresh = build_model(config, RunData.load(data, "recursive").train, "learned", 3)
    before = getattr(fresh.model, ATTRIBUTE).weight
    after = getattr(trained.model, ATTRIBUTE).weight
    assert before.shape[0] == L_TEST + 1
    assert torch.equal(after[L + 1 :], before[L + 1 :])
    assert not torch.equal(after[: L + 1], before[: L + 1])


def test_sinusoidal_table_is_vaswanis():
    table = tiny("sinusoidal").model.position_embedding.table
    p, d = 7, HEADS * HEAD_DIM
    want = [
        math.sin(p / 10_000 ** (i / d)) if i % 2 == 0 else math.cos(p / 10_000 ** ((i - 1) / d))
        for i in range(d)
    ]
    np.testing.assert_allclose(table[p].numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("step", range(5))
def test_randomized_training_positions_are_sorted_distinct_and_inside_their_range(step):
    ids = RandomPositions(seed=11, range_size=L_TEST + 1).training(step, rows=8, length=L + 1)
    assert bool((ids[:, 1:] > ids[:, :-1]).all())
    assert int(ids.min()) >= 0
    assert int(ids.max()) <= L_TEST


def test_randomized_evaluation_positions_do_not_depend_on_the_batch():
    positions = RandomPositions(seed=11, range_size=300)
    whole = positions.evaluation("test", 0, 6, 257)
    assert torch.equal(whole[4:], positions.evaluation("test", 4, 2, 257))


def test_randomized_positions_reach_the_model_in_training(data, tmp_path, monkeypatch):
    seen = []
    real = position_inputs

    def spy(position_ids, device):
        seen.append(position_ids)
        return real(position_ids, device)

    monkeypatch.setattr("posgen.train.trainer.position_inputs", spy)
    config = preset("cpu", **TINY, epochs=1, max_steps=2)
    request = PERequest(name="rope", randomized=300)
    train_runs(data, "recursive", [request], config, 5, [tmp_path / "run"], "cpu")
    drawn = [ids for ids in seen if ids is not None]
    assert len(drawn) == len(seen)
    assert max(int(ids.max()) for ids in drawn) > L


# --- every PE: trains a few steps, saves, reloads to the same predictions ------------------


@pytest.mark.parametrize(
    "request_",
    [PERequest(name=name) for name in ENCODINGS]
    + [PERequest(name="alibi", randomized="auto"), PERequest(name="yarn+logn")],
    ids=[*ENCODINGS, "alibi+randomized", "yarn+logn"],
)
def test_every_pe_trains_saves_and_reloads_to_the_same_predictions(data, tmp_path, request_):
    config = preset("cpu", **TINY, epochs=1, max_steps=2)
    out = tmp_path / "run"
    summary = train_runs(data, "recursive", [request_], config, 1, [out], "cpu", save=True)[0]
    assert summary["id_accuracy"] is not None
    model, pe = load_model(out / MODEL)
    test = RunData.load(data, "recursive").test
    positions = evaluation_positions(pe, 1, "test")
    again = predict(model, lm_tensors(test)["input_ids"], 3, torch.device("cpu"), 17, positions)
    saved = read_predictions(out / "predictions.parquet")
    np.testing.assert_array_equal(saved.ids, test.ids)
    np.testing.assert_array_equal(again, saved.tokens)
    record = json.loads((out / "results.json").read_text())
    assert record["position_encoding"]["label"] == pe.label


# --- results.json --------------------------------------------------------------------------


def test_results_json_schema_file_matches_the_model():
    assert SCHEMA_FILE.read_text() == schema_text()


def test_results_json_holds_checksums_parameters_and_accuracies(data, tmp_path):
    config = preset("cpu", **TINY, epochs=1, max_steps=1)
    request = PERequest(name="linear", parameters={"factor": 2})
    train_runs(data, "recursive", [request], config, 2, [tmp_path / "run"], "cpu")
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    manifest = json.loads((data / "posgen.json").read_text())
    files = manifest["configs"]["recursive"]["splits"]
    want = {f["path"]: f["sha256"] for split in files.values() for f in split["files"]}
    assert record["data"]["files"] == want
    assert record["position_encoding"]["parameters"] == {
        "factor": 2,
        "rope_theta": 10_000.0,
        "scale_at": "evaluation",
    }
    assert record["position_encoding"]["label"] == "linear(factor=2)"
    assert len(record["scores"]["curve"]["accuracy"]) == L_TEST - 4
    assert record["seed"] == 2
    assert record["preset"] == "cpu"


def test_list_pe_names_every_built_in_with_train_or_evaluation_time(cli):
    result = cli("train", "--list-pe")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(ENCODINGS)
    assert all(line.split()[1] in ("train-time", "evaluation-time") for line in lines)
