"""Stopping on SIGTERM and SIGINT within seconds, whatever the process is doing.

Inside :func:`stop_on_signals`, the two signals are recorded instead of killing the process. The
training loop looks at :attr:`Stop.signum` after every compiled call and stops cleanly at once
(a checkpoint first). When it cannot look in time (during start-up, a compilation, a long
epoch), a watchdog thread, woken through the signal wakeup fd even while the main thread is
inside XLA, ends the process after ``grace_s`` seconds with one ``interrupted:`` line and the
exit status 128 + N. That loses no saved work: every write of a run is atomic or repaired on
resume, so ending the process at any moment is as safe as a kill.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Stop:
    """What the signals asked for, and what to say if the process must end before the loop
    can stop cleanly."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.signum: int | None = None
        # Said when the watchdog ends the process: where the work stands.
        self.where = "during start-up, before any training; nothing was lost"
        self._handled = threading.Event()

    def extend_grace(self, seconds: float) -> None:
        """Gives the loop at least ``seconds`` after a signal before the watchdog ends the
        process (e.g. to stop worker processes first)."""
        self.grace_s = max(self.grace_s, seconds)

    def handled(self) -> None:
        """The loop stopped cleanly: the watchdog need not end the process."""
        self._handled.set()

    def _watch(self, wakeup: socket.socket) -> None:
        while True:
            data = wakeup.recv(1)
            if not data:  # the context ended
                return
            if data[0] not in HANDLED:
                continue
            if self.signum is None:
                self.signum = data[0]
            if not self._handled.wait(self.grace_s):
                sys.stderr.write(f"interrupted: stopped by signal {self.signum} {self.where}\n")
                sys.stderr.flush()
                os._exit(128 + self.signum)


_active: list[Stop] = []


@contextlib.contextmanager
def stop_on_signals(grace_s: float = 10.0) -> Iterator[Stop | None]:
    """Records SIGTERM/SIGINT in the yielded :class:`Stop` while the block runs (see the module
    docstring); nested uses share the outer one. Outside the main thread, where Python cannot
    install handlers, yields None and changes nothing."""
    if _active:
        yield _active[-1]
        return
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    stop = Stop(grace_s)
    receive, send = socket.socketpair()
    send.setblocking(False)
    previous = {s: signal.getsignal(s) for s in HANDLED}
    old_fd = signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
    for s in HANDLED:
        signal.signal(s, lambda signum, _frame: setattr(stop, "signum", stop.signum or signum))
    watchdog = threading.Thread(target=stop._watch, args=(receive,), daemon=True,
                                name="stop-on-signals")
    watchdog.start()
    _active.append(stop)
    try:
        yield stop
    finally:
        _active.pop()
        stop.handled()
        signal.set_wakeup_fd(old_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
        send.close()  # ends the watchdog's recv
        watchdog.join(timeout=1.0)
        receive.close()
