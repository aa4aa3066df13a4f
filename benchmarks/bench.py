"""``make bench`` (``python -m benchmarks.bench``): how fast posgen is, against the tests'
plain-loop oracle and a memory copy.

For every task and lengths 64, 256, 1024 and 4096 it prints tokens/s for

* **generate**: rows in memory (:func:`posgen.generator.generate_rows`, seed windows included)
  for the paper's task; **gen (disjoint)**: the same with distinct seed windows (m = 17,
  k = 7, j = 1), and **kernel**: the paper's task from ready seed windows;
* **parquet** / **arrow**: spec to a finished folder (``load_dataset`` / ``load_from_disk``),
  in a child process with ``--num-proc`` workers, and that child's **peak RSS**;
* **validate**: :func:`posgen.validate.validate` of the Parquet folder (``posgen validate``:
  every target recomputed from its seed window, and every other check);
* **oracle**: the plain per-token Python loop of the tests' oracle (:func:`tests.oracle.grow_row`,
  as the authors' code generates), and **copy**:
  a numpy copy of the same number of bytes (what memory bandwidth allows);

with the ratios ours/oracle and ours/copy (machines are noisy: compare ratios within one run).
Then how the cost grows with rows and with length (4x each). ``--write`` saves the output to
``BENCHMARKS.md``. ``--parquet-settings`` measures the Parquet codecs behind
:data:`posgen.store.formats.PARQUET_OPTIONS`; ``--big TOKENS`` runs one large generation and reports
its peak memory; ``--ops`` measures every generation function h (:mod:`posgen.tasks`) in memory;
with ``--write`` each appends a section.

Every timing is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.oracle import grow_row

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: benchmark children run ``python -m benchmarks.bench`` from there."""

LENGTHS = (64, 256, 1024, 4096)
DEFAULT_TOKENS = 1 << 26
ORACLE_TOKENS = 200_000
FOLDER_FACTOR = 4
"""Folders are written with this many times the tokens of a cell (amortizes process start)."""


