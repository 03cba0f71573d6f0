from __future__ import annotations

import threading

import pytest

from posepipe.pipeline.io.prefetch import prefetched


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_yields_everything_in_order():
    assert list(prefetched(iter(range(50)), depth=2)) == list(range(50))
    assert list(prefetched(iter([]))) == []
    assert list(prefetched(iter(range(5)), depth=0)) == list(range(5))


def test_producer_error_reaches_the_consumer_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise ValueError("truncated stream")

    got = []
    with pytest.raises(ValueError, match="truncated stream"):
        for item in prefetched(source()):
            got.append(item)
    assert got == [1, 2]
    assert "posepipe-prefetch" not in _threads()


def test_stopping_early_stops_the_thread_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            for i in range(1000):
                yield i
        finally:
            closed.set()

    gen = prefetched(source(), depth=1)
    assert next(gen) == 0
    gen.close()
    assert closed.is_set(), "the source's own cleanup must have run before close() returned"
    assert "posepipe-prefetch" not in _threads()


def test_decoding_overlaps_the_consumer():
    """The next item is produced while the consumer still holds the current one: the consumer,
    given item 0, waits for the producer to start item 1, which only a background producer can do.
    (Events, not wall-clock bounds: a loaded CI machine makes timings meaningless.)"""
    started = [threading.Event() for _ in range(3)]

    def source():
        for i in range(3):
            started[i].set()
            yield i

    seen = []
    for item in prefetched(source(), depth=1):
        if item + 1 < len(started):
            assert started[item + 1].wait(timeout=30), f"item {item + 1} was not produced while {item} was in use"
        seen.append(item)
    assert seen == [0, 1, 2]
