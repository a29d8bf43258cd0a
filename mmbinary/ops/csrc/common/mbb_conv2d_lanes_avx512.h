// Copyright (c) mmbinary contributors. All rights reserved.
// The channel-lane AVX-512 kernel of the packed MBB conv (groups == 1):
// output channels in the vector lanes, channels-last everywhere.
//
//   * quantize + pack from channels-last float input: 16 channels of one
//     pixel per vector, the level bits straight from vptestmd masks (no
//     transpose), the pixel's level sum and a NaN flag on the way;
//   * the convolution: a tile is 16 output channels (two vectors of eight
//     64-bit lanes) x P output columns; for each tap and word, the weight
//     words of the 16 channels are two vector loads, each column's
//     activation word one broadcast, then AND + vpopcntq + add. No row
//     patch: the activation words are read where they are, a tap outside
//     the input reads a zero word;
//   * the epilogue in registers: the exact accumulator from S_wa, the
//     window level sum and (signed) the per-channel weight sums of the
//     valid taps, then float(acc) * scale + bias (two roundings, no FMA),
//     stored as 8 contiguous channels of the (N, Ho, Wo, O) output.
//
// Weights are read in the lane layout (ceil(O / 8), M, kh * kw, Wg, 8):
// eight output channels' words side by side (mbb_weight_lanes builds it
// from the standard weight words). The integer result is the same as the
// other kernels', word for word.
#pragma once

#include <cmath>

#include "mbb_conv2d.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MMBINARY_MBB_HAVE_LANES_AVX512 1
#include <immintrin.h>

namespace mmbinary {

// Output channels per weight vector (64-bit lanes of a 512-bit vector).
constexpr int64_t kMBBChannelLanes = 8;

// Everything the channel-lane kernel reads and writes.
struct MBBLaneArgs {
  MBBConvShape s;                // groups == 1
  const uint64_t* act;           // (N, H, W, K, Wg) activation words
  const uint64_t* weight_lanes;  // (ceil(O / 8), M, kh * kw, Wg, 8)
  const int32_t* act_sum;        // (N, Ho, Wo) level sums of valid taps
  const int32_t* wsum_prefix;    // (kh + 1, kw + 1, O8), signed mode
  const int64_t* ky_range;       // (Ho, 2)
  const int64_t* kx_range;       // (Wo, 2)
  const uint64_t* zero_words;    // K * Wg zero words (padded taps)
  float* out;                    // (N, Ho, Wo, O) float, or null
  // Write whole 64-byte lines of `out` around the caches (an output much
  // larger than the caches is not read back soon; O % 16 == 0 and `out`
  // 64-byte aligned).
  bool stream_out = false;
  int32_t* out_acc;              // (N, Ho, Wo, O) accumulators, or null
  const float* scale;            // (O8,) zero padded, with `out`
  const float* bias;             // (O8,) zero padded, with `out`
  int64_t o_chunk;               // output channels per work item (x 16)
  // The float value of an output: epilogue, + residual, then the
  // activation clamp: min(max(value, act_min), act_max) (ReLU: 0, inf;
  // ReLU6: 0, 6), each side skipped where it is infinite.
  const float* residual;         // (N, Ho, Wo, O) added, or null
  float act_min, act_max;
  // Packed output for a following MBB layer (with or without `out`): the
  // float value quantized with the next layer's out_inv_step / out_signed
  // into (N, Ho, Wo, out_K, out_Wg) words, zero-filled by the caller;
  // written a byte (8 channels) at a time.
  uint8_t* out_words;
  int64_t out_K, out_Wg;
  float out_inv_step;
  bool out_signed;
  // Words straight from the accumulator (out_K <= 2, no float output, no
  // residual): level j is reached where d * acc >= thresholds[j - 1][o],
  // d = -1 for the channels set in descending[o / 8] (a decreasing
  // epilogue), else 1. See mbb_level_thresholds.
  const int64_t* thresholds;     // (2^out_K - 1, O8), or null
  const uint8_t* descending;     // (O8 / 8,) channel bit masks
};

// The level the words path gives an accumulator of channel o: the float
// epilogue, relu, then the next layer's quantization, in the vector
// kernel's arithmetic (float32, two roundings, round half to even).
inline int32_t mbb_epilogue_level(int64_t acc, float scale, float bias,
                                  float act_min, float act_max,
                                  float inv_step, int64_t K,
                                  bool is_signed) {
  float value = mbb_epilogue(acc, scale, bias);
  value = value > act_min ? value : act_min;  // as vmaxps / vminps
  value = value < act_max ? value : act_max;
  return mbb_quantize_level(value, inv_step,
                            static_cast<float>((1 << K) - 1), is_signed);
}

// Integer thresholds of the epilogue's levels for channels [o_begin,
// o_end): the level is monotone in acc (every step is), so it is the
// number of thresholds d * acc reaches. Accumulators lie in [-bound,
// bound]; a level never reached gets bound + 1, one always reached
// -bound. thresholds: (L, O8); descending: (O8 / 8,) zeroed by the caller.
inline void mbb_level_thresholds(const float* scale, const float* bias,
                                 float act_min, float act_max,
                                 float inv_step, int64_t K,
                                 bool is_signed, int64_t bound, int64_t O8,
                                 int64_t* thresholds, uint8_t* descending,
                                 int64_t o_begin, int64_t o_end) {
  const int64_t L = (int64_t{1} << K) - 1;
  for (int64_t o = o_begin; o < o_end; ++o) {
    const auto level = [&](int64_t acc) {
      return mbb_epilogue_level(acc, scale[o], bias[o], act_min, act_max,
                                inv_step, K, is_signed);
    };
    const bool down = level(-bound) > level(bound);
    if (down) descending[o / 8] |= static_cast<uint8_t>(1u << (o % 8));
    const int64_t d = down ? -1 : 1;
    for (int64_t j = 1; j <= L; ++j) {
      // Smallest t in [-bound, bound + 1] with level(d * t) >= j.
      int64_t lo = -bound, hi = bound + 1;
      while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (level(d * mid) >= j)
          hi = mid;
        else
          lo = mid + 1;
      }
      thresholds[(j - 1) * O8 + o] = lo;
    }
  }
}

