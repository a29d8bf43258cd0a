// Copyright (c) mmbinary contributors. All rights reserved.
// The integer (AVX-512 VNNI) kernel of the packed MBB conv (groups == 1,
// M <= 8, K <= 8): the same integer codes and accumulator as the bit-serial
// popcount kernels, computed with vpdpbusd (u8 levels x s8 weight codes,
// four channels per int32 lane, no saturation) instead of M * K AND +
// popcount plane pairs.
//
//   * activations: the (N, H, W, 1, K, Wg) words are unpacked once per call
//     into u8 levels q, channels last (64 * Wg bytes a pixel, pad channels
//     0), inside a zero border of the padding: a padded tap then adds
//     exactly 0 to sum w * q, and the inner loop has no branch;
//   * weights: odd codes w as s8, prepared once per layer; 8-bit codes
//     (odd, up to +-255) as h = (w - 1) / 2 in -128..127, the kernel's sum
//     h * q doubled in the epilogue plus the patch's sum of q
//     (MBBInt8Args::patch_sums): sum w * q = 2 * sum h * q + sum q;
//     (mbb_int8_weight_layout) as (ceil(O / 16), kh * kw, C4, 16, 4): 16
//     output channels per vector, 4 consecutive input channels per lane,
//     C4 = 16 * ceil(C / 64) quads (zero codes past C), so that 16 quads
//     are one AMX B tile (mbb_conv2d_int8_amx.h);
//     plus the 2-D prefix sums of sum_c w over the taps, (kh + 1, kw + 1,
//     O16) int32, for the signed correction over the valid taps;
//   * a tile is NO <= 4 blocks of 16 output channels x NP <= 6 columns of
//     one output row (24 accumulators);
//   * the epilogue (epilogue_rows, shared with the AMX kernel), a tile's
//     accumulators a block of 16 channels at a time:
//     (8-bit weights: sum w * q = 2 * sum h * q + the patch sum, first)
//     unsigned acc = sum w * q, signed acc = 2 * sum w * q - L * sum_valid w,
//     then float(acc) * scale + bias (two roundings, no FMA), + residual,
//     the clamp, the float output and/or the next layer's words.
// Every output is bit-identical to the popcount kernels'.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>
#include <vector>

#include "max_pool_channels_last.h"
#include "mbb_conv2d.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MMBINARY_MBB_HAVE_INT8_AVX512 1
#include <immintrin.h>

