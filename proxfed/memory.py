"""Keep freed memory for reuse, so large arrays do not cost fresh zeroed pages every step.

glibc serves allocations above its mmap threshold (at most 32 MiB) by a fresh
``mmap`` and returns them to the system on ``free``. A batched FEMNIST step
allocates several arrays of that size (the gradients of R runs of 100
clients: R x 100 x 48,670 doubles), so every step the kernel faults in and
zeroes new pages; on a shared virtual machine that system time was larger
than the arithmetic (``docs/performance.rst``). :func:`keep_freed_memory`
tells glibc to serve every allocation from its heap and to trim it only
when more than 2 GiB are free at its top: freed arrays are reused as they
are. The cost is that the process keeps about its peak memory (more, if the
heap fragments) until it exits or the setting is undone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
#: The setting in effect, as :func:`keep_freed_memory` last applied it (what run.json records).
settings = {"keep_freed_memory": False}


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc only (not musl)
    except (OSError, AttributeError):
        return None
    gnu_get_libc_version.restype = ctypes.c_char_p
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def keep_freed_memory(enable: bool = True) -> bool:
    """Serve every allocation from the heap and keep freed memory (glibc), or restore the defaults.

    ``enable=True`` sets ``M_MMAP_MAX = 0`` (no ``mmap`` per allocation) and a
    trim threshold of 2 GiB - 1 (freed memory stays with the process up to
    that much); ``enable=False`` sets glibc's static defaults back (65,536
    and 128 KiB), but the mmap threshold stays where glibc's dynamic rule had
    moved it and that rule stays off. Affects allocations made afterwards,
    in the whole process. ``proxfed`` commands turn it on for the command
    (and off after it) unless given ``--release-memory``.

    Returns
    -------
    bool
        Whether the setting was applied: False where the C library is not
        glibc (macOS, musl), which then keeps its own behaviour.
    """
    libc = _glibc()
    if libc is None:
        return False
    mmap_max, trim = (0, 2**31 - 1) if enable else (_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD)
    ok = bool(libc.mallopt(_M_MMAP_MAX, mmap_max)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim))
    if ok:
        settings["keep_freed_memory"] = bool(enable)
    return ok
