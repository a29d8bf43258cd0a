// Copyright (c) mmbinary contributors. All rights reserved.
// CPU launchers of the packed MBB conv ops. The kernel variant (generic,
// popcnt, avx2, avx512) is chosen per call from the CPU's features, or
// forced with MMBINARY_CPU_KERNEL=auto|generic|popcnt|avx2|avx512.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/isnan.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "../../common/cpu_features.h"
#include "../../common/mbb_conv2d.h"
#include "../../common/mbb_conv2d_lanes_avx512.h"
#include "../../common/mbb_conv2d_x86.h"
#include "../../common/mbb_phase_timer.h"
#include "../../common/pytorch_cpp_helper.h"
#include "../mbb_conv2d_checks.h"

namespace mmbinary {

namespace {

enum class CpuKernel { kGeneric, kPopcnt, kAvx2, kAvx512 };

// Grain of at::parallel_for for `per_item` words or values of work per
// item: chunks of at least ~64 K of them, so that the cheap passes of a
// small layer run on one thread instead of waiting at a barrier.
int64_t grain_for(int64_t per_item) {
  constexpr int64_t kMinWork = 1 << 16;
  return per_item >= kMinWork ? 1 : kMinWork / (per_item < 1 ? 1 : per_item);
}

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

// Quantizes and packs `input` (NCHW or channels-last contiguous) into
// `out`; returns whether it holds a NaN (which packs like 0).
bool quantize_pack_into(const at::Tensor& input, const MBBConvShape& s,
                        float inv_step, uint64_t* out, CpuKernel kernel) {
  if (s.N * s.H * s.W == 0) return false;
  if (!input.is_contiguous() &&
      input.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    // Pixel by pixel: the channels of a pixel are contiguous.
    MBBPhaseTimer timer(kPhaseQuantizePack);
    const float* x = input.const_data_ptr<float>();
    std::atomic<bool> nan{false};
    at::parallel_for(0, s.N * s.H * s.W, grain_for(s.C),
                     [&](int64_t begin, int64_t end) {
      bool seen;
      switch (kernel) {
#ifdef MMBINARY_MBB_HAVE_X86
        case CpuKernel::kAvx512:
        case CpuKernel::kAvx2:
          seen = mbb_avx2::pack_pixels_nhwc(x, out, s, inv_step, begin, end);
          break;
        case CpuKernel::kPopcnt:
          seen =
              mbb_popcnt::pack_pixels_nhwc(x, out, s, inv_step, begin, end);
          break;
#endif
        default:
          seen =
              mbb_generic::pack_pixels_nhwc(x, out, s, inv_step, begin, end);
      }
      if (seen) nan = true;
    });
    return nan;
  }
  const at::Tensor x_nchw = input.contiguous();
  const bool nan = at::isnan(x_nchw).any().item<bool>();
  const int64_t S = s.H * s.W;
  const int64_t items =
      s.N * s.G * s.Wg * ((S + kMBBPackChunk - 1) / kMBBPackChunk);
  MBBPhaseTimer timer(kPhaseQuantizePack);
  const float* x = x_nchw.const_data_ptr<float>();
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
  return nan;
}

// The pre-passes of mbb_conv2d_kernels.h with the popcount of `kernel`'s
// variant (the portable one's is a sequence of shifts and adds).
void level_sums(CpuKernel kernel, const MBBConvShape& s, const uint64_t* act,
                int32_t* level_sum, int64_t row_begin, int64_t row_end) {
#ifdef MMBINARY_MBB_HAVE_X86
  if (kernel != CpuKernel::kGeneric) {
    mbb_popcnt::level_sums(s, act, level_sum, row_begin, row_end);
    return;
  }
#endif
  (void)kernel;
  mbb_generic::level_sums(s, act, level_sum, row_begin, row_end);
}

void weight_sum_prefix(CpuKernel kernel, const MBBConvShape& s,
                       const uint64_t* weight, int64_t* prefix,
                       int64_t o_begin, int64_t o_end) {
#ifdef MMBINARY_MBB_HAVE_X86
  if (kernel != CpuKernel::kGeneric) {
    mbb_popcnt::weight_sum_prefix(s, weight, prefix, o_begin, o_end);
    return;
  }
#endif
  (void)kernel;
  mbb_generic::weight_sum_prefix(s, weight, prefix, o_begin, o_end);
}

// Runs the convolution on packed activations `act`; writes out_acc (int32)
// or, with out_scale / out_bias, the float epilogue into out.
void run_conv(const MBBConvShape& s, const uint64_t* act,
              const at::Tensor& weight_words, int32_t* out_acc, float* out,
              const float* scale, const float* bias, CpuKernel kernel,
              bool channels_last = true) {
  if (s.N == 0) return;
  mbb_count_call();
  MBBPhaseTimer prepass_timer(kPhasePrepass);
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
  a.channels_last = channels_last;
  a.scale = scale;
  a.bias = bias;

  // Pre-passes: per-pixel level sums, their window sums, weight sums.
  at::parallel_for(0, s.N * s.H, grain_for(s.W * s.G * s.K * s.Wg),
                   [&](int64_t begin, int64_t end) {
    level_sums(kernel, s, act, level_ptr, begin, end);
  });
  at::parallel_for(0, s.N * s.Ho, grain_for(s.Wo * s.G * s.kh * s.kw),
                   [&](int64_t begin, int64_t end) {
    mbb_window_sums(s, level_ptr, a.ky_range, a.kx_range, act_sum_ptr, begin,
                    end);
  });
  if (s.is_signed) {
    int64_t* prefix_ptr = prefix.data_ptr<int64_t>();
    at::parallel_for(0, s.O, grain_for(s.M * s.kh * s.kw * s.Wg),
                     [&](int64_t begin, int64_t end) {
      weight_sum_prefix(kernel, s, a.weight, prefix_ptr, begin, end);
    });
  }

  // Work items: (sample, output row, chunk of output channels); smaller
  // chunks when there are few rows, so that every thread has work. Each
  // thread gathers row patches into its own buffer.
  prepass_timer.stop();
  MBBPhaseTimer conv_timer(kPhaseAccumulate);
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


// ---- the channel-lane AVX-512 path (groups == 1, channels-last) ---------

bool use_lanes(const MBBConvShape& s, CpuKernel kernel) {
#ifdef MMBINARY_MBB_HAVE_LANES_AVX512
  return kernel == CpuKernel::kAvx512 && s.G == 1 &&
         s.kh * s.kw <= mbb_lanes_avx512::kMaxLaneTaps;
#else
  (void)s, (void)kernel;
  return false;
#endif
}

#ifdef MMBINARY_MBB_HAVE_LANES_AVX512
// Quantizes and packs a channels-last float input into act (N, H, W, 1, K,
// Wg) and the per-pixel level sums; returns whether it holds a NaN.
bool lane_pack(const at::Tensor& input_cl, const MBBConvShape& s,
               float inv_step, uint64_t* act, int32_t* level_sum) {
  MBBPhaseTimer timer(kPhaseQuantizePack);
  const float* x = input_cl.const_data_ptr<float>();
  std::atomic<bool> nan{false};
  at::parallel_for(0, s.N * s.H * s.W, grain_for(s.C),
                   [&](int64_t begin, int64_t end) {
    if (mbb_lanes_avx512::pack_pixels(x, act, level_sum, s, inv_step, begin,
                                      end))
      nan = true;
  });
  return nan;
}

// The convolution on packed activations into channels-last outputs:
// out_acc (int32) or, with scale / bias, the float epilogue into out.
// level_sum: the per-pixel level sums, or null to count them here.
// Where the channel-lane kernel writes: int32 accumulators, float32
// epilogue values, or (out_words) the next layer's activation words.
struct LaneOutput {
  int32_t* acc = nullptr;
  float* out = nullptr;
  uint8_t* words = nullptr;
  const float* residual = nullptr;
  float act_min = -INFINITY, act_max = INFINITY;
  int64_t K = 0, Wg = 0;  // of the words
  float inv_step = 1.f;
  bool is_signed = false;
};

// Weight words (O, M, kh, kw, Wg) -> the kernel's lane layout, (O8 / 8,
// M, kh * kw, Wg, 8) int64.
at::Tensor lane_weight(const MBBConvShape& s, const at::Tensor& weight_words) {
  const int64_t O8 = mbb_lane_channels(s.O);
  const auto* weight = reinterpret_cast<const uint64_t*>(
      weight_words.const_data_ptr<int64_t>());
  at::Tensor lanes = at::empty({O8 * s.M * s.kh * s.kw * s.Wg},
                               weight_words.options().dtype(at::kLong));
  auto* lanes_ptr = reinterpret_cast<uint64_t*>(lanes.data_ptr<int64_t>());
  at::parallel_for(0, O8, grain_for(s.M * s.kh * s.kw * s.Wg),
                   [&](int64_t begin, int64_t end) {
    mbb_weight_lanes(s, weight, lanes_ptr, begin, end);
  });
  return lanes;
}

// prepared_lanes: lane_weight(s, weight_words) made once per layer
// (mbb_lane_prepare_weight), or undefined to lay the weights out here.
void run_lane_conv(const MBBConvShape& s, const uint64_t* act,
                   const int32_t* level_sum, const at::Tensor& weight_words,
                   const LaneOutput& to, const at::Tensor& scale,
                   const at::Tensor& bias,
                   const at::Tensor& prepared_lanes = at::Tensor()) {
  if (s.N == 0) return;
  mbb_count_call();
  MBBPhaseTimer prepass_timer(kPhasePrepass);
  const auto opts = weight_words.options();
  const int64_t O8 = mbb_lane_channels(s.O);
  const auto* weight = reinterpret_cast<const uint64_t*>(
      weight_words.const_data_ptr<int64_t>());
  const at::Tensor lanes = prepared_lanes.defined()
                               ? prepared_lanes
                               : lane_weight(s, weight_words);
  const auto* lanes_ptr =
      reinterpret_cast<const uint64_t*>(lanes.const_data_ptr<int64_t>());
  at::Tensor tables = at::empty({2 * (s.Ho + s.Wo)}, opts.dtype(at::kLong));
  int64_t* table_ptr = tables.data_ptr<int64_t>();
  mbb_tap_ranges(s, table_ptr, table_ptr + 2 * s.Ho);
  at::Tensor zero_words = at::zeros({s.K * s.Wg}, opts.dtype(at::kLong));

  MBBLaneArgs a;
  a.s = s;
  a.act = act;
  a.weight_lanes = lanes_ptr;
  a.ky_range = table_ptr;
  a.kx_range = table_ptr + 2 * s.Ho;
  a.zero_words =
      reinterpret_cast<const uint64_t*>(zero_words.const_data_ptr<int64_t>());
  a.out = to.out;
  // Large outputs bypass the caches (see MBBLaneArgs::stream_out).
  const int64_t stream_bytes =
      mbb_stream_threshold_bytes(to.words != nullptr);
  a.stream_out = to.out != nullptr && s.O % 16 == 0 &&
                 reinterpret_cast<uintptr_t>(to.out) % 64 == 0 &&
                 s.N * s.Ho * s.Wo * s.O * 4 > stream_bytes;
  a.out_acc = to.acc;
  a.residual = to.residual;
  a.act_min = to.act_min;
  a.act_max = to.act_max;
  a.out_words = to.words;
  a.out_K = to.K;
  a.out_Wg = to.Wg;
  a.out_inv_step = to.inv_step;
  a.out_signed = to.is_signed;
  a.thresholds = nullptr;
  a.descending = nullptr;

  // Window level sums of every output (and the pixel sums if not given).
  at::Tensor pixel_sums;
  if (level_sum == nullptr) {
    pixel_sums = at::empty({s.N * s.H * s.W}, opts.dtype(at::kInt));
    int32_t* ptr = pixel_sums.data_ptr<int32_t>();
    at::parallel_for(0, s.N * s.H, grain_for(s.W * s.G * s.K * s.Wg),
                   [&](int64_t begin, int64_t end) {
      level_sums(CpuKernel::kAvx512, s, act, ptr, begin, end);
    });
    level_sum = ptr;
  }
  at::Tensor act_sum = at::empty({s.N * s.Ho * s.Wo}, opts.dtype(at::kInt));
  int32_t* act_sum_ptr = act_sum.data_ptr<int32_t>();
  at::parallel_for(0, s.N * s.Ho, grain_for(s.Wo * s.G * s.kh * s.kw),
                   [&](int64_t begin, int64_t end) {
    mbb_window_sums(s, level_sum, a.ky_range, a.kx_range, act_sum_ptr, begin,
                    end);
  });
  a.act_sum = act_sum_ptr;

  at::Tensor prefix_lanes;
  a.wsum_prefix = nullptr;
  if (s.is_signed) {
    const int64_t cells = (s.kh + 1) * (s.kw + 1);
    at::Tensor prefix = at::empty({s.O * cells}, opts.dtype(at::kLong));
    int64_t* prefix_ptr = prefix.data_ptr<int64_t>();
    at::parallel_for(0, s.O, grain_for(s.M * s.kh * s.kw * s.Wg),
                     [&](int64_t begin, int64_t end) {
      weight_sum_prefix(CpuKernel::kAvx512, s, weight, prefix_ptr, begin,
                        end);
    });
    prefix_lanes = at::empty({cells * O8}, opts.dtype(at::kInt));
    mbb_weight_prefix_lanes(s, prefix_ptr, prefix_lanes.data_ptr<int32_t>(),
                            O8);
    a.wsum_prefix = prefix_lanes.const_data_ptr<int32_t>();
  }
  // Zero-padded epilogue constants (the kernel reads 8 channels at once).
  // (A plain buffer: no tensor dispatch per call.)
  std::vector<float> constants;
  if (to.acc == nullptr) {
    constants.assign(2 * O8, 0.f);
    std::copy_n(scale.const_data_ptr<float>(), s.O, constants.begin());
    std::copy_n(bias.const_data_ptr<float>(), s.O, constants.begin() + O8);
    a.scale = constants.data();
    a.bias = constants.data() + O8;
  }

  // Words only, 1 or 2 bits: integer thresholds instead of the float
  // epilogue and quantization (the same levels, see mbb_level_thresholds).
  at::Tensor thresholds, descending;
  if (to.words != nullptr && to.out == nullptr && to.residual == nullptr &&
      to.K <= 2) {
    const int64_t levels = (int64_t{1} << to.K) - 1;
    thresholds = at::empty({levels * O8}, opts.dtype(at::kLong));
    descending = at::zeros({O8 / kMBBChannelLanes}, opts.dtype(at::kByte));
    // |acc| <= Cg * kh * kw * (2^M - 1) * (2^K - 1) in either mode.
    const int64_t bound = mbb_accumulator_bound(s.Cg, s.kh, s.kw, s.M, s.K);
    int64_t* t_ptr = thresholds.data_ptr<int64_t>();
    uint8_t* d_ptr = descending.data_ptr<uint8_t>();
    // Padded channels: never reached (their bits stay 0).
    for (int64_t j = 0; j < levels; ++j)
      for (int64_t o = s.O; o < O8; ++o) t_ptr[j * O8 + o] = bound + 1;
    mbb_level_thresholds(a.scale, a.bias, to.act_min, to.act_max,
                         to.inv_step,
                         to.K, to.is_signed, bound, O8, t_ptr, d_ptr, 0, s.O);
    a.thresholds = t_ptr;
    a.descending = d_ptr;
  }
  prepass_timer.stop();
  MBBPhaseTimer conv_timer(kPhaseAccumulate);
  const int64_t threads = at::get_num_threads();
  int64_t chunk = 64;
  while (chunk > 16 && s.N * s.Ho * ((s.O + chunk - 1) / chunk) < 8 * threads)
    chunk /= 2;
  a.o_chunk = chunk;
  const int64_t items = s.N * s.Ho * ((s.O + chunk - 1) / chunk);
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    mbb_lanes_avx512::lane_conv_items(a, begin, end);
    if (a.stream_out) _mm_sfence();  // the streamed lines, before returning
  });
}
#endif

}  // namespace

