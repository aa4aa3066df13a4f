"""The helpers every area shares, as fixtures; ``datasets`` works offline, in a temp cache."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests import oracle

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="posgen-hf-cache-"))
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

settings.register_profile(
    "posgen", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60
)
settings.load_profile("posgen")


def cli(*args: object, env: dict[str, str] | None = None, **kwargs):
    """``cli("generate", "--out", path, ...)``: ``posgen *args`` in-process, with the entry
    point's signal handlers; the click ``Result``."""
    from click.testing import CliRunner

    from posgen import signals
    from posgen.cli import main

    argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
    previous = signals.install()  # as the entry point (posgen.__main__) does
    try:
        return CliRunner().invoke(main, argv, env=env, **kwargs)
    finally:
        signals.restore(previous)


def error_lines(text: str) -> list[str]:
    """The ``error: ...`` lines of ``text``."""
    return [line for line in text.splitlines() if line.startswith("error: ")]


def assert_clean_error(result, code: int | tuple[int, ...], *fragments: str) -> str:
    """``result`` (click ``Result`` or ``CompletedProcess``) exited with ``code`` (or one of
    them), one ``error: `` line on stderr holding every fragment, no traceback; the line."""
    if isinstance(result, subprocess.CompletedProcess):
        exit_code, stderr, output = result.returncode, result.stderr, result.stderr
    else:
        exit_code, stderr, output = result.exit_code, result.stderr, result.output
        escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
        assert not escaped, repr(result.exception)
    assert exit_code in (code if isinstance(code, tuple) else (code,)), output
    assert "Traceback" not in output, output
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(autouse=True)
def posgen_signal_handlers():
    """SIGINT, SIGTERM and SIGHUP become ``Interrupted`` in every test, as in posgen's own."""
    from posgen import signals

    previous = signals.install()
    yield
    signals.restore(previous)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread in every test once torch is imported, as ``posgen train`` uses."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CASES: dict[str, dict[str, bool]] = defaultdict(dict)
LABELS = {  # what a case counts as handled, printed after the session
    "bad_input": "distinct bad inputs tried, {ok} rejected cleanly (exit 2, field named)",
    "valid_spec": "random valid specs generated, {ok} validated against the oracle",
    "kill": "kill points signalled mid-run, {ok} survived with nothing lost",
    "disk": "disk-full / unwritable cases, {ok} failed cleanly (path named, nothing left)",
    "resources": "oversized specs, {ok} refused up front with the estimate",
    "damage": "damage cases on real files, {ok} detected with the file named",
    "hostile": "hostile inputs outside the spec flags, {ok} answered with one line or a result",
    "bomb": "resource bombs, {ok} refused before using the memory they ask for",
    "path_escape": "path-escape attempts, {ok} refused without reading or writing outside",
    "race": "concurrency races, {ok} seen whole with nothing lost",
    "target": "targets holding something else, {ok} refused or followed, nothing else changed",
    "unexpected": "unexpected exceptions at the top of the CLI, {ok} shown as one error line",
}


def record(kind: str, key: str, ok: bool) -> None:
    """Note one case (a bad input, a kill point, a damage); the same key twice counts once."""
    CASES[kind][key] = CASES[kind].get(key, True) and ok


@contextmanager
def recorded(kind: str, key: str) -> Iterator[None]:
    """``with recorded("disk", "file-size limit 0"): assert ...``: handled if the asserts pass."""
    try:
        yield
    except BaseException:
        record(kind, key, False)
        raise
    record(kind, key, True)


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # a pytest-xdist worker
        atexit.register(_exit_without_teardown)


