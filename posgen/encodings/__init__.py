"""Position encodings: what a ``--pe`` is, the one registry :data:`ENCODINGS` and a run's
resolution; no torch here (:mod:`.builtin` holds the built-ins, :mod:`.model` the Llama).

>>> resolve(PERequest.parse("linear", ["factor=2"], None), Lengths(64, 256, 16, 4)).label
'linear(factor=2)'
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from posgen.encodings.parameters import check_parameters, check_relations
from posgen.errors import shown

if TYPE_CHECKING:
    from torch import nn

ENTRY_POINT_GROUP = "posgen.position_encodings"

PES = ("rope", "resonance", "yarn", "resonance_yarn")
"""The paper's four position encodings, in table order."""

NO_ROPE: dict[str, Any] = {
    "rope_type": "proportional",
    "rope_theta": 10_000.0,
    "partial_rotary_factor": 0.0,
}
"""Rope parameters that rotate nothing (tested: logits do not depend on the positions)."""

NO_TABLE = frozenset(PES) | {
    *("linear", "resonance_linear", "dynamic", "resonance_dynamic", "longrope", "llama3"),
    *("resonance_llama3", "proportional", "resonance_proportional", "nope", "alibi", "t5"),
    *("fire", "fire-random", "kerple", "xpos", "cope", "logn"),
}
"""The built-ins without an input-position table, known without importing them."""

When = Literal["train-time", "evaluation-time"]


def pe_order(pe: str) -> tuple[int, str]:
    """Table order of result tables: the paper's four first, then by name.

    >>> sorted(["yarn", "alibi", "rope"], key=pe_order)
    ['rope', 'yarn', 'alibi']
    """
    return (PES.index(pe), "") if pe in PES else (len(PES), pe)


MODIFIERS: dict[str, Callable[[PositionEncoding], PositionEncoding]] = {}
"""``NAME+MODIFIER`` is ``MODIFIERS[MODIFIER](ENCODINGS[NAME])`` (the built-ins add ``logn``)."""

DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
NAME = re.compile(r"[\w.+-]+")


def usable_name(name: object) -> bool:
    """Whether ``name`` is one --pe, a grid and --list-pe can name an encoding by: 1 to 200
    letters, digits and ``_ . + -``."""
    return isinstance(name, str) and len(name) <= 200 and NAME.fullmatch(name) is not None


def check_reference(name: str) -> str:
    """A registered name, or ``package.module:NAME`` (a module, never a file path)."""
    module, colon, attribute = name.partition(":")
    if colon and not (DOTTED.fullmatch(module) and DOTTED.fullmatch(attribute)):
        raise ValueError(
            f"--pe {shown(name, 100)}: use package.module:NAME (an importable module and an "
            "attribute, not a file path)"
        )
    if not colon and not NAME.fullmatch(name):
        raise ValueError(f"--pe {shown(name, 100)}: not a position encoding name (see --list-pe)")
    return name


class PEError(ValueError):
    """An unknown position encoding, a bad parameter or a broken plugin (one line)."""


@dataclass(frozen=True)
class Lengths:
    """L (``train``) and L' (``test``), BOS excluded, and the model's head shape."""

    train: int
    test: int
    head_dim: int
    heads: int

    @property
    def scale(self) -> float:
        """The paper's YaRN factor ``(L'+1)/(L+1)``."""
        return (self.test + 1) / (self.train + 1)


@dataclass(frozen=True)
class PositionEncoding:
    """One ``--pe``: its parameters' ``defaults`` (plus ``optional`` ones), its ``rope``
    parameters, an attention function (None: sdpa) with an ``attention_module`` (per layer, or
    one when ``shared_module``), an ``input_positions`` module, ``max_positions`` (default
    L'+1), a ``check`` (ValueError on an unusable setup) and ``randomized`` positions."""

    name: str
    summary: str
    defaults: Callable[[Lengths], dict[str, Any]] = lambda lengths: {}
    rope: Callable[[Mapping[str, Any], Lengths, bool], dict[str, Any]] = (
        lambda parameters, lengths, evaluation: dict(NO_ROPE)
    )
    attention: str | None = None
    input_positions: Callable[[Mapping[str, Any], Lengths, int, int], nn.Module] | None = None
    attention_module: Callable[[Mapping[str, Any], Lengths], nn.Module] | None = None
    shared_module: bool = False
    check: Callable[[Mapping[str, Any], Lengths], None] | None = None
    randomized: Literal["auto"] | None = None
    optional: tuple[str, ...] = ()
    max_positions: Callable[[Mapping[str, Any], Lengths], int] | None = None
    confound: str | None = None
    source: str = field(default="built-in", compare=False)
    module: str | None = field(default=None, compare=False)  # a plugin's: the module imported

    def when(self, parameters: Mapping[str, Any], lengths: Lengths) -> When:
        """Train-time when training and evaluation use the same rope parameters."""
        same = self.rope(parameters, lengths, False) == self.rope(parameters, lengths, True)
        return "train-time" if same else "evaluation-time"