// input: (N, C, H, W) float32 (NCHW or channels-last) -> (N, H, W, groups,
// a_bits, Wg) int64 words. NaN is refused (it has no level).
at::Tensor mbb_quantize_pack_cpu(const at::Tensor& input, int64_t a_bits,
                                 double inv_step, bool is_signed,
                                 int64_t groups) {
  MMBINARY_CHECK_CPU(input);
  const MBBConvShape s =
      mbb_quantize_pack_shape(input, a_bits, is_signed, groups);
  const float inv = mbb_check_inv_step(inv_step);
  const CpuKernel kernel = select_cpu_kernel();
  at::Tensor out = at::empty({s.N, s.H, s.W, s.G, s.K, s.Wg},
                             input.options().dtype(at::kLong));
  auto* out_ptr = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
#ifdef MMBINARY_MBB_HAVE_LANES_AVX512
  if (use_lanes(s, kernel) &&
      input.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    at::Tensor sums = at::empty({s.N * s.H * s.W}, out.options().dtype(at::kInt));
    if (lane_pack(input, s, inv, out_ptr, sums.data_ptr<int32_t>()))
      mbb_check_no_nan(input);  // raises
    return out;
  }
#endif
  if (quantize_pack_into(input, s, inv, out_ptr, kernel))
    mbb_check_no_nan(input);  // raises
  return out;
}

