// Copyright (c) mmbinary contributors. All rights reserved.
// AVX2 + FMA variant of the fused depthwise conv + scale/bias + clamp + pack
// (depthwise_pack.h defines the arithmetic), for CPUs without AVX-512 (AMD
// Zen 3, Intel before Ice Lake): the AVX-512 variant's loops
// (depthwise_pack_avx512.h) on 8 channels a vector. A fused multiply-add
// per valid tap (the same floats as the portable code's std::fma); the
// level bits of the 8 channels from the sign bits of the shifted levels
// (vmovmskps), one byte of the pixel's words per bit plane.
#pragma once

#include "depthwise_pack.h"

#include <type_traits>

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

// The loops over a strip's pixels unrolled, so that its accumulators
// stay in registers.
#if defined(__clang__)
#define MMBINARY_DW2_UNROLL _Pragma("unroll")
#else
#define MMBINARY_DW2_UNROLL _Pragma("GCC unroll 16")
#endif

namespace mmbinary {
namespace depthwise_avx2 {

// The constants of a call's epilogue (scale and bias are per channel block).
struct Epilogue {
  __m256 lo, hi, inv, top, half, zero;
  explicit Epilogue(const DepthwisePackArgs& a)
      : lo(_mm256_set1_ps(a.act_min)),
        hi(_mm256_set1_ps(a.act_max)),
        inv(_mm256_set1_ps(a.inv_step)),
        top(_mm256_set1_ps(static_cast<float>((1 << a.K) - 1))),
        half(_mm256_set1_ps(0.5f)),
        zero(_mm256_setzero_ps()) {}
};

// The lanes of channels [c, c + 8) below C, as an all-ones / zero mask.
inline __m256i lane_mask(int64_t rest) {
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(
      _mm256_set1_epi32(static_cast<int>(rest < 8 ? rest : 8)), index);
}

// One pixel's 8-channel block from its accumulator: scale, bias, clamp,
// the float output (``out``: the block's 8 floats, or null) and the level
// bits into ``dst`` (the block's byte of bit plane 0, planes ``plane``
// bytes apart, or null). Returns whether a lane was NaN.
template <bool SIGNED>
inline bool finish_block(const Epilogue& e, __m256 acc, __m256 scale,
                         __m256 bias, __m256i lanes, float* out, uint8_t* dst,
                         int64_t plane, int64_t K) {
  __m256 v = _mm256_add_ps(_mm256_mul_ps(acc, scale), bias);
  // max/min return their second operand when one is NaN: NaN stays.
  v = _mm256_min_ps(e.hi, _mm256_max_ps(e.lo, v));
  if (out != nullptr) _mm256_maskstore_ps(out, lanes, v);
  if (dst == nullptr) return false;
  __m256 t = _mm256_mul_ps(v, e.inv);
  if (SIGNED) t = _mm256_mul_ps(_mm256_add_ps(t, e.top), e.half);
  // max(t, 0) is 0 for NaN, as in mbb_quantize_level.
  t = _mm256_min_ps(_mm256_max_ps(t, e.zero), e.top);
  const __m256i q = _mm256_and_si256(_mm256_cvtps_epi32(t), lanes);
  for (int64_t k = 0; k < K; ++k)
    dst[k * plane] = static_cast<uint8_t>(_mm256_movemask_ps(
        _mm256_castsi256_ps(_mm256_sllv_epi32(
            q, _mm256_set1_epi32(static_cast<int>(31 - k))))));
  const __m256 unordered = _mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q),
                                         _mm256_castsi256_ps(lanes));
  return _mm256_movemask_ps(unordered) != 0;
}

// An 8-channel block of P pixels, ``pixel_step`` floats apart, times one
// tap's weights, added to the pixels' accumulators. Full blocks load
// unmasked.
template <int P>
inline void add_tap(__m256 (&acc)[P], const float* in, int64_t pixel_step,
                    __m256 w, bool full, __m256i lanes) {
  MMBINARY_DW2_UNROLL
  for (int i = 0; i < P; ++i)
    acc[i] = _mm256_fmadd_ps(full ? _mm256_loadu_ps(in + i * pixel_step)
                                  : _mm256_maskload_ps(in + i * pixel_step,
                                                       lanes),
                             w, acc[i]);
}