// Output channels rounded up to whole weight vectors.
inline int64_t mbb_lane_channels(int64_t O) {
  return (O + kMBBChannelLanes - 1) / kMBBChannelLanes * kMBBChannelLanes;
}

// Weight words (O, M, kh, kw, Wg) -> lane layout (O8 / 8, M, T, Wg, 8),
// channels [o_begin, o_end) of O8; channels >= O are zero words.
inline void mbb_weight_lanes(const MBBConvShape& s, const uint64_t* weight,
                             uint64_t* lanes, int64_t o_begin,
                             int64_t o_end) {
  const int64_t per_channel = s.M * s.kh * s.kw * s.Wg;
  for (int64_t o = o_begin; o < o_end; ++o) {
    const int64_t block = o / kMBBChannelLanes, lane = o % kMBBChannelLanes;
    uint64_t* dst = lanes + block * per_channel * kMBBChannelLanes + lane;
    const uint64_t* src = weight + o * per_channel;
    for (int64_t i = 0; i < per_channel; ++i)
      dst[i * kMBBChannelLanes] = o < s.O ? src[i] : 0;
  }
}

// Channel-minor weight-sum prefix table (kh + 1, kw + 1, O8) int32 from the
// (O, kh + 1, kw + 1) int64 one of weight_sum_prefix; |sums| < 2^31 by
// the accumulator bound.
inline void mbb_weight_prefix_lanes(const MBBConvShape& s,
                                    const int64_t* prefix, int32_t* lanes,
                                    int64_t O8) {
  const int64_t cells = (s.kh + 1) * (s.kw + 1);
  for (int64_t c = 0; c < cells; ++c)
    for (int64_t o = 0; o < O8; ++o)
      lanes[c * O8 + o] =
          o < s.O ? static_cast<int32_t>(prefix[o * cells + c]) : 0;
}

}  // namespace mmbinary