def _exit_without_teardown() -> None:
    """A worker's last exit handler: the handlers registered after it (torch's, datasets',
    multiprocessing's, the finalizers') have run, and logging's is called here; the modules'
    teardown, seconds of garbage collection with torch loaded, is skipped: the results were
    sent to the controller before, and it waits for this process to end."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if CASES:
        terminalreporter.section("hardening")
    for kind, label in LABELS.items():
        if CASES.get(kind):
            ok = sum(CASES[kind].values())
            terminalreporter.write_line(f"{len(CASES[kind])} {label.format(ok=ok)}")


def edit_manifest(root: Path, change: Callable[[dict], object]) -> str:
    """Edit the raw ``posgen.json`` (as a careless user or a bad disk would); its name."""
    body = json.loads((root / "posgen.json").read_text())
    change(body)
    (root / "posgen.json").write_text(json.dumps(body, indent=2) + "\n")
    return "posgen.json"


def record_files(root: Path, *paths: str) -> None:
    """Record the current sha256 and size of ``paths`` (relative) in the manifest."""
    from posgen.store.manifest import sha256_file

    def refresh(body: dict) -> None:
        for config in body["configs"].values():
            for split in config["splits"].values():
                for item in split["files"]:
                    if item["path"] in paths:
                        path = root / item["path"]
                        item["sha256"], item["bytes"] = sha256_file(path), path.stat().st_size

    edit_manifest(root, refresh)


def rewrite_rows(root: Path, change: Callable[[object], object], first_only: bool = False) -> None:
    """``change`` the tokens of every (or the first) Parquet file of the non-probe splits,
    recording the new bytes in the manifest."""
    import pyarrow.parquet as pq

    from posgen.spec import is_probe_split
    from posgen.store.formats import open_writer, rows_to_table, table_tokens
    from posgen.store.manifest import read_manifest

    manifest = read_manifest(root)
    files = [entry for _, split, entry in manifest.files() if not is_probe_split(split)]
    files = files[:1] if first_only else files
    for entry in files:
        table = pq.read_table(root / entry.path)
        tokens = change(table_tokens(table).copy())
        with open_writer(root / entry.path, table.schema) as writer:
            writer.write_table(rows_to_table(entry.first_id, tokens, table.schema))
    record_files(root, *(entry.path for entry in files))


def tree(folder: Path) -> dict[str, str]:
    """sha256 of every file, target of every link, and each folder under ``folder``, by path."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[key] = "folder"
    return found


def break_window(root: Path) -> None:
    """One target of row 0 of every file no longer follows its window."""
    from posgen.store.manifest import read_manifest

    configs = read_manifest(root).configs.values()
    modulus, window = next(iter(configs)).spec.modulus, min(e.spec.window for e in configs)

    def change(tokens):
        tokens[0, window] = (int(tokens[0, window]) + 1) % modulus
        return tokens

    rewrite_rows(root, change)


def break_hygiene(root: Path) -> None:
    """Row 1 of the first file repeats row 0 (a repeated row in disjoint data)."""
    rewrite_rows(root, lambda tokens: tokens[[0, 0, *range(2, len(tokens))]], first_only=True)


def break_integrity(root: Path) -> None:
    """The manifest records another sha256 for the first file."""

    def change(body: dict) -> None:
        config = next(iter(body["configs"].values()))
        next(iter(config["splits"].values()))["files"][0]["sha256"] = "0" * 64

    edit_manifest(root, change)


BREAKS = {"window": break_window, "hygiene": break_hygiene, "integrity": break_integrity}


def fork_child(body: Callable[[], object], stdout: bool = True) -> tuple[int, int]:
    """Run ``body`` in a forked child, its stderr (and stdout) on a pipe; ``(pid, read end)``.
    It exits with SystemExit's code, 0, or 70 and the traceback."""
    read, write = os.pipe()  # as subprocess gives (no file-size limit applies to a pipe)
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            os.close(read)
            os.dup2(write, 2)
            os.dup2(write if stdout else os.open(os.devnull, os.O_WRONLY), 1)
            os.close(write)
            sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
            sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
            try:
                body()
                code = 0
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else int(done.code is not None)
        except BaseException:  # said on the pipe: the parent's assertion shows it
            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    os.close(write)
    return pid, read


def _shared(name: str, value: object, doc: str | None = None):
    def fixture():
        return value

    fixture.__doc__ = doc or value.__doc__
    return pytest.fixture(scope="session", name=name)(fixture)


cli_fixture = _shared("cli", cli)
error_lines_fixture = _shared("error_lines", error_lines)
assert_clean_error_fixture = _shared("assert_clean_error", assert_clean_error)
kill_points_fixture = _shared(
    "kill_points",
    [sys.executable, str(Path(__file__).with_name("kill_points.py"))],
    "``[*kill_points, POINT, OUT, TOTAL_BYTES, 'generate', ...]``: posgen held at POINT until "
    "a signal arrives (tests/kill_points.py).",
)
fork_child_fixture = _shared("fork_child", fork_child)
record_fixture = _shared("record", record)
recorded_fixture = _shared("recorded", recorded)
rewrite_rows_fixture = _shared("rewrite_rows", rewrite_rows)
record_files_fixture = _shared("record_files", record_files)
tree_fixture = _shared("tree", tree)
breaks_fixture = _shared("breaks", BREAKS, "``breaks[KIND](folder)``: one check fails.")
oracle_fixture = _shared("oracle", oracle)  # plain-loop references, independent of posgen


@pytest.fixture
def validator(monkeypatch):
    """The real validator (``posgen.publish.validate_folder``), watched: ``validator.calls``
    lists the folders validated; ``validator.break_data(KIND)`` applies ``breaks[KIND]`` first."""
    import posgen.publish

    real = posgen.publish.validate_folder

    def watched(folder):
        watched.calls.append(Path(folder))
        if watched.broken is not None:
            BREAKS[watched.broken](Path(folder))
        return real(folder)

    watched.calls, watched.broken = [], None
    watched.break_data = lambda kind: setattr(watched, "broken", kind)
    monkeypatch.setattr(posgen.publish, "validate_folder", watched)
    return watched


