"""The ``--pe`` vocabulary: built-in encodings, plugins, and their resolution for a run.

A name resolves, in this order, to a built-in encoding (:data:`BUILT_IN`), an entry point of
the group ``posgen.position_encodings`` (``[project.entry-points."posgen.position_encodings"]
myrope = "mypackage.pe:MY_ROPE"``), or a ``package.module:attribute`` reference. The object
found must be a :class:`~posgen.train.encoding.PositionEncoding`.

:func:`resolve` turns a :class:`~posgen.train.encoding.PERequest` and the run's
:class:`~posgen.train.encoding.Lengths` into a :class:`ResolvedPE`: every parameter (defaults
with the overrides), the rope parameters in training and evaluation, and the randomized
position range. Runs whose :meth:`ResolvedPE.training_key` agree train identically, so one
training can serve them all (:func:`posgen.train.trainer.train_runs`).

>>> lengths = Lengths(train=64, test=256, head_dim=16, heads=4)
>>> resolve(PERequest(name="linear", parameters={"factor": 2}), lengths).label
'linear(factor=2)'
>>> resolve(PERequest(name="alibi", randomized="auto"), lengths).randomized
257
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from posgen.card.result_cells import PES
from posgen.train.absolute import LEARNED, SINUSOIDAL
from posgen.train.alibi import ALIBI
from posgen.train.encoding import (
    ENTRY_POINT_GROUP,
    NO_ROPE,
    Lengths,
    PERequest,
    PositionEncoding,
)
from posgen.train.rope_types import ROPE_ENCODINGS


class PEError(ValueError):
    """An unknown position encoding, a bad parameter or a broken plugin (one line)."""


def _built_in() -> dict[str, PositionEncoding]:
    ordered = [*PES, *(name for name in ROPE_ENCODINGS if name not in PES)]
    out = {name: ROPE_ENCODINGS[name] for name in ordered}
    for encoding in (ALIBI, LEARNED, SINUSOIDAL):
        out[encoding.name] = encoding
    return out


BUILT_IN = _built_in()
"""Built-in encodings by name: the paper's four, the other rope encodings, NoPE, ALiBi,
learned and sinusoidal absolute positions."""


def _checked(found: Any, where: str) -> PositionEncoding:
    if not isinstance(found, PositionEncoding):
        raise PEError(f"{where} is a {type(found).__name__}, not a posgen PositionEncoding")
    return found


def plugin_entry_points() -> dict[str, Any]:
    """Entry points of the ``posgen.position_encodings`` group, by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_plugin(entry_point: Any) -> PositionEncoding:
    """The encoding an entry point names (its source notes the distribution)."""
    where = f"entry point {entry_point.name} ({entry_point.value})"
    try:
        found = entry_point.load()
    except Exception as error:  # a broken plugin is one error line, not a traceback
        raise PEError(f"{where}: cannot load ({type(error).__name__}: {error})") from None
    dist = getattr(entry_point, "dist", None)
    source = f"entry point {entry_point.value}" + (f" ({dist.name})" if dist else "")
    return _with_source(_checked(found, where), source)


def _with_source(encoding: PositionEncoding, source: str) -> PositionEncoding:
    from dataclasses import replace

    return replace(encoding, source=source)


