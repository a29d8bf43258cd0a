// Copyright (c) mmbinary contributors. All rights reserved.
// CUDA kernel of sign packing; plain CUDA, no torch headers.
// Format: see common/pack_signs.h.
#pragma once

#include <cstdint>

namespace mmbinary {

// One thread per output word; consecutive threads take consecutive spatial
// positions, so the reads of one channel row are coalesced.
//   x:   (N, C, S) input, contiguous.
//   out: (N, S, W) output words, contiguous, W = ceil(C / 64).
template <typename T>
__global__ void pack_signs_cuda_kernel(const T* __restrict__ x,
                                       unsigned long long* __restrict__ out,
                                       int64_t N, int64_t C, int64_t S,
                                       int64_t W) {
  const int64_t total = N * W * S;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) +
                       threadIdx.x;
       index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t s = index % S;
    const int64_t w = (index / S) % W;
    const int64_t n = index / (S * W);
    const int64_t c_begin = w * 64;
    const int64_t c_end = c_begin + 64 < C ? c_begin + 64 : C;
    unsigned long long word = 0ULL;
    for (int64_t c = c_begin; c < c_end; ++c) {
      const bool positive = static_cast<float>(x[(n * C + c) * S + s]) > 0.f;
      word |= static_cast<unsigned long long>(positive) << (c - c_begin);
    }
    out[(n * S + s) * W + w] = word;
  }
}

}  // namespace mmbinary
