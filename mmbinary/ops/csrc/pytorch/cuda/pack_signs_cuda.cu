// Copyright (c) mmbinary contributors. All rights reserved.
// CUDA launcher of mmbinary::pack_signs. Only c10/cuda headers: no
// ATen/cuda/CUDAContext.h, so it compiles against a CPU build of torch too.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../../common/cuda/pack_signs_cuda_kernel.cuh"
#include "../../common/pytorch_cpp_helper.h"

namespace mmbinary {

at::Tensor pack_signs_cuda(const at::Tensor& input) {
  MMBINARY_CHECK_CUDA(input);
  MMBINARY_CHECK_CONTIGUOUS(input);
  MMBINARY_CHECK_MIN_DIM(input, 2);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const int64_t N = input.size(0);
  const int64_t C = input.size(1);
  const int64_t S = input.numel() / std::max<int64_t>(N * C, 1);
  const int64_t W = (C + 63) / 64;
  std::vector<int64_t> out_shape{N};
  for (int64_t d = 2; d < input.dim(); ++d) out_shape.push_back(input.size(d));
  out_shape.push_back(W);
  at::Tensor out = at::empty(out_shape, input.options().dtype(at::kLong));
  const int64_t total = N * W * S;
  if (total == 0) return out;

  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 65535);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_ALL_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "pack_signs_cuda", [&] {
        pack_signs_cuda_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
            input.const_data_ptr<scalar_t>(),
            reinterpret_cast<unsigned long long*>(out.data_ptr<int64_t>()), N,
            C, S, W);
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace mmbinary

TORCH_LIBRARY_IMPL(mmbinary, CUDA, m) {
  m.impl("pack_signs", &mmbinary::pack_signs_cuda);
}
