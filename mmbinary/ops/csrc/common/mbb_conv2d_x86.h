// Copyright (c) mmbinary contributors. All rights reserved.
// x86-64 variants of the packed MBB conv CPU kernels, compiled for their
// instruction set with a target pragma (no global -mavx2), chosen at run
// time by CPU features:
//   mbb_popcnt: the kernels of mbb_conv2d_kernels.h with the popcnt
//               instruction;
//   mbb_avx2:   the same with vector tiles of 4 output channels x 8
//               columns: AND of a broadcast weight word with a 256-bit
//               vector of the patch (4 columns), popcount by nibble lookup
//               (vpshufb), byte counters widened with vpsadbw, and a vector
//               epilogue;
//   mbb_avx512: the same tiles with AVX-512 VPOPCNTDQ (vpopcntq on 8 words
//               at once), 8 output channels x 8 columns.
// MMBINARY_MBB_HAVE_X86 is 1 where these variants are compiled.
#pragma once

#include "mbb_conv2d.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MMBINARY_MBB_HAVE_X86 1
#include <immintrin.h>

// ---- popcnt ---------------------------------------------------------------
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("popcnt"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("popcnt")
#endif

namespace mmbinary {
namespace mbb_popcnt {
#define MMBINARY_MBB_POPCOUNT(x) __builtin_popcountll(x)
#define MMBINARY_MBB_QUANTIZE_ROW ::mmbinary::mbb_quantize_row_portable
#include "mbb_conv2d_kernels.h"
#undef MMBINARY_MBB_QUANTIZE_ROW
#undef MMBINARY_MBB_POPCOUNT
}  // namespace mbb_popcnt
}  // namespace mmbinary

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// ---- avx2 -----------------------------------------------------------------
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,popcnt"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,popcnt")
#endif

namespace mmbinary {
namespace mbb_avx2 {

struct TileRuns;  // defined in mbb_conv2d_kernels.h, included below

// Computes and writes channels [o0, o0 + OB) at the 4 * PV columns of the
// blocks b0 .. b0 + PV - 1 (which read the same taps) of output row (n, y).
template <int OB, int PV>
inline void vector_tile(const MBBConvArgs& a, const TileRuns& r, int64_t n,
                        int64_t y, int64_t g, int64_t o0, int64_t b0);

// Levels q of `len` inputs, 8 at a time (see mbb_quantize_row_portable).
template <bool SIGNED>
inline void quantize_row_avx2(const float* x, int32_t* q, int64_t len,
                              float inv_step, float levels) {
  int64_t i = 0;
  const __m256 inv = _mm256_set1_ps(inv_step), top = _mm256_set1_ps(levels);
  const __m256 half = _mm256_set1_ps(0.5f), zero = _mm256_setzero_ps();
  for (; i + 8 <= len; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), inv);
    if (SIGNED) v = _mm256_mul_ps(_mm256_add_ps(v, top), half);
    v = _mm256_min_ps(_mm256_max_ps(v, zero), top);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i),
                        _mm256_cvtps_epi32(v));
  }
  for (; i < len; ++i)
    q[i] = mbb_quantize_level(x[i], inv_step, levels, SIGNED);
}

#define MMBINARY_MBB_POPCOUNT(x) __builtin_popcountll(x)
#define MMBINARY_MBB_QUANTIZE_ROW quantize_row_avx2
#define MMBINARY_MBB_VECTOR_TILE 1
#include "mbb_conv2d_kernels.h"
#undef MMBINARY_MBB_VECTOR_TILE
#undef MMBINARY_MBB_QUANTIZE_ROW
#undef MMBINARY_MBB_POPCOUNT

