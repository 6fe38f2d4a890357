"""What the command-line jobs (``xmlc.train``, ``xmlc.evaluate``, ``xmlc.predict``) share: the
exit statuses, and the one table that maps an error the user can fix to its status.

A user-fixable error ends the job with one line, ``error: <message>``, on stderr and its
status; any other exception is a bug in xmlc and ends in a traceback.

Example:
    >>> exit_status(FileNotFoundError("data.train: file not found: x.txt"))
    <ExitStatus.USAGE: 2>
    >>> exit_status(KeyError("bug")) is None
    True
"""

from __future__ import annotations

import argparse
import math
import sys
from enum import IntEnum

import torch

from xmlc.errors import CheckpointError, CheckpointSaveError, ConfigError, DataFileError, NonFiniteScores

__all__ = ["ExitStatus", "USER_ERRORS", "INPUT_ERRORS", "exit_status", "report_error", "positive_int",
           "probability", "device_name"]


class ExitStatus(IntEnum):
    """Process exit statuses of the xmlc commands (a stop by signal N exits ``128 + N``)."""

    OK = 0          # finished, or stopped at train.max_steps (resumable)
    FAILED = 1      # the run failed on the way (a non-finite loss or scores, a checkpoint or output
                    # that could not be written); the last good checkpoint is kept
    USAGE = 2       # bad arguments, config or input: fix them and run again

    @staticmethod
    def for_signal(signum: int) -> int:
        """The shell convention for a job stopped by signal ``signum``: ``128 + signum`` (130, 143)."""
        return 128 + int(signum)


# Errors a user can fix, in the order they are matched (the first ``isinstance`` wins), each
# with its exit status. Exceptions not listed here are bugs: they keep their traceback.
USER_ERRORS: tuple[tuple[type[BaseException], ExitStatus], ...] = (
    (ConfigError, ExitStatus.USAGE),
    (DataFileError, ExitStatus.USAGE),
    (CheckpointError, ExitStatus.USAGE),              # --resume / --checkpoint: truncated or foreign file
    (CheckpointSaveError, ExitStatus.FAILED),         # mid-run: the previous checkpoint is kept
    (FileNotFoundError, ExitStatus.USAGE),
    (NonFiniteScores, ExitStatus.FAILED),
    (OSError, ExitStatus.FAILED),                     # an output that could not be written (disk full)
)

# ``evaluate`` and ``predict`` also read a checkpoint and check their own arguments; what they
# find wrong there is a ValueError naming the file or the argument.
INPUT_ERRORS = USER_ERRORS + ((ValueError, ExitStatus.USAGE),)


def exit_status(exc: BaseException, table=USER_ERRORS) -> ExitStatus | None:
    """The exit status ``table`` gives ``exc``, or None when ``exc`` is not a user error."""
    for kind, status in table:
        if isinstance(exc, kind):
            return status
    return None


def report_error(exc: BaseException, table=USER_ERRORS) -> ExitStatus:
    """Print ``error: <exc>`` to stderr and return its status; re-raise ``exc`` if ``table`` lacks it."""
    status = exit_status(exc, table)
    if status is None:
        raise exc
    print(f"error: {exc}", file=sys.stderr)
    return status


# Argument types for the commands' options: argparse turns their ArgumentTypeError into a
# usage message naming the option, with exit status 2.


def positive_int(text: str) -> int:
    """An integer >= 1 (``--batch-size``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1] (``--threshold``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}")
    return value


def device_name(text: str) -> str:
    """A torch device that exists here (``--device cpu | cuda | cuda:1``)."""
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a device such as cpu or cuda, got {text!r}") from None
    if dev.type == "cuda" and (not torch.cuda.is_available()
                               or (dev.index or 0) >= torch.cuda.device_count()):
        raise argparse.ArgumentTypeError(f"{text!r}: no such CUDA device here "
                                         f"({torch.cuda.device_count()} available)")
    return text
