// Copyright (c) mmbinary contributors. All rights reserved.
// Run-time CPU feature detection, used to pick a kernel variant.
#pragma once

#include <cstdint>
#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__linux__)
#include <unistd.h>
#endif

namespace mmbinary {

struct CpuFeatures {
  bool popcnt = false;
  bool avx2 = false;
  bool avx512f = false;
  bool avx512_vpopcntdq = false;
  bool avx512bw = false;
  bool avx512_vnni = false;  // vpdpbusd (the integer kernel)
  bool amx_int8 = false;     // AMX tiles with tdpbusd (cpuid; see amx_usable)
};

inline CpuFeatures detect_cpu_features() {
  CpuFeatures features;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  features.popcnt = __builtin_cpu_supports("popcnt");
  features.avx2 = __builtin_cpu_supports("avx2");
  features.avx512f = __builtin_cpu_supports("avx512f");
  features.avx512_vpopcntdq = __builtin_cpu_supports("avx512vpopcntdq");
  features.avx512bw = __builtin_cpu_supports("avx512bw");
  features.avx512_vnni = __builtin_cpu_supports("avx512vnni");
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  // CPUID leaf 7: EDX bit 24 AMX-TILE, bit 25 AMX-INT8.
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
    features.amx_int8 = ((edx >> 24) & 1u) && ((edx >> 25) & 1u);
#endif
  return features;
}

// Whether this process may use the AMX tiles: the CPU has AMX-INT8 and
// Linux granted the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, asked
// once per process; without it the first tile instruction faults).
inline bool amx_usable() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    defined(__linux__)
  static const bool usable = [] {
    if (!detect_cpu_features().amx_int8) return false;
    constexpr long kArchReqXcompPerm = 0x1023;
    constexpr long kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) ==
           0;
  }();
  return usable;
#else
  return false;
#endif
}

// The output size above which the packed kernels write their float output
// with streaming stores, around the caches: a quarter of the last-level
// cache (8 MB when it cannot be read, as on a Zen 4/5 CCD's 32 MB). Below
// it, regular stores leave the output in the cache for the layer that
// reads it next (as its residual), which wins where the cache is large (a
// 480 MB L3: ResNet's 64->256 block end at 128x168 3.1 -> 2.9 ms).
inline int64_t mbb_stream_threshold_bytes() {
  static const int64_t bytes = [] {
    constexpr int64_t kDefault = int64_t{8} << 20;
#if defined(__linux__) && defined(_SC_LEVEL3_CACHE_SIZE)
    const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (l3 > 0 && l3 / 4 > kDefault) return static_cast<int64_t>(l3 / 4);
#endif
    return kDefault;
  }();
  return bytes;
}

// Comma-separated names of the features this CPU has, e.g. "popcnt,avx2".
inline std::string cpu_features_string(const CpuFeatures& f) {
  std::string names;
  auto add = [&names](bool has, const char* name) {
    if (!has) return;
    if (!names.empty()) names += ",";
    names += name;
  };
  add(f.popcnt, "popcnt");
  add(f.avx2, "avx2");
  add(f.avx512f, "avx512f");
  add(f.avx512_vpopcntdq, "avx512vpopcntdq");
  add(f.avx512bw, "avx512bw");
  add(f.avx512_vnni, "avx512vnni");
  add(f.amx_int8, "amx-int8");
  return names;
}

}  // namespace mmbinary