// Writes channel o at the columns of block b from swa (S_wa of the 4
// columns, one per 64-bit lane): accumulator, then the epilogue.
__attribute__((always_inline)) inline void vector_finish(
    const MBBConvArgs& a, __m256i swa, int64_t n, int64_t y, int64_t g,
    int64_t o, int64_t b) {
  const MBBConvShape& s = a.s;
  const int64_t x0 = b * kMBBLanes;
  const int64_t base = ((n * s.O + o) * s.Ho + y) * s.Wo + x0;
  if (x0 + kMBBLanes > s.Wo || a.channels_last) {  // column by column
    alignas(32) int64_t lanes[kMBBLanes];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), swa);
    const int64_t columns = s.Wo - x0 < kMBBLanes ? s.Wo - x0 : kMBBLanes;
    for (int64_t l = 0; l < columns; ++l) {
      const int64_t acc = finish_accumulator(a, n, y, x0 + l, g, o, lanes[l]);
      const int64_t at = mbb_out_index(s, a.channels_last, n, o, y, x0 + l);
      if (a.out != nullptr)
        a.out[at] = mbb_epilogue(acc, a.scale[o], a.bias[o]);
      else
        a.out_acc[at] = static_cast<int32_t>(acc);
    }
    return;
  }
  const int32_t* act_sum = a.act_sum + ((n * s.Ho + y) * s.Wo + x0) * s.G + g;
  const __m128i sums =
      s.G == 1 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(act_sum))
               : _mm_setr_epi32(act_sum[0], act_sum[s.G], act_sum[2 * s.G],
                                act_sum[3 * s.G]);
  // wq = 2 * S_wa - Mmax * S_a; the products fit 32 x 32 -> 64 bits.
  const __m256i mmax = _mm256_set1_epi64x((int64_t{1} << s.M) - 1);
  __m256i acc = _mm256_sub_epi64(
      _mm256_add_epi64(swa, swa),
      _mm256_mul_epi32(_mm256_cvtepi32_epi64(sums), mmax));
  if (s.is_signed) {
    const int64_t* ky = a.ky_range + 2 * y;
    alignas(32) int64_t wsum[kMBBLanes];
    for (int64_t l = 0; l < kMBBLanes; ++l) {
      const int64_t* kx = a.kx_range + 2 * (x0 + l);
      wsum[l] = mbb_weight_sum(s, a.wsum_prefix, o, ky[0], ky[1], kx[0], kx[1]);
    }
    const __m256i levels = _mm256_set1_epi64x((int64_t{1} << s.K) - 1);
    acc = _mm256_sub_epi64(
        _mm256_add_epi64(acc, acc),
        _mm256_mul_epi32(
            _mm256_load_si256(reinterpret_cast<const __m256i*>(wsum)),
            levels));
  }
  // The low 32 bits of each lane (the accumulator fits int32).
  const __m128i acc32 = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(
      acc, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
  if (a.out != nullptr) {
    // float(acc) * scale + bias: two roundings (the target has no FMA).
    const __m128 scaled =
        _mm_mul_ps(_mm_cvtepi32_ps(acc32), _mm_set1_ps(a.scale[o]));
    _mm_storeu_ps(a.out + base, _mm_add_ps(scaled, _mm_set1_ps(a.bias[o])));
  } else {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out_acc + base), acc32);
  }
}

