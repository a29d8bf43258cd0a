# Copyright (c) mmbinary contributors. All rights reserved.
"""Keep freed memory for the next allocation (glibc), for inference loops.

glibc serves every allocation above 32 MiB with a fresh ``mmap`` and gives
it back on free, so a forward pass that allocates the same large
activations again page-faults (and zero-fills) all of them again: at
detection sizes that costs float32 and packed models alike, and more than
the packed convolutions themselves (one 100 MB activation: about 90 ms of
page faults, against 6 ms once its pages are kept). Allocators such as
jemalloc or tcmalloc keep freed memory; :func:`keep_freed_memory` asks
glibc to do the same (heap only, no trimming), process-wide. The
benchmarks call it for every model they compare.
"""
import ctypes
import ctypes.util

#: mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Serve large allocations from the heap and keep up to
    ``trim_threshold`` bytes of freed memory there.

    Args:
        trim_threshold (int): free memory at the top of the heap kept
            instead of returned to the OS (default 1 GiB).

    Returns:
        bool: whether glibc took both settings (False off glibc).
    """
    name = ctypes.util.find_library('c')
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(
        mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
