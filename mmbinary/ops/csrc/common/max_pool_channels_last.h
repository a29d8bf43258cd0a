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

// Output rows [begin, end) of the (N * Ho) axis, portable.
inline void max_pool_rows_portable(const MaxPoolShape& s, const float* in,
                                   float* out, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / s.Ho, y = r % s.Ho;
    int64_t ky0, ky1;
    max_pool_taps(y, s.sh, s.ph, s.dh, s.kh, s.H, &ky0, &ky1);
    for (int64_t x = 0; x < s.Wo; ++x) {
      int64_t kx0, kx1;
      max_pool_taps(x, s.sw, s.pw, s.dw, s.kw, s.W, &kx0, &kx1);
      float* dst = out + (r * s.Wo + x) * s.C;
      std::fill(dst, dst + s.C, -std::numeric_limits<float>::infinity());
      for (int64_t ky = ky0; ky < ky1; ++ky) {
        const int64_t iy = y * s.sh - s.ph + ky * s.dh;
        for (int64_t kx = kx0; kx < kx1; ++kx) {
          const int64_t ix = x * s.sw - s.pw + kx * s.dw;
          const float* src = in + ((n * s.H + iy) * s.W + ix) * s.C;
          // branch-free, so that the compiler vectorizes it
          for (int64_t c = 0; c < s.C; ++c) {
            const float v = src[c], m = dst[c];
            dst[c] = (v > m || v != v) ? v : m;
          }
        }
      }
    }
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

// Up to 8 vectors (128 channels from c) of one output pixel, in registers.
template <int V>
inline void pixel_channels(const MaxPoolShape& s, const float* in, float* dst,
                           int64_t n, int64_t y, int64_t x, int64_t ky0,
                           int64_t ky1, int64_t kx0, int64_t kx1, int64_t c,
                           __mmask16 last) {
  __m512 m[V];
  for (int v = 0; v < V; ++v)
    m[v] = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t ky = ky0; ky < ky1; ++ky) {
    const int64_t iy = y * s.sh - s.ph + ky * s.dh;
    for (int64_t kx = kx0; kx < kx1; ++kx) {
      const int64_t ix = x * s.sw - s.pw + kx * s.dw;
      const float* src = in + ((n * s.H + iy) * s.W + ix) * s.C + c;
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

// Output rows [begin, end) of the (N * Ho) axis.
inline void rows(const MaxPoolShape& s, const float* in, float* out,
                 int64_t begin, int64_t end) {
  using Fn = void (*)(const MaxPoolShape&, const float*, float*, int64_t,
                      int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                      int64_t, __mmask16);
  static constexpr Fn kPasses[8] = {
      &pixel_channels<1>, &pixel_channels<2>, &pixel_channels<3>,
      &pixel_channels<4>, &pixel_channels<5>, &pixel_channels<6>,
      &pixel_channels<7>, &pixel_channels<8>};
  const int64_t vectors = (s.C + 15) / 16;
  const int64_t tail = s.C - 16 * (vectors - 1);
  const __mmask16 last = tail == 16 ? __mmask16(0xFFFF)
                                    : __mmask16((1u << tail) - 1u);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / s.Ho, y = r % s.Ho;
    int64_t ky0, ky1;
    max_pool_taps(y, s.sh, s.ph, s.dh, s.kh, s.H, &ky0, &ky1);
    for (int64_t x = 0; x < s.Wo; ++x) {
      int64_t kx0, kx1;
      max_pool_taps(x, s.sw, s.pw, s.dw, s.kw, s.W, &kx0, &kx1);
      float* dst = out + (r * s.Wo + x) * s.C;
      for (int64_t v = 0; v < vectors; v += 8) {
        const int64_t count = std::min<int64_t>(8, vectors - v);
        const bool has_tail = v + count == vectors;
        kPasses[count - 1](s, in, dst, n, y, x, ky0, ky1, kx0, kx1, 16 * v,
                           has_tail ? last : __mmask16(0xFFFF));
      }
    }
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
