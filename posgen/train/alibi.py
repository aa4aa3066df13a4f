"""Attention-bias encodings inside the Llama block: ALiBi, and any bias a plugin brings.

transformers lets a model use an attention function registered in its
``AttentionInterface``; :func:`bias_encoding` registers one that computes a bias from the
position ids and hands it to transformers' own SDPA attention (its ``position_bias``
argument, added to the logits before the softmax, with the causal mask). Rotary
embeddings are off (:data:`posgen.train.encoding.NO_ROPE`), so the block is Llama's
with the bias as its only position signal. A matching mask function (transformers'
``sdpa_mask``) is registered under the same name.

ALiBi (Press et al. 2022): head h of H adds ``-m_h (i - j)`` to the logit of query i and
key j, with the geometric slopes ``m_h = 2^(-8h/H)`` (h = 1 .. H) when H is a power of
two, and for other H the slopes of the power of two below it followed by every other
slope of twice that power (the authors' ``get_slopes``). Distances use the position ids,
so randomized positions change them too.

>>> [round(s, 6) for s in alibi_slopes(4).tolist()]
[0.25, 0.0625, 0.015625, 0.003906]
>>> [round(s, 4) for s in alibi_slopes(6).tolist()]
[0.25, 0.0625, 0.0156, 0.0039, 0.5, 0.125]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from posgen.train.encoding import PositionEncoding

Bias = Callable[[torch.Tensor, int, Mapping[str, Any]], torch.Tensor]
"""``(position_ids (batch, T), heads, parameters) -> additive bias (batch, heads, T, T)``."""

PARAMETERS_ATTRIBUTE = "posgen_pe_parameters"
"""Config attribute holding a bias encoding's parameters (saved with the config)."""


def _power_of_two_slopes(heads: int) -> list[float]:
    start = 2.0 ** (-8.0 / heads)
    return [start ** (h + 1) for h in range(heads)]


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes (Press et al.), float32."""
    if heads < 1:
        raise ValueError(f"heads must be positive, got {heads}")
    lower = 2 ** math.floor(math.log2(heads))
    slopes = _power_of_two_slopes(lower)
    if lower < heads:
        slopes += _power_of_two_slopes(2 * lower)[0::2][: heads - lower]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(
    position_ids: torch.Tensor, heads: int, parameters: Mapping[str, Any] | None = None
) -> torch.Tensor:
    """ALiBi's bias ``-m_h (p_i - p_j)`` for position ids ``(batch, T)``: ``(batch, H, T, T)``.

    Entries above the diagonal (future keys) are masked by the attention anyway.

    >>> alibi_bias(torch.tensor([[0, 1, 3]]), heads=1)[0, 0, 2].tolist()
    [-0.01171875, -0.0078125, -0.0]
    """
    positions = position_ids.to(torch.float32)
    distance = positions[:, None, :, None] - positions[:, None, None, :]
    slopes = alibi_slopes(heads).to(position_ids.device)
    return -slopes[None, :, None, None] * distance


def attention_name(name: str) -> str:
    """The attention implementation registered for bias encoding ``name``."""
    return f"posgen_bias_{name}"


def register_bias(name: str, bias: Bias) -> str:
    """Register an attention function (and SDPA's mask) adding ``bias``; returns its name."""

    def attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        if position_ids is None:
            position_ids = torch.arange(query.shape[2], device=query.device)[None]
        parameters = getattr(module.config, PARAMETERS_ATTRIBUTE, None) or {}
        heads = module.config.num_attention_heads
        position_bias = bias(position_ids, heads, parameters).to(query.dtype)
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, position_bias=position_bias, **kwargs
        )

    implementation = attention_name(name)
    AttentionInterface.register(implementation, attention)
    AttentionMaskInterface.register(implementation, sdpa_mask)
    return implementation


def bias_encoding(
    name: str,
    summary: str,
    bias: Bias,
    defaults: Callable[..., dict[str, Any]] | None = None,
) -> PositionEncoding:
    """A position encoding that adds ``bias`` to the attention logits of a Llama block.

    ``defaults(lengths)`` gives its parameters (read back by ``bias`` as its third argument).
    """
    extra = {"defaults": defaults} if defaults is not None else {}
    return PositionEncoding(
        name=name, summary=summary, attention=register_bias(name, bias), **extra
    )


ALIBI = bias_encoding(
    "alibi",
    "ALiBi: per-head linear distance bias with Press et al.'s geometric slopes; rope off",
    alibi_bias,
)
