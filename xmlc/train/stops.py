"""How a run ends early: the :class:`RunStopped` exceptions (each with the job's exit status) and
:class:`StopOnSignal`, which turns SIGINT/SIGTERM into a request the loop honours after the step
in flight, so that ``last.pt`` is saved and ``--resume`` continues bit-exactly."""

from __future__ import annotations

import signal

from xmlc.cli import ExitStatus

__all__ = ["RunStopped", "StepLimit", "Interrupted", "NonFiniteLoss", "StopOnSignal"]


class RunStopped(Exception):
    """The run ended before its last epoch; ``status`` is the job's exit status."""

    status: int = ExitStatus.OK


class StepLimit(RunStopped):
    """``train.max_steps`` optimizer steps are done (exit 0; ``--resume`` continues)."""


class Interrupted(RunStopped):
    """SIGINT or SIGTERM arrived (on some process); exit 128 + the signal, ``--resume`` continues."""

    def __init__(self, signum: int | None):
        self.signum = signum or signal.SIGTERM   # None: another process got the signal
        self.status = ExitStatus.for_signal(self.signum)
        super().__init__(f"signal {self.signum}")


class NonFiniteLoss(RunStopped):
    """A NaN/inf loss on some process, caught before that step touched the parameters (exit 1)."""

    status = ExitStatus.FAILED


class StopOnSignal:
    """Context manager: SIGINT/SIGTERM set ``requested`` (the loop saves and exits) instead of killing."""

    def __init__(self):
        self.requested, self.signum, self._old = False, None, {}

    def _handle(self, signum, frame):
        if self.requested:   # a second signal: stop now
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
