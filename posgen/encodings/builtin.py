"""Every built-in position encoding, registered in table order, and the constructors
(:func:`rope_encoding`, :func:`bias_encoding`) that plugins use too.

>>> lengths = Lengths(train=64, test=256, head_dim=16, heads=4)
>>> LINEAR = ENCODINGS["linear"]
>>> LINEAR.rope(LINEAR.defaults(lengths), lengths, True)
{'rope_type': 'linear', 'rope_theta': 10000.0, 'factor': 3.953846153846154}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from posgen.encodings import ENCODINGS, MODIFIERS, NO_ROPE, Lengths, PEError, PositionEncoding
from posgen.encodings.relative import (
    CoPE,
    Fire,
    KerpleLog,
    T5Bias,
    cope_attention,
    distances,
    logn_scale,
    xpos_scale,
)

THETA = 10_000.0
SCALE_AT = ("evaluation", "train")

TRANSFORMERS_ROPE_TYPES = frozenset({"default", *ROPE_INIT_FUNCTIONS})
"""transformers' own rope types (``default``: Llama's RoPE): a plugin's never replace one."""
_ROPE_FUNCTIONS = {kind: ROPE_INIT_FUNCTIONS.get(kind) for kind in TRANSFORMERS_ROPE_TYPES}
"""Every rope type posgen uses and its function when posgen took it (None: Llama's default)."""
_OWNERS: dict[str, str] = {}
"""Rope types and attention functions posgen registered, and who registered each."""

Defaults = Callable[[Lengths], dict[str, Any]]
Frequencies = Callable[..., tuple[torch.Tensor, float]]
"""A rope init function: ``(config, device, seq_len, **kwargs) -> (inv_freq, scaling)``."""


def _claim(kind: str, key: str, function: Callable[..., Any], name: str) -> None:
    """Take ``key`` (a rope type or an attention function) for ``function`` of encoding
    ``name``; a :class:`PEError` when it is transformers' or another function's."""
    if not ENCODINGS.sealed:
        _OWNERS[key] = f"the built-in encoding {name}"
        return
    if kind == "rope type" and key in TRANSFORMERS_ROPE_TYPES:
        raise PEError(
            f"{name}: rope type {key!r} is transformers' own; a plugin's frequencies need a "
            f"rope type of their own (rope_encoding(..., rope_type=...), not one of "
            f"{', '.join(sorted(TRANSFORMERS_ROPE_TYPES))})"
        )
    owner = f"{getattr(function, '__module__', None) or '?'}.{_qualname(function)}"
    held = _OWNERS.get(key)
    if held is not None and held != owner:
        raise PEError(f"{name}: {kind} {key!r} is taken by {held}; give the plugin its own")
    _OWNERS[key] = owner


def _qualname(function: Any) -> str:
    return getattr(function, "__qualname__", type(function).__name__)


def _own_name(name: str) -> None:
    if ENCODINGS.sealed and name in ENCODINGS.builtin_names:
        raise PEError(
            f"a plugin named {name!r} would replace the built-in position encoding {name}; "
            "give it a name of its own"
        )


def _intact(rope_type: str) -> None:
    """A ValueError when transformers' table no longer holds posgen's function of ``rope_type``."""
    if rope_type not in _ROPE_FUNCTIONS:
        return
    found = ROPE_INIT_FUNCTIONS.get(rope_type)
    if found is not _ROPE_FUNCTIONS[rope_type]:
        by = "removed" if found is None else f"replaced by {found.__module__}.{_qualname(found)}"
        raise ValueError(
            f"rope type {rope_type!r} of transformers' ROPE_INIT_FUNCTIONS was {by}, not "
            "through posgen's constructors; an encoding trains only with its own frequencies"
        )