namespace mmbinary {

// Output channels per int32 vector, input channels per int32 lane.
constexpr int64_t kMBBInt8Lanes = 16;
constexpr int64_t kMBBInt8Quad = 4;

// Whether the integer kernel can run a conv (levels fit u8; weight codes
// fit s8, halved at 8 bits).
inline bool mbb_int8_eligible(const MBBConvShape& s) {
  return s.G == 1 && s.M <= 8 && s.K <= 8;
}

// Whether the s8 layout holds h = (w - 1) / 2 instead of the code w (8-bit
// weights, odd codes up to +-255).
inline bool mbb_int8_halved(const MBBConvShape& s) { return s.M == 8; }

inline int64_t mbb_int8_blocks(int64_t O) {
  return (O + kMBBInt8Lanes - 1) / kMBBInt8Lanes;
}

// Quads of input channels that hold channels (the kernel's loop).
inline int64_t mbb_int8_quads(int64_t C) {
  return (C + kMBBInt8Quad - 1) / kMBBInt8Quad;
}

// Quads per tap in the weight layout: C padded to whole 64-channel words.
inline int64_t mbb_int8_padded_quads(int64_t C) {
  return mbb_num_words(C) * (kMBBWordBits / kMBBInt8Quad);
}

// Weight words (O, M, kh, kw, Wg) -> s8 codes in the vpdpbusd layout
// (ceil(O / 16), kh * kw, C4, 16, 4) with C4 = mbb_int8_padded_quads(C),
// zero for pad channels (8-bit weights: h = (w - 1) / 2 = n - 128, see
// mbb_int8_halved), for the output channels [o_begin, o_end); `out`
// zero-filled by the caller.
inline void mbb_int8_weight_layout(const MBBConvShape& s,
                                   const uint64_t* weight, int8_t* out,
                                   int64_t o_begin, int64_t o_end) {
  const int64_t taps = s.kh * s.kw, C4 = mbb_int8_padded_quads(s.C);
  const int64_t mmax = (int64_t{1} << s.M) - 1;
  for (int64_t o = o_begin; o < o_end; ++o) {
    const int64_t ob = o / kMBBInt8Lanes, lane = o % kMBBInt8Lanes;
    for (int64_t t = 0; t < taps; ++t) {
      int8_t* dst = out + (ob * taps + t) * C4 * kMBBInt8Lanes * kMBBInt8Quad;
      for (int64_t c = 0; c < s.C; ++c) {
        const int64_t j = c / kMBBWordBits, bit = c % kMBBWordBits;
        int64_t n = 0;
        for (int64_t m = 0; m < s.M; ++m)
          n |= static_cast<int64_t>(
                   (weight[((o * s.M + m) * taps + t) * s.Wg + j] >> bit) &
                   1ULL)
               << m;
        dst[((c / kMBBInt8Quad) * kMBBInt8Lanes + lane) * kMBBInt8Quad +
            c % kMBBInt8Quad] = static_cast<int8_t>(
            mbb_int8_halved(s) ? n - (mmax + 1) / 2 : 2 * n - mmax);
      }
    }
  }
}

// Everything the integer kernel reads and writes.
struct MBBInt8Args {
  MBBConvShape s;             // groups == 1, M <= 8, K <= 8
  const uint8_t* levels;      // (N, H + 2 ph, W + 2 pw, 64 * Wg) u8 levels
  int64_t Hp, Wp, pixel_bytes;
  const int8_t* weight;       // (O16 / 16, kh * kw, C4, 16, 4) s8 codes
  const int32_t* wsum_prefix;  // (kh + 1, kw + 1, O16), signed mode
  // kw + 1 of the taps' geometry: the conv's, or the original kernel's
  // when its taps are folded into the channels (the im2col path)
  int64_t wsum_cols;
  int64_t wsum_rows = 0;      // kh + 1 of the same geometry
  // (N, Ho, Wo) sum of the levels over each output's taps, for 8-bit
  // weights (mbb_int8_halved), else null
  const int32_t* patch_sums = nullptr;
  // Where a fill that can also writes them (a 1x1, stride-1 conv without
  // padding: a pixel's levels are its patch) puts each pixel's level sum,
  // (N, H, W); null: the patch sums are summed after the fill
  int32_t* fill_sums = nullptr;
  const int64_t* ky_range;    // (Ho, 2) valid kernel rows [lo, hi)
  const int64_t* kx_range;    // (Wo, 2)
  const float* scale;         // (O16,) zero padded
  const float* bias;          // (O16,) zero padded
  int32_t* out_acc;           // (N, Ho, Wo, O) accumulators, or null
  float* out;                 // (N, Ho, Wo, O) float, or null
  // Output pixel p's floats (or accumulators) go to out (out_acc) +
  // (p - out_pixel_shift) * O (a row written into a buffer of its own, the
  // fused max pool's)
  int64_t out_pixel_shift = 0;
  bool stream_out = false;    // as MBBLaneArgs::stream_out
  const float* residual;      // (N, Ho, Wo, O) added, or null
  float act_min, act_max;     // clamp (each side skipped where infinite)
  uint16_t* out_words;        // (N, Ho, Wo, out_K, out_Wg) words, or null
  int64_t out_K, out_Wg;
  float out_inv_step;
  bool out_signed;
  // A second consumer's words of the same output (another quantizer: an
  // FPN lateral conv reading a backbone stage's output), laid out as
  // out_words with side_K bit planes, or null
  uint16_t* side_words = nullptr;
  int64_t side_K = 0;
  float side_inv_step = 1.f;
  bool side_signed = false;
  int64_t o_blocks;           // blocks of 16 output channels per work item
  // Row-local levels (1x1, stride-1 convs without padding): `levels` is
  // one input row of the calling thread's, (W, 64 * Wg), filled just
  // before that row's outputs are computed (MBBInt8RowFill), instead of
  // the whole (N, Hp, Wp, 64 * Wg) image
  bool one_level_row = false;
};

// Where input row iy (in padded coordinates) of sample n starts in a level
// buffer of `a`, in bytes: rows of (Wp, 64 * Wg) u8 levels.
inline int64_t mbb_int8_row_offset(const MBBInt8Args& a, int64_t n,
                                  int64_t iy) {
  return a.one_level_row ? 0 : (n * a.Hp + iy) * a.Wp * a.pixel_bytes;
}

// Called with (n, y) before a work item computes output row (n, y) of a
// row-local conv (MBBInt8Args::one_level_row): fills that row's levels.
using MBBInt8RowFill = std::function<void(int64_t, int64_t)>;

}  // namespace mmbinary

