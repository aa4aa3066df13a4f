"""Datasets on disk: a benchmark written into a folder with its card, and a folder loaded back.

The store (:mod:`posgen.store`) writes data and manifest and knows nothing of cards;
:func:`write_dataset` (``posgen.write_dataset``) hands it the card. :func:`load`
(``posgen.load``) checks a folder's files and loads them as ``datasets`` objects.

>>> import tempfile
>>> from pathlib import Path
>>> from posgen.spec import BenchmarkSpec, TaskSpec
>>> bench = BenchmarkSpec(name="doc", configs={"cot": TaskSpec(task="cot", train_size=8,
...                                                              val_size=2, test_size=2)})
>>> out = Path(tempfile.mkdtemp()) / "ds"
>>> _ = write_dataset(bench, out)
>>> sorted(p.name for p in out.iterdir())
['README.md', 'data', 'posgen.json']
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from posgen.card import unvalidated_card
from posgen.spec import BenchmarkSpec
from posgen.store import writer
from posgen.store.check import verify_dataset
from posgen.store.finish import Finish
from posgen.store.formats import folder_format, manifest_format
from posgen.store.manifest import Manifest, read_manifest
from posgen.store.pinned import read_whole

if TYPE_CHECKING:
    import datasets


def write_dataset(
    bench: BenchmarkSpec, out: Path, *, finish: Finish | None = unvalidated_card, **options: Any
) -> Manifest | None:
    """:func:`posgen.store.write_dataset` (same ``options``), finished by ``finish``: by
    default the card of a dataset that was not validated."""
    return writer.write_dataset(bench, out, finish=finish, **options)


def load(path: str | Path, config: str | None = None, verify: bool = True) -> datasets.DatasetDict:
    """Every split of ``config`` (the first config when None) of a posgen folder, offline;
    ``<config>-probe`` holds the config's probe splits.

    Parquet folders load with ``datasets.load_dataset``, Arrow IPC ones with
    ``datasets.load_from_disk``. With ``verify`` (the default) every file of ``config`` (of
    all configs when ``None``) is first checked against ``posgen.json``
    (:func:`posgen.store.check.verify_dataset`: size, sha256, rows, footer) and
    :class:`posgen.store.DamagedDataset` is raised, naming each damaged file. Loading sees
    one dataset even while ``generate --overwrite`` replaces it (the old one or the new one).
    """
    root = Path(path)

    def read() -> datasets.DatasetDict:
        if verify:
            sources = {name: source for name, source, _ in read_manifest(root).hf_configs()}
            checked = sources.get(config, config) if config else None  # cot-probe: cot's files
            manifest = verify_dataset(root, [checked] if checked else None)
            return manifest_format(manifest).load(root, config or next(iter(manifest.configs)))
        return folder_format(root, config).load(root, config)

    return read_whole(root, read)  # a folder replaced meanwhile is loaded again, whole
