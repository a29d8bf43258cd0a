// Copyright (c) mmbinary contributors. All rights reserved.
// One call of the fused depthwise conv + scale/bias + clamp + pack
// (common/depthwise_pack.h), set up once and run row by row: the
// depthwise_pack op's, and the integer kernel's fused expand + depthwise
// (mbb_conv2d_int8_depthwise). Defined in cpu/depthwise_pack.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "../common/depthwise_pack.h"

namespace mmbinary {

// The arguments of a call and the tensors they point into.
struct DepthwiseCall {
  DepthwisePackArgs args;
  at::Tensor out;    // (N, C, Ho, Wo) channels-last float32, or empty
  at::Tensor words;  // (N, Ho, Wo, 1, out_a_bits, Wg) int64, or empty
  at::Tensor weight, scale, bias, kx_range;  // what args point into
  std::string variant;  // "avx512", "avx2" or "portable"
};

// Checks the arguments of a depthwise conv over an (N, C, H, W) float32
// input (weight (C, 1, kh, kw), scale and bias (C,)), allocates its outputs
// and fills every argument but the input (args.input / args.ring). The
// messages name the arguments with `prefix` ("dw_" in the one-pass op).
DepthwiseCall depthwise_call(int64_t N, int64_t C, int64_t H, int64_t W,
                             const at::Tensor& weight, const at::Tensor& scale,
                             const at::Tensor& bias, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation,
                             double act_min, double act_max, bool float_out,
                             int64_t out_a_bits, double out_inv_step,
                             bool out_signed, const std::string& prefix);

// Output rows [begin, end) of the (N * Ho) axis of `args` (a call's, or a
// copy reading a ring) with the kernel `variant`. Returns whether a packed
// value was NaN.
bool depthwise_call_rows(const DepthwisePackArgs& args,
                         const std::string& variant, int64_t begin,
                         int64_t end);

// The error for a NaN that packed words cannot represent.
void depthwise_check_no_nan(bool nan);

}  // namespace mmbinary
