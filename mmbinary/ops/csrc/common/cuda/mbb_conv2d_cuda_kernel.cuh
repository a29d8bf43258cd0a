// Copyright (c) mmbinary contributors. All rights reserved.
// CUDA kernels of the packed MBB conv; plain CUDA, no torch headers.
// Format, formulas and the float arithmetic: see common/mbb_conv2d.h (the
// shared helpers there are __host__ __device__ under nvcc and use
// __fmul_rn / __fadd_rn / rintf on the device, so nothing is contracted
// into an FMA and the results equal the CPU kernels bit for bit).
#pragma once

#include <cstdint>

#include "../mbb_conv2d.h"

namespace mmbinary {

// One thread per output word: (n, g, j, spatial position), the position
// fastest so that the reads of one channel row are coalesced. Writes the
// K plane words of word j of group g at that position.
//   x:   (N, C, H * W) float input, contiguous.
//   out: (N, H * W, G, K, Wg) words, contiguous.
__global__ void mbb_quantize_pack_cuda_kernel(
    const float* __restrict__ x, unsigned long long* __restrict__ out,
    MBBConvShape s, float inv_step) {
  const int64_t S = s.H * s.W;
  const int64_t total = s.N * s.G * s.Wg * S;
  const float levels = static_cast<float>((1 << s.K) - 1);
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) +
                       threadIdx.x;
       index < total; index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t pos = index % S;
    const int64_t j = (index / S) % s.Wg;
    const int64_t g = (index / (S * s.Wg)) % s.G;
    const int64_t n = index / (S * s.Wg * s.G);
    const int64_t c_begin = j * kMBBWordBits;
    const int64_t c_end =
        c_begin + kMBBWordBits < s.Cg ? c_begin + kMBBWordBits : s.Cg;
    unsigned long long words[kMBBMaxBits];
#pragma unroll
    for (int k = 0; k < kMBBMaxBits; ++k) words[k] = 0ULL;
    const float* row = x + (n * s.C + g * s.Cg) * S + pos;
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int32_t q =
          mbb_quantize_level(row[c * S], inv_step, levels, s.is_signed);
      const int bit = static_cast<int>(c - c_begin);
#pragma unroll
      for (int k = 0; k < kMBBMaxBits; ++k)
        words[k] |= static_cast<unsigned long long>((q >> k) & 1) << bit;
    }
    unsigned long long* dst =
        out + ((n * S + pos) * s.G + g) * s.K * s.Wg + j;
#pragma unroll
    for (int k = 0; k < kMBBMaxBits; ++k)
      if (k < s.K) dst[k * s.Wg] = words[k];
  }
}

// One thread per output (n, o, y, x), x fastest. Sums over the valid taps
// only (padded taps read nothing):
//   S_wa = sum_{m,k} 2^(m+k) popc(W_m & A_k),  S_a = sum_k 2^k popc(A_k),
//   wq = 2 S_wa - (2^M - 1) S_a;  unsigned: acc = wq;
//   signed: acc = 2 wq - L * (sum of w over the valid taps), where a tap's
//   weight sum is 2 * sum_m 2^m popc(W_m) - (2^M - 1) * Cg.
// Writes out_acc[n, o, y, x] = acc, or out = float(acc) * scale + bias.
//   act:    (N, H, W, G, K, Wg) words;  weight: (O, M, kh, kw, Wg) words.
__global__ void mbb_conv2d_cuda_kernel(
    const unsigned long long* __restrict__ act,
    const unsigned long long* __restrict__ weight, int* __restrict__ out_acc,
    float* __restrict__ out, const float* __restrict__ scale,
    const float* __restrict__ bias, MBBConvShape s) {
  const int64_t total = s.N * s.O * s.Ho * s.Wo;
  const int64_t taps = s.kh * s.kw;
  const int64_t pixel_words = s.G * s.K * s.Wg;
  const int64_t mmax = (int64_t{1} << s.M) - 1;
  const int64_t levels = (int64_t{1} << s.K) - 1;
  const unsigned long long last_mask = mbb_word_mask(s.Wg - 1, s.Cg);
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) +
                       threadIdx.x;
       index < total; index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t x = index % s.Wo;
    const int64_t y = (index / s.Wo) % s.Ho;
    const int64_t o = (index / (s.Wo * s.Ho)) % s.O;
    const int64_t n = index / (s.Wo * s.Ho * s.O);
    const int64_t g = o / s.Og;
    int64_t ky0, ky1, kx0, kx1;
    mbb_valid_taps(y, s.H, s.kh, s.sh, s.ph, s.dh, &ky0, &ky1);
    mbb_valid_taps(x, s.W, s.kw, s.sw, s.pw, s.dw, &kx0, &kx1);
    const unsigned long long* act_g =
        act + n * s.H * s.W * pixel_words + g * s.K * s.Wg;
    const unsigned long long* weight_o = weight + o * s.M * taps * s.Wg;
    int64_t swa = 0, sa = 0, wn = 0;  // wn: sum of 2^m popc(W_m)
    for (int64_t ky = ky0; ky < ky1; ++ky) {
      const int64_t iy = y * s.sh - s.ph + ky * s.dh;
      for (int64_t kx = kx0; kx < kx1; ++kx) {
        const int64_t ix = x * s.sw - s.pw + kx * s.dw;
        const unsigned long long* a = act_g + (iy * s.W + ix) * pixel_words;
        const unsigned long long* w = weight_o + (ky * s.kw + kx) * s.Wg;
        for (int64_t j = 0; j < s.Wg; ++j) {
          const unsigned long long mask = j == s.Wg - 1 ? last_mask : ~0ULL;
          for (int64_t k = 0; k < s.K; ++k) {
            const unsigned long long aw = a[k * s.Wg + j] & mask;
            sa += static_cast<int64_t>(__popcll(aw)) << k;
            for (int64_t m = 0; m < s.M; ++m)
              swa += static_cast<int64_t>(
                         __popcll(w[m * taps * s.Wg + j] & aw))
                     << (m + k);
          }
          if (s.is_signed) {
            for (int64_t m = 0; m < s.M; ++m)
              wn += static_cast<int64_t>(
                        __popcll(w[m * taps * s.Wg + j] & mask))
                    << m;
          }
        }
      }
    }
    int64_t acc = 2 * swa - mmax * sa;
    if (s.is_signed) {
      const int64_t valid = (ky1 - ky0) * (kx1 - kx0);
      acc = 2 * acc - levels * (2 * wn - mmax * s.Cg * valid);
    }
    if (out != nullptr)
      out[index] = mbb_epilogue(acc, scale[o], bias[o]);
    else
      out_acc[index] = static_cast<int>(acc);
  }
}

}  // namespace mmbinary
