// Copyright (c) mmbinary contributors. All rights reserved.
// The integer kernel of the packed MBB conv on AMX tiles (Intel Sapphire
// Rapids and later): the same u8 levels, s8 weight codes, exact int32
// accumulators and epilogue as the AVX-512 VNNI kernel
// (mbb_conv2d_int8_avx512.h), with tdpbusd doing a 16 x 16 x 64 block of
// multiply-adds per instruction instead of vpdpbusd's 16 x 4.
//
//   * A tile: 16 output pixels of one output row (rows of the tile) x 64
//     input channels (u8 levels) for one tap: row p starts at the level
//     pixel of output column x0 + p, so the tile stride is the stride in
//     pixels times the pixel's bytes, read straight from the zero-bordered
//     level buffer;
//   * B tile: 64 input channels (16 quads, the tile's rows) x 16 output
//     channels (4 bytes each), i.e. 1 KB of the VNNI weight layout as it
//     is (its quads padded to whole 64-channel words);
//   * C tiles: 16 pixels x 16 output channels of int32, 2 x 2 of them (32
//     pixels x 32 channels) per step, so each A and B tile loaded serves
//     two tdpbusd; blocks run in a two-stage pipeline (TilePipeline): a
//     block's accumulators are stored, the next block's products issued,
//     and the stored block's epilogue runs while the tile unit computes;
//   * 1x1 convs with at most 64 input channels (one tdpbusd per tile)
//     keep their weight tiles for a row and alternate two sets of
//     accumulators, each tile's product overlapping the epilogue of the
//     tile before (single_step_row);
//   * a row whose width is not a multiple of 16 computes its last 16
//     columns again from Wo - 16 (the same values written twice), so every
//     tile is full: the kernel needs Wo >= 16 (mbb_int8_amx_eligible).
// Every output is bit-identical to the VNNI and popcount kernels'.
#pragma once

#include "mbb_conv2d_int8_avx512.h"

#if defined(MMBINARY_MBB_HAVE_INT8_AVX512) && defined(__linux__) && \
    (defined(__clang__) || __GNUC__ >= 11)
#define MMBINARY_MBB_HAVE_INT8_AMX 1

namespace mmbinary {

// Output pixels (tile rows) per tile.
constexpr int64_t kMBBAmxRows = 16;

// Whether the AMX kernel can run a conv the integer kernel runs.
inline bool mbb_int8_amx_eligible(const MBBConvShape& s) {
  return s.Wo >= kMBBAmxRows;
}

// The 64-byte tile configuration (palette 1): tiles 0-3 the accumulators,
// 4-5 the activations, 6-7 the weights, each 16 rows of 64 bytes.
struct alignas(64) MBBAmxConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
  MBBAmxConfig() {
    for (int t = 0; t < 8; ++t) {
      colsb[t] = 64;
      rows[t] = 16;
    }
  }
};

}  // namespace mmbinary

#if defined(__clang__)
#pragma clang attribute push(                                               \
    __attribute__((target(                                                  \
        "avx2,avx512f,avx512vl,avx512bw,avx512vnni,amx-tile,amx-int8"))), \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target( \
    "avx2,avx512f,avx512vl,avx512bw,avx512vnni,amx-tile,amx-int8")
#endif

#include <immintrin.h>