// Packed activations and weights -> (N, O, Ho, Wo) int32 accumulators
// (channels-last from the channel-lane kernel).
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
  const CpuKernel kernel = select_cpu_kernel();
  const auto* act =
      reinterpret_cast<const uint64_t*>(act_words.const_data_ptr<int64_t>());
#ifdef MMBINARY_MBB_HAVE_LANES_AVX512
  if (use_lanes(s, kernel)) {
    at::Tensor out = at::empty(
        {s.N, s.O, s.Ho, s.Wo},
        act_words.options().dtype(at::kInt).memory_format(
            at::MemoryFormat::ChannelsLast));
    LaneOutput to;
    to.acc = out.data_ptr<int32_t>();
    run_lane_conv(s, act, nullptr, weight_words, to, at::Tensor(),
                  at::Tensor());
    return out;
  }
#endif
  at::Tensor out = at::empty(
      {s.N, s.O, s.Ho, s.Wo},
      act_words.options().dtype(at::kInt).memory_format(
          at::MemoryFormat::ChannelsLast));
  run_conv(s, act, weight_words, out.data_ptr<int32_t>(), nullptr, nullptr,
           nullptr, kernel);
  return out;
}

// Float input -> quantize + pack -> conv -> float(acc) * out_scale[o] +
// out_bias[o], (N, O, Ho, Wo) float32 (channels-last from the channel-lane
// kernel). Outputs whose receptive field holds a NaN input are NaN.
at::Tensor mbb_conv2d_cpu(const at::Tensor& input,
                          const at::Tensor& weight_words,
                          const at::Tensor& out_scale,
                          const at::Tensor& out_bias, int64_t in_channels,
                          int64_t w_bits, int64_t a_bits, double inv_step,
                          bool is_signed, at::IntArrayRef kernel_size,
                          at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation, int64_t groups) {
  const MBBConvShape s = mbb_cpu_conv2d_check(
      input, false, weight_words, out_scale, out_bias, in_channels, w_bits,
      a_bits, is_signed, kernel_size, stride, padding, dilation, groups);
  const float inv = mbb_check_inv_step(inv_step);
  const CpuKernel kernel = select_cpu_kernel();
  at::Tensor act = at::empty({s.N, s.H, s.W, s.G, s.K, s.Wg},
                             input.options().dtype(at::kLong));
  auto* act_ptr = reinterpret_cast<uint64_t*>(act.data_ptr<int64_t>());
#ifdef MMBINARY_MBB_HAVE_LANES_AVX512
  if (use_lanes(s, kernel)) {
    at::Tensor sums;
    bool nan;
    if (input.is_contiguous(at::MemoryFormat::ChannelsLast)) {
      sums = at::empty({s.N * s.H * s.W}, input.options().dtype(at::kInt));
      nan = lane_pack(input, s, inv, act_ptr, sums.data_ptr<int32_t>());
    } else {
      // NCHW: pack it where it is (a channels-last copy costs more);
      // run_lane_conv counts the level sums from the words.
      nan = quantize_pack_into(input, s, inv, act_ptr, kernel);
    }
    at::Tensor out = at::empty(
        {s.N, s.O, s.Ho, s.Wo},
        input.options().memory_format(at::MemoryFormat::ChannelsLast));
    LaneOutput to;
    to.out = out.data_ptr<float>();
    run_lane_conv(s, act_ptr,
                  sums.defined() ? sums.const_data_ptr<int32_t>() : nullptr,
                  weight_words, to, out_scale, out_bias);
    if (nan) mbb_propagate_nan(input, out, s);
    return out;
  }
#endif
  const bool nan = quantize_pack_into(input, s, inv, act_ptr, kernel);
  at::Tensor out = at::empty(
      {s.N, s.O, s.Ho, s.Wo},
      input.options().memory_format(at::MemoryFormat::ChannelsLast));
  run_conv(s, act_ptr, weight_words, nullptr, out.data_ptr<float>(),
           out_scale.const_data_ptr<float>(),
           out_bias.const_data_ptr<float>(), kernel);
  if (nan) mbb_propagate_nan(input, out, s);
  return out;
}