@pytest.fixture(scope="session")
def official(tmp_path_factory) -> Callable[[str], tuple[Path, object]]:
    """``official(name)``: task_specs/NAME.toml published once per session as ``make cards``
    does; the folder (read it, never change it) and the ``Published`` record."""
    from posgen.publish import publish_benchmark, scoring_baselines
    from posgen.spec import resolve_benchmark

    specs = Path(__file__).resolve().parents[1] / "task_specs"
    made: dict[str, tuple[Path, object]] = {}

    def published(name: str) -> tuple[Path, object]:
        if name not in made:
            out = tmp_path_factory.mktemp("official") / name
            bench = resolve_benchmark(specs / f"{name}.toml")
            made[name] = (out, publish_benchmark(bench, out, baselines=scoring_baselines))
        return made[name]

    return published


def _write_small(tmp_path_factory, seeding: str) -> Path:
    from posgen import write_dataset
    from posgen.spec import BenchmarkSpec, TaskSpec
    from posgen.tasks import TASKS

    base = dict(train_size=120, val_size=30, test_size=20, test_length=[96, 128], seeding=seeding)
    configs = {task: TaskSpec(task=task, **base) for task in TASKS}
    bench = BenchmarkSpec(name="small", description="A small benchmark for tests.", configs=configs)
    out = tmp_path_factory.mktemp(seeding) / "small"
    write_dataset(bench, out, shard_bytes=3000, row_group_bytes=1024)
    return out


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """ "small": the three tasks, 120/30/20 rows, L = 64, L' = 96 and 128, probe splits, several
    files per split and row groups per file, disjoint seeding. Read it (damage ``small_copy``)."""
    return _write_small(tmp_path_factory, "disjoint")


@pytest.fixture(scope="session")
def small_paper_dataset(tmp_path_factory) -> Path:
    """``small_dataset`` with the paper's seeding."""
    return _write_small(tmp_path_factory, "paper")


@pytest.fixture
def small_copy(small_dataset, tmp_path) -> Path:
    """A fresh copy of ``small_dataset`` for this test to damage."""
    return Path(shutil.copytree(small_dataset, tmp_path / "small"))


def _write_default(tmp_path_factory, tasks: tuple[str, ...], **sizes: int) -> Path:
    from posgen import write_dataset
    from posgen.spec import default_benchmark

    out = tmp_path_factory.mktemp("-".join(tasks)) / "ds"
    write_dataset(default_benchmark(tasks, **sizes), out)
    return out


@pytest.fixture(scope="session")
def tiny_training_dataset(tmp_path_factory) -> Path:
    """recursive and cot, 64/8/8 rows (m = 17, L = 64, L' = 256): a few training steps' worth."""
    sizes = {"train_size": 64, "val_size": 8, "test_size": 8}
    return _write_default(tmp_path_factory, ("recursive", "cot"), **sizes)


@pytest.fixture(scope="session")
def tiny_cot(tmp_path_factory) -> Path:
    """A cot dataset of 50/10/10 rows (L = 64, L' = 256): read it, never change it."""
    return _write_default(tmp_path_factory, ("cot",), train_size=50, val_size=10, test_size=10)


@pytest.fixture(scope="session")
def tiny_oracle(tiny_cot, tmp_path_factory, cli) -> Path:
    """The oracle's predictions for ``tiny_cot`` (``posgen baseline``), JSON lines."""
    path = tmp_path_factory.mktemp("tiny-cot-oracle") / "oracle.jsonl"
    made = cli("baseline", "--kind", "oracle", "--data", tiny_cot, "--out", path, "-q")
    assert made.exit_code == 0, made.output
    return path


@pytest.fixture
def third_task(monkeypatch) -> str:
    """A task registered for one test: far operands start at s = (t - w) // 3."""
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


