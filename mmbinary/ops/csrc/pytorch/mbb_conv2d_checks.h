// Copyright (c) mmbinary contributors. All rights reserved.
// Argument checks of the packed MBB conv ops, shared by the CPU and CUDA
// launchers; defined in mbb_conv2d.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include "../common/mbb_conv2d.h"
#include "../common/pytorch_cpp_helper.h"

namespace mmbinary {

float mbb_check_inv_step(double inv_step);
MBBConvShape mbb_quantize_pack_shape(const at::Tensor& input, int64_t a_bits,
                                     bool is_signed, int64_t groups);
MBBConvShape mbb_conv2d_check(const at::Tensor& act_or_input, bool packed,
                              const at::Tensor& weight_words,
                              int64_t in_channels, int64_t out_channels,
                              int64_t w_bits, int64_t a_bits, bool is_signed,
                              at::IntArrayRef kernel_size,
                              at::IntArrayRef stride, at::IntArrayRef padding,
                              at::IntArrayRef dilation, int64_t groups);
// The geometry of weight words alone (no input: N = 0), for the ops that
// prepare a layer's weights once.
MBBConvShape mbb_weight_shape(const at::Tensor& weight_words,
                              int64_t in_channels, int64_t w_bits,
                              at::IntArrayRef kernel_size);
void mbb_check_epilogue(const at::Tensor& out_scale,
                        const at::Tensor& out_bias);
// Sets to NaN the outputs whose receptive field holds a NaN input.
void mbb_propagate_nan(const at::Tensor& input, at::Tensor& out,
                       const MBBConvShape& s);
// The epilogue's activation clamp: numbers with act_min <= act_max.
void mbb_check_act_clamp(double act_min, double act_max);
// Two values (h, w), each >= minimum (kernel sizes, strides, paddings).
void mbb_check_pair(at::IntArrayRef values, const char* name,
                    int64_t minimum);
// A residual of the output's shape (N, O, Ho, Wo), float32, on the CPU, as
// a channels-last tensor; undefined when none is given.
at::Tensor mbb_channels_last_residual(
    const c10::optional<at::Tensor>& residual, const MBBConvShape& s);
// Refuses an input that holds NaN (for the pack-only op).
void mbb_check_no_nan(const at::Tensor& input);

// The CPU conv launchers' common checks: every tensor on the CPU, the
// epilogue and the geometry (mbb_conv2d_check); `input` holds activation
// words where `packed` (named act_words in the messages).
inline MBBConvShape mbb_cpu_conv2d_check(
    const at::Tensor& input, bool packed, const at::Tensor& weight_words,
    const at::Tensor& out_scale, const at::Tensor& out_bias,
    int64_t in_channels, int64_t w_bits, int64_t a_bits, bool is_signed,
    at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(input.device().is_cpu(), packed ? "act_words" : "input",
              " must be a CPU tensor, got ", input.device());
  MMBINARY_CHECK_CPU(weight_words);
  MMBINARY_CHECK_CPU(out_scale);
  MMBINARY_CHECK_CPU(out_bias);
  mbb_check_epilogue(out_scale, out_bias);
  return mbb_conv2d_check(input, packed, weight_words, in_channels,
                          out_scale.size(0), w_bits, a_bits, is_signed,
                          kernel_size, stride, padding, dilation, groups);
}

}  // namespace mmbinary
