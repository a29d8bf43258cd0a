// Copyright (c) mmbinary contributors. All rights reserved.
// Measuring helpers for the benchmarks: per-phase times of the CPU packed
// conv and the clock the core really runs at.
#include <ATen/ops/tensor.h>
#include <torch/library.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
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

// The core clock in GHz: a chain of dependent 64-bit multiplications
// (imul r64, r64: 3 cycles of latency on every x86-64 core since Core 2 and
// Zen 1), so three times the multiplications per second is cycles per
// second. Not additions: Intel cores since Golden Cove fold a chain of
// `add reg, imm` at rename and run it several times faster than the clock.
// Best of `repeats` runs.
double mbb_measure_core_ghz(int64_t repeats) {
  double best = 0.0;
  for (int64_t r = 0; r < (repeats < 1 ? 1 : repeats); ++r) {
    constexpr int64_t kIterations = 8000000;  // 8 multiplications each
    constexpr double kLatency = 3.0;          // cycles per multiplication
    uint64_t x = 1;
    uint64_t one = 1;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < kIterations; ++i) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
      asm volatile(
          "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\t"
          "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0"
          : "+r"(x)
          : "r"(one));
#else
      x = x * 3 + 1;  // not a measured clock off x86-64
#endif
    }
    const double seconds = std::chrono::duration<double>(
                               std::chrono::steady_clock::now() - start)
                               .count();
    const double ghz = 8.0 * kLatency * kIterations / seconds * 1e-9;
    if (ghz > best && x != 0) best = ghz;
  }
  return best;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// One step of the binary kernel's inner loop on 8 independent streams of
// 512-bit vectors held in registers: AND (weight & activation words),
// VPOPCNTQ, ADD to the stream's counters; 8 * 512 binary MACs per
// iteration. Compiled for AVX-512 alone; call only where the CPU has it.
__attribute__((target("avx512f,avx512vpopcntdq"))) void peak_loop_avx512(
    int64_t iterations) {
  for (int64_t i = 0; i < iterations; ++i) {
    asm volatile(
        "vpandq %%zmm16, %%zmm0, %%zmm8\n\tvpopcntq %%zmm8, %%zmm8\n\t"
        "vpaddq %%zmm8, %%zmm24, %%zmm24\n\t"
        "vpandq %%zmm16, %%zmm1, %%zmm9\n\tvpopcntq %%zmm9, %%zmm9\n\t"
        "vpaddq %%zmm9, %%zmm25, %%zmm25\n\t"
        "vpandq %%zmm16, %%zmm2, %%zmm10\n\tvpopcntq %%zmm10, %%zmm10\n\t"
        "vpaddq %%zmm10, %%zmm26, %%zmm26\n\t"
        "vpandq %%zmm16, %%zmm3, %%zmm11\n\tvpopcntq %%zmm11, %%zmm11\n\t"
        "vpaddq %%zmm11, %%zmm27, %%zmm27\n\t"
        "vpandq %%zmm17, %%zmm4, %%zmm12\n\tvpopcntq %%zmm12, %%zmm12\n\t"
        "vpaddq %%zmm12, %%zmm28, %%zmm28\n\t"
        "vpandq %%zmm17, %%zmm5, %%zmm13\n\tvpopcntq %%zmm13, %%zmm13\n\t"
        "vpaddq %%zmm13, %%zmm29, %%zmm29\n\t"
        "vpandq %%zmm17, %%zmm6, %%zmm14\n\tvpopcntq %%zmm14, %%zmm14\n\t"
        "vpaddq %%zmm14, %%zmm30, %%zmm30\n\t"
        "vpandq %%zmm17, %%zmm7, %%zmm15\n\tvpopcntq %%zmm15, %%zmm15\n\t"
        "vpaddq %%zmm15, %%zmm31, %%zmm31" ::
            : "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
              "xmm15", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29",
              "xmm30", "xmm31");
  }
}

// The AVX2 kernel's mix on 3 streams of 256-bit vectors: AND, popcount by
// nibble lookup (AND, shift, AND, 2 VPSHUFB, ADD) and a byte-counter ADD;
// 3 * 256 binary MACs per iteration (the kernel's VPSADBW widening every
// few steps is left out).
__attribute__((target("avx2"))) void peak_loop_avx2(int64_t iterations) {
  for (int64_t i = 0; i < iterations; ++i) {
    asm volatile(
        "vpand %%ymm3, %%ymm0, %%ymm6\n\tvpsrlw $4, %%ymm6, %%ymm7\n\t"
        "vpand %%ymm1, %%ymm6, %%ymm6\n\tvpand %%ymm1, %%ymm7, %%ymm7\n\t"
        "vpshufb %%ymm6, %%ymm2, %%ymm6\n\tvpshufb %%ymm7, %%ymm2, %%ymm7\n\t"
        "vpaddb %%ymm6, %%ymm7, %%ymm6\n\tvpaddb %%ymm6, %%ymm12, %%ymm12\n\t"
        "vpand %%ymm4, %%ymm0, %%ymm8\n\tvpsrlw $4, %%ymm8, %%ymm9\n\t"
        "vpand %%ymm1, %%ymm8, %%ymm8\n\tvpand %%ymm1, %%ymm9, %%ymm9\n\t"
        "vpshufb %%ymm8, %%ymm2, %%ymm8\n\tvpshufb %%ymm9, %%ymm2, %%ymm9\n\t"
        "vpaddb %%ymm8, %%ymm9, %%ymm8\n\tvpaddb %%ymm8, %%ymm13, %%ymm13\n\t"
        "vpand %%ymm5, %%ymm0, %%ymm10\n\tvpsrlw $4, %%ymm10, %%ymm11\n\t"
        "vpand %%ymm1, %%ymm10, %%ymm10\n\tvpand %%ymm1, %%ymm11, %%ymm11\n\t"
        "vpshufb %%ymm10, %%ymm2, %%ymm10\n\t"
        "vpshufb %%ymm11, %%ymm2, %%ymm11\n\t"
        "vpaddb %%ymm10, %%ymm11, %%ymm10\n\t"
        "vpaddb %%ymm10, %%ymm14, %%ymm14" ::
            : "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
              "xmm13", "xmm14");
  }
}