HOSTILE_PLUGINS = '''
"""Broken position encodings, each failing in one way (tests only)."""
import math
import sys
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
    if length > 8 and torch.is_grad_enabled():  # in training only
        raise TypeError(f"a bug at {length} positions")
    return torch.zeros(position_ids.shape[0], heads, length, length)

def _quitting_bias(position_ids, heads, parameters):
    if position_ids.shape[-1] > 8 and torch.is_grad_enabled():
        sys.exit(0)
    return _late_bias(position_ids, heads, parameters)

def _nan_past_l_bias(position_ids, heads, parameters):
    bias = torch.zeros(position_ids.shape[0], heads, *position_ids.shape[-1:] * 2)
    if position_ids.shape[-1] > 65:
        bias[..., 70:, :] = math.nan
    return bias

_LONG_ROWS = []

def _test_rows_bias(position_ids, heads, parameters):
    if position_ids.shape[-1] > 65:  # test rows: the check's row passes, the run's fail
        _LONG_ROWS.append(1)
        if len(_LONG_ROWS) > 1:
            raise RuntimeError("a bug on test rows")
    length = position_ids.shape[-1]
    return torch.zeros(position_ids.shape[0], heads, length, length)

def _failing_defaults(lengths):
    raise RuntimeError("no defaults here")

WRONG_SHAPE = rope_encoding("h27_wrong_shape", "frequencies of the wrong shape", _wrong_shape)
NONE = rope_encoding("h27_none", "frequencies that are None", _none)
NAN = rope_encoding("h27_nan", "NaN frequencies", _nan)
RANK = bias_encoding("h27_rank", "a bias of rank 2", _flat_bias)
LATE = bias_encoding("h27_late", "a bias that fails in training past 8 positions", _late_bias)
QUITS = bias_encoding("h27_quits", "a bias calling sys.exit(0) in training", _quitting_bias)
NAN_PAST_L = bias_encoding("h27_nan_past_l", "a bias NaN past position 70", _nan_past_l_bias)
TEST_ROWS = bias_encoding("h27_test_rows", "a bias failing on test rows", _test_rows_bias)
DEFAULTS = rope_encoding("h27_defaults", "defaults that raise", None, _failing_defaults)
DIVERGE = PositionEncoding(
    name="h27_diverge",
    summary="NaN input positions in training",
    input_positions=lambda parameters, lengths, hidden, positions: _Diverging(hidden),
)
'''


@pytest.fixture
def hostile_plugins(tmp_path, monkeypatch) -> str:
    """A folder on ``sys.path`` with ``h27plugins`` (``WRONG_SHAPE``, ``NONE``, ``NAN``,
    ``RANK``, ``LATE``, ``QUITS``, ``NAN_PAST_L``, ``TEST_ROWS``, ``DEFAULTS``, ``DIVERGE``:
    each broken in one way), ``h27raises`` (raises on import) and
    ``h27exits`` (calls ``sys.exit(3)`` on import); returns the folder."""
    site = tmp_path / "hostile-site"
    site.mkdir()
    (site / "h27plugins.py").write_text(HOSTILE_PLUGINS)
    (site / "h27raises.py").write_text('raise RuntimeError("boom at import")\nX = 1\n')
    (site / "h27exits.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(site))
    yield str(site)
    for name in ("h27plugins", "h27raises", "h27exits"):
        sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def readme_block() -> Callable[[str], str]:
    """``readme_block(first_line)``: the one README code block whose first line is that."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"^```\w*\n(.*?)^```", text, re.M | re.S)

    def block(first_line: str) -> str:
        matches = [found for found in blocks if found.splitlines()[0] == first_line]
        assert len(matches) == 1, first_line
        return matches[0]

    return block


@pytest.fixture(scope="session")
def train_tiny(cli, tiny_training_dataset) -> Callable[..., object]:
    """``train_tiny(pe, out, *flags)``: ``posgen train --pe PE --out OUT`` of a one-layer model
    for two steps on the tiny dataset's ``cot``, in-process; later ``flags`` override these."""

    def train(pe: str, out: Path, *flags: object):
        data = ["--data", tiny_training_dataset, "--config", "cot", f"--pe={pe}", "--out", out]
        model = ["--layers=1", "--hidden=16", "--heads=2", "--intermediate=32"]
        return cli("train", *data, *model, "--epochs=1", "--max-steps=2", "--seed=1", "-q", *flags)

    return train


@pytest.fixture(scope="session")
def trained_runs(tiny_training_dataset, tmp_path_factory) -> Path:
    """Run folders ``{rope,yarn}-{1,2}`` (pe-seed; one training per seed: 2 steps of a 2-layer
    model on ``tiny_training_dataset``'s cot config, models saved): copy them to change them."""
    import torch

    from posgen.train.config import preset
    from posgen.train.job import train_runs

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runs = tmp_path_factory.mktemp("trained") / "runs"
    size = {"layers": 2, "hidden": 16, "heads": 2, "intermediate": 32, "batch_size": 32}
    config = preset("cpu", **size, epochs=1, max_steps=2)
    for seed in (1, 2):
        outs = [runs / f"{pe}-{seed}" for pe in ("rope", "yarn")]
        train_runs(
            tiny_training_dataset, "cot", ["rope", "yarn"], config, seed, outs, "cpu", save=True
        )
    torch.set_num_threads(threads)
    return runs
