// Copyright (c) mmbinary contributors. All rights reserved.
// Schema of mmbinary::pack_signs; the kernels register per device in
// cpu/pack_signs.cpp and cuda/pack_signs_cuda.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(mmbinary, m) {
  m.def(
      "pack_signs(Tensor input) -> Tensor",
      {at::Tag::pt2_compliant_tag});
}
