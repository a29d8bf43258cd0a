// Copyright (c) mmbinary contributors. All rights reserved.
// Fused channels-last float32 depthwise conv + per-channel scale and bias
// (the folded batch norm) + activation clamp (ReLU6), writing the float
// output and/or quantizing it straight into the activation words of the
// next packed MBB conv (docs/packed_format.md). Plain C++, no torch.
//
// The float value of output (n, c, y, x), in float32, taps in the order
// ky, kx over the valid taps only (a padded tap adds 0 in a float conv as
// well), each tap one fused multiply-add (one rounding), the rest without
// (the build uses -ffp-contract=off):
//   acc = 0; acc = fma(in[n, iy, ix, c], w[c, ky, kx], acc)  (each valid tap)
//   v   = acc * scale[c] + bias[c]
//   v   = min(max(v, act_min), act_max)   (NaN stays NaN)
// and its level q = mbb_quantize_level(v, ...) (the order of that function).
// Every variant (portable, AVX-512) computes these same floats. With scale
// 1 (a norm folded into the conv), that is the order of oneDNN's
// channels-last depthwise conv, which torch runs on x86 CPUs: the packed
// flow checks the two give the same floats before it uses the op
// (packed_flow.py).
#pragma once

#include <cmath>
#include <cstdint>

#include "mbb_conv2d.h"

namespace mmbinary {

// Everything the fused depthwise kernel reads and writes.
struct DepthwisePackArgs {
  int64_t N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo;
  const float* input;    // (N, H, W, C) channels-last
  const float* weight;   // (kh * kw, C16) tap-major, zero padded to C16
  const float* scale;    // (C16,) zero padded
  const float* bias;     // (C16,) zero padded
  int64_t C16;           // C rounded up to 16
  float act_min, act_max;
  float* out;            // (N, Ho, Wo, C) float, or null
  uint64_t* words;       // (N, Ho, Wo, K, Wg), zero-filled, or null
  int64_t K, Wg;
  float inv_step;
  bool is_signed;
  const int64_t* kx_range;  // (Wo, 2) valid kernel columns
  // Input rows from a ring instead of ``input`` (the rows of a conv fused
  // before this one, computed just before they are read): row iy of a
  // sample in slot iy % ring_rows, (W, C) floats each; or null.
  const float* ring = nullptr;
  int64_t ring_rows = 0;
};

// Where input row iy of sample n starts: (W, C) float32.
inline const float* depthwise_input_row(const DepthwisePackArgs& a,
                                        int64_t n, int64_t iy) {
  if (a.ring != nullptr) return a.ring + (iy % a.ring_rows) * a.W * a.C;
  return a.input + (n * a.H + iy) * a.W * a.C;
}

// The clamp of the value (NaN passes through, as torch's clamp).
inline float depthwise_clamp(float v, float lo, float hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// Output rows [begin, end) of the flattened (N * Ho) axis, one channel at
// a time. Returns whether a written value was NaN.
inline bool depthwise_pack_rows_portable(const DepthwisePackArgs& a,
                                         int64_t begin, int64_t end) {
  const float levels = static_cast<float>((1 << a.K) - 1);
  bool nan = false;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / a.Ho, y = r % a.Ho;
    int64_t ky0, ky1;
    mbb_valid_taps(y, a.H, a.kh, a.sh, a.ph, a.dh, &ky0, &ky1);
    for (int64_t x = 0; x < a.Wo; ++x) {
      const int64_t kx0 = a.kx_range[2 * x], kx1 = a.kx_range[2 * x + 1];
      const int64_t pixel = r * a.Wo + x;
      uint64_t* dst = a.words ? a.words + pixel * a.K * a.Wg : nullptr;
      for (int64_t c = 0; c < a.C; ++c) {
        float acc = 0.f;
        for (int64_t ky = ky0; ky < ky1; ++ky) {
          const int64_t iy = y * a.sh - a.ph + ky * a.dh;
          for (int64_t kx = kx0; kx < kx1; ++kx) {
            const int64_t ix = x * a.sw - a.pw + kx * a.dw;
            acc = std::fma(depthwise_input_row(a, n, iy)[ix * a.C + c],
                           a.weight[(ky * a.kw + kx) * a.C16 + c], acc);
          }
        }
        const float scaled = acc * a.scale[c];
        const float v =
            depthwise_clamp(scaled + a.bias[c], a.act_min, a.act_max);
        if (a.out) a.out[pixel * a.C + c] = v;
        if (dst) {
          nan |= std::isnan(v);
          const uint32_t q = static_cast<uint32_t>(
              mbb_quantize_level(v, a.inv_step, levels, a.is_signed));
          const int64_t j = c / kMBBWordBits, bit = c % kMBBWordBits;
          for (int64_t k = 0; k < a.K; ++k)
            dst[k * a.Wg + j] |= static_cast<uint64_t>((q >> k) & 1u) << bit;
        }
      }
    }
  }
  return nan;
}

}  // namespace mmbinary
