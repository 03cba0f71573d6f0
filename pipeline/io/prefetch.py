"""Run a producer (a decoder) one step ahead of its consumer (the models) in a background thread.

On a GPU the models finish a window of frames in less time than the CPU takes to decode the next
one, so decoding serially leaves the GPU idle for the whole decode. decord and OpenCV release the
GIL while they work, so a thread is enough; memory grows by at most `depth` windows.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def prefetched(items: Iterator[T], depth: int = 1, name: str = "posepipe-prefetch") -> Iterator[T]:
    """Yield what `items` yields, produced up to `depth` items ahead by a background thread.

    An exception raised by `items` is re-raised to the consumer at the point it happened. When the
    consumer stops early (break, exception, close), the thread is stopped and joined before this
    generator returns, so `items`' resources (an open video) can be released right after.
    """
    if depth < 1:
        yield from items
        return
    slots: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            put((_DONE, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # in this thread, the one that used it: a generator's cleanup runs now
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
