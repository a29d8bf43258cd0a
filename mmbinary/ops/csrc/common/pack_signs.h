// Copyright (c) mmbinary contributors. All rights reserved.
// Sign packing of a channel-first tensor into 64-bit words, channels last.
//
// Packing format (shared by every packed op of mmbinary):
//   input  (N, C, S) with S the flattened spatial size;
//   output (N, S, W) unsigned 64-bit words, W = ceil(C / 64);
//   channel c lives in word c / 64 at bit c % 64 (least significant first);
//   a bit is 1 where the value is > 0 (the code +1) and 0 elsewhere (-1);
//   the pad bits of the last word (channels C .. 64 * W - 1) are 0.
//
// Plain C++: no torch, so the CPU launcher and the tests share it.
#pragma once

#include <cstdint>

namespace mmbinary {

constexpr int64_t kWordBits = 64;

inline int64_t num_words(int64_t channels) {
  return (channels + kWordBits - 1) / kWordBits;
}

// Packs word `w` of sample `n` for the spatial positions [s_begin, s_end).
//   x:   (N, C, S) input, contiguous.
//   out: (N, S, W) output words, contiguous.
template <typename T>
inline void pack_signs_word(const T* x, uint64_t* out, int64_t n, int64_t w,
                            int64_t s_begin, int64_t s_end, int64_t C,
                            int64_t S) {
  constexpr int64_t kChunk = 256;
  const int64_t W = num_words(C);
  const int64_t c_begin = w * kWordBits;
  const int64_t c_end = c_begin + kWordBits < C ? c_begin + kWordBits : C;
  uint64_t acc[kChunk];
  for (int64_t s0 = s_begin; s0 < s_end; s0 += kChunk) {
    const int64_t len = s_end - s0 < kChunk ? s_end - s0 : kChunk;
    for (int64_t i = 0; i < len; ++i) acc[i] = 0;
    for (int64_t c = c_begin; c < c_end; ++c) {
      const T* row = x + (n * C + c) * S + s0;
      const int bit = static_cast<int>(c - c_begin);
      for (int64_t i = 0; i < len; ++i) {
        acc[i] |= static_cast<uint64_t>(row[i] > T(0)) << bit;
      }
    }
    for (int64_t i = 0; i < len; ++i) out[(n * S + s0 + i) * W + w] = acc[i];
  }
}

}  // namespace mmbinary