// P consecutive output pixels (n, y, x .. x + P - 1) that share their
// valid kernel columns [kx0, kx1) (and rows [ky0, ky1)), every channel, 8
// channels at a time (see depthwise_avx512::pixels). Returns whether a
// packed value was NaN.
template <int P, bool SIGNED>
inline bool pixels(const DepthwisePackArgs& a, const Epilogue& e, int64_t n,
                   int64_t y, int64_t ky0, int64_t ky1, int64_t x,
                   int64_t kx0, int64_t kx1) {
  const float* in_n = a.input + n * a.H * a.W * a.C;
  const int64_t pixel = (n * a.Ho + y) * a.Wo + x;
  const int64_t ix0 = x * a.sw - a.pw;
  const int64_t pixel_step = a.sw * a.C;  // floats from pixel i to i + 1
  const int64_t plane = a.Wg * 8;         // bytes per bit plane
  uint8_t* words = a.words == nullptr
                       ? nullptr
                       : reinterpret_cast<uint8_t*>(a.words) +
                             pixel * a.K * plane;
  bool nan = false;
  for (int64_t c = 0; c < a.C; c += 8) {
    const int64_t rest = a.C - c;
    const __m256i lanes = lane_mask(rest);
    __m256 acc[P];
    MMBINARY_DW2_UNROLL
    for (int i = 0; i < P; ++i) acc[i] = e.zero;
    for (int64_t ky = ky0; ky < ky1; ++ky) {
      const int64_t iy = y * a.sh - a.ph + ky * a.dh;
      const float* in_row = in_n + (iy * a.W + ix0) * a.C + c;
      const float* w_row = a.weight + ky * a.kw * a.C16 + c;
      for (int64_t kx = kx0; kx < kx1; ++kx)
        add_tap<P>(acc, in_row + kx * a.dw * a.C, pixel_step,
                   _mm256_loadu_ps(w_row + kx * a.C16), rest >= 8, lanes);
    }
    const __m256 scale = _mm256_loadu_ps(a.scale + c);
    const __m256 bias = _mm256_loadu_ps(a.bias + c);
    MMBINARY_DW2_UNROLL
    for (int i = 0; i < P; ++i)
      nan |= finish_block<SIGNED>(
          e, acc[i], scale, bias, lanes,
          a.out == nullptr ? nullptr : a.out + (pixel + i) * a.C + c,
          words == nullptr ? nullptr : words + i * a.K * plane + c / 8,
          plane, a.K);
  }
  return nan;
}

