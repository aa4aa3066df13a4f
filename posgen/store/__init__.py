"""The disk side of posgen: every file of a dataset folder is named, written, read and checked
here, and nowhere else.

- :mod:`~posgen.store.manifest`: file names, the shard plan and the typed ``posgen.json``;
- :mod:`~posgen.store.formats`: Parquet and Arrow IPC behind one interface;
- :mod:`~posgen.store.dataset`: :class:`Dataset`, the one handle every reader opens;
- :mod:`~posgen.store.writer`: :func:`write_dataset`, the one writer (whole, part, merge);
- :mod:`~posgen.store.safety`: the atomic file, the atomic folder and the lock.
"""

from posgen.store.dataset import Dataset, check_dataset
from posgen.store.formats import FORMATS, Format, FormatUnsupported
from posgen.store.manifest import DamagedDataset, Manifest, NotADataset, read_manifest
from posgen.store.safety import OutputExistsError, WriteFailed, write_atomically
from posgen.store.writer import write_dataset

__all__ = [
    "FORMATS",
    "DamagedDataset",
    "Dataset",
    "Format",
    "FormatUnsupported",
    "Manifest",
    "NotADataset",
    "OutputExistsError",
    "WriteFailed",
    "check_dataset",
    "read_manifest",
    "write_atomically",
    "write_dataset",
]
