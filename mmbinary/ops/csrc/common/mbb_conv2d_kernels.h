// Copyright (c) mmbinary contributors. All rights reserved.
// CPU kernels of the packed MBB conv, compiled once per instruction-set
// variant. No include guard on purpose: mbb_conv2d.h includes this file in
// namespace mmbinary::mbb_generic, mbb_conv2d_x86.h again in
// mmbinary::mbb_popcnt and mmbinary::mbb_avx2 under a target pragma, so the
// same source becomes the portable, the popcnt and the AVX2 kernels.
//
// The includer defines
//   MMBINARY_MBB_POPCOUNT(x)          popcount of a uint64_t;
//   MMBINARY_MBB_QUANTIZE_ROW         a function template <bool SIGNED>
//                                     (x, q, len, inv_step, levels) that
//                                     writes the levels q of len inputs;
//   MMBINARY_MBB_VECTOR_TILE          (AVX2, AVX-512) when
//                                     vector_tile<OB, PV> computes and
//                                     writes tiles of OB channels x PV
//                                     blocks of 4 columns;
//   MMBINARY_MBB_TILE_CHANNELS        optionally, the channels per tile.
// Types and the other pre-passes come from mbb_conv2d.h. No lambdas and no
// standard-library calls in here, so everything compiles with the target.
//
// How the convolution runs: a work item is one output row (n, y) of a chunk
// of output channels. For each group it meets, it gathers the row's patch:
// blocks of 4 output columns, each holding, per activation plane k, the
// words of the kernel taps the block reads (valid kernel rows x the union
// of the columns' valid kernel columns, then words), interleaved by column:
// (K, taps * Wg, 4). Taps outside the input for all 4 columns are never
// read; inside a block whose columns disagree, a column's invalid taps are
// zero words (they add 0). A tile (output channels x 4 columns) is then a
// small GEMM over contiguous words: the weights of one valid kernel row are
// contiguous, and so is the patch.

// ---- pre-passes (popcounts of the activation and weight words) -----------

// level_sum[n, iy, ix, g] = sum over the group's channels of q, for the
// input rows [row_begin, row_end) of the flattened (N * H) axis.
inline void level_sums(const MBBConvShape& s, const uint64_t* act,
                       int32_t* level_sum, int64_t row_begin,
                       int64_t row_end) {
  if (s.G == 1 && s.Cg % kMBBWordBits == 0) {
    // Whole words (no channel mask), a pixel's K * Wg words in a row: two
    // running counts so that the adds do not wait on each other.
    const int64_t words_per_pixel = s.K * s.Wg;
    for (int64_t pixel = row_begin * s.W; pixel < row_end * s.W; ++pixel) {
      const uint64_t* words = act + pixel * words_per_pixel;
      int32_t total = 0;
      for (int64_t k = 0; k < s.K; ++k) {
        const uint64_t* plane = words + k * s.Wg;
        int32_t even = 0, odd = 0;
        int64_t j = 0;
        for (; j + 1 < s.Wg; j += 2) {
          even += MMBINARY_MBB_POPCOUNT(plane[j]);
          odd += MMBINARY_MBB_POPCOUNT(plane[j + 1]);
        }
        if (j < s.Wg) even += MMBINARY_MBB_POPCOUNT(plane[j]);
        total += (even + odd) << k;
      }
      level_sum[pixel] = total;
    }
    return;
  }
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t ix = 0; ix < s.W; ++ix) {
      const int64_t pixel = r * s.W + ix;
      for (int64_t g = 0; g < s.G; ++g) {
        const uint64_t* words = act + (pixel * s.G + g) * s.K * s.Wg;
        int32_t total = 0;
        for (int64_t k = 0; k < s.K; ++k) {
          int32_t count = 0;
          for (int64_t j = 0; j < s.Wg; ++j)
            count += MMBINARY_MBB_POPCOUNT(words[k * s.Wg + j] &
                                           mbb_word_mask(j, s.Cg));
          total += count << k;
        }
        level_sum[pixel * s.G + g] = total;
      }
    }
  }
}

