// Copyright (c) mmbinary contributors. All rights reserved.
// Packed multi-bit binary-branch (MBB) 2-D convolution: packing format,
// geometry, activation quantization, the cheap pre-passes and the portable
// CPU kernels. Plain C++, no torch (docs/packed_format.md has the details).
//
// Packing format (64-bit words, bit i of a word = channel 64 * word + i of
// the group, least significant first, pad bits 0):
//   activations (N, H, W, G, K, Wg): plane k holds bit k of the level q;
//   weights     (O, M, kh, kw, Wg): plane m holds bit m of the offset
//               binary n = (w + 2^M - 1) / 2.
// with G groups, Cg = C / G channels and Wg = ceil(Cg / 64) words per group.
//
// Integer accumulator of one output (valid taps only, Mmax = 2^M - 1):
//   S_wa = sum_{m,k} 2^(m+k) popcount(W_m & A_k)
//   S_a  = sum_k 2^k popcount(A_k)                 (= sum of q)
//   sum w * q = 2 * S_wa - Mmax * S_a              (unsigned: the result)
//   signed:  acc = 2 * (sum w * q) - L * (sum of w over the valid taps).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#if defined(__SSE2__) && !defined(__CUDACC__)
#include <emmintrin.h>
#endif

#if defined(__CUDACC__)
#define MMBINARY_HOST_DEVICE __host__ __device__
#else
#define MMBINARY_HOST_DEVICE
#endif

namespace mmbinary {

constexpr int64_t kMBBWordBits = 64;
// Output columns interleaved in one block of a row patch (one 256-bit
// vector of words in the AVX2 kernel).
constexpr int64_t kMBBLanes = 4;
constexpr int64_t kMBBMaxBits = 8;
// Spatial positions one quantize-pack work item handles.
constexpr int64_t kMBBPackChunk = 256;

// Sizes of one packed convolution; every field is set by make_mbb_shape.
struct MBBConvShape {
  int64_t N, C, H, W;       // input
  int64_t O, G, Cg, Og, Wg;  // channels, groups, words per group
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  int64_t Ho, Wo;  // output
  int64_t M, K;    // weight and activation bits
  bool is_signed;
};

MMBINARY_HOST_DEVICE inline int64_t mbb_num_words(int64_t channels) {
  return (channels + kMBBWordBits - 1) / kMBBWordBits;
}

// Output size of a convolution axis (may be <= 0 for invalid geometry).
inline int64_t mbb_out_size(int64_t in, int64_t k, int64_t s, int64_t p,
                            int64_t d) {
  const int64_t span = in + 2 * p - d * (k - 1) - 1;
  return span < 0 ? 0 : span / s + 1;
}

inline MBBConvShape make_mbb_shape(int64_t N, int64_t C, int64_t H,
                                   int64_t W, int64_t O, int64_t G,
                                   int64_t kh, int64_t kw, int64_t sh,
                                   int64_t sw, int64_t ph, int64_t pw,
                                   int64_t dh, int64_t dw, int64_t M,
                                   int64_t K, bool is_signed) {
  MBBConvShape s;
  s.N = N, s.C = C, s.H = H, s.W = W, s.O = O, s.G = G;
  s.Cg = C / G, s.Og = O / G, s.Wg = mbb_num_words(C / G);
  s.kh = kh, s.kw = kw, s.sh = sh, s.sw = sw, s.ph = ph, s.pw = pw;
  s.dh = dh, s.dw = dw;
  s.Ho = mbb_out_size(H, kh, sh, ph, dh);
  s.Wo = mbb_out_size(W, kw, sw, pw, dw);
  s.M = M, s.K = K, s.is_signed = is_signed;
  return s;
}

// Largest |accumulator|: Cg * kh * kw * (2^M - 1) * (2^K - 1); must stay
// below 2^31 so the int32 output (and the float epilogue) are exact.
inline int64_t mbb_accumulator_bound(int64_t Cg, int64_t kh, int64_t kw,
                                     int64_t M, int64_t K) {
  return Cg * kh * kw * ((int64_t{1} << M) - 1) * ((int64_t{1} << K) - 1);
}

// Valid kernel taps [lo, hi) along one axis for output position `out`: the
// input index out * s - p + k * d lies in [0, in). Contiguous because the
// index grows with k; empty (lo == hi) when every tap is padding.
MMBINARY_HOST_DEVICE inline void mbb_valid_taps(int64_t out, int64_t in,
                                                int64_t k, int64_t s,
                                                int64_t p, int64_t d,
                                                int64_t* lo, int64_t* hi) {
  const int64_t start = out * s - p;  // input index of tap 0
  int64_t first = 0;
  if (start < 0) first = (-start + d - 1) / d;
  int64_t last = k;  // one past the last valid tap
  if (start + (k - 1) * d > in - 1) {
    const int64_t room = in - 1 - start;
    last = room < 0 ? 0 : room / d + 1;
  }
  if (first > k) first = k;
  if (last < first) last = first;
  *lo = first;
  *hi = last;
}

// Activation level q in [0, L] of one input value, in float32 with this
// operation order and no fused multiply-add (as the training layers do it):
//   unsigned: v = x * inv_step;   signed: v = (x * inv_step + L) * 0.5f;
//   q = round_half_to_even(clamp(v, 0, L)).   NaN gives 0.
// Clamping before rounding equals clamping after, as 0 and L are integers.
MMBINARY_HOST_DEVICE inline int32_t mbb_quantize_level(float x,
                                                       float inv_step,
                                                       float levels,
                                                       bool is_signed) {
#if defined(__CUDA_ARCH__)
  float v = __fmul_rn(x, inv_step);
  if (is_signed) v = __fmul_rn(__fadd_rn(v, levels), 0.5f);
  v = v > 0.f ? v : 0.f;
  v = v < levels ? v : levels;
  return static_cast<int32_t>(rintf(v));
#else
  float v = x * inv_step;
  if (is_signed) v = (v + levels) * 0.5f;
  v = v > 0.f ? v : 0.f;
  v = v < levels ? v : levels;
  // Round half to even for 0 <= v < 2^22 (default rounding mode): adding
  // 1.5 * 2^23 leaves no fraction bits. Vectorizes without SSE4.1.
  const float magic = 12582912.0f;
  return static_cast<int32_t>((v + magic) - magic);
#endif
}

// The float epilogue: float(acc) * scale + bias, two roundings, no FMA.
MMBINARY_HOST_DEVICE inline float mbb_epilogue(int64_t acc, float scale,
                                               float bias) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(__int2float_rn(static_cast<int>(acc)), scale),
                   bias);
