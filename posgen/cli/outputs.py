"""No command writes over a file it reads, writes one file twice, or writes into a dataset.

:func:`output_problems` is asked before any work starts, with the outputs a command was
given (by flag) and the files and folders it reads. Paths are compared as the files they
name (links resolved), so ``--json ./a/../p.parquet`` is the ``--predictions p.parquet``
file. Streams (``-``, ``/dev/stdout``, a FIFO) are never files and never clash.

>>> output_problems({"--out": Path("r.md"), "--json": Path("./r.md")}, {})
['--out r.md and --json r.md name the same file; give each output its own name']
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from posgen.errors import shown
from posgen.store.layout import MANIFEST_NAME


def _real(path: Path) -> str:
    return os.path.realpath(path)


def _streamed(path: Path) -> bool:
    if str(path) == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def dataset_holding(path: Path) -> Path | None:
    """The dataset folder (it holds ``posgen.json``) that ``path`` is in or is, if any."""
    real = Path(_real(path))
    for folder in (real, *real.parents):
        if (folder / MANIFEST_NAME).is_file():
            return folder
    return None


def output_problems(
    outputs: Mapping[str, Path | None], inputs: Mapping[str, Iterable[Path]]
) -> list[str]:
    """Why these outputs may not be written (empty when they may): one line each.

    ``outputs`` maps a flag to the path given (None: not given); ``inputs`` maps what is
    read (a flag, or a description such as ``a run's scores.json``) to the paths read.
    """
    lines = []
    given = {flag: Path(path) for flag, path in outputs.items() if path is not None}
    files = {flag: path for flag, path in given.items() if not _streamed(path)}
    first: dict[str, str] = {}
    for flag, path in files.items():
        real = _real(path)
        if real in first:
            other = first[real]
            lines.append(
                f"{other} {shown(given[other])} and {flag} {shown(path)} name the same file; "
                "give each output its own name"
            )
        first.setdefault(real, flag)
    read = {_real(path): (what, path) for what, paths in inputs.items() for path in paths}
    for flag, path in files.items():
        if _real(path) in read:
            what, source = read[_real(path)]
            lines.append(
                f"{flag} {shown(path)} is {what} {shown(source)}, which this command reads; "
                "choose another output"
            )
            continue
        dataset = dataset_holding(path)
        if dataset is not None:
            lines.append(
                f"{flag} {shown(path)} is inside the dataset folder {shown(dataset)}; write "
                "outside it (a dataset holds only what its manifest lists)"
            )
    return lines
