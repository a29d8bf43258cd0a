// Copyright (c) mmbinary contributors. All rights reserved.
// CPU launcher of mmbinary::pack_signs.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../../common/pack_signs.h"
#include "../../common/pytorch_cpp_helper.h"

namespace mmbinary {

// input: (N, C, *spatial) -> (N, *spatial, ceil(C / 64)) int64 words.
at::Tensor pack_signs_cpu(const at::Tensor& input) {
  MMBINARY_CHECK_CPU(input);
  MMBINARY_CHECK_CONTIGUOUS(input);
  MMBINARY_CHECK_MIN_DIM(input, 2);
  const int64_t N = input.size(0);
  const int64_t C = input.size(1);
  const int64_t S = input.numel() / std::max<int64_t>(N * C, 1);
  const int64_t W = num_words(C);
  std::vector<int64_t> out_shape{N};
  for (int64_t d = 2; d < input.dim(); ++d) out_shape.push_back(input.size(d));
  out_shape.push_back(W);
  at::Tensor out = at::empty(out_shape, input.options().dtype(at::kLong));
  if (out.numel() == 0) return out;

  // Work items: (sample, word, block of spatial positions).
  constexpr int64_t kBlock = 1024;
  const int64_t s_blocks = (S + kBlock - 1) / kBlock;
  auto* out_words = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  AT_DISPATCH_ALL_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "pack_signs_cpu", [&] {
        const scalar_t* x = input.const_data_ptr<scalar_t>();
        at::parallel_for(0, N * W * s_blocks, 1, [&](int64_t begin, int64_t end) {
          for (int64_t item = begin; item < end; ++item) {
            const int64_t b = item % s_blocks;
            const int64_t w = (item / s_blocks) % W;
            const int64_t n = item / (s_blocks * W);
            const int64_t s_end = std::min(S, (b + 1) * kBlock);
            pack_signs_word<scalar_t>(x, out_words, n, w, b * kBlock, s_end, C, S);
          }
        });
      });
  return out;
}

}  // namespace mmbinary

TORCH_LIBRARY_IMPL(mmbinary, CPU, m) {
  m.impl("pack_signs", &mmbinary::pack_signs_cpu);
}
