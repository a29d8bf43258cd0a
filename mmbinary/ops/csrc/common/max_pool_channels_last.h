// Copyright (c) mmbinary contributors. All rights reserved.
// Max pooling of a channels-last float32 (N, H, W, C) tensor (a ResNet
// stem's 3x3, stride-2 max pool after the packed stem conv), with the
// values torch's max_pool2d gives, bit for bit: each output starts at
// -inf and takes a window value v, the valid taps in (ky, kx) order, when
// v > max or v is NaN (padded taps are skipped; of equal values, +0 and
// -0, the first stays). The AVX-512 variant does the same 16 channels at a
// time, a pixel's channels in registers, 8 vectors per pass.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace mmbinary {

// The geometry of one max pool (sizes in pixels, ceil_mode off).
struct MaxPoolShape {
  int64_t N, C, H, W, Ho, Wo;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

// The valid taps [k0, k1) of output coordinate o along one axis.
inline void max_pool_taps(int64_t o, int64_t stride, int64_t pad,
                          int64_t dilation, int64_t kernel, int64_t size,
                          int64_t* k0, int64_t* k1) {
  const int64_t start = o * stride - pad;
  int64_t lo = 0, hi = kernel;
  while (lo < kernel && start + lo * dilation < 0) ++lo;
  while (hi > lo && start + (hi - 1) * dilation >= size) --hi;
  *k0 = lo, *k1 = hi;
}

// One output row of the pool from its `count` valid input rows (`rows`,
// channels-last (W, C) each, in kernel-row order), portable.
inline void max_pool_row_portable(const MaxPoolShape& s,
                                  const float* const* rows, int64_t count,
                                  float* dst) {
  for (int64_t x = 0; x < s.Wo; ++x, dst += s.C) {
    int64_t kx0, kx1;
    max_pool_taps(x, s.sw, s.pw, s.dw, s.kw, s.W, &kx0, &kx1);
    std::fill(dst, dst + s.C, -std::numeric_limits<float>::infinity());
    for (int64_t i = 0; i < count; ++i) {
      for (int64_t kx = kx0; kx < kx1; ++kx) {
        const float* src = rows[i] + (x * s.sw - s.pw + kx * s.dw) * s.C;
        // branch-free, so that the compiler vectorizes it
        for (int64_t c = 0; c < s.C; ++c) {
          const float v = src[c], m = dst[c];
          dst[c] = (v > m || v != v) ? v : m;
        }
      }
    }
  }
}

// The valid input rows of output row (n, y): row pointers into the
// channels-last (N, H, W, C) `in`; returns how many (at most s.kh, which
// the caller's array holds).
inline int64_t max_pool_input_rows(const MaxPoolShape& s, const float* in,
                                   int64_t n, int64_t y,
                                   const float** rows) {
  int64_t ky0, ky1;
  max_pool_taps(y, s.sh, s.ph, s.dh, s.kh, s.H, &ky0, &ky1);
  for (int64_t ky = ky0; ky < ky1; ++ky)
    rows[ky - ky0] = in + (n * s.H + y * s.sh - s.ph + ky * s.dh) * s.W * s.C;
  return ky1 - ky0;
}

// Output rows [begin, end) of the (N * Ho) axis, portable.
inline void max_pool_rows_portable(const MaxPoolShape& s, const float* in,
                                   float* out, int64_t begin, int64_t end) {
  std::vector<const float*> rows(s.kh);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t count =
        max_pool_input_rows(s, in, r / s.Ho, r % s.Ho, rows.data());
    max_pool_row_portable(s, rows.data(), count, out + r * s.Wo * s.C);
  }
}

}  // namespace mmbinary

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MMBINARY_HAVE_MAX_POOL_AVX512 1
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,avx512f"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,avx512f")
#endif

namespace mmbinary {
namespace max_pool_avx512 {

// Up to 8 vectors (128 channels from c) of output pixel x, in registers,
// from the valid input rows `rows[0 .. count)`, with torch's rule: a value
// replaces the running maximum where greater or NaN.
template <int V>
inline void pixel_channels(const MaxPoolShape& s, const float* const* rows,
                           int64_t count, float* dst, int64_t x, int64_t kx0,
                           int64_t kx1, int64_t c, __mmask16 last) {
  __m512 m[V];
  for (int v = 0; v < V; ++v)
    m[v] = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < count; ++i) {
    for (int64_t kx = kx0; kx < kx1; ++kx) {
      const float* src = rows[i] + (x * s.sw - s.pw + kx * s.dw) * s.C + c;
      for (int v = 0; v < V; ++v) {
        const __mmask16 lanes = v == V - 1 ? last : __mmask16(0xFFFF);
        const __m512 value = _mm512_maskz_loadu_ps(lanes, src + 16 * v);
        const __mmask16 take =
            _mm512_cmp_ps_mask(value, m[v], _CMP_GT_OQ) |
            _mm512_cmp_ps_mask(value, value, _CMP_UNORD_Q);
        m[v] = _mm512_mask_mov_ps(m[v], take, value);
      }
    }
  }
  for (int v = 0; v < V; ++v)
    _mm512_mask_storeu_ps(dst + c + 16 * v,
                          v == V - 1 ? last : __mmask16(0xFFFF), m[v]);
}

// One output row of the pool from its `count` valid input rows, as
// max_pool_row_portable.
inline void pool_row(const MaxPoolShape& s, const float* const* rows,
                     int64_t count, float* dst) {
  using Fn = void (*)(const MaxPoolShape&, const float* const*, int64_t,
                      float*, int64_t, int64_t, int64_t, int64_t, __mmask16);
  static constexpr Fn kPasses[8] = {
      &pixel_channels<1>, &pixel_channels<2>, &pixel_channels<3>,
      &pixel_channels<4>, &pixel_channels<5>, &pixel_channels<6>,
      &pixel_channels<7>, &pixel_channels<8>};
  const int64_t vectors = (s.C + 15) / 16;
  const int64_t tail = s.C - 16 * (vectors - 1);
  const __mmask16 last = tail == 16 ? __mmask16(0xFFFF)
                                    : __mmask16((1u << tail) - 1u);
  for (int64_t x = 0; x < s.Wo; ++x, dst += s.C) {
    int64_t kx0, kx1;
    max_pool_taps(x, s.sw, s.pw, s.dw, s.kw, s.W, &kx0, &kx1);
    for (int64_t v = 0; v < vectors; v += 8) {
      const int64_t n = std::min<int64_t>(8, vectors - v);
      kPasses[n - 1](s, rows, count, dst, x, kx0, kx1, 16 * v,
                     v + n == vectors ? last : __mmask16(0xFFFF));
    }
  }
}

// Output rows [begin, end) of the (N * Ho) axis.
inline void rows(const MaxPoolShape& s, const float* in, float* out,
                 int64_t begin, int64_t end) {
  std::vector<const float*> input_rows(s.kh);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t count =
        max_pool_input_rows(s, in, r / s.Ho, r % s.Ho, input_rows.data());
    pool_row(s, input_rows.data(), count, out + r * s.Wo * s.C);
  }
}

}  // namespace max_pool_avx512
}  // namespace mmbinary

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // x86-64 GCC / clang
