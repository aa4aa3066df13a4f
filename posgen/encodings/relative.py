"""The torch side of T5, FIRE, KERPLE (log), xPos, CoPE and log-n (registered in :mod:`.builtin`).

A bias module maps position ids ``(batch, T)`` to a bias ``(batch, heads, T, T)``.

>>> t5_buckets(torch.tensor([0, 1, 15, 16, 40, 127, 128, 10_000]), 32, 128).tolist()
[0, 1, 15, 16, 23, 31, 31, 31]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from posgen.encodings import Lengths

KERPLE_EPS = 1e-2
"""KERPLE's floor on r1 and r2 (the authors clamp both at 0.01)."""
FIRE_EPS = 1e-6


def distances(position_ids: torch.Tensor) -> torch.Tensor:
    """``p_i - p_j`` ``(batch, T, T)`` clamped at 0 (the future is masked anyway)."""
    positions = position_ids.to(torch.float32)
    return (positions[:, :, None] - positions[:, None, :]).clamp(min=0)


def t5_buckets(distance: torch.Tensor, buckets: int, max_distance: int) -> torch.Tensor:
    """T5's causal bucket of a distance ``d >= 0``: ``d`` itself below ``buckets // 2``, then
    ``buckets // 2`` more log-spaced buckets up to ``max_distance``; beyond it, the last."""
    exact = buckets // 2
    d = distance.to(torch.long).clamp(min=0)
    ratio = torch.log(d.to(torch.float32).clamp(min=1) / exact) / math.log(max_distance / exact)
    far = (exact + (ratio * (buckets - exact)).to(torch.long)).clamp(max=buckets - 1)
    return torch.where(d < exact, d, far)


class T5Bias(nn.Module):
    """T5's relative attention bias (Raffel et al. 2020): learned per head and distance bucket."""

    def __init__(self, parameters: Mapping[str, Any], lengths: Lengths) -> None:
        super().__init__()
        self.buckets = int(parameters["buckets"])
        self.max_distance = int(parameters["max_distance"])
        self.bias = nn.Embedding(self.buckets, lengths.heads)
        nn.init.normal_(self.bias.weight, std=0.02)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        bucket = t5_buckets(distances(position_ids), self.buckets, self.max_distance)
        return self.bias(bucket).permute(0, 3, 1, 2)


class Fire(nn.Module):
    """FIRE (Li et al. 2023): ``b(i, j) = f(psi(i - j) / psi(max(p_i, L)))``, ``psi(x) =
    log(c x + 1)``, ``f`` an MLP (1 -> width -> heads, ReLU), ``c`` and the threshold ``L``
    learned (``L`` as a multiplier of its start value, the authors' parametrization)."""

    def __init__(self, parameters: Mapping[str, Any], lengths: Lengths) -> None:
        super().__init__()
        width = int(parameters["width"])
        self.mlp = nn.Sequential(nn.Linear(1, width), nn.ReLU(), nn.Linear(width, lengths.heads))
        self.c = nn.Parameter(torch.tensor(float(parameters["c"])))
        self.threshold_scale = nn.Parameter(torch.tensor(1.0))
        self.threshold_start = nn.Buffer(torch.tensor(float(parameters["threshold"])))

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        c = self.c.abs()
        threshold = (self.threshold_scale * self.threshold_start).abs()
        positions = position_ids.to(torch.float32)
        normalizer = torch.log(c * torch.maximum(positions, threshold) + 1) + FIRE_EPS
        x = torch.log(c * distances(position_ids) + 1) / normalizer[:, :, None]
        return self.mlp(x[..., None]).permute(0, 3, 1, 2)


