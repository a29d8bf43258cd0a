// Copyright (c) mmbinary contributors. All rights reserved.
// Input checks shared by the torch launchers; each message names the argument.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#define MMBINARY_CHECK_CPU(x) \
  TORCH_CHECK((x).device().is_cpu(), #x " must be a CPU tensor, got ", (x).device())
#define MMBINARY_CHECK_CUDA(x) \
  TORCH_CHECK((x).device().is_cuda(), #x " must be a CUDA tensor, got ", (x).device())
#define MMBINARY_CHECK_CONTIGUOUS(x) \
  TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
#define MMBINARY_CHECK_MIN_DIM(x, d)                                        \
  TORCH_CHECK((x).dim() >= (d), #x " must have at least ", (d),             \
              " dimensions (N, C, ...), got shape ", (x).sizes())
