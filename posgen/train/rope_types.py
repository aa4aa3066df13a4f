"""Rope encodings of ``--pe``: the paper's four, every transformers rope type, Resonance of each.

Defaults come from the data's lengths L and L' (``s = (L'+1)/(L+1)``, positions count BOS),
as the paper does for YaRN. Every default can be changed with ``--pe-param key=value``.

=========================  ==================  ===============================================
``--pe``                   transformers type   defaults (``rope_theta`` 10000 for all)
=========================  ==================  ===============================================
``rope``                   ``default``         -
``linear`` (PI)            ``linear``          ``factor`` s, ``scale_at`` evaluation
``dynamic`` (dynamic NTK)  ``dynamic``         ``factor`` 1; ``max_position_embeddings`` L+1
``yarn`` (paper)           ``yarn``            ``factor`` s, ``original_max_position_embeddings``
                                               L'+1, ``beta_fast`` 2, ``beta_slow`` 1,
                                               ``scale_at`` evaluation
``longrope``               ``longrope``        ``factor`` s, ``original_max_position_embeddings``
                                               L+1, ``short_factor`` 1, ``long_factor`` s
``llama3``                 ``llama3``          ``factor`` s, ``original_max_position_embeddings``
                                               L+1, ``low_freq_factor`` 1, ``high_freq_factor`` 4,
                                               ``scale_at`` evaluation
``proportional`` (partial) ``proportional``    ``partial_rotary_factor`` 0.5, ``factor`` 1
``nope``                   ``proportional``    ``partial_rotary_factor`` 0 (nothing rotates)
=========================  ==================  ===============================================

``resonance`` and ``resonance_<type>`` are the same with wavelengths rounded
(:mod:`posgen.train.rope`); ``longrope`` has no Resonance variant (see
:data:`posgen.train.rope.RESONANCE_TYPES`).

``scale_at``: ``evaluation`` (the default of linear, yarn and llama3, as the paper applies
YaRN) trains with the unscaled ``default`` frequencies (``resonance`` for the Resonance
variants) and validates and tests with the scaled ones; ``train`` uses the scaled ones
throughout. ``dynamic`` and ``longrope`` scale themselves by the row length, so they are
train-time: dynamic NTK keeps the default base up to ``max_position_embeddings`` = L+1
positions and grows it past that, longrope switches from its short to its long factors past
``original_max_position_embeddings``. A scalar ``short_factor``/``long_factor`` is used for
every rotary pair (a list gives one per pair).

``proportional`` in a Llama block: transformers' ``default`` type *ignores*
``partial_rotary_factor`` and ``linear`` with a factor below 1 does not fit the head
(tested), so partial RoPE and NoPE use ``proportional``: the first
``partial_rotary_factor * d/2`` rotary pairs keep RoPE's frequencies ``base^(-2i/d)``, the
others get frequency 0 (not rotated).

>>> lengths = Lengths(train=64, test=256, head_dim=16, heads=4)
>>> ROPE_ENCODINGS["linear"].rope(ROPE_ENCODINGS["linear"].defaults(lengths), lengths, True)
{'rope_type': 'linear', 'rope_theta': 10000.0, 'factor': 3.953846153846154}
>>> ROPE_ENCODINGS["linear"].when(ROPE_ENCODINGS["linear"].defaults(lengths), lengths)
'evaluation-time'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from posgen.card.result_cells import PES
from posgen.train.encoding import Lengths, PositionEncoding
from posgen.train.rope import RESONANCE_TYPES, YARN_BETA_FAST, YARN_BETA_SLOW

THETA = 10_000.0
SCALE_AT = ("evaluation", "train")
"""Values of ``scale_at``."""

Defaults = Callable[[Lengths], dict[str, Any]]


def _base(lengths: Lengths) -> dict[str, Any]:
    return {"rope_theta": THETA}


def _linear(lengths: Lengths) -> dict[str, Any]:
    return {"rope_theta": THETA, "factor": lengths.scale, "scale_at": "evaluation"}


def _dynamic(lengths: Lengths) -> dict[str, Any]:
    return {"rope_theta": THETA, "factor": 1.0}


def _yarn(lengths: Lengths) -> dict[str, Any]:
    return {
        "rope_theta": THETA,
        "factor": lengths.scale,
        "original_max_position_embeddings": lengths.test + 1,
        "beta_fast": YARN_BETA_FAST,
        "beta_slow": YARN_BETA_SLOW,
        "scale_at": "evaluation",
    }


def _longrope(lengths: Lengths) -> dict[str, Any]:
    return {
        "rope_theta": THETA,
        "factor": lengths.scale,
        "original_max_position_embeddings": lengths.train + 1,
        "short_factor": 1.0,
        "long_factor": lengths.scale,
    }


def _llama3(lengths: Lengths) -> dict[str, Any]:
    return {
        "rope_theta": THETA,
        "factor": lengths.scale,
        "original_max_position_embeddings": lengths.train + 1,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "scale_at": "evaluation",
    }


def _proportional(lengths: Lengths) -> dict[str, Any]:
    return {"rope_theta": THETA, "partial_rotary_factor": 0.5, "factor": 1.0}


def _nope(lengths: Lengths) -> dict[str, Any]:
    return {"rope_theta": THETA, "partial_rotary_factor": 0.0}


def rope_of(rope_type: str, unscaled: str) -> Callable[..., dict[str, Any]]:
    """``rope(parameters, lengths, evaluation)`` of a rope encoding of ``rope_type``.

    With ``scale_at=evaluation`` training uses ``{"rope_type": unscaled, "rope_theta": ...}``.
    Pair-wise factor lists of longrope are expanded from scalars to ``head_dim / 2`` entries.
    """

    def rope(parameters: Mapping[str, Any], lengths: Lengths, evaluation: bool) -> dict[str, Any]:
        scale_at = parameters.get("scale_at", "train")
        if scale_at not in SCALE_AT:
            raise ValueError(f"scale_at {scale_at!r}: use one of {', '.join(SCALE_AT)}")
        if scale_at == "evaluation" and not evaluation:
            return {"rope_type": unscaled, "rope_theta": parameters["rope_theta"]}
        out: dict[str, Any] = {"rope_type": rope_type}
        for key, value in parameters.items():
            if key == "scale_at":
                continue
            if key in ("short_factor", "long_factor") and not isinstance(value, list):
                value = [float(value)] * (lengths.head_dim // 2)
            out[key] = value
        return out

    return rope


def _dynamic_positions(parameters: Mapping[str, Any], lengths: Lengths) -> int:
    return lengths.train + 1


# name -> (transformers rope type, defaults, optional keys, summary)
_TYPES: dict[str, tuple[str, Defaults, tuple[str, ...], str]] = {
    "rope": ("default", _base, (), "RoPE, base 10000 (transformers' default rope type)"),
    "linear": (
        "linear",
        _linear,
        (),
        "position interpolation (PI): frequencies / factor; at evaluation by default",
    ),
    "dynamic": (
        "dynamic",
        _dynamic,
        (),
        "dynamic NTK: the base grows with the row length past L+1 positions",
    ),
    "yarn": (
        "yarn",
        _yarn,
        ("attention_factor", "mscale", "mscale_all_dim", "truncate"),
        "YaRN with the paper's settings (beta 2 and 1, ramp over L'+1); at evaluation",
    ),
    "longrope": (
        "longrope",
        _longrope,
        ("attention_factor",),
        "LongRoPE: short factors up to L+1 positions, long factors past it (no Resonance "
        "variant: transformers switches factors only for the type named longrope)",
    ),
    "llama3": (
        "llama3",
        _llama3,
        (),
        "Llama 3.1 scaling: long wavelengths / factor, smooth between; at evaluation",
    ),
    "proportional": (
        "proportional",
        _proportional,
        (),
        "partial RoPE: a fraction of the rotary pairs rotated (partial_rotary_factor)",
    ),
}


def _encodings() -> dict[str, PositionEncoding]:
    out: dict[str, PositionEncoding] = {}
    for name, (rope_type, defaults, optional, summary) in _TYPES.items():
        positions = _dynamic_positions if rope_type == "dynamic" else None
        out[name] = PositionEncoding(
            name=name,
            summary=summary,
            defaults=defaults,
            rope=rope_of(rope_type, "default"),
            optional=optional,
            max_positions=positions,
        )
        if rope_type in RESONANCE_TYPES:
            resonance = RESONANCE_TYPES[rope_type]
            out[resonance] = PositionEncoding(
                name=resonance,
                summary=f"Resonance RoPE of {name}: its wavelengths rounded to integers",
                defaults=defaults,
                rope=rope_of(resonance, "resonance"),
                optional=optional,
                max_positions=positions,
            )
    out["nope"] = PositionEncoding(
        name="nope",
        summary="NoPE: no position encoding (proportional with partial_rotary_factor 0)",
        defaults=_nope,
        rope=rope_of("proportional", "default"),
    )
    return out


ROPE_ENCODINGS = _encodings()
"""Every rope encoding by ``--pe`` name (the paper's four first)."""


def rope_parameters(
    pe: str, train_length: int, test_length: int, evaluation: bool, theta: float = THETA
) -> dict[str, Any]:
    """A Llama config's ``rope_parameters`` for one of the paper's four, with its defaults.

    >>> rope_parameters("yarn", 64, 256, evaluation=False)
    {'rope_type': 'default', 'rope_theta': 10000.0}
    >>> rope_parameters("resonance_yarn", 64, 256, evaluation=False)
    {'rope_type': 'resonance', 'rope_theta': 10000.0}
    >>> rope_parameters("yarn", 64, 256, evaluation=True)["original_max_position_embeddings"]
    257
    """
    if pe not in PES:
        raise ValueError(f"unknown position embedding {pe!r}; use one of {', '.join(PES)}")
    encoding = ROPE_ENCODINGS[pe]
    lengths = Lengths(train=train_length, test=test_length, head_dim=2, heads=1)
    parameters = {**encoding.defaults(lengths), "rope_theta": theta}
    return encoding.rope(parameters, lengths, evaluation)


def rope_encoding(
    name: str,
    summary: str,
    frequencies: Callable[..., Any],
    defaults: Defaults | None = None,
) -> PositionEncoding:
    """A plugin's rope init function as a position encoding.

    ``frequencies(config, device=None, seq_len=None, **kwargs) -> (inv_freq, attention
    scaling)`` is registered in transformers' ``ROPE_INIT_FUNCTIONS`` as rope type ``name``
    (transformers' own signature; it reads ``config.rope_parameters``). ``defaults(lengths)``
    gives its parameters (``rope_theta`` 10000 unless given); a ``scale_at`` of
    ``evaluation`` there trains with the ``default`` type and evaluates with ``name``.
    """
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    ROPE_INIT_FUNCTIONS[name] = frequencies
    return PositionEncoding(
        name=name, summary=summary, defaults=defaults or _base, rope=rope_of(name, "default")
    )
