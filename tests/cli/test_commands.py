"""The command line: generation, publishing, help; bad input exits 2 and creates nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import posgen
import posgen.cli
from posgen import __version__

SMALL = ["--train-size", "50", "--val-size", "10", "--test-size", "10", "-q"]


def test_generate_writes_a_dataset_with_flags_overriding_the_spec_file(cli, tmp_path):
    out = tmp_path / "ds"
    result = cli("generate", "--spec", "task_specs/paper.toml", "--task", "recursive",
                 "-m", "19", "--out", str(out), *SMALL[:-1])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "M tokens/s" in result.output
    configs = json.loads((out / "posgen.json").read_text())["configs"]
    assert list(configs) == ["recursive"]
    spec = configs["recursive"]["spec"]
    assert (spec["modulus"], spec["seeding"], spec["train_size"]) == (19, "paper", 50)


BAD_INPUT = [  # flags of one config, fragments of the one error line
    (["-m", "1"], "configs.recursive.modulus: Input should be greater than or equal to 2"),
    (["--train-length", "4"], "train_length (4) must exceed the seed window"),
    (["--test-length", "10"], "test_length (10) must be >= train_length (64)"),
    (["--train-size", "100000", "-m", "5", "-k", "1", "-j", "0"], "needs 102,000", "only 5 exist"),
    (["--op", "nope"], "configs.recursive.op: unknown op; known: mod_addition, pow_sin, "),
    (["--seed", "-1"], "seed: Input should be greater than or equal to 0"),
    (["--spec", "missing.toml"], "spec file missing.toml does not exist"),
    (["--seeding", "random"], "Invalid value for '--seeding'", "-h')"),
    (["--task", "copy"], "Invalid value for '--task'", "-h')"),
    (["-m", "abc"], "'abc' is not a valid integer", "-h')"),
    (["--shard", "0/2"], "No such option '--shard'"),  # the removed alias of --part
    (["--test-length", "256", "--test-length", "256"], "test_length values must be distinct"),
    (["-m", "3", "--seeding", "paper"], "modulus: paper seeding needs modulus >= far + near (4)"),
    (["-m", "70000"], "configs.recursive.modulus: Input should be less than or equal to 65536"),
]


@pytest.mark.parametrize(("args", "fragments"), [(a, f) for a, *f in BAD_INPUT])
def test_bad_input_is_one_error_line_exit_2_and_creates_nothing(
    assert_clean_error, cli, tmp_path, args, fragments
):
    out = tmp_path / "ds"
    result = cli("generate", "--out", out, "--task", "recursive", *args)
    assert_clean_error(result, 2, *fragments)
    assert result.stdout == ""
    assert not out.exists()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("generate", "Missing option '--out'"),
        ("frobnicate", "No such command 'frobnicate'."),
        ("genrate", "No such command 'genrate'. Did you mean 'generate'?"),
        ("validate nothere", "Path 'nothere' does not exist"),
        ("-- -x", "No such option '-x'"),  # after --: looked up as a command, then an option
    ],
)
def test_clicks_own_usage_errors_are_one_error_line_naming_the_flag(
    assert_clean_error, cli, command, expected
):
    assert_clean_error(cli(*command.split()), 2, expected, "-h')")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("modulus = 1\nnear = 0", [
            "configs.cot.modulus: Input should be greater than or equal to 2 (given: 1)",
            "configs.cot.near: Input should be greater than or equal to 1 (given: 0)"]),
        ("train_length = 4\ntest_length = 3", [
            "configs.cot.train_length: train_length (4) must exceed the seed window far + near "
            "= 4 (given: 4)",
            "configs.cot.test_length: test_length (3) must be >= train_length (4) (given: 3)"]),
        ('[defaults]\nnaer = 3\n[configs.semi]\ntask = "semirecursive"', [  # named once
            "defaults.naer: Extra inputs are not permitted (given: 3)"]),
        ('[defaults]\nnear = 0\n[configs."a.b"]\ntask = "cot"', [  # a dot in the name
            "defaults.near: Input should be greater than or equal to 1 (given: 0)",
            "configs.a.b.[key]: String should match pattern '^[a-z0-9][a-z0-9_-]{0,63}$' "
            "(given: 'a.b')"]),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["generate --spec", "publish"])
def test_each_problem_is_one_error_line_naming_the_file_and_its_field(
    cli, tmp_path, fields, expected, command
):
    spec = tmp_path / "cot.toml"
    spec.write_text(f'[configs.cot]\ntask = "cot"\n{fields}\n')
    result = cli(*command.split(), spec, "--out", tmp_path / "ds")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"error: {spec}: {line}" for line in expected]
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("near = 0", "near: Input should be greater than or equal to 1 (given: 0)"),
        ("train_size = 900000", "spec: disjoint seeding needs 902,000 distinct seed windows"),
    ],
)
def test_a_single_task_spec_files_problem_names_no_configs_table(cli, tmp_path, fields, expected):
    spec = tmp_path / "one.toml"  # no configs table: the file is one task's fields
    spec.write_text(f'task = "cot"\n{fields}\n')
    result = cli("generate", "--spec", spec, "--out", tmp_path / "ds")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {spec}: {expected}"), result.stderr


def test_version_help_and_python_dash_m(cli):
    assert __version__ in cli("--version").output
    assert "Examples:" in cli("generate", "-h").output
    bare = cli()  # `posgen` alone: the help as written, not folded into an error line
    assert bare.exit_code == 2 and "error:" not in bare.stderr, bare.stderr
    assert bare.stderr.startswith("Usage: ") and "\n  generate " in bare.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "posgen", "--version"], capture_output=True, text=True, check=True
    )
    assert __version__ in proc.stdout


def test_a_library_that_cannot_load_at_startup_is_one_error_line_exit_1(tmp_path):
    """As under ``ulimit -v``: pyarrow's shared objects fail to map; no traceback."""
    (tmp_path / "pyarrow").mkdir()
    failing = 'raise ImportError("libarrow.so: failed to map segment from shared object")\n'
    (tmp_path / "pyarrow" / "__init__.py").write_text(failing)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}  # found before the real one
    proc = subprocess.run(
        [sys.executable, "-m", "posgen", "validate", "ds"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: posgen cannot start (ImportError): libarrow.so: failed to map segment from "
        "shared object"
    ]


def test_spec_command_prints_ids_without_generating(cli):
    result = cli("spec", "--spec", "task_specs/posgen-v1.toml")
    assert result.exit_code == 0
    body = json.loads(result.output)
    assert list(body["configs"]) == ["recursive", "cot", "semirecursive"]
    assert body["configs"]["cot"]["seed_space"] == str(17**4)


def test_publish_checks_its_target_as_generate_does(
    assert_clean_error, cli, tmp_path, tiny_spec_file, monkeypatch
):
    (tmp_path / "blocker").write_text("")
    blocked = tmp_path / "blocker" / "hub"
    published = cli("publish", tiny_spec_file, "--out", blocked, "-q")
    line = assert_clean_error(published, 2, f"{tmp_path / 'blocker'} is a file")
    generated = cli("generate", "--out", blocked, "--task", "cot", "-q")
    assert assert_clean_error(generated, 2) == line
    monkeypatch.setattr(posgen.cli, "free_bytes", lambda path: 1000)
    out = tmp_path / "hub"
    refused = cli("publish", tiny_spec_file, "--out", out, "-q")
    assert_clean_error(refused, 2, "only 1000 B are free", "--force")
    assert not out.exists()
    forced = cli("publish", tiny_spec_file, "--out", out, "-q", "--force")
    assert forced.exit_code == 0, forced.output
    assert (out / "posgen.json").is_file()


@pytest.mark.parametrize("command", ["generate --spec", "publish"])
def test_the_next_run_removes_what_a_killed_run_left_with_a_note(
    cli, tmp_path, tiny_spec_file, command
):
    out = tmp_path / "hub"
    stale = tmp_path / ".hub.posgen-tmp-999999999-deadbeef"  # a build of a dead process
    (stale / "data").mkdir(parents=True)
    done = cli(*command.split(), tiny_spec_file, "--out", out, "-q")
    assert done.exit_code == 0, done.output
    assert f"note: removed leftover {stale}" in done.stderr
    assert not stale.exists()
    assert (out / "posgen.json").is_file()


def test_a_sweep_into_an_unwritable_place_is_refused_before_the_grid_is_read(
    assert_clean_error, cli, tmp_path
):
    (tmp_path / "blocker").write_text("")
    out = tmp_path / "blocker" / "sweep"
    result = cli("sweep", tmp_path / "no-grid.toml", "--out", out)
    assert_clean_error(result, 2, f"--out: cannot create {out}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


GENERATE_PATH = {
    "cli/__init__", "cli/dataset", "signals", "errors", "spec", "tasks",
    "generator", "store/writer", "store/formats", "store/manifest", "store/safety",
    "store/dataset", "card/__init__",
}  # fmt: skip


def test_generate_out_runs_through_the_modules_of_its_jobs_only(cli, tmp_path):
    """The path a reader follows (imports are made before the trace)."""
    args = ["generate", "--task", "cot", "--out"]
    assert cli(*args, tmp_path / "warm", *SMALL).exit_code == 0
    package = Path(posgen.__file__).parent
    called: set[str] = set()

    def trace(frame, event, arg):
        path = Path(frame.f_code.co_filename)
        if event == "call" and path.is_relative_to(package) and frame.f_code.co_name != "<module>":
            called.add(path.relative_to(package).with_suffix("").as_posix())

    sys.setprofile(trace)
    try:
        result = cli(*args, tmp_path / "ds", *SMALL)
    finally:
        sys.setprofile(None)
    assert result.exit_code == 0, result.output
    assert called <= GENERATE_PATH, sorted(called - GENERATE_PATH)


def test_no_test_module_imports_another():
    """Shared helpers live in conftest.py (fixtures), ``tests/oracle.py`` or
    ``tests/kill_points.py``; a test module imports none of the others."""
    import ast

    imported = {}
    for path in sorted(Path("tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "tests" and any(part.startswith("test_") for part in parts):
                    imported[str(path)] = name
    assert not imported