#else
  const float value = static_cast<float>(static_cast<int32_t>(acc));
  const float scaled = value * scale;
  return scaled + bias;
#endif
}

// Portable popcount: the hardware instruction where the compile target has
// one, else a SWAR sum (baseline x86-64 has no popcnt, and the library call
// that __builtin_popcountll becomes there is slower).
inline int mbb_popcount_portable(uint64_t x) {
#if (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__POPCNT__) || !(defined(__x86_64__) || defined(__i386__)))
  return __builtin_popcountll(x);
#else
  x = x - ((x >> 1) & 0x5555555555555555ULL);
  x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return static_cast<int>((x * 0x0101010101010101ULL) >> 56);
#endif
}

// Mask of the real channel bits of word j of a group with Cg channels.
MMBINARY_HOST_DEVICE inline uint64_t mbb_word_mask(int64_t j, int64_t Cg) {
  const int64_t rest = Cg - j * kMBBWordBits;
  return rest >= kMBBWordBits ? ~0ULL : ((1ULL << rest) - 1ULL);
}

// Levels q of `len` inputs (see mbb_quantize_level); SSE2 where the target
// has it (every x86-64): cvtps2dq rounds half to even in the default
// rounding mode, and max(v, 0) is 0 for NaN as in the scalar code.
template <bool SIGNED>
inline void mbb_quantize_row_portable(const float* x, int32_t* q, int64_t len,
                                      float inv_step, float levels) {
  int64_t i = 0;
#if defined(__SSE2__) && !defined(__CUDACC__)
  const __m128 inv = _mm_set1_ps(inv_step), top = _mm_set1_ps(levels);
  const __m128 half = _mm_set1_ps(0.5f), zero = _mm_setzero_ps();
  for (; i + 4 <= len; i += 4) {
    __m128 v = _mm_mul_ps(_mm_loadu_ps(x + i), inv);
    if (SIGNED) v = _mm_mul_ps(_mm_add_ps(v, top), half);
    v = _mm_min_ps(_mm_max_ps(v, zero), top);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm_cvtps_epi32(v));
  }
