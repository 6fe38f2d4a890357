"""Keep large freed blocks in the process heap (glibc), so a training step does not page-fault
its big tensors in again at every step.

glibc serves an allocation above its mmap threshold (dynamic, at most 32 MiB) with a fresh
``mmap`` and returns it to the system on ``free``; the next step's tensor of the same size is
then zero-filled page by page by the kernel. The dense gradient of a text model's input table
is such a tensor: (1,836, 5 x 1,024) float32 on bibtex is 37.6 MB; allocating and filling it
five times took 80 ms with glibc's defaults against 55 ms with this setting, each in a fresh
process (``benchmarks/bench_train.py --cases tricks``).
:func:`reuse_large_blocks` raises the mmap threshold to ``mmap_threshold`` and the trim
threshold to twice that (the ratio glibc itself keeps), which is what jemalloc/tcmalloc users
get by default. Freed memory up to the trim threshold stays mapped to the process and is reused.

It changes the allocator of the whole process, so only entry points call it
(``python -m xmlc.train``, the benchmarks), never library import. On other C libraries it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def reuse_large_blocks(mmap_threshold: int = 256 << 20) -> bool:
    """Serve allocations below ``mmap_threshold`` bytes from the heap and keep freed blocks (up
    to twice that at the top of the heap).

    Returns True if glibc took both settings, False elsewhere (nothing changed).
    """
    return set_thresholds(mmap_threshold, 2 * mmap_threshold)


def set_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    """glibc's ``mallopt(M_MMAP_THRESHOLD)`` and ``mallopt(M_TRIM_THRESHOLD)``; False (nothing
    changed) off glibc."""
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def _glibc_mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version   # glibc only (musl's mallopt does nothing)
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt
