"""SIGTERM and SIGINT during training: the first one is noted and the loop stops after the
current step with a final checkpoint (then Interrupted is raised; the command line exits
128 + the signal's number); a second one acts at once, as it would without us."""
import contextlib
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """Training stopped by a signal after saving; BaseException, like KeyboardInterrupt, so
    that `except Exception` does not swallow it."""

    def __init__(self, signum, step, checkpoint):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


class StopRequest:
    """.signum: the first signal received (None until one arrives)."""

    def __init__(self):
        self.signum = None


@contextlib.contextmanager
def requests(enabled=True):
    """Yields a StopRequest that SIGTERM/SIGINT set while the block runs; the previous
    handlers come back afterwards. Only the main thread can install handlers: elsewhere (or
    with enabled=False) the request is never set."""
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def note(signum, frame):
        request.signum = signum
        for s in SIGNALS:                  # a second signal is not deferred
            signal.signal(s, previous[s])
    for s in SIGNALS:
        signal.signal(s, note)
    try:
        yield request
    finally:
        for s in SIGNALS:
            signal.signal(s, previous[s])
