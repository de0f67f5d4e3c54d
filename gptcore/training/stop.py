"""SIGTERM and SIGINT during training. Inside `with stop.requests():` (gptcore train wraps
its trainer in it) the first signal is only noted: the training loop sees requested(),
finishes the current step, writes a checkpoint and raises Interrupted (the command line then
exits 128 + the signal's number); a second signal acts at once, as it would without us.
Outside the block signals keep their usual effect: a library does not take them over."""
import contextlib
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received = []          # the signals noted inside the current requests() block


class Interrupted(BaseException):
    """Training stopped by a signal after saving; BaseException, like KeyboardInterrupt, so
    that `except Exception` does not swallow it."""

    def __init__(self, signum, step, checkpoint):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


def requested():
    """The first signal noted inside requests() (None when there was none)."""
    return _received[0] if _received else None


@contextlib.contextmanager
def requests():
    """SIGTERM/SIGINT are noted (see requested()) while the block runs; the previous handlers
    come back afterwards. Only the main thread can install handlers: elsewhere nothing
    changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def note(signum, frame):
        _received.append(signum)
        for s in SIGNALS:                  # a second signal is not deferred
            signal.signal(s, previous[s])
    _received.clear()
    for s in SIGNALS:
        signal.signal(s, note)
    try:
        yield
    finally:
        for s in SIGNALS:
            signal.signal(s, previous[s])
        _received.clear()
