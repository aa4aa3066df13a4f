"""Reading specs from TOML, YAML or JSON files, and merging command-line overrides.

A benchmark file names shared ``defaults`` and one table per config (whose ``task`` defaults
to its name); a file with a top-level ``task`` is a single task spec. Size, depth and values
(YAML aliases expanded) are bounded. A file without ``name`` is named after its stem:

>>> stem_name("my spec (v2)")
'my-spec-v2'
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from posgen.errors import UsageError, not_utf8, shown
from posgen.spec import DEFAULT_BENCHMARK_NAME, BenchmarkSpec, default_benchmark_mapping
from posgen.tasks import TASKS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


MAX_SPEC_BYTES = 1 << 20  # the official specs are under 1 KB
MAX_DEPTH = 16  # nesting of tables and lists (a benchmark needs 3)
MAX_VALUES = 100_000  # values in a parsed spec, every use of a YAML alias counted
SUFFIXES = (".toml", ".yaml", ".yml", ".json")


class SpecFileError(UsageError, ValueError):
    """A spec file is missing, unreadable, too big or deep, or not a mapping."""


class _BoundedLoader(yaml.SafeLoader):
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
    posgen.spec_files.SpecFileError: nested more than 16 levels deep
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


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Parse a spec file by its suffix (.toml, .yaml/.yml, .json) into a plain mapping."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SpecFileError(
            f"spec file {path} has suffix {shown(suffix)!r}; use .toml, .yaml, .yml or .json"
        )
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecFileError(f"spec file {path} does not exist") from None
    except OSError as error:
        raise SpecFileError(f"spec file {path} cannot be read: {error.strerror or error}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecFileError(f"spec file {path} is larger than {MAX_SPEC_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
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
    if not isinstance(data, dict):
        raise SpecFileError(f"spec file {path} must hold a mapping, not {type(data).__name__}")
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
        raw = default_benchmark_mapping(tasks or TASKS)
    else:
        raw = benchmark_mapping(read_spec_file(spec_file), stem_name(Path(spec_file).stem))
        if tasks:
            raw["configs"] = {
                name: fields
                for name, fields in raw["configs"].items()
                if fields.get("task") in tasks
            }
            if not raw["configs"]:
                raise SpecFileError(
                    f"spec file {spec_file} has no config for task(s) {', '.join(tasks)}"
                )
    raw["configs"] = {name: {**fields, **overrides} for name, fields in raw["configs"].items()}
    return BenchmarkSpec.model_validate(raw)
