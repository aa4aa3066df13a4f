"""T5, FIRE, KERPLE, xPos, CoPE and log-n: each Llama attention layer against a slow loop of
the published formula, and the learned ones trained, saved, reloaded without weight decay."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from posgen.encodings import ENCODINGS, Lengths, PEError, PERequest, resolve  # noqa: E402
from posgen.encodings.model import MODULE, llama_for, parameter_groups  # noqa: E402

L, L_TEST, HEADS, HEAD_DIM = 64, 256, 2, 8
LENGTHS = Lengths(train=L, test=L_TEST, head_dim=HEAD_DIM, heads=HEADS)
POSITIONS = [0, 1, 3, 4, 9, 20, 70, 300]  # gapped, past L and past the T5 max distance
NEW = ["t5", "fire", "fire-random", "kerple", "xpos", "cope", "logn"]


def tiny(pe: str, **parameters):
    torch.manual_seed(0)
    resolved = resolve(PERequest(name=pe, parameters=parameters), LENGTHS)
    model = llama_for(resolved, 18, 17, HEADS * HEAD_DIM, HEADS, 2, 32).eval()
    with torch.no_grad():  # learned encodings start away from their (often zero) start
        generator = torch.Generator().manual_seed(3)
        for name, parameter in model.named_parameters():
            if MODULE in name:
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.add_(0.3 * noise)
    return model


def layer_against_loop(model, logit):
    """The first attention layer's output, and the same from ``logit(h, i, j, q, k)`` (q, k:
    the projected, not rotated, query and key rows of head h) by a softmax loop over j <= i."""
    attention = model.model.layers[0].self_attn
    hidden = torch.randn(
        1, len(POSITIONS), HEADS * HEAD_DIM, generator=torch.Generator().manual_seed(2)
    )
    positions = torch.tensor([POSITIONS])
    cos_sin = model.model.rotary_emb(hidden, positions)
    with torch.no_grad():
        out, _ = attention(
            hidden,
            position_embeddings=cos_sin,
            attention_mask=None,
            position_ids=positions,
        )
        shape = (len(POSITIONS), HEADS, HEAD_DIM)
        q = attention.q_proj(hidden)[0].view(shape).double()
        k = attention.k_proj(hidden)[0].view(shape).double()
        v = attention.v_proj(hidden)[0].view(shape).double()
        heads = []
        for h in range(HEADS):
            rows = []
            for i in range(len(POSITIONS)):
                scores = [logit(h, i, j, q[:, h], k[:, h]) for j in range(i + 1)]
                top = max(scores)
                weights = [math.exp(s - top) for s in scores]
                total = sum(weights)
                rows.append(sum(w / total * v[j, h] for j, w in enumerate(weights)))
            heads.append(torch.stack(rows))
        want = attention.o_proj(torch.cat(heads, dim=-1).float())[None]
    return out, want


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


SCALE = HEAD_DIM**-0.5


def assert_bias(module, bias) -> None:
    """The module's bias at every (head, i, j <= i) of POSITIONS is ``bias(h, i, j)``."""
    with torch.no_grad():
        got = module(torch.tensor([POSITIONS])).double()[0]
    for h in range(HEADS):
        for i in range(len(POSITIONS)):
            for j in range(i + 1):
                assert got[h, i, j].item() == pytest.approx(bias(h, i, j), rel=1e-5, abs=1e-6)


def dot(a, b) -> float:
    return float(sum(x * y for x, y in zip(a.tolist(), b.tolist(), strict=True)))


# --- T5 ------------------------------------------------------------------------------------


def t5_bucket(d: int, buckets: int = 32, max_distance: int = 128) -> int:
    """T5's causal bucket, from the paper's description: exact below n/2, log-spaced after."""
    exact = buckets // 2
    if d < exact:
        return d
    return min(
        buckets - 1, exact + int(math.log(d / exact) / math.log(max_distance / exact) * exact)
    )


def test_t5_attention_adds_the_learned_bias_of_the_distance_bucket():
    model = tiny("t5")
    table = model.model.position_module.bias.weight.double()
    assert model.model.layers[1].self_attn.position_module is model.model.position_module

    def bias(h, i, j):
        return table[t5_bucket(POSITIONS[i] - POSITIONS[j]), h].item()

    assert_bias(model.model.position_module, bias)
    out, want = layer_against_loop(
        model, lambda h, i, j, q, k: dot(q[i], k[j]) * SCALE + bias(h, i, j)
    )
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)


