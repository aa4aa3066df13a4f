"""The disk side of posgen: every file of a dataset folder is named, written, read and checked
here, and nowhere else.

One module per job:

- :mod:`~posgen.store.layout`: every file name and path template, and the shard plan;
- :mod:`~posgen.store.manifest`: the typed manifest ``posgen.json``, its one reader and writer;
- :mod:`~posgen.store.formats`: Parquet and Arrow IPC behind one interface;
- :mod:`~posgen.store.writer`: :func:`write_dataset`, the one writer entry point;
- :mod:`~posgen.store.parts`: ``--part I/N`` runs and ``posgen merge``;
- :mod:`~posgen.store.shards`: shard files, by one process or a pool of workers;
- :mod:`~posgen.store.finish`: a written folder's manifest and sidecars, then the caller's
  ``finish`` step (the store knows nothing of cards: the caller hands the card down);
- :mod:`~posgen.store.check`: the one file-versus-manifest check;
- :mod:`~posgen.store.transaction`: dataset folders that appear only when complete;
- :mod:`~posgen.store.recovery`: clean-up after runs killed outright;
- :mod:`~posgen.store.targets`: which folder a target names, and whether it may be replaced;
- :mod:`~posgen.store.durable`: single files that appear only when complete;
- :mod:`~posgen.store.rename`: renames that never replace by accident (``renameat2``), fsync;
- :mod:`~posgen.store.lock`: which live process owns a hidden folder or file (a lock, not a PID);
- :mod:`~posgen.store.pinned`: readers see one dataset while it is being replaced;
- :mod:`~posgen.store.libc`: the C calls Python lacks (``renameat2``, ``prctl``).

Modules import one way, in this order: writer; parts; check, finish and shards; formats;
manifest; transaction; recovery; targets; durable and rename; lock and layout (``libc`` and
``pinned`` import nothing of the store).
"""

from posgen.store.dataset import Dataset, check_dataset, verify_dataset
from posgen.store.durable import WriteFailed, write_atomically
from posgen.store.formats import FORMATS, Format, FormatUnsupported
from posgen.store.manifest import DamagedDataset, Manifest, NotADataset, read_manifest
from posgen.store.targets import OutputExistsError
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
    "verify_dataset",
    "write_atomically",
    "write_dataset",
]
