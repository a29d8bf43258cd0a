// Copyright (c) mmbinary contributors. All rights reserved.
// Run-time CPU feature detection, used to pick a kernel variant.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <fstream>
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
  bool fma = false;
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
  features.fma = __builtin_cpu_supports("fma");
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

// The last-level cache of the core running this, in bytes, or 0 when it
// cannot be read: Linux's sysfs entry for cpu0's level-3 cache (the slice
// its cores share: 32 MB on a Zen 4/5 CCD), else sysconf's figure.
// sysconf reads CPUID, which a virtual machine may fill with the whole
// socket's total (384 MB on a Zen 5 EPYC whose CCD holds 32 MB).
inline int64_t mbb_shared_l3_bytes() {
#if defined(__linux__)
  for (int index = 0; index < 8; ++index) {
    const std::string dir =
        "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
    std::ifstream level_file(dir + "/level"), size_file(dir + "/size");
    int level = 0;
    std::string size;
    if (!(level_file >> level) || level != 3 || !(size_file >> size))
      continue;
    // "32768K"
    char* end = nullptr;
    const long long value = std::strtoll(size.c_str(), &end, 10);
    if (value <= 0) continue;
    const char unit = end != nullptr ? *end : '\0';
    const int64_t scale = unit == 'K' ? 1 << 10 : unit == 'M' ? 1 << 20 : 1;
    return static_cast<int64_t>(value) * scale;
  }
#if defined(_SC_LEVEL3_CACHE_SIZE)
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l3 > 0) return static_cast<int64_t>(l3);
#endif
#endif
  return 0;
}

// The output size above which the packed kernels write their float output
// with streaming stores, around the caches.
//
// An output also handed on as the next layer's words (`handed_on`) is read
// back as a float only later, as the residual of a block's last conv after
// the convs in between: above 4 MB (twice a Sapphire Rapids core's L2) it
// is streamed. Whole R-50 + FPN W1A1 at 512x672, one thread on the Intel
// Xeon with a 480 MB L3 of 2026-12-07, alternated in one process: 116 ms
// streaming above 120 MB, 102 above 4 MB, 106 above 16 MB (writing it
// through the caches costs a read of each line first and evicts the next
// convs' data).
//
// Any other float output is read next by its consumer (MobileNetV2's
// depthwise conv reading the expand conv's band): streamed above a quarter
// of the last-level cache the core shares (mbb_shared_l3_bytes; 8 MB when
// it cannot be read, as on a Zen 4/5 CCD's 32 MB); below it the consumer
// reads it from the cache (the demo detector: 167 ms at 120 MB, 184 ms at
// 4 MB, in the same run, on that Xeon). On a Zen 5 virtual machine whose
// CPUID (sysconf) gives the socket's 384 MB while its CCD holds 32 MB, the
// threshold taken from sysconf (96 MB) left the demo detector at 0.97-1.04x
// its fastest float twin, from sysfs (8 MB) 1.17-1.29x (three alternated
// pairs, 2026-12-07).
inline int64_t mbb_stream_threshold_bytes(bool handed_on) {
  constexpr int64_t kHandedOn = int64_t{4} << 20;
  if (handed_on) return kHandedOn;
  static const int64_t bytes = [] {
    constexpr int64_t kDefault = int64_t{8} << 20;
    const int64_t l3 = mbb_shared_l3_bytes();
    if (l3 / 4 > kDefault) return l3 / 4;
    return kDefault;
  }();
  return bytes;
}

// The variant the float passes with vector code (the fused depthwise conv,
// the max pool) take: "avx512" where the CPU has AVX-512 F and
// MMBINARY_CPU_KERNEL (see cpu/mbb_conv2d.cpp) is unset, "auto" or
// "avx512"; "avx2" where it has AVX2 and FMA and MMBINARY_CPU_KERNEL is
// unset, "auto" (no AVX-512) or "avx2"; else "portable" (their plain C++
// code).
inline const char* float_pass_variant() {
  static const CpuFeatures f = detect_cpu_features();
  const char* env = std::getenv("MMBINARY_CPU_KERNEL");
  const std::string name = env == nullptr ? "" : env;
  const bool any = name.empty() || name == "auto";
  if (f.avx512f && (any || name == "avx512")) return "avx512";
  if (f.avx2 && f.fma && (any || name == "avx2")) return "avx2";
  return "portable";
}

// Whether the float passes take their AVX-512 variant (float_pass_variant).
inline bool avx512_float_passes() {
  return std::string(float_pass_variant()) == "avx512";
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