// Packed activations -> conv -> epilogue (+ residual) -> clamp to
// [act_min, act_max] (the activation: ReLU 0, inf; ReLU6 0, 6) -> the
// float32 (N, O, Ho, Wo) output (float_out) and/or, for a following MBB
// layer with out_a_bits levels (out_a_bits > 0), its (N, Ho, Wo, 1,
// out_a_bits, ceil(O / 64)) activation words: what mbb_quantize_pack of
// the float output gives, without a second pass over it. Returns (float
// output or an empty tensor, words or an empty tensor).
std::tuple<at::Tensor, at::Tensor> mbb_conv2d_words_cpu(
    const at::Tensor& act_words, const at::Tensor& weight_words,
    const at::Tensor& out_scale, const at::Tensor& out_bias,
    int64_t in_channels, int64_t w_bits, int64_t a_bits, bool is_signed,
    at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    const c10::optional<at::Tensor>& residual, double act_min,
    double act_max, bool float_out,
    int64_t out_a_bits, double out_inv_step, bool out_signed,
    const c10::optional<at::Tensor>& weight_lanes) {
  const MBBConvShape s = mbb_cpu_conv2d_check(
      act_words, true, weight_words, out_scale, out_bias, in_channels, w_bits,
      a_bits, is_signed, kernel_size, stride, padding, dilation, groups);
  TORCH_CHECK(out_a_bits >= 0 && out_a_bits <= kMBBMaxBits,
              "out_a_bits must be 0 (no words) or 1..8, got ", out_a_bits);
  TORCH_CHECK(float_out || out_a_bits > 0,
              "mbb_conv2d_words: ask for float_out, words (out_a_bits > 0) "
              "or both");
  const float out_inv = out_a_bits > 0 ? mbb_check_inv_step(out_inv_step)
                                       : 1.f;
  const float amin = static_cast<float>(act_min);
  const float amax = static_cast<float>(act_max);
  mbb_check_act_clamp(act_min, act_max);
  const auto float_options = out_scale.options();
  const auto cl = at::MemoryFormat::ChannelsLast;
  const at::Tensor res = mbb_channels_last_residual(residual, s);
  const CpuKernel kernel = select_cpu_kernel();
  const auto* act =
      reinterpret_cast<const uint64_t*>(act_words.const_data_ptr<int64_t>());
  const int64_t out_wg = mbb_num_words(s.O);
  at::Tensor out = at::empty({0}, float_options);
  at::Tensor words = at::empty({0}, act_words.options());
#ifdef MMBINARY_MBB_HAVE_LANES_AVX512
  if (use_lanes(s, kernel)) {
    LaneOutput to;
    to.act_min = amin, to.act_max = amax;
    to.residual = res.defined() ? res.const_data_ptr<float>() : nullptr;
    if (float_out) {
      out = at::empty({s.N, s.O, s.Ho, s.Wo}, float_options.memory_format(cl));
      to.out = out.data_ptr<float>();
    }
    if (out_a_bits > 0) {
      words = at::zeros({s.N, s.Ho, s.Wo, 1, out_a_bits, out_wg},
                        act_words.options());
      to.words = reinterpret_cast<uint8_t*>(words.data_ptr<int64_t>());
      to.K = out_a_bits, to.Wg = out_wg;
      to.inv_step = out_inv, to.is_signed = out_signed;
    }
    at::Tensor lanes;
    if (weight_lanes.has_value() && weight_lanes->numel() > 0) {
      lanes = *weight_lanes;
      const int64_t expected =
          mbb_lane_channels(s.O) * s.M * s.kh * s.kw * s.Wg;
      TORCH_CHECK(lanes.device().is_cpu() &&
                      lanes.scalar_type() == at::kLong &&
                      lanes.is_contiguous() && lanes.numel() == expected,
                  "weight_lanes must be mbb_lane_prepare_weight(weight_words"
                  ", ...) of this layer: a contiguous int64 CPU tensor of ",
                  expected, " elements, got ", lanes.scalar_type(), " ",
                  lanes.sizes());
    }
    run_lane_conv(s, act, nullptr, weight_words, to, out_scale, out_bias,
                  lanes);
    return {out, words};
  }
#endif
  // Other kernels: the same values through the float tensor.
  at::Tensor value =
      at::empty({s.N, s.O, s.Ho, s.Wo}, float_options.memory_format(cl));
  run_conv(s, act, weight_words, nullptr, value.data_ptr<float>(),
           out_scale.const_data_ptr<float>(),
           out_bias.const_data_ptr<float>(), kernel);
  if (res.defined()) value.add_(res);
  if (amin != -INFINITY) value.clamp_min_(amin);
  if (amax != INFINITY) value.clamp_max_(amax);
  if (out_a_bits > 0) {
    const MBBConvShape next = make_mbb_shape(s.N, s.O, s.Ho, s.Wo, 0, 1, 1,
                                             1, 1, 1, 0, 0, 1, 1, 1,
                                             out_a_bits, out_signed);
    words = at::empty({s.N, s.Ho, s.Wo, 1, out_a_bits, out_wg},
                      act_words.options());
    quantize_pack_into(value, next, out_inv,
                       reinterpret_cast<uint64_t*>(words.data_ptr<int64_t>()),
                       kernel);
  }
  if (float_out) out = value;
  return {out, words};
}