#endif
  for (; i < len; ++i)
    q[i] = mbb_quantize_level(x[i], inv_step, levels, SIGNED);
}

// Everything a CPU conv kernel reads and writes, as plain pointers.
struct MBBConvArgs {
  MBBConvShape s;
  const uint64_t* act;         // (N, H, W, G, K, Wg) activation words
  const uint64_t* weight;      // (O, M, kh, kw, Wg) weight words
  const int32_t* act_sum;      // (N, Ho, Wo, G) sum of q over valid taps
  const int64_t* wsum_prefix;  // (O, kh + 1, kw + 1), signed mode only
  const int64_t* ky_range;     // (Ho, 2) valid kernel rows [lo, hi)
  const int64_t* kx_range;     // (Wo, 2) valid kernel columns [lo, hi)
  const int64_t* block_taps;   // (ceil(Wo / 4), 3) see mbb_block_taps
  int32_t* out_acc;            // accumulators, or null
  float* out;                  // epilogue output, or null
  bool channels_last;          // outputs (N, Ho, Wo, O), else (N, O, Ho, Wo)
  const float* scale;          // (O,) with `out`
  const float* bias;           // (O,) with `out`
  int64_t o_chunk;             // output channels per work item
};

// Index of output (n, o, y, x) in the layout the kernel writes.
inline int64_t mbb_out_index(const MBBConvShape& s, bool channels_last,
                             int64_t n, int64_t o, int64_t y, int64_t x) {
  return channels_last ? ((n * s.Ho + y) * s.Wo + x) * s.O + o
                       : ((n * s.O + o) * s.Ho + y) * s.Wo + x;
}

// Words of one row patch: ceil(Wo / 4) blocks of (K, kh * kw * Wg, 4).
inline int64_t mbb_patch_words(const MBBConvShape& s) {
  return (s.Wo + kMBBLanes - 1) / kMBBLanes * s.K * s.kh * s.kw * s.Wg *
         kMBBLanes;
}

// ---- pre-passes (cheap next to the convolution; portable code) ----------

// Valid tap ranges of every output row and column.
inline void mbb_tap_ranges(const MBBConvShape& s, int64_t* ky_range,
                           int64_t* kx_range) {
  for (int64_t y = 0; y < s.Ho; ++y)
    mbb_valid_taps(y, s.H, s.kh, s.sh, s.ph, s.dh, ky_range + 2 * y,
                   ky_range + 2 * y + 1);
  for (int64_t x = 0; x < s.Wo; ++x)
    mbb_valid_taps(x, s.W, s.kw, s.sw, s.pw, s.dw, kx_range + 2 * x,
                   kx_range + 2 * x + 1);
}

// Kernel columns a block of 4 output columns (b * 4 ...) reads:
// block_taps[3b + 0, 1] = the union [lo, hi) of the columns' valid ranges
// (or of the range that covers them), block_taps[3b + 2] = 1 when every
// column of the block exists and is valid on all of [lo, hi), so the patch
// needs no zero words.
inline void mbb_block_taps(const MBBConvShape& s, const int64_t* kx_range,
                           int64_t* block_taps) {
  const int64_t blocks = (s.Wo + kMBBLanes - 1) / kMBBLanes;
  for (int64_t b = 0; b < blocks; ++b) {
    int64_t lo = s.kw, hi = 0;
    bool full = true;
    for (int64_t x = b * kMBBLanes; x < (b + 1) * kMBBLanes; ++x) {
      if (x >= s.Wo || kx_range[2 * x] == kx_range[2 * x + 1]) {
        full = false;
        continue;
      }
      lo = kx_range[2 * x] < lo ? kx_range[2 * x] : lo;
      hi = kx_range[2 * x + 1] > hi ? kx_range[2 * x + 1] : hi;
    }
    if (lo >= hi) lo = hi = 0;
    for (int64_t x = b * kMBBLanes; full && x < (b + 1) * kMBBLanes; ++x)
      full = kx_range[2 * x] == lo && kx_range[2 * x + 1] == hi;
    block_taps[3 * b] = lo;
    block_taps[3 * b + 1] = hi;
    block_taps[3 * b + 2] = full ? 1 : 0;
  }
}

