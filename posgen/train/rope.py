"""Rotary frequencies: Resonance variants of transformers' rope types, registered with it.

The rope *encodings* of ``--pe`` (the paper's four and every other rope type, with their
parameters) are in :mod:`posgen.train.rope_types`; this module holds the frequencies.

* Resonance RoPE: every rotary wavelength ``2*pi/theta_i`` rounded to the nearest integer,
  ``theta_i = 2*pi/round(2*pi/theta_i)``. Like the authors' code, *every* dimension is
  rounded, also those whose wavelength exceeds the train length.
* ``resonance_<type>`` (:data:`RESONANCE_TYPES`): transformers' own frequencies of rope type
  ``<type>``, then rounded; ``resonance`` is the rounded ``default``.

They are registered in ``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS``
(transformers' mechanism for custom rope initialisation) on import of this module, so a
model built, re-initialised or loaded with them computes the same frequencies, and
``resonance_dynamic`` is still updated by transformers' dynamic-rope hook (it matches on
``"dynamic" in rope_type``).

Worked example (head dim 8, base 10000; wavelengths 2*pi*10000^(2i/8)):

>>> from transformers import LlamaConfig
>>> config = LlamaConfig(hidden_size=16, num_attention_heads=2,
...                      rope_parameters={"rope_type": "resonance", "rope_theta": 10000.0})
>>> inv_freq, scale = resonance_frequencies(config)
>>> [round(2 * math.pi / f) for f in inv_freq.tolist()], scale
([6, 63, 628, 6283], 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

YARN_BETA_FAST = 2.0
YARN_BETA_SLOW = 1.0
"""The authors' YaRN ramp bounds for POSGEN (transformers' defaults are 32 and 1)."""


def rope_theta(config: PreTrainedConfig) -> tuple[float, int]:
    """``(base, rotary dimension)`` of a config's rope parameters."""
    parameters = config.rope_parameters
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return parameters["rope_theta"], int(head_dim * parameters.get("partial_rotary_factor", 1.0))


def default_frequencies(config: PreTrainedConfig) -> torch.Tensor:
    """RoPE's inverse frequencies ``base^(-2i/d)`` (what Llama's ``default`` type computes)."""
    base, dim = rope_theta(config)
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))


def round_wavelengths(inv_freq: torch.Tensor) -> torch.Tensor:
    """Inverse frequencies whose wavelengths ``2*pi/theta`` are rounded to integers.

    >>> wavelengths = 2 * math.pi / round_wavelengths(torch.tensor([1.0, 0.1], dtype=torch.float64))
    >>> wavelengths.round(decimals=9).tolist()
    [6.0, 63.0]
    """
    wavelengths = torch.round(2 * math.pi / inv_freq)
    return 2 * math.pi / wavelengths


def resonance_of(rope_type: str) -> Callable[..., tuple[torch.Tensor, float]]:
    """The rope init function of ``resonance_<rope_type>``: transformers' own init function of
    ``rope_type`` (``default``: :func:`default_frequencies`), wavelengths rounded.

    Zero frequencies (the unrotated pairs of ``proportional``) stay zero.
    """

    def frequencies(
        config: PreTrainedConfig, device: Any = None, seq_len: int | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, float]:
        if rope_type == "default":
            inv_freq, attention_factor = default_frequencies(config), 1.0
        else:
            init = ROPE_INIT_FUNCTIONS[rope_type]
            inv_freq, attention_factor = init(config, device, seq_len, **kwargs)
        return round_wavelengths(inv_freq).to(device), attention_factor

    frequencies.__name__ = f"resonance_{rope_type}_frequencies"
    return frequencies


RESONANCE_TYPES = {
    "default": "resonance",
    "linear": "resonance_linear",
    "dynamic": "resonance_dynamic",
    "yarn": "resonance_yarn",
    "llama3": "resonance_llama3",
    "proportional": "resonance_proportional",
}
"""Resonance variant (registered rope type) of each transformers rope type that has one.

``longrope`` has none: transformers switches longrope's short and long factors only for the
rope type named exactly ``longrope``, so a renamed variant would never switch.
"""

for _base, _name in RESONANCE_TYPES.items():
    ROPE_INIT_FUNCTIONS.setdefault(_name, resonance_of(_base))
resonance_frequencies = ROPE_INIT_FUNCTIONS["resonance"]
resonance_yarn_frequencies = ROPE_INIT_FUNCTIONS["resonance_yarn"]


def use_frequencies(model: PreTrainedModel, parameters: dict[str, Any]) -> None:
    """Give ``model`` the rotary frequencies of ``parameters``; weights stay as they are.

    The model's rotary embedding is rebuilt (stock class, from the updated config) on the
    device of the old one; nothing else in the model changes.
    """
    base = model.base_model
    old = base.rotary_emb
    device = old.inv_freq.device
    base.config.rope_parameters = dict(parameters)
    base.config.max_position_embeddings = max(
        base.config.max_position_embeddings, parameters.get("original_max_position_embeddings", 0)
    )
    base.rotary_emb = type(old)(config=base.config).to(device)
