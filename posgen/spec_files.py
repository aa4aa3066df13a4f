"""Reading specs from TOML, YAML or JSON files, and merging command-line overrides.

A benchmark file names shared ``defaults`` and one table per config; a config's ``task``
defaults to its name::

    name = "posgen-v1"
    [defaults]
    seeding = "disjoint"
    [configs.recursive]
    [configs.cot]

A file with a top-level ``task`` key is a single task spec (one config, named after it).
Everything is validated in one go, so every problem is reported with its field path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from posgen.spec import BenchmarkSpec
from posgen.tasks import TASKS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class SpecFileError(ValueError):
    """A spec file is missing, unreadable or not a mapping."""


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Parse a spec file by its suffix (.toml, .yaml/.yml, .json) into a plain mapping."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecFileError(f"spec file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecFileError(f"spec file {path} cannot be read: {error}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise SpecFileError(
                f"spec file {path} has suffix {suffix!r}; use .toml, .yaml, .yml or .json"
            )
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as error:
        reason = " ".join(str(error).split())
        kind = suffix[1:].upper()
        raise SpecFileError(f"spec file {path} is not valid {kind}: {reason}") from None
    if not isinstance(data, dict):
        raise SpecFileError(f"spec file {path} must hold a mapping, not {type(data).__name__}")
    return data


def benchmark_mapping(data: dict[str, Any], default_name: str) -> dict[str, Any]:
    """The raw mapping of a benchmark, from a benchmark file or a single task spec."""
    if "task" in data and "configs" not in data:
        return {"name": default_name, "configs": {str(data["task"]): dict(data)}}
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
            raise SpecFileError(f"config {name!r} must be a table of spec fields")
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
    """The benchmark from a file (or the defaults), filtered to ``tasks``, with overrides.

    Without a file: one config per task in ``tasks`` (all three when empty).
    Raises ``pydantic.ValidationError`` or :class:`SpecFileError`.
    """
    overrides = overrides or {}
    if spec_file is None:
        raw = {"name": "posgen", "configs": {task: {"task": task} for task in tasks or TASKS}}
    else:
        raw = benchmark_mapping(read_spec_file(spec_file), Path(spec_file).stem)
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
