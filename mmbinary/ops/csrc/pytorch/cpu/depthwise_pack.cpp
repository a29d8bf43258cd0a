// Copyright (c) mmbinary contributors. All rights reserved.
// torch.ops.mmbinary.depthwise_pack: fused channels-last float32 depthwise
// conv + per-channel scale and bias + clamp, writing the float output and/or
// the next packed MBB conv's activation words (common/depthwise_pack.h).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>

#include "../../common/cpu_features.h"
#include "../../common/depthwise_pack.h"
#include "../../common/depthwise_pack_avx2.h"
#include "../../common/depthwise_pack_avx512.h"
#include "../../common/mbb_conv2d.h"
#include "../../common/pytorch_cpp_helper.h"
#include "../depthwise_pack_call.h"
#include "../mbb_conv2d_checks.h"

namespace mmbinary {
namespace {

// The variant of the kernel a call runs (float_pass_variant, where this
// build has it): "avx512", "avx2" or "portable".
std::string depthwise_variant() {
  const std::string variant = float_pass_variant();
#ifdef MMBINARY_HAVE_DEPTHWISE_PACK_AVX512
  if (variant == "avx512") return variant;
#endif
#ifdef MMBINARY_HAVE_DEPTHWISE_PACK_AVX2
  if (variant == "avx2") return variant;
#endif
  return "portable";
}

// (C,) float32 -> (C16,) zero padded, contiguous.
at::Tensor padded_channels(const at::Tensor& t, int64_t C, int64_t C16,
                           const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.dim() == 1 &&
                  t.size(0) == C,
              name, " must be a float32 tensor of shape (", C, ",), got ",
              t.scalar_type(), " ", t.sizes());
  at::Tensor out = at::zeros({C16}, t.options());
  out.narrow(0, 0, C).copy_(t);
  return out;
}

}  // namespace

DepthwiseCall depthwise_call(int64_t N, int64_t C, int64_t H, int64_t W,
                             const at::Tensor& weight, const at::Tensor& scale,
                             const at::Tensor& bias, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation,
                             double act_min, double act_max, bool float_out,
                             int64_t out_a_bits, double out_inv_step,
                             bool out_signed, const std::string& prefix) {
  MMBINARY_CHECK_CPU(weight);
  MMBINARY_CHECK_CPU(scale);
  MMBINARY_CHECK_CPU(bias);
  TORCH_CHECK(C >= 1, "input must have at least one channel");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.dim() == 4 &&
                  weight.size(0) == C && weight.size(1) == 1,
              prefix, "weight must be a float32 depthwise kernel of shape (",
              C,
              ", 1, kh, kw), got ", weight.scalar_type(), " ", weight.sizes());
  mbb_check_pair(stride, "stride", 1);
  mbb_check_pair(padding, "padding", 0);
  mbb_check_pair(dilation, "dilation", 1);
  mbb_check_act_clamp(act_min, act_max);
  TORCH_CHECK(out_a_bits >= 0 && out_a_bits <= kMBBMaxBits,
              "out_a_bits must be 0 (no words) or in 1..8, got ", out_a_bits);
  TORCH_CHECK(float_out || out_a_bits > 0,
              "asks for no output: set float_out or out_a_bits > 0");
  float inv = 1.f;
  if (out_a_bits > 0) inv = mbb_check_inv_step(out_inv_step);

  DepthwiseCall call;
  DepthwisePackArgs& a = call.args;
  a.N = N, a.C = C, a.H = H, a.W = W;
  a.kh = weight.size(2), a.kw = weight.size(3);
  a.sh = stride[0], a.sw = stride[1], a.ph = padding[0], a.pw = padding[1];
  a.dh = dilation[0], a.dw = dilation[1];
  a.Ho = mbb_out_size(H, a.kh, a.sh, a.ph, a.dh);
  a.Wo = mbb_out_size(W, a.kw, a.sw, a.pw, a.dw);
  TORCH_CHECK(a.Ho >= 1 && a.Wo >= 1, "the output would be empty: input (",
              N, ", ", C, ", ", H, ", ", W, "), kernel ", a.kh, "x", a.kw,
              ", stride ", stride, ", padding ", padding, ", dilation ",
              dilation);
  a.C16 = (C + 15) / 16 * 16;

  // (C, 1, kh, kw) -> (kh * kw, C16), tap-major, zero padded.
  call.weight = at::zeros({a.kh * a.kw, a.C16}, weight.options());
  call.weight.narrow(1, 0, C).copy_(weight.reshape({C, a.kh * a.kw}).t());
  call.scale = padded_channels(scale, C, a.C16, (prefix + "scale").c_str());
  call.bias = padded_channels(bias, C, a.C16, (prefix + "bias").c_str());
  a.input = nullptr;
  a.weight = call.weight.const_data_ptr<float>();
  a.scale = call.scale.const_data_ptr<float>();
  a.bias = call.bias.const_data_ptr<float>();
  a.act_min = static_cast<float>(act_min);
  a.act_max = static_cast<float>(act_max);

  const auto options = weight.options();
  call.out = at::empty({0}, options);
  if (float_out)
    call.out = at::empty({N, C, a.Ho, a.Wo}, options.memory_format(
                                                 at::MemoryFormat::ChannelsLast));
  a.out = float_out ? call.out.data_ptr<float>() : nullptr;
  a.K = out_a_bits > 0 ? out_a_bits : 1;
  a.Wg = mbb_num_words(C);
  call.words = at::empty({0}, options.dtype(at::kLong));
  if (out_a_bits > 0)
    call.words = at::zeros({N, a.Ho, a.Wo, 1, out_a_bits, a.Wg},
                           options.dtype(at::kLong));
  a.words = out_a_bits > 0 ? reinterpret_cast<uint64_t*>(
                                 call.words.data_ptr<int64_t>())
                           : nullptr;
  a.inv_step = inv;
  a.is_signed = out_signed;
  call.kx_range = at::empty({a.Wo, 2}, options.dtype(at::kLong));
  int64_t* kx = call.kx_range.data_ptr<int64_t>();
  for (int64_t x = 0; x < a.Wo; ++x)
    mbb_valid_taps(x, W, a.kw, a.sw, a.pw, a.dw, kx + 2 * x, kx + 2 * x + 1);
  a.kx_range = kx;
  call.variant = depthwise_variant();
  return call;
}