#if defined(__clang__)
#pragma clang attribute push(                                               \
    __attribute__((target(                                                  \
        "avx2,popcnt,avx512f,avx512vl,avx512bw,avx512vpopcntdq"))),        \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,popcnt,avx512f,avx512vl,avx512bw,avx512vpopcntdq")
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace mmbinary {
namespace mbb_lanes_avx512 {

// ---- quantize + pack, channels-last input ---------------------------------

// Pixels [begin, end) of the flattened (N * H * W) axis. x: (N*H*W, C)
// float; out: (N*H*W, K, Wg) words; level_sum: (N*H*W,) sum of q over the
// channels. Returns whether a NaN was seen.
template <int K, bool SIGNED>
inline bool pack_pixels_k(const float* x, uint64_t* out, int32_t* level_sum,
                          int64_t C, int64_t Wg, float inv_step,
                          int64_t begin, int64_t end) {
  const float levels = static_cast<float>((1 << K) - 1);
  const __m512 inv = _mm512_set1_ps(inv_step), top = _mm512_set1_ps(levels);
  const __m512 half = _mm512_set1_ps(0.5f), zero = _mm512_setzero_ps();
  __mmask16 nan = 0;
  for (int64_t p = begin; p < end; ++p) {
    const float* row = x + p * C;
    uint64_t* dst = out + p * K * Wg;
    __m512i qsum = _mm512_setzero_si512();
    for (int64_t j = 0; j < Wg; ++j) {
      uint64_t words[K];
      for (int k = 0; k < K; ++k) words[k] = 0;
      for (int64_t part = 0; part < 4; ++part) {
        const int64_t c = j * kMBBWordBits + part * 16;
        if (c >= C) break;
        const int64_t rest = C - c;
        const __mmask16 lanes =
            rest >= 16 ? static_cast<__mmask16>(0xFFFF)
                       : static_cast<__mmask16>((1u << rest) - 1u);
        const __m512 value = _mm512_maskz_loadu_ps(lanes, row + c);
        nan |= _mm512_mask_cmp_ps_mask(lanes, value, value, _CMP_UNORD_Q);
        __m512 v = _mm512_mul_ps(value, inv);
        if (SIGNED) v = _mm512_mul_ps(_mm512_add_ps(v, top), half);
        // max(v, 0) is 0 for NaN, as in mbb_quantize_level.
        v = _mm512_min_ps(_mm512_max_ps(v, zero), top);
        // Round half to even (the default rounding mode).
        const __m512i q = _mm512_maskz_mov_epi32(lanes, _mm512_cvtps_epi32(v));
        qsum = _mm512_add_epi32(qsum, q);
        for (int k = 0; k < K; ++k) {
          const __mmask16 bits =
              _mm512_test_epi32_mask(q, _mm512_set1_epi32(1 << k));
          words[k] |= static_cast<uint64_t>(bits) << (part * 16);
        }
      }
      for (int k = 0; k < K; ++k) dst[k * Wg + j] = words[k];
    }
    level_sum[p] = _mm512_reduce_add_epi32(qsum);
  }
  return nan != 0;
}

inline bool pack_pixels(const float* x, uint64_t* out, int32_t* level_sum,
                        const MBBConvShape& s, float inv_step, int64_t begin,
                        int64_t end) {
#define MMBINARY_MBB_LANE_PACK_CASE(KB)                                    \
  case KB:                                                                 \
    return s.is_signed ? pack_pixels_k<KB, true>(x, out, level_sum, s.C,   \
                                                 s.Wg, inv_step, begin,    \
                                                 end)                      \
                       : pack_pixels_k<KB, false>(x, out, level_sum, s.C,  \
                                                  s.Wg, inv_step, begin,   \
                                                  end);
  switch (s.K) {
    MMBINARY_MBB_LANE_PACK_CASE(1)
    MMBINARY_MBB_LANE_PACK_CASE(2)
    MMBINARY_MBB_LANE_PACK_CASE(3)
    MMBINARY_MBB_LANE_PACK_CASE(4)
    MMBINARY_MBB_LANE_PACK_CASE(5)
    MMBINARY_MBB_LANE_PACK_CASE(6)
    MMBINARY_MBB_LANE_PACK_CASE(7)
    MMBINARY_MBB_LANE_PACK_CASE(8)
    default:
      return false;
  }
#undef MMBINARY_MBB_LANE_PACK_CASE
}

// ---- convolution ----------------------------------------------------------

// Taps a row context holds (kernels up to 8 x 8 run on this kernel).
constexpr int64_t kMaxLaneTaps = 64;

// What every tile of one output row (n, y) shares, computed once a row.
struct LaneRow {
  int64_t n, y;
  const uint64_t* act_n;   // sample n's activation words
  int64_t taps;            // valid taps of the row: rows [ky0, ky1) x kw
  int64_t ky0;
  int64_t weight_tap[kMaxLaneTaps];  // word offset of tap t in a block
  int64_t act_tap[kMaxLaneTaps];     // word offset of tap t at column 0
  int64_t col_step;        // words from one output column to the next
  int64_t block_words;     // words of one 8-channel weight block
  int64_t weight_plane;    // words from weight plane m to m + 1
  int64_t pixel;           // index of (n, y, 0) in (N, Ho, Wo)
  // Signed mode: the prefix cells of the interior columns' tap rectangle.
  const int32_t *c00, *c01, *c10, *c11;
};

inline void make_lane_row(const MBBLaneArgs& a, int64_t n, int64_t y,
                          LaneRow* r) {
  const MBBConvShape& s = a.s;
  const int64_t pixel_words = s.K * s.Wg;
  r->n = n, r->y = y;
  r->act_n = a.act + n * s.H * s.W * pixel_words;
  const int64_t ky0 = a.ky_range[2 * y], ky1 = a.ky_range[2 * y + 1];
  r->ky0 = ky0;
  r->taps = 0;
  for (int64_t ky = ky0; ky < ky1; ++ky) {
    const int64_t iy = y * s.sh - s.ph + ky * s.dh;
    for (int64_t kx = 0; kx < s.kw; ++kx) {
      r->weight_tap[r->taps] = (ky * s.kw + kx) * s.Wg * kMBBChannelLanes;
      r->act_tap[r->taps] = (iy * s.W - s.pw + kx * s.dw) * pixel_words;
      ++r->taps;
    }
  }
  r->col_step = s.sw * pixel_words;
  r->block_words = s.M * s.kh * s.kw * s.Wg * kMBBChannelLanes;
  r->weight_plane = s.kh * s.kw * s.Wg * kMBBChannelLanes;
  r->pixel = (n * s.Ho + y) * s.Wo;
  r->c00 = r->c01 = r->c10 = r->c11 = nullptr;
  if (s.is_signed) {
    const int64_t O8 = mbb_lane_channels(s.O), cols = s.kw + 1;
    r->c11 = a.wsum_prefix + (ky1 * cols + s.kw) * O8;
    r->c01 = a.wsum_prefix + (ky0 * cols + s.kw) * O8;
    r->c10 = a.wsum_prefix + (ky1 * cols) * O8;
    r->c00 = a.wsum_prefix + (ky0 * cols) * O8;
  }
}

// What a call writes, fixed for the whole call (a template argument, so
// the epilogue has no mode branches): next-layer words from integer
// thresholds, int32 accumulators, or the float epilogue (with optional
// residual, clamp and next-layer words).
enum LaneEpilogue { kLaneThresholds = 0, kLaneAcc = 1, kLaneFloat = 2 };

inline LaneEpilogue lane_epilogue(const MBBLaneArgs& a) {
  if (a.thresholds != nullptr) return kLaneThresholds;
  return a.out_acc != nullptr ? kLaneAcc : kLaneFloat;
}

// Writes the outputs of channels [o, o + 8 * OV) at column x from the S_wa
// vectors sum0, sum1 (one 64-bit lane per channel; sum1 unused for OV 1).
// `interior`: the column reads every kernel column (the row's tap
// rectangle).
template <int OV, int E>
__attribute__((always_inline)) inline void finish_column(
    const MBBLaneArgs& a, const LaneRow& r, int64_t x, int64_t o,
    bool interior, __m512i sum0, __m512i sum1) {
  const MBBConvShape& s = a.s;
  const int64_t pixel = r.pixel + x;
  // Mmax * S_a, once per column; the product fits 32 x 32 -> 64 bits.
  const __m512i window_term =
      _mm512_mul_epi32(_mm512_set1_epi64(a.act_sum[pixel]),
                       _mm512_set1_epi64((int64_t{1} << s.M) - 1));
  const int32_t *c00 = r.c00, *c01 = r.c01, *c10 = r.c10, *c11 = r.c11;
  if (s.is_signed && !interior) {
    const int64_t O8 = mbb_lane_channels(s.O), cols = s.kw + 1;
    const int64_t ky0 = r.ky0, ky1 = a.ky_range[2 * r.y + 1];
    const int64_t kx0 = a.kx_range[2 * x], kx1 = a.kx_range[2 * x + 1];
    c11 = a.wsum_prefix + (ky1 * cols + kx1) * O8;
    c01 = a.wsum_prefix + (ky0 * cols + kx1) * O8;
    c10 = a.wsum_prefix + (ky1 * cols + kx0) * O8;
    c00 = a.wsum_prefix + (ky0 * cols + kx0) * O8;
  }
  __mmask8 level_bits[2][2] = {{0, 0}, {0, 0}};  // thresholds: [k][v]
  __m256i acc_half[2];  // float epilogue of 16 channels: both halves
  for (int v = 0; v < OV; ++v) {
    const int64_t oc = o + v * kMBBChannelLanes;
    if (OV == 1 && oc >= s.O) break;  // (OV 2: both vectors hold channels)
    const __m512i sum = v == 0 ? sum0 : sum1;
    // wq = 2 * S_wa - Mmax * S_a.
    __m512i acc = _mm512_sub_epi64(_mm512_add_epi64(sum, sum), window_term);
    if (s.is_signed) {
      const __m256i rect = _mm256_add_epi32(
          _mm256_sub_epi32(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c11 + oc)),
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c01 + oc))),
          _mm256_sub_epi32(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c00 + oc)),
              _mm256_loadu_si256(
                  reinterpret_cast<const __m256i*>(c10 + oc))));
      acc = _mm512_sub_epi64(
          _mm512_add_epi64(acc, acc),
          _mm512_mul_epi32(_mm512_cvtepi32_epi64(rect),
                           _mm512_set1_epi64((int64_t{1} << s.K) - 1)));
    }
    const __m256i acc32 = _mm512_cvtepi64_epi32(acc);
    if constexpr (E == kLaneFloat && OV == 2) {
      acc_half[v] = acc32;  // (below, 16 channels a vector)
      continue;
    }
    const int64_t rest = s.O - oc;
    const __mmask8 lanes = rest >= 8 ? static_cast<__mmask8>(0xFF)
                                     : static_cast<__mmask8>((1u << rest) - 1u);
    const int64_t at = pixel * s.O + oc;
    // (Whole vectors with plain stores: masked ones are slow on Zen 4.)
    if constexpr (E == kLaneThresholds) {  // words from integer thresholds
      const __mmask8 down =
          static_cast<__mmask8>(a.descending[oc / kMBBChannelLanes]);
      const __m512i t = _mm512_mask_sub_epi64(acc, down,
                                              _mm512_setzero_si512(), acc);
      const int64_t O8 = mbb_lane_channels(s.O);
      const __mmask8 m1 = _mm512_mask_cmpge_epi64_mask(
          lanes, t, _mm512_loadu_si512(a.thresholds + oc));
      if (a.out_K == 1) {
        level_bits[0][v] = m1;
      } else {  // K = 2: q = m1 + m2 + m3 (nested masks)
        const __mmask8 m2 = _mm512_mask_cmpge_epi64_mask(
            lanes, t, _mm512_loadu_si512(a.thresholds + O8 + oc));
        const __mmask8 m3 = _mm512_mask_cmpge_epi64_mask(
            lanes, t, _mm512_loadu_si512(a.thresholds + 2 * O8 + oc));
        level_bits[0][v] = static_cast<__mmask8>(m1 ^ m2 ^ m3);
        level_bits[1][v] = m2;
      }
      continue;
    }
    if constexpr (E == kLaneAcc) {
      if (rest >= 8)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(a.out_acc + at), acc32);
      else
        _mm256_mask_storeu_epi32(a.out_acc + at, lanes, acc32);
      continue;
    }
    // float(acc) * scale + bias: two roundings (no FMA contraction).
    const __m256 scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(acc32),
                                        _mm256_loadu_ps(a.scale + oc));
    __m256 value = _mm256_add_ps(scaled, _mm256_loadu_ps(a.bias + oc));
    if (a.residual != nullptr)
      value = _mm256_add_ps(value,
                            rest >= 8 ? _mm256_loadu_ps(a.residual + at)
                                      : _mm256_maskz_loadu_ps(
                                            lanes, a.residual + at));
    if (a.act_min != -INFINITY)
      value = _mm256_max_ps(value, _mm256_set1_ps(a.act_min));
    if (a.act_max != INFINITY)
      value = _mm256_min_ps(value, _mm256_set1_ps(a.act_max));
    if (a.out != nullptr) {
      if (rest >= 8)
        _mm256_storeu_ps(a.out + at, value);
      else
        _mm256_mask_storeu_ps(a.out + at, lanes, value);
    }
    if (a.out_words == nullptr) continue;
    // The next layer's levels (as mbb_quantize_level), then their bits.
    const __m256 top =
        _mm256_set1_ps(static_cast<float>((1 << a.out_K) - 1));
    __m256 level = _mm256_mul_ps(value, _mm256_set1_ps(a.out_inv_step));
    if (a.out_signed)
      level = _mm256_mul_ps(_mm256_add_ps(level, top), _mm256_set1_ps(0.5f));
    level = _mm256_min_ps(_mm256_max_ps(level, _mm256_setzero_ps()), top);
    const __m256i q = _mm256_cvtps_epi32(level);
    uint8_t* dst = a.out_words + pixel * a.out_K * a.out_Wg * 8 + oc / 8;
    for (int64_t k = 0; k < a.out_K; ++k)
      dst[k * a.out_Wg * 8] = static_cast<uint8_t>(
          _mm256_test_epi32_mask(q, _mm256_set1_epi32(1 << k)) & lanes);
  }
  if constexpr (E == kLaneFloat && OV == 2) {
    // The same operations as the 8-channel code, 16 channels a vector.
    const int64_t rest = s.O - o;  // > 8
    const bool full = rest >= 16;
    const __mmask16 lanes =
        full ? static_cast<__mmask16>(0xFFFF)
             : static_cast<__mmask16>((1u << rest) - 1u);
    const __m512i acc16 = _mm512_inserti64x4(
        _mm512_castsi256_si512(acc_half[0]), acc_half[1], 1);
    const int64_t at = pixel * s.O + o;
    // float(acc) * scale + bias: two roundings (no FMA contraction); the
    // padded scale and bias hold 16 channels from o.
    const __m512 scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(acc16),
                                        _mm512_loadu_ps(a.scale + o));
    __m512 value = _mm512_add_ps(scaled, _mm512_loadu_ps(a.bias + o));
    if (a.residual != nullptr) {
      // The same channels two tiles on: the residual streams from memory
      // (pixels are 4 * O bytes apart, too far for the hardware
      // prefetcher to follow).
      _mm_prefetch(reinterpret_cast<const char*>(a.residual + at + 16 * s.O),
                   _MM_HINT_T0);
    }
    if (a.residual != nullptr)
      value = _mm512_add_ps(value,
                            full ? _mm512_loadu_ps(a.residual + at)
                                 : _mm512_maskz_loadu_ps(lanes,
                                                         a.residual + at));
    if (a.act_min != -INFINITY)
      value = _mm512_max_ps(value, _mm512_set1_ps(a.act_min));
    if (a.act_max != INFINITY)
      value = _mm512_min_ps(value, _mm512_set1_ps(a.act_max));
    if (a.out != nullptr) {
      if (a.stream_out)
        _mm512_stream_ps(a.out + at, value);
      else if (full)
        _mm512_storeu_ps(a.out + at, value);
      else
        _mm512_mask_storeu_ps(a.out + at, lanes, value);
    }
    if (a.out_words != nullptr) {
      const __m512 top =
          _mm512_set1_ps(static_cast<float>((1 << a.out_K) - 1));
      __m512 level = _mm512_mul_ps(value, _mm512_set1_ps(a.out_inv_step));
      if (a.out_signed)
        level =
            _mm512_mul_ps(_mm512_add_ps(level, top), _mm512_set1_ps(0.5f));
      level = _mm512_min_ps(_mm512_max_ps(level, _mm512_setzero_ps()), top);
      const __m512i q = _mm512_cvtps_epi32(level);
      uint8_t* dst = a.out_words + pixel * a.out_K * a.out_Wg * 8 + o / 8;
      for (int64_t k = 0; k < a.out_K; ++k) {
        const uint16_t bits = static_cast<uint16_t>(
            _mm512_test_epi32_mask(q, _mm512_set1_epi32(1 << k)) & lanes);
        __builtin_memcpy(dst + k * a.out_Wg * 8, &bits, sizeof(bits));
      }
    }
  }
  if constexpr (E == kLaneThresholds) {
    // The channel bytes of the column, one store per plane (two bytes for
    // 16 channels).
    uint8_t* dst = a.out_words + pixel * a.out_K * a.out_Wg * 8 + o / 8;
    for (int64_t k = 0; k < a.out_K; ++k) {
      uint8_t* plane = dst + k * a.out_Wg * 8;
      if (OV == 2) {
        const uint16_t both = static_cast<uint16_t>(
            level_bits[k][0] | (static_cast<unsigned>(level_bits[k][1]) << 8));
        __builtin_memcpy(plane, &both, sizeof(both));
      } else {
        plane[0] = static_cast<uint8_t>(level_bits[k][0]);
      }
    }
  }
}

