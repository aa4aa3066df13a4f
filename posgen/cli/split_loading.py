"""A dataset folder's split for the commands that read one (``score``, ``baseline``).

Every problem becomes an error that exits cleanly: not a dataset, bad arguments or a path
that cannot be read exit 2 (:class:`~posgen.errors.PosgenError`, ``OSError``); files that
cannot be decoded are damage (:class:`~posgen.store.manifest.DamagedDataset`), exit 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from posgen.errors import PosgenError
from posgen.scoring.reference import ReferenceSplit, load_reference, resolve_config
from posgen.scoring.reliance import ProbeSplit, load_probe
from posgen.store.manifest import DamagedDataset


@contextmanager
def _damage_reported(data: Path) -> Iterator[None]:
    try:
        yield
    except (PosgenError, OSError):
        raise
    except (pa.ArrowException, ValueError) as error:
        raise DamagedDataset(data, [f"{data}: {' '.join(str(error).split())}"]) from None


def load_split(data: Path, config: str | None, split: str) -> ReferenceSplit:
    """Split ``split`` of config ``config`` (the only one when ``None``) of folder ``data``."""
    with _damage_reported(data):
        return load_reference(data, resolve_config(data, config), split)


def load_probe_split(data: Path, config: str | None, split: str) -> ProbeSplit:
    """Probe split ``split`` of config ``config`` (the only one when ``None``) of ``data``."""
    with _damage_reported(data):
        return load_probe(data, resolve_config(data, config), split)
