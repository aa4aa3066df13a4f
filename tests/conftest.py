"""Test setup: `datasets` works offline, in a temporary cache; hypothesis profiles; the
``cli`` fixture that runs posgen's command line in-process."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="posgen-hf-cache-"))
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

settings.register_profile(
    "posgen", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60
)
settings.load_profile("posgen")


@pytest.fixture(scope="session")
def cli():
    """``cli("generate", "--out", path, ...)``: posgen's CLI in-process, a click ``Result``.

    The same function as ``tests.cli_support.invoke``, for helpers and module fixtures.
    """
    from tests.cli_support import invoke

    return invoke


# --- cli: the signal handlers posgen's processes run with ------------------------------------


@pytest.fixture(autouse=True)
def posgen_signal_handlers():
    """SIGINT, SIGTERM and SIGHUP become ``Interrupted`` in every test, as in posgen's own
    processes: the ``posgen`` entry point and the sweep worker install the handlers once, and
    in-process code (``run_job``, ``atomic_folder``) is tested under the same model."""
    from posgen import signals

    previous = signals.install()
    yield
    signals.restore(previous)


# ------------------------------------------------------------------------------------------------


@pytest.fixture
def validator(monkeypatch):
    """The real validator (``posgen.publish.validate_folder``), watched.

    ``validator.calls`` lists the folders validated; ``validator.break_data("window")`` changes
    one token in every data file before validation (the manifest records the new bytes, so
    only the window check fails, once per split); ``break_data("integrity")`` edits one
    recorded sha256 instead.
    """
    import posgen.publish
    from tests.data_damage import BREAKS

    real = posgen.publish.validate_folder
    state: dict = {"calls": [], "break": None}

    def watched(folder):
        state["calls"].append(Path(folder))
        if state["break"] is not None:
            BREAKS[state["break"]](Path(folder))
        return real(folder)

    monkeypatch.setattr(posgen.publish, "validate_folder", watched)

    class Handle:
        calls = state["calls"]

        def break_data(self, kind):
            state["break"] = kind

    return Handle()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print what the hardening tests tried (bad inputs, kill points, damage cases)."""
    from tests.hardening_counts import summary_lines

    lines = summary_lines()
    if lines:
        terminalreporter.section("hardening")
        for line in lines:
            terminalreporter.write_line(line)


# --- validate, card, score fixtures (tests2) ---
def _small_benchmark(seeding: str):
    from posgen.spec import BenchmarkSpec, TaskSpec
    from posgen.tasks import TASKS

    base = dict(train_size=120, val_size=30, test_size=20, test_length=[96, 128], seeding=seeding)
    configs = {task: TaskSpec(task=task, **base) for task in TASKS}
    return BenchmarkSpec(name="small", description="A small benchmark for tests.", configs=configs)


def _write_small(tmp_path_factory, seeding: str) -> Path:
    from posgen import write_dataset

    out = tmp_path_factory.mktemp(seeding) / "small"
    write_dataset(_small_benchmark(seeding), out, shard_bytes=3000, row_group_bytes=1024)
    return out


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """A dataset folder "small": the three tasks, 120/30/20 rows, L = 64, L' = 96 and 128,
    probe splits, two or more files per split, several row groups per file, disjoint seeding.
    Shared: read it, never change it (``small_copy`` is yours to damage)."""
    return _write_small(tmp_path_factory, "disjoint")


@pytest.fixture(scope="session")
def small_paper_dataset(tmp_path_factory) -> Path:
    """``small_dataset`` with the paper's seeding (validation and test rows begin with train
    rows)."""
    return _write_small(tmp_path_factory, "paper")


@pytest.fixture
def small_copy(small_dataset, tmp_path) -> Path:
    """A fresh copy of ``small_dataset`` for this test to damage."""
    import shutil

    return Path(shutil.copytree(small_dataset, tmp_path / "small"))


@pytest.fixture(scope="session")
def tiny_training_dataset(tmp_path_factory) -> Path:
    """recursive and cot, 64/8/8 rows (m = 17, L = 64, L' = 256): a few training steps' worth."""
    from posgen import write_dataset
    from posgen.spec import default_benchmark

    out = tmp_path_factory.mktemp("training") / "ds"
    bench = default_benchmark(("recursive", "cot"), train_size=64, val_size=8, test_size=8)
    write_dataset(bench, out)
    return out