// AND + popcount of one weight plane against one activation plane, over
// the taps, into count[v][p]. `col[p]`: the P columns' activation words
// (plane k, column base) for tap 0's offsets.
template <int OV, int P>
__attribute__((always_inline)) inline void count_planes(
    const LaneRow& r, const uint64_t* weight, const uint64_t* const (&col)[P],
    int64_t Wg, __m512i (&count)[OV][P]) {
  for (int64_t t = 0; t < r.taps; ++t) {
    const uint64_t* wp = weight + r.weight_tap[t];
    const int64_t at = r.act_tap[t];
    for (int64_t j = 0; j < Wg; ++j) {
      __m512i w[OV];
      for (int v = 0; v < OV; ++v)
        w[v] = _mm512_loadu_si512(wp + v * r.block_words +
                                  j * kMBBChannelLanes);
      for (int p = 0; p < P; ++p) {
        const __m512i act_word =
            _mm512_set1_epi64(static_cast<long long>(col[p][at + j]));
        for (int v = 0; v < OV; ++v)
          count[v][p] = _mm512_add_epi64(
              count[v][p],
              _mm512_popcnt_epi64(_mm512_and_si512(w[v], act_word)));
      }
    }
  }
}

// Interior columns x0 .. x0 + P - 1 (every kernel column valid) of
// channels [o, o + 8 * OV): S_wa, then the outputs. FM, FK: the weight and
// activation bits known at compile time (one pass over the taps, every
// plane pair's counts shifted into place as they come: the words are read
// once), or 0, 0: any bits, one pass per plane pair.
//
// WG > 0: the layer has WG words per plane and stride 1 along the row (so
// the column step is FK * WG words), known at compile time: every
// activation word of the tile is at a constant offset from one pointer.
template <int OV, int P, int FM, int FK, int E, int WG>
__attribute__((always_inline)) inline void lane_tile(const MBBLaneArgs& a,
                                                     const LaneRow& r,
                                                     int64_t x0, int64_t o) {
  const MBBConvShape& s = a.s;
  const uint64_t* block =
      a.weight_lanes + (o / kMBBChannelLanes) * r.block_words;
  const uint64_t* col[P];
  __m512i total[OV][P];
  for (int v = 0; v < OV; ++v)
    for (int p = 0; p < P; ++p) total[v][p] = _mm512_setzero_si512();
  if constexpr (FM > 0) {
    // One counter per plane-pair weight 2^(m + k): no shift per count.
    constexpr int S = FM + FK - 1;
    __m512i part[OV][P][S];
    for (int v = 0; v < OV; ++v)
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < S; ++q) part[v][p][q] = _mm512_setzero_si512();
    const int64_t Wg = WG > 0 ? WG : s.Wg;
    const int64_t col_step = WG > 0 ? FK * WG : r.col_step;
    const uint64_t* act0 = r.act_n + x0 * r.col_step;
    for (int64_t t = 0; t < r.taps; ++t) {
      const uint64_t* wp = block + r.weight_tap[t];
      const uint64_t* at = act0 + r.act_tap[t];
      for (int64_t j = 0; j < Wg; ++j) {
        __m512i w[OV][FM];
        for (int v = 0; v < OV; ++v)
          for (int m = 0; m < FM; ++m)
            w[v][m] = _mm512_loadu_si512(wp + m * r.weight_plane +
                                         v * r.block_words +
                                         j * kMBBChannelLanes);
        for (int p = 0; p < P; ++p) {
          for (int k = 0; k < FK; ++k) {
            const __m512i act_word = _mm512_set1_epi64(
                static_cast<long long>(at[p * col_step + k * Wg + j]));
            for (int v = 0; v < OV; ++v)
              for (int m = 0; m < FM; ++m)
                part[v][p][m + k] = _mm512_add_epi64(
                    part[v][p][m + k],
                    _mm512_popcnt_epi64(_mm512_and_si512(w[v][m], act_word)));
          }
        }
      }
    }
    for (int v = 0; v < OV; ++v)
      for (int p = 0; p < P; ++p) {
        total[v][p] = part[v][p][0];
        for (int q = 1; q < S; ++q)
          total[v][p] = _mm512_add_epi64(
              total[v][p], _mm512_slli_epi64(part[v][p][q], q));
      }
  } else {
    __m512i count[OV][P];
    for (int64_t m = 0; m < s.M; ++m) {
      for (int64_t k = 0; k < s.K; ++k) {
        for (int p = 0; p < P; ++p)
          col[p] = r.act_n + (x0 + p) * r.col_step + k * s.Wg;
        for (int v = 0; v < OV; ++v)
          for (int p = 0; p < P; ++p) count[v][p] = _mm512_setzero_si512();
        count_planes<OV, P>(r, block + m * r.weight_plane, col, s.Wg, count);
        const __m128i shift = _mm_cvtsi64_si128(m + k);
        for (int v = 0; v < OV; ++v)
          for (int p = 0; p < P; ++p)
            total[v][p] = _mm512_add_epi64(
                total[v][p], _mm512_sll_epi64(count[v][p], shift));
      }
    }
  }
  for (int p = 0; p < P; ++p)
    finish_column<OV, E>(a, r, x0 + p, o, true, total[0][p],
                         total[OV - 1][p]);
}