template <int OB, int PV>
inline void vector_tile(const MBBConvArgs& a, const TileRuns& r, int64_t n,
                        int64_t y, int64_t g, int64_t o0, int64_t b0) {
  const MBBConvShape& s = a.s;
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2,
                                       3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                       2, 3, 2, 3, 3, 4);
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  __m256i total[OB][PV];  // S_wa, one 64-bit lane per column
  for (int i = 0; i < OB; ++i)
    for (int v = 0; v < PV; ++v) total[i][v] = zero;
  for (int64_t m = 0; m < s.M; ++m) {
    for (int64_t k = 0; k < s.K; ++k) {
      const __m128i shift = _mm_cvtsi64_si128(m + k);
      // Byte counters gain at most 8 per step: widen them every 31 steps
      // (vpsadbw sums the 8 bytes of each 64-bit lane).
      __m256i count8[OB][PV];
      for (int i = 0; i < OB; ++i)
        for (int v = 0; v < PV; ++v) count8[i][v] = zero;
      int steps = 0;
      for (int64_t run = 0; run < r.runs; ++run) {
        const uint64_t* wp =
            r.weight + m * r.weight_plane + run * r.run_stride;
        const uint64_t* pp =
            r.patch + k * r.act_plane + run * r.run_words * kMBBLanes;
        for (int64_t q = 0; q < r.run_words; ++q) {
          __m256i av[PV];
          for (int v = 0; v < PV; ++v)
            av[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                pp + v * r.block_stride + q * kMBBLanes));
          for (int i = 0; i < OB; ++i) {
            const __m256i w = _mm256_set1_epi64x(
                static_cast<long long>(wp[i * r.channel_words + q]));
            for (int v = 0; v < PV; ++v) {
              __m256i lo = _mm256_and_si256(w, av[v]);
              __m256i hi = _mm256_srli_epi16(lo, 4);
              lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(lo, nibble));
              hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(hi, nibble));
              count8[i][v] = _mm256_add_epi8(count8[i][v], lo);
              count8[i][v] = _mm256_add_epi8(count8[i][v], hi);
            }
          }
          if (++steps == 31) {
            for (int i = 0; i < OB; ++i)
              for (int v = 0; v < PV; ++v) {
                total[i][v] = _mm256_add_epi64(
                    total[i][v],
                    _mm256_sll_epi64(_mm256_sad_epu8(count8[i][v], zero),
                                     shift));
                count8[i][v] = zero;
              }
            steps = 0;
          }
        }
      }
      for (int i = 0; i < OB; ++i)
        for (int v = 0; v < PV; ++v)
          total[i][v] = _mm256_add_epi64(
              total[i][v],
              _mm256_sll_epi64(_mm256_sad_epu8(count8[i][v], zero), shift));
    }
  }
  for (int i = 0; i < OB; ++i)
    for (int v = 0; v < PV; ++v)
      vector_finish(a, total[i][v], n, y, g, o0 + i, b0 + v);
}

}  // namespace mbb_avx2
}  // namespace mmbinary

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// ---- avx512 (AVX-512 VPOPCNTDQ) --------------------------------------------
#if defined(__clang__)
#pragma clang attribute push(                                               \
    __attribute__((target(                                                  \
        "avx2,popcnt,avx512f,avx512vl,avx512bw,avx512vpopcntdq"))),        \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,popcnt,avx512f,avx512vl,avx512bw,avx512vpopcntdq")
