// Copyright (c) mmbinary contributors. All rights reserved.
// Schemas of the packed MBB conv ops (torch.ops.mmbinary.mbb_*) and the
// argument checks that the CPU (cpu/mbb_conv2d.cpp) and CUDA
// (cuda/mbb_conv2d_cuda.cu) kernels share. Format: common/mbb_conv2d.h.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "../common/mbb_conv2d.h"
#include "mbb_conv2d_checks.h"

namespace mmbinary {

void mbb_check_bits(int64_t bits, const char* name) {
  TORCH_CHECK(bits >= 1 && bits <= kMBBMaxBits, name,
              " must be an integer in 1..8, got ", bits);
}

// inv_step as the float32 the kernels use; must be finite and > 0.
float mbb_check_inv_step(double inv_step) {
  const float value = static_cast<float>(inv_step);
  TORCH_CHECK(std::isfinite(value) && value > 0.f,
              "inv_step must be a finite number > 0 (in float32), got ",
              inv_step);
  return value;
}

MBBConvShape mbb_weight_shape(const at::Tensor& weight_words,
                              int64_t in_channels, int64_t w_bits,
                              at::IntArrayRef kernel_size) {
  TORCH_CHECK(kernel_size.size() == 2 && kernel_size[0] >= 1 &&
                  kernel_size[1] >= 1,
              "kernel_size must have 2 values >= 1, got ", kernel_size);
  TORCH_CHECK(in_channels >= 1, "in_channels must be >= 1, got ",
              in_channels);
  TORCH_CHECK(w_bits >= 1 && w_bits <= kMBBMaxBits,
              "w_bits must be an integer in 1..8, got ", w_bits);
  TORCH_CHECK(weight_words.scalar_type() == at::kLong &&
                  weight_words.dim() == 5 && weight_words.is_contiguous() &&
                  weight_words.size(1) == w_bits &&
                  weight_words.size(2) == kernel_size[0] &&
                  weight_words.size(3) == kernel_size[1] &&
                  weight_words.size(4) == mbb_num_words(in_channels),
              "weight_words must be a contiguous int64 tensor of shape "
              "(out_channels, w_bits, kh, kw, ceil(in_channels / 64)) = (O, ",
              w_bits, ", ", kernel_size[0], ", ", kernel_size[1], ", ",
              mbb_num_words(in_channels), "), got ", weight_words.scalar_type(),
              " ", weight_words.sizes());
  return make_mbb_shape(0, in_channels, 1, 1, weight_words.size(0), 1,
                        kernel_size[0], kernel_size[1], 1, 1, 0, 0, 1, 1,
                        w_bits, 1, false);
}

void mbb_check_pair(at::IntArrayRef values, const char* name,
                    int64_t minimum) {
  TORCH_CHECK(values.size() == 2, name, " must have 2 values (h, w), got ",
              values);
  TORCH_CHECK(values[0] >= minimum && values[1] >= minimum, name,
              " must be >= ", minimum, ", got ", values);
}

void mbb_check_act_clamp(double act_min, double act_max) {
  TORCH_CHECK(!std::isnan(act_min) && !std::isnan(act_max) &&
                  static_cast<float>(act_min) <= static_cast<float>(act_max),
              "act_min and act_max must be numbers with act_min <= act_max "
              "(-inf / inf: no clamp), got ", act_min, ", ", act_max);
}

at::Tensor mbb_channels_last_residual(
    const c10::optional<at::Tensor>& residual, const MBBConvShape& s) {
  if (!residual.has_value() || !residual->defined()) return at::Tensor();
  TORCH_CHECK(residual->device().is_cpu(),
              "residual must be a CPU tensor, got ", residual->device());
  TORCH_CHECK(residual->scalar_type() == at::kFloat && residual->dim() == 4 &&
                  residual->size(0) == s.N && residual->size(1) == s.O &&
                  residual->size(2) == s.Ho && residual->size(3) == s.Wo,
              "residual must be a float32 tensor of the output's shape (",
              s.N, ", ", s.O, ", ", s.Ho, ", ", s.Wo, "), got ",
              residual->scalar_type(), " ", residual->sizes());
  return residual->contiguous(at::MemoryFormat::ChannelsLast);
}

// Checks a float32 (N, C, H, W) input (device checked by the caller).
void mbb_check_float_input(const at::Tensor& input, int64_t in_channels) {
  TORCH_CHECK(input.scalar_type() == at::kFloat,
              "input must be a float32 tensor, got ", input.scalar_type());
  TORCH_CHECK(input.dim() == 4, "input must have shape (N, C, H, W), got ",
              input.sizes());
  TORCH_CHECK(input.is_contiguous() ||
                  input.is_contiguous(at::MemoryFormat::ChannelsLast),
              "input must be contiguous (NCHW or channels-last)");
  TORCH_CHECK(input.size(1) == in_channels, "input has ", input.size(1),
              " channels, expected in_channels=", in_channels);
}

// Shape of mbb_quantize_pack(input, a_bits, inv_step, is_signed, groups).
MBBConvShape mbb_quantize_pack_shape(const at::Tensor& input, int64_t a_bits,
                                     bool is_signed, int64_t groups) {
  mbb_check_bits(a_bits, "a_bits");
  TORCH_CHECK(input.dim() == 4, "input must have shape (N, C, H, W), got ",
              input.sizes());
  const int64_t C = input.size(1);
  TORCH_CHECK(groups >= 1, "groups must be >= 1, got ", groups);
  TORCH_CHECK(C >= 1 && C % groups == 0, "input channels (", C,
              ") must be >= 1 and divisible by groups (", groups, ")");
  mbb_check_float_input(input, C);
  return make_mbb_shape(input.size(0), C, input.size(2), input.size(3), 0,
                        groups, 1, 1, 1, 1, 0, 0, 1, 1, 1, a_bits, is_signed);
}

static void check_pair(at::IntArrayRef values, const char* name,
                       int64_t minimum) {
  TORCH_CHECK(values.size() == 2, name, " must have 2 values (h, w), got ",
              values);
  TORCH_CHECK(values[0] >= minimum && values[1] >= minimum, name,
              " must be >= ", minimum, ", got ", values);
}

// Checks the convolution parameters and the packed operands; returns the
// shape. `act_or_input` is (N, H, W, G, K, Wg) int64 words when `packed`,
// else the (N, C, H, W) float32 input. Devices are checked by the caller.
MBBConvShape mbb_conv2d_check(const at::Tensor& act_or_input, bool packed,
                              const at::Tensor& weight_words,
                              int64_t in_channels, int64_t out_channels,
                              int64_t w_bits, int64_t a_bits, bool is_signed,
                              at::IntArrayRef kernel_size,
                              at::IntArrayRef stride, at::IntArrayRef padding,
                              at::IntArrayRef dilation, int64_t groups) {
  mbb_check_bits(w_bits, "w_bits");
  mbb_check_bits(a_bits, "a_bits");
  check_pair(kernel_size, "kernel_size", 1);
  check_pair(stride, "stride", 1);
  check_pair(padding, "padding", 0);
  check_pair(dilation, "dilation", 1);
  TORCH_CHECK(groups >= 1, "groups must be >= 1, got ", groups);
  TORCH_CHECK(in_channels >= 1 && in_channels % groups == 0,
              "in_channels (", in_channels,
              ") must be >= 1 and divisible by groups (", groups, ")");
  TORCH_CHECK(out_channels >= 1 && out_channels % groups == 0,
              "out_channels (", out_channels,
              ") must be >= 1 and divisible by groups (", groups, ")");
  const int64_t Cg = in_channels / groups, Wg = mbb_num_words(Cg);
  const int64_t bound = mbb_accumulator_bound(Cg, kernel_size[0],
                                              kernel_size[1], w_bits, a_bits);
  TORCH_CHECK(bound < (int64_t{1} << 31),
              "the int32 accumulator could overflow: in_channels / groups * "
              "kh * kw * (2^w_bits - 1) * (2^a_bits - 1) = ",
              bound, " must be < 2^31; use fewer bits or split the channels");

  int64_t N, H, W;
  if (packed) {
    TORCH_CHECK(act_or_input.scalar_type() == at::kLong,
                "act_words must be an int64 tensor, got ",
                act_or_input.scalar_type());
    TORCH_CHECK(act_or_input.dim() == 6 && act_or_input.size(3) == groups &&
                    act_or_input.size(4) == a_bits &&
                    act_or_input.size(5) == Wg,
                "act_words must have shape (N, H, W, groups, a_bits, "
                "ceil(in_channels / groups / 64)) = (N, H, W, ",
                groups, ", ", a_bits, ", ", Wg, "), got ",
                act_or_input.sizes());
    TORCH_CHECK(act_or_input.is_contiguous(), "act_words must be contiguous");
    N = act_or_input.size(0), H = act_or_input.size(1);
    W = act_or_input.size(2);
  } else {
    mbb_check_float_input(act_or_input, in_channels);
    N = act_or_input.size(0), H = act_or_input.size(2);
    W = act_or_input.size(3);
  }
  TORCH_CHECK(weight_words.scalar_type() == at::kLong,
              "weight_words must be an int64 tensor, got ",
              weight_words.scalar_type());
  TORCH_CHECK(weight_words.dim() == 5 &&
                  weight_words.size(0) == out_channels &&
                  weight_words.size(1) == w_bits &&
                  weight_words.size(2) == kernel_size[0] &&
                  weight_words.size(3) == kernel_size[1] &&
                  weight_words.size(4) == Wg,
              "weight_words must have shape (out_channels, w_bits, kh, kw, "
              "ceil(in_channels / groups / 64)) = (",
              out_channels, ", ", w_bits, ", ", kernel_size[0], ", ",
              kernel_size[1], ", ", Wg, "), got ", weight_words.sizes());
  TORCH_CHECK(weight_words.is_contiguous(), "weight_words must be contiguous");

  MBBConvShape s = make_mbb_shape(
      N, in_channels, H, W, out_channels, groups, kernel_size[0],
      kernel_size[1], stride[0], stride[1], padding[0], padding[1],
      dilation[0], dilation[1], w_bits, a_bits, is_signed);
  TORCH_CHECK(s.Ho >= 1 && s.Wo >= 1, "input size (", H, ", ", W,
              ") is too small for kernel_size ", kernel_size, ", dilation ",
              dilation, " and padding ", padding,
              ": the output would be empty");
  return s;
}

// out_scale / out_bias: float32 (O,) contiguous (device checked by caller).
void mbb_check_epilogue(const at::Tensor& out_scale,
                        const at::Tensor& out_bias) {
  TORCH_CHECK(out_scale.scalar_type() == at::kFloat && out_scale.dim() == 1,
              "out_scale must be a float32 tensor of shape (out_channels,), "
              "got ", out_scale.scalar_type(), " ", out_scale.sizes());
  TORCH_CHECK(out_bias.scalar_type() == at::kFloat &&
                  out_bias.sizes() == out_scale.sizes(),
              "out_bias must be a float32 tensor of shape ",
              out_scale.sizes(), " (as out_scale), got ",
              out_bias.scalar_type(), " ", out_bias.sizes());
  TORCH_CHECK(out_scale.is_contiguous(), "out_scale must be contiguous");
  TORCH_CHECK(out_bias.is_contiguous(), "out_bias must be contiguous");
}

// NaN has no activation level: the kernels quantize it like 0. A float
// convolution gives NaN wherever a NaN input is in the receptive field, and
// so does the packed op: this pass (run only when the input holds a NaN)
// sets every output of a group whose valid taps read a pixel with a NaN in
// that group's channels. Padded taps read no input, as in the kernels.
void mbb_propagate_nan(const at::Tensor& input, at::Tensor& out,
                       const MBBConvShape& s) {
  const at::Tensor pixels =
      at::isnan(input).reshape({s.N, s.G, s.Cg, s.H, s.W}).any(2).to(
          at::kFloat);  // (N, G, H, W)
  const at::Tensor ones = at::ones({s.G, 1, s.kh, s.kw}, pixels.options());
  const at::Tensor hit =
      at::conv2d(pixels, ones, {}, {s.sh, s.sw}, {s.ph, s.pw}, {s.dh, s.dw},
                 s.G)
          .gt(0.5)
          .repeat_interleave(s.Og, 1);  // (N, O, Ho, Wo)
  out.masked_fill_(hit, std::numeric_limits<float>::quiet_NaN());
}

// mbb_quantize_pack refuses NaN: packed words cannot represent it.
void mbb_check_no_nan(const at::Tensor& input) {
  TORCH_CHECK(!at::isnan(input).any().item<bool>(),
              "mbb_quantize_pack: input holds NaN, which has no activation "
              "level; packed words cannot represent it (mbb_conv2d on the "
              "float input propagates NaN to the outputs it reaches)");
}

}  // namespace mmbinary

