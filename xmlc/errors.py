"""The errors a user can fix, in one place at the bottom of the package.

Every layer raises these; :mod:`xmlc.cli` maps each to an exit status. Nothing here imports
from xmlc, so any module may import it.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataFileError", "InputError", "CheckpointError", "CheckpointSaveError",
           "NonFiniteScores"]


class ConfigError(ValueError):
    """A config key is unknown or its value has the wrong type, choice or range."""


class DataFileError(ValueError):
    """A data file named in the config is missing or malformed (raised before training starts)."""


class InputError(ValueError):
    """A user's data file is malformed; the message names the file, the line and the problem."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be read: truncated, corrupt, or not an xmlc checkpoint."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (disk full, directory not writable); the previous
    file at that path, if any, is intact."""


class NonFiniteScores(RuntimeError):
    """The model gave NaN or infinite probabilities for some rows (its weights or those rows'
    features are not finite)."""