def test_t5_buckets_are_exact_then_logarithmic_then_the_last():
    from posgen.encodings.relative import t5_buckets

    distances = list(range(0, 400))
    got = t5_buckets(torch.tensor(distances), 32, 128).tolist()
    assert got == [t5_bucket(d) for d in distances]
    assert got[:16] == list(range(16)) and set(got[128:]) == {31}


# --- FIRE ----------------------------------------------------------------------------------


def test_fire_attention_adds_the_mlp_of_the_log_normalized_distance():
    model = tiny("fire")
    fire = model.model.layers[0].self_attn.position_module
    c = abs(fire.c.item())
    threshold = abs(fire.threshold_scale.item() * (L + 1))
    w1, b1 = fire.mlp[0].weight[:, 0].tolist(), fire.mlp[0].bias.tolist()
    w2, b2 = fire.mlp[2].weight.tolist(), fire.mlp[2].bias.tolist()

    def bias(h: int, i: int, j: int) -> float:
        psi = lambda x: math.log(c * x + 1)  # noqa: E731
        x = psi(POSITIONS[i] - POSITIONS[j]) / (psi(max(POSITIONS[i], threshold)) + 1e-6)
        hidden = [max(0.0, w * x + b) for w, b in zip(w1, b1, strict=True)]
        return sum(w * a for w, a in zip(w2[h], hidden, strict=True)) + b2[h]

    assert_bias(fire, bias)
    out, want = layer_against_loop(
        model, lambda h, i, j, q, k: dot(q[i], k[j]) * SCALE + bias(h, i, j)
    )
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
    other = model.model.layers[1].self_attn.position_module
    assert other is not fire  # one per layer


# --- KERPLE --------------------------------------------------------------------------------


def test_kerple_attention_adds_minus_r1_log_of_one_plus_r2_distance():
    model = tiny("kerple")
    kerple = model.model.layers[0].self_attn.position_module
    r1 = [max(v, 0.01) for v in kerple.r1.tolist()]
    r2 = [max(v, 0.01) for v in kerple.r2.tolist()]

    def bias(h, i, j):
        return -r1[h] * math.log(1 + r2[h] * abs(POSITIONS[i] - POSITIONS[j]))

    assert_bias(kerple, bias)
    out, want = layer_against_loop(
        model, lambda h, i, j, q, k: dot(q[i], k[j]) * SCALE + bias(h, i, j)
    )
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)


# --- xPos ----------------------------------------------------------------------------------


def test_xpos_scales_the_rotated_query_up_and_the_key_down_per_rotary_pair():
    model = tiny("xpos", scale_base=16.0)  # a small base: the decay shows within 300 positions
    half = HEAD_DIM // 2
    zeta = [(2 * d / HEAD_DIM + 0.4) / 1.4 for d in range(half)] * 2

    def logit(h, i, j, q, k):
        qi, kj = rotated(q[i], POSITIONS[i]), rotated(k[j], POSITIONS[j])
        return SCALE * sum(
            qi[d].item()
            * zeta[d] ** (POSITIONS[i] / 16)
            * kj[d].item()
            * zeta[d] ** (-POSITIONS[j] / 16)
            for d in range(HEAD_DIM)
        )

    out, want = layer_against_loop(model, logit)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)


# --- CoPE ----------------------------------------------------------------------------------


def test_cope_attention_interpolates_embeddings_at_the_summed_gates():
    model = tiny("cope", positions=6)
    embedding = model.model.layers[0].self_attn.position_module.embedding.double()

    def logit(h, i, j, q, k):
        gates = [1 / (1 + math.exp(-dot(q[i], k[t]) * SCALE)) for t in range(i + 1)]
        p = min(sum(gates[j : i + 1]), 5.0)
        low, frac = math.floor(p), p - math.floor(p)
        at = lambda n: dot(q[i], embedding[:, n])  # noqa: E731
        return dot(q[i], k[j]) * SCALE + (1 - frac) * at(low) + frac * at(math.ceil(p))

    out, want = layer_against_loop(model, logit)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)


def test_cope_is_listed_as_eager_and_slower(cli):
    line = next(
        line for line in cli("train", "--list-pe").output.splitlines() if line.startswith("cope ")
    )
    assert "Golovneva et al. 2024" in line and "slower" in line


