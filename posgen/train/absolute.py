"""Absolute position embeddings added to the input embeddings of the same Llama model.

A module mapping position ids ``(batch, T)`` to ``(batch, T, hidden)`` is attached to the
``LlamaModel`` as ``position_embedding`` (so its weights are saved with the model's) and a
forward pre-hook adds it to the token embeddings: ``inputs_embeds = embed_tokens(input_ids)
+ position_embedding(position_ids)`` (position ids ``0 .. T-1`` unless given). Rotary
embeddings are off (:data:`posgen.train.encoding.NO_ROPE`); the decoder block is unchanged.

- ``learned``: an ``nn.Embedding`` table (GPT-2's initialisation, normal with std 0.02),
  one row per position the model can meet: ``0 .. L'`` (``0 .. R-1`` with randomized
  positions). Training sees positions ``0 .. L`` only, and the trainer exempts the table
  from weight decay, so rows past L stay exactly as initialised (tested), as in the studies
  that compare learned positions.
- ``sinusoidal``: Vaswani et al.'s fixed table, ``PE[p, 2i] = sin(p / 10000^(2i/d))``,
  ``PE[p, 2i+1] = cos(p / 10000^(2i/d))``, nothing trained.

>>> table = sinusoidal_table(3, 4)
>>> [round(v, 4) for v in table[1].tolist()]
[0.8415, 0.5403, 0.01, 0.9999]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from posgen.train.encoding import Lengths, PositionEncoding

ATTRIBUTE = "position_embedding"
"""Name of the input-position module on the ``LlamaModel``."""


def sinusoidal_table(positions: int, hidden: int, base: float = 10_000.0) -> torch.Tensor:
    """Vaswani et al.'s sinusoids: ``(positions, hidden)``, sin on even and cos on odd columns."""
    position = torch.arange(positions, dtype=torch.float64)[:, None]
    inv_freq = base ** (-torch.arange(0, hidden, 2, dtype=torch.float64) / hidden)
    table = torch.zeros(positions, hidden, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)[:, : hidden // 2]
    return table.float()


class SinusoidalPositions(nn.Module):
    """A fixed sinusoidal table looked up by position id (a buffer, not saved: recomputed)."""

    def __init__(self, positions: int, hidden: int) -> None:
        super().__init__()
        self.table = nn.Buffer(sinusoidal_table(positions, hidden), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.table[position_ids]


def learned_positions(
    parameters: Mapping[str, Any], lengths: Lengths, hidden: int, positions: int
) -> nn.Module:
    """A learned table of ``positions`` rows, initialised normal(0, 0.02)."""
    table = nn.Embedding(positions, hidden)
    nn.init.normal_(table.weight, std=0.02)
    return table


def sinusoidal_positions(
    parameters: Mapping[str, Any], lengths: Lengths, hidden: int, positions: int
) -> nn.Module:
    """The fixed sinusoidal table."""
    return SinusoidalPositions(positions, hidden)


def _add_positions(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    kwargs = dict(kwargs)
    if args:  # LlamaModel(input_ids, ...) called positionally
        kwargs["input_ids"], args = args[0], args[1:]
    input_ids = kwargs.pop("input_ids", None)
    embeds = kwargs.get("inputs_embeds")
    if embeds is None:
        embeds = module.embed_tokens(input_ids)
    position_ids = kwargs.get("position_ids")
    if position_ids is None:
        position_ids = torch.arange(embeds.shape[1], device=embeds.device)[None]
    added = getattr(module, ATTRIBUTE)(position_ids).to(embeds.dtype)
    kwargs["inputs_embeds"] = embeds + added
    kwargs["input_ids"] = None
    return args, kwargs


def attach(model: nn.Module, positions: nn.Module) -> None:
    """Attach ``positions`` to ``model``'s ``LlamaModel`` and add it to the input embeddings."""
    base = model.base_model
    setattr(base, ATTRIBUTE, positions)
    base.register_forward_pre_hook(_add_positions, with_kwargs=True)


def no_decay_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the attached input-position module (trained without weight decay)."""
    module = getattr(model.base_model, ATTRIBUTE, None)
    return list(module.parameters()) if module is not None else []


LEARNED = PositionEncoding(
    name="learned",
    summary="learned absolute positions added to the input embeddings; rows past L untrained",
    input_positions=learned_positions,
)
SINUSOIDAL = PositionEncoding(
    name="sinusoidal",
    summary="sinusoidal absolute positions (Vaswani et al.) added to the input embeddings",
    input_positions=sinusoidal_positions,
)
