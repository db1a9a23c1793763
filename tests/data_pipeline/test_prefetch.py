"""prefetch(): order, error propagation, and the producer thread stopping early."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from shardrec.data_pipeline.prefetch import prefetch


def _prefetch_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "shardrec-prefetch"}


def _wait_dead(thread: threading.Thread, seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not thread.is_alive()


@pytest.mark.parametrize("size", [0, 1, 3, 64])
def test_yields_items_in_order(size):
    assert list(prefetch(iter(range(200)), size)) == list(range(200))
    assert list(prefetch([], size)) == []


def test_runs_ahead_of_the_consumer():
    produced = []

    def source():
        for i in range(10):
            produced.append(i)
            yield i

    it = prefetch(source(), 3)
    assert next(it) == 0
    deadline = time.monotonic() + 2
    while len(produced) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    # one taken + 3 queued (+ possibly one blocked in put), but bounded by the queue
    assert 4 <= len(produced) <= 5
    assert list(it) == list(range(1, 10))


def test_inline_when_size_zero():
    before = _prefetch_threads()
    it = prefetch(iter(range(3)), 0)
    assert next(it) == 0
    assert _prefetch_threads() == before
    assert list(it) == [1, 2]


class Boom(Exception):
    pass


@pytest.mark.parametrize("size", [0, 1, 4])
def test_producer_exception_reaches_consumer(size):
    error = Boom("broken shard")

    def source():
        yield 1
        yield 2
        raise error

    got = []
    with pytest.raises(Boom) as err:
        for item in prefetch(source(), size):
            got.append(item)
    assert err.value is error
    assert got == [1, 2]  # items before the failure are delivered first


def test_producer_thread_ends_after_exception():
    gate = threading.Event()

    def source():
        yield 1
        gate.wait(5)  # keep the thread alive until the test has found it
        raise Boom("x")

    before = _prefetch_threads()
    it = prefetch(source(), 2)
    assert next(it) == 1
    (thread,) = _prefetch_threads() - before
    gate.set()
    with pytest.raises(Boom):
        next(it)
    assert _wait_dead(thread)


def test_closing_early_stops_the_thread():
    pulled = []

    def endless():
        for i in itertools.count():
            pulled.append(i)
            yield i

    before = _prefetch_threads()
    it = prefetch(endless(), 2)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    (thread,) = _prefetch_threads() - before
    assert thread.daemon
    start = time.monotonic()
    it.close()
    assert _wait_dead(thread)
    assert time.monotonic() - start < 2
    n = len(pulled)
    time.sleep(0.2)
    assert len(pulled) == n  # the source is no longer consumed


def test_dropping_the_generator_stops_the_thread():
    before = _prefetch_threads()
    it = prefetch(itertools.count(), 1)
    next(it)
    (thread,) = _prefetch_threads() - before
    del it  # garbage-collected generator runs its finally
    assert _wait_dead(thread)