class KerpleLog(nn.Module):
    """KERPLE-log (Chi et al. 2022): ``-r1 log(1 + r2 |p_i - p_j|)``, ``r1, r2 > 0`` learned per
    head (clamped at :data:`KERPLE_EPS`; started uniform in (0, 2) and (0, 1), as the authors)."""

    def __init__(self, parameters: Mapping[str, Any], lengths: Lengths) -> None:
        super().__init__()
        self.r1 = nn.Parameter(torch.rand(lengths.heads) * 2)
        self.r2 = nn.Parameter(torch.rand(lengths.heads))

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        r1 = self.r1.clamp(min=KERPLE_EPS)[None, :, None, None]
        r2 = self.r2.clamp(min=KERPLE_EPS)[None, :, None, None]
        return -r1 * torch.log1p(r2 * distances(position_ids)[:, None])


def xpos_scale(
    position_ids: torch.Tensor, head_dim: int, gamma: float, scale_base: float
) -> torch.Tensor:
    """xPos (Sun et al. 2023): ``zeta_i^(p / scale_base)`` ``(batch, 1, T, head_dim)``, ``zeta_i
    = (2i/d + gamma) / (1 + gamma)`` for rotary pair i (dims i and i + d/2, as Llama's halves)."""
    zeta = (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim + gamma) / (1 + gamma)
    power = position_ids.to(torch.float32)[..., None] / scale_base
    scale = zeta.to(position_ids.device) ** power
    return torch.cat([scale, scale], dim=-1)[:, None]


class CoPE(nn.Module):
    """CoPE's (Golovneva et al. 2024) position embeddings ``(head_dim, positions)`` of one layer
    (shared by its heads, zero at the start, as the authors)."""

    def __init__(self, parameters: Mapping[str, Any], lengths: Lengths) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(lengths.head_dim, int(parameters["positions"])))

    def forward(self, query: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``q_i . e[p_ij]`` of the contextual positions ``p_ij = sum_{t=j..i} sigmoid(l_it)``
        (masked gates are 0), interpolated between integers and clamped to the last one; a
        position never exceeds the row's keys, so the columns past them are left out."""
        gates = torch.sigmoid(logits)
        embedding = self.embedding[:, : logits.shape[-1] + 1]
        positions = gates.flip(-1).cumsum(dim=-1).flip(-1).clamp(max=embedding.shape[1] - 1)
        floor = positions.floor()
        at_integers = query @ embedding.to(query.dtype)
        low = at_integers.gather(-1, floor.long())
        high = at_integers.gather(-1, positions.ceil().long())
        weight = (positions - floor).to(query.dtype)
        return high * weight + low * (1 - weight)


def allowed_keys(
    attention_mask: torch.Tensor | None, queries: int, keys: int, device: torch.device
) -> torch.Tensor:
    """Where query i may read key j: causal (always, whatever mask arrives) and, if given, the
    mask's own (boolean: True reads; float: 0 reads, a large negative does not)."""
    allowed = torch.ones(queries, keys, dtype=torch.bool, device=device).tril(keys - queries)
    if attention_mask is None:
        return allowed[None, None]
    if attention_mask.dtype == torch.bool:
        return allowed & attention_mask
    return allowed & (attention_mask > torch.finfo(attention_mask.dtype).min / 2)


def cope_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with CoPE: ``softmax(q.k / sqrt(d) + q.e[p])`` (its own softmax)."""
    scaling = module.head_dim**-0.5 if scaling is None else scaling
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    logits = (query @ key.transpose(-1, -2)) * scaling
    allowed = allowed_keys(attention_mask, query.shape[2], key.shape[2], query.device)
    logits = logits.masked_fill(~allowed, -math.inf)
    logits = logits + module.position_module(query, logits)
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return (weights @ value).transpose(1, 2).contiguous(), weights


def logn_scale(position_ids: torch.Tensor, train_positions: int) -> torch.Tensor:
    """log-n scaling (Qwen): ``max(1, log(n) / log(L_train))`` per query ``(batch, T)``, ``n =
    p + 1`` the tokens up to and including the query at position ``p``.

    >>> [round(v, 4) for v in logn_scale(torch.tensor([[0, 64, 65, 256]]), 65)[0].tolist()]
    [1.0, 1.0, 1.0037, 1.3293]
    """
    n = position_ids.to(torch.float32) + 1
    return (torch.log(n) / math.log(train_positions)).clamp(min=1.0)