// The same mix on 64-bit registers (scalar POPCNT, what the popcnt and
// AVX2 kernels count with): 4 streams, 4 * 64 binary MACs per iteration.
__attribute__((target("popcnt"))) void peak_loop_popcnt(int64_t iterations,
                                                       uint64_t* acc) {
  const uint64_t words[5] = {~uint64_t{0}, 0x5555555555555555ull,
                             0x3333333333333333ull, 0x0f0f0f0f0f0f0f0full,
                             0x00ff00ff00ff00ffull};
  for (int64_t i = 0; i < iterations; ++i) {
    uint64_t t0, t1, t2, t3;
    // t = a_j & w; acc_j += popcount(t): the streams are independent.
    asm volatile(
        "mov %8, %0\n\tand %9, %0\n\tpopcnt %0, %0\n\tadd %0, %4\n\t"
        "mov %8, %1\n\tand %10, %1\n\tpopcnt %1, %1\n\tadd %1, %5\n\t"
        "mov %8, %2\n\tand %11, %2\n\tpopcnt %2, %2\n\tadd %2, %6\n\t"
        "mov %8, %3\n\tand %12, %3\n\tpopcnt %3, %3\n\tadd %3, %7"
        : "=&r"(t0), "=&r"(t1), "=&r"(t2), "=&r"(t3), "+r"(acc[0]),
          "+r"(acc[1]), "+r"(acc[2]), "+r"(acc[3])
        : "r"(words[0]), "r"(words[1]), "r"(words[2]), "r"(words[3]),
          "r"(words[4]));
  }
}
#endif

// Peak binary MACs per cycle of the binary kernels' instruction mix (AND +
// POPCOUNT + ADD, data in registers) on this core, for the kernel the op
// picks: AVX-512 VPOPCNTQ, else AVX2 nibble lookup, else scalar POPCNT
// (MMBINARY_CPU_KERNEL forces one, as it does for the op); 0 where neither can be measured.
// Cycles from the measured core clock (mbb_measure_core_ghz). Best of
// `repeats` runs of about 20 ms each.
double mbb_measure_peak_bmacs(int64_t repeats) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const char* forced = std::getenv("MMBINARY_CPU_KERNEL");
  const std::string kernel = forced == nullptr ? "" : forced;
  const bool avx512 = __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512vpopcntdq") &&
                      (kernel.empty() || kernel == "avx512");
  const bool avx2 = !avx512 && __builtin_cpu_supports("avx2") &&
                    (kernel.empty() || kernel == "avx2");
  if (!avx512 && !avx2 && !__builtin_cpu_supports("popcnt")) return 0.0;
  const double ghz = mbb_measure_core_ghz(repeats);
  if (ghz <= 0.0) return 0.0;
  double best = 0.0;
  uint64_t acc[4] = {1, 2, 3, 4};
  for (int64_t r = 0; r < (repeats < 1 ? 1 : repeats); ++r) {
    constexpr int64_t kIterations = 4000000;
    const auto start = std::chrono::steady_clock::now();
    if (avx512)
      peak_loop_avx512(kIterations);
    else if (avx2)
      peak_loop_avx2(kIterations);
    else
      peak_loop_popcnt(kIterations, acc);
    const double seconds = std::chrono::duration<double>(
                               std::chrono::steady_clock::now() - start)
                               .count();
    const double macs =
        (avx512 ? 8.0 * 512 : avx2 ? 3.0 * 256 : 4.0 * 64) * kIterations;
    const double per_cycle = macs / (seconds * ghz * 1e9);
    if (per_cycle > best) best = per_cycle;
  }
  return acc[0] == 0 ? best + 0.0 : best;
#else
  (void)repeats;
  return 0.0;
#endif
}

}  // namespace

}  // namespace mmbinary

TORCH_LIBRARY_FRAGMENT(mmbinary, m) {
  m.def("mbb_phase_times(bool enable, bool reset) -> Tensor",
        &mmbinary::mbb_phase_times);
  m.def("mbb_measure_core_ghz(int repeats=3) -> float",
        &mmbinary::mbb_measure_core_ghz);
  m.def("mbb_measure_peak_bmacs(int repeats=3) -> float",
        &mmbinary::mbb_measure_peak_bmacs);
}
