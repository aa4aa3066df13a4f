"""The ``posgen`` command line: the click group :data:`main`, whose commands live by what they
do (:mod:`~posgen.cli.dataset`, ``score``, ``train``, ``sweep``, ``results``) and are imported
when run (so ``posgen generate`` never loads the training side); and what the commands share:
their flags, with :class:`PathArg`, and the checks made before anything is written.

>>> path_problem("out/" + "a" * 300)
'has a name of 300 bytes; the file system allows 255'
>>> output_problems({"--out": Path("r.md"), "--json": Path("./r.md")}, {})
['--out r.md and --json r.md name the same file; give each output its own name']
>>> bench = BenchmarkSpec(name="ds", configs={"cot": TaskSpec(task="cot")})
>>> DatasetRun(Path("out/ds"), bench, part=(1, 4)).left()
'part 1/4 was not finished; rerun it to write it'
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
import stat
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import click
import numpy as np
from pydantic import ValidationError

from posgen import __version__, signals
from posgen.errors import (
    PosgenError,
    RunError,
    UsageError,
    UsageProblems,
    debugging,
    error_exit,
    human_bytes,
    not_utf8,
    os_error_problem,
    shown,
)
from posgen.generator import block_rows_for, grow
from posgen.signals import Interrupted
from posgen.spec import BenchmarkSpec, TaskSpec, is_probe_split, resolve_benchmark
from posgen.store import writer
from posgen.store.formats import FORMATS, Progress
from posgen.store.safety import (
    OutputExistsError,
    WriteFailed,
    check_target,
    existing_ancestor,
    file_in_the_way,
    is_dataset_folder,
    recover,
)
from posgen.store.writer import check_part_target
from posgen.tasks import TASKS, get_op, import_task_modules, op_names
from posgen.train import FILES, MODEL, TRAIN_HINT, is_run

MAX_ERROR_CHARS = 1000
"""Longest ``error:`` line printed: a value given by the user is never echoed whole."""
EXPECTED = (Interrupted, KeyboardInterrupt, PosgenError, ValidationError, ImportError,
            click.ClickException, click.Abort)  # fmt: skip
"""Errors that are the command's answer: never a traceback, even with ``--debug``."""
COMMANDS = {
    "generate": "posgen.cli.dataset:generate",
    "merge": "posgen.cli.dataset:merge",
    "spec": "posgen.cli.dataset:spec_command",
    "card": "posgen.cli.dataset:card_command",
    "publish": "posgen.cli.dataset:publish_command",
    "validate": "posgen.cli.dataset:validate_command",
    "score": "posgen.cli.score:score_command",
    "baseline": "posgen.cli.score:baseline_command",
    "train": "posgen.cli.train:train_command",
    "results": "posgen.cli.results:results_command",
    "sweep": "posgen.cli.sweep:sweep_command",
}
"""Each command's name and where it lives (``module:attribute``)."""


class PosgenGroup(click.Group):
    """A click group whose every way to end is an exit status and ``error:`` lines
    (:func:`posgen.errors.error_exit`); ``--debug`` adds the traceback of an unexpected one."""

    debug = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attribute)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """As click resolves it, with "Did you mean" drawn from every command, loaded or not."""
        if args[0] not in COMMANDS and not args[0].startswith("-") and not ctx.resilient_parsing:
            raise click.exceptions.NoSuchCommand(args[0], possibilities=list(COMMANDS), ctx=ctx)
        return super().resolve_command(ctx, args)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        PosgenGroup.debug = False
        try:
            signals.check()  # a signal that arrived while the commands were imported
            signals.point("cli")
            import_task_modules()  # $POSGEN_TASKS: a module that fails is one line, exit 2
            result = super().main(*args, standalone_mode=False, **kwargs)
            signals.check()  # a signal Python swallowed (in __del__, say) still ends the run
        except SystemExit:
            raise
        except click.exceptions.NoArgsIsHelpError as bare:  # `posgen` alone: its help, exit 2
            signals.hold()
            bare.show()
            sys.exit(bare.exit_code)
        except BaseException as error:
            signals.hold()  # a second signal must not interrupt the report of the first
            if not isinstance(error, EXPECTED) and debugging(PosgenGroup.debug):
                click.echo("".join(traceback.format_exception(error)).rstrip(), err=True)
            lines, code = error_exit(error, PosgenGroup.debug)
            for line in lines:
                click.echo(f"error: {shown(line, MAX_ERROR_CHARS)}", err=True)
            sys.exit(code)
        signals.hold()
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=PosgenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="posgen")
@click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, param, value: setattr(PosgenGroup, "debug", bool(value)),
    help="Show the traceback of an unexpected error (also: POSGEN_DEBUG=1).",
)
def main() -> None:
    """POSGEN: fixed-difficulty synthetic tasks for position-embedding generalization.

    \b
    Examples:
      posgen generate --spec task_specs/posgen-v1.toml --out out/posgen-v1
      posgen spec --spec task_specs/paper.toml
      posgen publish task_specs/posgen-v1.toml --out out/hub/posgen-v1
      posgen card out/posgen-v1
      posgen train --data out/posgen-v1 --config cot --pe resonance --out runs/cot-res
      posgen sweep grids/results.toml --out runs/results
    """


