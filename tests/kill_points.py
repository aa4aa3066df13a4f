"""``python tests/kill_points.py POINT OUT TOTAL_BYTES generate --out OUT ...``: the real CLI,
which at ``POINT`` (one of ``POINTS``) prints its name and waits for a signal (``half the
bytes``: of TOTAL_BYTES; ``worker writing``: each spawned worker, as ``__mp_main__``, holds)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

GUARD = 600  # seconds: only a hung test waits this long (a failure guard, never a timing check)
POINTS = ("start", "build folder", "first shard", "half the bytes", "manifest", "worker writing")
WORKER_ENV = "POSGEN_TEST_HOLD_WORKERS"


def hold(point: str) -> None:
    """Say ``point`` on stdout, then wait for signals until one ends the run."""
    sys.stdout.flush()
    # one write of the line: two workers holding at once never interleave (print may write twice)
    os.write(sys.stdout.fileno(), f"{point}\n".encode())
    signal.alarm(GUARD)
    while True:  # not signal.pause(): a signal arriving just before it would be waited past
        time.sleep(0.05)  # a signal ends the sleep; one that came before it, the next bytecode


def install(point: str, out: Path, total: int) -> None:
    """Patch the store so that the run holds at ``point``."""
    import posgen.store.formats as formats
    import posgen.store.writer as writer
    from posgen.store.safety import TMP_TAG, leftovers

    def half_written() -> bool:
        builds = [p for p in leftovers(out) if TMP_TAG in p.name]
        held = sum(f.stat().st_size for b in builds for f in b.rglob("*") if f.is_file())
        return held >= total // 2

    if point in ("start", "build folder"):
        real_folder = writer.atomic_folder

        @contextmanager
        def atomic_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
            if point == "start":
                hold(point)
            with real_folder(target, overwrite) as build:
                hold(point)
                yield build

        writer.atomic_folder = atomic_folder
    elif point == "first shard":
        parquet = type(formats.FORMATS["parquet"])
        real_shard = parquet.write_shard

        def write_shard(self, *args, **kwargs):
            entry = real_shard(self, *args, **kwargs)
            hold(point)
            return entry

        parquet.write_shard = write_shard
    elif point in ("half the bytes", "worker writing"):
        real_writer = formats.open_writer
        reached = half_written if point == "half the bytes" else lambda: True

        def open_writer(where, schema):
            opened = real_writer(where, schema)
            real_write = opened.write_table

            def write_table(table, *args, **kwargs):
                real_write(table, *args, **kwargs)
                if reached():
                    hold(point)

            opened.write_table = write_table
            return opened

        formats.open_writer = open_writer
    elif point == "manifest":
        real_manifest = writer.write_manifest

        def write_manifest(root, manifest):
            real_manifest(root, manifest)
            hold(point)

        writer.write_manifest = write_manifest
    else:
        raise ValueError(f"unknown kill point {point!r}; known: {', '.join(POINTS)}")


def main() -> None:
    point, out, total, *args = sys.argv[1:]
    # a terminal's dispositions, whatever was inherited (a background job ignores SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    if point.startswith("worker "):
        os.environ[WORKER_ENV] = point  # for the spawned workers (see the module's end)
    else:
        install(point, Path(out), int(total))
    from posgen.__main__ import run

    run(args)


if __name__ == "__main__":
    main()
elif __name__ == "__mp_main__" and WORKER_ENV in os.environ:  # a worker of a held run
    install(os.environ[WORKER_ENV], Path(), 0)