def lookup(name: str) -> PositionEncoding:
    """The encoding called ``name``: built in, an entry point, or ``module:attribute``."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    plugins = plugin_entry_points()
    if name in plugins:
        return load_plugin(plugins[name])
    module, sep, attribute = name.partition(":")
    if not sep:
        known = ", ".join([*BUILT_IN, *plugins])
        raise PEError(
            f"unknown position encoding {name!r}; use one of {known}, or package.module:name"
        )
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise PEError(f"--pe {name}: cannot import ({type(error).__name__}: {error})") from None
    return _with_source(_checked(found, f"--pe {name}"), f"module {name}")


def available() -> dict[str, PositionEncoding]:
    """Every registered encoding: built-ins, then entry points (built-in names win)."""
    out = dict(BUILT_IN)
    for name, entry_point in sorted(plugin_entry_points().items()):
        if name not in out:
            out[name] = load_plugin(entry_point)
    return out


@dataclass(frozen=True)
class ResolvedPE:
    """One run's position encoding: every parameter, for the run's lengths."""

    encoding: PositionEncoding
    request: PERequest
    parameters: dict[str, Any]
    lengths: Lengths
    randomized: int | None

    @property
    def name(self) -> str:
        return self.encoding.name

    @property
    def label(self) -> str:
        """The name, the parameters set on the command line, ``+randomized``."""
        overrides = ",".join(
            f"{key}={json.dumps(value) if not isinstance(value, str) else value}"
            for key, value in sorted(self.request.parameters.items())
        )
        return self.name + (f"({overrides})" if overrides else "") + self.request.label_suffix

    def rope(self, evaluation: bool) -> dict[str, Any]:
        """The Llama config's ``rope_parameters`` in training or in evaluation."""
        return self.encoding.rope(self.parameters, self.lengths, evaluation)

    @property
    def when(self) -> str:
        return self.encoding.when(self.parameters, self.lengths)

    @property
    def max_positions(self) -> int:
        """``max_position_embeddings`` of the Llama config."""
        if self.encoding.max_positions is not None:
            return self.encoding.max_positions(self.parameters, self.lengths)
        return max(self.lengths.test + 1, self.randomized or 0)

    @property
    def table_positions(self) -> int:
        """Rows of an input-position table: every position the model can meet."""
        return max(self.lengths.test + 1, self.randomized or 0)

    def training_key(self) -> str:
        """What training depends on: runs with equal keys train identically."""
        return json.dumps(
            {
                "rope": self.rope(evaluation=False),
                "attention": self.encoding.attention,
                "input_positions": self.encoding.input_positions is not None
                and [self.name, self.parameters],
                "max_positions": self.max_positions,
                "randomized": self.randomized,
            },
            sort_keys=True,
        )

    def record(self) -> dict[str, Any]:
        """Everything about the encoding a run folder records."""
        module = self.encoding.input_positions
        return {
            "name": self.name,
            "label": self.label,
            "source": self.encoding.source,
            "summary": self.encoding.summary,
            "when": self.when,
            "parameters": dict(self.parameters),
            "rope_parameters": {"train": self.rope(False), "evaluation": self.rope(True)},
            "attention": self.encoding.attention,
            "input_positions": None if module is None else getattr(module, "__name__", "module"),
            "randomized_positions": self.randomized,
            "confound": self.encoding.confound,
        }


def resolve(request: PERequest, lengths: Lengths) -> ResolvedPE:
    """``request`` for a run with ``lengths``; every problem a :class:`PEError` line."""
    encoding = lookup(request.name)
    defaults = encoding.defaults(lengths)
    allowed = {*defaults, *encoding.optional}
    unknown = sorted(set(request.parameters) - allowed)
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none"
        raise PEError(
            f"--pe-param {unknown[0]}: {encoding.name} has no such parameter "
            f"(parameters: {accepted})"
        )
    parameters = {**defaults, **request.parameters}
    randomized = request.randomized
    if randomized == "auto":
        randomized = lengths.test + 1
    if randomized is not None and randomized < lengths.test + 1:
        raise PEError(
            f"--randomized-positions {randomized}: the range must hold the test rows' "
            f"{lengths.test + 1} positions (L'+1)"
        )
    resolved = ResolvedPE(encoding, request, parameters, lengths, randomized)
    try:
        resolved.rope(False), resolved.rope(True)
    except (ValueError, TypeError, KeyError) as error:
        raise PEError(f"--pe {request.name}: {error}") from None
    return resolved


def as_request(pe: str | PERequest) -> PERequest:
    """A bare name is a request with the defaults."""
    return pe if isinstance(pe, PERequest) else PERequest(name=pe)


def listing(lengths: Lengths) -> list[str]:
    """``--list-pe``: one line per registered encoding: name, train- or evaluation-time,
    where it comes from, summary."""
    lines = []
    encodings = available()
    width = max(map(len, encodings))
    for name, encoding in encodings.items():
        when = encoding.when(encoding.defaults(lengths), lengths)
        source = "" if encoding.source == "built-in" else f" [{encoding.source}]"
        lines.append(f"{name:<{width}}  {when:<15}  {encoding.summary}{source}")
    return lines


__all__ = ["NO_ROPE", "PEError", "ResolvedPE", "available", "listing", "lookup", "resolve"]
