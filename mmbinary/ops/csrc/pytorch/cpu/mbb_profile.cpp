// Copyright (c) mmbinary contributors. All rights reserved.
// Measuring helpers for the benchmarks: per-phase times of the CPU packed
// conv and the clock the core really runs at.
#include <ATen/ops/tensor.h>
#include <torch/library.h>

#include <chrono>
#include <cstdint>
#include <vector>

#include "../../common/mbb_phase_timer.h"

namespace mmbinary {

namespace {

// Seconds per phase so far (quantize_pack, prepass, accumulate) and the
// number of calls timed; switches timing on or off, optionally resets.
at::Tensor mbb_phase_times(bool enable, bool reset) {
  std::atomic<int64_t>* totals = mbb_phase_totals();
  std::vector<double> values(kPhaseCount);
  for (int i = 0; i < kPhaseCount; ++i) {
    const int64_t value =
        reset ? totals[i].exchange(0) : totals[i].load();
    values[i] = i == kPhaseCalls ? static_cast<double>(value)
                                 : static_cast<double>(value) * 1e-9;
  }
  mbb_phase_timing_enabled().store(enable);
  return at::tensor(values, at::kDouble);
}

// The core clock in GHz: a chain of dependent integer additions runs one
// per cycle on every x86-64 core (and every other core we know), so
// additions per second is cycles per second. Best of `repeats` runs.
double mbb_measure_core_ghz(int64_t repeats) {
  double best = 0.0;
  for (int64_t r = 0; r < (repeats < 1 ? 1 : repeats); ++r) {
    constexpr int64_t kIterations = 20000000;  // 8 additions each
    uint64_t x = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < kIterations; ++i) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
      asm volatile(
          "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
          "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
          : "+r"(x));
#else
      x = x * 3 + 1;  // not a measured clock off x86-64
#endif
    }
    const double seconds = std::chrono::duration<double>(
                               std::chrono::steady_clock::now() - start)
                               .count();
    const double ghz = 8.0 * kIterations / seconds * 1e-9;
    if (ghz > best && x != 0) best = ghz;
  }
  return best;
}

}  // namespace

}  // namespace mmbinary

TORCH_LIBRARY_FRAGMENT(mmbinary, m) {
  m.def("mbb_phase_times(bool enable, bool reset) -> Tensor",
        &mmbinary::mbb_phase_times);
  m.def("mbb_measure_core_ghz(int repeats=3) -> float",
        &mmbinary::mbb_measure_core_ghz);
}
