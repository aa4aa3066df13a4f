"""Every ``--pe``: the registry, each formula against an independent computation in the Llama
layer, causality (plugins too), and each encoding trained, saved and reloaded alike."""
# ruff: noqa: E402

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from torch.overrides import TorchFunctionMode
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.t5.modeling_t5 import T5Attention

from posgen import encodings
from posgen.encodings import ENCODINGS, Lengths, PEError, PERequest, resolve
from posgen.encodings.builtin import ROPE_TYPES, RandomPositions, alibi_slopes
from posgen.encodings.model import ATTRIBUTE, MODULE, llama_for, load_model, use_frequencies
from posgen.encodings.relative import CoPE, t5_buckets
from posgen.scoring.prediction_files import read_predictions
from posgen.train import MODEL
from posgen.train.config import preset
from posgen.train.job import train_runs
from posgen.train.run_record import SCHEMA_FILE, schema_text
from posgen.train.trainer import RunData, build_model, lm_tensors, position_inputs, predict

L, L_TEST, HEADS, HEAD_DIM = 64, 256, 2, 8
LENGTHS = Lengths(train=L, test=L_TEST, head_dim=HEAD_DIM, heads=HEADS)
TINY = {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32, "batch_size": 32}
POSITIONS = [0, 1, 3, 4, 9, 20, 70, 300]  # gapped, past L and past the T5 max distance
SCALE = HEAD_DIM**-0.5
IDS = torch.randint(0, 17, (2, 12), generator=torch.Generator().manual_seed(1))
SHIFTED = torch.arange(40, 52)[None].expand(2, -1)
GAPPED = torch.tensor([[0, 3, 4, 9, 20, 21, 30, 41, 42, 50, 60, 61]] * 2)
ROTARY = [n for n, e in ENCODINGS.items() if e.attention is None and e.input_positions is None]


def tiny(pe: str, **parameters):
    """A two-layer model of ``pe``, its learned encoding weights moved off their start."""
    torch.manual_seed(0)
    resolved = resolve(PERequest(name=pe, parameters=parameters), LENGTHS)
    model = llama_for(resolved, 18, 17, HEADS * HEAD_DIM, HEADS, 2, 32)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(3)
        for name, parameter in model.named_parameters():
            if MODULE in name:
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def logits(model, ids, positions=None):
    with torch.no_grad():
        return model(input_ids=ids, **position_inputs(positions, torch.device("cpu"))).logits


# --- the registry: one way in for built-ins and plugins ------------------------------------
def test_built_ins_are_in_table_order_with_a_row_and_twin_per_transformers_rope_type():
    assert set(ROTARY) <= {label.partition("(")[0] for label in PLAIN_ROPES}  # a formula each
    shipped = {"default"} | {
        name
        for name, function in ROPE_INIT_FUNCTIONS.items()
        if function.__module__ == "transformers.modeling_rope_utils"
    }
    assert shipped <= {row.rope_type for row in ROPE_TYPES}  # each row checked below
    names = list(ENCODINGS)
    assert names[:4] == ["rope", "resonance", "yarn", "resonance_yarn"]
    assert len(names) == 24 and names[14:17] == ["alibi", "learned", "sinusoidal"]
    assert names[17:] == ["t5", "fire", "fire-random", "kerple", "xpos", "cope", "logn"]
    assert "resonance_longrope" not in names  # transformers switches only the type "longrope"
    for row in ROPE_TYPES:
        plain = ENCODINGS[row.name]
        assert plain.rope(plain.defaults(LENGTHS), LENGTHS, True)["rope_type"] == row.rope_type
        if row.resonance:
            twin = ENCODINGS[row.twin]
            parameters = twin.defaults(LENGTHS)
            assert parameters == plain.defaults(LENGTHS) and twin.optional == plain.optional
            assert twin.max_positions is plain.max_positions
            assert twin.rope(parameters, LENGTHS, True)["rope_type"] == row.twin
            assert twin.rope(parameters, LENGTHS, False)["rope_type"] in ("resonance", row.twin)