#if defined(__clang__)
#pragma clang attribute push(                                               \
    __attribute__((target("avx2,avx512f,avx512vl,avx512bw,avx512vnni"))),    \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512vl,avx512bw,avx512vnni")
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace mmbinary {
namespace mbb_int8_avx512 {

// Unpacks the activation words of input rows [row_begin, row_end) of the
// (N * H) axis into u8 levels inside the zero border: byte c of a pixel is
// q = sum_k 2^k bit_k (pad channels have no bits, so 0). The border and
// the pad bytes are zero-filled by the caller.
inline void unpack_levels(const MBBInt8Args& a, const uint64_t* act,
                          uint8_t* levels, int64_t row_begin,
                          int64_t row_end) {
  const MBBConvShape& s = a.s;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t n = r / s.H, iy = r % s.H;
    uint8_t* dst_row =
        levels + mbb_int8_row_offset(a, n, iy + s.ph) + s.pw * a.pixel_bytes;
    for (int64_t ix = 0; ix < s.W; ++ix) {
      const uint64_t* words = act + (r * s.W + ix) * s.K * s.Wg;
      uint8_t* dst = dst_row + ix * a.pixel_bytes;
      for (int64_t j = 0; j < s.Wg; ++j) {
        __m512i q = _mm512_setzero_si512();
        for (int64_t k = 0; k < s.K; ++k)
          q = _mm512_mask_add_epi8(q, words[k * s.Wg + j], q,
                                   _mm512_set1_epi8(static_cast<char>(1 << k)));
        _mm512_storeu_si512(dst + j * kMBBWordBits, q);
      }
    }
  }
}

// Quantizes the float channels-last input rows [row_begin, row_end) of the
// (N * H) axis straight into u8 levels inside the zero border (what
// mbb_quantize_pack then unpack_levels give, without the words: the same
// mbb_quantize_level arithmetic, 16 channels a vector, pad channels 0).
// Returns whether a NaN was read (its level is undefined; the caller
// refuses the input, as mbb_quantize_pack does).
//
// Steps above 1 read every step-th pixel of a larger input (a strided 1x1
// conv without padding run as the stride-1 conv `a.s` over the pixels it
// reads): `input` is then the channels-last (N, src_H, src_W, C) tensor,
// level pixel (iy, ix) its pixel (iy * step_h, ix * step_w), and the
// other pixels are never read.
inline bool quantize_levels(const MBBInt8Args& a, const float* input,
                            float inv_step, uint8_t* levels,
                            int64_t row_begin, int64_t row_end,
                            int64_t step_h = 1, int64_t step_w = 1,
                            int64_t src_H = 0, int64_t src_W = 0) {
  const MBBConvShape& s = a.s;
  if (src_H == 0) src_H = s.H, src_W = s.W;
  const float top_value = static_cast<float>((1 << s.K) - 1);
  const __m512 inv = _mm512_set1_ps(inv_step), top = _mm512_set1_ps(top_value);
  const __m512 half = _mm512_set1_ps(0.5f), zero = _mm512_setzero_ps();
  __mmask16 nan = 0;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t n = r / s.H, iy = r % s.H;
    uint8_t* dst_row =
        levels + mbb_int8_row_offset(a, n, iy + s.ph) + s.pw * a.pixel_bytes;
    const float* src_row = input + (n * src_H + iy * step_h) * src_W * s.C;
    int32_t* sums = a.fill_sums ? a.fill_sums + r * s.W : nullptr;
    for (int64_t ix = 0; ix < s.W; ++ix) {
      const float* x = src_row + ix * step_w * s.C;
      uint8_t* dst = dst_row + ix * a.pixel_bytes;
      __m512i pixel_sum = _mm512_setzero_si512();
      for (int64_t c = 0; c < a.pixel_bytes; c += 16) {
        const int64_t rest = s.C - c;
        if (rest <= 0) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + c),
                           _mm_setzero_si128());
          continue;
        }
        const __mmask16 lanes =
            rest >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << rest) - 1u);
        const __m512 value = _mm512_maskz_loadu_ps(lanes, x + c);
        nan |= _mm512_cmp_ps_mask(value, value, _CMP_UNORD_Q);
        __m512 v = _mm512_mul_ps(value, inv);
        if (s.is_signed) v = _mm512_mul_ps(_mm512_add_ps(v, top), half);
        // max(v, 0) is 0 for NaN, min(v, top): as mbb_quantize_level;
        // cvtps2dq rounds half to even.
        v = _mm512_min_ps(_mm512_max_ps(v, zero), top);
        const __m512i q = _mm512_cvtps_epi32(v);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + c),
                         _mm512_cvtepi32_epi8(q));
        // the channels' levels only (a pad lane's may be nonzero)
        if (sums)
          pixel_sum = _mm512_add_epi32(pixel_sum,
                                       _mm512_maskz_mov_epi32(lanes, q));
      }
      if (sums) sums[ix] = _mm512_reduce_add_epi32(pixel_sum);
    }
  }
  return nan != 0;
}

// Quantizes `count` consecutive floats into u8 levels as quantize_levels
// does (the same operations, so the same levels); returns whether a NaN
// was read. For the im2col path's compact (N, H, W, C) level image.
inline bool quantize_flat(const float* x, int64_t count, float inv_step,
                          bool is_signed, int64_t K, uint8_t* dst) {
  const float top_value = static_cast<float>((1 << K) - 1);
  const __m512 inv = _mm512_set1_ps(inv_step), top = _mm512_set1_ps(top_value);
  const __m512 half = _mm512_set1_ps(0.5f), zero = _mm512_setzero_ps();
  __mmask16 nan = 0;
  for (int64_t i = 0; i < count; i += 16) {
    const int64_t rest = count - i;
    const __mmask16 lanes =
        rest >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << rest) - 1u);
    const __m512 value = _mm512_maskz_loadu_ps(lanes, x + i);
    nan |= _mm512_mask_cmp_ps_mask(lanes, value, value, _CMP_UNORD_Q);
    __m512 v = _mm512_mul_ps(value, inv);
    if (is_signed) v = _mm512_mul_ps(_mm512_add_ps(v, top), half);
    v = _mm512_min_ps(_mm512_max_ps(v, zero), top);
    _mm_mask_storeu_epi8(dst + i, lanes,
                         _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
  }
  return nan != 0;
}

