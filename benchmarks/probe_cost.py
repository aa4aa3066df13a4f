"""What the probe splits cost: generate + validate a benchmark with and without them.

Without them means the same code with ``TaskSpec.probe_names`` returning no split (so the
writer, manifest, card and validator skip them). The two alternate ``--repeats`` times in one
process and the best time of each is compared (noise on a shared machine only adds time),
next to the probe rows' share of the tokens, the bound the cost should stay within.

    python benchmarks/probe_cost.py --spec task_specs/posgen-v1.toml --repeats 3

Prints seconds of each phase with and without probes and the ratios, in CPU time of this
process (``--clock cpu``, the default: other processes on a shared machine barely move it)
or wall time (``--clock wall``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from posgen.spec import TaskSpec, resolve_benchmark
from posgen.store import write_dataset
from posgen.validate import validate


def _timed(bench, out: Path, clock) -> tuple[float, float]:
    started = clock()
    write_dataset(bench, out, overwrite=True)
    generated = clock()
    report = validate(out)
    if not report.ok:
        raise SystemExit(report.summary())
    return generated - started, clock() - generated


@click.command()
@click.option("--spec", "spec_file", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--clock", type=click.Choice(["cpu", "wall"]), default="cpu", show_default=True)
def main(spec_file: Path, repeats: int, clock: str) -> None:
    timer = time.process_time if clock == "cpu" else time.perf_counter
    bench = resolve_benchmark(spec_file)
    with_probes = TaskSpec.probe_names
    without = property(lambda self: ())
    best = {True: [float("inf")] * 2, False: [float("inf")] * 2}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for probes in (True, False):
                type.__setattr__(TaskSpec, "probe_names", with_probes if probes else without)
                try:
                    times = _timed(bench, Path(tmp) / "ds", timer)
                finally:
                    type.__setattr__(TaskSpec, "probe_names", with_probes)
                best[probes] = [min(a, b) for a, b in zip(best[probes], times, strict=True)]
    probe_tokens = sum(
        spec.split_size(s) * spec.split_length(s)
        for spec in bench.configs.values()
        for s in spec.probe_names
    )
    total = sum(spec.total_tokens for spec in bench.configs.values()) + probe_tokens
    click.echo(
        f"{bench.name} ({clock} time): probe rows hold {probe_tokens:,} of {total:,} tokens "
        f"({probe_tokens / total:.1%}); bound on the cost ratio "
        f"{total / (total - probe_tokens):.3f}"
    )
    for i, phase in enumerate(("generate", "validate")):
        click.echo(
            f"{phase:<9} without {best[False][i]:.2f} s, with {best[True][i]:.2f} s, "
            f"ratio {best[True][i] / best[False][i]:.3f}"
        )
    both = [sum(best[p]) for p in (False, True)]
    click.echo(
        f"both      without {both[0]:.2f} s, with {both[1]:.2f} s, ratio {both[1] / both[0]:.3f}"
    )


if __name__ == "__main__":
    main()