def test_register_refuses_a_name_twice_and_resolve_takes_a_bare_name_as_a_request():
    assert resolve("rope", LENGTHS) == resolve(PERequest(name="rope"), LENGTHS)
    registry = encodings.Registry(builtin="json")  # a module that registers nothing
    registry.register(ENCODINGS["rope"])
    assert list(registry) == ["rope"]
    with pytest.raises(PEError, match="'rope' is already registered"):
        registry.register(encodings.PositionEncoding(name="rope", summary="again"))
    named = {name: encodings.PositionEncoding(name=name, summary="x") for name in ("a b", 5)}
    for bad, said in [(None, "takes a PositionEncoding, not NoneType"),  # AttributeError
                      ("rope", "takes a PositionEncoding, not str"),
                      (named["a b"], "named 'a b': a name"),
                      (named[5], "named 5: a name")]:  # fmt: skip
        with pytest.raises(PEError, match=said):  # 5 was registered, and --list-pe then failed
            registry.register(bad)
    assert list(registry) == ["rope"]
    for name in (None, 3, b"rope"):  # AttributeError or TypeError from str methods
        with pytest.raises(PEError, match=f"named by a str, not {type(name).__name__}"):
            registry[name]


BAD_REQUESTS = [
    (PERequest(name="bogus"), "unknown position encoding 'bogus'; use one of rope, resonance,"),
    (PERequest(name="rope", parameters={"fator": 2}),
     "--pe-param fator: rope has no such parameter (parameters: rope_theta)"),
    (PERequest(name="kerple", parameters={"r1": 1}),
     "--pe-param r1: kerple has no such parameter (parameters: none)"),
    # built unchecked: a request refuses it itself (test_pe_parameters.py)
    (PERequest.model_construct(name="linear", parameters={"scale_at": "never"}),
     "--pe linear: scale_at 'never': use one of evaluation, train"),
    (PERequest(name="t5", parameters={"max_distance": 16}),
     "--pe t5: max_distance must be greater than buckets // 2 (given buckets=32, max"),
    (PERequest(name="alibi+logn"),
     "--pe alibi+logn: log-n scaling combines with rope encodings only"),
    # transformers' YaRN ignores mscale without mscale_all_dim (both above 0, no attention_factor)
    (PERequest(name="yarn", parameters={"mscale": 2}),
     "--pe yarn: mscale and mscale_all_dim act only together, both above 0, without attention_"),
    (PERequest(name="resonance_yarn", parameters={"mscale_all_dim": 1}),
     "--pe resonance_yarn: mscale and mscale_all_dim act only together"),
    (PERequest(name="yarn", parameters={"mscale": 0, "mscale_all_dim": 1}),
     "--pe yarn: mscale and mscale_all_dim act only together"),
    (PERequest(name="yarn", parameters={"mscale": 2, "mscale_all_dim": 1, "attention_factor": 1}),
     "--pe yarn: mscale and mscale_all_dim act only together"),
    (PERequest(name="rope", randomized=100),
     "--randomized-positions 100: the range must hold the test rows' 257 positions (L'+1)"),
    (PERequest(name="json:dumps"), "--pe json:dumps is a function, not a posgen Position"),
    (PERequest(name="sys:maxsize"), "--pe sys:maxsize is an int, not a posgen Position"),
    (PERequest(name="json:nothing"), "--pe json:nothing: cannot import (AttributeError"),
    (PERequest(name="no_such_mod:X"), "--pe no_such_mod:X: cannot import (ModuleNotFound"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "message"), BAD_REQUESTS, ids=[request.name for request, _ in BAD_REQUESTS]
)
def test_a_bad_request_is_one_pe_error_line(request_, message):
    with pytest.raises(PEError) as error:
        resolve(request_, LENGTHS)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("name", "hint"), [("no_such_mod:X", True), ("no_such_mod.sub:X", True), ("json.nope:X", False)]
)
def test_a_plugin_module_not_found_says_it_is_looked_for_on_pythons_path(name, hint):
    """``--pe mype:X`` beside ``mype.py`` fails under the ``posgen`` script (the working folder
    is not on its path): the line says how to put it there; a missing submodule says nothing."""
    with pytest.raises(PEError) as error:
        resolve(PERequest(name=name), LENGTHS)
    assert ("PYTHONPATH=. posgen ... for ./no_such_mod.py" in str(error.value)) is hint


def test_posgen_and_the_registry_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import posgen, posgen.card, posgen.encodings\n"
        "print(sorted(['alibi', 'yarn', 'rope'], key=posgen.encodings.pe_order),"
        " 'load_model' in posgen.__all__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "['rope', 'yarn', 'alibi'] True", done.stderr


