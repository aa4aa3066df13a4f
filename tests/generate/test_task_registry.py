"""A task registered through the public function works in a spec, the generator, probe splits,
the validator and ``--task``; the package exports what the README uses."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

import posgen
import posgen.tasks
from posgen import TASKS, TaskSpec, generate_split, register_task
from posgen.generator import probe_rows
from posgen.store.manifest import DamagedDataset


def test_a_registered_task_is_usable_in_a_spec_the_generator_and_the_validator(third_task):
    from posgen.validate import validate

    assert third_task in TASKS and TASKS[-1] == third_task
    spec = TaskSpec(task=third_task, train_size=50, val_size=10, test_size=10)
    test = generate_split(spec, "test")
    w = spec.window
    for t in (w, 40, 255):
        far = test[:, (t - w) // 3].astype(int)
        near = test[:, t - 3 : t].astype(int).sum(axis=1)
        assert np.array_equal(test[:, t], (far + near) % 17)
    assert validate(posgen.to_dataset_dict(spec), spec).ok


def test_a_registered_task_is_a_cli_choice(cli, third_task, tmp_path):
    out = tmp_path / "ds"
    sizes = ["--train-size", "20", "--val-size", "4", "--test-size", "4", "-q"]
    result = cli("generate", "--out", out, "--task", third_task, *sizes)
    assert result.exit_code == 0, result.output
    assert posgen.read_manifest(out).configs[third_task].spec.task == third_task


def test_a_dataset_of_a_task_this_process_has_not_registered_says_to_register_it(
    cli, third_task, monkeypatch, tmp_path
):
    sizes = ["--train-size", "20", "--val-size", "4", "--test-size", "4", "-q"]
    assert cli("generate", "--out", tmp_path / "ds", "--task", third_task, *sizes).exit_code == 0
    monkeypatch.delitem(posgen.tasks._RULES, third_task)  # a process that never registered it
    with pytest.raises(DamagedDataset) as raised:
        posgen.load(tmp_path / "ds")
    assert "task 'third' not registered in this process" in str(raised.value)
    result = cli("validate", tmp_path / "ds")
    assert result.exit_code == 1 and "(posgen.register_task, posgen.register_op)" in result.output


def test_an_unregistered_task_is_refused_naming_the_registered_ones():
    with pytest.raises(ValueError, match="Input should be 'recursive', 'cot' or 'semirecursive'"):
        TaskSpec(task="third")
    with pytest.raises(ValueError, match="already registered"):
        register_task("cot", lambda t, w: t)
    with pytest.raises(ValueError, match="must match"):
        register_task("Bad Name", lambda t, w: t)


def test_the_package_exports_the_readme_entry_points(oracle, tmp_path):
    bench = posgen.BenchmarkSpec(
        name="api", configs={"cot": TaskSpec(task="cot", train_size=8, val_size=2, test_size=2)}
    )
    manifest = posgen.write_dataset(bench, tmp_path / "ds")
    assert posgen.read_manifest(tmp_path / "ds") == manifest
    loaded = posgen.load(tmp_path / "ds", "cot")
    test = np.stack(loaded["test"].with_format("numpy")["tokens"])
    assert np.array_equal(posgen.Dataset.open(tmp_path / "ds").split("cot", "test").tokens, test)
    assert posgen.score(test, test, bench.configs["cot"]).summary()["ood_accuracy"] == 1.0
    assert oracle.far_positions("cot", 9, 3, 1) == [0]
    assert set(posgen.__all__) >= {"write_dataset", "load", "Dataset", "read_manifest", "score"}
    assert (posgen.register_op, posgen.Op) == (posgen.tasks.register_op, posgen.tasks.Op)
    assert repr(posgen.TASKS) == repr(tuple(posgen.TASKS))  # the names, as a tuple shows them


def test_a_registered_task_gets_probe_rows_from_its_dependency_rule(oracle, third_task):
    spec = TaskSpec(task=third_task, modulus=31, train_size=1, val_size=1, test_size=60)
    block = probe_rows(spec, "probe", 0, spec.test_size)
    assert block.probed.size > 0
    w = spec.window
    tokens = block.tokens.astype(int)
    for i in range(spec.test_size):
        replaced = set(block.replaced[block.replaced_offsets[i] : block.replaced_offsets[i + 1]])
        probed = block.probed[block.probed_offsets[i] : block.probed_offsets[i + 1]].tolist()
        far = block.far_rule[block.probed_offsets[i] : block.probed_offsets[i + 1]].tolist()
        want = [
            t
            for t in range(w, 256)
            if (t - w) // 3 in replaced
            and t not in replaced
            and not replaced & set(range(t - spec.near, t))
        ]
        assert probed == want
        assert far == [
            oracle.op_value("mod_addition", [tokens[i, (t - w) // 3], *tokens[i, t - 3 : t]], 31)
            for t in probed
        ]
    assert np.bincount(block.probed, minlength=256)[w:].min() > 0


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (lambda t, w: t, "far start [4] for t = 4; a rule keeps"),
        (lambda t, w: t - 2 * w, "far start [-4] for t = 4; a rule keeps"),
        (lambda t, w: (t - w) / 2, "far start [0.5] for t = 5; a rule keeps"),
        (lambda t, w: np.full(t.shape, np.nan), "far start [nan] for t = 4"),
        (lambda t, w: (t - w)[:-1], "int64 values of shape (59,) for positions of shape (60,)"),
        (lambda t, w: None, "object values of shape ()"),
        (lambda t, w: t > 0, "bool values of shape (60,)"),
        (lambda t, w: 1 / 0, "its rule raised ZeroDivisionError: division by zero"),
    ],
)
def test_a_rule_reaching_past_its_window_or_before_the_row_is_refused_when_used(
    monkeypatch, cli, assert_clean_error, tmp_path, rule, message
):
    monkeypatch.setattr(posgen.tasks, "_RULES", dict(posgen.tasks._RULES))
    register_task("broken", rule)
    spec = TaskSpec(task="broken", train_size=8, val_size=2, test_size=2)
    with pytest.raises(posgen.tasks.TaskError, match=re.escape(message)):
        generate_split(spec, "train")
    sizes = ["--train-size", "8", "--val-size", "2", "--test-size", "2", "-q"]
    result = cli("generate", "--out", tmp_path / "ds", "--task", "broken", *sizes)
    assert_clean_error(result, 2, "task 'broken': its rule", message)
    assert not (tmp_path / "ds").exists()
    with pytest.raises(posgen.tasks.TaskError, match="rule must be callable"):
        register_task("not_callable", 3)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="unknown task 'nope'; known: recursive"):
        posgen.dependencies("nope", 5, near=2, far=1)
    with pytest.raises(KeyError, match="unknown op 'nope'; known: far_perm, keyed_hash"):
        posgen.tasks.get_op("nope")


@pytest.mark.parametrize(
    ("t", "near", "far", "message"),
    [
        (5.5, 3, 1, "t = 5.5: use a position"),
        ("9", 3, 1, "t = '9': use a position"),
        (None, 3, 1, "t = None: use a position"),
        (10**30, 3, 1, "t = 1000000000000000000000000000000: use a position"),
        (9, -3, 1, "near = -3: use an integer >= 1"),
        (9, 3, -1, "far = -1: use an integer >= 0"),
        (9, 3.0, 1, "near = 3.0: use an integer >= 1"),
        (2, 3, 1, "positions below the seed window (4) have no dependencies"),
    ],
)
def test_dependencies_of_a_bad_position_or_operand_count_name_the_argument(t, near, far, message):
    with pytest.raises(posgen.tasks.TaskError, match=re.escape(message)):
        posgen.dependencies("cot", t, near=near, far=far)


@pytest.fixture
def task_module(monkeypatch, tmp_path):
    """``$POSGEN_TASKS`` naming a module on the path that registers ``quarter``, in a process
    that has imported neither (the registries as the ``posgen`` command starts with them)."""
    (tmp_path / "quarter_task.py").write_text(
        "import posgen\nposgen.register_task('quarter', lambda t, w: (t - w) // 4)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(posgen.tasks, "_RULES", dict(posgen.tasks._RULES))
    monkeypatch.setattr(posgen.tasks, "_imports", [], raising=False)
    monkeypatch.setenv("POSGEN_TASKS", "quarter_task")
    yield "quarter"
    sys.modules.pop("quarter_task", None)


def test_the_command_imports_the_modules_of_posgen_tasks_so_a_new_task_is_generated_and_read(
    cli, task_module, tmp_path
):
    sizes = ["--train-size", "20", "--val-size", "4", "--test-size", "4", "-q"]
    assert cli("generate", "--out", tmp_path / "ds", "--task", "quarter", *sizes).exit_code == 0
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "x_p .. x_{p+j-1}, p from the rule of task quarter (quarter_task)" in card
    posgen.tasks._RULES.pop("quarter")  # a new process: validate imports the module again
    posgen.tasks._imports.clear()
    sys.modules.pop("quarter_task")
    result = cli("validate", tmp_path / "ds")
    assert result.exit_code == 0 and "all checks passed" in result.output, result.output


def test_a_module_of_posgen_tasks_failing_after_it_registered_a_task_says_why_at_every_use(
    task_module, monkeypatch, tmp_path
):
    """Before, the second use imported it again: 'task 'quarter' is already registered'."""
    (tmp_path / "quarter_task.py").write_text(
        "import posgen\nposgen.register_task('quarter', lambda t, w: t - w)\nraise OSError('x')\n"
    )
    for _ in range(2):
        with pytest.raises(posgen.tasks.TaskError, match=r"quarter_task \(OSError: x\)$"):
            "quarter" in TASKS  # noqa: B015
    monkeypatch.setenv("POSGEN_TASKS", "")  # other modules named: the failure is not kept
    assert "quarter" in TASKS


def test_what_a_module_of_posgen_tasks_prints_goes_to_stderr_never_into_the_output(
    cli, task_module, tmp_path
):
    (tmp_path / "quarter_task.py").write_text(
        "import posgen\nprint('loaded')\nposgen.register_task('quarter', lambda t, w: t - w)\n"
    )
    result = cli("spec", "--task", "quarter")  # the JSON on stdout
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["configs"]["quarter"]["spec"]["task"] == "quarter"
    assert result.stderr == "loaded\n"


def test_a_module_of_posgen_tasks_that_cannot_be_imported_is_one_line(
    cli, assert_clean_error, monkeypatch
):
    monkeypatch.setattr(posgen.tasks, "_imports", [], raising=False)
    monkeypatch.setenv("POSGEN_TASKS", "no_such_task_module")
    assert_clean_error(
        cli("validate", "anywhere"), 2, "POSGEN_TASKS: cannot import no_such_task_module",
        "PYTHONPATH=. for ./no_such_task_module.py",
    )  # fmt: skip
