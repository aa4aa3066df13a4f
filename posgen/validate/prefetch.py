"""Read ahead: decode the next Arrow batch in a thread while the checks run on this one.

Parquet decoding (pyarrow) and the checks (numpy) both release the GIL, so on two cores
the run takes about max(read, check) instead of their sum. At most ``depth`` batches wait.

>>> list(prefetch(iter(range(5))))
[0, 1, 2, 3, 4]
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order, produced by a background thread up to ``depth`` ahead.

    An exception raised by ``items`` is raised here, at the point it occurred.
    """
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        waiting.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            waiting.put((_DONE, None))
        except Exception as error:  # handed to the consumer, re-raised there
            waiting.put((_DONE, error))

    worker = threading.Thread(target=produce, name="posgen-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = waiting.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
