"""The command line: generation, help, and bad input that exits 2 and creates nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from posgen import __version__
from tests.cli_support import assert_clean_error, error_lines

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


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-m", "1"], "configs.recursive.modulus: Input should be greater than or equal to 2"),
        (["--train-length", "4"], "train_length (4) must exceed the seed window"),
        (["--test-length", "10"], "test_length (10) must be >= train_length (64)"),
        (["--train-size", "100000", "-m", "5", "-k", "1", "-j", "0"], "only 5 exist"),
        (["--op", "nope"], "configs.recursive.op: unknown op; known: mod_addition, pow_sin, "),
        (["--seed", "-1"], "seed: Input should be greater than or equal to 0"),
        (["--spec", "missing.toml"], "spec file missing.toml does not exist"),
        (["--task", "copy"], "Invalid value for '--task'"),
        (["-m", "abc"], "'abc' is not a valid integer"),
        (["--seeding", "random"], "Invalid value for '--seeding'"),
    ],
)
def test_bad_input_exits_2_with_a_readable_line_and_creates_nothing(cli, tmp_path, args, expected):
    out = tmp_path / "ds"
    result = cli("generate", "--out", str(out), *args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_one_line_per_problem_when_several_fields_are_wrong(cli, tmp_path):
    result = cli("generate", "--out", str(tmp_path / "ds"), "--task", "cot", "-m", "1", "-k", "0")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert error_lines(result.stderr) == [
        "error: configs.cot.modulus: Input should be greater than or equal to 2 (given: 1)",
        "error: configs.cot.near: Input should be greater than or equal to 1 (given: 0)",
    ]


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


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["generate", "--out", "x", "-m", "abc"], "'abc' is not a valid integer"),
        (["generate", "--out", "x", "--task", "copy"], "Invalid value for '--task'"),
        (["generate"], "Missing option '--out'"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_clicks_own_usage_errors_are_one_error_line_naming_the_flag(cli, args, expected):
    result = cli(*args)
    assert_clean_error(result, 2, expected, "-h')")
    assert result.stdout == ""


def test_every_broken_cross_field_rule_is_reported_under_its_field(cli, tmp_path):
    result = cli("generate", "--out", str(tmp_path / "ds"), "--task", "cot",
                 "--train-length", "4", "--test-length", "3")  # fmt: skip
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: configs.cot.train_length: train_length (4) must exceed the seed window "
        "far + near = 4 (given: 4)",
        "error: configs.cot.test_length: test_length (3) must be >= train_length (4) (given: 3)",
    ]
