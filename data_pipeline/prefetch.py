"""Run an iterator in a background thread, keeping up to N items ready in a bounded queue.

Arrow decoding and numpy copies release the GIL, so a thread is enough to overlap reading
with the training step; a process pool would have to pickle every batch across.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterable[T], size: int) -> Iterator[T]:
    """Yield the items of `items`, produced ahead by a daemon thread (size 0 = inline).

    An exception in the producer is re-raised in the consumer. If the consumer stops early
    (generator closed or garbage-collected), the producer thread exits at its next put.
    """
    if size <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(_Failure(e))

    thread = threading.Thread(target=produce, name="shardrec-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