# --- cli and generate fixtures (tests3) ---------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_cot(tmp_path_factory) -> Path:
    """A complete cot dataset of 50/10/10 rows, written once per session: read it, never change
    it (copy it first)."""
    from posgen import write_dataset
    from posgen.spec import default_benchmark

    out = tmp_path_factory.mktemp("tiny-cot") / "ds"
    write_dataset(default_benchmark(("cot",), train_size=50, val_size=10, test_size=10), out)
    return out


@pytest.fixture(scope="session")
def tiny_oracle(tiny_cot, tmp_path_factory, cli) -> Path:
    """The oracle's predictions for ``tiny_cot`` (``posgen baseline --kind oracle``), JSON lines."""
    path = tmp_path_factory.mktemp("tiny-cot-oracle") / "oracle.jsonl"
    made = cli("baseline", "--kind", "oracle", "--data", tiny_cot, "--out", path, "-q")
    assert made.exit_code == 0, made.output
    return path


@pytest.fixture
def third_task(monkeypatch) -> str:
    """A task registered for one test: far operands start a third of the way,
    s = (t - w) // 3; the registry is restored afterwards."""
    import posgen.tasks

    monkeypatch.setattr(posgen.tasks, "_RULES", dict(posgen.tasks._RULES))
    posgen.tasks.register_task("third", lambda t, w: (t - w) // 3)
    return "third"


@pytest.fixture
def tiny_spec_file(tmp_path) -> Path:
    """``tmp_path/tiny.toml``: a one-config benchmark (cot, 40/10/10 rows, test length 96)."""
    path = tmp_path / "tiny.toml"
    path.write_text(
        'name = "tiny"\ndescription = "Tiny benchmark for the CLI tests."\n[defaults]\n'
        "train_size = 40\nval_size = 10\ntest_size = 10\ntest_length = 96\n[configs.cot]\n"
    )
    return path


# --- hostile position-encoding plugins (issue 27) -----------------------------------------------

HOSTILE_PLUGINS = '''
"""Broken position encodings, each failing in one way (tests only)."""
import math

import torch
from torch import nn

from posgen.encodings import PositionEncoding
from posgen.encodings.builtin import bias_encoding, rope_encoding


def _wrong_shape(config, device=None, seq_len=None, **kwargs):
    return torch.ones(3), 1.0


def _none(config, device=None, seq_len=None, **kwargs):
    return None, 1.0


def _nan(config, device=None, seq_len=None, **kwargs):
    return torch.full((config.hidden_size // config.num_attention_heads // 2,), math.nan), 1.0


def _flat_bias(position_ids, heads, parameters):
    length = position_ids.shape[-1]
    return torch.zeros(length, length)


class _Diverging(nn.Module):
    """Zeros when evaluating, NaN when training: the training loss turns NaN."""

    def __init__(self, hidden):
        super().__init__()
        self.hidden = hidden

    def forward(self, position_ids):
        value = math.nan if self.training else 0.0
        return torch.full((*position_ids.shape, self.hidden), value)


def _late_bias(position_ids, heads, parameters):
    length = position_ids.shape[-1]
    if length > 8:
        raise TypeError(f"a bug at {length} positions")
    return torch.zeros(position_ids.shape[0], heads, length, length)


WRONG_SHAPE = rope_encoding("h27_wrong_shape", "frequencies of the wrong shape", _wrong_shape)
NONE = rope_encoding("h27_none", "frequencies that are None", _none)
NAN = rope_encoding("h27_nan", "NaN frequencies", _nan)
RANK = bias_encoding("h27_rank", "a bias of rank 2", _flat_bias)
LATE = bias_encoding("h27_late", "a bias that fails past 8 positions", _late_bias)
DIVERGE = PositionEncoding(
    name="h27_diverge",
    summary="NaN input positions in training",
    input_positions=lambda parameters, lengths, hidden, positions: _Diverging(hidden),
)
'''


@pytest.fixture
def hostile_plugins(tmp_path, monkeypatch) -> str:
    """A folder on ``sys.path`` with ``h27plugins`` (``WRONG_SHAPE``, ``NONE``, ``NAN``,
    ``RANK``, ``LATE``, ``DIVERGE``: each broken in one way), ``h27raises`` (raises on import) and
    ``h27exits`` (calls ``sys.exit(3)`` on import); returns the folder."""
    import sys

    site = tmp_path / "hostile-site"
    site.mkdir()
    (site / "h27plugins.py").write_text(HOSTILE_PLUGINS)
    (site / "h27raises.py").write_text('raise RuntimeError("boom at import")\nX = 1\n')
    (site / "h27exits.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(site))
    yield str(site)
    for name in ("h27plugins", "h27raises", "h27exits"):
        sys.modules.pop(name, None)
