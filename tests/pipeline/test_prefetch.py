from __future__ import annotations

import threading
import time

import pytest

from pipeline.prefetch import prefetched


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
    """Producer and consumer each take 50 ms a step: in parallel 6 steps take ~0.35 s, not 0.6 s."""
    def slow_source():
        for i in range(6):
            time.sleep(0.05)
            yield i

    t0 = time.perf_counter()
    for _ in prefetched(slow_source(), depth=1):
        time.sleep(0.05)
    assert time.perf_counter() - t0 < 0.5