// One border column x (some kernel columns fall in the padding) of
// channels [o, o + 8 * OV): the taps outside the input are skipped.
template <int OV, int E>
__attribute__((always_inline)) inline void lane_border_column(const MBBLaneArgs& a, const LaneRow& r,
                               int64_t x, int64_t o) {
  const MBBConvShape& s = a.s;
  const int64_t kx0 = a.kx_range[2 * x], kx1 = a.kx_range[2 * x + 1];
  const uint64_t* block =
      a.weight_lanes + (o / kMBBChannelLanes) * r.block_words;
  __m512i total[OV];
  for (int v = 0; v < OV; ++v) total[v] = _mm512_setzero_si512();
  for (int64_t m = 0; m < s.M; ++m) {
    for (int64_t k = 0; k < s.K; ++k) {
      __m512i count[OV];
      for (int v = 0; v < OV; ++v) count[v] = _mm512_setzero_si512();
      const uint64_t* act = r.act_n + x * r.col_step + k * s.Wg;
      for (int64_t t = 0; t < r.taps; ++t) {
        const int64_t kx = t % s.kw;
        if (kx < kx0 || kx >= kx1) continue;
        const uint64_t* wp = block + m * r.weight_plane + r.weight_tap[t];
        for (int64_t j = 0; j < s.Wg; ++j) {
          const __m512i act_word = _mm512_set1_epi64(
              static_cast<long long>(act[r.act_tap[t] + j]));
          for (int v = 0; v < OV; ++v)
            count[v] = _mm512_add_epi64(
                count[v], _mm512_popcnt_epi64(_mm512_and_si512(
                              _mm512_loadu_si512(wp + v * r.block_words +
                                                 j * kMBBChannelLanes),
                              act_word)));
        }
      }
      const __m128i shift = _mm_cvtsi64_si128(m + k);
      for (int v = 0; v < OV; ++v)
        total[v] = _mm512_add_epi64(total[v],
                                    _mm512_sll_epi64(count[v], shift));
    }
  }
  finish_column<OV, E>(a, r, x, o, false, total[0], total[OV - 1]);
}