def rope_encoding(
    name: str,
    summary: str,
    frequencies: Frequencies | None,
    defaults: Defaults | None = None,
    *,
    rope_type: str | None = None,
    unscaled: str = "default",
    optional: tuple[str, ...] = (),
    max_positions: Callable[[Mapping[str, Any], Lengths], int] | None = None,
) -> PositionEncoding:
    """A rope init function as a position encoding (what a rope plugin calls): ``frequencies``
    (None: a type transformers has) as rope type ``rope_type`` (default ``name``);
    ``scale_at=evaluation`` trains with ``unscaled``. A name or rope type taken: a PEError."""
    rope_type = rope_type or name
    _own_name(name)
    if frequencies is not None:
        _claim("rope type", rope_type, frequencies, name)
        ROPE_INIT_FUNCTIONS[rope_type] = _ROPE_FUNCTIONS[rope_type] = frequencies

    def rope(parameters: Mapping[str, Any], lengths: Lengths, evaluation: bool) -> dict[str, Any]:
        _intact(rope_type)
        _intact(unscaled)
        scale_at = parameters.get("scale_at", "train")
        if scale_at not in SCALE_AT:
            raise ValueError(f"scale_at {scale_at!r}: use one of {', '.join(SCALE_AT)}")
        if scale_at == "evaluation" and not evaluation:
            return {"rope_type": unscaled, "rope_theta": parameters["rope_theta"]}
        out: dict[str, Any] = {"rope_type": rope_type}
        for key, value in parameters.items():
            if key in ("short_factor", "long_factor") and not isinstance(value, list):
                value = [float(value)] * (lengths.head_dim // 2)  # one per rotary pair
            if key != "scale_at":
                out[key] = value
        return out

    return PositionEncoding(
        name=name,
        summary=summary,
        defaults=defaults or (lambda lengths: {"rope_theta": THETA}),
        rope=rope,
        optional=optional,
        max_positions=max_positions,
    )


def resonance_of(rope_type: str) -> Frequencies:
    """transformers' frequencies of ``rope_type``, every wavelength rounded to an integer.

    >>> from transformers import LlamaConfig
    >>> config = LlamaConfig(hidden_size=16, num_attention_heads=2,
    ...                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    >>> inv_freq, scale = resonance_of("default")(config)
    >>> [round(2 * math.pi / f) for f in inv_freq.tolist()], scale
    ([6, 63, 628, 6283], 1.0)
    """

    def frequencies(
        config: PreTrainedConfig, device: Any = None, seq_len: int | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, float]:
        init = _ROPE_FUNCTIONS[rope_type] or LlamaRotaryEmbedding.compute_default_rope_parameters
        inv_freq, attention_factor = init(config, device=device, seq_len=seq_len, **kwargs)
        return (2 * math.pi / torch.round(2 * math.pi / inv_freq)).to(device), attention_factor

    frequencies.__name__ = f"resonance_{rope_type}_frequencies"
    return frequencies


def scale(lengths: Lengths) -> float:
    return lengths.scale


def train_positions(lengths: Lengths) -> int:
    """L+1: the positions of a training row (BOS included); L'+1 those of a test row."""
    return lengths.train + 1


class RopeType(NamedTuple):
    """One rope encoding: its rope type, its parameters after ``rope_theta`` (values or
    functions of :class:`Lengths`), and whether it has a Resonance twin."""

    name: str
    rope_type: str
    parameters: dict[str, Any]
    summary: str
    optional: tuple[str, ...] = ()
    resonance: bool = True
    max_positions: Callable[[Mapping[str, Any], Lengths], int] | None = None

    def defaults(self, lengths: Lengths) -> dict[str, Any]:
        values = {k: v(lengths) if callable(v) else v for k, v in self.parameters.items()}
        return {"rope_theta": THETA, **values}

    @property
    def twin(self) -> str:
        """The Resonance twin's name and rope type."""
        return "resonance" if self.rope_type == "default" else f"resonance_{self.rope_type}"

    def encodings(self) -> list[PositionEncoding]:
        shared: dict[str, Any] = {"optional": self.optional, "max_positions": self.max_positions}
        plain = rope_encoding(
            self.name, self.summary, None, self.defaults, rope_type=self.rope_type, **shared
        )
        if not self.resonance:
            return [plain]
        summary = f"Resonance RoPE of {self.name}: its wavelengths rounded to integers"
        frequencies = resonance_of(self.rope_type)
        twin = rope_encoding(
            self.twin, summary, frequencies, self.defaults, unscaled="resonance", **shared
        )
        return [plain, twin]


AT_EVALUATION = {"scale_at": "evaluation"}
ROPE_TYPES = (
    RopeType("rope", "default", {}, "RoPE, base 10000 (transformers' default rope type)"),
    RopeType(
        "yarn",
        "yarn",
        # the authors' ramp for POSGEN: beta 2 and 1 (transformers' defaults: 32 and 1)
        {
            "factor": scale,
            "original_max_position_embeddings": lambda lengths: lengths.test + 1,
            "beta_fast": 2.0,
            "beta_slow": 1.0,
            **AT_EVALUATION,
        },
        "YaRN with the paper's settings (beta 2 and 1, ramp over L'+1); at evaluation",
        optional=("attention_factor", "mscale", "mscale_all_dim", "truncate"),
    ),
    RopeType(
        "linear",
        "linear",
        {"factor": scale, **AT_EVALUATION},
        "position interpolation (PI): frequencies / factor; at evaluation by default",
    ),
    RopeType(
        "dynamic",
        "dynamic",
        {"factor": 1.0},
        "dynamic NTK: the base grows with the row length past L+1 positions",
        max_positions=lambda parameters, lengths: train_positions(lengths),
    ),
    RopeType(
        "longrope",
        "longrope",
        {
            "factor": scale,
            "original_max_position_embeddings": train_positions,
            "short_factor": 1.0,
            "long_factor": scale,
        },
        "LongRoPE: short factors up to L+1 positions, long factors past it (no Resonance "
        "variant: transformers switches factors only for the type named longrope)",
        optional=("attention_factor",),
        resonance=False,
    ),
    RopeType(
        "llama3",
        "llama3",
        {
            "factor": scale,
            "original_max_position_embeddings": train_positions,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            **AT_EVALUATION,
        },
        "Llama 3.1 scaling: long wavelengths / factor, smooth between; at evaluation",
    ),
    RopeType(
        "proportional",
        "proportional",
        {"partial_rotary_factor": 0.5, "factor": 1.0},
        "partial RoPE: a fraction of the rotary pairs rotated (partial_rotary_factor)",
    ),
    RopeType(
        "nope",
        "proportional",
        {"partial_rotary_factor": 0.0},
        "NoPE: no position encoding (proportional with partial_rotary_factor 0)",
        resonance=False,
    ),
)
"""The rope encodings in table order; ``default`` ignores ``partial_rotary_factor``."""


def rope_parameters(
    pe: str, train_length: int, test_length: int, evaluation: bool, theta: float = THETA
) -> dict[str, Any]:
    """A Llama config's ``rope_parameters`` for one of the paper's four.

    >>> rope_parameters("resonance_yarn", 64, 256, evaluation=False)
    {'rope_type': 'resonance', 'rope_theta': 10000.0}
    """
    encoding = ENCODINGS[pe]
    lengths = Lengths(train=train_length, test=test_length, head_dim=2, heads=1)
    return encoding.rope({**encoding.defaults(lengths), "rope_theta": theta}, lengths, evaluation)


Bias = Callable[[torch.Tensor, int, Mapping[str, Any]], torch.Tensor]
"""``(position_ids (batch, T), heads, parameters) -> additive bias (batch, heads, T, T)``."""
BiasModule = Callable[[Mapping[str, Any], Lengths], nn.Module]

PARAMETERS_ATTRIBUTE = "posgen_pe_parameters"
"""Config attribute holding an attention encoding's parameters (saved with the config)."""


def _parameters(module: nn.Module) -> Mapping[str, Any]:
    return getattr(module.config, PARAMETERS_ATTRIBUTE, None) or {}


def sdpa_with(
    transform: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], tuple[Any, ...]],
) -> Callable[..., tuple[torch.Tensor, None]]:
    """SDPA on ``transform(module, query, key, position_ids) -> (query, key, sdpa keywords)``."""

    def attention(
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        if position_ids is None:
            position_ids = torch.arange(query.shape[2], device=query.device)[None]
        query, key, extra = transform(module, query, key, position_ids)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **extra, **kwargs)

    return attention


