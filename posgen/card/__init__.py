"""The data card (``README.md``) of a dataset folder.

Rendered from the manifest, the files and the validation report, deterministically (the
official cards in ``data_cards/`` are checked for drift): the YAML front matter (here), the
tasks (:mod:`~posgen.card.tasks`) and the fact tables (:mod:`~posgen.card.facts`).

The front matter is what the Hub and ``datasets`` read. ``configs`` maps each config to its
data files per split (the first config is the default), so ``load_dataset(DIR, "<config>")``
needs no loading script; huggingface_hub's ``DatasetCardData`` writes the header as the Hub
does. ``dataset_info`` (which ``datasets`` enforces at load time) is read from the checked data
files. ``num_bytes`` is the in-memory Arrow size: per row an int64 id and an int32 list
offset, plus the token bytes; 300 rows of 64 uint8 tokens: ``300 * (8 + 4) + 300 * 64``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from huggingface_hub import DatasetCardData

from posgen.card.facts import (
    citation_section,
    files_section,
    load_section,
    regenerate_section,
    score_section,
    seeding_section,
    spec_section,
    splits_section,
    validation_section,
)
from posgen.card.tasks import (
    MEASURES,
    measures_section,
    probe_section,
    results_section,
    tasks_section,
)
from posgen.store.dataset import Dataset, check_files
from posgen.store.formats import manifest_format
from posgen.store.manifest import CARD_NAME, DamagedDataset, Manifest
from posgen.store.safety import write_atomically

if TYPE_CHECKING:
    from posgen.validate.report import Report

__all__ = [
    "CARD_NAME",
    "render_card",
    "write_card",
]


LICENSE = "mit"
TASK_CATEGORIES = ["text-generation"]
TAGS = [
    "synthetic",
    "posgen",
    "length-generalization",
    "position-embeddings",
    "rope",
    "train-short-test-long",
]
SIZE_UNITS = ("1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T")


def size_category(rows: int) -> str:
    """The Hub's size category of a dataset with ``rows`` examples.

    >>> size_category(999), size_category(36_000), size_category(10**13)
    ('n<1K', '10K<n<100K', 'n>1T')
    """
    for power, unit in enumerate(SIZE_UNITS, start=3):
        if rows < 10**power:
            return f"{SIZE_UNITS[power - 4]}<n<{unit}" if power > 3 else f"n<{unit}"
    return "n>1T"


def front_matter(manifest: Manifest, info: list[dict[str, Any]] | None = None) -> str:
    """The whole YAML header between ``---`` lines, as ``huggingface_hub`` writes it;
    ``dataset_info`` only when read from the data (``info``). Each config's data files per
    split, the first config marked default; its probe splits form ``<config>-probe``."""
    fmt = manifest_format(manifest)
    configs = [
        {
            "config_name": name,
            "data_files": [{"split": s, "path": fmt.split_glob(source, s)} for s in splits],
            **({"default": True} if index == 0 else {}),
        }
        for index, (name, source, splits) in enumerate(manifest.hf_configs())
    ]
    rows = sum(s.rows for entry in manifest.configs.values() for s in entry.splits.values())
    header = DatasetCardData(
        pretty_name=f"POSGEN ({manifest.benchmark.name})",
        license=LICENSE,
        task_categories=list(TASK_CATEGORIES),
        size_categories=[size_category(rows)],
        tags=list(TAGS),
        configs=configs,
        dataset_info=info,
    )
    return "---\n" + header.to_yaml() + "\n---"


def arrow_row_bytes(schema: pa.Schema) -> tuple[int, int]:
    """In-memory Arrow bytes ``(per row, per token)`` of a POSGEN schema.

    >>> from posgen.store.formats import row_schema
    >>> arrow_row_bytes(row_schema(17)), arrow_row_bytes(row_schema(1000))
    ((12, 1), (12, 2))
    """
    id_bytes = sum(f.type.bit_width // 8 for f in schema if pa.types.is_integer(f.type))
    tokens = schema.field("tokens").type
    offset_bytes = 8 if pa.types.is_large_list(tokens) else 4
    return id_bytes + offset_bytes, tokens.value_type.bit_width // 8


def extra_list_bytes(fmt: Any, path: Path, schema: pa.Schema) -> int:
    """In-memory bytes of list columns besides ``tokens`` (the probe splits' positions and
    answers): an int32 offset per row and the values, read from the file."""
    names = [f.name for f in schema if f.name != "tokens" and pa.types.is_list(f.type)]
    if not names:
        return 0
    total = 0
    for batch in fmt.batches(path, 1 << 16, tuple(names)):
        for name in names:
            column = batch.column(batch.schema.get_field_index(name))
            width = column.type.value_type.bit_width // 8
            total += 4 * len(column) + width * len(column.flatten())
    return total


def feature_entry(field: pa.Field) -> dict[str, str]:
    """The ``datasets`` YAML form of one column (ints and lists of ints, as POSGEN writes).

    >>> from posgen.store.formats import row_schema
    >>> [feature_entry(f) for f in row_schema(17)]
    [{'name': 'id', 'dtype': 'int64'}, {'name': 'tokens', 'list': 'uint8'}]
    """
    kind = field.type
    if pa.types.is_integer(kind):
        return {"name": field.name, "dtype": str(kind)}
    if pa.types.is_list(kind) and pa.types.is_integer(kind.value_type):
        return {"name": field.name, "list": str(kind.value_type)}
    raise DamagedDataset(
        Path("."), [f"column {field.name!r} has type {kind}, not one posgen writes"]
    )


def dataset_info(root: Path, manifest: Manifest) -> list[dict[str, Any]]:
    """The ``dataset_info`` YAML entries of ``root``, sorted by config, in the form ``datasets``
    writes (without importing it: that would double a small ``posgen generate``); raises
    :class:`DamagedDataset` when a file disagrees with the manifest."""
    root = Path(root)
    problems = check_files(root, manifest, hashes=False)
    if problems:
        raise DamagedDataset(root, [str(p) for p in problems])
    fmt = manifest_format(manifest)
    block = []
    for config, _, split_entries in sorted(manifest.hf_configs()):
        splits = []
        schemas = set()
        download = size = 0
        features: list[dict[str, str]] = []
        for split, info in split_entries.items():
            num_bytes = 0
            for item in info.files:
                facts = fmt.facts(root / item.path)
                if facts.tokens != item.rows * info.length:
                    shown = f"{root / item.path}: {facts.tokens} tokens"
                    raise DamagedDataset(root, [f"{shown}, not {item.rows} rows of {info.length}"])
                schema = facts.schema.remove_metadata()
                schemas.add(schema.to_string())
                features = [feature_entry(field) for field in schema]
                per_row, per_token = arrow_row_bytes(schema)
                num_bytes += facts.rows * per_row + facts.tokens * per_token
                num_bytes += extra_list_bytes(fmt, root / item.path, schema)
                download += item.bytes
            splits.append({"name": split, "num_bytes": num_bytes, "num_examples": info.rows})
            size += num_bytes
        if len(schemas) != 1:
            raise DamagedDataset(root, [f"the splits of {config} do not share one schema"])
        block.append(
            {
                "config_name": config,
                "features": features,
                "splits": splits,
                "download_size": download,
                "dataset_size": size,
            }
        )
    return block


def render_card(
    manifest: Manifest,
    report: Report | None = None,
    baselines: dict[str, dict[str, dict[str, float]]] | None = None,
    root: Path | None = None,
) -> str:
    """The whole card: ``report`` from :func:`posgen.validate.validate` (None: not validated),
    ``baselines`` config -> kind -> ``{"id_accuracy", "ood_accuracy"}``, and with ``root``
    a ``dataset_info`` block read from the data files (:class:`DamagedDataset` if they disagree
    with the manifest)."""
    info = dataset_info(Path(root), manifest) if root is not None else None
    bench = manifest.benchmark
    sections = [
        front_matter(manifest, info),
        f"# POSGEN: {bench.name}",
        (bench.description or "").strip()
        + f"\n\nConfigs: {', '.join(f'`{name}`' for name in manifest.configs)}. "
        f"Generated by posgen {manifest.posgen_version}; "
        "the manifest `posgen.json` records the same facts as this card.",
        MEASURES,
        *filter(None, [measures_section(manifest)]),
        tasks_section(manifest),
        spec_section(manifest),
        splits_section(manifest),
        probe_section(manifest),
        validation_section(report),
        load_section(manifest),
        score_section(manifest, baselines),
        *filter(None, [results_section(manifest)]),
        regenerate_section(manifest),
        seeding_section([entry.spec for entry in manifest.configs.values()]),
        files_section(manifest),
        citation_section(),
    ]
    return "\n\n".join(section.strip() for section in sections) + "\n"


def write_card(
    root: Path,
    report: Report | None = None,
    baselines: dict[str, dict[str, dict[str, float]]] | None = None,
    manifest: Manifest | None = None,
) -> Path:
    """Re-render ``root/README.md`` from the folder's manifest and files (atomic replace)."""
    root = Path(root)
    text = render_card(manifest or Dataset.open(root).manifest, report, baselines, root=root)
    return write_atomically(root / CARD_NAME, text.encode())


def unvalidated_card(root: Path, manifest: Manifest) -> None:
    """The ``finish`` step of a dataset written without validation: a card that says so."""
    write_card(root, manifest=manifest)