// Columns per interior tile: 16 channels x 8 columns of counters for
// binary layers, x 4 for multi-bit ones (one counter per plane-pair
// weight, or counts and totals, live at once).
template <int FM, int FK>
constexpr int lane_columns_per_tile() {
  return FM * FK == 1 ? 8 : 4;
}

// Interior columns [x0, x0 + count), count <= P.
template <int OV, int P, int FM, int FK, int E, int WG>
__attribute__((always_inline)) inline void lane_interior(const MBBLaneArgs& a, const LaneRow& r,
                          int64_t x0, int64_t count, int64_t o) {
  if constexpr (P > 1) {
    if (count < P) {
      lane_interior<OV, P - 1, FM, FK, E, WG>(a, r, x0, count, o);
      return;
    }
  }
  lane_tile<OV, P, FM, FK, E, WG>(a, r, x0, o);
}

// Channels [o_begin, o_end) at columns [x0, x0 + count) of one row, 16
// channels at a time (8 for the last odd block): the outputs of a pixel
// are written together, so the stores stream.
template <int FM, int FK, int E, int WG>
__attribute__((always_inline)) inline void lane_columns(const MBBLaneArgs& a, const LaneRow& r, int64_t x0,
                         int64_t count, bool interior, int64_t o_begin,
                         int64_t o_end) {
  constexpr int P = lane_columns_per_tile<FM, FK>();
  for (int64_t o = o_begin; o < o_end; o += 2 * kMBBChannelLanes) {
    const bool two = o + kMBBChannelLanes < o_end;
    if (interior) {
      if (two)
        lane_interior<2, P, FM, FK, E, WG>(a, r, x0, count, o);
      else
        lane_interior<1, P, FM, FK, E, WG>(a, r, x0, count, o);
    } else {
      for (int64_t x = x0; x < x0 + count; ++x) {
        if (two)
          lane_border_column<2, E>(a, r, x, o);
        else
          lane_border_column<1, E>(a, r, x, o);
      }
    }
  }
}

