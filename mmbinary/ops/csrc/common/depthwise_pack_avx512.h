// Copyright (c) mmbinary contributors. All rights reserved.
// AVX-512 variant of the fused depthwise conv + scale/bias + clamp + pack
// (depthwise_pack.h defines the arithmetic; depthwise_pack_vector.inc the
// loops): 16 channels of one output pixel per vector, the level bits of the
// 16 channels straight from vptestmd masks into 16 bits of the pixel's
// words (as the channel-lane quantize + pack does).
#pragma once

#include <cstring>
#include <type_traits>

#include "depthwise_pack.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MMBINARY_HAVE_DEPTHWISE_PACK_AVX512 1
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(                                            \
    __attribute__((target("avx2,avx512f,avx512vl,avx512bw"))),           \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512vl,avx512bw")
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace mmbinary {
namespace depthwise_avx512 {

// 16 float32 lanes; a mask register says which hold channels.
struct Floats {
  static constexpr int64_t kLanes = 16;
  using Vec = __m512;
  using Lanes = __mmask16;
  static Lanes lanes(int64_t rest) {
    return rest >= kLanes ? static_cast<Lanes>(0xFFFF)
                          : static_cast<Lanes>((1u << rest) - 1u);
  }
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec set1(float v) { return _mm512_set1_ps(v); }
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec load(const float* p, Lanes m) {
    return _mm512_maskz_loadu_ps(m, p);
  }
  static void store(float* p, Lanes m, Vec v) {
    _mm512_mask_storeu_ps(p, m, v);
  }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Vec min(Vec a, Vec b) { return _mm512_min_ps(a, b); }
  static Vec max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
  static bool any_nan(Vec v, Lanes m) {
    return _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q) != 0;
  }
  // The levels round(t) (lanes past C: 0), bit k of the 16 channels into
  // the two bytes at dst + k * plane.
  static void store_level_bits(Vec t, Lanes m, uint8_t* dst, int64_t plane,
                               int64_t K) {
    const __m512i q = _mm512_maskz_mov_epi32(m, _mm512_cvtps_epi32(t));
    for (int64_t k = 0; k < K; ++k) {
      const uint16_t bits =
          _mm512_test_epi32_mask(q, _mm512_set1_epi32(1 << k));
      std::memcpy(dst + k * plane, &bits, sizeof(bits));
    }
  }
};

using V = Floats;
#include "depthwise_pack_vector.inc"

}  // namespace depthwise_avx512
}  // namespace mmbinary

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

#endif  // x86-64 GCC / clang