// Weight words -> the channel-lane kernel's layout of them, once per
// layer, for mbb_conv2d_words' weight_lanes; an empty tensor where that
// kernel does not run (no AVX-512 VPOPCNTDQ, kernels above 8 x 8).
at::Tensor mbb_lane_prepare_weight_cpu(const at::Tensor& weight_words,
                                       int64_t in_channels, int64_t w_bits,
                                       at::IntArrayRef kernel_size) {
  MMBINARY_CHECK_CPU(weight_words);
  const MBBConvShape s =
      mbb_weight_shape(weight_words, in_channels, w_bits, kernel_size);
#ifdef MMBINARY_MBB_HAVE_LANES_AVX512
  if (use_lanes(s, select_cpu_kernel())) return lane_weight(s, weight_words);
#endif
  return at::empty({0}, weight_words.options());
}

}  // namespace mmbinary

TORCH_LIBRARY_IMPL(mmbinary, CPU, m) {
  m.impl("mbb_lane_prepare_weight", &mmbinary::mbb_lane_prepare_weight_cpu);
  m.impl("mbb_conv2d_words", &mmbinary::mbb_conv2d_words_cpu);
  m.impl("mbb_quantize_pack", &mmbinary::mbb_quantize_pack_cpu);
  m.impl("mbb_conv2d_accumulate", &mmbinary::mbb_conv2d_accumulate_cpu);
  m.impl("mbb_conv2d", &mmbinary::mbb_conv2d_cpu);
}
