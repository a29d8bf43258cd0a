// Copyright (c) mmbinary contributors. All rights reserved.
// AVX2 + FMA variant of the fused depthwise conv + scale/bias + clamp + pack
// (depthwise_pack.h defines the arithmetic; depthwise_pack_vector.inc the
// loops), for CPUs without AVX-512 (AMD Zen 3, Intel before Ice Lake): 8
// channels of one output pixel per vector, the level bits of the 8 channels
// from the sign bits of the shifted levels (vmovmskps), one byte of the
// pixel's words per bit plane.
#pragma once

#include <type_traits>

#include "depthwise_pack.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MMBINARY_HAVE_DEPTHWISE_PACK_AVX2 1
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

namespace mmbinary {
namespace depthwise_avx2 {

// 8 float32 lanes; an all-ones / zero integer lane says which hold
// channels.
struct Floats {
  static constexpr int64_t kLanes = 8;
  using Vec = __m256;
  using Lanes = __m256i;
  static Lanes lanes(int64_t rest) {
    const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(
        _mm256_set1_epi32(static_cast<int>(rest < kLanes ? rest : kLanes)),
        index);
  }
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec set1(float v) { return _mm256_set1_ps(v); }
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static Vec load(const float* p, Lanes m) { return _mm256_maskload_ps(p, m); }
  static void store(float* p, Lanes m, Vec v) { _mm256_maskstore_ps(p, m, v); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static Vec min(Vec a, Vec b) { return _mm256_min_ps(a, b); }
  static Vec max(Vec a, Vec b) { return _mm256_max_ps(a, b); }
  static bool any_nan(Vec v, Lanes m) {
    return _mm256_movemask_ps(_mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q),
                                            _mm256_castsi256_ps(m))) != 0;
  }
  // The levels round(t) (lanes past C: 0), bit k of the 8 channels into
  // the byte dst[k * plane].
  static void store_level_bits(Vec t, Lanes m, uint8_t* dst, int64_t plane,
                               int64_t K) {
    const __m256i q = _mm256_and_si256(_mm256_cvtps_epi32(t), m);
    for (int64_t k = 0; k < K; ++k)
      dst[k * plane] = static_cast<uint8_t>(
          _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_sllv_epi32(
              q, _mm256_set1_epi32(static_cast<int>(31 - k))))));
  }
};

using V = Floats;
#include "depthwise_pack_vector.inc"

}  // namespace depthwise_avx2
}  // namespace mmbinary

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // x86-64 GCC / clang