def _check_bias(bias: Any, position_ids: torch.Tensor, heads: int) -> None:
    """A ValueError unless ``bias`` holds a value per head (or one for all), query and key."""
    batch, length = position_ids.shape
    shape = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
    fits = isinstance(bias, torch.Tensor) and bias.dim() == 4 and shape[2:] == (length, length)
    if not (fits and shape[0] in (1, batch) and shape[1] in (1, heads)):
        raise ValueError(
            f"its bias of position ids {tuple(position_ids.shape)} is {shape}, not "
            f"(batch, {heads}, {length}, {length})"
        )


def _check_readable(bias: torch.Tensor) -> None:
    """A ValueError unless every query i reads its keys j <= i through finite or ``-inf``
    values, one key at least not ``-inf`` (else torch gives zeros or NaN: the version decides)."""
    length = bias.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=bias.device).tril()
    values = bias.detach().to(torch.float64)
    if bool((values.isnan() | values.isposinf()).logical_and(causal).any()):
        raise ValueError("its bias is NaN or +inf at a key a query reads (key j <= query i)")
    blocked = (values.isneginf() | ~causal).all(dim=-1)
    if bool(blocked.any()):
        query = int(blocked.nonzero()[0, -1])
        raise ValueError(
            f"its bias is -inf at every key query {query} reads (keys 0..{query}): attention "
            "there has nothing to read"
        )