// One piece of a patch vector (the im2col path): the vector's bytes j set
// in `mask` hold the level image's bytes at `offset + j` after the pixel's
// first tap (offset may be negative, down to -63).
struct PatchPiece {
  int64_t offset;
  __mmask64 mask;
};

// Where each 64-byte vector of a pixel's patch reads its levels: the patch
// is the conv's kh * kw taps in (ky, kx, c) order, that is runs of levels
// contiguous in the (N, H + 2 ph, W + 2 pw, C) image (kw * C bytes a row
// of taps without dilation, else C bytes a tap); each run's part inside a
// vector is one piece. Bytes past the patch belong to no piece (zeros).
struct PatchPlan {
  std::vector<PatchPiece> pieces;
  std::vector<int64_t> first;  // pieces of vector v: [first[v], first[v+1])
};

inline PatchPlan patch_plan(const MBBConvShape& s, int64_t pixel_bytes) {
  const int64_t Wp = s.W + 2 * s.pw;
  const bool rows = s.dw == 1;
  const int64_t run = rows ? s.kw * s.C : s.C, runs = rows ? s.kh : s.kh * s.kw;
  PatchPlan plan;
  plan.first.push_back(0);
  for (int64_t v = 0; v < pixel_bytes / 64; ++v) {
    for (int64_t r = 0; r < runs; ++r) {
      const int64_t ky = rows ? r : r / s.kw, kx = rows ? 0 : r % s.kw;
      const int64_t dst = r * run, src = (ky * s.dh * Wp + kx * s.dw) * s.C;
      const int64_t begin = std::max(64 * v, dst);
      const int64_t end = std::min(64 * v + 64, dst + run);
      if (begin >= end) continue;
      const int64_t d0 = begin - 64 * v, bytes = end - begin;
      const __mmask64 ones =
          bytes >= 64 ? ~__mmask64(0) : (__mmask64(1) << bytes) - 1;
      plan.pieces.push_back({src + (begin - dst) - d0, ones << d0});
    }
    plan.first.push_back(static_cast<int64_t>(plan.pieces.size()));
  }
  return plan;
}

// The patches of output row (n, y) of a conv `s` (the im2col path): pixel
// x of `dst` (pixel_bytes each) holds, in (ky, kx, c) order, the levels of
// its kh * kw taps read from `image`, the (N, H + 2 ph, W + 2 pw, C)
// levels inside their zero border, then zeros up to pixel_bytes. Each
// vector is put together in a register from its pieces (masked loads that
// zero the other bytes, OR) and stored once. `image` must have 64
// readable bytes before its first level (a piece's offset reaches -63).
//
// `sums` (null: none): each patch's level sum, (Wo,) for the row.
inline void im2col_row(const MBBConvShape& s, const PatchPlan& plan,
                       const uint8_t* image, int64_t n, int64_t y,
                       int64_t pixel_bytes, uint8_t* dst,
                       int32_t* sums = nullptr) {
  const int64_t Wp = s.W + 2 * s.pw, vectors = pixel_bytes / 64;
  const uint8_t* row = image + (n * (s.H + 2 * s.ph) + y * s.sh) * Wp * s.C;
  const PatchPiece* pieces = plan.pieces.data();
  const int64_t* first = plan.first.data();
  for (int64_t x = 0; x < s.Wo; ++x, dst += pixel_bytes) {
    const uint8_t* base = row + x * s.sw * s.C;
    __m512i patch_sum = _mm512_setzero_si512();  // eight u64 partial sums
    for (int64_t v = 0; v < vectors; ++v) {
      __m512i levels = _mm512_setzero_si512();
      for (int64_t i = first[v]; i < first[v + 1]; ++i)
        levels = _mm512_or_si512(
            levels, _mm512_maskz_loadu_epi8(pieces[i].mask,
                                            base + pieces[i].offset));
      _mm512_storeu_si512(reinterpret_cast<void*>(dst + 64 * v), levels);
      // bytes past the patch are 0
      if (sums)
        patch_sum = _mm512_add_epi64(
            patch_sum, _mm512_sad_epu8(levels, _mm512_setzero_si512()));
    }
    if (sums) sums[x] = static_cast<int32_t>(_mm512_reduce_add_epi64(patch_sum));
  }
}

// The activation levels of 16 channels' floats `value` (as
// mbb_quantize_level: the same operations, so mbb_quantize_pack's bits)
// stored as one 16-bit quarter of a word per bit plane: plane k at
// dst[k * plane_stride] (16-bit units). `top` = 2^K - 1.
__attribute__((always_inline)) inline void store_level_bits(
    __m512 value, __mmask16 lanes, __m512 inv_step, __m512 top,
    bool is_signed, int64_t K, uint16_t* dst, int64_t plane_stride) {
  __m512 level = _mm512_mul_ps(value, inv_step);
  if (is_signed)
    level = _mm512_mul_ps(_mm512_add_ps(level, top), _mm512_set1_ps(0.5f));
  level = _mm512_min_ps(_mm512_max_ps(level, _mm512_setzero_ps()), top);
  const __m512i q = _mm512_cvtps_epi32(level);
  for (int64_t k = 0; k < K; ++k)
    dst[k * plane_stride] = static_cast<uint16_t>(
        _mm512_mask_test_epi32_mask(lanes, q, _mm512_set1_epi32(1 << k)));
}