// Signed mode: wsum_prefix[o, a, b] = sum of the weight codes w over the
// taps ky < a, kx < b (2-D prefix sums), for output channels [o_begin,
// o_end). The sum over a rectangle of valid taps then takes four reads.
inline void weight_sum_prefix(const MBBConvShape& s, const uint64_t* weight,
                              int64_t* prefix, int64_t o_begin,
                              int64_t o_end) {
  const int64_t mmax = (int64_t{1} << s.M) - 1;
  const int64_t rows = s.kh + 1, cols = s.kw + 1;
  for (int64_t o = o_begin; o < o_end; ++o) {
    int64_t* p = prefix + o * rows * cols;
    for (int64_t b = 0; b < cols; ++b) p[b] = 0;
    for (int64_t ky = 0; ky < s.kh; ++ky) {
      p[(ky + 1) * cols] = 0;
      int64_t row_total = 0;
      for (int64_t kx = 0; kx < s.kw; ++kx) {
        const int64_t taps = s.kh * s.kw;
        const uint64_t* words =
            weight + (o * s.M * taps + ky * s.kw + kx) * s.Wg;
        int64_t nsum = 0;  // sum over channels of the offset binary n
        for (int64_t m = 0; m < s.M; ++m) {
          int64_t count = 0;
          for (int64_t j = 0; j < s.Wg; ++j)
            count += MMBINARY_MBB_POPCOUNT(words[m * taps * s.Wg + j] &
                                           mbb_word_mask(j, s.Cg));
          nsum += count << m;
        }
        row_total += 2 * nsum - mmax * s.Cg;  // w = 2 n - Mmax
        p[(ky + 1) * cols + kx + 1] = p[ky * cols + kx + 1] + row_total;
      }
    }
  }
}

// ---- activation quantize + pack ------------------------------------------

// Quantizes and packs word j of group g of sample n at the spatial positions
// [s0, s0 + len), len <= kMBBPackChunk. x: (N, C, H * W) float input;
// out: (N, H * W, G, K, Wg) words.
template <int K, bool SIGNED>
inline void quantize_pack_block(const float* x, uint64_t* out,
                                const MBBConvShape& s, float inv_step,
                                int64_t n, int64_t g, int64_t j, int64_t s0,
                                int64_t len) {
  const int64_t S = s.H * s.W;
  const int64_t c_begin = j * kMBBWordBits;
  const int64_t c_end =
      s.Cg < c_begin + kMBBWordBits ? s.Cg : c_begin + kMBBWordBits;
  const float levels = static_cast<float>((1 << K) - 1);
  uint64_t acc[K][kMBBPackChunk];
  int32_t q[kMBBPackChunk];
  for (int k = 0; k < K; ++k)
    for (int64_t i = 0; i < len; ++i) acc[k][i] = 0;
  for (int64_t c = c_begin; c < c_end; ++c) {
    const float* row = x + (n * s.C + g * s.Cg + c) * S + s0;
    MMBINARY_MBB_QUANTIZE_ROW<SIGNED>(row, q, len, inv_step, levels);
    const int bit = static_cast<int>(c - c_begin);
    for (int k = 0; k < K; ++k)
      for (int64_t i = 0; i < len; ++i)
        acc[k][i] |= static_cast<uint64_t>((q[i] >> k) & 1) << bit;
  }
  const int64_t pixel_words = s.G * K * s.Wg;
  uint64_t* dst = out + (n * S + s0) * pixel_words + g * K * s.Wg + j;
  for (int64_t i = 0; i < len; ++i)
    for (int k = 0; k < K; ++k) dst[i * pixel_words + k * s.Wg] = acc[k][i];
}

