# Copyright (c) mmbinary contributors. All rights reserved.
"""The measuring helpers: per-phase times and the measured core clock."""
import platform

import pytest
import torch

from mmbinary.ops import pack_weight_codes, profiling

pytestmark = pytest.mark.ext


def run_conv():
    weight = pack_weight_codes(torch.ones(8, 16, 3, 3, dtype=torch.int32), 1)
    torch.ops.mmbinary.mbb_conv2d(torch.rand(1, 16, 12, 12), weight,
                                  torch.ones(8), torch.zeros(8), 16, 1, 1,
                                  1.0, False, (3, 3), (1, 1), (1, 1), (1, 1),
                                  1)


def test_phase_times_count_only_when_enabled():
    profiling.enable_phase_timing(False)
    profiling.read_phase_times(reset=True)
    run_conv()
    off = profiling.read_phase_times()
    assert off['calls'] == 0 and off['accumulate'] == 0.0
    profiling.enable_phase_timing(True)
    try:
        run_conv()
        run_conv()
        on = profiling.read_phase_times()
    finally:
        profiling.enable_phase_timing(False)
    assert on['calls'] == 2
    assert on['quantize_pack'] > 0 and on['accumulate'] > 0
    assert profiling.read_phase_times()['calls'] == 0  # reset on read


def test_core_clock_is_plausible():
    ghz = profiling.measure_core_ghz(repeats=1)
    assert 0.2 < ghz < 10.0


@pytest.mark.skipif(platform.machine().lower() not in ('x86_64', 'amd64'),
                    reason='the measured mixes are x86-64 instructions')
def test_peak_binary_macs_per_cycle_is_plausible(monkeypatch):
    peak = profiling.measure_peak_bmacs(repeats=1)
    # at least one 64-bit POPCNT every 2 cycles, at most 4 x 512-bit
    # vectors per cycle
    assert 32 <= peak <= 4 * 512
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', 'popcnt')
    scalar = profiling.measure_peak_bmacs(repeats=1)
    assert 16 <= scalar <= 8 * 64  # the scalar mix: 64 bits an instruction
