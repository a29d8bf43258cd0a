// Copyright (c) mmbinary contributors. All rights reserved.
// Optional per-phase timing of the CPU packed conv (off by default: one
// relaxed atomic load per phase when off). Read and switched through
// torch.ops.mmbinary.mbb_phase_times (mmbinary/ops/profiling.py).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace mmbinary {

enum MBBPhase : int {
  kPhaseQuantizePack = 0,  // float input -> activation words
  kPhasePrepass = 1,       // level / window / weight sums, weight lanes
  kPhaseAccumulate = 2,    // AND + popcount (with the fused epilogue)
  kPhaseCalls = 3,         // op calls timed
  kPhaseCount = 4
};

inline std::atomic<bool>& mbb_phase_timing_enabled() {
  static std::atomic<bool> enabled{false};
  return enabled;
}

// Nanoseconds per phase (kPhaseCalls counts calls).
inline std::atomic<int64_t>* mbb_phase_totals() {
  static std::atomic<int64_t> totals[kPhaseCount];
  return totals;
}

// Adds the time from construction to destruction to a phase, when on.
class MBBPhaseTimer {
 public:
  explicit MBBPhaseTimer(MBBPhase phase)
      : phase_(phase),
        on_(mbb_phase_timing_enabled().load(std::memory_order_relaxed)) {
    if (on_) start_ = std::chrono::steady_clock::now();
  }
  ~MBBPhaseTimer() { stop(); }
  // Adds the time so far (once).
  void stop() {
    if (!on_) return;
    on_ = false;
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now() - start_)
                        .count();
    mbb_phase_totals()[phase_].fetch_add(ns, std::memory_order_relaxed);
  }
  // Starts again after stop() (another span of the same phase).
  void restart() {
    on_ = mbb_phase_timing_enabled().load(std::memory_order_relaxed);
    if (on_) start_ = std::chrono::steady_clock::now();
  }
  MBBPhaseTimer(const MBBPhaseTimer&) = delete;
  MBBPhaseTimer& operator=(const MBBPhaseTimer&) = delete;

 private:
  MBBPhase phase_;
  bool on_;
  std::chrono::steady_clock::time_point start_;
};

inline void mbb_count_call() {
  if (mbb_phase_timing_enabled().load(std::memory_order_relaxed))
    mbb_phase_totals()[kPhaseCalls].fetch_add(1, std::memory_order_relaxed);
}

}  // namespace mmbinary