// Output row (n, y) of a 3x3 kernel whose three kernel rows are valid,
// columns [x0, x1) (every kernel column valid), channel block by channel
// block, the block's nine weights in registers (see
// depthwise_avx512::row3x3). Returns whether a packed value was NaN.
template <int P, bool SIGNED>
inline bool row3x3(const DepthwisePackArgs& a, const Epilogue& e, int64_t n,
                   int64_t y, int64_t x0, int64_t x1) {
  const int64_t C = a.C, plane = a.Wg * 8;  // bytes per bit plane
  const int64_t pixel_step = a.sw * C, tap_step = a.dw * C;
  const float* in_n = a.input + n * a.H * a.W * C;
  const float* rows[3];  // input pixel (y * sh - ph + ky * dh, x0 * sw - pw)
  for (int ky = 0; ky < 3; ++ky)
    rows[ky] =
        in_n + ((y * a.sh - a.ph + ky * a.dh) * a.W + x0 * a.sw - a.pw) * C;
  const int64_t pixel0 = (n * a.Ho + y) * a.Wo + x0;
  uint8_t* words = a.words == nullptr
                       ? nullptr
                       : reinterpret_cast<uint8_t*>(a.words) +
                             pixel0 * a.K * plane;
  float* out = a.out == nullptr ? nullptr : a.out + pixel0 * C;
  bool nan = false;
  for (int64_t c = 0; c < C; c += 8) {
    const int64_t rest = C - c;
    const bool full = rest >= 8;
    const __m256i lanes = lane_mask(rest);
    __m256 w[9];
    MMBINARY_DW2_UNROLL
    for (int t = 0; t < 9; ++t)
      w[t] = _mm256_loadu_ps(a.weight + t * a.C16 + c);
    const __m256 scale = _mm256_loadu_ps(a.scale + c);
    const __m256 bias = _mm256_loadu_ps(a.bias + c);
    // Q pixels from column x0 + i on: taps in the order ky, kx.
    auto strip = [&](auto pixels_tag, int64_t i) {
      constexpr int Q = decltype(pixels_tag)::value;
      __m256 acc[Q];
      MMBINARY_DW2_UNROLL
      for (int j = 0; j < Q; ++j) acc[j] = e.zero;
      MMBINARY_DW2_UNROLL
      for (int t = 0; t < 9; ++t)
        add_tap<Q>(acc, rows[t / 3] + i * pixel_step + (t % 3) * tap_step + c,
                   pixel_step, w[t], full, lanes);
      MMBINARY_DW2_UNROLL
      for (int j = 0; j < Q; ++j)
        nan |= finish_block<SIGNED>(
            e, acc[j], scale, bias, lanes,
            out == nullptr ? nullptr : out + (i + j) * C + c,
            words == nullptr ? nullptr
                             : words + (i + j) * a.K * plane + c / 8,
            plane, a.K);
    };
    int64_t i = 0;
    for (; i + P <= x1 - x0; i += P) strip(std::integral_constant<int, P>(), i);
    for (; i < x1 - x0; ++i) strip(std::integral_constant<int, 1>(), i);
  }
  return nan;
}

// Output rows [begin, end) of the (N * Ho) axis, as
// depthwise_avx512::rows_k. Returns whether a packed value was NaN.
template <bool SIGNED>
inline bool rows_k(const DepthwisePackArgs& a, int64_t begin, int64_t end) {
  constexpr int kStrip = 4;
  const Epilogue e(a);
  // [inner_begin, inner_end): the columns with every kernel column valid
  int64_t inner_begin = a.Wo, inner_end = a.Wo;
  for (int64_t x = 0; x < a.Wo; ++x) {
    if (a.kx_range[2 * x] == 0 && a.kx_range[2 * x + 1] == a.kw) {
      if (inner_begin == a.Wo) inner_begin = x;
      inner_end = x + 1;
    }
  }
  const bool three_by_three = a.kh == 3 && a.kw == 3;
  bool nan = false;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / a.Ho, y = r % a.Ho;
    int64_t ky0, ky1;
    mbb_valid_taps(y, a.H, a.kh, a.sh, a.ph, a.dh, &ky0, &ky1);
    const bool row_inside = ky0 == 0 && ky1 == a.kh;
    int64_t x = 0;
    while (x < a.Wo) {
      if (three_by_three && row_inside && x == inner_begin) {
        nan |= row3x3<kStrip, SIGNED>(a, e, n, y, inner_begin, inner_end);
        x = inner_end;
      } else if (x >= inner_begin && x + kStrip <= inner_end) {
        nan |= pixels<kStrip, SIGNED>(a, e, n, y, ky0, ky1, x, 0, a.kw);
        x += kStrip;
      } else {
        nan |= pixels<1, SIGNED>(a, e, n, y, ky0, ky1, x, a.kx_range[2 * x],
                                 a.kx_range[2 * x + 1]);
        x += 1;
      }
    }
  }
  return nan;
}

inline bool rows(const DepthwisePackArgs& a, int64_t begin, int64_t end) {
  return a.is_signed ? rows_k<true>(a, begin, end)
                     : rows_k<false>(a, begin, end);
}

}  // namespace depthwise_avx2
}  // namespace mmbinary

#undef MMBINARY_DW2_UNROLL

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // x86-64 GCC / clang