// One output row of channels [o_begin, o_end): border columns one by one,
// the interior ones (contiguous, between them) tile by tile.
// (Not inlined: one function per bits and epilogue keeps each small
// enough for its counters and pointers to stay in registers. The local
// copies tell the compiler that stores through the output pointers cannot
// change them.)
template <int FM, int FK, int E, int WG>
__attribute__((noinline)) void lane_row(const MBBLaneArgs& args,
                                        const LaneRow& row, int64_t o_begin,
                                        int64_t o_end, int64_t interior_begin,
                                        int64_t interior_end) {
  const MBBLaneArgs a = args;
  const LaneRow r = row;
  constexpr int P = lane_columns_per_tile<FM, FK>();
  if (interior_begin > 0)
    lane_columns<FM, FK, E, WG>(a, r, 0, interior_begin, false, o_begin,
                                o_end);
  for (int64_t x0 = interior_begin; x0 < interior_end; x0 += P) {
    const int64_t count = interior_end - x0 < P ? interior_end - x0 : P;
    lane_columns<FM, FK, E, WG>(a, r, x0, count, true, o_begin, o_end);
  }
  if (interior_end < a.s.Wo)
    lane_columns<FM, FK, E, WG>(a, r, interior_end, a.s.Wo - interior_end,
                                false, o_begin, o_end);
}