// Quantizes `pixels` channels-last float pixels of C channels into the
// next layer's activation words, as the epilogue does (mbb_quantize_level:
// the same operations, so mbb_quantize_pack's bits): pixel p's bit plane k
// of 16-channel block b is words[(p * K + k) * 4 * Wg + b]. The 16-bit
// quarters past C's last block are not written (zero them first where
// C % 64 != 0).
inline void pack_float_pixels(const float* x, int64_t pixels, int64_t C,
                              int64_t K, float inv_step, bool is_signed,
                              uint16_t* words) {
  const int64_t word_stride = mbb_num_words(C) * 4;  // quarters a plane
  const __m512 inv = _mm512_set1_ps(inv_step);
  const __m512 top = _mm512_set1_ps(static_cast<float>((1 << K) - 1));
  for (int64_t p = 0; p < pixels; ++p) {
    const float* pixel = x + p * C;
    uint16_t* dst = words + p * K * word_stride;
    for (int64_t c = 0; c < C; c += 16) {
      const __mmask16 lanes =
          C - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (C - c)) - 1u);
      store_level_bits(_mm512_maskz_loadu_ps(lanes, pixel + c), lanes, inv,
                       top, is_signed, K, dst + c / 16, word_stride);
    }
  }
}

// One row of the fused max pool (`pool`, dilation 1) from the conv rows'
// exact accumulators (`rows[0 .. count)`, the window's valid conv rows in
// order, (Wo, O) int32 each, the epilogue's corrected sums) into `dst`
// (pool.Wo, O) floats: the epilogue clamp(float(acc) * scale + bias) of
// each channel's window accumulator that gives the largest float, that is
// the largest accumulator where scale > 0, the smallest where scale < 0,
// the first where scale == 0 (the epilogue is monotone in acc: its
// roundings and clamp never reverse an order). The same floats as pooling
// the epilogue's outputs, with one epilogue per pooled output instead of
// per conv output (the sign of a zero aside, where a product underflows
// and the bias is -0).
inline void pooled_epilogue_row(const MBBInt8Args& a, const MaxPoolShape& pool,
                                const int32_t* const* rows, int64_t count,
                                float* dst) {
  const int64_t C = pool.C;
  const bool clamp_low = a.act_min != -INFINITY;
  const bool clamp_high = a.act_max != INFINITY;
  const __m512 act_min = _mm512_set1_ps(a.act_min);
  const __m512 act_max = _mm512_set1_ps(a.act_max);
  for (int64_t x = 0; x < pool.Wo; ++x, dst += C) {
    int64_t kx0, kx1;
    max_pool_taps(x, pool.sw, pool.pw, pool.dw, pool.kw, pool.W, &kx0, &kx1);
    const int64_t col0 = (x * pool.sw - pool.pw) * C;
    for (int64_t c = 0; c < C; c += 16) {
      const __mmask16 lanes =
          C - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (C - c)) - 1u);
      const __m512 scale = _mm512_loadu_ps(a.scale + c);
      const __m512 bias = _mm512_loadu_ps(a.bias + c);
      const __m512i first =
          _mm512_maskz_loadu_epi32(lanes, rows[0] + col0 + kx0 * C + c);
      __m512i high = first, low = first;
      for (int64_t i = 0; i < count; ++i) {
        for (int64_t kx = kx0; kx < kx1; ++kx) {
          const __m512i v =
              _mm512_maskz_loadu_epi32(lanes, rows[i] + col0 + kx * C + c);
          high = _mm512_max_epi32(high, v);
          low = _mm512_min_epi32(low, v);
        }
      }
      const __m512 zero = _mm512_setzero_ps();
      __m512i acc = _mm512_mask_mov_epi32(
          first, _mm512_cmp_ps_mask(scale, zero, _CMP_GT_OQ), high);
      acc = _mm512_mask_mov_epi32(
          acc, _mm512_cmp_ps_mask(scale, zero, _CMP_LT_OQ), low);
      __m512 value =
          _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale), bias);
      if (clamp_low) value = _mm512_max_ps(value, act_min);
      if (clamp_high) value = _mm512_min_ps(value, act_max);
      _mm512_mask_storeu_ps(dst + c, lanes, value);
    }
  }
}

// The sum of the first `count` levels at `levels` (a pixel's channels).
inline int32_t level_sum(const uint8_t* levels, int64_t count) {
  __m512i sums = _mm512_setzero_si512();  // eight u64 partial sums
  for (int64_t c = 0; c < count; c += 64) {
    const int64_t rest = count - c;
    const __mmask64 lanes =
        rest >= 64 ? ~__mmask64(0) : (__mmask64(1) << rest) - 1;
    sums = _mm512_add_epi64(
        sums, _mm512_sad_epu8(_mm512_maskz_loadu_epi8(lanes, levels + c),
                              _mm512_setzero_si512()));
  }
  return static_cast<int32_t>(_mm512_reduce_add_epi64(sums));
}

