"""The paper's four position embeddings as ``transformers`` rope types.

=================  ==============================  ======================================
``--pe``           training frequencies            evaluation frequencies (val and test)
=================  ==============================  ======================================
``rope``           ``default`` (base 10000)        ``default``
``resonance``      ``resonance``                   ``resonance``
``yarn``           ``default``                     ``yarn`` (transformers' own)
``resonance_yarn`` ``resonance``                   ``resonance_yarn``
=================  ==============================  ======================================

* ``resonance`` (Resonance RoPE): every rotary wavelength ``2*pi/theta_i`` rounded to the
  nearest integer, ``theta_i = 2*pi/round(2*pi/theta_i)``. Like the authors' code, *every*
  dimension is rounded, also those whose wavelength exceeds the train length.
* ``yarn``: transformers' YaRN with the authors' POSGEN settings: factor ``s = (L'+1)/(L+1)``
  (positions include BOS), ``beta_fast`` 2, ``beta_slow`` 1, attention factor
  ``0.1 ln(s) + 1`` (transformers' default for ``s``), multiplied on cos and sin, and the
  ramp computed with ``L'+1`` as the context length (``original_max_position_embeddings``),
  as the authors' code does.
* ``resonance_yarn``: the YaRN frequencies, then rounded as in ``resonance``.

As in the authors' code, the YaRN variants are applied at evaluation only: a model trains
with the unscaled frequencies and validation and test use the scaled ones
(:func:`use_frequencies` swaps them; the weights are untouched).

The two Resonance types are registered in ``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS``
(transformers' mechanism for custom rope initialisation) on import of this module, so a
model built, re-initialised or loaded with them computes the same frequencies.

Worked example (head dim 8, base 10000; wavelengths 2*pi*10000^(2i/8)):

>>> from transformers import LlamaConfig
>>> config = LlamaConfig(hidden_size=16, num_attention_heads=2, rope_parameters=rope_parameters(
...     "resonance", train_length=64, test_length=256, evaluation=False))
>>> inv_freq, scale = resonance_frequencies(config)
>>> [round(2 * math.pi / f) for f in inv_freq.tolist()], scale
([6, 63, 628, 6283], 1.0)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from posgen.train.config import PES

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


def resonance_frequencies(
    config: PreTrainedConfig, device: Any = None, seq_len: int | None = None, **_: Any
) -> tuple[torch.Tensor, float]:
    """Rope init function of ``resonance``: RoPE with integer wavelengths, no scaling."""
    return round_wavelengths(default_frequencies(config)).to(device), 1.0


def resonance_yarn_frequencies(
    config: PreTrainedConfig, device: Any = None, seq_len: int | None = None, **kwargs: Any
) -> tuple[torch.Tensor, float]:
    """Rope init function of ``resonance_yarn``: transformers' YaRN, wavelengths rounded."""
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](config, device, seq_len, **kwargs)
    return round_wavelengths(inv_freq), attention_factor


ROPE_INIT_FUNCTIONS.setdefault("resonance", resonance_frequencies)
ROPE_INIT_FUNCTIONS.setdefault("resonance_yarn", resonance_yarn_frequencies)


def yarn_factor(train_length: int, test_length: int) -> float:
    """The authors' YaRN scale ``(L'+1)/(L+1)`` (model positions count BOS).

    >>> yarn_factor(64, 256)
    3.953846153846154
    """
    return (test_length + 1) / (train_length + 1)


def rope_parameters(
    pe: str, train_length: int, test_length: int, evaluation: bool, theta: float = 10_000.0
) -> dict[str, Any]:
    """A Llama config's ``rope_parameters`` for ``pe``, in training or in evaluation.

    >>> rope_parameters("yarn", 64, 256, evaluation=False)
    {'rope_type': 'default', 'rope_theta': 10000.0}
    >>> rope_parameters("yarn", 64, 256, evaluation=True)["original_max_position_embeddings"]
    257
    """
    if pe not in PES:
        raise ValueError(f"unknown position embedding {pe!r}; use one of {', '.join(PES)}")
    rounded = pe.startswith("resonance")
    if not (evaluation and pe.endswith("yarn")):
        return {"rope_type": "resonance" if rounded else "default", "rope_theta": theta}
    return {
        "rope_type": "resonance_yarn" if rounded else "yarn",
        "rope_theta": theta,
        "factor": yarn_factor(train_length, test_length),
        "original_max_position_embeddings": test_length + 1,
        "beta_fast": YARN_BETA_FAST,
        "beta_slow": YARN_BETA_SLOW,
    }


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
