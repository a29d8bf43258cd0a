// Copyright (c) mmbinary contributors. All rights reserved.
// Run-time CPU feature detection, used to pick a kernel variant.
#pragma once

#include <string>

namespace mmbinary {

struct CpuFeatures {
  bool popcnt = false;
  bool avx2 = false;
  bool avx512f = false;
  bool avx512_vpopcntdq = false;
  bool avx512bw = false;
  bool avx512_vnni = false;  // vpdpbusd (the integer kernel)
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
#endif
  return features;
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
  return names;
}

}  // namespace mmbinary
