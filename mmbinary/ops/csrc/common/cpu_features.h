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
};

inline CpuFeatures detect_cpu_features() {
  CpuFeatures features;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  features.popcnt = __builtin_cpu_supports("popcnt");
  features.avx2 = __builtin_cpu_supports("avx2");
  features.avx512f = __builtin_cpu_supports("avx512f");
  features.avx512_vpopcntdq = __builtin_cpu_supports("avx512vpopcntdq");
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
  return names;
}

}  // namespace mmbinary
