// Copyright (c) mmbinary contributors. All rights reserved.
// torch.ops.mmbinary.max_pool2d_channels_last: torch's max_pool2d (no
// indices, ceil_mode off) on a channels-last float32 input, the same
// values bit for bit, faster on one thread (common/max_pool_channels_last.h).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "../../common/cpu_features.h"
#include "../../common/max_pool_channels_last.h"
#include "../../common/mbb_conv2d.h"
#include "../../common/pytorch_cpp_helper.h"
#include "../mbb_conv2d_checks.h"

namespace mmbinary {
namespace {

// The AVX-512 variant where this build has it and avx512_float_passes().
bool use_avx512() {
#ifdef MMBINARY_HAVE_MAX_POOL_AVX512
  return avx512_float_passes();
#else
  return false;
#endif
}

}  // namespace

// input (N, C, H, W) float32 -> (N, C, Ho, Wo) channels-last float32, as
// torch.nn.functional.max_pool2d(input, kernel_size, stride, padding,
// dilation) (ceil_mode False).
at::Tensor max_pool2d_channels_last_cpu(const at::Tensor& input,
                                        at::IntArrayRef kernel_size,
                                        at::IntArrayRef stride,
                                        at::IntArrayRef padding,
                                        at::IntArrayRef dilation) {
  MMBINARY_CHECK_CPU(input);
  TORCH_CHECK(input.scalar_type() == at::kFloat && input.dim() == 4,
              "input must be a float32 tensor of shape (N, C, H, W), got ",
              input.scalar_type(), " ", input.sizes());
  mbb_check_pair(kernel_size, "kernel_size", 1);
  mbb_check_pair(stride, "stride", 1);
  mbb_check_pair(padding, "padding", 0);
  mbb_check_pair(dilation, "dilation", 1);
  TORCH_CHECK(padding[0] * 2 <= kernel_size[0] &&
                  padding[1] * 2 <= kernel_size[1],
              "padding must be at most half of kernel_size (as torch's "
              "max_pool2d), got padding ", padding, " and kernel_size ",
              kernel_size);
  MaxPoolShape s;
  s.N = input.size(0), s.C = input.size(1), s.H = input.size(2),
  s.W = input.size(3);
  s.kh = kernel_size[0], s.kw = kernel_size[1];
  s.sh = stride[0], s.sw = stride[1], s.ph = padding[0], s.pw = padding[1];
  s.dh = dilation[0], s.dw = dilation[1];
  s.Ho = mbb_out_size(s.H, s.kh, s.sh, s.ph, s.dh);
  s.Wo = mbb_out_size(s.W, s.kw, s.sw, s.pw, s.dw);
  TORCH_CHECK(s.Ho >= 1 && s.Wo >= 1 && s.C >= 1,
              "the output would be empty: input ", input.sizes(),
              ", kernel_size ", kernel_size, ", stride ", stride,
              ", padding ", padding, ", dilation ", dilation);
  const at::Tensor in = input.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty(
      {s.N, s.C, s.Ho, s.Wo},
      input.options().memory_format(at::MemoryFormat::ChannelsLast));
  const float* src = in.const_data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const bool avx512 = use_avx512();
  const int64_t grain = std::max<int64_t>(1, 4096 / (s.Wo * s.C) + 1);
  at::parallel_for(0, s.N * s.Ho, grain, [&](int64_t begin, int64_t end) {
#ifdef MMBINARY_HAVE_MAX_POOL_AVX512
    if (avx512) {
      max_pool_avx512::rows(s, src, dst, begin, end);
      return;
    }
#endif
    (void)avx512;
    max_pool_rows_portable(s, src, dst, begin, end);
  });
  return out;
}

}  // namespace mmbinary

TORCH_LIBRARY_FRAGMENT(mmbinary, m) {
  m.def(
      "max_pool2d_channels_last(Tensor input, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation) -> Tensor",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(mmbinary, CPU, m) {
  m.impl("max_pool2d_channels_last",
         &mmbinary::max_pool2d_channels_last_cpu);
}