// What the epilogue writes (template flags of epilogue_rows).
enum MBBInt8Epilogue : int {
  kEpiSigned = 1,    // signed activations: 2 * acc - L * sum_valid w
  kEpiAccOut = 2,    // the int32 accumulators only
  kEpiResidual = 4,  // + residual
  kEpiFloatOut = 8,  // the float output
  kEpiWordsOut = 16,  // the next layer's words
  kEpiSideWords = 32  // a second consumer's words (MBBInt8Args::side_words)
};

// The epilogue of output pixels (n, y, x0 .. x0 + count - 1) x output
// channels [oc, oc + 16) from their exact accumulators `rows` (count x 16
// int32, 64-byte aligned, row p: pixel x0 + p, sum w * q over every tap,
// padded taps adding 0):
//   unsigned acc = sum w * q, signed acc = 2 * sum w * q - L * sum_valid w
//   (the weight sums over the valid taps from the prefix sums),
//   then float(acc) * scale + bias (two roundings, no FMA), + residual,
//   the clamp, the float output and/or the next layer's words,
// or the accumulators alone. The call's mode is a template argument (no
// branches per vector on it) and the per-channel constants are loaded
// once per call.
template <int MODE>
void epilogue_rows(const MBBInt8Args& a, int64_t n, int64_t y, int64_t x0,
                   int64_t count, int64_t oc, const int32_t* rows) {
  const MBBConvShape& s = a.s;
  const int64_t rest = s.O - oc;
  const __mmask16 lanes =
      rest >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << rest) - 1u);
  const int64_t first_pixel = (n * s.Ho + y) * s.Wo + x0;
  const int64_t first = first_pixel * s.O + oc;
  // signed: the weight sums over the valid taps, from the prefix sums
  const int64_t cols = a.wsum_cols;
  const int64_t O16 = mbb_int8_blocks(s.O) * kMBBInt8Lanes;
  const int32_t* pre = a.wsum_prefix + oc;
  const int64_t ky0 = a.ky_range[2 * y], ky1 = a.ky_range[2 * y + 1];
  const int32_t* pre_lo = pre + ky0 * cols * O16;
  const int32_t* pre_hi = pre + ky1 * cols * O16;
  // signed: 2 * acc - L * sum_valid w, L * w as (w << K) - w
  const auto valid_term = [&](int64_t kx0, int64_t kx1) {
    const __m512i wsum = _mm512_add_epi32(
        _mm512_sub_epi32(_mm512_loadu_si512(pre_hi + kx1 * O16),
                         _mm512_loadu_si512(pre_lo + kx1 * O16)),
        _mm512_sub_epi32(_mm512_loadu_si512(pre_lo + kx0 * O16),
                         _mm512_loadu_si512(pre_hi + kx0 * O16)));
    return _mm512_sub_epi32(_mm512_slli_epi32(wsum, s.K), wsum);
  };
  // An output whose taps are all valid (every output of a 1x1 conv without
  // padding, the interior of the others) takes the term of the whole
  // kernel, computed once per call.
  const int64_t taps_kw = cols - 1;
  const bool row_whole = (MODE & kEpiSigned) && ky0 == 0 &&
                         ky1 == a.wsum_rows - 1;
  const __m512i whole_term =
      row_whole ? valid_term(0, taps_kw) : _mm512_setzero_si512();
  const auto signed_acc = [&](__m512i acc, int64_t x) {
    const int64_t kx0 = a.kx_range[2 * x], kx1 = a.kx_range[2 * x + 1];
    const __m512i term = row_whole && kx0 == 0 && kx1 == taps_kw
                             ? whole_term
                             : valid_term(kx0, kx1);
    return _mm512_sub_epi32(_mm512_add_epi32(acc, acc), term);
  };
  // 8-bit weights: sum w * q = 2 * sum h * q + sum q over the patch
  const int32_t* patch = a.patch_sums ? a.patch_sums + first_pixel : nullptr;
  const auto whole_codes = [&](__m512i acc, int64_t p) {
    return _mm512_add_epi32(_mm512_add_epi32(acc, acc),
                            _mm512_set1_epi32(patch[p]));
  };
  if (MODE & kEpiAccOut) {
    for (int64_t p = 0; p < count; ++p) {
      __m512i acc = _mm512_load_si512(rows + p * kMBBInt8Lanes);
      if (patch) acc = whole_codes(acc, p);
      if (MODE & kEpiSigned) acc = signed_acc(acc, x0 + p);
      _mm512_mask_storeu_epi32(
          a.out_acc + (first - a.out_pixel_shift * s.O) + p * s.O, lanes,
          acc);
    }
    return;
  }
  const __m512 scale = _mm512_loadu_ps(a.scale + oc);
  const __m512 bias = _mm512_loadu_ps(a.bias + oc);
  const bool clamp_low = a.act_min != -INFINITY;
  const bool clamp_high = a.act_max != INFINITY;
  const __m512 act_min = _mm512_set1_ps(a.act_min);
  const __m512 act_max = _mm512_set1_ps(a.act_max);
  const __m512 top = _mm512_set1_ps(static_cast<float>((1 << a.out_K) - 1));
  const __m512 inv_step = _mm512_set1_ps(a.out_inv_step);
  const int64_t word_stride = a.out_Wg * 4;  // 16-bit units per bit plane
  // In locals: the stores below may alias `a` as far as the compiler
  // knows, so it would load these again for every pixel.
  const float* const residual = a.residual;
  float* const out = a.out;
  const int64_t out_shift = a.out_pixel_shift * s.O;
  const bool stream_out = a.stream_out, out_signed = a.out_signed;
  uint16_t* const out_words = a.out_words;
  const int64_t out_K = a.out_K;
  uint16_t* const side_words = a.side_words;
  const int64_t side_K = a.side_K;
  const bool side_signed = a.side_signed;
  const __m512 side_top =
      _mm512_set1_ps(static_cast<float>((1 << a.side_K) - 1));
  const __m512 side_inv_step = _mm512_set1_ps(a.side_inv_step);
  const int64_t side_stride = mbb_num_words(s.O) * 4;
  for (int64_t p = 0; p < count; ++p) {
    const int64_t at = first + p * s.O;
    __m512i acc = _mm512_load_si512(rows + p * kMBBInt8Lanes);
    if (patch) acc = whole_codes(acc, p);
    if (MODE & kEpiSigned) acc = signed_acc(acc, x0 + p);
    // float(acc) * scale + bias: two roundings (no FMA contraction).
    __m512 value =
        _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale), bias);
    if (MODE & kEpiResidual) {
      // Two 16-pixel tiles on (the next tiles' rows).
      _mm_prefetch(reinterpret_cast<const char*>(residual + at + 32 * s.O),
                   _MM_HINT_T0);
      value =
          _mm512_add_ps(value, _mm512_maskz_loadu_ps(lanes, residual + at));
    }
    if (clamp_low) value = _mm512_max_ps(value, act_min);
    if (clamp_high) value = _mm512_min_ps(value, act_max);
    if (MODE & kEpiFloatOut) {
      if (stream_out)
        _mm512_stream_ps(out + (at - out_shift), value);
      else
        _mm512_mask_storeu_ps(out + (at - out_shift), lanes, value);
    }
    if (MODE & kEpiWordsOut)  // the 16 channels: a 16-bit quarter
      store_level_bits(value, lanes, inv_step, top, out_signed, out_K,
                       out_words + (first_pixel + p) * out_K * word_stride +
                           oc / 16,
                       word_stride);
    if (MODE & kEpiSideWords)  // the same with the side quantizer
      store_level_bits(value, lanes, side_inv_step, side_top, side_signed,
                       side_K,
                       side_words + (first_pixel + p) * side_K * side_stride +
                           oc / 16,
                       side_stride);
  }
}

