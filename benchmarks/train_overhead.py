"""Harness overhead of ``posgen train``: its training steps/s against a plain torch loop.

Both train the same model (same config, same initial weights) on the same batches in
the same order with the same optimiser and schedule; the plain loop is the minimal
hand-written ``forward / backward / step`` over pre-built batches. The harness figure is
the ``train_seconds`` that ``posgen train`` logs (time in training steps, validation
excluded). The two alternate ``--repeats`` times in one process, one torch thread, and the
best time of each is compared (noise on a shared machine only ever adds time).

    make bench-train                      # cpu preset, 150 steps, 3 repeats
    python benchmarks/train_overhead.py --steps 300 --hidden 128

Prints the steps/s of each and the ratio harness / plain (1.00 = no overhead).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from posgen.spec import default_benchmark
from posgen.store import write_dataset
from posgen.train.config import TrainConfig, preset

# torch and the trainer are imported where used: `make bench` collects this file without
# the train extra


def plain_loop(run_data: Any, config: TrainConfig, seed: int, steps: int) -> float:
    """Seconds of a minimal torch loop over the harness's model, batches and optimiser."""
    import torch

    from posgen.train.trainer import build_model, epoch_order, lm_tensors, optimizer_and_schedule

    model = build_model(config, run_data.train, "rope", seed)
    train = lm_tensors(run_data.train)
    order = torch.cat(epoch_order(train["input_ids"].shape[0], config.epochs, seed))
    batches = [
        (train["input_ids"][rows], train["labels"][rows])
        for rows in order[: steps * config.batch_size].split(config.batch_size)
    ]
    optimizer, schedule = optimizer_and_schedule(model, config, steps)
    model.train()
    started = time.perf_counter()
    for input_ids, labels in batches:
        loss = model(input_ids=input_ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return time.perf_counter() - started


def harness(data: Path, run_data: Any, config: TrainConfig, seed: int, out: Path) -> float:
    """Training seconds ``posgen train`` logs for the same steps (validation excluded)."""
    from posgen.train.job import train_runs

    train_runs(data, "recursive", ["rope"], config, seed, [out], "cpu", run_data=run_data)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])["train_seconds"])


@click.command()
@click.option("--steps", default=150, show_default=True, type=click.IntRange(min=10))
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--hidden", type=int, help="Override the cpu preset's width (and d_ff = 4x).")
@click.option("--seed", default=0, show_default=True, type=int)
def main(steps: int, repeats: int, hidden: int | None, seed: int) -> None:
    """Measure posgen train's steps/s against a plain torch loop, in one run."""
    import torch

    from posgen.train.trainer import RunData

    torch.set_num_threads(1)
    base = preset("cpu")
    rows = steps * base.batch_size
    overrides = {"hidden": hidden, "intermediate": 4 * hidden} if hidden else {}
    config = preset("cpu", epochs=1, max_steps=steps, eval_batch_size=500, **overrides)
    with tempfile.TemporaryDirectory(prefix="posgen-bench-train-") as tmp:
        data = Path(tmp) / "data"
        spec = default_benchmark(("recursive",), train_size=rows, val_size=50, test_size=50)
        write_dataset(spec, data)
        run_data = RunData.load(data, "recursive")
        times: dict[str, list[float]] = {"harness": [], "plain": []}
        for repeat in range(repeats):
            times["plain"].append(plain_loop(run_data, config, seed, steps))
            times["harness"].append(
                harness(data, run_data, config, seed, Path(tmp) / f"run{repeat}")
            )
    best = {name: min(values) for name, values in times.items()}
    click.echo(
        f"posgen train harness overhead: {steps} steps, batch {config.batch_size}, "
        f"{config.layers} layers x {config.hidden}, 1 torch thread, best of {repeats}"
    )
    for name in ("plain", "harness"):
        runs = ", ".join(f"{steps / t:.2f}" for t in times[name])
        click.echo(f"  {name:<8} {steps / best[name]:7.2f} steps/s  (runs: {runs})")
    click.echo(f"  harness / plain steps/s: {best['plain'] / best['harness']:.3f}")


if __name__ == "__main__":
    main()