# --- the flags ------------------------------------------------------------------------
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def path_problem(value: str) -> str | None:
    """Why ``value`` cannot name a file (not UTF-8, a name too long), or ``None``."""
    raw = os.fsencode(value)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"is {not_utf8(raw, error)}"
    path, limit = Path(value), 255
    for folder in (path.parent, *path.parent.parents):
        try:
            limit = os.pathconf(folder, "PC_NAME_MAX")
            break
        except (OSError, ValueError):
            continue
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            return f"has a name of {len(os.fsencode(part))} bytes; the file system allows {limit}"
    return None


class PathArg(click.Path):
    """``click.Path`` that also refuses non-UTF-8 paths and over-long names; only ``-`` itself
    means standard output (``./-`` is the file ``-``, kept absolute so it stays one)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str | os.PathLike) and str(value) != "-":
            problem = path_problem(os.fspath(value))
            if problem is not None:
                self.fail(f"'{shown(os.fspath(value), 60)}' {problem}", param, ctx)
            if self.exists and not os.path.lexists(value):  # click says "does not exist"
                try:
                    os.lstat(value)
                except PermissionError:
                    self.fail(f"'{shown(os.fspath(value), 60)}': permission denied", param, ctx)
                except OSError:
                    pass
        path = super().convert(value, param, ctx)
        if str(value) != "-" and os.fspath(path) == "-":  # Path("./-") reads as "-"
            return Path(os.path.abspath(value))
        return path


class FiniteFloat(click.FloatRange):
    """``click.FloatRange`` that refuses ``nan`` and ``inf`` (which no range check catches).

    >>> FiniteFloat(min=0).convert("nan", None, None)
    Traceback (most recent call last):
    ...
    click.exceptions.BadParameter: 'nan' is not a finite number.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


class TaskChoice(click.Choice):
    """``--task``: the tasks registered when the command line is parsed (plugins too)."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(TASKS)

    @choices.setter
    def choices(self, value: object) -> None:
        pass


SPEC_FLAGS = ("modulus", "near", "far", "op", "op_key", "train_length", "test_length",
              "train_size", "val_size", "test_size", "seeding", "seed")  # fmt: skip
SHORT_FLAGS = {"modulus": ("-m",), "near": ("-k",), "far": ("-j",)}


def spec_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--spec``, ``--task`` and a flag per spec field (it overrides the file)."""
    options = [
        click.option(
            "--spec",
            "spec_file",
            type=PathArg(dir_okay=False, path_type=Path),
            help="Spec file (.toml, .yaml, .json): a task spec or a benchmark of configs.",
        ),
        click.option(
            "--task",
            "tasks",
            multiple=True,
            type=TaskChoice(),
            help="Task to include, repeatable (one config each). Default: all in the spec.",
        ),
    ]
    for name in SPEC_FLAGS:
        field = TaskSpec.model_fields[name]
        default = field.default[0] if name == "test_length" else field.default
        about = f"{field.description} [{default}]"
        kind: Any = int
        if name == "op":
            names = ", ".join(op_names())
            kind, about = str, f"{field.description.rstrip('.')}: {names}. [{default}]"
        elif name == "seeding":
            kind = click.Choice(get_args(field.annotation))
        flag = f"--{name.replace('_', '-')}"
        multiple = name == "test_length"
        options.append(
            click.option(*SHORT_FLAGS.get(name, ()), flag, type=kind, multiple=multiple, help=about)
        )
    for option in reversed(options):
        function = option(function)
    return function


