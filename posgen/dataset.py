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
from posgen.store.finish import Finish
from posgen.store.manifest import Manifest

if TYPE_CHECKING:
    pass


def write_dataset(
    bench: BenchmarkSpec, out: Path, *, finish: Finish | None = unvalidated_card, **options: Any
) -> Manifest | None:
    """:func:`posgen.store.write_dataset` (same ``options``), finished by ``finish``: by
    default the card of a dataset that was not validated."""
    return writer.write_dataset(bench, out, finish=finish, **options)