def _path_hint(error: BaseException, module: str) -> str:
    """Where the module of a ``module:NAME`` not found is looked for (the ``posgen`` script
    does not look in the working folder); nothing when something it imports is missing."""
    missing = getattr(error, "name", None) if isinstance(error, ModuleNotFoundError) else None
    if not missing or missing != module.partition(".")[0]:
        return ""
    return (
        f"; {missing} is imported from Python's path, not the working folder: install its "
        "package, or put its folder on PYTHONPATH (PYTHONPATH=. posgen ... for "
        f"./{missing}.py or ./{missing}/)"
    )


@dataclass(frozen=True)
class _Lazy:
    """A ``package.module:NAME`` entry, imported when asked for."""

    reference: str
    where: str
    source: str
    name: str | None = None  # an entry point's: its encoding's name too

    def load(self) -> PositionEncoding:
        module, _, attribute = self.reference.partition(":")
        try:
            found: Any = importlib.import_module(module)
            for part in attribute.split("."):
                found = getattr(found, part)
        except PEError as error:  # a constructor refused it (a name clash): its own line
            raise PEError(f"{self.where}: {error}") from None
        except (Exception, SystemExit) as error:  # a broken plugin is one error line
            said = f"{type(error).__name__}: {error}"
            raise PEError(
                f"{self.where}: cannot import ({said}){_path_hint(error, module)}"
            ) from None
        if not isinstance(found, PositionEncoding):
            kind = type(found).__name__
            article = "an" if kind[:1].lower() in "aeiou" else "a"
            raise PEError(f"{self.where} is {article} {kind}, not a posgen PositionEncoding")
        name = found.name
        if not usable_name(name):
            raise PEError(
                f"{self.where} is named {shown(repr(name), 80)}; a position encoding's "
                "name is 1 to 200 letters, digits and _ . + - (what --pe and a grid name it by)"
            )
        if self.name is not None and name != self.name:
            raise PEError(
                f"{self.where} holds the encoding {name!r}: --list-pe would list it as "
                f"{shown(self.name, 80)!r} and its runs record {name!r}; name the entry point "
                "as its encoding"
            )
        if found.name in ENCODINGS.builtin_names or _combination(found.name):
            raise PEError(
                f"{self.where} is named {found.name!r}, the name of a built-in position "
                "encoding; a plugin needs a name of its own"
            )
        return replace(found, source=self.source, module=module)


def _combination(name: str) -> bool:
    """Whether ``name`` reads as a built-in with a modifier (``yarn+logn``)."""
    _, plus, modifier = name.rpartition("+")
    return bool(plus) and modifier in MODIFIERS


