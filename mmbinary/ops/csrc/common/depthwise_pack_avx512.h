// Copyright (c) mmbinary contributors. All rights reserved.
// AVX-512 variant of the fused depthwise conv + scale/bias + clamp + pack
// (depthwise_pack.h defines the arithmetic): 16 channels of one output
// pixel per vector, a multiply and an add per valid tap (no FMA, the same
// floats as the portable code), the level bits of the 16 channels straight
// from vptestmd masks into 16 bits of the pixel's words (as the channel-lane
// quantize + pack does). Output pixels of a row walk along the input rows,
// which stay in cache across the kernel's taps.
#pragma once

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

// Output rows [begin, end) of the (N * Ho) axis; see
// depthwise_pack_rows_portable. Returns whether a written value was NaN.
template <bool SIGNED>
inline bool rows_k(const DepthwisePackArgs& a, int64_t begin, int64_t end) {
  const float levels = static_cast<float>((1 << a.K) - 1);
  const __m512 inv = _mm512_set1_ps(a.inv_step), top = _mm512_set1_ps(levels);
  const __m512 half = _mm512_set1_ps(0.5f), zero = _mm512_setzero_ps();
  const __m512 lo = _mm512_set1_ps(a.act_min), hi = _mm512_set1_ps(a.act_max);
  const bool pack = a.words != nullptr;
  __mmask16 nan = 0;
  uint64_t words[kMBBMaxBits];
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / a.Ho, y = r % a.Ho;
    int64_t ky0, ky1;
    mbb_valid_taps(y, a.H, a.kh, a.sh, a.ph, a.dh, &ky0, &ky1);
    const float* in_n = a.input + n * a.H * a.W * a.C;
    for (int64_t x = 0; x < a.Wo; ++x) {
      const int64_t kx0 = a.kx_range[2 * x], kx1 = a.kx_range[2 * x + 1];
      const int64_t pixel = r * a.Wo + x;
      const int64_t ix0 = x * a.sw - a.pw;
      float* out = a.out ? a.out + pixel * a.C : nullptr;
      uint64_t* dst = pack ? a.words + pixel * a.K * a.Wg : nullptr;
      for (int64_t j = 0; j < a.Wg; ++j) {
        for (int64_t k = 0; k < a.K; ++k) words[k] = 0;
        for (int64_t part = 0; part < 4; ++part) {
          const int64_t c = j * kMBBWordBits + part * 16;
          if (c >= a.C) break;
          const int64_t rest = a.C - c;
          const __mmask16 lanes =
              rest >= 16 ? static_cast<__mmask16>(0xFFFF)
                         : static_cast<__mmask16>((1u << rest) - 1u);
          __m512 acc = zero;
          for (int64_t ky = ky0; ky < ky1; ++ky) {
            const int64_t iy = y * a.sh - a.ph + ky * a.dh;
            const float* in_row = in_n + iy * a.W * a.C + c;
            const float* w_row = a.weight + ky * a.kw * a.C16 + c;
            for (int64_t kx = kx0; kx < kx1; ++kx) {
              const __m512 value = _mm512_maskz_loadu_ps(
                  lanes, in_row + (ix0 + kx * a.dw) * a.C);
              const __m512 w = _mm512_loadu_ps(w_row + kx * a.C16);
              acc = _mm512_add_ps(acc, _mm512_mul_ps(value, w));
            }
          }
          __m512 v = _mm512_add_ps(_mm512_mul_ps(acc, _mm512_loadu_ps(a.scale + c)),
                                   _mm512_loadu_ps(a.bias + c));
          // max/min return their second operand when one is NaN: NaN stays.
          v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
          if (out) _mm512_mask_storeu_ps(out + c, lanes, v);
          if (!pack) continue;
          nan |= _mm512_mask_cmp_ps_mask(lanes, v, v, _CMP_UNORD_Q);
          __m512 t = _mm512_mul_ps(v, inv);
          if (SIGNED) t = _mm512_mul_ps(_mm512_add_ps(t, top), half);
          // max(t, 0) is 0 for NaN, as in mbb_quantize_level.
          t = _mm512_min_ps(_mm512_max_ps(t, zero), top);
          const __m512i q = _mm512_maskz_mov_epi32(lanes, _mm512_cvtps_epi32(t));
          for (int64_t k = 0; k < a.K; ++k) {
            const __mmask16 bits = _mm512_test_epi32_mask(
                q, _mm512_set1_epi32(1 << k));
            words[k] |= static_cast<uint64_t>(bits) << (part * 16);
          }
        }
        if (pack)
          for (int64_t k = 0; k < a.K; ++k) dst[k * a.Wg + j] = words[k];
      }
    }
  }
  return nan != 0;
}

inline bool rows(const DepthwisePackArgs& a, int64_t begin, int64_t end) {
  return a.is_signed ? rows_k<true>(a, begin, end)
                     : rows_k<false>(a, begin, end);
}

}  // namespace depthwise_avx512
}  // namespace mmbinary

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

#endif  // x86-64 GCC / clang