# --- log-n ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pe", ["logn", "rope+logn", "yarn+logn"])
def test_logn_scales_each_rotated_query_by_log_n_over_log_l_train(pe):
    model = tiny(pe)  # in training, yarn+logn rotates as RoPE (yarn applies at evaluation)
    with torch.no_grad():  # larger logits: a wrong scale shows
        model.model.layers[0].self_attn.q_proj.weight.mul_(8)
    from posgen.encodings.relative import logn_scale

    want_scale = [max(1.0, math.log(p + 1) / math.log(L + 1)) for p in POSITIONS]
    assert logn_scale(torch.tensor([POSITIONS]), L + 1)[0].tolist() == pytest.approx(want_scale)

    def logit(h, i, j, q, k):
        s = max(1.0, math.log(POSITIONS[i] + 1) / math.log(L + 1))
        return s * dot(rotated(q[i], POSITIONS[i]), rotated(k[j], POSITIONS[j])) * SCALE

    out, want = layer_against_loop(model, logit)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)


def test_logn_within_training_length_is_rope():
    ids = torch.randint(0, 17, (2, L + 1), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        same = [tiny(pe)(input_ids=ids).logits for pe in ("rope", "logn")]
        longer = torch.randint(0, 17, (1, L_TEST + 1), generator=torch.Generator().manual_seed(1))
        far = [tiny(pe)(input_ids=longer).logits for pe in ("rope", "logn")]
    torch.testing.assert_close(same[0], same[1], rtol=0, atol=0)
    assert not torch.allclose(far[0][:, L + 1 :], far[1][:, L + 1 :])


@pytest.mark.parametrize(
    ("name", "parameters", "message"),
    [
        ("alibi+logn", {}, "--pe alibi+logn: log-n scaling combines with rope encodings only"),
        (
            "logn",
            {"train_positions": 1},
            "--pe logn: train_positions 1: use an integer of at least 2",
        ),
        ("t5", {"buckets": 1}, "--pe t5: buckets 1: use an integer from 2 to 4096"),
        ("t5", {"max_distance": 16}, "--pe t5: max_distance 16: use an integer above buckets // 2"),
        ("fire", {"c": 0}, "--pe fire: c 0: use a positive number"),
        ("xpos", {"gamma": "x"}, "--pe xpos: gamma 'x': use a positive number"),
        ("cope", {"positions": 1}, "--pe cope: positions 1: use an integer from 2 to 1000000"),
        ("kerple", {"r1": 1}, "--pe-param r1: kerple has no such parameter (parameters: none)"),
    ],
    ids=[
        "logn-on-alibi",
        "logn-length",
        "t5-buckets",
        "t5-distance",
        "fire-c",
        "xpos",
        "cope",
        "kerple",
    ],
)
def test_a_bad_setup_of_a_new_encoding_is_one_pe_error_line(name, parameters, message):
    with pytest.raises(PEError) as error:
        resolve(PERequest(name=name, parameters=parameters), LENGTHS)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


# --- learned weights: owned by the model, never decayed, refused when not -----------------


@pytest.mark.parametrize("pe", ["t5", "fire", "kerple", "cope"])
def test_learned_encodings_own_their_weights_outside_weight_decay(pe):
    model = tiny(pe)
    own = {id(p) for name, p in model.named_parameters() if MODULE in name}
    assert own
    groups = parameter_groups(model, 0.1)
    assert {id(p) for p in groups[1]["params"]} == own and groups[1]["weight_decay"] == 0.0
    assert not own & {id(p) for p in groups[0]["params"]}


def test_every_new_encoding_says_who_proposed_it(cli):
    lines = {line.split()[0]: line for line in cli("train", "--list-pe").output.splitlines()}
    authors = {
        "t5": "Raffel et al. 2020",
        "fire": "Li et al. 2023",
        "fire-random": "McLeish et al. 2024",
        "kerple": "Chi et al. 2022",
        "xpos": "Sun et al. 2023",
        "cope": "Golovneva et al. 2024",
        "logn": "Qwen",
    }
    assert all(authors[pe] in lines[pe] for pe in NEW)
    assert len(lines) >= 23 and set(NEW) <= set(ENCODINGS)


def test_fire_random_is_fire_with_randomized_positions_over_l_prime_plus_1_by_default():
    default = resolve(PERequest(name="fire-random"), LENGTHS)
    assert default.randomized == L_TEST + 1 and default.label == "fire-random"
    assert default.encoding.attention == ENCODINGS["fire"].attention
    wider = resolve(PERequest(name="fire-random", randomized=400), LENGTHS)
    assert wider.randomized == 400 and wider.label == "fire-random+randomized400"
    assert resolve(PERequest(name="fire"), LENGTHS).randomized is None
