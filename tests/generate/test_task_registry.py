"""The task registry is open: a task registered through the public function is usable in a
spec, the generator, the validator and ``--task``; the top-level package exports what the
README uses."""

from __future__ import annotations

import numpy as np
import pytest

import posgen
from posgen import TASKS, TaskSpec, generate_split, register_task
from posgen.tasks import _RULES
from tests.cli_support import invoke
from tests.oracle import far_positions


@pytest.fixture
def third(monkeypatch):
    """A task whose far operands start a third of the way: s = floor((t - w) / 3)."""
    monkeypatch.setattr(posgen.tasks, "_RULES", dict(_RULES))
    register_task("third", lambda t, w: (t - w) // 3)
    return "third"


def test_a_registered_task_is_usable_in_a_spec_the_generator_and_the_validator(third):
    from posgen.validate import validate

    assert third in TASKS
    assert TASKS[-1] == third
    spec = TaskSpec(task=third, train_size=50, val_size=10, test_size=10)
    test = generate_split(spec, "test")
    w = spec.window
    for t in (w, 40, 255):
        far = test[:, (t - w) // 3].astype(int)
        near = test[:, t - 3 : t].astype(int).sum(axis=1)
        assert np.array_equal(test[:, t], (far + near) % 17)
    assert validate(posgen.to_dataset_dict(spec), spec).ok


def test_a_registered_task_is_a_cli_choice(third, tmp_path):
    out = tmp_path / "ds"
    args = ["generate", "--out", out, "--task", third, "--train-size", "20", "--val-size", "4",
            "--test-size", "4", "-q"]  # fmt: skip
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert posgen.read_manifest(out).configs[third].spec.task == third


def test_an_unregistered_task_is_refused_naming_the_registered_ones():
    with pytest.raises(ValueError, match="Input should be 'recursive', 'cot' or 'semirecursive'"):
        TaskSpec(task="third")
    with pytest.raises(ValueError, match="already registered"):
        register_task("cot", lambda t, w: t)
    with pytest.raises(ValueError, match="must match"):
        register_task("Bad Name", lambda t, w: t)


def test_the_package_exports_the_readme_entry_points(tmp_path):
    bench = posgen.BenchmarkSpec(
        name="api", configs={"cot": TaskSpec(task="cot", train_size=8, val_size=2, test_size=2)}
    )
    manifest = posgen.write_dataset(bench, tmp_path / "ds")
    assert posgen.read_manifest(tmp_path / "ds") == manifest
    loaded = posgen.load(tmp_path / "ds", "cot")
    test = np.stack(loaded["test"].with_format("numpy")["tokens"])
    assert posgen.score(test, test, bench.configs["cot"]).summary()["ood_accuracy"] == 1.0
    assert far_positions("cot", 9, 3, 1) == [0]
    assert set(posgen.__all__) >= {"write_dataset", "load", "read_manifest", "score"}
