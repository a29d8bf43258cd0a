// Copyright (c) mmbinary contributors. All rights reserved.
// CUDA launchers of the packed MBB conv ops. Only c10/cuda headers: no
// ATen/cuda/CUDAContext.h, so it compiles against a CPU build of torch too.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/isnan.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../../common/cuda/mbb_conv2d_cuda_kernel.cuh"
#include "../../common/pytorch_cpp_helper.h"
#include "../mbb_conv2d_checks.h"

namespace mmbinary {

namespace {

constexpr int kThreads = 256;

int64_t grid_size(int64_t total) {
  return std::min<int64_t>((total + kThreads - 1) / kThreads, 65535);
}

void launch_quantize_pack(const at::Tensor& input, const MBBConvShape& s,
                          float inv_step, at::Tensor& out) {
  const int64_t total = s.N * s.G * s.Wg * s.H * s.W;
  if (total == 0) return;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  mbb_quantize_pack_cuda_kernel<<<grid_size(total), kThreads, 0, stream>>>(
      input.const_data_ptr<float>(),
      reinterpret_cast<unsigned long long*>(out.data_ptr<int64_t>()), s,
      inv_step);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_conv(const at::Tensor& act, const at::Tensor& weight_words,
                 const MBBConvShape& s, int* out_acc, float* out,
                 const float* scale, const float* bias) {
  const int64_t total = s.N * s.O * s.Ho * s.Wo;
  if (total == 0) return;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  mbb_conv2d_cuda_kernel<<<grid_size(total), kThreads, 0, stream>>>(
      reinterpret_cast<const unsigned long long*>(
          act.const_data_ptr<int64_t>()),
      reinterpret_cast<const unsigned long long*>(
          weight_words.const_data_ptr<int64_t>()),
      out_acc, out, scale, bias, s);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

at::Tensor mbb_quantize_pack_cuda(const at::Tensor& input, int64_t a_bits,
                                  double inv_step, bool is_signed,
                                  int64_t groups) {
  MMBINARY_CHECK_CUDA(input);
  const MBBConvShape s =
      mbb_quantize_pack_shape(input, a_bits, is_signed, groups);
  const float inv = mbb_check_inv_step(inv_step);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::Tensor x = input.contiguous();
  mbb_check_no_nan(x);  // packed words cannot represent NaN
  at::Tensor out = at::empty({s.N, s.H, s.W, s.G, s.K, s.Wg},
                             x.options().dtype(at::kLong));
  launch_quantize_pack(x, s, inv, out);
  return out;
}

at::Tensor mbb_conv2d_accumulate_cuda(
    const at::Tensor& act_words, const at::Tensor& weight_words,
    int64_t in_channels, int64_t out_channels, int64_t w_bits, int64_t a_bits,
    bool is_signed, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  MMBINARY_CHECK_CUDA(act_words);
  MMBINARY_CHECK_CUDA(weight_words);
  TORCH_CHECK(weight_words.device() == act_words.device(),
              "weight_words must be on act_words' device ",
              act_words.device(), ", got ", weight_words.device());
  const MBBConvShape s = mbb_conv2d_check(
      act_words, true, weight_words, in_channels, out_channels, w_bits,
      a_bits, is_signed, kernel_size, stride, padding, dilation, groups);
  const c10::cuda::CUDAGuard device_guard(act_words.device());
  at::Tensor out = at::empty({s.N, s.O, s.Ho, s.Wo},
                             act_words.options().dtype(at::kInt));
  launch_conv(act_words, weight_words, s, out.data_ptr<int>(), nullptr,
              nullptr, nullptr);
  return out;
}

at::Tensor mbb_conv2d_cuda(const at::Tensor& input,
                           const at::Tensor& weight_words,
                           const at::Tensor& out_scale,
                           const at::Tensor& out_bias, int64_t in_channels,
                           int64_t w_bits, int64_t a_bits, double inv_step,
                           bool is_signed, at::IntArrayRef kernel_size,
                           at::IntArrayRef stride, at::IntArrayRef padding,
                           at::IntArrayRef dilation, int64_t groups) {
  MMBINARY_CHECK_CUDA(input);
  MMBINARY_CHECK_CUDA(weight_words);
  MMBINARY_CHECK_CUDA(out_scale);
  MMBINARY_CHECK_CUDA(out_bias);
  for (const at::Tensor* t : {&weight_words, &out_scale, &out_bias})
    TORCH_CHECK(t->device() == input.device(),
                "weight_words, out_scale and out_bias must be on input's "
                "device ", input.device(), ", got ", t->device());
  mbb_check_epilogue(out_scale, out_bias);
  const MBBConvShape s = mbb_conv2d_check(
      input, false, weight_words, in_channels, out_scale.size(0), w_bits,
      a_bits, is_signed, kernel_size, stride, padding, dilation, groups);
  const float inv = mbb_check_inv_step(inv_step);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::Tensor x = input.contiguous();
  at::Tensor act = at::empty({s.N, s.H, s.W, s.G, s.K, s.Wg},
                             x.options().dtype(at::kLong));
  launch_quantize_pack(x, s, inv, act);
  at::Tensor out = at::empty({s.N, s.O, s.Ho, s.Wo}, x.options());
  launch_conv(act, weight_words, s, nullptr, out.data_ptr<float>(),
              out_scale.const_data_ptr<float>(),
              out_bias.const_data_ptr<float>());
  // NaN inputs reach every output of their receptive field, as on the CPU.
  if (s.N > 0 && at::isnan(x).any().item<bool>())
    mbb_propagate_nan(x, out, s);
  return out;
}

}  // namespace mmbinary

TORCH_LIBRARY_IMPL(mmbinary, CUDA, m) {
  m.impl("mbb_quantize_pack", &mmbinary::mbb_quantize_pack_cuda);
  m.impl("mbb_conv2d_accumulate", &mmbinary::mbb_conv2d_accumulate_cuda);
  m.impl("mbb_conv2d", &mmbinary::mbb_conv2d_cuda);
}
