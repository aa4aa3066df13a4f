"""The card's YAML front matter: what the Hub and ``datasets`` read.

``configs`` maps each config to its data files per split (the first config is the
default), so ``load_dataset(DIR, "<config>")`` needs no loading script; ``dataset_info``
(from :mod:`posgen.card.dataset_info`) declares features and split sizes; huggingface_hub's
``DatasetCardData`` orders and writes the header as the Hub does.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import DatasetCardData

from posgen.store.formats import manifest_format
from posgen.store.manifest import Manifest

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
_SIZE_STEPS = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
]


def size_category(rows: int) -> str:
    """The Hub's size category of a dataset with ``rows`` examples.

    >>> size_category(999), size_category(36_000), size_category(10**13)
    ('n<1K', '10K<n<100K', 'n>1T')
    """
    for bound, name in _SIZE_STEPS:
        if rows < bound:
            return name
    return "n>1T"


def total_rows(manifest: Manifest) -> int:
    """Rows over every split of every config."""
    return sum(info.rows for entry in manifest.configs.values() for info in entry.splits.values())


def configs_block(manifest: Manifest) -> list[dict[str, Any]]:
    """``configs``: the data files of each split, the first config marked default; each
    config's probe splits form the config ``<config>-probe``."""
    fmt = manifest_format(manifest)
    configs = []
    for index, (name, source, splits) in enumerate(manifest.hf_configs()):
        config: dict[str, Any] = {
            "config_name": name,
            "data_files": [
                {"split": split, "path": fmt.split_glob(source, split)} for split in splits
            ],
        }
        if index == 0:
            config["default"] = True
        configs.append(config)
    return configs


def front_matter(manifest: Manifest, info: list[dict[str, Any]] | None = None) -> DatasetCardData:
    """The whole YAML header; ``dataset_info`` only when read from the data (``info``)."""
    return DatasetCardData(
        pretty_name=f"POSGEN ({manifest.benchmark.name})",
        license=LICENSE,
        task_categories=list(TASK_CATEGORIES),
        size_categories=[size_category(total_rows(manifest))],
        tags=list(TAGS),
        configs=configs_block(manifest),
        dataset_info=info,
    )


def render_front_matter(header: DatasetCardData) -> str:
    """The header between ``---`` lines, as ``huggingface_hub`` writes a card's metadata."""
    return "---\n" + header.to_yaml() + "\n---"