// GCC 12 warns inside its own _mm512_castsi256_si512 (undefined upper half).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace mmbinary {
namespace mbb_avx512 {

struct TileRuns;  // defined in mbb_conv2d_kernels.h, included below

// As mbb_avx2::vector_tile, with 64-bit lane popcounts (vpopcntq): two
// blocks of the patch in one 512-bit vector, 8 output channels per tile.
template <int OB, int PV>
inline void vector_tile(const MBBConvArgs& a, const TileRuns& r, int64_t n,
                        int64_t y, int64_t g, int64_t o0, int64_t b0);

#define MMBINARY_MBB_POPCOUNT(x) __builtin_popcountll(x)
#define MMBINARY_MBB_QUANTIZE_ROW ::mmbinary::mbb_avx2::quantize_row_avx2
#define MMBINARY_MBB_VECTOR_TILE 1
#define MMBINARY_MBB_TILE_CHANNELS 8
#include "mbb_conv2d_kernels.h"
#undef MMBINARY_MBB_TILE_CHANNELS
#undef MMBINARY_MBB_VECTOR_TILE
#undef MMBINARY_MBB_QUANTIZE_ROW
#undef MMBINARY_MBB_POPCOUNT

template <int OB, int PV>
inline void vector_tile(const MBBConvArgs& a, const TileRuns& r, int64_t n,
                        int64_t y, int64_t g, int64_t o0, int64_t b0) {
  const MBBConvShape& s = a.s;
  if constexpr (PV == 2) {
    __m512i total[OB];  // S_wa, one 64-bit lane per column of both blocks
    for (int i = 0; i < OB; ++i) total[i] = _mm512_setzero_si512();
    for (int64_t m = 0; m < s.M; ++m) {
      for (int64_t k = 0; k < s.K; ++k) {
        __m512i count[OB];
        for (int i = 0; i < OB; ++i) count[i] = _mm512_setzero_si512();
        for (int64_t run = 0; run < r.runs; ++run) {
          const uint64_t* wp =
              r.weight + m * r.weight_plane + run * r.run_stride;
          const uint64_t* pp =
              r.patch + k * r.act_plane + run * r.run_words * kMBBLanes;
          for (int64_t q = 0; q < r.run_words; ++q) {
            const __m256i lo = _mm256_loadu_si256(
                reinterpret_cast<const __m256i*>(pp + q * kMBBLanes));
            const __m256i hi = _mm256_loadu_si256(reinterpret_cast<
                const __m256i*>(pp + r.block_stride + q * kMBBLanes));
            const __m512i av =
                _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            for (int i = 0; i < OB; ++i) {
              const __m512i w = _mm512_set1_epi64(
                  static_cast<long long>(wp[i * r.channel_words + q]));
              count[i] = _mm512_add_epi64(
                  count[i], _mm512_popcnt_epi64(_mm512_and_si512(w, av)));
            }
          }
        }
        const __m128i shift = _mm_cvtsi64_si128(m + k);
        for (int i = 0; i < OB; ++i)
          total[i] = _mm512_add_epi64(total[i],
                                      _mm512_sll_epi64(count[i], shift));
      }
    }
    for (int i = 0; i < OB; ++i) {
      mbb_avx2::vector_finish(a, _mm512_castsi512_si256(total[i]), n, y, g,
                              o0 + i, b0);
      mbb_avx2::vector_finish(a, _mm512_extracti64x4_epi64(total[i], 1), n,
                              y, g, o0 + i, b0 + 1);
    }
  } else {
    __m256i total[OB];
    for (int i = 0; i < OB; ++i) total[i] = _mm256_setzero_si256();
    for (int64_t m = 0; m < s.M; ++m) {
      for (int64_t k = 0; k < s.K; ++k) {
        __m256i count[OB];
        for (int i = 0; i < OB; ++i) count[i] = _mm256_setzero_si256();
        for (int64_t run = 0; run < r.runs; ++run) {
          const uint64_t* wp =
              r.weight + m * r.weight_plane + run * r.run_stride;
          const uint64_t* pp =
              r.patch + k * r.act_plane + run * r.run_words * kMBBLanes;
          for (int64_t q = 0; q < r.run_words; ++q) {
            const __m256i av = _mm256_loadu_si256(
                reinterpret_cast<const __m256i*>(pp + q * kMBBLanes));
            for (int i = 0; i < OB; ++i) {
              const __m256i w = _mm256_set1_epi64x(
                  static_cast<long long>(wp[i * r.channel_words + q]));
              count[i] = _mm256_add_epi64(
                  count[i], _mm256_popcnt_epi64(_mm256_and_si256(w, av)));
            }
          }
        }
        const __m128i shift = _mm_cvtsi64_si128(m + k);
        for (int i = 0; i < OB; ++i)
          total[i] = _mm256_add_epi64(total[i],
                                      _mm256_sll_epi64(count[i], shift));
      }
    }
    for (int i = 0; i < OB; ++i)
      mbb_avx2::vector_finish(a, total[i], n, y, g, o0 + i, b0);
  }
}

}  // namespace mbb_avx512
}  // namespace mmbinary

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

#endif  // x86-64 with GCC or clang
