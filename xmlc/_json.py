"""Strict JSON for every file and line xmlc writes (``metrics.json``, ``evaluate --out``,
``predict`` JSON lines, ``stats --json``).

Policy: a non-finite float (NaN, inf) is written as ``null``, meaning "undefined for this
split", e.g. the macro AUPRC of a frequency bucket none of whose labels has a positive there.
``NaN`` is not JSON, and strict readers (browsers, ``jq``, most non-Python parsers) reject it.
The text is produced with ``allow_nan=False``, so a non-finite value that slips past the
conversion fails loudly instead of writing an unreadable file.

Example:
    >>> dumps({"auprc_macro_tail": float("nan"), "p@1": 0.5})
    '{"auprc_macro_tail": null, "p@1": 0.5}'
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["dumps", "finite_or_null", "loads_with_nan", "write_json"]


def finite_or_null(value):
    """``value`` with every non-finite float inside (dicts, lists, tuples; numpy and 0-d torch
    scalars included) replaced by None and numpy / torch scalars turned into Python numbers."""
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.ndim == 0):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value, *, indent: int | None = None) -> str:
    """``value`` as strict JSON text: non-finite floats become ``null`` (see the module doc)."""
    return json.dumps(finite_or_null(value), indent=indent, allow_nan=False)


def loads_with_nan(text: str):
    """JSON ``text`` (as :func:`dumps` writes it) with every ``null`` inside an object read back
    as NaN: for code that formats or averages the metrics (``"{:.3f}".format(nan)`` is ``nan``)."""
    return json.loads(text, object_hook=lambda obj: {k: math.nan if v is None else v for k, v in obj.items()})


def write_json(path: str | Path, obj) -> Path:
    """Write ``dumps(obj, indent=2)`` to ``path`` whole or not at all (a temp file beside it, then
    a rename): a full disk or a read-only directory leaves no file, not an empty or partial one.

    Raises:
        OSError: one line naming ``path`` and the reason.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(dumps(obj, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise OSError(f"could not write {path} ({exc.strerror or exc})") from None
    return path