class Registry(Mapping[str, PositionEncoding]):
    """Every encoding by name: the built-ins (module ``builtin``, imported when first asked),
    then the entry points; ``module:NAME`` is looked up unregistered."""

    def __init__(self, builtin: str) -> None:
        self._builtin = builtin
        self._entries: dict[str, PositionEncoding] = {}
        self.builtin_names: frozenset[str] = frozenset()
        self.sealed = False

    def seal(self) -> None:
        """Mark every name registered so far as a built-in's: no plugin may take one."""
        self.sealed, self.builtin_names = True, frozenset(self._entries)

    def register(self, encoding: PositionEncoding) -> None:
        if not isinstance(encoding, PositionEncoding):
            raise PEError(f"register takes a PositionEncoding, not {type(encoding).__name__}")
        name = encoding.name
        if not usable_name(name):
            raise PEError(  # --pe, a grid and --list-pe could not name it
                f"position encoding named {shown(repr(name), 80)}: a name is 1 to 200 "
                "letters, digits and _ . + -"
            )
        if encoding.name in self._entries:
            raise PEError(f"position encoding {encoding.name!r} is already registered")
        self._entries[encoding.name] = encoding

    def _all(self, name: str | None = None) -> dict[str, PositionEncoding | _Lazy]:
        """The entries; entry points are read unless ``name`` is registered already."""
        importlib.import_module(self._builtin)
        out: dict[str, PositionEncoding | _Lazy] = dict(self._entries)
        if name in out:
            return out
        for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
            dist = getattr(point, "dist", None)
            source = f"entry point {point.value}" + (f" ({dist.name})" if dist else "")
            where = f"entry point {point.name} ({point.value})"
            taken = out.get(point.name)
            if isinstance(taken, _Lazy):
                clash = f"is also the name of {taken.where}"
            elif taken is not None:
                clash = "is the name of a built-in position encoding"
            else:
                clash = "names a built-in with a modifier" if _combination(point.name) else ""
            if clash:
                raise PEError(f"{where}: {point.name!r} {clash}; a plugin needs a name of its own")
            out[point.name] = _Lazy(point.value, where, source, point.name)
        return out

    def __getitem__(self, name: str) -> PositionEncoding:
        if not isinstance(name, str):
            raise PEError(f"a position encoding is named by a str, not {type(name).__name__}")
        entries = self._all(name)
        if name in entries:
            entry = entries[name]
            return entry.load() if isinstance(entry, _Lazy) else entry
        base, plus, modifier = name.rpartition("+")
        if plus and modifier in MODIFIERS:
            return MODIFIERS[modifier](self[base])
        if ":" in name:
            return _Lazy(name, f"--pe {name}", f"module {name}").load()
        raise PEError(
            f"unknown position encoding {name!r}; use one of {', '.join(entries)}, "
            "or package.module:name"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._all(name if isinstance(name, str) else None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


ENCODINGS = Registry(builtin="posgen.encodings.builtin")
"""The ``--pe`` vocabulary."""


def available() -> dict[str, PositionEncoding]:
    """Every registered encoding, imported (a broken plugin fails here)."""
    return dict(ENCODINGS.items())


class PERequest(BaseModel):
    """A name, parameter overrides and randomized positions (a range size, ``auto`` = L'+1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    parameters: dict[str, Any] = Field(default_factory=dict)
    randomized: StrictInt | Literal["auto"] | None = None

    @field_validator("name")
    @classmethod
    def _reference(cls, name: str) -> str:
        return check_reference(name)

    @model_validator(mode="after")
    def _typed(self) -> PERequest:
        check_parameters(self.name, self.parameters)
        return self

    @classmethod
    def parse(cls, name: str, pairs: list[str] | tuple[str, ...], randomized: str | None):
        """From ``--pe``, ``--pe-param key=value`` (a JSON value, else text) and
        ``--randomized-positions``; a problem is a one-line ValueError.

        >>> PERequest.parse("rope", ["factor=2.5", "scale_at=train"], "auto").parameters
        {'factor': 2.5, 'scale_at': 'train'}
        """
        parameters: dict[str, Any] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ValueError(f"--pe-param {shown(pair, 60)!r}: use key=value")
            if key in parameters:
                raise ValueError(
                    f"--pe-param {shown(key, 60)} is given twice; give each parameter once"
                )
            try:
                parameters[key] = json.loads(value.strip())
            except ValueError:
                parameters[key] = value.strip()
        check_reference(name)
        check_parameters(name, parameters)
        chosen: int | str | None = randomized
        if randomized is not None and randomized != "auto":
            try:
                chosen = int(randomized)
            except ValueError:
                raise ValueError(
                    f"--randomized-positions {shown(randomized, 60)!r}: use a range size or auto"
                ) from None
        return cls(name=name, parameters=parameters, randomized=chosen)


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
        """The name, the parameters set on the command line and ``+randomized`` (its range)."""
        overrides = ",".join(
            f"{key}={json.dumps(value) if not isinstance(value, str) else value}"
            for key, value in sorted(self.request.parameters.items())
        )
        randomized = self.request.randomized
        suffix = "" if randomized is None else "+randomized" + str(randomized).replace("auto", "")
        return self.name + (f"({overrides})" if overrides else "") + suffix

    def rope(self, evaluation: bool) -> dict[str, Any]:
        """The Llama config's ``rope_parameters`` in training or in evaluation."""
        return self.encoding.rope(self.parameters, self.lengths, evaluation)

    @property
    def max_positions(self) -> int:
        """``max_position_embeddings`` of the Llama config."""
        if self.encoding.max_positions is not None:
            return self.encoding.max_positions(self.parameters, self.lengths)
        return self.table_positions

    @property
    def table_positions(self) -> int:
        """Rows of an input-position table: every position the model can meet."""
        return max(self.lengths.test + 1, self.randomized or 0)

    def training_key(self) -> str:
        """Runs with equal keys train identically."""
        key: dict[str, Any] = {
            "rope": self.rope(evaluation=False),
            "attention": self.encoding.attention,
            "input_positions": self.encoding.input_positions is not None
            and [self.name, self.parameters],
            "max_positions": self.max_positions,
            "randomized": self.randomized,
        }
        if self.encoding.attention_module is not None or (
            self.encoding.attention is not None and self.parameters
        ):  # only then: the keys of earlier encodings stay as they were
            key["attention_parameters"] = [self.name, self.parameters]
        return json.dumps(key, sort_keys=True)

    def record(self) -> dict[str, Any]:
        """Everything about the encoding a run folder records."""
        module = self.encoding.input_positions
        return {
            "name": self.name,
            "label": self.label,
            "source": self.encoding.source,
            "summary": self.encoding.summary,
            "when": self.encoding.when(self.parameters, self.lengths),
            "parameters": dict(self.parameters),
            "rope_parameters": {"train": self.rope(False), "evaluation": self.rope(True)},
            "attention": self.encoding.attention,
            "input_positions": None if module is None else getattr(module, "__name__", "module"),
            "randomized_positions": self.randomized,
            "confound": self.encoding.confound,
        }


def as_request(pe: str | PERequest) -> PERequest:
    """A bare name is a request with the defaults."""
    return pe if isinstance(pe, PERequest) else PERequest(name=pe)


def same_value(given: Any, default: Any) -> bool:
    """Whether a parameter as given is its default (10000 is 10000.0; ``true`` is not 1).

    >>> same_value(10000, 10_000.0), same_value(True, 1), same_value([1, 2.0], [1.0, 2])
    (True, False, True)
    """
    if isinstance(given, list) and isinstance(default, list):
        return len(given) == len(default) and all(map(same_value, given, default))
    if type(given) in (int, float) and type(default) in (int, float):
        return given == default
    return type(given) is type(default) and given == default


def failed(name: str, encoding: PositionEncoding, what: str, error: BaseException) -> PEError:
    """The line for ``what`` of an encoding's own code (its defaults, its check) that raised."""
    reason = shown(str(error), 300) or "(no message)"
    return PEError(f"--pe {name} ({encoding.source}): {what} failed ({type(error).__name__}: "
                   f"{reason})")  # fmt: skip


def defaults_of(name: str, encoding: PositionEncoding, lengths: Lengths) -> Mapping[str, Any]:
    """The encoding's defaults; a :class:`PEError` when they fail or are no mapping."""
    try:
        defaults = encoding.defaults(lengths)
    except (Exception, SystemExit) as error:
        raise failed(name, encoding, "its defaults", error) from None
    if not isinstance(defaults, Mapping):
        raise PEError(f"--pe {name}: its defaults are a {type(defaults).__name__}, "
                      "not a mapping of parameter names to values")  # fmt: skip
    return defaults


def resolve(request: PERequest, lengths: Lengths) -> ResolvedPE:
    """``request`` for a run with ``lengths``; every problem a :class:`PEError` line. A
    parameter given at its default is dropped from the request (one label, one run)."""
    request = as_request(request)  # a bare name, as everywhere else
    encoding = ENCODINGS[request.name]
    defaults = defaults_of(request.name, encoding, lengths)
    try:
        check_parameters(encoding.name, defaults)
    except ValueError as error:
        raise PEError(f"{error} (the encoding's default)") from None
    allowed = {*defaults, *encoding.optional}
    unknown = sorted(set(request.parameters) - allowed)
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none"
        raise PEError(
            f"--pe-param {shown(unknown[0], 60)}: {encoding.name} has no such parameter "
            f"(parameters: {accepted})"
        )
    given = {
        k: v
        for k, v in request.parameters.items()
        if not (k in defaults and same_value(v, defaults[k]))
    }
    if given != request.parameters:
        request = request.model_copy(update={"parameters": given})
    parameters = {**defaults, **given}
    randomized = request.randomized if request.randomized is not None else encoding.randomized
    if randomized == "auto":
        randomized = lengths.test + 1
    if randomized is not None and randomized < lengths.test + 1:
        raise PEError(
            f"--randomized-positions {randomized}: the range must hold the test rows' "
            f"{lengths.test + 1} positions (L'+1)"
        )
    if randomized is not None and randomized >= 2**63:
        raise PEError(f"--randomized-positions {randomized}: position ids are 64-bit, use < 2**63")
    resolved = ResolvedPE(encoding, request, parameters, lengths, randomized)
    try:
        check_relations(parameters)
        resolved.rope(False), resolved.rope(True)
        if encoding.check is not None:
            encoding.check(parameters, lengths)
    except (ValueError, TypeError, KeyError) as error:
        raise PEError(f"--pe {request.name}: {error}") from None
    except (Exception, SystemExit) as error:  # a plugin's bug
        raise failed(request.name, encoding, "its check", error) from None
    return resolved


def listing(lengths: Lengths) -> list[str]:
    """``--list-pe``: name, train- or evaluation-time, summary and source, one line each."""
    encodings = available()
    width = max(map(len, encodings))
    lines = []
    for name, encoding in encodings.items():
        defaults = defaults_of(name, encoding, lengths)
        try:
            when = encoding.when(defaults, lengths)
        except (Exception, SystemExit) as error:
            raise failed(name, encoding, "its rope parameters", error) from None
        source = "" if encoding.source == "built-in" else f" [{encoding.source}]"
        lines.append(f"{name:<{width}}  {when:<15}  {encoding.summary}{source}")
    return lines
