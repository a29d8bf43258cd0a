# Copyright (c) mmbinary contributors. All rights reserved.
"""Measuring helpers for the benchmarks (compiled extension needed).

* :func:`enable_phase_timing` / :func:`read_phase_times`: where the CPU
  packed convolution spends its time, summed over calls and threads' wall
  time (off by default; when off, it costs one relaxed load per phase);
* :func:`measure_core_ghz`: the clock the core really runs at, measured
  with a chain of dependent multiplications (3 cycles each), not the
  nominal MHz the OS reports (Zen 4 runs AVX-512 code at about 3.6 GHz
  where ``/proc/cpuinfo`` says 2.6);
* :func:`measure_peak_bmacs`: the peak binary MACs per cycle of the binary
  kernels' instruction mix (AND + POPCOUNT + ADD on registers) on this
  core, the ceiling a packed layer's binary MACs per cycle is compared to.

Example::

    from mmbinary.ops import profiling
    profiling.enable_phase_timing(True)
    model(x)
    print(profiling.read_phase_times())  # seconds per phase
"""
from typing import Dict

import torch

from .ext_loader import require_ext

#: Phases, in the order of ``torch.ops.mmbinary.mbb_phase_times``. The
#: float epilogue is fused into the accumulation on the CPU, so
#: ``'accumulate'`` includes it.
PHASES = ('quantize_pack', 'prepass', 'accumulate')


_timing_on = False


def _phase_times(enable: bool, reset: bool) -> torch.Tensor:
    require_ext()
    return torch.ops.mmbinary.mbb_phase_times(enable, reset)


def enable_phase_timing(enable: bool = True) -> None:
    """Switch per-phase timing of the CPU packed conv on or off (the totals
    so far are kept)."""
    global _timing_on
    _phase_times(bool(enable), False)
    _timing_on = bool(enable)


def read_phase_times(reset: bool = True) -> Dict[str, float]:
    """Seconds per phase since the last reset, and ``'calls'``.

    Args:
        reset (bool): zero the totals after reading.

    Returns:
        dict: ``quantize_pack``, ``prepass``, ``accumulate`` (seconds) and
        ``calls`` (number of op calls timed). Timing stays on or off.
    """
    values = _phase_times(_timing_on, reset).tolist()
    result = dict(zip(PHASES, values[:len(PHASES)]))
    result['calls'] = int(values[len(PHASES)])
    return result


def measure_core_ghz(repeats: int = 3) -> float:
    """The clock the core runs at, in GHz (best of ``repeats`` runs of about
    50 ms each, on the calling thread)."""
    require_ext()
    return float(torch.ops.mmbinary.mbb_measure_core_ghz(int(repeats)))


def measure_peak_bmacs(repeats: int = 3) -> float:
    """Peak binary MACs per cycle of AND + POPCOUNT + ADD on this core
    (AVX-512 VPOPCNTQ where the CPU has it, else scalar POPCNT), measured
    on registers at the measured core clock; 0.0 where neither runs."""
    require_ext()
    return float(torch.ops.mmbinary.mbb_measure_peak_bmacs(int(repeats)))