def data_option(help: str = "Dataset folder written by `posgen generate`.") -> Decorator:
    return click.option(
        "--data", required=True, type=PathArg(file_okay=False, path_type=Path), help=help
    )


def out_option(help: str, *, folder: bool, required: bool = True) -> Decorator:
    kind = PathArg(file_okay=not folder, dir_okay=folder, path_type=Path)
    return click.option("--out", required=required, type=kind, help=help)


def json_option(help: str, *, stdout: bool = False) -> Decorator:
    kind = PathArg(dir_okay=False, allow_dash=stdout, path_type=Path)
    return click.option("--json", "json_out", type=kind, help=help)


def plot_option(help: str) -> Decorator:
    return click.option(
        "--plot", "plot_out", type=PathArg(dir_okay=False, path_type=Path), help=help
    )


def force_option(
    help: str = "Run even when the estimate (rows x length x bytes) exceeds the free disk or 24 h.",
) -> Decorator:
    return click.option("--force", is_flag=True, help=help)


def quiet_option(help: str = "Print nothing on success.") -> Decorator:
    return click.option("-q", "--quiet", is_flag=True, help=help)


def storage_option(help: str) -> Decorator:
    formats = click.Choice(list(FORMATS))
    return click.option(
        "--format", "storage", type=formats, default="parquet", show_default=True, help=help
    )


def benchmark_from_options(
    spec_file: Path | None = None, tasks: tuple[str, ...] = (), **fields: Any
) -> BenchmarkSpec:
    """The benchmark of ``--spec`` and ``--task``, the spec flags given overriding it."""
    overrides = {
        name: list(value) if name == "test_length" else value
        for name, value in fields.items()
        if name in SPEC_FLAGS and value not in (None, ())
    }
    return resolve_benchmark(spec_file, tasks, overrides)


# --- what a dataset costs ---------------------------------------------------------------
PLANNING_RATE = 5_000_000
"""Tokens per second assumed for the estimate (the slowest rate seen on 2 shared cores)."""
MAX_HOURS = 24
"""Runs estimated to take longer are refused without ``--force``."""
SLOWEST_RATE = 1_000
"""Tokens per second below any op's: a spec that passes :data:`MAX_HOURS` at it is not timed."""
TIMED_POSITIONS = 16
ROW_BYTES = 12
"""A row's id (8 B) and list offset (4 B): what an Arrow file of short rows mostly holds."""
SPLIT_BYTES = 1 << 16
"""A split's files' schema, footer and sidecars (a few kB), rounded up."""


@dataclass(frozen=True)
class Estimate:
    """What a benchmark costs: tokens (per config), raw bytes, and where most of them go."""

    config_tokens: dict[str, int]
    raw_bytes: int
    splits: int
    largest: str

    @property
    def tokens(self) -> int:
        return sum(self.config_tokens.values())


def estimate_benchmark(bench: BenchmarkSpec) -> Estimate:
    """Tokens and raw bytes of ``bench``: per split rows x (length x bytes per token + 12 B) +
    64 KiB, a token 1 B for m <= 256, else 2, plus a position (4 B) and answer in a probe."""
    tokens = dict.fromkeys(bench.configs, 0)
    sizes: list[tuple[int, str]] = []
    for config, spec in bench.configs.items():
        for split in (*spec.split_names, *spec.probe_names):
            rows, length = spec.split_size(split), spec.split_length(split)
            per_token = spec.token_bytes + (4 + spec.token_bytes if is_probe_split(split) else 0)
            tokens[config] += rows * length
            size = rows * (length * per_token + ROW_BYTES) + SPLIT_BYTES
            what = f"{rows:,} rows x ({length:,} tokens x {per_token} B + {ROW_BYTES} B)"
            sizes.append((size, f"{config}/{split}: {what}"))
    largest = max(sizes, key=lambda item: item[0])[1]
    return Estimate(tokens, sum(size for size, _ in sizes), len(sizes), largest)


def free_bytes(path: Path) -> int:
    """Bytes available to this user on the file system that will hold ``path``."""
    base = existing_ancestor(path)
    return shutil.disk_usage(base if base.is_dir() else base.parent).free