template <int K, bool SIGNED>
inline void quantize_pack_items_k(const float* x, uint64_t* out,
                                  const MBBConvShape& s, float inv_step,
                                  int64_t begin, int64_t end) {
  const int64_t S = s.H * s.W;
  const int64_t blocks = (S + kMBBPackChunk - 1) / kMBBPackChunk;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item % blocks;
    const int64_t j = (item / blocks) % s.Wg;
    const int64_t g = (item / (blocks * s.Wg)) % s.G;
    const int64_t n = item / (blocks * s.Wg * s.G);
    const int64_t s0 = b * kMBBPackChunk;
    const int64_t len = S - s0 < kMBBPackChunk ? S - s0 : kMBBPackChunk;
    quantize_pack_block<K, SIGNED>(x, out, s, inv_step, n, g, j, s0, len);
  }
}

// Work items [begin, end) of N * G * Wg * ceil(H * W / kMBBPackChunk).
inline void quantize_pack_items(const float* x, uint64_t* out,
                                const MBBConvShape& s, float inv_step,
                                int64_t begin, int64_t end) {
#define MMBINARY_MBB_QP_CASE(KB)                                         \
  case KB:                                                               \
    if (s.is_signed)                                                     \
      quantize_pack_items_k<KB, true>(x, out, s, inv_step, begin, end);  \
    else                                                                 \
      quantize_pack_items_k<KB, false>(x, out, s, inv_step, begin, end); \
    break;
  switch (s.K) {
    MMBINARY_MBB_QP_CASE(1)
    MMBINARY_MBB_QP_CASE(2)
    MMBINARY_MBB_QP_CASE(3)
    MMBINARY_MBB_QP_CASE(4)
    MMBINARY_MBB_QP_CASE(5)
    MMBINARY_MBB_QP_CASE(6)
    MMBINARY_MBB_QP_CASE(7)
    MMBINARY_MBB_QP_CASE(8)
    default:
      break;
  }
#undef MMBINARY_MBB_QP_CASE
}

// Channels-last input: quantizes and packs the pixels [begin, end) of the
// flattened (N * H * W) axis. x: (N * H * W, C) float; out: (N * H * W, G,
// K, Wg) words. Channels MMBINARY_MBB_NHWC_STEP at a time where the includer
// vectorizes (MMBINARY_MBB_QUANTIZE_ROW writes their levels); returns
// whether a NaN was seen.
template <int K, bool SIGNED>
inline bool pack_pixels_nhwc_k(const float* x, uint64_t* out,
                               const MBBConvShape& s, float inv_step,
                               int64_t begin, int64_t end) {
  const float levels = static_cast<float>((1 << K) - 1);
  int32_t q[kMBBWordBits];
  bool nan = false;
  for (int64_t p = begin; p < end; ++p) {
    const float* pixel = x + p * s.C;
    uint64_t* dst = out + p * s.G * K * s.Wg;
    for (int64_t g = 0; g < s.G; ++g) {
      for (int64_t j = 0; j < s.Wg; ++j) {
        const int64_t c0 = g * s.Cg + j * kMBBWordBits;
        const int64_t rest = (g + 1) * s.Cg - c0;
        const int64_t count = rest < kMBBWordBits ? rest : kMBBWordBits;
        for (int64_t c = 0; c < count; ++c)
          nan |= pixel[c0 + c] != pixel[c0 + c];
        MMBINARY_MBB_QUANTIZE_ROW<SIGNED>(pixel + c0, q, count, inv_step,
                                          levels);
        for (int k = 0; k < K; ++k) {
          uint64_t word = 0;
          for (int64_t c = 0; c < count; ++c)
            word |= static_cast<uint64_t>((q[c] >> k) & 1) << c;
          dst[(g * K + k) * s.Wg + j] = word;
        }
      }
    }
  }
  return nan;
}

