"""Card sections that restate the manifest: the spec, the splits and the files.

Every figure here is read from ``posgen.json`` (which the writer filled from the files),
so the card cannot disagree with the data it sits beside.
"""

from __future__ import annotations

from typing import Any

from posgen.card.markdown import table
from posgen.seeding import disjoint_offset, paper_row_offset
from posgen.spec import TaskSpec, is_probe_split, probe_source
from posgen.store.manifest import Manifest


def spec_section(manifest: Manifest) -> str:
    """Every spec field of every config, one column per config."""
    configs = manifest.configs
    specs = [entry.spec.canonical() for entry in configs.values()]
    rows = [["spec_id", *(f"`{entry.spec_id}`" for entry in configs.values())]]
    for field in TaskSpec.model_fields:
        if any(field in spec for spec in specs):  # op_key only for keyed ops
            rows.append([field, *(_spec_value(spec.get(field, "-")) for spec in specs)])
    bench = manifest.benchmark
    return "\n".join(
        [
            "## Spec",
            "",
            f"Benchmark `{bench.name}`, benchmark spec id `{bench.spec_id}`.",
            "",
            table(["field", *configs], rows),
        ]
    )


def _spec_value(value: Any) -> Any:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value


def seed_windows_text(spec: TaskSpec, split: str, rows: int) -> str:
    """Where a split's seed windows come from.

    >>> seed_windows_text(TaskSpec(task="cot"), "test", 1000)
    'disjoint: indices [0, 1,000) of a permutation of Z_17^4 (83,521 windows), seed 0'
    >>> seed_windows_text(TaskSpec(task="cot", seeding="paper"), "test", 1000)
    'paper: sorted combinations [1,000, 2,000) mod C(17, 4) = 2,380'
    """
    if spec.seeding == "paper":
        first = paper_row_offset(spec, split)
        return (
            f"paper: sorted combinations [{first:,}, {first + rows:,}) mod "
            f"C({spec.modulus}, {spec.window}) = {spec.seed_space:,}"
        )
    first = disjoint_offset(spec, split)
    return (
        f"disjoint: indices [{first:,}, {first + rows:,}) of a permutation of "
        f"Z_{spec.modulus}^{spec.window} ({spec.seed_space:,} windows), seed {spec.seed}"
    )


def splits_section(manifest: Manifest) -> str:
    """Rows, length, scored positions and seed windows of every split."""
    rows = []
    for name, config, splits in manifest.hf_configs():
        spec = manifest.configs[config].spec
        for split, info in splits.items():
            w, boundary, length = info.seed_window, info.ood_boundary, info.length
            ood = f"[{boundary}, {length})" if length > boundary else "none"
            source = (
                f"rows of {config}/{probe_source(split)}, far operands replaced"
                if is_probe_split(split)
                else seed_windows_text(spec, split, info.rows)
            )
            rows.append(
                [name, split, info.rows, length, w, f"[{w}, {min(boundary, length)})", ood, source]
            )
    return "\n".join(
        [
            "## Splits",
            "",
            "Rows of a split all have its length. The first w tokens are the seed window; "
            "positions [w, L) are in distribution (L = train length = the OOD boundary) and "
            "positions [L, L') are out of distribution.",
            "",
            table(
                [
                    "config",
                    "split",
                    "rows",
                    "length",
                    "seed window w",
                    "ID positions",
                    "OOD positions",
                    "seed windows",
                ],
                rows,
            ),
        ]
    )


def files_section(manifest: Manifest) -> str:
    """Every data file with its rows, first id, size and sha256."""
    rows = [
        [item.path, item.rows, item.first_id, item.bytes, f"`{item.sha256}`"]
        for _, _, item in manifest.files()
    ]
    return "\n".join(
        [
            "## Files and checksums",
            "",
            "Columns: `id` (int64, the row's index in its split) and `tokens` (list of uint8; "
            "uint16 when m > 256); probe splits add `source_id`, `replaced`, `probed` "
            "(lists of uint32 positions) and `far_rule` (one token per probed position). "
            "The manifest `posgen.json` holds the same facts.",
            "",
            table(["file", "rows", "first id", "bytes", "sha256"], rows),
        ]
    )