def bias_encoding(
    name: str,
    summary: str,
    bias: Bias | None = None,
    defaults: Defaults | None = None,
    *,
    module: BiasModule | None = None,
    shared: bool = False,
    check: Callable[[Mapping[str, Any], Lengths], None] | None = None,
) -> PositionEncoding:
    """A bias added to the attention logits through SDPA, rope off (what a bias plugin calls):
    a fixed ``bias(position_ids, heads, parameters)`` or a learned ``module(parameters,
    lengths)`` (one per layer, or one with ``shared``). A name or attention taken: a PEError."""
    if (bias is None) == (module is None):
        raise ValueError(f"bias_encoding {name!r}: give a bias function or module=, not both")
    _own_name(name)
    implementation = f"posgen_bias_{name}"
    _claim("attention function", implementation, bias if bias is not None else module, name)

    def with_bias(module_: nn.Module, query: torch.Tensor, key: torch.Tensor, positions: Any):
        heads = module_.config.num_attention_heads
        if bias is not None:
            position_bias = bias(positions, heads, _parameters(module_))
        else:
            position_bias = module_.position_module(positions)
        try:
            _check_bias(position_bias, positions, heads)
        except ValueError as error:
            raise PEError(f"--pe {name}: {error}") from None
        return query, key, {"position_bias": position_bias.to(query.dtype)}

    attention = sdpa_with(with_bias)
    AttentionInterface.register(implementation, attention)
    AttentionMaskInterface.register(implementation, sdpa_mask)

    def checks(parameters: Mapping[str, Any], lengths: Lengths) -> None:
        """``check``, then the bias of positions ``[[0, 1, 2]]``: a function's needs no
        gradients, a module learns something, both fit."""
        if check is not None:
            check(parameters, lengths)
        positions = torch.arange(3)[None]
        with torch.random.fork_rng(devices=[]):
            if bias is not None:
                out = bias(positions, lengths.heads, parameters)
                if getattr(out, "requires_grad", False):
                    raise ValueError(
                        "its bias function returns a tensor that needs gradients: weights "
                        "outside the model are never trained or saved; pass the weights as "
                        "bias_encoding(..., module=...)"
                    )
            else:
                built = module(parameters, lengths)
                if not isinstance(built, nn.Module):
                    raise ValueError(f"its bias module factory returned a {type(built).__name__}")
                if not any(p.requires_grad for p in built.parameters()):
                    raise ValueError(
                        "its bias module owns no trainable parameters, so nothing would be "
                        "learned; a fixed bias is a function: bias_encoding(name, summary, bias)"
                    )
                out = built(positions)
        _check_bias(out, positions, lengths.heads)
        _check_readable(out)

    def no_rope(
        parameters: Mapping[str, Any], lengths: Lengths, evaluation: bool
    ) -> dict[str, Any]:
        if AttentionInterface().get(implementation) is not attention:
            raise ValueError(
                f"its attention function {implementation!r} was replaced outside posgen's "
                "constructors; an encoding trains only with its own bias"
            )
        return dict(NO_ROPE)

    return PositionEncoding(
        name=name,
        summary=summary,
        rope=no_rope,
        attention=implementation,
        attention_module=module,
        shared_module=shared,
        check=checks,
        **({"defaults": defaults} if defaults is not None else {}),
    )