TORCH_LIBRARY_FRAGMENT(mmbinary, m) {
  m.def(
      "mbb_quantize_pack(Tensor input, int a_bits, float inv_step, "
      "bool is_signed, int groups=1) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "mbb_conv2d_accumulate(Tensor act_words, Tensor weight_words, "
      "int in_channels, int out_channels, int w_bits, int a_bits, "
      "bool is_signed, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "mbb_conv2d(Tensor input, Tensor weight_words, Tensor out_scale, "
      "Tensor out_bias, int in_channels, int w_bits, int a_bits, "
      "float inv_step, bool is_signed, int[2] kernel_size, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  // Packed activations in; the float32 output (+ residual, relu) and/or
  // the next MBB layer's activation words out (CPU).
  m.def(
      "mbb_conv2d_words(Tensor act_words, Tensor weight_words, "
      "Tensor out_scale, Tensor out_bias, int in_channels, int w_bits, "
      "int a_bits, bool is_signed, int[2] kernel_size, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups, Tensor? residual, "
      "float act_min, float act_max, bool float_out, int out_a_bits, "
      "float out_inv_step, "
      "bool out_signed, Tensor? weight_lanes=None) -> (Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // The words op's weight layout on the channel-lane kernel, made once per
  // layer (empty where that kernel does not run).
  m.def(
      "mbb_lane_prepare_weight(Tensor weight_words, int in_channels, "
      "int w_bits, int[2] kernel_size) -> Tensor",
      {at::Tag::pt2_compliant_tag});
}