inline bool pack_pixels_nhwc(const float* x, uint64_t* out,
                             const MBBConvShape& s, float inv_step,
                             int64_t begin, int64_t end) {
#define MMBINARY_MBB_NHWC_CASE(KB)                                          \
  case KB:                                                                  \
    return s.is_signed                                                      \
               ? pack_pixels_nhwc_k<KB, true>(x, out, s, inv_step, begin,   \
                                              end)                          \
               : pack_pixels_nhwc_k<KB, false>(x, out, s, inv_step, begin,  \
                                               end);
  switch (s.K) {
    MMBINARY_MBB_NHWC_CASE(1)
    MMBINARY_MBB_NHWC_CASE(2)
    MMBINARY_MBB_NHWC_CASE(3)
    MMBINARY_MBB_NHWC_CASE(4)
    MMBINARY_MBB_NHWC_CASE(5)
    MMBINARY_MBB_NHWC_CASE(6)
    MMBINARY_MBB_NHWC_CASE(7)
    MMBINARY_MBB_NHWC_CASE(8)
    default:
      return false;
  }
#undef MMBINARY_MBB_NHWC_CASE
}

// ---- convolution ----------------------------------------------------------

// Gathers the patch of output row (n, y) for group g: block b at
// patch + b * K * T * Wg * 4, plane k at + k * T * Wg * 4, then the words
// of the taps (ky, kx) in [ky0, ky1) x block_taps[b], word j, column lane.
inline void build_row_patch(const MBBConvArgs& a, int64_t n, int64_t y,
                            int64_t g, uint64_t* patch) {
  const MBBConvShape& s = a.s;
  const int64_t Wg = s.Wg, K = s.K;
  const int64_t plane_words = s.kh * s.kw * Wg * kMBBLanes;
  const int64_t pixel_words = s.G * K * Wg;
  const int64_t ky0 = a.ky_range[2 * y], ky1 = a.ky_range[2 * y + 1];
  const int64_t blocks = (s.Wo + kMBBLanes - 1) / kMBBLanes;
  const uint64_t* act_g = a.act + n * s.H * s.W * pixel_words + g * K * Wg;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t* taps = a.block_taps + 3 * b;
    const int64_t kx0 = taps[0], kx1 = taps[1];
    const bool full = taps[2] != 0;
    for (int64_t k = 0; k < K; ++k) {
      uint64_t* dst = patch + (b * K + k) * plane_words;
      for (int64_t ky = ky0; ky < ky1; ++ky) {
        const int64_t iy = y * s.sh - s.ph + ky * s.dh;
        const uint64_t* row = act_g + iy * s.W * pixel_words + k * Wg;
        for (int64_t kx = kx0; kx < kx1; ++kx) {
          const uint64_t* src[kMBBLanes];
          for (int64_t l = 0; l < kMBBLanes; ++l) {
            const int64_t x = b * kMBBLanes + l;
            const bool valid =
                full || (x < s.Wo && kx >= a.kx_range[2 * x] &&
                         kx < a.kx_range[2 * x + 1]);
            src[l] = valid ? row + (x * s.sw - s.pw + kx * s.dw) * pixel_words
                           : nullptr;
          }
          for (int64_t j = 0; j < Wg; ++j, dst += kMBBLanes)
            for (int64_t l = 0; l < kMBBLanes; ++l)
              dst[l] = src[l] != nullptr ? src[l][j] : 0;
        }
      }
    }
  }
}

// Where the words of one tile are.
struct TileRuns {
  const uint64_t* weight;  // channel o0, plane 0, first tap read
  int64_t channel_words;   // to the next output channel: M * T * Wg
  int64_t weight_plane;    // to the next weight plane m: T * Wg
  int64_t run_stride;      // to the next valid kernel row: kw * Wg
  const uint64_t* patch;   // the tile's first block, plane 0
  int64_t block_stride;    // to the next block: K * T * Wg * 4
  int64_t act_plane;       // to the next activation plane k: T * Wg * 4
  int64_t runs;            // contiguous runs (valid kernel rows, or 1)
  int64_t run_words;       // words per run and column
};