def _power_of_two_slopes(heads: int) -> list[float]:
    start = 2.0 ** (-8.0 / heads)
    return [start ** (h + 1) for h in range(heads)]


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes (Press et al.'s ``get_slopes``).

    >>> [round(s, 4) for s in alibi_slopes(6).tolist()]
    [0.25, 0.0625, 0.0156, 0.0039, 0.5, 0.125]
    """
    lower = 2 ** math.floor(math.log2(heads))
    slopes = _power_of_two_slopes(lower)
    if lower < heads:
        slopes += _power_of_two_slopes(2 * lower)[0::2][: heads - lower]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(
    position_ids: torch.Tensor, heads: int, parameters: Mapping[str, Any] | None = None
) -> torch.Tensor:
    """ALiBi's bias ``-m_h (p_i - p_j)`` ``(batch, H, T, T)`` for position ids ``(batch, T)``."""
    slopes = alibi_slopes(heads).to(position_ids.device)
    return -slopes[None, :, None, None] * distances(position_ids)[:, None]


EMBEDDING_STD = 0.02
"""The init std of the token embeddings (transformers' ``initializer_range``) and of ``learned``."""


class SinusoidalPositions(nn.Module):
    """Vaswani et al.'s ``PE[p, 2i] = sin(p / 10000^(2i/d))``, ``PE[p, 2i+1] = cos(...)``,
    scaled to the token embeddings' RMS (unscaled, it drowns them and never trains)."""

    def __init__(self, positions: int, hidden: int) -> None:
        super().__init__()
        position = torch.arange(positions, dtype=torch.float64)[:, None]
        inv_freq = THETA ** (-torch.arange(0, hidden, 2, dtype=torch.float64) / hidden)
        table = torch.zeros(positions, hidden, dtype=torch.float64)
        table[:, 0::2] = torch.sin(position * inv_freq)
        table[:, 1::2] = torch.cos(position * inv_freq)[:, : hidden // 2]
        self.table = nn.Buffer((table * EMBEDDING_STD * math.sqrt(2)).float(), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.table[position_ids]


def learned_positions(
    parameters: Mapping[str, Any], lengths: Lengths, hidden: int, positions: int
) -> nn.Module:
    """A learned table, GPT-2's normal(0, 0.02); rows past L are never trained (no decay)."""
    table = nn.Embedding(positions, hidden)
    nn.init.normal_(table.weight, std=EMBEDDING_STD)
    return table


def sinusoidal_positions(
    parameters: Mapping[str, Any], lengths: Lengths, hidden: int, positions: int
) -> nn.Module:
    return SinusoidalPositions(positions, hidden)


@dataclass(frozen=True)
class RandomPositions:
    """Randomized position ids (Ruoss et al. 2023): each row's drawn from ``range_size`` without
    replacement and sorted, keyed by ``(seed, phase, step or split, row)``."""

    seed: int
    range_size: int

    def _rows(self, keys: list[list[int]], length: int) -> torch.Tensor:
        if length > self.range_size:
            raise ValueError(f"cannot draw {length} distinct positions from {self.range_size}")
        rows = [
            np.random.default_rng(np.random.SeedSequence(key)).choice(
                self.range_size, size=length, replace=False
            )
            for key in keys
        ]
        return torch.from_numpy(np.sort(np.stack(rows), axis=1).astype(np.int64))

    def training(self, step: int, rows: int, length: int) -> torch.Tensor:
        """Position ids ``(rows, length)`` of training step ``step``'s batch."""
        return self._rows([[self.seed, 0, step, row] for row in range(rows)], length)

    def evaluation(self, split: str, start: int, rows: int, length: int) -> torch.Tensor:
        """Position ids of rows ``start .. start+rows-1`` of an evaluation split."""
        split_key = {"validation": 1, "test": 2}[split]
        keys = [[self.seed, 1, split_key, start + row] for row in range(rows)]
        return self._rows(keys, length)


def xpos(module: nn.Module, query: torch.Tensor, key: torch.Tensor, positions: torch.Tensor):
    """xPos on the rotated q and k: q times ``zeta^(p/scale_base)``, k divided by it."""
    parameters = _parameters(module)
    gamma, scale_base = float(parameters["gamma"]), float(parameters["scale_base"])
    scale = xpos_scale(positions, query.shape[-1], gamma, scale_base).to(query.dtype)
    return query * scale, key / scale, {}


def logn(module: nn.Module, query: torch.Tensor, key: torch.Tensor, positions: torch.Tensor):
    """Each query times ``max(1, log(p + 1) / log(train_positions))``."""
    scale = logn_scale(positions, int(_parameters(module)["train_positions"]))
    return query * scale[:, None, :, None].to(query.dtype), key, {}


for _name, _function, _mask in (
    ("posgen_xpos", sdpa_with(xpos), sdpa_mask),
    ("posgen_logn", sdpa_with(logn), sdpa_mask),
    ("posgen_cope", cope_attention, eager_mask),  # its own softmax: a mask always arrives
):
    AttentionInterface.register(_name, _function)
    AttentionMaskInterface.register(_name, _mask)

LOGN = "train_positions"
"""log-n's parameter: L_train, the positions of a training row (L+1)."""


def with_logn(base: PositionEncoding) -> PositionEncoding:
    """``BASE+logn``: a rope encoding with log-n query scaling and ``train_positions`` added."""
    if base.attention is not None:
        raise PEError(
            f"--pe {base.name}+logn: log-n scaling combines with rope encodings only "
            f"({base.name} has its own attention)"
        )

    def own(parameters: Mapping[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in parameters.items() if key != LOGN}

    def rope(parameters: Mapping[str, Any], lengths: Lengths, evaluation: bool) -> dict[str, Any]:
        return base.rope(own(parameters), lengths, evaluation)

    def check(parameters: Mapping[str, Any], lengths: Lengths) -> None:
        if base.check is not None:
            base.check(own(parameters), lengths)

    return replace(
        base,
        name=f"{base.name}+logn",
        summary=f"{base.summary}; with log-n query scaling",
        defaults=lambda lengths: {**base.defaults(lengths), LOGN: train_positions(lengths)},
        rope=rope,
        attention="posgen_logn",
        check=check,
    )


MODIFIERS["logn"] = with_logn


def _rope_only(parameters: Mapping[str, Any], lengths: Lengths, evaluation: bool) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": parameters["rope_theta"]}


for _row in ROPE_TYPES:
    for _encoding in _row.encodings():
        ENCODINGS.register(_encoding)
FIRE = bias_encoding(
    "fire",
    "FIRE (Li et al. 2023): a learned MLP of log(c d + 1) / log(c max(i, L) + 1), c and the "
    "threshold L learned (start L+1); one per layer; rope off",
    module=Fire,
    defaults=lambda lengths: {"width": 32, "c": 0.1, "threshold": train_positions(lengths)},
)
for _encoding in (
    bias_encoding(
        "alibi",
        "ALiBi: per-head linear distance bias with Press et al.'s geometric slopes; rope off",
        alibi_bias,
    ),
    PositionEncoding(
        name="learned",
        summary="learned absolute positions added to the input embeddings; rows past L untrained",
        input_positions=learned_positions,
    ),
    PositionEncoding(
        name="sinusoidal",
        summary="sinusoidal absolute positions (Vaswani et al.) added to the input embeddings",
        input_positions=sinusoidal_positions,
    ),
    bias_encoding(
        "t5",
        "T5 bias (Raffel et al. 2020): a learned bias per head and bucket of the distance "
        "(buckets/2 exact, then log-spaced to max_distance); one table for all layers; rope off",
        module=T5Bias,
        defaults=lambda lengths: {"buckets": 32, "max_distance": 128},
        shared=True,
    ),
    FIRE,
    replace(
        FIRE,
        name="fire-random",
        summary="randomized FIRE (McLeish et al. 2024): FIRE with randomized position ids "
        "(Ruoss et al. 2023) over L'+1 by default (--randomized-positions sets the range)",
        randomized="auto",
    ),
    bias_encoding(
        "kerple",
        "KERPLE log (Chi et al. 2022): -r1 log(1 + r2 |i - j|), r1, r2 > 0 learned per head "
        "and layer; rope off",
        module=KerpleLog,
    ),
    PositionEncoding(
        name="xpos",
        summary="xPos (Sun et al. 2023): RoPE with q scaled by zeta^(n/scale_base) and k by "
        "zeta^(-n/scale_base) per rotary pair (gamma 0.4, scale_base 512)",
        defaults=lambda lengths: {"rope_theta": THETA, "gamma": 0.4, "scale_base": 512.0},
        rope=_rope_only,
        attention="posgen_xpos",
    ),
    PositionEncoding(
        name="cope",
        summary="CoPE (Golovneva et al. 2024): contextual positions, sigmoid gates summed over "
        "the causal window, interpolated learned embeddings; rope off; eager attention (slower)",
        defaults=lambda lengths: {"positions": train_positions(lengths)},
        attention="posgen_cope",
        attention_module=CoPE,
    ),
    replace(
        with_logn(ENCODINGS["rope"]),
        name="logn",
        summary="log-n scaling (as Qwen): RoPE with queries scaled by max(1, log n / log L_train); "
        "with any rope encoding as --pe NAME+logn",
    ),
):
    ENCODINGS.register(_encoding)
ENCODINGS.seal()  # every encoding constructed from here on is a plugin's