namespace mmbinary {
namespace mbb_int8_amx {

// The accumulators of one tile block: NP tiles of 16 output columns
// (starting at x0[0], x0[1]) x NO blocks of 16 output channels (from block
// ob0) of output row (n, y). Tile 2 * i + v holds column tile i x channel
// block v.
struct TileBlock {
  int np = 0, no = 0;  // 0: none
  int64_t n = 0, y = 0, x0[2] = {0, 0}, ob0 = 0;
};

// Issues the products of a tile block: zeroes its accumulator tiles and
// runs every tap and 64-channel step through tdpbusd. The results are in
// the tiles once the tile unit is done (store_block waits for it).
template <int NP, int NO>
inline void compute_block(const MBBInt8Args& a, const TileBlock& b) {
  const MBBConvShape& s = a.s;
  const int64_t taps = s.kh * s.kw, C4 = mbb_int8_padded_quads(s.C);
  const int64_t tap_bytes = C4 * kMBBInt8Lanes * kMBBInt8Quad;
  const int64_t block_bytes = taps * tap_bytes;
  const int64_t a_stride = s.sw * a.pixel_bytes;
  const int8_t* w0 = a.weight + b.ob0 * block_bytes;
  _tile_zero(0);
  if (NO > 1) _tile_zero(1);
  if (NP > 1) _tile_zero(2);
  if (NP > 1 && NO > 1) _tile_zero(3);
  for (int64_t ky = 0; ky < s.kh; ++ky) {
    const uint8_t* src_row =
        a.levels + mbb_int8_row_offset(a, b.n, b.y * s.sh + ky * s.dh);
    for (int64_t kx = 0; kx < s.kw; ++kx) {
      const uint8_t* src0 =
          src_row + (b.x0[0] * s.sw + kx * s.dw) * a.pixel_bytes;
      const uint8_t* src1 =
          src_row + (b.x0[NP - 1] * s.sw + kx * s.dw) * a.pixel_bytes;
      const int8_t* w = w0 + (ky * s.kw + kx) * tap_bytes;
      for (int64_t j = 0; j < s.Wg; ++j) {
        const int64_t c_off = j * kMBBWordBits;  // 64 channels a step
        _tile_loadd(4, src0 + c_off, a_stride);
        if (NP > 1) _tile_loadd(5, src1 + c_off, a_stride);
        _tile_loadd(6, w + c_off * kMBBInt8Lanes, 64);
        if (NO > 1)
          _tile_loadd(7, w + block_bytes + c_off * kMBBInt8Lanes, 64);
        _tile_dpbusd(0, 4, 6);
        if (NO > 1) _tile_dpbusd(1, 4, 7);
        if (NP > 1) _tile_dpbusd(2, 5, 6);
        if (NP > 1 && NO > 1) _tile_dpbusd(3, 5, 7);
      }
    }
  }
}

inline void compute_block(const MBBInt8Args& a, const TileBlock& b) {
  if (b.np == 2 && b.no == 2)
    compute_block<2, 2>(a, b);
  else if (b.np == 2)
    compute_block<2, 1>(a, b);
  else if (b.no == 2)
    compute_block<1, 2>(a, b);
  else
    compute_block<1, 1>(a, b);
}

// A tile block's accumulators, (tile, 16 pixels, 16 channels) int32.
struct alignas(64) TileAccumulators {
  int32_t acc[4][kMBBAmxRows * kMBBInt8Lanes];
};

// Stores the accumulator tiles of block `b` (waits for its products).
inline void store_block(const TileBlock& b, TileAccumulators* to) {
  _tile_stored(0, to->acc[0], 64);
  if (b.no > 1) _tile_stored(1, to->acc[1], 64);
  if (b.np > 1) _tile_stored(2, to->acc[2], 64);
  if (b.np > 1 && b.no > 1) _tile_stored(3, to->acc[3], 64);
  __asm__ volatile("" ::: "memory");  // the stores before the loads after
}

// The epilogue of a stored tile block (mbb_int8_avx512::epilogue_rows).
inline void finish_block(const MBBInt8Args& a,
                         mbb_int8_avx512::MBBInt8EpilogueFn epilogue,
                         const TileBlock& b, const TileAccumulators& from) {
  for (int i = 0; i < b.np; ++i)
    for (int v = 0; v < b.no; ++v)
      epilogue(a, b.n, b.y, b.x0[i], kMBBAmxRows,
               (b.ob0 + v) * kMBBInt8Lanes, from.acc[2 * i + v]);
}

// Runs tile blocks one after the other so that each block's epilogue
// overlaps the next block's products: push(b) stores the block before
// (its products done), issues b's products, then runs the stored block's
// epilogue while the tile unit works on b; flush() finishes the last one.
class TilePipeline {
 public:
  TilePipeline(const MBBInt8Args& a,
               mbb_int8_avx512::MBBInt8EpilogueFn epilogue)
      : a_(a), epilogue_(epilogue) {}

