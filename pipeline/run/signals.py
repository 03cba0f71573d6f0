"""How a job stops: SIGINT (Ctrl-C) and SIGTERM raise `JobStopped` in the driver, which stops its
workers, keeps what was committed, settles its own unfinished attempts and exits 128 + the signal's
number (130, 143) with the command to rerun; a second signal cuts the clean-up short."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator


class JobStopped(KeyboardInterrupt):
    """A signal asked the job to stop (SIGTERM, or SIGINT: Ctrl-C). A KeyboardInterrupt, so every
    layer (Ray's waits, the driver's loop, the clean-ups in `finally`) stops as it does for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code_for_signal(signum: int) -> int:
    """The exit code of a job stopped by `signum`: 128 + its number (130 Ctrl-C, 143 SIGTERM), as a
    shell reports a process the signal killed, so schedulers and scripts read it the same way."""
    return 128 + int(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise `JobStopped` in the main thread (a clean stop: workers
    stopped, what was committed kept). A second signal during the clean-up cuts it short the same
    way. Without this, SIGTERM ends a driver with Ray's handlers: `ray.init` makes it `sys.exit(15)`,
    and Ray's core worker then installs a C++ handler that prints a stack dump and kills the process
    (no exit code of ours, no rerun hint); `start_ray` puts this handler back after `ray.init`."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread; there, whoever runs us handles them
        return

    def stop(signum: int, frame: Any) -> None:
        raise JobStopped(signum)

    saved = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def ignore_stop_signals() -> None:
    """From now on SIGINT and SIGTERM are ignored (the job is stopped; its last words are being said)."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
