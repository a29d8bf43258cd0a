// Copyright (c) mmbinary contributors. All rights reserved.
// CPU launchers of the packed MBB conv ops. The kernel variant (generic,
// popcnt, avx2, avx512) is chosen per call from the CPU's features, or
// forced with MMBINARY_CPU_KERNEL=auto|generic|popcnt|avx2|avx512.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>

#include "../../common/cpu_features.h"
#include "../../common/mbb_conv2d.h"
#include "../../common/mbb_conv2d_x86.h"
#include "../../common/pytorch_cpp_helper.h"
#include "../mbb_conv2d_checks.h"

namespace mmbinary {

namespace {

enum class CpuKernel { kGeneric, kPopcnt, kAvx2, kAvx512 };

struct KernelSupport {
  bool popcnt = false, avx2 = false, avx512 = false;
};

// Which variants this build and CPU can run.
const KernelSupport& kernel_support() {
  static const KernelSupport support = [] {
    KernelSupport k;
#ifdef MMBINARY_MBB_HAVE_X86
    const CpuFeatures f = detect_cpu_features();
    k.popcnt = f.popcnt;
    k.avx2 = f.avx2 && f.popcnt;
    k.avx512 = k.avx2 && f.avx512f && f.avx512_vpopcntdq &&
               __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw");
#endif
    return k;
  }();
  return support;
}

// The variant MMBINARY_CPU_KERNEL asks for, or the best the CPU runs.
CpuKernel select_cpu_kernel() {
  const char* env = std::getenv("MMBINARY_CPU_KERNEL");
  const std::string name = env == nullptr ? "" : env;
  const KernelSupport& k = kernel_support();
  if (name.empty() || name == "auto") {
    if (k.avx512) return CpuKernel::kAvx512;
    if (k.avx2) return CpuKernel::kAvx2;
    return k.popcnt ? CpuKernel::kPopcnt : CpuKernel::kGeneric;
  }
  if (name == "generic") return CpuKernel::kGeneric;
  if (name == "popcnt") {
    TORCH_CHECK(k.popcnt, "MMBINARY_CPU_KERNEL=popcnt, but this CPU or "
                "build has no popcnt kernel (compiled: ",
                MMBINARY_COMPILED_CPU_KERNELS, ")");
    return CpuKernel::kPopcnt;
  }
  if (name == "avx2") {
    TORCH_CHECK(k.avx2, "MMBINARY_CPU_KERNEL=avx2, but this CPU or build "
                "has no AVX2 kernel (compiled: ",
                MMBINARY_COMPILED_CPU_KERNELS, ")");
    return CpuKernel::kAvx2;
  }
  if (name == "avx512") {
    TORCH_CHECK(k.avx512, "MMBINARY_CPU_KERNEL=avx512, but this CPU or build "
                "has no AVX-512 VPOPCNTDQ kernel (compiled: ",
                MMBINARY_COMPILED_CPU_KERNELS, ")");
    return CpuKernel::kAvx512;
  }
  TORCH_CHECK(false, "MMBINARY_CPU_KERNEL must be one of auto, generic, "
              "popcnt, avx2, avx512; got '", name, "'");
  return CpuKernel::kGeneric;
}

void quantize_pack_into(const at::Tensor& input, const MBBConvShape& s,
                        float inv_step, uint64_t* out, CpuKernel kernel) {
  const int64_t S = s.H * s.W;
  const int64_t items =
      s.N * s.G * s.Wg * ((S + kMBBPackChunk - 1) / kMBBPackChunk);
  if (items == 0) return;
  const float* x = input.const_data_ptr<float>();
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    switch (kernel) {
#ifdef MMBINARY_MBB_HAVE_X86
      case CpuKernel::kAvx512:
      case CpuKernel::kAvx2:
        mbb_avx2::quantize_pack_items(x, out, s, inv_step, begin, end);
        break;
      case CpuKernel::kPopcnt:
        mbb_popcnt::quantize_pack_items(x, out, s, inv_step, begin, end);
        break;
#endif
      default:
        mbb_generic::quantize_pack_items(x, out, s, inv_step, begin, end);
    }
  });
}

