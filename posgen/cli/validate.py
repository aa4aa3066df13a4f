"""``posgen validate``: prove on the data that every target depends only on its window."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from posgen.cli.common import UsageProblems, benchmark_from_options
from posgen.cli.options import SPEC_FLAGS, config_option, json_option, spec_options, split_option
from posgen.cli.paths import PathArg
from posgen.errors import problem_lines
from posgen.spec import TaskSpec
from posgen.store.safety import write_atomically
from posgen.validate import AuditThresholds, SourceError, validate


def _given_spec(fields: dict[str, Any], config: str | None) -> TaskSpec | None:
    """The spec named by --spec/--task/field flags, or None when no flag was given."""
    spec_file, tasks = fields.pop("spec_file"), fields.pop("tasks")
    given = any(fields.get(name) not in (None, ()) for name in SPEC_FLAGS)
    if spec_file is None and not tasks and not given:
        return None
    bench = benchmark_from_options(spec_file, tasks, fields)
    if len(bench.configs) == 1:
        return next(iter(bench.configs.values()))
    if config is not None and config in bench.configs:
        return bench.configs[config]
    names = ", ".join(bench.configs)
    raise UsageProblems(
        [f"the spec names {len(bench.configs)} configs ({names}); pick one with --task or --config"]
    )


@click.command(
    "validate",
    epilog="""\b
Examples:
  posgen validate out/posgen-v1
  posgen validate out/posgen-v1 --config cot --split test --json report.json
  posgen validate shard.parquet --task recursive -m 17 -k 3 -j 1 --split test
  posgen validate out/paper --max-shortcut-share 0.01
""",
)
@click.argument("source", type=PathArg(exists=True, path_type=Path))
@config_option("Check only this config.")
@split_option("Check only this split (train, validation, test, test_<L'>).")
@json_option("Write the full report as JSON to this file ('-': stdout).", stdout=True)
@click.option("-v", "--verbose", is_flag=True, help="List every check, not only the failures.")
@click.option(
    "--max-balance-tv",
    type=click.FloatRange(0, 1),
    help="Fail the audit when a position's target TV distance from uniform is larger.",
)
@click.option(
    "--max-shortcut-share",
    type=click.FloatRange(0, 1),
    help="Fail the audit when a shortcut covers a larger share of the ID or OOD targets: "
    "copy-the-period, a k- or w-token context copy, the linear rule, positions with a "
    "shorter effective look-back than the task's rule, or targets whose far operands the "
    "k + 2 tokens before them pin down (question-consistency look-back).",
)
@click.option(
    "--min-operand-sensitivity",
    type=click.FloatRange(0, 1),
    help="Fail the audit when fewer single-operand changes change the target.",
)
@spec_options
def validate_command(
    source: Path,
    config: str | None,
    split: str | None,
    json_out: Path | None,
    verbose: bool,
    max_balance_tv: float | None,
    max_shortcut_share: float | None,
    min_operand_sensitivity: float | None,
    **fields: Any,
) -> None:
    """Check a POSGEN dataset: integrity, schema, every target against its window,
    the window rule, split hygiene, and an audit of the targets.

    SOURCE is a dataset folder (with posgen.json), or a folder or .parquet/.arrow file
    without one; then give the spec with --spec or the spec flags. Exit status: 0 when
    every check passes, 1 when any fails, 2 for bad input.
    """
    spec = _given_spec(fields, config)
    try:
        thresholds = AuditThresholds(
            max_balance_tv=max_balance_tv,
            max_shortcut_share=max_shortcut_share,
            min_operand_sensitivity=min_operand_sensitivity,
        )
        report = validate(source, spec, config, split, thresholds=thresholds)
    except ValidationError as error:
        raise UsageProblems(problem_lines(error)) from None
    except SourceError as error:
        raise UsageProblems([str(error)]) from None
    body = json.dumps(report.to_dict(), indent=2)
    if json_out is not None and str(json_out) == "-":
        click.echo(body)
    else:
        if json_out is not None:
            write_atomically(json_out, (body + "\n").encode())  # WriteFailed: exit 1
        click.echo(report.summary(verbose=verbose))
    sys.exit(0 if report.ok else 1)