// The interior columns [begin, end): those reading every kernel column
// (contiguous, as the valid range only shrinks at the edges).
inline void lane_interior_columns(const MBBLaneArgs& a, int64_t* begin,
                                  int64_t* end) {
  const MBBConvShape& s = a.s;
  int64_t first = s.Wo, last = 0;
  for (int64_t x = 0; x < s.Wo; ++x) {
    if (a.kx_range[2 * x] == 0 && a.kx_range[2 * x + 1] == s.kw) {
      first = x < first ? x : first;
      last = x + 1;
    }
  }
  if (first >= last) first = last = 0;
  *begin = first, *end = last;
}

// One row of channels [o_begin, o_end) with the bits and the epilogue as
// template arguments (1 and 2 bits unrolled; others generic).
// Few words per pixel (64, 128, 256 channels) at stride 1: the word count
// as a template argument too (see lane_tile).
template <int FM, int FK, int E>
__attribute__((always_inline)) inline void lane_row_words(
    const MBBLaneArgs& a, const LaneRow& r, int64_t o_begin, int64_t o_end,
    int64_t interior_begin, int64_t interior_end) {
  const int64_t Wg = a.s.sw == 1 ? a.s.Wg : 0;
  if (Wg == 1)
    lane_row<FM, FK, E, 1>(a, r, o_begin, o_end, interior_begin,
                           interior_end);
  else if (Wg == 2)
    lane_row<FM, FK, E, 2>(a, r, o_begin, o_end, interior_begin,
                           interior_end);
  else if (Wg == 4)
    lane_row<FM, FK, E, 4>(a, r, o_begin, o_end, interior_begin,
                           interior_end);
  else
    lane_row<FM, FK, E, 0>(a, r, o_begin, o_end, interior_begin,
                           interior_end);
}

template <int E>
__attribute__((always_inline)) inline void lane_row_bits(
    const MBBLaneArgs& a, const LaneRow& r, int64_t o_begin, int64_t o_end,
    int64_t interior_begin, int64_t interior_end) {
  const int64_t bits = a.s.M * 10 + a.s.K;
  if (bits == 11)
    lane_row_words<1, 1, E>(a, r, o_begin, o_end, interior_begin,
                            interior_end);
  else if (bits == 22)
    lane_row_words<2, 2, E>(a, r, o_begin, o_end, interior_begin,
                            interior_end);
  else if (bits == 12)
    lane_row_words<1, 2, E>(a, r, o_begin, o_end, interior_begin,
                            interior_end);
  else if (bits == 21)
    lane_row_words<2, 1, E>(a, r, o_begin, o_end, interior_begin,
                            interior_end);
  else
    lane_row<0, 0, E, 0>(a, r, o_begin, o_end, interior_begin, interior_end);
}

inline void lane_dispatch(const MBBLaneArgs& a, const LaneRow& r,
                          int64_t o_begin, int64_t o_end,
                          int64_t interior_begin, int64_t interior_end) {
  switch (lane_epilogue(a)) {
    case kLaneThresholds:
      lane_row_bits<kLaneThresholds>(a, r, o_begin, o_end, interior_begin,
                                     interior_end);
      break;
    case kLaneAcc:
      lane_row_bits<kLaneAcc>(a, r, o_begin, o_end, interior_begin,
                              interior_end);
      break;
    default:
      lane_row_bits<kLaneFloat>(a, r, o_begin, o_end, interior_begin,
                                interior_end);
  }
}

// Work items [begin, end) of N * Ho * ceil(O / o_chunk): one output row
// of one chunk of output channels each.
inline void lane_conv_items(const MBBLaneArgs& args, int64_t begin,
                            int64_t end) {
  // A local copy, with everything below inlined: stores through the output
  // pointers cannot change it, so its fields stay in registers instead of
  // being read again for every vector.
  const MBBLaneArgs a = args;
  const MBBConvShape& s = a.s;
  const int64_t chunks = (s.O + a.o_chunk - 1) / a.o_chunk;
  int64_t interior_begin, interior_end;
  lane_interior_columns(a, &interior_begin, &interior_end);
  LaneRow r;
  int64_t row = -1;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t chunk = item % chunks;
    if (item / chunks != row) {
      row = item / chunks;
      make_lane_row(a, row / s.Ho, row % s.Ho, &r);
    }
    const int64_t o_begin = chunk * a.o_chunk;
    const int64_t o_end = s.O < o_begin + a.o_chunk ? s.O : o_begin + a.o_chunk;
    lane_dispatch(a, r, o_begin, o_end, interior_begin, interior_end);
  }
}

}  // namespace mbb_lanes_avx512
}  // namespace mmbinary

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

#endif  // x86-64 with GCC or clang
