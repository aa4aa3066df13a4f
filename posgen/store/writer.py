"""The one writer: a benchmark into a dataset folder, whole or one part of N, Parquet or Arrow.

:func:`write_dataset` is what ``posgen generate``, ``posgen publish`` and the Python API call.
A whole run builds in a hidden sibling and renames it into place when complete
(:mod:`posgen.store.safety`); a part run (:mod:`posgen.store.parts`) writes its shards and
a part record, and the last part writes the manifest. Either way the folder is finished by
:func:`~posgen.store.finish.finish_folder`: shards, sidecars, manifest, then the caller's
``finish`` step (the card; the store knows nothing of cards), once.

Layout (file names in :mod:`posgen.store.layout`)::

    DIR/README.md                                  data card with the `configs` YAML
    DIR/posgen.json                                manifest (spec, versions, sha256s)
    DIR/data/<config>/<split>-NNNNN-of-NNNNN.parquet      (--format parquet)
    DIR/<config>/<split>/data-NNNNN-of-NNNNN.arrow        (--format arrow, + sidecars)

>>> import tempfile
>>> from posgen.spec import TaskSpec
>>> bench = BenchmarkSpec(name="doc", configs={"cot": TaskSpec(task="cot", train_size=8,
...                                                              val_size=2, test_size=2)})
>>> out = Path(tempfile.mkdtemp()) / "ds"
>>> manifest = write_dataset(bench, out, storage="arrow")
>>> manifest.storage_format, [f.path for _, _, f in manifest.files()][0]
('arrow', 'cot/train/data-00000-of-00001.arrow')
>>> (out / "README.md").exists()  # no finish step given: no card
False
"""

from __future__ import annotations

from pathlib import Path

from posgen.generator import DEFAULT_BLOCK_ROWS
from posgen.spec import BenchmarkSpec
from posgen.store.finish import Finish, finish_folder, shards_manifest
from posgen.store.formats import Progress, check_features
from posgen.store.layout import (
    DEFAULT_ROW_GROUP_BYTES,
    DEFAULT_SHARD_BYTES,
    MANIFEST_NAME,
    plan_benchmark,
)
from posgen.store.manifest import Manifest
from posgen.store.parts import write_part
from posgen.store.safety import WriteFailed, atomic_folder
from posgen.store.shards import write_shards


def write_dataset(
    bench: BenchmarkSpec,
    out: Path,
    *,
    storage: str = "parquet",
    part: tuple[int, int] | None = None,
    overwrite: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    num_proc: int = 1,
    progress: Progress | None = None,
    finish: Finish | None = None,
) -> Manifest | None:
    """Generate ``bench`` into ``out``; the manifest (None while other parts are missing).

    ``storage`` is ``"parquet"`` or ``"arrow"``; ``part=(I, N)`` writes part I of N (every
    N-th shard) into ``out``, and the last part to finish writes the manifest and calls
    ``finish``. A whole run's folder appears only when complete; ``finish`` renders its card
    (publish validates there first; None writes no card). An ``OSError`` (disk full, file
    too large) becomes :class:`~posgen.store.safety.WriteFailed` naming the file by its path
    under ``out``.
    """
    check_features(storage, part)
    out = Path(out)
    if part is not None:
        index, count = part
        return write_part(bench, out, index, count, shard_bytes, row_group_bytes, num_proc,
                          progress, finish)  # fmt: skip
    plan = plan_benchmark(bench, shard_bytes, storage)
    with atomic_folder(out, overwrite) as build:
        try:
            entries = write_shards(
                build, plan, dict(bench.configs), num_proc, row_group_bytes, block_rows,
                progress, storage, owner=build,
            )  # fmt: skip
            manifest = shards_manifest(bench, plan, entries, storage)
            return finish_folder(build, manifest, finish)
        except WriteFailed as error:
            name = error.path.relative_to(build) if error.path.is_relative_to(build) else error.path
            raise WriteFailed(out / name, error.reason) from error
        except OSError as error:  # raised outside any one file's write
            raise WriteFailed(out / MANIFEST_NAME, error) from error