using MBBInt8EpilogueFn = void (*)(const MBBInt8Args&, int64_t, int64_t,
                                   int64_t, int64_t, int64_t,
                                   const int32_t*);

// The epilogue mode of index bits (residual, float out, words out, side
// words) = bits (0, 1, 2, 3).
template <int SIGNED, int INDEX>
constexpr int epilogue_mode() {
  return SIGNED | ((INDEX & 1) ? kEpiResidual : 0) |
         ((INDEX & 2) ? kEpiFloatOut : 0) | ((INDEX & 4) ? kEpiWordsOut : 0) |
         ((INDEX & 8) ? kEpiSideWords : 0);
}

template <int SIGNED, int... INDEX>
MBBInt8EpilogueFn epilogue_of_index(int index,
                                    std::integer_sequence<int, INDEX...>) {
  static constexpr MBBInt8EpilogueFn kTable[] = {
      &epilogue_rows<epilogue_mode<SIGNED, INDEX>()>...};
  return kTable[index];
}

// The epilogue_rows instance of a call's mode.
template <int SIGNED>
MBBInt8EpilogueFn pick_epilogue_signed(const MBBInt8Args& a) {
  if (a.out_acc != nullptr) return &epilogue_rows<SIGNED | kEpiAccOut>;
  const int index = (a.residual != nullptr ? 1 : 0) |
                    (a.out != nullptr ? 2 : 0) |
                    (a.out_words != nullptr ? 4 : 0) |
                    (a.side_words != nullptr ? 8 : 0);
  return epilogue_of_index<SIGNED>(index,
                                   std::make_integer_sequence<int, 16>());
}

inline MBBInt8EpilogueFn pick_epilogue(const MBBInt8Args& a) {
  return a.s.is_signed ? pick_epilogue_signed<kEpiSigned>(a)
                       : pick_epilogue_signed<0>(a);
}

