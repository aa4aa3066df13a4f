"""Specs: a :class:`TaskSpec` fixes one task's data exactly; a :class:`BenchmarkSpec` names
several, one config each. Both are frozen pydantic models with a stable id.

>>> spec = TaskSpec(task="cot", seeding="paper")
>>> spec.window, spec.test_lengths, spec.split_names
(4, (256,), ('train', 'validation', 'test'))
>>> spec.spec_id == TaskSpec(task="cot", seeding="paper", test_length=[256]).spec_id
True

Spec files (TOML, YAML or JSON, :func:`resolve_benchmark`) name shared ``defaults`` and one
table per config (whose ``task`` defaults to its name); a file with a top-level ``task`` is a
single task spec. Size, depth and values (YAML aliases expanded) are bounded. A file without
``name`` is named after its stem:

>>> stem_name("my spec (v2)")
'my-spec-v2'
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from posgen.errors import UsageError, UsageProblems, not_utf8, problem_lines, shown
from posgen.tasks import TASKS, expected_names, get_op, op_names

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MAX_LENGTH = 1 << 20
MAX_TEST_LENGTHS = 16
"""Test lengths a spec may give (each adds a test and a probe split)."""
MAX_ROWS = 10**10
MAX_SEED = 2**63 - 1
SPEC_ID_CHARS = 16

Length = Annotated[int, Field(ge=2, le=MAX_LENGTH)]
INT_FIELDS = ("modulus", "near", "far", "op_key", "train_length", "test_length", "train_size",
              "val_size", "test_size", "seed")  # fmt: skip


class TaskSpec(BaseModel):
    """One POSGEN task with everything that determines its data (defaults: the paper's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str = Field(
        description="Dependency rule: recursive, cot, semirecursive or a registered task."
    )
    modulus: int = Field(17, ge=2, le=65536, description="Vocabulary size m (tokens 0..m-1).")
    near: int = Field(3, ge=1, le=4096, description="k: near operands x_{t-k}..x_{t-1}.")
    far: int = Field(1, ge=0, le=4096, description="j: far operands, placed by the task.")
    op: str = Field("mod_addition", min_length=1, max_length=64, description="Function h.")
    op_key: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="Key of a keyed op (keyed_hash, far_perm, slot_perm, select_perm); 0 else.",
    )
    train_length: Length = Field(64, description="L: length of train rows (seed window included).")
    test_length: tuple[Length, ...] = Field(
        (256,),
        min_length=1,
        max_length=MAX_TEST_LENGTHS,
        description="L': length of validation/test rows; further lengths add test_<L'> splits.",
    )
    train_size: int = Field(10_000, ge=1, le=MAX_ROWS, description="Rows in train.")
    val_size: int = Field(1_000, ge=1, le=MAX_ROWS, description="Rows in validation.")
    test_size: int = Field(1_000, ge=1, le=MAX_ROWS, description="Rows in each test split.")
    seeding: Literal["disjoint", "paper"] = Field(
        "disjoint",
        description="disjoint: distinct seed windows from Z_m^w, none shared between splits; "
        "paper: the authors' sorted combinations, cycled.",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the disjoint seed windows.")

    @field_validator("test_length", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, set | frozenset):  # its order is not the one written
            raise ValueError("give the lengths in order (a list: the first is test's), not a set")
        return (value,) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator(*INT_FIELDS, mode="before")
    @classmethod
    def _not_bool(cls, value: Any) -> Any:
        values = value if isinstance(value, list | tuple) else (value,)
        if any(type(v).__name__ in ("bool", "bool_") for v in values):  # never read as 0 or 1
            raise ValueError("an integer, not a bool")
        return value

    @field_validator("task")
    @classmethod
    def _registered_task(cls, value: str) -> str:
        if value not in TASKS:
            raise PydanticCustomError(
                "literal_error", "Input should be {expected}", {"expected": expected_names()}
            )
        return value

    @field_validator("op")
    @classmethod
    def _known_op(cls, value: str) -> str:
        if value not in op_names():
            raise ValueError(f"unknown op; known: {', '.join(op_names())}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        """Cross-field rules; every broken rule is reported under its field."""
        window = self.window
        problems: list[tuple[str | None, str, Any]] = []
        if self.train_length <= window:
            message = f"train_length ({self.train_length}) must exceed the seed window far + near"
            problems.append(("train_length", f"{message} = {window}", self.train_length))
        for length in self.test_lengths:
            if length < self.train_length:
                message = f"test_length ({length}) must be >= train_length ({self.train_length})"
                problems.append(("test_length", message, length))
        if len(set(self.test_lengths)) != len(self.test_lengths):
            message = f"test_length values must be distinct, got {list(self.test_lengths)}"
            problems.append(("test_length", message, list(self.test_lengths)))
        op = get_op(self.op)
        if self.op_key and not op.keyed:
            keyed = ", ".join(name for name in op_names() if get_op(name).keyed)
            message = f"op_key is only read by a keyed op ({keyed}), not by {self.op}"
            problems.append(("op_key", message, self.op_key))
        op_problem = op.problem(self.modulus, window)
        if op_problem:
            problems.append(("op", op_problem, self.op))
        space = self.seed_space
        if self.seeding == "paper" and space == 0:
            message = (
                f"paper seeding needs modulus >= far + near ({window}): there are no sorted "
                f"windows of {window} distinct tokens below {self.modulus}"
            )
            problems.append(("modulus", message, self.modulus))
        if self.seeding == "disjoint" and self.total_rows > space:
            message = (
                f"disjoint seeding needs {self.total_rows:,} distinct seed windows but only "
                f"{space:,} exist (modulus**(far + near) = {self.modulus}**{window}); "
                "lower train_size, val_size or test_size, or raise modulus, near or far"
            )
            problems.append((None, message, self.total_rows))
        if problems:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    {
                        "type": PydanticCustomError(
                            "value_error", message.replace("{", "{{").replace("}", "}}")
                        ),
                        "loc": (field,) if field else (),
                        "input": given,
                    }
                    for field, message, given in problems
                ],
            )
        return self

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> TaskSpec:
        """A copy, ``update`` checked as the constructor checks it (pydantic's own copy does
        not check it: ``modulus=1`` would give a spec whose generation never ends)."""
        if not update:
            return super().model_copy(deep=deep)
        return type(self).model_validate({**self.model_dump(), **update})

    @property
    def window(self) -> int:
        """w = j + k: the seed window and the operands of every target."""
        return self.near + self.far

    @property
    def test_lengths(self) -> tuple[int, ...]:
        """All test lengths; the first is that of validation and test."""
        return self.test_length

    @property
    def split_names(self) -> tuple[str, ...]:
        """Splits in output order: train, validation, test, then test_<L'> per extra length."""
        extra = tuple(f"test_{length}" for length in self.test_lengths[1:])
        return ("train", "validation", "test", *extra)

    @property
    def probe_names(self) -> tuple[str, ...]:
        """The probe splits (:mod:`posgen.generator`), one per test split.

        >>> TaskSpec(task="cot", test_length=[256, 512]).probe_names
        ('probe', 'probe_512')
        """
        return tuple(probe_split(split) for split in self.split_names[2:])

    def split_length(self, split: str) -> int:
        """Row length of ``split`` (a probe split has its source split's length)."""
        if split in self.probe_names:
            return self.split_length(probe_source(split))
        if split == "train":
            return self.train_length
        if split in ("validation", "test"):
            return self.test_lengths[0]
        if (
            isinstance(split, str)
            and split.startswith("test_")
            and split[5:].isdigit()
            and int(split[5:]) in self.test_lengths[1:]
        ):
            return int(split[5:])
        names = ", ".join((*self.split_names, *self.probe_names))
        raise KeyError(f"no split {split!r} in this spec; splits: {names}")

    def split_size(self, split: str) -> int:
        self.split_length(split)
        return {"train": self.train_size, "validation": self.val_size}.get(split, self.test_size)

    @property
    def total_rows(self) -> int:
        return sum(self.split_size(s) for s in self.split_names)

    @property
    def total_tokens(self) -> int:
        return sum(self.split_size(s) * self.split_length(s) for s in self.split_names)

    @property
    def seed_space(self) -> int:
        """Seed windows to draw from: m^w, or C(m, w) for paper."""
        if self.seeding == "paper":
            return math.comb(self.modulus, self.window)
        return self.modulus**self.window

    @property
    def seed_space_text(self) -> str:
        """:attr:`seed_space` as people read it: exact up to 10^30, else its power of ten
        (Python prints an int of at most 4,300 digits).

        >>> TaskSpec(task="cot").seed_space_text
        '83,521'
        >>> TaskSpec(task="recursive", modulus=65536, near=900, far=1, train_length=1000,
        ...          test_length=1000, train_size=1, val_size=1, test_size=1).seed_space_text
        'about 10^4339'
        """
        space = self.seed_space
        return f"{space:,}" if space < 10**30 else f"about 10^{int(math.log10(space))}"

    @property
    def token_bytes(self) -> int:
        return 1 if self.modulus <= 256 else 2

    def canonical(self) -> dict[str, Any]:
        """Every field as JSON values (``op_key`` for keyed ops only: the others keep their ids)."""
        body = self.model_dump(mode="json")
        if not get_op(self.op).keyed:
            del body["op_key"]
        return body

    @property
    def spec_id(self) -> str:
        """First hex digits of sha256 over the canonical JSON form."""
        return _digest({"posgen_task_spec": 1, **self.canonical()})


ConfigName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]

PROBE_SPLIT = "probe"  # made from ``test``; ``probe_<L'>`` from ``test_<L'>``
PROBE_CONFIG_SUFFIX = "-probe"  # the datasets config of a config's probe splits (own columns)


def probe_split(source: str) -> str:
    """The probe split made from the test split ``source``; the names the other way round:

    >>> probe_split("test_512"), probe_source("probe"), is_probe_split("test"), probe_config("cot")
    ('probe_512', 'test', False, 'cot-probe')
    """
    return PROBE_SPLIT + source[len("test") :]


def probe_source(split: str) -> str:
    return "test" + split[len(PROBE_SPLIT) :]


def is_probe_split(split: str) -> bool:
    return split == PROBE_SPLIT or split.startswith(PROBE_SPLIT + "_")


def probe_config(config: str) -> str:
    return config + PROBE_CONFIG_SUFFIX


class BenchmarkSpec(BaseModel):
    """Several task specs published together, one ``datasets`` config each.

    >>> bench = BenchmarkSpec(name="demo", configs={"cot": TaskSpec(task="cot")})
    >>> list(bench.configs), len(bench.spec_id)
    (['cot'], 16)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="Benchmark name.")
    description: str = Field("", max_length=4000, description="One paragraph for the card.")
    configs: dict[ConfigName, TaskSpec] = Field(
        min_length=1, max_length=64, description="Config name -> task spec."
    )

    @model_validator(mode="after")
    def _probe_configs_free(self) -> BenchmarkSpec:
        for name in self.configs:
            if probe_config(name) in self.configs:
                raise ValueError(
                    f"config {probe_config(name)!r} would clash with the probe splits of "
                    f"config {name!r} (published as config {probe_config(name)!r}); rename it"
                )
        return self

    @property
    def spec_id(self) -> str:
        body = {name: spec.canonical() for name, spec in self.configs.items()}
        return _digest({"posgen_benchmark_spec": 1, "name": self.name, "configs": body})

    def canonical(self) -> dict[str, Any]:
        """The benchmark as JSON values (the form spec files hold)."""
        body = self.model_dump(mode="json")
        body["configs"] = {name: spec.canonical() for name, spec in self.configs.items()}
        return body


def _digest(body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:SPEC_ID_CHARS]


DEFAULT_BENCHMARK_NAME = "posgen"  # the default benchmark: one config per task


def default_benchmark(tasks: Sequence[str] = TASKS, **fields: Any) -> BenchmarkSpec:
    """A benchmark with one config per task, every config given ``fields``.

    >>> default_benchmark(("cot",), train_length=32).configs["cot"].train_length
    32
    """
    return resolve_benchmark(None, tuple(tasks), fields)


# --- spec files ----------------------------------------------------------------------------
MAX_SPEC_BYTES = 1 << 20  # the official specs are under 1 KB
MAX_DEPTH = 16  # nesting of tables and lists (a benchmark needs 3)
MAX_VALUES = 100_000  # values in a parsed spec, every use of a YAML alias counted
SUFFIXES = (".toml", ".yaml", ".yml", ".json")


class SpecFileError(UsageError, ValueError):
    """A spec file is missing, unreadable, too big or deep, or not a mapping."""


class SpecProblems(UsageProblems, SpecFileError):
    """A spec file whose fields break the spec's rules: one line per problem, naming the file."""


def file_problem_lines(
    error: ValidationError, path: str | Path, data: dict[str, Any], flags: Mapping[str, Any]
) -> list[str]:
    """``problem_lines`` of a spec file's benchmark, each naming the file (unless a flag gave
    the field) and the table the field is written in: ``defaults.near``, once, when the config
    takes it from there; ``near`` in a single task spec."""
    defaults = data.get("defaults") if isinstance(data.get("defaults"), dict) else {}
    configs = data.get("configs") if isinstance(data.get("configs"), dict) else None

    def field_of(loc: tuple[Any, ...]) -> Any:  # a config's field, or None
        return loc[2] if len(loc) > 2 and loc[0] == "configs" else None

    def locate(loc: tuple[Any, ...]) -> tuple[Any, ...]:
        field = field_of(loc)
        if field in flags:
            return loc
        if configs is None and loc[:1] == ("configs",):  # a single task spec: no configs table
            return loc[2:]  # () for a rule of the whole spec: named "spec"
        if field is None:
            return loc
        if field not in configs.get(loc[1], {}) and field in defaults:
            return ("defaults", *loc[2:])
        return loc

    lines = []
    for item, line in zip(error.errors(), problem_lines(error, locate), strict=True):
        lines.append(line if field_of(item["loc"]) in flags else f"{path}: {line}")
    return list(dict.fromkeys(lines))  # a default's problem once, not once per config


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with nesting bounded while composing (before any expansion), so a
    100k-deep file is refused at level 17 instead of recursing until Python gives up."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise SpecFileError(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        """A mapping whose keys are each written once (TOML refuses a repeated key too)."""
        if isinstance(node, yaml.MappingNode):
            keys = [key for key, _ in node.value if isinstance(key, yaml.ScalarNode)]
            _once([key.value for key in keys if key.tag != "tag:yaml.org,2002:merge"])
        return super().construct_mapping(node, deep)


def _once(keys: list[Any]) -> None:
    """A :class:`SpecFileError` naming a key given twice in one mapping."""
    seen: set[Any] = set()
    for key in keys:
        if key in seen:
            raise SpecFileError(f"key {shown(key, 60)!r} is given twice in one table")
        seen.add(key)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    _once([key for key, _ in pairs])
    return dict(pairs)


def _parse(text: str, suffix: str) -> Any:
    if suffix == ".toml":
        return tomllib.loads(text)
    if suffix == ".json":
        return json.loads(text, object_pairs_hook=_pairs)
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def check_size(data: Any) -> None:
    """Refuse data nested deeper than :data:`MAX_DEPTH` or with more than :data:`MAX_VALUES`.

    >>> check_size({"a": [[1, 2]]})
    >>> check_size([[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]])
    Traceback (most recent call last):
    ...
    posgen.spec.SpecFileError: nested more than 16 levels deep
    """
    stack = [(data, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise SpecFileError(f"holds more than {MAX_VALUES:,} values (YAML aliases expanded)")
        if depth > MAX_DEPTH:
            raise SpecFileError(f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, list | tuple):
            stack.extend((item, depth + 1) for item in value)


def read_bounded(path: Path, limit: int, chunk: int = 1 << 20, *, follow: bool = True) -> bytes:
    """At most ``limit + 1`` bytes of ``path``, read a chunk at a time; a pipe or a device is
    an ``OSError``, never waited on, and so is a link with ``follow=False``."""
    parts = []
    fd = os.open(
        path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    )
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        if kind == stat.S_IFDIR:
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        raise OSError(errno.EINVAL, "a pipe or a device, not a regular file", str(path))
    with os.fdopen(fd, "rb") as handle:
        while sum(map(len, parts)) <= limit and (block := handle.read(chunk)):
            parts.append(block)
    return b"".join(parts)[: limit + 1]


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Parse a spec file by its suffix (.toml, .yaml/.yml, .json) into a plain mapping."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SpecFileError(
            f"spec file {path} has suffix {shown(suffix)!r}; use .toml, .yaml, .yml or .json"
        )
    try:
        raw = read_bounded(path, MAX_SPEC_BYTES)  # a pipe or a device: refused, never waited on
    except FileNotFoundError:
        raise SpecFileError(f"spec file {path} does not exist") from None
    except OSError as error:
        raise SpecFileError(f"spec file {path} cannot be read: {error.strerror or error}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecFileError(f"spec file {path} is larger than {MAX_SPEC_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")  # a byte-order mark: as YAML reads it
    except UnicodeDecodeError as error:
        raise SpecFileError(f"spec file {path} is {not_utf8(raw, error)}") from None
    kind = suffix[1:].upper().replace("YML", "YAML")
    try:
        data = _parse(text, suffix)
        check_size(data)
    except SpecFileError as error:
        raise SpecFileError(f"spec file {path} is not a usable spec: {error}") from None
    except RecursionError:
        raise SpecFileError(
            f"spec file {path} is not a usable spec: nested more than {MAX_DEPTH} levels deep"
        ) from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as error:
        raise SpecFileError(f"spec file {path} is not valid {kind}: {shown(error)}") from None
    except ValueError as error:  # an integer past Python's digit limit, a YAML date 2020-13-45
        limit = sys.get_int_max_str_digits()
        why = f"a number of more than {limit:,} digits" if "digits" in str(error) else shown(error)
        raise SpecFileError(f"spec file {path} is not a usable spec: {why}") from None
    if not isinstance(data, dict):
        raise SpecFileError(f"spec file {path} must hold a mapping, not {type(data).__name__}")
    if data.get("format") == "posgen-dataset":
        raise SpecFileError(
            f"spec file {path} is a dataset's manifest, not a spec: its card's section 'How to "
            "regenerate it byte for byte' holds the spec it was made from"
        )
    return data


def stem_name(stem: str) -> str:
    """A valid benchmark name from a file stem."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:64].rstrip("-._")
    return name or DEFAULT_BENCHMARK_NAME


def benchmark_mapping(data: dict[str, Any], default_name: str) -> dict[str, Any]:
    """The raw mapping of a benchmark, from a benchmark file or a single task spec."""
    if "task" in data and "configs" not in data:
        task = data["task"]
        config = shown(task, 64) if isinstance(task, str) else default_name
        return {"name": default_name, "configs": {config: dict(data)}}
    body = dict(data)
    defaults = body.pop("defaults", {}) or {}
    configs = body.get("configs")
    if not isinstance(defaults, dict):
        raise SpecFileError("'defaults' must be a table of spec fields")
    if not isinstance(configs, dict):
        raise SpecFileError("'configs' must be a table with one entry per config")
    merged = {}
    for name, fields in configs.items():
        if not isinstance(fields, dict):
            raise SpecFileError(f"config {shown(name)!r} must be a table of spec fields")
        entry = {**defaults, **fields}
        if "task" not in entry and name in TASKS:
            entry["task"] = name
        merged[name] = entry
    body.setdefault("name", default_name)
    body["configs"] = merged
    return body


def resolve_benchmark(
    spec_file: str | Path | None = None,
    tasks: tuple[str, ...] = (),
    overrides: dict[str, Any] | None = None,
) -> BenchmarkSpec:
    """The benchmark of a file (else one config per task in ``tasks``), filtered to ``tasks``,
    with ``overrides``."""
    overrides = overrides or {}
    if spec_file is None:
        configs = {task: {"task": task} for task in tasks or TASKS}
        raw = {"name": DEFAULT_BENCHMARK_NAME, "configs": configs}
    else:
        data = read_spec_file(spec_file)
        raw = benchmark_mapping(data, stem_name(Path(spec_file).stem))
        if tasks:
            raw["configs"] = {
                name: fields
                for name, fields in raw["configs"].items()
                if fields.get("task") in tasks
            }
            if not raw["configs"]:
                raise SpecFileError(
                    f"spec file {spec_file} has no config for task(s) "
                    f"{', '.join(dict.fromkeys(tasks))}"
                )
    raw["configs"] = {name: {**fields, **overrides} for name, fields in raw["configs"].items()}
    try:
        return BenchmarkSpec.model_validate(raw)
    except ValidationError as error:
        if spec_file is None:
            raise
        raise SpecProblems(file_problem_lines(error, spec_file, data, overrides)) from None