# measuring ----------------------------------------------------------------------------
def best_of(function: Callable[[], Any], repeat: int) -> float:
    """Fastest wall time of ``repeat`` calls, in seconds."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def bench_spec(task: str, length: int, tokens: int, seeding: str = "disjoint") -> Any:
    """``tokens`` tokens of ``task`` at ``length`` (train split; validation and test: 1 row).

    ``paper``: the paper's task (m = 17, k = 3, j = 1), sorted windows cycled (every
    2,380 rows repeat, so files compress unrealistically well). ``disjoint``: m = 17, k = 7,
    j = 1, distinct windows (17^8 of them), files as large as real data.
    """
    from posgen.spec import TaskSpec

    rows = max(1, tokens // length)
    return TaskSpec(
        task=task,
        near=3 if seeding == "paper" else 7,
        train_length=length,
        test_length=length,
        train_size=rows,
        val_size=1,
        test_size=1,
        seeding=seeding,
    )


def plain_loop_rows(
    task: str, windows: list[list[int]], length: int, m: int, near: int, far: int
) -> list[list[int]]:
    """Rows grown one token at a time by the tests' oracle (the authors' way)."""
    return [grow_row(task, window, length, m, near, far) for window in windows]


def oracle_rate(task: str, length: int) -> float:
    """Tokens/s of :func:`plain_loop_rows` on ~ORACLE_TOKENS tokens."""
    rows = max(1, ORACLE_TOKENS // length)
    windows = np.random.default_rng(0).integers(0, 17, size=(rows, 4)).tolist()
    seconds = best_of(lambda: plain_loop_rows(task, windows, length, 17, 3, 1), 1)
    return rows * length / seconds


def copy_rate(nbytes: int, repeat: int) -> float:
    """Bytes/s of a numpy copy of ``nbytes`` (uint8 tokens: tokens/s)."""
    source = np.ones(nbytes, dtype=np.uint8)
    target = np.empty_like(source)
    return nbytes / best_of(lambda: np.copyto(target, source), repeat)


def generate_rate(spec: Any, repeat: int) -> tuple[float, float]:
    """Tokens/s of generate_rows (with seed windows) and of the kernel alone."""
    from posgen.generator import block_rows_for, generate_rows, grow, seed_windows

    rows, length = spec.train_size, spec.train_length
    out = np.empty((rows, length), dtype=np.uint8)
    windows = seed_windows(spec, "train", 0, rows)

    def kernel() -> None:
        step = block_rows_for(spec, length)
        for first in range(0, rows, step):
            last = min(rows, first + step)
            grow(spec, windows[first:last], length, out=out[first:last])

    generate_rows(spec, "train", 0, min(rows, 1000))  # warm caches and tables
    full = best_of(lambda: generate_rows(spec, "train", 0, rows), repeat)
    core = best_of(kernel, repeat)
    return rows * length / full, rows * length / core


def ops_table(
    tokens: int, repeat: int, emit: Callable[[str], None], tasks: tuple[str, ...]
) -> None:
    """Tokens/s in memory of every op (kernel from ready windows, and generate_rows), L = 256."""
    from posgen.tasks import op_names

    emit(
        "Tokens/s of every generation function h (paper shape: m = 17, k = 3, j = 1, L = 256, "
        "paper seeding; kernel from ready seed windows, generate with them), and the ratio "
        "to mod_addition's kernel in the same run:"
    )
    emit("")
    emit("| op | task | generate | kernel | kernel / mod_addition |")
    emit("|---|---|---:|---:|---:|")
    baseline: dict[str, float] = {}
    for op in op_names():
        for task in tasks:
            base = bench_spec(task, 256, tokens, "paper")
            spec = type(base)(**{**base.canonical(), "op": op})
            generate, kernel = generate_rate(spec, repeat)
            baseline.setdefault(task, kernel)
            emit(
                f"| {op} | {task} | {rate(generate)} | {rate(kernel)} "
                f"| {kernel / baseline[task]:.2f} |"
            )


def child_write(storage: str, spec: Any, out: Path, num_proc: int) -> dict[str, Any]:
    """Write ``spec`` to ``out`` in a child process; its seconds and peak RSS (bytes)."""
    import subprocess

    command = [
        sys.executable, "-m", "benchmarks.bench", "--child", storage,
        json.dumps(spec.canonical()), str(out), str(num_proc),
    ]  # fmt: skip
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({done.returncode}): {command}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss() -> int:
    """Largest resident set (bytes) of this process and of its finished children.

    This process: VmHWM (reset at exec, unlike ru_maxrss, which Linux carries over from the
    process that forked it). Children: their ru_maxrss (they are exec'd from this small one).
    """
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                own = int(line.split()[1]) * 1024
    except OSError:
        pass
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)


def _child_main(storage: str, spec_json: str, out: str, num_proc: int) -> None:
    from posgen.spec import BenchmarkSpec, TaskSpec
    from posgen.store import write_dataset

    spec = TaskSpec.model_validate_json(spec_json)
    bench = BenchmarkSpec(name="bench", configs={spec.task: spec})
    shard_bytes = max(1 << 20, spec.total_tokens // (2 * num_proc))  # >= 2 files per process
    started = time.perf_counter()
    write_dataset(bench, Path(out), storage=storage, shard_bytes=shard_bytes, num_proc=num_proc)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "tokens": spec.total_tokens, "peak_rss": peak_rss()}))


def validate_rate(folder: Path) -> float:
    """Tokens/s of :func:`posgen.validate.validate` on a dataset folder (`posgen validate`:
    every check, probe splits included), its tokens over its wall time."""
    from posgen.validate import validate

    started = time.perf_counter()
    report = validate(folder)
    if not report.ok:
        raise RuntimeError(f"{folder}: validate failed: {report.failed_kinds}")
    return report.tokens_checked / (time.perf_counter() - started)


# reporting ----------------------------------------------------------------------------
def rate(value: float) -> str:
    """Tokens/s in M (or G)."""
    if value >= 1e9:
        return f"{value / 1e9:.2f} G"
    return f"{value / 1e6:.0f} M" if value >= 1e7 else f"{value / 1e6:.2f} M"


def header(tokens: int, num_proc: int, repeat: int) -> list[str]:
    import pyarrow

    import posgen

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [
        "# posgen benchmarks",
        "",
        f"`make bench` (posgen {posgen.__version__}, numpy {np.__version__}, "
        f"pyarrow {pyarrow.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at start). {tokens:,} tokens per cell, "
        f"best of {repeat}. generate, kernel: the paper's task (m = 17, k = 3, j = 1, paper "
        "seeding); gen (disjoint), folders and validate: m = 17, k = 7, j = 1 with distinct "
        "(disjoint) seed windows, so files are as large as real data; "
        f"folders ({FOLDER_FACTOR}x the tokens, fsynced, checksummed) written with --num-proc "
        f"{num_proc}; validate: `posgen validate` of the Parquet folder (every check). "
        "Figures are tokens/s; peak RSS is the "
        "largest process of the folder-writing child. Machines are noisy: read the ratios.",
        "",
    ]


def main_table(
    tokens: int,
    num_proc: int,
    repeat: int,
    emit: Callable[[str], None],
    tasks: tuple[str, ...],
    lengths: tuple[int, ...] = LENGTHS,
) -> None:
    emit(
        "| task | L | generate | gen (disjoint) | kernel | parquet | arrow | validate | peak RSS "
        "| oracle | copy | gen/oracle | gen/copy | parquet/oracle | parquet/copy |"
    )
    emit("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    copies = {}
    for task in tasks:
        for length in lengths:
            spec = bench_spec(task, length, tokens, "paper")
            generate, kernel = generate_rate(spec, repeat)
            disjoint, _ = generate_rate(bench_spec(task, length, tokens), repeat)
            big = bench_spec(task, length, tokens * FOLDER_FACTOR)
            with tempfile.TemporaryDirectory(prefix="posgen-bench-") as tmp:
                parquet = child_write("parquet", big, Path(tmp) / "pq", num_proc)
                check = validate_rate(Path(tmp) / "pq")
                arrow = child_write("arrow", big, Path(tmp) / "ipc", num_proc)
            parquet_rate = parquet["tokens"] / parquet["seconds"]
            arrow_rate = arrow["tokens"] / arrow["seconds"]
            peak = max(parquet["peak_rss"], arrow["peak_rss"])
            oracle = oracle_rate(task, length)
            nbytes = spec.train_size * length
            if nbytes not in copies:
                copies[nbytes] = copy_rate(nbytes, repeat)
            copy = copies[nbytes]
            emit(
                f"| {task} | {length} | {rate(generate)} | {rate(disjoint)} | {rate(kernel)} "
                f"| {rate(parquet_rate)} | {rate(arrow_rate)} | {rate(check)} "
                f"| {peak / 2**20:.0f} MiB | {rate(oracle)} | {rate(copy)} "
                f"| {generate / oracle:,.0f}x | {generate / copy:.2f} "
                f"| {parquet_rate / oracle:,.0f}x | {parquet_rate / copy:.3f} |"
            )


def scaling_table(
    tokens: int, repeat: int, emit: Callable[[str], None], tasks: tuple[str, ...]
) -> None:
    """Seconds for 1x, 2x, 4x rows (L = 256) and 1x, 2x, 4x length (fixed rows), disjoint data."""
    from posgen.spec import BenchmarkSpec
    from posgen.store import write_dataset

    emit("| task | grows | 1x | 2x | 4x | 4x / 1x (generate) | 4x / 1x (parquet, 1 process) |")
    emit("|---|---|---|---|---|---|---|")
    base_rows = max(1, tokens // 4 // 256)
    for task in tasks:
        for grows in ("rows", "length"):
            gen_seconds, write_seconds = [], []
            for factor in (1, 2, 4):
                rows = base_rows * (factor if grows == "rows" else 1)
                length = 256 * (factor if grows == "length" else 1)
                spec = bench_spec(task, length, rows * length)
                generate, _ = generate_rate(spec, repeat)
                gen_seconds.append(rows * length / generate)
                bench = BenchmarkSpec(name="scale", configs={task: spec})
                with tempfile.TemporaryDirectory(prefix="posgen-bench-") as tmp:
                    started = time.perf_counter()
                    write_dataset(bench, Path(tmp) / "ds")
                    write_seconds.append(time.perf_counter() - started)
            cells = " | ".join(
                f"{g * 1e3:.1f} ms gen, {w * 1e3:.0f} ms pq"
                for g, w in zip(gen_seconds, write_seconds, strict=True)
            )
            emit(
                f"| {task} | {grows} ({base_rows:,} rows x 256) | {cells} "
                f"| {gen_seconds[2] / gen_seconds[0]:.1f} "
                f"| {write_seconds[2] / write_seconds[0]:.1f} |"
            )


def parquet_settings(tokens: int, repeat: int, emit: Callable[[str], None]) -> None:
    """Write speed and size of Parquet codecs on one table (what PARQUET_OPTIONS is chosen by)."""
    import pyarrow.parquet as pq

    from posgen.generator import generate_rows
    from posgen.spec import TaskSpec
    from posgen.store.formats import row_schema, rows_to_table

    rows = max(1, tokens // 256)
    spec = TaskSpec(task="cot", near=7, train_length=256, test_length=256, train_size=rows)
    table = rows_to_table(0, generate_rows(spec, "train", 0, rows), row_schema(17))
    group = 4 * 2**20 // 256
    base = {"use_dictionary": False, "write_statistics": ["id"]}
    leaf = {"use_dictionary": ["tokens.list.element"]}
    split = {"use_byte_stream_split": ["tokens.list.element"]}
    settings = {
        "plain, no codec": {"compression": "none"},
        "plain, lz4": {"compression": "lz4"},
        "plain, snappy": {"compression": "snappy"},
        "plain, zstd-1": {"compression": "zstd", "compression_level": 1},
        "dictionary, no codec": {"compression": "none", **leaf},
        "dictionary, lz4": {"compression": "lz4", **leaf},
        "dictionary, zstd-1": {"compression": "zstd", "compression_level": 1, **leaf},
        "byte stream split, no codec": {"compression": "none", **split},
        "byte stream split, lz4": {"compression": "lz4", **split},
        "byte stream split, zstd-1 (posgen)": {
            "compression": "zstd",
            "compression_level": 1,
            **split,
        },
        "byte stream split, zstd-1, 64 Mi-token groups": {
            "compression": "zstd",
            "compression_level": 1,
            **split,
            "group": 2**26 // 256,
        },
    }
    emit(f"| Parquet setting ({rows * 256:,} tokens, m = 17) | write | bytes/token | read |")
    emit("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="posgen-bench-") as tmp:
        path = Path(tmp) / "t.parquet"
        for name, options in settings.items():
            options = {**base, **options}
            size = options.pop("group", group)

            def write(options: dict[str, Any] = options, size: int = size) -> None:
                pq.write_table(table, path, row_group_size=size, **options)

            seconds = best_of(write, repeat)
            read = best_of(lambda: pq.read_table(path), repeat)
            emit(
                f"| {name} | {rate(rows * 256 / seconds)} | "
                f"{path.stat().st_size / (rows * 256):.2f} | {rate(rows * 256 / read)} |"
            )


def big_run(tokens: int, num_proc: int, emit: Callable[[str], None]) -> None:
    """Write ``tokens`` tokens (cot, L = 1024, disjoint) to Parquet in a child; time, peak RSS."""
    spec = bench_spec("cot", 1024, tokens)
    with tempfile.TemporaryDirectory(prefix="posgen-bench-big-") as tmp:
        result = child_write("parquet", spec, Path(tmp) / "big", num_proc)
        size = sum(p.stat().st_size for p in (Path(tmp) / "big").rglob("*") if p.is_file())
    emit(
        f"big run: {result['tokens']:,} tokens (cot, L = 1024, m = 17, k = 7, j = 1, disjoint) "
        "to Parquet with --num-proc "
        f"{num_proc} in {result['seconds']:.1f} s ({rate(result['tokens'] / result['seconds'])} "
        f"tokens/s), {size / 1e9:.2f} GB on disk, peak RSS {result['peak_rss'] / 2**20:.0f} MiB "
        "(largest process)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--tokens", type=float, default=DEFAULT_TOKENS, help="tokens per cell")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--write",
        nargs="?",
        const="BENCHMARKS.md",
        help="save to this file (--big and --parquet-settings append a section)",
    )
    parser.add_argument("--parquet-settings", action="store_true", help="only the codec table")
    parser.add_argument("--big", type=float, help="only one run of this many tokens")
    parser.add_argument("--ops", action="store_true", help="only the per-op table")
    parser.add_argument("--task", action="append", help="only these tasks (repeatable)")
    parser.add_argument("--length", type=int, action="append", help="only these lengths")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from posgen.tasks import TASKS

    if args.child:
        storage, spec_json, out, num_proc = args.child
        _child_main(storage, spec_json, out, int(num_proc))
        return 0
    tokens = int(args.tokens)
    lines: list[str] = []

    def emit(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    started = time.perf_counter()
    extra = bool(args.big or args.parquet_settings or args.ops)  # appended sections
    if extra:
        title = (
            "Peak memory of a big run"
            if args.big
            else "Parquet settings"
            if args.parquet_settings
            else "Generation functions"
        )
        emit(f"## {title} (`python -m benchmarks.bench {' '.join(argv or sys.argv[1:])}`)")
        emit("")
    else:
        for line in header(tokens, args.num_proc, args.repeat):
            emit(line)
    if args.big:
        big_run(int(args.big), args.num_proc, emit)
    elif args.parquet_settings:
        parquet_settings(tokens, args.repeat, emit)
    elif args.ops:
        ops_table(tokens, args.repeat, emit, tuple(args.task or TASKS))
    else:
        tasks = tuple(args.task or TASKS)
        main_table(tokens, args.num_proc, args.repeat, emit, tasks, tuple(args.length or LENGTHS))
        emit("")
        emit(
            "How the cost grows (m = 17, k = 7, j = 1, disjoint; generate in memory, and a "
            "Parquet folder written by one process):"
        )
        emit("")
        scaling_table(tokens, args.repeat, emit, tasks)
    emit("")
    emit(f"(whole run: {time.perf_counter() - started:.0f} s)")
    if args.write:
        target = Path(args.write)
        mode = "a" if extra and target.exists() else "w"
        with open(target, mode) as handle:
            handle.write(("\n" if mode == "a" else "") + "\n".join(lines) + "\n")
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