def refusals(bench: BenchmarkSpec, out: Path) -> list[str]:
    """Why ``bench`` should not be generated into ``out``, one line each (empty: it may)."""
    estimate = estimate_benchmark(bench)
    formula = f"sum over {estimate.splits} splits of rows x (length x bytes + id) + files; "
    formula += f"largest {estimate.largest}"
    lines = []
    free = free_bytes(out)
    if estimate.raw_bytes > free:
        lines.append(
            f"{out} would need about {human_bytes(estimate.raw_bytes)} "
            f"({estimate.raw_bytes:,} bytes: {formula}) but only {human_bytes(free)} are free "
            f"on {existing_ancestor(out)}; pass --force to try anyway"
        )
    seconds, timed = generation_seconds(bench, estimate)
    if seconds / 3600 > MAX_HOURS:
        lines.append(
            f"generating {estimate.tokens:,} tokens would take about {seconds / 3600:.1f} h at "
            f"{PLANNING_RATE / 1e6:.0f} M tokens/s{timed} (limit {MAX_HOURS:.1f} h; {formula}); "
            "pass --force to run it anyway"
        )
    return lines


def generation_seconds(bench: BenchmarkSpec, estimate: Estimate) -> tuple[float, str]:
    """Seconds ``bench`` takes at :data:`PLANNING_RATE`, and what was timed instead: a slow op
    (``far_perm``) that could pass :data:`MAX_HOURS` at :data:`SLOWEST_RATE`, after a warm-up."""
    seconds, timed = 0.0, ""
    for config, spec in bench.configs.items():
        tokens = estimate.config_tokens[config]
        rate = PLANNING_RATE
        long = tokens > SLOWEST_RATE * MAX_HOURS * 3600
        if long and get_op(spec.op).slow(spec.modulus, spec.window):
            rows = min(1024, block_rows_for(spec, spec.train_length))
            windows = np.random.default_rng(0).integers(0, spec.modulus, (2, rows, spec.window))
            grow(spec, windows[0], spec.window + TIMED_POSITIONS)
            started = time.perf_counter()
            grow(spec, windows[1], spec.window + TIMED_POSITIONS)
            rate = min(rate, rows * TIMED_POSITIONS / max(time.perf_counter() - started, 1e-9))
            timed += f", {config}'s {spec.op} timed at {rate:,.0f} tokens/s"
        seconds += tokens / rate
    return seconds, timed


# --- the checks before a write, and what a failed one left ----------------------------------
def _streamed(path: Path) -> bool:
    """``-`` or a pipe, a device: nothing is replaced there."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return str(path) == "-"
    return str(path) == "-" or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def output_problems(
    outputs: Mapping[str, Path | None],
    inputs: Mapping[str, Iterable[Path]],
    *,
    datasets: Iterable[str] = (),
) -> list[str]:
    """Why these outputs (flag: path, None when not given) may not be written, given the
    inputs read (what: paths), one line each. An output may not be an input, sit inside a
    folder read or a dataset, share its file with another output, or lie on (inside) a run
    folder's own files; the flags in ``datasets`` may replace a dataset, never sit in one."""
    lines = []
    files = {flag: Path(p) for flag, p in outputs.items() if p is not None and not _streamed(p)}
    reals = {flag: Path(os.path.realpath(path)) for flag, path in files.items()}
    read = {os.path.realpath(p): (what, p) for what, paths in inputs.items() for p in paths}
    folders = {real: item for real, item in read.items() if os.path.isdir(real)}
    replaced = set(datasets)
    first: dict[Path, str] = {}
    for flag, real in reals.items():
        if real in first:
            other = first[real]
            lines.append(
                f"{other} {shown(files[other])} and {flag} {shown(files[flag])} name the same "
                "file; give each output its own name"
            )
        first.setdefault(real, flag)
    lines += [
        f"{flag} {shown(files[flag])} is inside {other} {shown(files[other])}, another output; "
        "give it a place of its own"
        for flag, real in reals.items()
        for other, outer in reals.items()
        if outer in real.parents
    ]
    for flag, real in reals.items():
        path = files[flag]
        if flag in replaced:  # what it reads may not be in what it replaces
            lines += [
                f"{what} {shown(source)} is inside {flag} {shown(path)}, which this command "
                "writes anew; move it out first"
                for source_real, (what, source) in read.items()
                if Path(source_real) == real or real in Path(source_real).parents
            ]
        above = real.parents if flag in replaced else (real, *real.parents)
        dataset = next((d for d in above if is_dataset_folder(d)), None)
        folder = next((str(d) for d in real.parents if str(d) in folders), None)
        if str(real) in read and flag not in replaced:
            what, source = read[str(real)]
            lines.append(
                f"{flag} {shown(path)} is {what} {shown(source)}, which this command reads; "
                "choose another output"
            )
        elif dataset is not None:
            lines.append(
                f"{flag} {shown(path)} is inside the dataset folder {shown(dataset)}; write "
                "outside it (a dataset holds only what its manifest lists)"
            )
        elif folder is not None:
            what, source = folders[folder]
            lines.append(
                f"{flag} {shown(path)} is inside {what} {shown(source)}, which this command "
                "reads; write outside it"
            )
        elif run := next((d for d in real.parents if _own(d, real) and is_run(d)), None):
            own = run / real.relative_to(run).parts[0]
            lines.append(
                f"{flag} {shown(path)} is {'' if own == real else 'inside '}{shown(own)}, a run "
                "folder's own (posgen train wrote it); choose another output"
            )
    return lines