bool depthwise_call_rows(const DepthwisePackArgs& a,
                         const std::string& variant, int64_t begin,
                         int64_t end) {
#ifdef MMBINARY_HAVE_DEPTHWISE_PACK_AVX512
  if (variant == "avx512") return depthwise_avx512::rows(a, begin, end);
#endif
#ifdef MMBINARY_HAVE_DEPTHWISE_PACK_AVX2
  if (variant == "avx2") return depthwise_avx2::rows(a, begin, end);
#endif
  return depthwise_pack_rows_portable(a, begin, end);
}

void depthwise_check_no_nan(bool nan) {
  TORCH_CHECK(!nan,
              "depthwise_pack: the output holds NaN, which has no activation "
              "level; packed words cannot represent it (ask for the float "
              "output alone to propagate NaN)");
}

// input (N, C, H, W) float32, weight (C, 1, kh, kw) float32, scale and
// bias (C,) -> (out (N, C, Ho, Wo) channels-last float32 if float_out else
// empty, words (N, Ho, Wo, 1, out_a_bits, ceil(C / 64)) int64 if
// out_a_bits > 0 else empty). Words refuse NaN (it has no level).
std::tuple<at::Tensor, at::Tensor> depthwise_pack_cpu(
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& scale,
    const at::Tensor& bias, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, double act_min, double act_max, bool float_out,
    int64_t out_a_bits, double out_inv_step, bool out_signed) {
  MMBINARY_CHECK_CPU(input);
  TORCH_CHECK(input.scalar_type() == at::kFloat && input.dim() == 4,
              "input must be a float32 tensor of shape (N, C, H, W), got ",
              input.scalar_type(), " ", input.sizes());
  DepthwiseCall call = depthwise_call(
      input.size(0), input.size(1), input.size(2), input.size(3), weight,
      scale, bias, stride, padding, dilation, act_min, act_max, float_out,
      out_a_bits, out_inv_step, out_signed, "");
  const at::Tensor in = input.contiguous(at::MemoryFormat::ChannelsLast);
  call.args.input = in.const_data_ptr<float>();
  const DepthwisePackArgs& a = call.args;
  std::atomic<bool> nan{false};
  const int64_t per_row = a.Wo * a.C * a.kh * a.kw;
  const int64_t grain = per_row >= (1 << 16) ? 1 : (1 << 16) / per_row;
  at::parallel_for(0, a.N * a.Ho, grain, [&](int64_t begin, int64_t end) {
    if (depthwise_call_rows(a, call.variant, begin, end)) nan.store(true);
  });
  depthwise_check_no_nan(nan.load());
  return {call.out, call.words};
}

// The kernel depthwise_pack runs on this CPU: "avx512", "avx2" or
// "portable" (scalar C++, many times slower than torch's depthwise conv).
std::string depthwise_pack_variant_cpu() { return depthwise_variant(); }

}  // namespace mmbinary

TORCH_LIBRARY_FRAGMENT(mmbinary, m) {
  m.def(
      "depthwise_pack(Tensor input, Tensor weight, Tensor scale, "
      "Tensor bias, int[2] stride, int[2] padding, int[2] dilation, "
      "float act_min, float act_max, bool float_out, int out_a_bits, "
      "float out_inv_step, bool out_signed) -> (Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  m.def("depthwise_pack_variant() -> str",
        &mmbinary::depthwise_pack_variant_cpu);
}

TORCH_LIBRARY_IMPL(mmbinary, CPU, m) {
  m.impl("depthwise_pack", &mmbinary::depthwise_pack_cpu);
}
