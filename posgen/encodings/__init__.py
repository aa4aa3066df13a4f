"""Position encodings: one registry of every ``--pe``, built in or a plugin.

- :mod:`posgen.encodings.registry` (no torch): what an encoding is, the registry
  :data:`ENCODINGS`, the resolution of a run's request, the table order of results;
- :mod:`posgen.encodings.builtin`: every built-in encoding (rope types and their Resonance
  twins, NoPE, ALiBi, learned, sinusoidal, randomized positions) and the constructors a plugin
  uses, ``rope_encoding`` and ``bias_encoding``;
- :mod:`posgen.encodings.model`: the Llama built, saved and loaded with an encoding.

A new built-in is one ``register(...)`` in ``builtin.py``; a plugin publishes its encoding
under the entry point group ``posgen.position_encodings`` (README, "Your own position
encoding") or is named ``--pe package.module:NAME``.
"""

from posgen.encodings.registry import (
    ENCODINGS,
    ENTRY_POINT_GROUP,
    NO_ROPE,
    PES,
    Lengths,
    PEError,
    PERequest,
    PositionEncoding,
    Registry,
    ResolvedPE,
    as_request,
    available,
    listing,
    pe_order,
    register,
    resolve,
)

__all__ = [
    "ENCODINGS",
    "ENTRY_POINT_GROUP",
    "NO_ROPE",
    "PES",
    "Lengths",
    "PEError",
    "PERequest",
    "PositionEncoding",
    "Registry",
    "ResolvedPE",
    "as_request",
    "available",
    "listing",
    "pe_order",
    "register",
    "resolve",
]
