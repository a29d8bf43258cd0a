// Copyright (c) mmbinary contributors. All rights reserved.
// AVX-512 variant of the fused depthwise conv + scale/bias + clamp + pack
// (depthwise_pack.h defines the arithmetic): 16 channels of one output
// pixel per vector, a fused multiply-add per valid tap (the same floats as
// the portable code's std::fma), the level bits of the 16 channels straight
// from vptestmd masks into 16 bits of the pixel's words (as the channel-lane
// quantize + pack does). Output pixels go 4 at a time, each with its own
// accumulator, so the dependent multiply-adds of one pixel's taps overlap
// with the other pixels' (one pixel at a time waits on each). A 3x3 kernel's
// interior rows go channel block by channel block, the block's nine
// weights held in registers while the row's pixels sweep past.
#pragma once

#include "depthwise_pack.h"

#include <type_traits>

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

// The loops over a strip's pixels unrolled, so that its accumulators
// stay in registers (GCC keeps a runtime-indexed array on the stack).
#if defined(__clang__)
#define MMBINARY_DW_UNROLL _Pragma("unroll")
#else
#define MMBINARY_DW_UNROLL _Pragma("GCC unroll 16")
#endif

namespace mmbinary {
namespace depthwise_avx512 {

// The constants of a call's epilogue (scale and bias are per channel block).
struct Epilogue {
  __m512 lo, hi, inv, top, half, zero;
  explicit Epilogue(const DepthwisePackArgs& a)
      : lo(_mm512_set1_ps(a.act_min)),
        hi(_mm512_set1_ps(a.act_max)),
        inv(_mm512_set1_ps(a.inv_step)),
        top(_mm512_set1_ps(static_cast<float>((1 << a.K) - 1))),
        half(_mm512_set1_ps(0.5f)),
        zero(_mm512_setzero_ps()) {}
};

// One pixel's 16-channel block from its accumulator: scale, bias, clamp,
// the float output (``out``: the block's 16 floats, or null) and the level
// bits into ``dst`` (the block's 16-bit quarter of bit plane 0, planes
// ``plane`` quarters apart, or null). Returns the lanes that were NaN.
template <bool SIGNED>
inline __mmask16 finish_block(const Epilogue& e, __m512 acc, __m512 scale,
                              __m512 bias, __mmask16 lanes, float* out,
                              uint16_t* dst, int64_t plane, int64_t K) {
  __m512 v = _mm512_add_ps(_mm512_mul_ps(acc, scale), bias);
  // max/min return their second operand when one is NaN: NaN stays.
  v = _mm512_min_ps(e.hi, _mm512_max_ps(e.lo, v));
  if (out != nullptr) _mm512_mask_storeu_ps(out, lanes, v);
  if (dst == nullptr) return 0;
  __m512 t = _mm512_mul_ps(v, e.inv);
  if (SIGNED) t = _mm512_mul_ps(_mm512_add_ps(t, e.top), e.half);
  // max(t, 0) is 0 for NaN, as in mbb_quantize_level.
  t = _mm512_min_ps(_mm512_max_ps(t, e.zero), e.top);
  const __m512i q = _mm512_maskz_mov_epi32(lanes, _mm512_cvtps_epi32(t));
  for (int64_t k = 0; k < K; ++k)
    dst[k * plane] = static_cast<uint16_t>(
        _mm512_test_epi32_mask(q, _mm512_set1_epi32(1 << k)));
  return _mm512_mask_cmp_ps_mask(lanes, v, v, _CMP_UNORD_Q);
}

// A 16-channel block of P pixels, ``pixel_step`` floats apart, times one
// tap's weights, added to the pixels' accumulators. Full blocks load
// unmasked.
template <int P>
inline void add_tap(__m512 (&acc)[P], const float* in, int64_t pixel_step,
                    __m512 w, bool full, __mmask16 lanes) {
  MMBINARY_DW_UNROLL
  for (int i = 0; i < P; ++i)
    acc[i] = _mm512_fmadd_ps(
        full ? _mm512_loadu_ps(in + i * pixel_step)
             : _mm512_maskz_loadu_ps(lanes, in + i * pixel_step),
        w, acc[i]);
}

// P consecutive output pixels (n, y, x .. x + P - 1) that share their
// valid kernel columns [kx0, kx1) (and rows [ky0, ky1)), every channel:
// each 16-channel block sums its taps in P independent accumulators (one a
// pixel, so the multiply-adds of different pixels overlap), each tap's weights
// loaded once for the P pixels; then scale, bias, clamp, the float output
// and the level bits, 16 channels = one 16-bit quarter of a word.
// Returns whether a packed value was NaN.
template <int P, bool SIGNED>
inline bool pixels(const DepthwisePackArgs& a, const Epilogue& e, int64_t n,
                   int64_t y, int64_t ky0, int64_t ky1, int64_t x,
                   int64_t kx0, int64_t kx1) {
  const float* in_n = a.input + n * a.H * a.W * a.C;
  const int64_t pixel = (n * a.Ho + y) * a.Wo + x;
  const int64_t ix0 = x * a.sw - a.pw;
  const int64_t pixel_step = a.sw * a.C;  // floats from pixel i to i + 1
  // a pixel's words as 16-bit quarters: (K, Wg, 4)
  uint16_t* words = a.words == nullptr
                        ? nullptr
                        : reinterpret_cast<uint16_t*>(a.words) +
                              pixel * a.K * a.Wg * 4;
  const int64_t plane = a.Wg * 4;  // quarters per bit plane
  __mmask16 nan = 0;
  if (P > 1) {
    // The next strip's new input pixels, every channel, on each kernel
    // row: the hardware prefetchers miss the strided walk over a strip's
    // pixels channel block by channel block (MobileNetV2's 144-channel
    // 3x3 at 200x334, one thread: 13.0 -> 8.6 ms from memory; from the
    // cache 1.34 -> 1.49 ms, slower). Addresses as integers: the last
    // strip's may lie past the input (a prefetch does not fault).
    const int64_t bytes = P * pixel_step * 4;
    const uintptr_t base = reinterpret_cast<uintptr_t>(in_n);
    for (int64_t ky = ky0; ky < ky1; ++ky) {
      const int64_t iy = y * a.sh - a.ph + ky * a.dh;
      const uintptr_t next =
          base + 4 * static_cast<uintptr_t>((iy * a.W + ix0) * a.C +
                                            P * pixel_step +
                                            (a.kw - 1) * a.dw * a.C);
      for (int64_t b = 0; b < bytes; b += 64)
        _mm_prefetch(reinterpret_cast<const char*>(next + b), _MM_HINT_T0);
    }
  }
  for (int64_t c = 0; c < a.C; c += 16) {
    const int64_t rest = a.C - c;
    const __mmask16 lanes = rest >= 16 ? static_cast<__mmask16>(0xFFFF)
                                       : static_cast<__mmask16>((1u << rest) - 1u);
    __m512 acc[P];
    MMBINARY_DW_UNROLL
    for (int i = 0; i < P; ++i) acc[i] = e.zero;
    for (int64_t ky = ky0; ky < ky1; ++ky) {
      const int64_t iy = y * a.sh - a.ph + ky * a.dh;
      const float* in_row = in_n + (iy * a.W + ix0) * a.C + c;
      const float* w_row = a.weight + ky * a.kw * a.C16 + c;
      for (int64_t kx = kx0; kx < kx1; ++kx)
        add_tap<P>(acc, in_row + kx * a.dw * a.C, pixel_step,
                   _mm512_loadu_ps(w_row + kx * a.C16), rest >= 16, lanes);
    }
    const __m512 scale = _mm512_loadu_ps(a.scale + c);
    const __m512 bias = _mm512_loadu_ps(a.bias + c);
    MMBINARY_DW_UNROLL
    for (int i = 0; i < P; ++i)
      nan |= finish_block<SIGNED>(
          e, acc[i], scale, bias, lanes,
          a.out == nullptr ? nullptr : a.out + (pixel + i) * a.C + c,
          words == nullptr ? nullptr : words + i * a.K * plane + c / 16,
          plane, a.K);
  }
  return nan != 0;
}

// Output row (n, y) of a 3x3 kernel whose three kernel rows are valid,
// columns [x0, x1) (every kernel column valid), channel block by channel
// block: the block's nine weights stay in registers while the row's pixels
// go past P at a time (then one at a time). The same floats as
// pixels<P, SIGNED>. Returns whether a packed value was NaN.
template <int P, bool SIGNED>
inline bool row3x3(const DepthwisePackArgs& a, const Epilogue& e, int64_t n,
                   int64_t y, int64_t x0, int64_t x1) {
  const int64_t C = a.C, plane = a.Wg * 4;  // quarters per bit plane
  const int64_t pixel_step = a.sw * C, tap_step = a.dw * C;
  const float* in_n = a.input + n * a.H * a.W * C;
  const float* rows[3];  // input pixel (y * sh - ph + ky * dh, x0 * sw - pw)
  for (int ky = 0; ky < 3; ++ky)
    rows[ky] =
        in_n + ((y * a.sh - a.ph + ky * a.dh) * a.W + x0 * a.sw - a.pw) * C;
  const int64_t pixel0 = (n * a.Ho + y) * a.Wo + x0;
  uint16_t* words = a.words == nullptr
                        ? nullptr
                        : reinterpret_cast<uint16_t*>(a.words) +
                              pixel0 * a.K * plane;
  float* out = a.out == nullptr ? nullptr : a.out + pixel0 * C;
  __mmask16 nan = 0;
  for (int64_t c = 0; c < C; c += 16) {
    const int64_t rest = C - c;
    const bool full = rest >= 16;
    const __mmask16 lanes = full ? static_cast<__mmask16>(0xFFFF)
                                 : static_cast<__mmask16>((1u << rest) - 1u);
    __m512 w[9];
    MMBINARY_DW_UNROLL
    for (int t = 0; t < 9; ++t)
      w[t] = _mm512_loadu_ps(a.weight + t * a.C16 + c);
    const __m512 scale = _mm512_loadu_ps(a.scale + c);
    const __m512 bias = _mm512_loadu_ps(a.bias + c);
    // Q pixels from column x0 + i on: taps in the order ky, kx.
    auto strip = [&](auto pixels_tag, int64_t i) {
      constexpr int Q = decltype(pixels_tag)::value;
      __m512 acc[Q];
      MMBINARY_DW_UNROLL
      for (int j = 0; j < Q; ++j) acc[j] = e.zero;
      MMBINARY_DW_UNROLL
      for (int t = 0; t < 9; ++t)
        add_tap<Q>(acc, rows[t / 3] + i * pixel_step + (t % 3) * tap_step + c,
                   pixel_step, w[t], full, lanes);
      MMBINARY_DW_UNROLL
      for (int j = 0; j < Q; ++j)
        nan |= finish_block<SIGNED>(
            e, acc[j], scale, bias, lanes,
            out == nullptr ? nullptr : out + (i + j) * C + c,
            words == nullptr ? nullptr
                             : words + (i + j) * a.K * plane + c / 16,
            plane, a.K);
    };
    int64_t i = 0;
    for (; i + P <= x1 - x0; i += P) strip(std::integral_constant<int, P>(), i);
    for (; i < x1 - x0; ++i) strip(std::integral_constant<int, 1>(), i);
  }
  return nan != 0;
}

// Output rows [begin, end) of the (N * Ho) axis; see
// depthwise_pack_rows_portable. The columns whose kernel lies inside the
// input go kStrip pixels at a time (a 3x3 kernel's rows that lie inside
// the input too: row3x3), the border columns one by one.
// Returns whether a packed value was NaN.
template <bool SIGNED>
inline bool rows_k(const DepthwisePackArgs& a, int64_t begin, int64_t end) {
  constexpr int kStrip = 4;
  const Epilogue e(a);
  // [inner_begin, inner_end): the columns with every kernel column valid
  // (contiguous: the valid range only shrinks towards the borders)
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

}  // namespace depthwise_avx512
}  // namespace mmbinary

#undef MMBINARY_DW_UNROLL

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

#endif  // x86-64 GCC / clang