def test_list_pe_names_every_built_in_its_time_and_who_proposed_it(cli):
    result = cli("train", "--list-pe")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.strip().splitlines()}
    assert list(lines) == list(ENCODINGS)
    assert all(line.split()[1] in ("train-time", "evaluation-time") for line in lines.values())
    authors = {"t5": "Raffel et al. 2020", "fire": "Li et al. 2023", "kerple": "Chi et al. 2022",
               "fire-random": "McLeish et al. 2024", "xpos": "Sun et al. 2023",
               "cope": "Golovneva et al. 2024", "logn": "Qwen"}  # fmt: skip
    assert all(author in lines[pe] for pe, author in authors.items())
    assert "slower" in lines["cope"]


# --- NoPE and rope types: what the Llama block does, tested, not assumed ----------------------
def test_nope_logits_do_not_depend_on_the_positions_and_rope_logits_do_on_their_gaps():
    nope, rope = tiny("nope"), tiny("rope")
    for positions in (SHIFTED, GAPPED):
        torch.testing.assert_close(logits(nope, IDS, positions), logits(nope, IDS), rtol=0, atol=0)
    assert not torch.allclose(logits(rope, IDS, GAPPED), logits(rope, IDS))


def transformers_own(config) -> tuple[torch.Tensor, float]:
    """transformers' own frequencies for the config's rope type; Resonance's rounded here."""
    rope_type = config.rope_parameters["rope_type"]
    if rope_type == "default":
        return LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    if not rope_type.startswith("resonance"):
        return ROPE_INIT_FUNCTIONS[rope_type](config)
    base = "default" if rope_type == "resonance" else rope_type.removeprefix("resonance_")
    inner = {**config.to_dict(), "rope_parameters": dict(config.rope_parameters, rope_type=base)}
    inv_freq, scaling = transformers_own(LlamaConfig(**inner))
    wavelengths = torch.round(2 * math.pi / inv_freq.double())
    return (2 * math.pi / wavelengths).float(), scaling


# --- rope scalings: cos/sin tables against the papers' formulas, written out here ------------

WIDE = Lengths(train=L, test=L_TEST, head_dim=32, heads=2)  # YaRN's ramp, llama3's smoothing
S = (L_TEST + 1) / (L + 1)  # the documented default factor s = (L'+1)/(L+1)
PAIRS = WIDE.head_dim // 2


def plain_rope(theta: float = 10_000.0) -> list[float]:
    """Su et al.: theta_i = base^(-2i/d), one per rotary pair."""
    return [theta ** (-2 * i / WIDE.head_dim) for i in range(PAIRS)]


def plain_yarn(factor: float, original: int, beta_fast: float = 2.0, beta_slow: float = 1.0):
    """YaRN (Peng et al. 2023, eqs. 17-19; the Resonance authors' floor/ceil of the ramp's
    ends): pairs with fewer than beta_slow turns over ``original`` interpolated, more than
    beta_fast extrapolated, a linear ramp between; logits times (0.1 ln s + 1)^2."""

    def pair_of(turns: float) -> float:
        return PAIRS * math.log(original / (turns * 2 * math.pi)) / math.log(10_000.0)

    low, high = max(math.floor(pair_of(beta_fast)), 0), min(math.ceil(pair_of(beta_slow)), 31)
    out = []
    for i, f in enumerate(plain_rope()):
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)  # 1: interpolated
        out.append(f / factor * ramp + f * (1 - ramp))
    return out, 0.1 * math.log(factor) + 1


def plain_llama3(factor: float, original: int, low: float = 1.0, high: float = 4.0):
    """Meta's Llama 3.1 apply_scaling: wavelengths under original/high kept, over original/low
    divided by the factor, smoothed between."""
    out = []
    for f in plain_rope():
        wavelength = 2 * math.pi / f
        smooth = min(max((original / wavelength - low) / (high - low), 0.0), 1.0)
        out.append((1 - smooth) * f / factor + smooth * f)
    return out, 1.0


def plain_dynamic(n: int, factor: float = 1.0):
    """Dynamic NTK (emozilla; YaRN paper 3.3): past L+1 positions the base grows to
    base (factor n / (L+1) - (factor - 1))^(d / (d - 2)) for a row of n positions."""
    if n <= L + 1:
        return plain_rope(), 1.0
    d = WIDE.head_dim
    return plain_rope(10_000.0 * (factor * n / (L + 1) - (factor - 1)) ** (d / (d - 2))), 1.0


