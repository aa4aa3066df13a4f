"""``posgen spec``: show the resolved spec, its ids and sizes, without generating."""

from __future__ import annotations

import json
from typing import Any

import click

from posgen.cli.common import benchmark_from_options
from posgen.cli.options import spec_options


@click.command(
    "spec",
    epilog="""\b
Examples:
  posgen spec --spec task_specs/posgen-v1.toml
  posgen spec --task recursive -m 23 --test-length 512
""",
)
@spec_options
def spec_command(**fields: Any) -> None:
    """Print the resolved benchmark spec as JSON, with spec ids, rows and tokens."""
    bench = benchmark_from_options(fields.pop("spec_file"), fields.pop("tasks"), fields)
    body = {
        "name": bench.name,
        "spec_id": bench.spec_id,
        "configs": {
            name: {
                "spec_id": spec.spec_id,
                "spec": spec.canonical(),
                "rows": spec.total_rows,
                "tokens": spec.total_tokens,
                "seed_space": str(spec.seed_space),
            }
            for name, spec in bench.configs.items()
        },
    }
    click.echo(json.dumps(body, indent=2))