// Runs the convolution on packed activations `act`; writes out_acc (int32)
// or, with out_scale / out_bias, the float epilogue into out.
void run_conv(const MBBConvShape& s, const uint64_t* act,
              const at::Tensor& weight_words, int32_t* out_acc, float* out,
              const float* scale, const float* bias, CpuKernel kernel) {
  if (s.N == 0) return;
  const auto long_options = weight_words.options().dtype(at::kLong);
  const auto int_options = weight_words.options().dtype(at::kInt);
  const int64_t blocks = (s.Wo + kMBBLanes - 1) / kMBBLanes;
  at::Tensor tables =
      at::empty({2 * (s.Ho + s.Wo) + 3 * blocks}, long_options);
  at::Tensor level_sum = at::empty({s.N * s.H * s.W * s.G}, int_options);
  at::Tensor act_sum = at::empty({s.N * s.Ho * s.Wo * s.G}, int_options);
  at::Tensor prefix = at::empty(
      {s.is_signed ? s.O * (s.kh + 1) * (s.kw + 1) : 0}, long_options);

  MBBConvArgs a;
  a.s = s;
  a.act = act;
  a.weight = reinterpret_cast<const uint64_t*>(
      weight_words.const_data_ptr<int64_t>());
  int64_t* table_ptr = tables.data_ptr<int64_t>();
  mbb_tap_ranges(s, table_ptr, table_ptr + 2 * s.Ho);
  mbb_block_taps(s, table_ptr + 2 * s.Ho, table_ptr + 2 * (s.Ho + s.Wo));
  a.ky_range = table_ptr;
  a.kx_range = table_ptr + 2 * s.Ho;
  a.block_taps = table_ptr + 2 * (s.Ho + s.Wo);
  int32_t* level_ptr = level_sum.data_ptr<int32_t>();
  int32_t* act_sum_ptr = act_sum.data_ptr<int32_t>();
  a.act_sum = act_sum_ptr;
  a.wsum_prefix = prefix.const_data_ptr<int64_t>();
  a.out_acc = out_acc;
  a.out = out;
  a.scale = scale;
  a.bias = bias;

  // Pre-passes: per-pixel level sums, their window sums, weight sums.
  at::parallel_for(0, s.N * s.H, 1, [&](int64_t begin, int64_t end) {
    mbb_level_sums(s, act, level_ptr, begin, end);
  });
  at::parallel_for(0, s.N * s.Ho, 1, [&](int64_t begin, int64_t end) {
    mbb_window_sums(s, level_ptr, a.ky_range, a.kx_range, act_sum_ptr, begin,
                    end);
  });
  if (s.is_signed) {
    int64_t* prefix_ptr = prefix.data_ptr<int64_t>();
    at::parallel_for(0, s.O, 16, [&](int64_t begin, int64_t end) {
      mbb_weight_sum_prefix(s, a.weight, prefix_ptr, begin, end);
    });
  }

  // Work items: (sample, output row, chunk of output channels); smaller
  // chunks when there are few rows, so that every thread has work. Each
  // thread gathers row patches into its own buffer.
  const int64_t threads = at::get_num_threads();
  int64_t chunk = 64;
  while (chunk > 8 &&
         s.N * s.Ho * ((s.O + chunk - 1) / chunk) < 8 * threads)
    chunk /= 2;
  a.o_chunk = chunk;
  const int64_t items = s.N * s.Ho * ((s.O + chunk - 1) / chunk);
  const int64_t patch_words = mbb_patch_words(s);
  at::Tensor patches = at::empty({threads, patch_words}, long_options);
  uint64_t* patch_base =
      reinterpret_cast<uint64_t*>(patches.data_ptr<int64_t>());
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    const int64_t thread = at::get_thread_num();
    TORCH_CHECK(thread < threads, "mbb_conv2d: unexpected thread index");
    uint64_t* patch = patch_base + thread * patch_words;
    switch (kernel) {
#ifdef MMBINARY_MBB_HAVE_X86
      case CpuKernel::kAvx512:
        mbb_avx512::conv_items(a, patch, begin, end);
        break;
      case CpuKernel::kAvx2:
        mbb_avx2::conv_items(a, patch, begin, end);
        break;
      case CpuKernel::kPopcnt:
        mbb_popcnt::conv_items(a, patch, begin, end);
        break;
#endif
      default:
        mbb_generic::conv_items(a, patch, begin, end);
    }
  });
}

}  // namespace

