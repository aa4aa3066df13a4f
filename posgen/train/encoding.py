"""What a ``--pe`` is: the position-encoding plugin API (no torch needed to import it).

Every position encoding, built in or a plugin, is a :class:`PositionEncoding`, and every one
enters the *same* stock ``LlamaForCausalLM`` through one or more of three doors:

- ``rope``: the config's ``rope_parameters`` in training and in evaluation (a rope type
  registered in ``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS``). Encodings that do
  not rotate use :data:`NO_ROPE` (transformers' ``proportional`` type with
  ``partial_rotary_factor`` 0: every inverse frequency 0, so cos = 1 and sin = 0);
- ``attention``: the name of an attention function registered in transformers'
  ``AttentionInterface`` (ALiBi adds its bias there, see :mod:`posgen.train.alibi`);
- ``input_positions``: a module mapping position ids ``(batch, T)`` to vectors
  ``(batch, T, hidden)`` added to the token embeddings (:mod:`posgen.train.absolute`).

Parameters are ``key=value`` pairs over defaults computed from the data's lengths
(:class:`Lengths`), as the paper does for YaRN. An encoding is *train-time* when it trains
and evaluates with the same rope parameters, *evaluation-time* when training uses other
(unscaled) ones, as the paper's YaRN does.

>>> request = PERequest.parse("linear", ["factor=2", "scale_at=train"], None)
>>> request.parameters, request.randomized
({'factor': 2, 'scale_at': 'train'}, None)
>>> PERequest.parse("rope", [], "auto").label_suffix
'+randomized'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from torch import nn

ENTRY_POINT_GROUP = "posgen.position_encodings"
"""The entry point group a package registers its position encodings under."""

NO_ROPE: dict[str, Any] = {
    "rope_type": "proportional",
    "rope_theta": 10_000.0,
    "partial_rotary_factor": 0.0,
}
"""Rope parameters that rotate nothing (tested: logits do not depend on the positions)."""

When = Literal["train-time", "evaluation-time"]


@dataclass(frozen=True)
class Lengths:
    """The data's lengths and the model's head shape: what defaults are computed from.

    ``train`` is L and ``test`` is L' (row lengths, BOS excluded); a model sees positions
    ``0 .. L`` in training (BOS at 0) and ``0 .. L'`` in the test split.

    >>> Lengths(train=64, test=256, head_dim=16, heads=4).scale
    3.953846153846154
    """

    train: int
    test: int
    head_dim: int
    heads: int

    @property
    def scale(self) -> float:
        """``(L'+1)/(L+1)``: the paper's YaRN factor (model positions count BOS)."""
        return (self.test + 1) / (self.train + 1)


def _no_parameters(lengths: Lengths) -> dict[str, Any]:
    return {}


def _no_rope(parameters: Mapping[str, Any], lengths: Lengths, evaluation: bool) -> dict[str, Any]:
    return dict(NO_ROPE)


InputPositions = Callable[[Mapping[str, Any], Lengths, int, int], "nn.Module"]
"""``(parameters, lengths, hidden size, number of positions) -> module`` for input positions."""


@dataclass(frozen=True)
class PositionEncoding:
    """One entry of the ``--pe`` vocabulary.

    ``defaults(lengths)`` gives every parameter and its default (the keys a user may set,
    plus ``optional``); ``rope(parameters, lengths, evaluation)`` the Llama config's
    ``rope_parameters``; ``attention`` a registered attention implementation (None: sdpa);
    ``input_positions`` a module factory for positions added to the input embeddings;
    ``max_positions(parameters, lengths)`` the config's ``max_position_embeddings`` (L'+1 by
    default; dynamic NTK needs L+1); ``confound`` a line for the results table when the
    encoding is not the plain Llama block.
    """

    name: str
    summary: str
    defaults: Callable[[Lengths], dict[str, Any]] = _no_parameters
    rope: Callable[[Mapping[str, Any], Lengths, bool], dict[str, Any]] = _no_rope
    attention: str | None = None
    input_positions: InputPositions | None = None
    optional: tuple[str, ...] = ()
    max_positions: Callable[[Mapping[str, Any], Lengths], int] | None = None
    confound: str | None = None
    source: str = field(default="built-in", compare=False)

    def when(self, parameters: Mapping[str, Any], lengths: Lengths) -> When:
        """Train-time when training and evaluation use the same rope parameters."""
        same = self.rope(parameters, lengths, False) == self.rope(parameters, lengths, True)
        return "train-time" if same else "evaluation-time"


def parse_value(text: str) -> Any:
    """A ``key=value`` value: JSON when it parses (numbers, lists, true), else the text.

    >>> parse_value("2.5"), parse_value("[1, 2]"), parse_value("train")
    (2.5, [1, 2], 'train')
    """
    try:
        return json.loads(text)
    except ValueError:
        return text


class PERequest(BaseModel):
    """What the user asked for: a name (built in, entry point, or ``module:attr``),
    parameter overrides, and randomized positions (a range size R, ``auto`` = L'+1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    parameters: dict[str, Any] = Field(default_factory=dict)
    randomized: int | Literal["auto"] | None = None

    @classmethod
    def parse(cls, name: str, pairs: list[str] | tuple[str, ...], randomized: str | None):
        """From ``--pe``, ``--pe-param key=value`` (repeatable), ``--randomized-positions``."""
        parameters: dict[str, Any] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--pe-param {pair!r}: use key=value")
            parameters[key.strip()] = parse_value(value.strip())
        chosen: int | str | None = randomized
        if randomized is not None and randomized != "auto":
            try:
                chosen = int(randomized)
            except ValueError:
                raise ValueError(
                    f"--randomized-positions {randomized!r}: use a range size or auto"
                ) from None
        return cls(name=name, parameters=parameters, randomized=chosen)

    @property
    def label_suffix(self) -> str:
        """``+randomized`` (with its range when given) for randomized positions."""
        if self.randomized is None:
            return ""
        return "+randomized" if self.randomized == "auto" else f"+randomized{self.randomized}"