  void push(const TileBlock& b) {
    const bool had = pending_.np > 0;
    if (had) store_block(pending_, &stored_);
    const TileBlock done = pending_;
    compute_block(a_, b);
    pending_ = b;
    if (had) finish_block(a_, epilogue_, done, stored_);
  }

  void flush() {
    if (pending_.np == 0) return;
    store_block(pending_, &stored_);
    finish_block(a_, epilogue_, pending_, stored_);
    pending_ = TileBlock();
  }

 private:
  const MBBInt8Args& a_;
  mbb_int8_avx512::MBBInt8EpilogueFn epilogue_;
  TileBlock pending_;
  TileAccumulators stored_;
};

// One tdpbusd step of a 1x1 conv with at most 64 input channels (see
// single_step_row), on tile set Set: zero the accumulators (tiles 0-1 for
// set 0, 2-3 for set 1; one of them for NO = 1), load the 16 output pixels
// from column x0 into the activation tile (4, 5), multiply by the weight
// tiles 6 (and 7). The tile numbers are literals (GCC's AMX intrinsics
// paste them into the instruction).
template <int Set, int NO>
inline void single_step_issue(const MBBInt8Args& a, const uint8_t* src_row,
                              int64_t x0) {
  const uint8_t* src = src_row + x0 * a.s.sw * a.pixel_bytes;
  const int64_t stride = a.s.sw * a.pixel_bytes;
  if constexpr (Set == 0) {
    _tile_zero(0);
    if (NO > 1) _tile_zero(1);
    _tile_loadd(4, src, stride);
    _tile_dpbusd(0, 4, 6);
    if (NO > 1) _tile_dpbusd(1, 4, 7);
  } else {
    _tile_zero(2);
    if (NO > 1) _tile_zero(3);
    _tile_loadd(5, src, stride);
    _tile_dpbusd(2, 5, 6);
    if (NO > 1) _tile_dpbusd(3, 5, 7);
  }
}

// Tile set Set's accumulators to memory, then their epilogue.
template <int Set, int NO>
inline void single_step_finish(const MBBInt8Args& a,
                               mbb_int8_avx512::MBBInt8EpilogueFn epilogue,
                               int64_t n, int64_t y, int64_t x0, int64_t ob) {
  alignas(64) int32_t acc[2][kMBBAmxRows * kMBBInt8Lanes];
  if constexpr (Set == 0) {
    _tile_stored(0, acc[0], 64);
    if (NO > 1) _tile_stored(1, acc[1], 64);
  } else {
    _tile_stored(2, acc[0], 64);
    if (NO > 1) _tile_stored(3, acc[1], 64);
  }
  __asm__ volatile("" ::: "memory");  // the stores before the loads below
  for (int v = 0; v < NO; ++v)
    epilogue(a, n, y, x0, kMBBAmxRows, (ob + v) * kMBBInt8Lanes, acc[v]);
}

// Output row (n, y) of NO blocks of 16 output channels (from block ob) of
// a 1x1 conv with at most 64 input channels (one tdpbusd per tile; the
// im2col stems, expand convs), where reloading the weight tiles for each
// block would cost as much as its one product. Here they stay loaded for
// the row and
// the 16-pixel tiles alternate between accumulators 0-1 and 2-3, so that
// one tile's product runs while the tile before goes through the epilogue.
template <int NO>
inline void single_step_row(const MBBInt8Args& a,
                            mbb_int8_avx512::MBBInt8EpilogueFn epilogue,
                            int64_t n, int64_t y, int64_t ob) {
  const MBBConvShape& s = a.s;
  const uint8_t* src_row = a.levels + mbb_int8_row_offset(a, n, y * s.sh);
  // one tap of 64 channels: a block's weights are one 1 KB tile
  const int64_t block_bytes =
      mbb_int8_padded_quads(s.C) * kMBBInt8Lanes * kMBBInt8Quad;
  const int8_t* w = a.weight + ob * block_bytes;
  _tile_loadd(6, w, 64);
  if (NO > 1) _tile_loadd(7, w + block_bytes, 64);
  const int64_t groups = (s.Wo + kMBBAmxRows - 1) / kMBBAmxRows;
  auto column = [&](int64_t g) {
    return std::min(g * kMBBAmxRows, s.Wo - kMBBAmxRows);
  };
  for (int64_t g = 0; g < groups; ++g) {
    if (g % 2 == 0) {
      single_step_issue<0, NO>(a, src_row, column(g));
      if (g > 0)
        single_step_finish<1, NO>(a, epilogue, n, y, column(g - 1), ob);
    } else {
      single_step_issue<1, NO>(a, src_row, column(g));
      single_step_finish<0, NO>(a, epilogue, n, y, column(g - 1), ob);
    }
  }
  if ((groups - 1) % 2 == 0)
    single_step_finish<0, NO>(a, epilogue, n, y, column(groups - 1), ob);
  else
    single_step_finish<1, NO>(a, epilogue, n, y, column(groups - 1), ob);
}

// Work items [begin, end) of (chunk of a.o_blocks output-channel blocks,
// sample, output row), as the VNNI kernel's conv_items (`before_row`: see
// MBBInt8RowFill). Loads the tile configuration and releases the tiles
// (per thread).
inline void conv_items(const MBBInt8Args& a, int64_t begin, int64_t end,
                       const MBBInt8RowFill* before_row = nullptr) {
  const MBBConvShape& s = a.s;
  const MBBAmxConfig config;
  __asm__ volatile("" ::: "memory");  // the whole config stored first
  _tile_loadconfig(&config);
  const mbb_int8_avx512::MBBInt8EpilogueFn epilogue =
      mbb_int8_avx512::pick_epilogue(a);
  const int64_t OB = mbb_int8_blocks(s.O);
  // Column starts of the 16-pixel tiles; the last one is moved back to
  // Wo - 16 when Wo is not a multiple of 16.
  const int64_t groups = (s.Wo + kMBBAmxRows - 1) / kMBBAmxRows;
  const bool single_step = s.kh * s.kw == 1 && s.Wg == 1;
  TilePipeline pipeline(a, epilogue);
  for (int64_t item = begin; item < end; ++item) {
    // rows fastest: consecutive items share the chunk's weights
    const int64_t rows = s.N * s.Ho;
    const int64_t chunk = item / rows, r = item % rows;
    const int64_t n = r / s.Ho, y = r % s.Ho;
    const int64_t ob_end = std::min(OB, (chunk + 1) * a.o_blocks);
    if (before_row != nullptr) {
      // the block before done with the row buffer before it is refilled
      pipeline.flush();
      (*before_row)(n, y);
    }
    if (single_step) {
      for (int64_t ob = chunk * a.o_blocks; ob < ob_end; ob += 2) {
        if (ob + 1 < ob_end)
          single_step_row<2>(a, epilogue, n, y, ob);
        else
          single_step_row<1>(a, epilogue, n, y, ob);
      }
      continue;
    }
    for (int64_t g = 0; g < groups; g += 2) {
      TileBlock b;
      b.n = n, b.y = y;
      for (int i = 0; i < 2; ++i)
        b.x0[i] = std::min((g + i) * kMBBAmxRows, s.Wo - kMBBAmxRows);
      b.np = g + 1 < groups ? 2 : 1;
      for (int64_t ob = chunk * a.o_blocks; ob < ob_end; ob += 2) {
        b.ob0 = ob;
        b.no = ob + 1 < ob_end ? 2 : 1;
        pipeline.push(b);
      }
    }
  }
  pipeline.flush();
  _tile_release();
}

}  // namespace mbb_int8_amx
}  // namespace mmbinary

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // MMBINARY_MBB_HAVE_INT8_AVX512 and Linux