// input: (N, C, H, W) float32 -> (N, H, W, groups, a_bits, Wg) int64 words.
at::Tensor mbb_quantize_pack_cpu(const at::Tensor& input, int64_t a_bits,
                                 double inv_step, bool is_signed,
                                 int64_t groups) {
  MMBINARY_CHECK_CPU(input);
  const MBBConvShape s =
      mbb_quantize_pack_shape(input, a_bits, is_signed, groups);
  const float inv = mbb_check_inv_step(inv_step);
  at::Tensor out = at::empty({s.N, s.H, s.W, s.G, s.K, s.Wg},
                             input.options().dtype(at::kLong));
  quantize_pack_into(input, s, inv,
                     reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>()),
                     select_cpu_kernel());
  return out;
}

// Packed activations and weights -> (N, O, Ho, Wo) int32 accumulators.
at::Tensor mbb_conv2d_accumulate_cpu(
    const at::Tensor& act_words, const at::Tensor& weight_words,
    int64_t in_channels, int64_t out_channels, int64_t w_bits, int64_t a_bits,
    bool is_signed, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  MMBINARY_CHECK_CPU(act_words);
  MMBINARY_CHECK_CPU(weight_words);
  const MBBConvShape s = mbb_conv2d_check(
      act_words, true, weight_words, in_channels, out_channels, w_bits,
      a_bits, is_signed, kernel_size, stride, padding, dilation, groups);
  at::Tensor out = at::empty({s.N, s.O, s.Ho, s.Wo},
                             act_words.options().dtype(at::kInt));
  run_conv(s,
           reinterpret_cast<const uint64_t*>(
               act_words.const_data_ptr<int64_t>()),
           weight_words, out.data_ptr<int32_t>(), nullptr, nullptr, nullptr,
           select_cpu_kernel());
  return out;
}

// Float input -> quantize + pack -> conv -> float(acc) * out_scale[o] +
// out_bias[o], (N, O, Ho, Wo) float32.
at::Tensor mbb_conv2d_cpu(const at::Tensor& input,
                          const at::Tensor& weight_words,
                          const at::Tensor& out_scale,
                          const at::Tensor& out_bias, int64_t in_channels,
                          int64_t w_bits, int64_t a_bits, double inv_step,
                          bool is_signed, at::IntArrayRef kernel_size,
                          at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation, int64_t groups) {
  MMBINARY_CHECK_CPU(input);
  MMBINARY_CHECK_CPU(weight_words);
  MMBINARY_CHECK_CPU(out_scale);
  MMBINARY_CHECK_CPU(out_bias);
  mbb_check_epilogue(out_scale, out_bias);
  const MBBConvShape s = mbb_conv2d_check(
      input, false, weight_words, in_channels, out_scale.size(0), w_bits,
      a_bits, is_signed, kernel_size, stride, padding, dilation, groups);
  const float inv = mbb_check_inv_step(inv_step);
  const CpuKernel kernel = select_cpu_kernel();
  at::Tensor act = at::empty({s.N, s.H, s.W, s.G, s.K, s.Wg},
                             input.options().dtype(at::kLong));
  auto* act_ptr = reinterpret_cast<uint64_t*>(act.data_ptr<int64_t>());
  quantize_pack_into(input, s, inv, act_ptr, kernel);
  at::Tensor out = at::empty({s.N, s.O, s.Ho, s.Wo}, input.options());
  run_conv(s, act_ptr, weight_words, nullptr, out.data_ptr<float>(),
           out_scale.const_data_ptr<float>(),
           out_bias.const_data_ptr<float>(), kernel);
  return out;
}

}  // namespace mmbinary

TORCH_LIBRARY_IMPL(mmbinary, CPU, m) {
  m.impl("mbb_quantize_pack", &mmbinary::mbb_quantize_pack_cpu);
  m.impl("mbb_conv2d_accumulate", &mmbinary::mbb_conv2d_accumulate_cpu);
  m.impl("mbb_conv2d", &mmbinary::mbb_conv2d_cpu);
}