def _own(run: Path, path: Path) -> bool:
    """Whether ``path`` is (or is inside) one of the files a run folder ``run`` holds."""
    return path.relative_to(run).parts[0] in (*FILES, MODEL)


def refuse_outputs(
    outputs: Mapping[str, Path | None],
    inputs: Mapping[str, Iterable[Path]] | None = None,
    *,
    datasets: Iterable[str] = (),
) -> None:
    """:class:`UsageProblems` (exit 2) with every line of :func:`output_problems`, if any;
    then each output's folder must take a new file."""
    if problems := output_problems(outputs, inputs or {}, datasets=datasets):
        raise UsageProblems(problems)
    for flag, path in outputs.items():
        if path is not None and not _streamed(Path(path)):
            refuse_unwritable(Path(path), f"{flag}: ")


def refuse_unwritable(out: Path, flag: str = "") -> None:
    """Refuse a target where no folder can be created (a file made in the nearest folder above
    it tells): exit 2 when the path cannot be used, 1 when the file system failed."""
    if (problem := file_in_the_way(out)) is not None:
        raise UsageProblems([flag + problem])
    base = existing_ancestor(Path(out).parent)
    try:
        with tempfile.TemporaryFile(dir=base, prefix=".posgen-probe-"):
            pass
    except OSError as error:
        reason = str(error.strerror or error)
        line = f"{flag}cannot create {out}: {base} is not writable "
        line += f"({reason[:1].lower()}{reason[1:]}); nothing was written"
        bad_path = os_error_problem(error)[1] == 2
        raise (UsageProblems([line]) if bad_path else RunError(line)) from None
    real = Path(os.path.realpath(out))  # what the write replaces (a link is followed)
    try:
        held, folder = os.lstat(real), os.stat(real.parent)
    except OSError:
        return
    replaced = stat.S_ISREG(held.st_mode) or stat.S_ISDIR(held.st_mode)  # a pipe is written to
    if (
        replaced
        and folder.st_mode & stat.S_ISVTX
        and os.geteuid() not in (held.st_uid, folder.st_uid)
    ):
        raise UsageProblems([  # the kernel refuses its replacement: after the work, as exit 1
            f"{flag}cannot replace {out}: it belongs to another user, in {real.parent}, a shared "
            "folder (sticky bit); choose another name; nothing was written"
        ])  # fmt: skip


def check_dataset_target(
    bench: BenchmarkSpec,
    out: Path,
    *,
    overwrite: bool = False,
    force: bool = False,
    part: tuple[int, int] | None = None,
    problems: list[str] | None = None,
    spec_file: Path | None = None,
) -> None:
    """Every check before a dataset is written into ``out`` (with the command's ``problems``)."""
    problems = list(problems or [])
    read = {"the spec file": [spec_file]} if spec_file is not None else {}
    inside = output_problems({"--out": out}, read, datasets=("--out",))
    try:
        if not inside:  # what sits at a target inside a dataset does not matter
            check_target(out, overwrite) if part is None else check_part_target(out, bench)
    except OutputExistsError as error:
        problems.append(str(error))
    problems += inside
    if overwrite and not problems and part is None:  # a user's notes in the old dataset
        line = writer.foreign_files_line(out, f"--out {out}", "--overwrite")
        problems += [line] if line else []
    if problems:
        raise UsageProblems(problems)
    refuse_unwritable(out)
    if refused := ([] if force else refusals(bench, out)):
        raise UsageProblems(refused)
    if part is None:
        for action in recover(out):
            click.echo(f"note: {action}", err=True)


