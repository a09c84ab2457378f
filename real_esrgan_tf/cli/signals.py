"""Ctrl-C and SIGTERM for long-running commands: stop at a safe point, exit 128 + the signal number.

SIGTERM is what a cluster (Kubernetes, Slurm, a preemptible VM) sends before it kills a job; Ctrl-C
sends SIGINT. Both end `train` and `prepare` the same way: the work done so far is kept (a checkpoint
at the current step, the finished shards) and the exit code is the shell's convention for a process
ended by a signal, 130 (SIGINT) or 143 (SIGTERM), so a script `train && export` does not go on with a
run that has not finished. A second signal while stopping ends the process at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """128 + the signal number (130 for SIGINT, 143 for SIGTERM), as a shell reports it."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class StopRequest:
    """Records the first SIGINT/SIGTERM instead of dying, for a loop that polls `requested()`.

    Use as a context manager (the previous handlers come back on exit). The first signal prints one
    line saying what will happen; a second one restores the default action and re-raises it.
    """

    def __init__(self, message: str = "stopping after the current step"):
        self.signum: int | None = None
        self.message = message
        self._previous: dict[int, object] = {}

    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second signal: give up waiting
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        print(f"{signal_name(signum)}: {self.message} (again to quit at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequest:
        for s in STOP_SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class Terminated(KeyboardInterrupt):
    """SIGTERM raised where the code already handles Ctrl-C (a KeyboardInterrupt) by cleaning up."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block SIGTERM raises `Terminated` (a KeyboardInterrupt), so the clean-up that
    Ctrl-C already gets (finally blocks, stopping worker processes) runs for SIGTERM too."""

    def handle(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