// act_sum[n, y, x, g] = sum of level_sum over the valid taps of output
// (y, x), for the output rows [row_begin, row_end) of the (N * Ho) axis.
inline void mbb_window_sums(const MBBConvShape& s, const int32_t* level_sum,
                            const int64_t* ky_range, const int64_t* kx_range,
                            int32_t* act_sum, int64_t row_begin,
                            int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t n = r / s.Ho, y = r % s.Ho;
    if (s.G == 1) {
      // The common case, a tap at a time over the whole row: tap kx is
      // valid for the outputs x whose input column x * sw + kx * dw - pw
      // lies inside the row, [x_lo, x_hi), so each pass is a run of
      // loads and adds the compiler vectorizes (integer sums: the same
      // totals as summing each output's valid taps).
      int32_t* dst = act_sum + r * s.Wo;
      for (int64_t x = 0; x < s.Wo; ++x) dst[x] = 0;
      for (int64_t ky = ky_range[2 * y]; ky < ky_range[2 * y + 1]; ++ky) {
        const int64_t iy = y * s.sh - s.ph + ky * s.dh;
        const int32_t* src_row = level_sum + (n * s.H + iy) * s.W;
        for (int64_t kx = 0; kx < s.kw; ++kx) {
          const int64_t offset = kx * s.dw - s.pw;  // input column of x = 0
          if (s.W - 1 - offset < 0) break;  // this tap and the next: none
          const int64_t x_lo =
              offset >= 0 ? 0 : (-offset + s.sw - 1) / s.sw;
          const int64_t last = (s.W - 1 - offset) / s.sw + 1;
          const int64_t x_hi = last < s.Wo ? last : s.Wo;
          if (x_lo >= x_hi) continue;
          const int32_t* src = src_row + x_lo * s.sw + offset;
          int32_t* out = dst + x_lo;
          const int64_t count = x_hi - x_lo;
          if (s.sw == 1) {
            for (int64_t i = 0; i < count; ++i) out[i] += src[i];
          } else {
            for (int64_t i = 0; i < count; ++i) out[i] += src[i * s.sw];
          }
        }
      }
      continue;
    }
    for (int64_t x = 0; x < s.Wo; ++x) {
      int32_t* dst = act_sum + (r * s.Wo + x) * s.G;
      for (int64_t g = 0; g < s.G; ++g) dst[g] = 0;
      for (int64_t ky = ky_range[2 * y]; ky < ky_range[2 * y + 1]; ++ky) {
        const int64_t iy = y * s.sh - s.ph + ky * s.dh;
        for (int64_t kx = kx_range[2 * x]; kx < kx_range[2 * x + 1]; ++kx) {
          const int64_t ix = x * s.sw - s.pw + kx * s.dw;
          const int32_t* src = level_sum + ((n * s.H + iy) * s.W + ix) * s.G;
          for (int64_t g = 0; g < s.G; ++g) dst[g] += src[g];
        }
      }
    }
  }
}

// Sum of the weight codes of output channel o over the taps
// [ky0, ky1) x [kx0, kx1).
inline int64_t mbb_weight_sum(const MBBConvShape& s, const int64_t* prefix,
                              int64_t o, int64_t ky0, int64_t ky1,
                              int64_t kx0, int64_t kx1) {
  const int64_t cols = s.kw + 1;
  const int64_t* p = prefix + o * (s.kh + 1) * cols;
  return p[ky1 * cols + kx1] - p[ky0 * cols + kx1] - p[ky1 * cols + kx0] +
         p[ky0 * cols + kx0];
}

// The portable CPU kernels (the x86 variants live in mbb_conv2d_x86.h).
namespace mbb_generic {
#define MMBINARY_MBB_POPCOUNT(x) ::mmbinary::mbb_popcount_portable(x)
#define MMBINARY_MBB_QUANTIZE_ROW ::mmbinary::mbb_quantize_row_portable
#include "mbb_conv2d_kernels.h"
#undef MMBINARY_MBB_QUANTIZE_ROW
#undef MMBINARY_MBB_POPCOUNT
}  // namespace mbb_generic

}  // namespace mmbinary