def check_run_target(out: Path) -> None:
    """Refuse a run folder ``out`` that exists, sits inside a dataset or cannot be created."""
    if os.path.lexists(out):
        raise UsageProblems([f"--out {out} exists; choose a new run folder"])
    refuse_outputs({"--out": out})


def refuse_in_the_way(path: Path, out: Path, keeps: str) -> None:
    """Refuse a file or a link at ``path``, where ``--out``'s command keeps ``keeps``."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        kind = "a link" if path.is_symlink() else "a file"
        raise UsageProblems([f"--out {out}: {path} is {kind}, where {keeps}; move it away"])


def require_extra() -> None:
    """:class:`UsageProblems` unless torch and transformers can be imported (:class:`RunError`
    when installed but one fails to load, as under ``ulimit -v``: no install hint then)."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ModuleNotFoundError:
        raise UsageProblems([TRAIN_HINT]) from None
    except ImportError as error:
        reason = shown(error, 300)
        raise RunError(f"the train extra is installed but could not be loaded: {reason}") from None


def os_failure(error: OSError, doing: str) -> str:
    """Which path failed and why (``doing`` failed, unless :class:`WriteFailed` says it).

    >>> os_failure(OSError(28, "No space left on device", "out/x"), "merging into out")
    'merging into out failed: out/x: no space left on device'
    """
    if isinstance(error, WriteFailed):
        return str(error)
    return f"{doing} failed: {os_error_problem(error)[0]}"


@contextmanager
def reported(left: Callable[[bool], str], describe: Callable[[OSError], str]) -> Iterator[None]:
    """Run the write: a signal gets ``left(completed)`` said after it, an ``OSError`` becomes
    one :class:`RunError` line; a usage error (the target appeared meanwhile) passes as it is."""
    try:
        yield
    except Interrupted as stop:
        if stop.left is None:
            stop.left = left(stop.completed)
        raise
    except UsageError:
        raise
    except OSError as error:
        raise RunError(f"{describe(error)}; {left(False)}") from None


def interrupted(signum: int, left: str) -> Interrupted:
    """The :class:`Interrupted` to raise for signal ``signum``, saying what was left."""
    stop = Interrupted(signum)
    stop.left = left
    return stop


@dataclass(frozen=True)
class DatasetRun:
    """A dataset written into ``out`` (or part ``(I, N)`` of one), and what a failure left."""

    out: Path
    bench: BenchmarkSpec
    overwrite: bool = False
    part: tuple[int, int] | None = None

    def left(self, completed: bool = False) -> str:
        """What is at ``out`` after a failed or stopped run (a build folder never is)."""
        if completed:
            return f"{self.out} was already complete"
        if self.part is not None:
            return f"part {self.part[0]}/{self.part[1]} was not finished; rerun it to write it"
        if self.overwrite and self.out.exists():
            return f"no partial dataset was left; the previous dataset at {self.out} is unchanged"
        return f"no partial dataset was left; {self.out} was not created"

    def failure(self, error: OSError) -> str:
        """Which path failed, why, and how much space the run needed."""
        message = os_failure(error, f"writing {self.out}")
        needed = human_bytes(estimate_benchmark(self.bench).raw_bytes)
        try:
            free = f", {human_bytes(free_bytes(self.out))} free now"
        except OSError:
            free = ""
        return f"{message} (the dataset needs about {needed} uncompressed{free})"

    def write(
        self, write: Callable[[Progress], Any], label: str, total: int, quiet: bool = False
    ) -> tuple[Any, float]:
        """``write(progress)``'s value and seconds, under a progress bar on a terminal."""
        started = time.perf_counter()
        bar: Any = None
        if not quiet and sys.stderr.isatty():
            bar = click.progressbar(length=total, label=label, file=sys.stderr, show_eta=True)

        def progress(tokens: int) -> None:
            if bar is not None:
                bar.update(tokens)
            signals.point("progress")

        with reported(self.left, self.failure), bar if bar is not None else nullcontext():
            value = write(progress)
        return value, time.perf_counter() - started