// One tile: NO blocks of 16 output channels from block ob0 x NP output
// columns x0 .. x0 + NP - 1 of output row (n, y). Inlined into the row
// loop: as a call of its own, its set-up (24 accumulators, the stack frame
// of its rows, the pointers) cost as much as the multiply-adds of a layer
// with 64 input channels (16 quads a tile).
template <int NO, int NP>
__attribute__((always_inline)) inline void tile(
    const MBBInt8Args& a, MBBInt8EpilogueFn epilogue, int64_t n, int64_t y,
    int64_t x0, int64_t ob0) {
  const MBBConvShape& s = a.s;
  const int64_t taps = s.kh * s.kw, C4 = mbb_int8_padded_quads(s.C);
  const int64_t quads = mbb_int8_quads(s.C);
  const int64_t block_bytes = taps * C4 * kMBBInt8Lanes * kMBBInt8Quad;
  __m512i acc[NO][NP];
  for (int v = 0; v < NO; ++v)
    for (int p = 0; p < NP; ++p) acc[v][p] = _mm512_setzero_si512();
  const int8_t* wbase = a.weight + ob0 * block_bytes;
  const int64_t col_step = s.sw * a.pixel_bytes;
  for (int64_t ky = 0; ky < s.kh; ++ky) {
    const uint8_t* src_row =
        a.levels + mbb_int8_row_offset(a, n, y * s.sh + ky * s.dh) +
        x0 * col_step;
    for (int64_t kx = 0; kx < s.kw; ++kx) {
      const uint8_t* src = src_row + kx * s.dw * a.pixel_bytes;
      const int8_t* w =
          wbase + (ky * s.kw + kx) * C4 * kMBBInt8Lanes * kMBBInt8Quad;
      for (int64_t c4 = 0; c4 < quads; ++c4) {
        __m512i wv[NO];
        for (int v = 0; v < NO; ++v)
          wv[v] = _mm512_loadu_si512(w + v * block_bytes + c4 * 64);
        for (int p = 0; p < NP; ++p) {
          int32_t quad;
          std::memcpy(&quad, src + p * col_step + c4 * kMBBInt8Quad, 4);
          const __m512i q = _mm512_set1_epi32(quad);
          for (int v = 0; v < NO; ++v)
            acc[v][p] = _mm512_dpbusd_epi32(acc[v][p], q, wv[v]);
        }
      }
    }
  }
  alignas(64) int32_t rows[NO][NP * kMBBInt8Lanes];
  for (int v = 0; v < NO; ++v)
    for (int p = 0; p < NP; ++p)
      _mm512_store_si512(rows[v] + p * kMBBInt8Lanes, acc[v][p]);
  for (int v = 0; v < NO; ++v)
    epilogue(a, n, y, x0, NP, (ob0 + v) * kMBBInt8Lanes, rows[v]);
}

// The tiles of NP output columns from x0, every block of [ob0, ob_end):
// a pixel's output channels are written together (whole lines in order).
template <int NP>
inline void column_tiles(const MBBInt8Args& a, MBBInt8EpilogueFn epilogue,
                         int64_t n, int64_t y, int64_t x0, int64_t ob0,
                         int64_t ob_end) {
  for (int64_t ob = ob0; ob < ob_end; ob += 4) {
    switch (std::min<int64_t>(4, ob_end - ob)) {
      case 4: tile<4, NP>(a, epilogue, n, y, x0, ob); break;
      case 3: tile<3, NP>(a, epilogue, n, y, x0, ob); break;
      case 2: tile<2, NP>(a, epilogue, n, y, x0, ob); break;
      default: tile<1, NP>(a, epilogue, n, y, x0, ob); break;
    }
  }
}

// Output row (n, y), blocks [ob0, ob_end), six columns at a time.
inline void row_blocks(const MBBInt8Args& a, MBBInt8EpilogueFn epilogue,
                       int64_t n, int64_t y, int64_t ob0, int64_t ob_end) {
  constexpr int kP = 6;
  int64_t x = 0;
  for (; x + kP <= a.s.Wo; x += kP)
    column_tiles<kP>(a, epilogue, n, y, x, ob0, ob_end);
  switch (a.s.Wo - x) {
    case 5: column_tiles<5>(a, epilogue, n, y, x, ob0, ob_end); break;
    case 4: column_tiles<4>(a, epilogue, n, y, x, ob0, ob_end); break;
    case 3: column_tiles<3>(a, epilogue, n, y, x, ob0, ob_end); break;
    case 2: column_tiles<2>(a, epilogue, n, y, x, ob0, ob_end); break;
    case 1: column_tiles<1>(a, epilogue, n, y, x, ob0, ob_end); break;
    default: break;
  }
}

// Work items [begin, end) of (chunk of a.o_blocks output-channel blocks,
// sample, output row); `before_row`: see MBBInt8RowFill.
inline void conv_items(const MBBInt8Args& a, int64_t begin, int64_t end,
                       const MBBInt8RowFill* before_row = nullptr) {
  const MBBConvShape& s = a.s;
  const MBBInt8EpilogueFn epilogue = pick_epilogue(a);
  const int64_t OB = mbb_int8_blocks(s.O);
  for (int64_t item = begin; item < end; ++item) {
    // rows fastest: consecutive items share the chunk's weights
    const int64_t rows = s.N * s.Ho;
    const int64_t chunk = item / rows, r = item % rows;
    const int64_t n = r / s.Ho, y = r % s.Ho;
    const int64_t ob_end = std::min(OB, (chunk + 1) * a.o_blocks);
    if (before_row != nullptr) (*before_row)(n, y);
    row_blocks(a, epilogue, n, y, chunk * a.o_blocks, ob_end);
  }
}

}  // namespace mbb_int8_avx512
}  // namespace mmbinary

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

#endif  // x86-64 with GCC or clang