// sum[i][l] = S_wa = sum_{m,k} 2^(m+k) popcount(W_m & A_k) for channel
// o0 + i and column lane l of one block, with scalar popcounts.
template <int OB>
inline void scalar_tile(const MBBConvShape& s, const TileRuns& r,
                        int64_t (&sum)[OB][kMBBLanes]) {
  constexpr int L = static_cast<int>(kMBBLanes);
  for (int i = 0; i < OB; ++i)
    for (int l = 0; l < L; ++l) sum[i][l] = 0;
  for (int64_t m = 0; m < s.M; ++m) {
    for (int64_t k = 0; k < s.K; ++k) {
      uint32_t count[OB][L];
      for (int i = 0; i < OB; ++i)
        for (int l = 0; l < L; ++l) count[i][l] = 0;
      for (int64_t run = 0; run < r.runs; ++run) {
        const uint64_t* wp =
            r.weight + m * r.weight_plane + run * r.run_stride;
        const uint64_t* pp =
            r.patch + k * r.act_plane + run * r.run_words * L;
        for (int64_t q = 0; q < r.run_words; ++q) {
          uint64_t av[L];
          for (int l = 0; l < L; ++l) av[l] = pp[q * L + l];
          for (int i = 0; i < OB; ++i) {
            const uint64_t w = wp[i * r.channel_words + q];
            for (int l = 0; l < L; ++l)
              count[i][l] += MMBINARY_MBB_POPCOUNT(w & av[l]);
          }
        }
      }
      for (int i = 0; i < OB; ++i)
        for (int l = 0; l < L; ++l)
          sum[i][l] += static_cast<int64_t>(count[i][l]) << (m + k);
    }
  }
}

// The accumulator of channel o, output (n, y, x) from its S_wa.
inline int64_t finish_accumulator(const MBBConvArgs& a, int64_t n, int64_t y,
                                  int64_t x, int64_t g, int64_t o,
                                  int64_t swa) {
  const MBBConvShape& s = a.s;
  const int64_t mmax = (int64_t{1} << s.M) - 1;
  const int64_t wq =
      2 * swa - mmax * a.act_sum[((n * s.Ho + y) * s.Wo + x) * s.G + g];
  if (!s.is_signed) return wq;
  const int64_t levels = (int64_t{1} << s.K) - 1;
  const int64_t* ky = a.ky_range + 2 * y;
  const int64_t* kx = a.kx_range + 2 * x;
  return 2 * wq -
         levels * mbb_weight_sum(s, a.wsum_prefix, o, ky[0], ky[1], kx[0],
                                 kx[1]);
}

// Writes the outputs of channels [o0, o0 + OB) at the existing columns of
// block b.
template <int OB>
inline void finish_block(const MBBConvArgs& a, int64_t n, int64_t y,
                         int64_t g, int64_t o0, int64_t b,
                         const int64_t (&sum)[OB][kMBBLanes]) {
  const MBBConvShape& s = a.s;
  const int64_t x0 = b * kMBBLanes;
  const int64_t columns = s.Wo - x0 < kMBBLanes ? s.Wo - x0 : kMBBLanes;
  for (int i = 0; i < OB; ++i) {
    const int64_t o = o0 + i;
    for (int64_t l = 0; l < columns; ++l) {
      const int64_t acc = finish_accumulator(a, n, y, x0 + l, g, o, sum[i][l]);
      const int64_t at = mbb_out_index(s, a.channels_last, n, o, y, x0 + l);
      if (a.out != nullptr)
        a.out[at] = mbb_epilogue(acc, a.scale[o], a.bias[o]);
      else
        a.out_acc[at] = static_cast<int32_t>(acc);
    }
  }
}

