"""Specs: defaults, stable ids, files in three formats, overrides (bounds and cross-field
rules: the bad-input table of tests/cli/test_commands.py)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from posgen.spec import SpecFileError, TaskSpec, resolve_benchmark


def test_defaults_are_the_papers_setup_and_specs_are_frozen():
    spec = TaskSpec(task="recursive")
    assert (spec.modulus, spec.near, spec.far, spec.op) == (17, 3, 1, "mod_addition")
    assert (spec.train_length, spec.test_lengths) == (64, (256,))
    assert (spec.train_size, spec.val_size, spec.test_size) == (10_000, 1_000, 1_000)
    assert spec.seeding == "disjoint"
    with pytest.raises(ValidationError):
        spec.modulus = 5
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TaskSpec(task="cot", modulos=5)


def test_spec_id_is_stable_and_changes_with_any_field():
    spec = TaskSpec(task="cot")
    assert spec.spec_id == TaskSpec(task="cot", test_length=256).spec_id
    assert spec.spec_id == "ff57d6dae6cdfea9"  # pinned: ids name published data
    assert spec.spec_id != TaskSpec(task="cot", seed=1).spec_id
    assert spec.spec_id != TaskSpec(task="recursive").spec_id


def test_extra_test_lengths_add_splits_with_their_own_lengths():
    spec = TaskSpec(task="cot", test_length=[256, 512, 1024])
    assert spec.split_names == ("train", "validation", "test", "test_512", "test_1024")
    assert spec.split_length("test_1024") == 1024
    assert spec.total_rows == 10_000 + 1_000 * 4


MINI = {  # one benchmark in three formats: defaults, and a config that overrides one
    ".toml": 'name = "mini"\n[defaults]\nmodulus = 11\ntrain_size = 20\nval_size = 10\n'
    "test_size = 10\n[configs.recursive]\n[configs.cot]\nnear = 2\n",
    ".yaml": "name: mini\ndefaults:\n  modulus: 11\n  train_size: 20\n  val_size: 10\n"
    "  test_size: 10\nconfigs:\n  recursive: {}\n  cot:\n    near: 2\n",
    ".json": '{"name": "mini", "defaults": {"modulus": 11, "train_size": 20, "val_size": 10, '
    '"test_size": 10}, "configs": {"recursive": {}, "cot": {"near": 2}}}',
}


@pytest.mark.parametrize("bom", ["", "\ufeff"])  # a byte-order mark, as some editors save
@pytest.mark.parametrize("suffix", list(MINI))
def test_benchmark_files_load_from_toml_yaml_and_json(tmp_path, suffix, bom):
    path = tmp_path / f"mini{suffix}"
    path.write_text(bom + MINI[suffix], encoding="utf-8")
    bench = resolve_benchmark(path)
    cot, recursive = bench.configs["cot"], bench.configs["recursive"]
    assert list(bench.configs) == ["recursive", "cot"]
    assert (cot.near, recursive.near, cot.modulus) == (2, 3, 11)
    chosen = resolve_benchmark(path, ("cot",), {"modulus": 13})  # flags select and override
    assert {name: c.modulus for name, c in chosen.configs.items()} == {"cot": 13}


def test_a_single_task_spec_file_is_a_one_config_benchmark(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"task": "semirecursive", "modulus": 23}))
    bench = resolve_benchmark(path)
    assert (list(bench.configs), bench.name) == (["semirecursive"], "one")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.toml", "name = ", "is not valid TOML"),
        ("bad.yaml", "a: [1, 2", "is not valid YAML"),
        ("bad.json", "{", "is not valid JSON"),
        ("bad.txt", "x", "use .toml, .yaml, .yml or .json"),
        ("list.json", "[1]", "must hold a mapping"),
        ("posgen.json", '{"format": "posgen-dataset", "configs": {}}', "a dataset's manifest"),
    ],
)
def test_malformed_spec_files_give_one_line_reasons(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecFileError, match=message):
        resolve_benchmark(path)


def test_official_specs_load_and_differ_only_in_seeding():
    paper = resolve_benchmark("task_specs/paper.toml")
    v1 = resolve_benchmark("task_specs/posgen-v1.toml")
    assert list(paper.configs) == list(v1.configs) == ["recursive", "cot", "semirecursive"]
    for name in paper.configs:
        a, b = paper.configs[name].canonical(), v1.configs[name].canonical()
        assert {k for k in a if a[k] != b[k]} == {"seeding"}
        assert (a["seeding"], b["seeding"]) == ("paper", "disjoint")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("test_length", {512, 256}, "in order .* not a set"),  # a set's order is not the one given
        ("test_length", frozenset({1024, 256}), "in order .* not a set"),
        ("near", True, "an integer, not a bool"),  # pydantic would read it as 1
        ("train_size", True, "an integer, not a bool"),
        ("seed", False, "an integer, not a bool"),
        ("test_length", [256, True], "an integer, not a bool"),
    ],
)
def test_spec_fields_refuse_values_that_would_be_cast_or_reordered(field, value, message):
    with pytest.raises(ValidationError, match=rf"{field}\n.*{message}"):
        TaskSpec(task="cot", **{field: value})


def test_model_copy_checks_its_update_as_the_constructor_does():
    spec = TaskSpec(task="cot", train_size=8, val_size=4, test_size=4)
    assert spec.model_copy(update={"seed": 3}) == TaskSpec(**{**spec.model_dump(), "seed": 3})
    assert spec.model_copy() == spec
    with pytest.raises(ValidationError, match="modulus"):  # unchecked, it generated forever
        spec.model_copy(update={"modulus": 1})
    with pytest.raises(ValidationError, match="modulos"):
        spec.model_copy(update={"modulos": 5})
