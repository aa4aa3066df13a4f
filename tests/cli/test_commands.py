"""The command line: generation, help, and bad input that exits 2 and creates nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from posgen import __version__
from tests.cli_support import assert_clean_error

SMALL = ["--train-size", "50", "--val-size", "10", "--test-size", "10", "-q"]


def test_generate_writes_a_dataset_and_reports_speed(cli, tmp_path):
    out = tmp_path / "ds"
    result = cli("generate", "--out", str(out), "--task", "cot", "--train-size", "50",
                 "--val-size", "10", "--test-size", "10")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "M tokens/s" in result.output
    manifest = json.loads((out / "posgen.json").read_text())
    assert list(manifest["configs"]) == ["cot"]


def test_flags_override_the_spec_file(cli, tmp_path):
    out = tmp_path / "ds"
    result = cli("generate", "--spec", "task_specs/paper.toml", "--task", "recursive",
                 "-m", "19", "--out", str(out), *SMALL)  # fmt: skip
    assert result.exit_code == 0, result.output
    spec = json.loads((out / "posgen.json").read_text())["configs"]["recursive"]["spec"]
    assert spec["modulus"] == 19
    assert spec["seeding"] == "paper"
    assert spec["train_size"] == 50


BAD_INPUT = [  # flags of one config, fragments of the one error line
    (["-m", "1"], "configs.recursive.modulus: Input should be greater than or equal to 2"),
    (["--train-length", "4"], "train_length (4) must exceed the seed window"),
    (["--test-length", "10"], "test_length (10) must be >= train_length (64)"),
    (["--train-size", "100000", "-m", "5", "-k", "1", "-j", "0"], "only 5 exist"),
    (["--op", "nope"], "configs.recursive.op: unknown op; known: mod_addition, pow_sin, "),
    (["--seed", "-1"], "seed: Input should be greater than or equal to 0"),
    (["--spec", "missing.toml"], "spec file missing.toml does not exist"),
    (["--seeding", "random"], "Invalid value for '--seeding'", "-h')"),
    (["--task", "copy"], "Invalid value for '--task'", "-h')"),
    (["-m", "abc"], "'abc' is not a valid integer", "-h')"),
]


@pytest.mark.parametrize(("args", "fragments"), [(a, f) for a, *f in BAD_INPUT])
def test_bad_input_is_one_error_line_exit_2_and_creates_nothing(cli, tmp_path, args, fragments):
    out = tmp_path / "ds"
    result = cli("generate", "--out", out, "--task", "recursive", *args)
    assert_clean_error(result, 2, *fragments)
    assert result.stdout == ""
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["generate"], "Missing option '--out'"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_clicks_own_usage_errors_are_one_error_line_naming_the_flag(cli, args, expected):
    assert_clean_error(cli(*args), 2, expected, "-h')")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-m", "1", "-k", "0"], [
            "configs.cot.modulus: Input should be greater than or equal to 2 (given: 1)",
            "configs.cot.near: Input should be greater than or equal to 1 (given: 0)"]),
        (["--train-length", "4", "--test-length", "3"], [
            "configs.cot.train_length: train_length (4) must exceed the seed window far + near "
            "= 4 (given: 4)",
            "configs.cot.test_length: test_length (3) must be >= train_length (4) (given: 3)"]),
    ],
)  # fmt: skip
def test_each_problem_is_one_error_line_under_its_field(cli, tmp_path, args, expected):
    result = cli("generate", "--out", tmp_path / "ds", "--task", "cot", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"error: {line}" for line in expected]


def test_existing_output_needs_overwrite(cli, tmp_path):
    out = tmp_path / "ds"
    assert cli("generate", "--out", str(out), "--task", "cot", *SMALL).exit_code == 0
    result = cli("generate", "--out", str(out), "--task", "cot", *SMALL)
    assert_clean_error(result, 2, "pass --overwrite")
    again = cli("generate", "--out", str(out), "--task", "cot", "--overwrite", *SMALL)
    assert again.exit_code == 0, again.output


def test_version_help_and_python_dash_m(cli):
    assert __version__ in cli("--version").output
    assert "Examples:" in cli("generate", "-h").output
    proc = subprocess.run(
        [sys.executable, "-m", "posgen", "--version"], capture_output=True, text=True, check=True
    )
    assert __version__ in proc.stdout


def test_spec_command_prints_ids_without_generating(cli):
    result = cli("spec", "--spec", "task_specs/posgen-v1.toml")
    assert result.exit_code == 0
    body = json.loads(result.output)
    assert list(body["configs"]) == ["recursive", "cot", "semirecursive"]
    assert body["configs"]["cot"]["seed_space"] == str(17**4)
