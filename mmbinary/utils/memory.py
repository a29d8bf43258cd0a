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

:func:`forward_peak_memory` measures the memory one call (a forward) needs
beyond what the process already holds, and :func:`tensor_bytes` what a
model's parameters and buffers hold, so a benchmark can compare the peak
memory of inference between models.
"""
import ctypes
import ctypes.util
import gc
from typing import Callable, Optional

from torch import nn

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


def _libc() -> Optional[ctypes.CDLL]:
    name = ctypes.util.find_library('c')
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _status_kib(field: str) -> Optional[int]:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``)."""
    try:
        with open('/proc/self/status', encoding='ascii') as status:
            for line in status:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def forward_peak_memory(fn: Callable[[], object]) -> Optional[int]:
    """Bytes of memory ``fn()`` touches beyond what the process holds
    before it: the peak resident set size during the call minus the
    resident set size at its start (Linux).

    Freed memory the allocator keeps (see :func:`keep_freed_memory`) is
    given back to the OS first (``malloc_trim``), so an earlier call's
    activations do not hide this call's; the peak counter is reset through
    ``/proc/self/clear_refs``. The output of ``fn`` is dropped after the
    call (it counts: it was resident at the end).

    Args:
        fn (callable): the call to measure, e.g. one forward.

    Returns:
        int, optional: bytes; None where the kernel does not expose or
        reset the peak (not Linux, or a read-only ``/proc``).
    """
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, 'malloc_trim'):
        libc.malloc_trim(0)
    try:
        with open('/proc/self/clear_refs', 'w', encoding='ascii') as refs:
            refs.write('5')  # reset VmHWM to the current VmRSS
    except OSError:
        return None
    start = _status_kib('VmRSS')
    result = fn()
    peak = _status_kib('VmHWM')
    del result
    if start is None or peak is None:
        return None
    return max(peak - start, 0) * 1024


def tensor_bytes(model: nn.Module) -> int:
    """Bytes held by ``model``'s parameters and buffers (each storage
    counted once)."""
    seen = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())