def plain_longrope(n: int):
    """LongRoPE (Ding et al. 2024) with one factor per pair: 1 up to L+1 positions, s past it;
    logits always times 1 + ln s / ln(L+1) (Phi-3's sqrt on cos and sin)."""
    factor = S if n > L + 1 else 1.0
    return [f / factor for f in plain_rope()], math.sqrt(1 + math.log(S) / math.log(L + 1))


def resonance(plain):
    """Resonance RoPE (Wang et al. 2024, the authors' code): every wavelength rounded."""

    def rounded(evaluation: bool, n: int):
        frequencies, scale = plain(evaluation, n)
        return [2 * math.pi / round(2 * math.pi / f) if f else 0.0 for f in frequencies], scale

    return rounded


def at_evaluation(scaled):
    return lambda evaluation, n: scaled() if evaluation else (plain_rope(), 1.0)


UNSCALED = lambda evaluation, n: (plain_rope(), 1.0)  # noqa: E731
HALF = lambda evaluation, n: (plain_rope()[: PAIRS // 2] + [0.0] * (PAIRS // 2), 1.0)  # noqa: E731
PLAIN_ROPES = {
    "rope": UNSCALED,
    "linear": at_evaluation(lambda: ([f / S for f in plain_rope()], 1.0)),
    "linear(factor=2)": at_evaluation(lambda: ([f / 2 for f in plain_rope()], 1.0)),
    "linear(scale_at=train)": lambda evaluation, n: ([f / S for f in plain_rope()], 1.0),
    "yarn": at_evaluation(lambda: plain_yarn(S, L_TEST + 1)),
    "yarn(beta_fast=8)": at_evaluation(lambda: plain_yarn(S, L_TEST + 1, beta_fast=8.0)),
    "yarn(mscale=2,mscale_all_dim=1)": at_evaluation(  # DeepSeek-V3's ratio of two mscales
        lambda: (plain_yarn(S, L_TEST + 1)[0], (0.2 * math.log(S) + 1) / (0.1 * math.log(S) + 1))
    ),
    "dynamic": lambda evaluation, n: plain_dynamic(n),
    "dynamic(factor=2)": lambda evaluation, n: plain_dynamic(n, 2.0),
    "longrope": lambda evaluation, n: plain_longrope(n),
    "llama3": at_evaluation(lambda: plain_llama3(S, L + 1)),
    "llama3(scale_at=train)": lambda evaluation, n: plain_llama3(S, L + 1),
    "proportional": HALF,
    "nope": lambda evaluation, n: ([0.0] * PAIRS, 1.0),
    "xpos": UNSCALED,  # its decay is in the attention (above)
    "logn": UNSCALED,  # its scale is in the attention (above)
}
PLAIN_ROPES.update(
    {
        "resonance" if name == "rope" else f"resonance_{name}": resonance(PLAIN_ROPES[name])
        for name in ("rope", "linear", "yarn", "dynamic", "llama3", "proportional")
    }
)


def request_of(label: str) -> PERequest:
    name, _, rest = label.partition("(")
    pairs = [item.split("=") for item in rest.rstrip(")").split(",") if item]
    return PERequest(
        name=name, parameters={k: v if v.isalpha() else json.loads(v) for k, v in pairs}
    )


@pytest.mark.parametrize(
    ("evaluation", "n"),
    [(False, L + 1), (True, L_TEST + 1), (True, L + 1)],
    ids=["train", "evaluation", "evaluation-at-L+1"],
)
@pytest.mark.parametrize("label", PLAIN_ROPES)
def test_rope_cos_sin_are_the_papers_at_train_and_evaluation_lengths(label, evaluation, n):
    """The documented defaults (s = (L'+1)/(L+1), YaRN's ramp over L'+1 with beta 2 and 1,
    llama3 over L+1, dynamic and longrope past L+1) as the trainer applies them; the
    frequencies and scaling those transformers computes itself for the rope type."""
    pe = resolve(request_of(label), WIDE)
    torch.manual_seed(0)
    model = llama_for(pe, 4, 3, WIDE.heads * WIDE.head_dim, WIDE.heads, 1, 8)
    if evaluation:
        use_frequencies(model, pe.rope(True))
    rotary = model.model.rotary_emb
    want, scaling = transformers_own(rotary.config)
    torch.testing.assert_close(rotary.inv_freq, want.float(), rtol=1e-6, atol=0)
    assert rotary.attention_scaling == pytest.approx(scaling)
    cos, sin = rotary(torch.zeros(1), torch.arange(n)[None])
    frequencies, scale = PLAIN_ROPES[label](evaluation, n)
    angle = torch.arange(n, dtype=torch.float64)[:, None] * torch.tensor(frequencies).double()
    angle = torch.cat([angle, angle], dim=-1)  # Llama's halves: pair i is (i, i + d/2)
    torch.testing.assert_close(cos[0].double(), scale * angle.cos(), rtol=0, atol=3e-5)
    torch.testing.assert_close(sin[0].double(), scale * angle.sin(), rtol=0, atol=3e-5)


# --- attention: each Llama layer against a slow loop of the published formula ---------------
def layer_against_loop(model, logit):
    """The first attention layer's output at POSITIONS, and a softmax loop over j <= i of
    ``logit(h, i, j, q, k)`` (q, k: head h's projected, unrotated rows)."""
    attention = model.model.layers[0].self_attn
    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(1, len(POSITIONS), HEADS * HEAD_DIM, generator=generator)
    positions = torch.tensor([POSITIONS])
    cos_sin = model.model.rotary_emb(hidden, positions)
    with torch.no_grad():
        out, _ = attention(
            hidden, position_embeddings=cos_sin, attention_mask=None, position_ids=positions
        )
        projections = (attention.q_proj, attention.k_proj, attention.v_proj)
        q, k, v = (p(hidden)[0].view(len(POSITIONS), HEADS, HEAD_DIM).double() for p in projections)
        heads = []
        for h in range(HEADS):
            rows = []
            for i in range(len(POSITIONS)):
                scores = [logit(h, i, j, q[:, h], k[:, h]) for j in range(i + 1)]
                weights = [math.exp(s - max(scores)) for s in scores]
                rows.append(sum(w / sum(weights) * v[j, h] for j, w in enumerate(weights)))
            heads.append(torch.stack(rows))
        want = attention.o_proj(torch.cat(heads, dim=-1).float())[None]
    return out, want


def dot(a, b) -> float:
    return float(sum(x * y for x, y in zip(a.tolist(), b.tolist(), strict=True)))


def rotated(x, p: int):
    """RoPE by hand: pair d is (x[d], x[d + D/2]) turned by p * 10000^(-2d/D)."""
    half = HEAD_DIM // 2
    out = x.clone()
    for d in range(half):
        angle = p * 10_000.0 ** (-2 * d / HEAD_DIM)
        a, b = x[d].item(), x[d + half].item()
        out[d] = a * math.cos(angle) - b * math.sin(angle)
        out[d + half] = a * math.sin(angle) + b * math.cos(angle)
    return out


def published_slopes(heads: int) -> list[float]:
    """Press et al.'s get_slopes: 2^(-8h/n), n the power of two <= heads, then odd ones of 2n."""
    n = 2 ** int(math.log2(heads))
    slopes = [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]
    extra = [2.0 ** (-8.0 * h / (2 * n)) for h in range(1, 2 * n + 1, 2)]
    return slopes + extra[: heads - n]


def t5_bucket(d: int, buckets: int = 32, max_distance: int = 128) -> int:
    """T5's causal bucket, from the paper's description: exact below n/2, log-spaced after."""
    exact = buckets // 2
    if d < exact:
        return d
    return min(
        buckets - 1, exact + int(math.log(d / exact) / math.log(max_distance / exact) * exact)
    )


def biased(bias):
    """The logit of plain attention plus ``bias(h, d, i)`` (``d = p_i - p_j``)."""
    return lambda h, i, j, q, k: dot(q[i], k[j]) * SCALE + bias(h, POSITIONS[i] - POSITIONS[j], i)


def t5_logit(model):
    table = model.model.position_module.bias.weight.double()
    return biased(lambda h, d, i: table[t5_bucket(d), h].item())


def fire_logit(model):
    """FIRE: an MLP of log(c d + 1) / log(c max(p_i, L) + 1)."""
    fire = model.model.layers[0].self_attn.position_module
    c, threshold = abs(fire.c.item()), abs(fire.threshold_scale.item() * (L + 1))
    w1, b1 = fire.mlp[0].weight[:, 0].tolist(), fire.mlp[0].bias.tolist()
    w2, b2 = fire.mlp[2].weight.tolist(), fire.mlp[2].bias.tolist()

    def bias(h: int, d: int, i: int) -> float:
        x = math.log(c * d + 1)
        x /= math.log(c * max(POSITIONS[i], threshold) + 1) + 1e-6
        hidden = [max(0.0, w * x + b) for w, b in zip(w1, b1, strict=True)]
        return sum(w * a for w, a in zip(w2[h], hidden, strict=True)) + b2[h]

    return biased(bias)


def kerple_logit(model):
    """KERPLE log: -r1 log(1 + r2 |p_i - p_j|), r1 and r2 at least 0.01."""
    kerple = model.model.layers[0].self_attn.position_module
    r1, r2 = ([max(v, 0.01) for v in r.tolist()] for r in (kerple.r1, kerple.r2))
    return biased(lambda h, d, i: -r1[h] * math.log(1 + r2[h] * d))


def xpos_logit(model):
    """xPos: rotated q scaled by zeta^(p_i/16), rotated k by zeta^(-p_j/16), per rotary pair."""
    zeta = [(2 * d / HEAD_DIM + 0.4) / 1.4 for d in range(HEAD_DIM // 2)] * 2

    def logit(h, i, j, q, k):
        qi, kj = rotated(q[i], POSITIONS[i]), rotated(k[j], POSITIONS[j])
        power = (POSITIONS[i] - POSITIONS[j]) / 16
        return SCALE * sum(qi[d].item() * kj[d].item() * zeta[d] ** power for d in range(HEAD_DIM))

    return logit


def cope_logit(model):
    """CoPE: q.e at the summed sigmoid gates p = sum_{t=j..i} g_it, interpolated, at most 5."""
    embedding = model.model.layers[0].self_attn.position_module.embedding.double()

    def logit(h, i, j, q, k):
        gates = [1 / (1 + math.exp(-dot(q[i], k[t]) * SCALE)) for t in range(i + 1)]
        p = min(sum(gates[j : i + 1]), 5.0)
        low, frac = math.floor(p), p - math.floor(p)
        at_low, at_high = dot(q[i], embedding[:, low]), dot(q[i], embedding[:, math.ceil(p)])
        return dot(q[i], k[j]) * SCALE + (1 - frac) * at_low + frac * at_high

    return logit


def logn_logit(model):
    """log-n: RoPE's logit times max(1, log(p_i + 1) / log(L + 1))."""

    def logit(h, i, j, q, k):
        s = max(1.0, math.log(POSITIONS[i] + 1) / math.log(L + 1))
        return s * dot(rotated(q[i], POSITIONS[i]), rotated(k[j], POSITIONS[j])) * SCALE

    return logit


FORMULAS = {"alibi": lambda model: biased(lambda h, d, i: -published_slopes(HEADS)[h] * d)}
FORMULAS.update(t5=t5_logit, fire=fire_logit, kerple=kerple_logit)
FORMULAS.update(xpos=xpos_logit, cope=cope_logit, logn=logn_logit)
FORMULAS.update({"rope+logn": logn_logit, "yarn+logn": logn_logit})  # yarn scales at evaluation
PARAMETERS = {"xpos": {"scale_base": 16.0}, "cope": {"positions": 6}}  # effects within 300


@pytest.mark.parametrize("pe", FORMULAS)
def test_each_attention_is_its_published_formula_in_the_llama_layer(pe):
    model = tiny(pe, **PARAMETERS.get(pe, {}))
    if "logn" in pe:  # larger logits: a wrong scale shows
        with torch.no_grad():
            model.model.layers[0].self_attn.q_proj.weight.mul_(8)
    out, want = layer_against_loop(model, FORMULAS[pe](model))
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)


def test_alibi_slopes_and_t5_buckets_are_the_published_ones():
    for heads in (1, 2, 4, 6, 8, 12):
        np.testing.assert_allclose(alibi_slopes(heads).numpy(), published_slopes(heads), rtol=1e-6)
    got = t5_buckets(torch.arange(400), 32, 128).tolist()
    assert got == [t5_bucket(d) for d in range(400)]
    assert got[:16] == list(range(16)) and set(got[128:]) == {31}
    distance = torch.arange(3000)  # transformers' own function, odd bucket counts too
    for buckets, max_distance in [(32, 128), (33, 128), (8, 20), (3, 5), (2, 2), (64, 1000)]:
        reference = T5Attention._relative_position_bucket(
            -distance, bidirectional=False, num_buckets=buckets, max_distance=max_distance
        )
        assert torch.equal(t5_buckets(distance, buckets, max_distance), reference)


@pytest.mark.parametrize("pe", ["t5", "fire", "kerple", "cope"])
def test_learned_encodings_own_their_weights_outside_weight_decay(pe):
    from posgen.encodings.model import parameter_groups

    model = tiny(pe)
    layers = [layer.self_attn.position_module for layer in model.model.layers]
    assert (layers[0] is layers[1]) == (pe == "t5")  # T5: one table; the others one per layer
    own = {id(p) for name, p in model.named_parameters() if MODULE in name}
    groups = parameter_groups(model, 0.1)
    assert own and {id(p) for p in groups[1]["params"]} == own
    assert groups[1]["weight_decay"] == 0.0 and not own & {id(p) for p in groups[0]["params"]}


def test_cope_with_a_million_positions_computes_only_those_a_row_reaches():
    class Largest(TorchFunctionMode):
        numel = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                Largest.numel = max(Largest.numel, out.numel())
            return out

    cope = CoPE({"positions": 10**6}, LENGTHS)
    query, logits = torch.ones(1, 1, 8, HEAD_DIM), torch.zeros(1, 1, 8, 8).tril()
    with torch.no_grad(), Largest():
        assert cope(query, logits).shape == (1, 1, 8, 8)
    assert Largest.numel < 10**4


# --- causality: a token changed at t moves no logit before t, plugins included ---------------

LEAKY = """
import torch
from transformers import AttentionInterface

from posgen.encodings import PositionEncoding


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    weights = torch.softmax(query @ key.transpose(-1, -2) * scaling, dim=-1)  # no mask read
    return (weights @ value).transpose(1, 2).contiguous(), weights


AttentionInterface.register("leaky_attention", attention)  # and no AttentionMaskInterface entry
LEAKY = PositionEncoding(name="leaky", summary="reads the future", attention="leaky_attention")
"""
EVERY = [*ENCODINGS, "rope+logn", "yarn+logn", "learned+logn", "mype:BASE500", "mybias:LOGBIAS"]


@pytest.fixture
def readme_plugins(plugin_site, readme_block):
    """The README's two plugins and LEAKY (an attention that ignores the mask) on ``sys.path``."""
    plugin_site("mype.py", readme_block("# mype/__init__.py"))
    plugin_site("mybias.py", readme_block("# mybias/__init__.py"))
    plugin_site("leaky.py", LEAKY)


@pytest.mark.parametrize("positions", [None, GAPPED * 4], ids=["default-positions", "gapped-ids"])
@pytest.mark.parametrize("name", [*EVERY, "leaky:LEAKY"])
def test_every_encoding_is_causal_and_one_that_ignores_the_mask_is_caught(
    readme_plugins, name, positions
):
    model, changed = tiny(name), IDS.clone()
    changed[:, 7] = (IDS[:, 7] + 1) % 17
    delta = (logits(model, changed, positions) - logits(model, IDS, positions)).abs()
    before, after = delta[:, :7].max().item(), delta[:, 7:].max().item()
    if name == "leaky:LEAKY":
        assert before > 1e-3
    else:
        assert before <= 1e-6, f"{name}: logits before t moved by {before}"
        assert after > 1e-4  # the change does reach the logits from t on


# --- absolute and randomized positions -----------------------------------------------------
def test_sinusoidal_table_is_vaswanis_at_the_size_of_the_token_embeddings():
    model = tiny("sinusoidal").model
    table = model.position_embedding.table
    p, d = 7, HEADS * HEAD_DIM
    want = [
        math.sin(p / 10_000 ** (i / d)) if i % 2 == 0 else math.cos(p / 10_000 ** ((i - 1) / d))
        for i in range(d)
    ]
    scale = model.config.initializer_range * math.sqrt(2)
    np.testing.assert_allclose(table[p].numpy(), np.multiply(want, scale), rtol=1e-5, atol=1e-8)
    rms = table.pow(2).mean().sqrt().item()
    assert rms == pytest.approx(model.config.initializer_range, rel=0.05)


def test_absolute_positions_are_added_however_the_base_model_is_given_its_tokens():
    model = tiny("learned")
    with torch.no_grad():
        want = model.model(input_ids=IDS).last_hidden_state
        positional = model.model(IDS).last_hidden_state  # LlamaModel(input_ids) positionally
        embedded = model.model(inputs_embeds=model.model.embed_tokens(IDS)).last_hidden_state
    torch.testing.assert_close(positional, want)
    torch.testing.assert_close(embedded, want)


def test_randomized_positions_are_sorted_distinct_in_range_and_independent_of_the_batch():
    for step in range(5):
        ids = RandomPositions(seed=11, range_size=L_TEST + 1).training(step, rows=8, length=L + 1)
        assert bool((ids[:, 1:] > ids[:, :-1]).all())
        assert 0 <= int(ids.min()) <= int(ids.max()) <= L_TEST
    positions = RandomPositions(seed=11, range_size=300)
    whole = positions.evaluation("test", 0, 6, 257)
    assert torch.equal(whole[4:], positions.evaluation("test", 4, 2, 257))


def test_fire_random_is_fire_with_randomized_positions_over_l_prime_plus_1_by_default():
    default = resolve(PERequest(name="fire-random"), LENGTHS)
    assert default.randomized == L_TEST + 1 and default.label == "fire-random"
    assert default.encoding.attention == ENCODINGS["fire"].attention
    wider = resolve(PERequest(name="fire-random", randomized=400), LENGTHS)
    assert wider.randomized == 400 and wider.label == "fire-random+randomized400"
    assert resolve(PERequest(name="fire"), LENGTHS).randomized is None


# --- every PE: trains a few steps, saves, reloads to the same predictions ------------------

REQUESTS = [PERequest(name=name) for name in ENCODINGS] + [
    PERequest(name="alibi", randomized="auto"),
    PERequest(name="rope", randomized=300),
    PERequest(name="yarn+logn"),
    PERequest(name="linear", parameters={"factor": 2}),
]


@pytest.mark.parametrize(
    "request_", REQUESTS, ids=[*ENCODINGS, "alibi+auto", "rope+300", "yarn+logn", "pi2"]
)
def test_every_pe_trains_saves_reloads_and_records_what_it_trained(
    tiny_training_dataset, tmp_path, monkeypatch, request_
):
    from posgen.train.trainer import evaluation_positions

    seen = []

    def spy(position_ids, device):
        seen.append(position_ids)
        return position_inputs(position_ids, device)

    monkeypatch.setattr("posgen.train.trainer.position_inputs", spy)
    config = preset("cpu", **TINY, epochs=1, max_steps=2)
    out = tmp_path / "run"
    summary = train_runs(
        tiny_training_dataset, "recursive", [request_], config, 1, [out], "cpu", save=True
    )[0]
    assert summary["id_accuracy"] is not None
    model, pe = load_model(out / MODEL)
    if pe.randomized is not None:  # randomized positions reach the model in training
        assert seen and all(ids is not None for ids in seen)
        assert max(int(ids.max()) for ids in seen) > L
    data = RunData.load(tiny_training_dataset, "recursive")
    if pe.name == "learned":  # its rows past L are untouched by training
        before = getattr(build_model(config, data.train, "learned", 1).model, ATTRIBUTE).weight
        after = getattr(model.model, ATTRIBUTE).weight
        assert before.shape[0] == L_TEST + 1 and torch.equal(after[L + 1 :], before[L + 1 :])
        assert not torch.equal(after[: L + 1], before[: L + 1])
    test = data.test
    positions = evaluation_positions(pe, 1, "test")
    again = predict(model, lm_tensors(test)["input_ids"], 3, torch.device("cpu"), 17, positions)
    saved = read_predictions(out / "predictions.parquet")
    np.testing.assert_array_equal(saved.ids, test.ids)
    np.testing.assert_array_equal(again, saved.tokens)
    strict = {"parse_constant": lambda constant: pytest.fail(f"{constant} in a run file")}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line, **strict)
    record = json.loads((out / "results.json").read_text(), **strict)
    assert record["position_encoding"]["label"] == pe.label
    assert record["position_encoding"]["parameters"] == pe.parameters
    assert all(pe.parameters[name] == v for name, v in request_.parameters.items())  # pi2: 2
    assert len(record["scores"]["curve"]["accuracy"]) == L_TEST - 4
    assert (record["seed"], record["preset"]) == (1, "cpu")


def test_results_json_schema_file_matches_the_model():
    assert SCHEMA_FILE.read_text() == schema_text()