// Output row (n, y) of channels [o0, o0 + OB) of group g, whose patch is
// built: block by block (AVX2: two blocks at a time where they read the
// same taps).
template <int OB>
inline void run_row(const MBBConvArgs& a, const uint64_t* patch, int64_t n,
                    int64_t y, int64_t g, int64_t o0) {
  const MBBConvShape& s = a.s;
  const int64_t T = s.kh * s.kw, Wg = s.Wg;
  const int64_t ky0 = a.ky_range[2 * y], ky1 = a.ky_range[2 * y + 1];
  const int64_t blocks = (s.Wo + kMBBLanes - 1) / kMBBLanes;
  TileRuns r;
  r.channel_words = s.M * T * Wg;
  r.weight_plane = T * Wg;
  r.run_stride = s.kw * Wg;
  r.block_stride = s.K * T * Wg * kMBBLanes;
  r.act_plane = T * Wg * kMBBLanes;
  const uint64_t* weight_o0 = a.weight + o0 * r.channel_words;
  int64_t b = 0;
  while (b < blocks) {
    const int64_t* taps = a.block_taps + 3 * b;
    const int64_t kx0 = taps[0], kx1 = taps[1];
    r.weight = weight_o0 + (ky0 * s.kw + kx0) * Wg;
    r.patch = patch + b * r.block_stride;
    if (kx1 - kx0 == s.kw) {  // whole kernel rows: one contiguous run
      r.runs = 1;
      r.run_words = (ky1 - ky0) * s.kw * Wg;
    } else {
      r.runs = ky1 - ky0;
      r.run_words = (kx1 - kx0) * Wg;
    }
#ifdef MMBINARY_MBB_VECTOR_TILE
    if (b + 1 < blocks && taps[3] == kx0 && taps[4] == kx1) {
      vector_tile<OB, 2>(a, r, n, y, g, o0, b);
      b += 2;
    } else {
      vector_tile<OB, 1>(a, r, n, y, g, o0, b);
      b += 1;
    }
#else
    int64_t sum[OB][kMBBLanes];
    scalar_tile<OB>(s, r, sum);
    finish_block<OB>(a, n, y, g, o0, b, sum);
    b += 1;
#endif
  }
}

// Output channels per tile (the includer may set it).
#if defined(MMBINARY_MBB_TILE_CHANNELS)
constexpr int kTileChannels = MMBINARY_MBB_TILE_CHANNELS;
#elif defined(MMBINARY_MBB_VECTOR_TILE)
constexpr int kTileChannels = 4;
#else
constexpr int kTileChannels = 2;
#endif

// run_row<count> for a run-time count <= OB.
template <int OB>
inline void run_row_upto(const MBBConvArgs& a, const uint64_t* patch,
                         int64_t n, int64_t y, int64_t g, int64_t o0,
                         int64_t count) {
  if constexpr (OB > 1) {
    if (count < OB) {
      run_row_upto<OB - 1>(a, patch, n, y, g, o0, count);
      return;
    }
  }
  run_row<OB>(a, patch, n, y, g, o0);
}

// Work items [begin, end) of N * Ho * ceil(O / o_chunk): one output row of
// one chunk of output channels each, in tiles of up to kTileChannels
// channels of one group. `patch` holds mbb_patch_words() words.
inline void conv_items(const MBBConvArgs& a, uint64_t* patch, int64_t begin,
                       int64_t end) {
  const MBBConvShape& s = a.s;
  const int64_t chunks = (s.O + a.o_chunk - 1) / a.o_chunk;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t chunk = item % chunks;
    const int64_t y = (item / chunks) % s.Ho;
    const int64_t n = item / (chunks * s.Ho);
    const int64_t o_end =
        s.O < (chunk + 1) * a.o_chunk ? s.O : (chunk + 1) * a.o_chunk;
    int64_t patch_group = -1;
    int64_t o = chunk * a.o_chunk;
    while (o < o_end) {
      const int64_t g = o / s.Og;
      if (g != patch_group) {
        build_row_patch(a, n, y, g, patch);
        patch_group = g;
      }
      const int64_t group_end = (g + 1) * s.Og < o_end ? (g + 1) * s.Og : o_end;
      const int64_t count =
          group_end - o < kTileChannels ? group_end - o : kTileChannels;
      run_row_upto<kTileChannels>(a, patch, n, y, g, o, count);
      o += count;
    }
  }
}
