// Copyright (c) mmbinary contributors. All rights reserved.
// CPU launchers of the integer kernel of the packed MBB conv: the weight
// preparation, done once per layer, and mbb_conv2d_int8_words, the same op
// as mbb_conv2d_words (same activation words in, same float output and next
// layer's words out, bit-identical) for groups == 1, w_bits <= 8 on a CPU
// with AVX-512 VNNI. Its inner loop runs on AMX tiles where the CPU has
// them and the output is at least 16 columns wide
// (common/mbb_conv2d_int8_amx.h), else on vpdpbusd
// (common/mbb_conv2d_int8_avx512.h); MMBINARY_INT8_KERNEL=auto|vnni|amx
// forces one. mbb_conv2d_int8 takes a float input instead of words, and
// mbb_conv2d_int8_im2col does too with the taps folded into the channels
// (for layers with few input channels, such as a stem).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "../../common/cpu_features.h"
#include "../../common/max_pool_channels_last.h"
#include "../../common/mbb_conv2d.h"
#include "../../common/mbb_conv2d_int8_amx.h"
#include "../../common/mbb_conv2d_int8_avx512.h"
#include "../../common/mbb_phase_timer.h"
#include "../../common/pytorch_cpp_helper.h"
#include "../depthwise_pack_call.h"
#include "../mbb_conv2d_checks.h"

namespace mmbinary {

namespace {

// Whether this build and CPU run the integer kernel.
bool int8_supported() {
#ifdef MMBINARY_MBB_HAVE_INT8_AVX512
  static const bool supported = [] {
    const CpuFeatures f = detect_cpu_features();
    return f.avx512f && f.avx512bw && f.avx512_vnni &&
           __builtin_cpu_supports("avx512vl");
  }();
  return supported;
#else
  return false;
#endif
}

void check_int8(const MBBConvShape& s) {
  TORCH_CHECK(int8_supported(),
              "mbb_conv2d_int8: this CPU or build has no AVX-512 VNNI "
              "(avx512f, avx512bw, avx512vl, avx512vnni); use "
              "mbb_conv2d_words (the popcount kernels)");
  TORCH_CHECK(mbb_int8_eligible(s),
              "mbb_conv2d_int8 needs groups == 1, w_bits <= 8 and a_bits "
              "<= 8, got groups=", s.G, ", w_bits=", s.M, ", a_bits=", s.K);
}


// Whether this build and CPU (and the OS) run the AMX inner loop.
bool amx_supported() {
#ifdef MMBINARY_MBB_HAVE_INT8_AMX
  return int8_supported() && amx_usable();
#else
  return false;
#endif
}

// Whether a call runs on AMX tiles: MMBINARY_INT8_KERNEL=vnni never, =amx
// always (an error where it cannot), else where the CPU has AMX and the
// layer is eligible.
bool use_amx(const MBBConvShape& s) {
  const char* env = std::getenv("MMBINARY_INT8_KERNEL");
  const std::string name = env == nullptr ? "" : env;
  if (name == "vnni") return false;
  if (name == "amx") {
    TORCH_CHECK(amx_supported(), "MMBINARY_INT8_KERNEL=amx, but this CPU, "
                "OS or build cannot use AMX tiles (amx-tile, amx-int8)");
#ifdef MMBINARY_MBB_HAVE_INT8_AMX
    TORCH_CHECK(mbb_int8_amx_eligible(s), "MMBINARY_INT8_KERNEL=amx needs "
                "an output at least 16 columns wide, got ", s.Wo);
#endif
    return true;
  }
  TORCH_CHECK(name.empty() || name == "auto", "MMBINARY_INT8_KERNEL must "
              "be auto, vnni or amx, got '", name, "'");
#ifdef MMBINARY_MBB_HAVE_INT8_AMX
  return amx_supported() && mbb_int8_amx_eligible(s);
#else
  return false;
#endif
}

}  // namespace

// Whether mbb_conv2d_int8_words runs on this CPU.
bool mbb_int8_supported_cpu() { return int8_supported(); }

// The inner loop the integer kernel uses on this CPU for wide enough
// layers: "amx", "vnni", or "" (no integer kernel).
std::string mbb_int8_variant_cpu() {
  if (!int8_supported()) return "";
  return amx_supported() ? "amx" : "vnni";
}

// Weight words (O, M, kh, kw, ceil(C / 64)) -> (s8 codes (ceil(O / 16),
// kh * kw, 16 * ceil(C / 64), 16, 4), int32 prefix sums of sum_c w over
// the taps
// (kh + 1, kw + 1, 16 * ceil(O / 16))). Once per layer.
std::tuple<at::Tensor, at::Tensor> mbb_int8_prepare_weight_cpu(
    const at::Tensor& weight_words, int64_t in_channels, int64_t w_bits,
    at::IntArrayRef kernel_size) {
  MMBINARY_CHECK_CPU(weight_words);
  const MBBConvShape s =
      mbb_weight_shape(weight_words, in_channels, w_bits, kernel_size);
  TORCH_CHECK(s.M <= 8, "mbb_int8_prepare_weight: w_bits must be <= 8, "
              "got ", s.M);
  const auto opts = weight_words.options();
  const int64_t OB = mbb_int8_blocks(s.O), taps = s.kh * s.kw;
  const int64_t O16 = OB * kMBBInt8Lanes;
  const auto* weight = reinterpret_cast<const uint64_t*>(
      weight_words.const_data_ptr<int64_t>());
  at::Tensor codes = at::zeros(
      {OB, taps, mbb_int8_padded_quads(s.C), kMBBInt8Lanes, kMBBInt8Quad},
      opts.dtype(at::kChar));
  mbb_int8_weight_layout(s, weight, codes.data_ptr<int8_t>(), 0, s.O);
  const int64_t cells = (s.kh + 1) * (s.kw + 1);
  at::Tensor prefix = at::empty({s.O * cells}, opts.dtype(at::kLong));
  mbb_generic::weight_sum_prefix(s, weight, prefix.data_ptr<int64_t>(), 0,
                                 s.O);  // once per layer
  at::Tensor lanes = at::zeros({s.kh + 1, s.kw + 1, O16}, opts.dtype(at::kInt));
  const int64_t* p = prefix.const_data_ptr<int64_t>();
  int32_t* l = lanes.data_ptr<int32_t>();
  for (int64_t c = 0; c < cells; ++c)
    for (int64_t o = 0; o < s.O; ++o)
      l[c * O16 + o] = static_cast<int32_t>(p[o * cells + c]);
  return {codes, lanes};
}

namespace {

// 8-bit weights (mbb_int8_halved): per output pixel, the sum of the levels
// of its C channels over its taps, (N, Ho, Wo) int32. Padded taps read the
// zero border (the bytes past C of a pixel may hold anything: their weights
// are 0).
at::Tensor mbb_int8_patch_sums(const MBBInt8Args& a) {
  const MBBConvShape& s = a.s;
  const auto int_options = at::TensorOptions().dtype(at::kInt);
  at::Tensor pixel_sums = at::empty({s.N * a.Hp * a.Wp}, int_options);
  int32_t* pixel = pixel_sums.data_ptr<int32_t>();
  at::parallel_for(0, s.N * a.Hp * a.Wp, 1024, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
#ifdef MMBINARY_MBB_HAVE_INT8_AVX512
      pixel[i] = mbb_int8_avx512::level_sum(a.levels + i * a.pixel_bytes,
                                            s.C);
#endif
    }
  });
  at::Tensor patch_sums = at::empty({s.N * s.Ho * s.Wo}, int_options);
  int32_t* patch = patch_sums.data_ptr<int32_t>();
  at::parallel_for(0, s.N * s.Ho, 16, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / s.Ho, y = r % s.Ho;
      for (int64_t x = 0; x < s.Wo; ++x) {
        int32_t sum = 0;
        for (int64_t ky = 0; ky < s.kh; ++ky) {
          const int32_t* row =
              pixel + (n * a.Hp + y * s.sh + ky * s.dh) * a.Wp + x * s.sw;
          for (int64_t kx = 0; kx < s.kw; ++kx) sum += row[kx * s.dw];
        }
        patch[r * s.Wo + x] = sum;
      }
    }
  });
  return patch_sums;
}

// Where the integer kernel's u8 levels come from: activation words
// (unpacked) or a float channels-last input (quantized); fills the
// interior of input rows [begin, end) of the (N * H) axis and returns
// whether a NaN was read; one that can also writes each pixel's level sum
// to a.fill_sums where that is set.
using LevelFill =
    std::function<bool(const MBBInt8Args&, uint8_t*, int64_t, int64_t)>;

// `count` values, 64-byte aligned, uninitialized, in `storage` (a tile row
// or vector load is one cache line).
template <typename T>
T* aligned_buffer(std::unique_ptr<T[]>* storage, int64_t count) {
  storage->reset(new T[count + 64 / sizeof(T)]);
  const uintptr_t address = reinterpret_cast<uintptr_t>(storage->get());
  return storage->get() + ((-address & 63) / sizeof(T));
}

#ifdef MMBINARY_MBB_HAVE_INT8_AVX512
// The fused max pool after the conv of `a` (float output, no residual, no
// words): each thread computes the conv rows its pooled rows need, each
// once, as exact accumulators (the epilogue's corrected sums) into a ring
// of pool.kh rows (row iy in slot iy % kh: a pooled row's rows are
// consecutive, pool.dh == 1), pools them and runs the epilogue on the
// pooled accumulators only (mbb_int8_avx512::pooled_epilogue_row: the
// floats max_pool2d gives on the conv's output), into `out` (N, pool.Ho,
// pool.Wo, O). `chunks`: the work items' output-channel chunks per row (see
// run_int8). `row_fill` (null: the level image is filled): a row-local
// conv's fill (MBBInt8Args::one_level_row), run into a row buffer of the
// thread's just before each conv row. `words` (null: none): the pooled
// rows quantized into the next layer's activation words as well
// (pack_float_pixels with a.out_K, a.out_inv_step, a.out_signed). Returns
// whether that fill read a NaN.
template <typename RunItems>
bool pooled_rows(const MBBInt8Args& a, const MaxPoolShape& pool,
                 int64_t chunks, const RunItems& run_items, float* out,
                 const LevelFill* row_fill, uint16_t* words) {
  const MBBConvShape& s = a.s;
  const int64_t row_values = s.Wo * s.O;
  std::atomic<bool> nan{false};
  at::parallel_for(0, s.N * pool.Ho, 1, [&](int64_t begin, int64_t end) {
    std::unique_ptr<int32_t[]> ring_storage;
    int32_t* ring = aligned_buffer(&ring_storage, pool.kh * row_values);
    std::vector<const int32_t*> rows(pool.kh);
    MBBInt8Args t = a;
    t.stream_out = false;
    t.out = nullptr;
    t.out_words = nullptr;
    std::unique_ptr<uint8_t[]> level_storage;
    std::optional<MBBInt8RowFill> fill_row;
    if (row_fill != nullptr) {
      uint8_t* level_row = aligned_buffer(&level_storage, s.W * a.pixel_bytes);
      t.levels = level_row;
      fill_row.emplace([&t, row_fill, level_row, &nan, &s](int64_t n,
                                                           int64_t y) {
        if ((*row_fill)(t, level_row, n * s.H + y, n * s.H + y + 1))
          nan.store(true);
      });
    }
    int64_t done_n = -1, done_end = 0;  // rows [.., done_end) of done_n
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / pool.Ho, y = r % pool.Ho;
      int64_t ky0, ky1;
      max_pool_taps(y, pool.sh, pool.ph, pool.dh, pool.kh, pool.H, &ky0,
                    &ky1);
      const int64_t first = y * pool.sh - pool.ph + ky0;
      const int64_t last = y * pool.sh - pool.ph + ky1;
      if (n != done_n) done_n = n, done_end = 0;
      for (int64_t iy = std::max(first, done_end); iy < last; ++iy) {
        t.out_acc = ring + (iy % pool.kh) * row_values;
        t.out_pixel_shift = (n * s.Ho + iy) * s.Wo;
        for (int64_t c = 0; c < chunks; ++c) {
          const int64_t item = (c * s.N + n) * s.Ho + iy;
          run_items(t, item, item + 1, fill_row ? &*fill_row : nullptr);
        }
      }
      done_end = std::max(done_end, last);
      for (int64_t iy = first; iy < last; ++iy)
        rows[iy - first] = ring + (iy % pool.kh) * row_values;
      float* dst = out + r * pool.Wo * pool.C;
      mbb_int8_avx512::pooled_epilogue_row(a, pool, rows.data(),
                                           last - first, dst);
      if (words != nullptr)
        mbb_int8_avx512::pack_float_pixels(
            dst, pool.Wo, pool.C, a.out_K, a.out_inv_step, a.out_signed,
            words + r * pool.Wo * a.out_K * a.out_Wg * 4);
    }
  });
  return nan.load();
}

// The fused depthwise conv `dw` after the conv of `a` (a row-local 1x1
// conv, float output, no residual, no words): each thread computes the conv
// rows its depthwise output rows need, each once, into a ring of the
// depthwise kernel's span of rows ((kh - 1) * dh + 1; row iy in slot
// iy % span, which the depthwise conv reads), so that the conv's output is
// never written whole. `fill`: the conv's level fill, one row at a time.
// Returns whether a packed value was NaN.
template <typename RunItems>
bool depthwise_rows(const MBBInt8Args& a, const DepthwiseCall& dw,
                    const LevelFill& fill, const RunItems& run_items) {
  const MBBConvShape& s = a.s;
  const DepthwisePackArgs& d = dw.args;
  const int64_t span = (d.kh - 1) * d.dh + 1;
  const int64_t row_floats = s.Wo * s.O;
  std::atomic<bool> nan{false};
  at::parallel_for(0, d.N * d.Ho, 1, [&](int64_t begin, int64_t end) {
    std::unique_ptr<float[]> ring_storage;
    std::unique_ptr<uint8_t[]> level_storage;
    float* ring = aligned_buffer(&ring_storage, span * row_floats);
    uint8_t* level_row = aligned_buffer(&level_storage, s.W * a.pixel_bytes);
    MBBInt8Args t = a;
    t.stream_out = false;
    t.levels = level_row;
    const MBBInt8RowFill fill_row = [&](int64_t n, int64_t y) {
      if (fill(t, level_row, n * s.H + y, n * s.H + y + 1)) nan.store(true);
    };
    DepthwisePackArgs rows = d;
    rows.ring = ring, rows.ring_rows = span;
    int64_t done_n = -1, done_end = 0;  // conv rows [.., done_end) of done_n
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / d.Ho, y = r % d.Ho;
      const int64_t first = std::max<int64_t>(0, y * d.sh - d.ph);
      const int64_t last = std::min(d.H, y * d.sh - d.ph + span);
      if (n != done_n) done_n = n, done_end = 0;
      for (int64_t iy = std::max(first, done_end); iy < last; ++iy) {
        t.out = ring + (iy % span) * row_floats;
        t.out_pixel_shift = (n * s.Ho + iy) * s.Wo;
        const int64_t item = n * s.Ho + iy;  // one chunk: every block
        run_items(t, item, item + 1, &fill_row);
      }
      done_end = std::max(done_end, last);
      if (depthwise_call_rows(rows, dw.variant, r, r + 1)) nan.store(true);
    }
  });
  return nan.load();
}
#endif

// The fill of the levels from activation words (N, H, W, 1, K, Wg),
// unpacked (`act_words` must outlive it).
LevelFill words_fill(const at::Tensor& act_words) {
  return [&act_words](const MBBInt8Args& a, uint8_t* levels, int64_t begin,
                      int64_t end) {
#ifdef MMBINARY_MBB_HAVE_INT8_AVX512
    mbb_int8_avx512::unpack_levels(
        a,
        reinterpret_cast<const uint64_t*>(
            act_words.const_data_ptr<int64_t>()),
        levels, begin, end);
#else
    (void)a, (void)levels, (void)begin, (void)end;
#endif
    return false;
  };
}

// The integer kernel once the geometry `s` is checked: the weight layout's
// checks, the levels (`fill`, timed as `fill_phase`), the conv and the
// epilogue. `like`: the input, for the options of the levels and words.
// `taps`: the geometry of the signed correction's valid taps and weight
// sums: `s` itself, or, where the kernel's taps are folded into the
// channels (the im2col path: `s` a 1x1 conv over the patches), the
// original conv's. `fill_writes_sums`: whether `fill` writes a.fill_sums.
// `pool`, `depthwise`: the fused max pool or depthwise conv after it;
// `side_words`: a second consumer's words of the output (see
// mbb_conv2d_int8_words_cpu), written in place.
std::tuple<at::Tensor, at::Tensor> run_int8(
    const MBBConvShape& s, const MBBConvShape& taps, const at::Tensor& like,
    const LevelFill& fill, MBBPhase fill_phase, bool fill_writes_sums,
    const at::Tensor& weight_int8, const at::Tensor& weight_sums,
    const at::Tensor& out_scale, const at::Tensor& out_bias,
    const c10::optional<at::Tensor>& residual, double act_min,
    double act_max, bool float_out, int64_t out_a_bits, double out_inv_step,
    bool out_signed, bool accumulate_only,
    const MaxPoolShape* pool = nullptr,
    const DepthwiseCall* depthwise = nullptr,
    const c10::optional<at::Tensor>& side_words = c10::nullopt,
    double side_inv_step = 1.0, bool side_signed = false) {
  MMBINARY_CHECK_CPU(weight_int8);
  MMBINARY_CHECK_CPU(weight_sums);
  check_int8(s);
  const int64_t OB = mbb_int8_blocks(s.O), C4 = mbb_int8_padded_quads(s.C);
  const int64_t O16 = OB * kMBBInt8Lanes;
  TORCH_CHECK(weight_int8.scalar_type() == at::kChar &&
                  weight_int8.is_contiguous() &&
                  weight_int8.sizes() ==
                      at::IntArrayRef({OB, s.kh * s.kw, C4, kMBBInt8Lanes,
                                       kMBBInt8Quad}),
              "weight_int8 must be the contiguous int8 tensor of "
              "mbb_int8_prepare_weight, shape (", OB, ", ", s.kh * s.kw, ", ",
              C4, ", 16, 4), got ", weight_int8.scalar_type(), " ",
              weight_int8.sizes());
  TORCH_CHECK(weight_sums.scalar_type() == at::kInt &&
                  weight_sums.is_contiguous() &&
                  weight_sums.sizes() ==
                      at::IntArrayRef({taps.kh + 1, taps.kw + 1, O16}),
              "weight_sums must be the contiguous int32 tensor of "
              "mbb_int8_prepare_weight, shape (", taps.kh + 1, ", ",
              taps.kw + 1,
              ", ", O16, "), got ", weight_sums.scalar_type(), " ",
              weight_sums.sizes());
  TORCH_CHECK(out_a_bits >= 0 && out_a_bits <= kMBBMaxBits,
              "out_a_bits must be 0 (no words) or 1..8, got ", out_a_bits);
  TORCH_CHECK(float_out || out_a_bits > 0 || accumulate_only,
              "mbb_conv2d_int8_words: ask for float_out, words (out_a_bits "
              "> 0) or both");
  const float out_inv =
      out_a_bits > 0 ? mbb_check_inv_step(out_inv_step) : 1.f;
  const float amin = static_cast<float>(act_min);
  const float amax = static_cast<float>(act_max);
  mbb_check_act_clamp(act_min, act_max);
  const auto cl = at::MemoryFormat::ChannelsLast;
  const auto float_options = out_scale.options();
  const at::Tensor res = mbb_channels_last_residual(residual, s);
  at::Tensor out = at::empty({0}, float_options);
  at::Tensor words = at::empty({0}, like.options().dtype(at::kLong));
#ifdef MMBINARY_MBB_HAVE_INT8_AVX512
  mbb_count_call();
  MBBPhaseTimer prepass_timer(kPhasePrepass);
  MBBInt8Args a;
  a.s = s;
  a.Hp = s.H + 2 * s.ph, a.Wp = s.W + 2 * s.pw;
  a.pixel_bytes = s.Wg * kMBBWordBits;
  const auto opts = like.options().dtype(at::kLong);
  // Work items: (chunk of 16-channel blocks, sample, output row), rows
  // fastest. A chunk's weights stay within kChunkWeightBytes, so that they
  // stay in the core's L2 cache while its rows go by (res5's 3x3 has 2.4
  // MB of weights: all of them per row ran 1.7x slower on AMX); smaller
  // chunks when there are few rows, so that every thread has work.
  constexpr int64_t kChunkWeightBytes = int64_t{512} << 10;
  const int64_t block_bytes =
      s.kh * s.kw * C4 * kMBBInt8Lanes * kMBBInt8Quad;
  const int64_t threads = at::get_num_threads();
  int64_t chunk = 4 * ((OB + 3) / 4);
  while (chunk > 4 && chunk * block_bytes > kChunkWeightBytes)
    chunk -= 4;
  while (chunk > 4 && s.N * s.Ho * ((OB + chunk - 1) / chunk) < 8 * threads)
    chunk = 4 * ((chunk / 2 + 3) / 4);
  // Chunks of (nearly) equal size: the threads take contiguous runs of
  // items, so 12 + 4 blocks (a 256-channel 3x3) would give one thread
  // three times the other's work; 8 + 8 does not.
  const int64_t chunk_count = (OB + chunk - 1) / chunk;
  chunk = 4 * (((OB + chunk_count - 1) / chunk_count + 3) / 4);
  // Under the fused depthwise conv a thread computes whole rows.
  if (depthwise != nullptr) chunk = 4 * ((OB + 3) / 4);
  a.o_blocks = chunk;
  // 8-bit weights need each output's patch sum: a fill that can writes
  // them with the levels where a pixel is a patch (1x1, stride 1, no
  // padding), else they are summed from the levels below.
  const bool pixel_is_patch = s.kh == 1 && s.kw == 1 && s.sh == 1 &&
                              s.sw == 1 && s.ph == 0 && s.pw == 0;
  const bool sums_in_fill =
      fill_writes_sums && mbb_int8_halved(s) && pixel_is_patch;
  // A 1x1, stride-1 conv without padding reads each input row for one
  // output row: each thread fills a row's levels into a buffer of its own
  // just before computing it (kept in its caches), instead of the whole
  // image before the conv (the im2col path's patches: 64 KB a row of a
  // ResNet stem at 512x672 against 16 MB an image). Only where the output
  // channels are one chunk (else every chunk would fill the row again),
  // and with 8-bit weights only where the fill writes their patch sums.
  const bool row_local = pixel_is_patch && chunk >= OB &&
                         (!mbb_int8_halved(s) || sums_in_fill);
  TORCH_CHECK(depthwise == nullptr || row_local,
              "the fused depthwise conv follows a 1x1 conv with stride 1, "
              "no padding and weights of at most 7 bits");
  a.one_level_row = row_local;
  // The samples of the level image filled before the conv (none for a
  // row-local conv).
  const int64_t image_samples = row_local ? 0 : s.N;
  at::Tensor levels = at::empty(
      {image_samples * a.Hp * a.Wp * a.pixel_bytes}, opts.dtype(at::kByte));
  uint8_t* level_ptr = levels.data_ptr<uint8_t>();
  // Zero border rows and columns (the interior is overwritten).
  at::parallel_for(0, image_samples * a.Hp, 64, [&](int64_t begin,
                                                   int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      uint8_t* row = level_ptr + r * a.Wp * a.pixel_bytes;
      const int64_t y = r % a.Hp;
      if (y < s.ph || y >= s.ph + s.H) {
        std::memset(row, 0, a.Wp * a.pixel_bytes);
        continue;
      }
      std::memset(row, 0, s.pw * a.pixel_bytes);
      std::memset(row + (s.pw + s.W) * a.pixel_bytes, 0,
                  s.pw * a.pixel_bytes);
    }
  });
  a.levels = level_ptr;
  at::Tensor patch_sums;
  if (sums_in_fill) {
    patch_sums = at::empty({s.N * s.Ho * s.Wo}, opts.dtype(at::kInt));
    a.fill_sums = patch_sums.data_ptr<int32_t>();
  }
  std::atomic<bool> nan{false};
  // Quantizing a float input is the call's quantize + pack phase;
  // unpacking words is part of the prepass.
  const bool own_phase = fill_phase != kPhasePrepass;
  std::optional<MBBPhaseTimer> fill_timer;
  if (own_phase) {
    prepass_timer.stop();
    fill_timer.emplace(fill_phase);
  }
  at::parallel_for(0, image_samples * s.H, 16, [&](int64_t begin,
                                                  int64_t end) {
    if (fill(a, level_ptr, begin, end)) nan.store(true);
  });
  if (own_phase) {
    fill_timer.reset();  // adds the fill's time
    prepass_timer.restart();
  }
  const auto check_nan = [&nan] {
    TORCH_CHECK(!nan.load(),
                "mbb_conv2d_int8: input holds NaN, which has no activation "
                "level (mbb_conv2d on the float input propagates NaN to the "
                "outputs it reaches)");
  };
  check_nan();
  if (mbb_int8_halved(s)) {
    if (!sums_in_fill) patch_sums = mbb_int8_patch_sums(a);
    a.patch_sums = patch_sums.const_data_ptr<int32_t>();
  }
  at::Tensor tables = at::empty({2 * (s.Ho + s.Wo)}, opts.dtype(at::kLong));
  int64_t* table_ptr = tables.data_ptr<int64_t>();
  mbb_tap_ranges(taps, table_ptr, table_ptr + 2 * s.Ho);
  a.ky_range = table_ptr;
  a.kx_range = table_ptr + 2 * s.Ho;
  a.weight = weight_int8.const_data_ptr<int8_t>();
  a.wsum_prefix = weight_sums.const_data_ptr<int32_t>();
  a.wsum_cols = taps.kw + 1;
  a.wsum_rows = taps.kh + 1;
  // Zero-padded epilogue constants (16 channels a vector), in a plain
  // buffer: tensors and their copies cost a few microseconds of dispatch
  // per call, which a whole model pays 60 times a forward, on one thread.
  std::vector<float> constants(2 * O16, 0.f);
  std::copy_n(out_scale.const_data_ptr<float>(), s.O, constants.begin());
  std::copy_n(out_bias.const_data_ptr<float>(), s.O,
              constants.begin() + O16);
  a.scale = constants.data();
  a.bias = constants.data() + O16;
  a.out_acc = nullptr, a.out = nullptr, a.out_words = nullptr;
  a.residual = res.defined() ? res.const_data_ptr<float>() : nullptr;
  a.act_min = amin, a.act_max = amax;
  a.out_K = 0, a.out_Wg = 0, a.out_inv_step = out_inv;
  a.out_signed = out_signed;
  if (pool != nullptr) {
    // the pooled output (the conv's rows go to per-thread buffers) and,
    // where asked for, its words
    out = at::empty({s.N, s.O, pool->Ho, pool->Wo},
                    float_options.memory_format(cl));
    if (out_a_bits > 0) {
      const int64_t out_wg = mbb_num_words(s.O);
      const auto shape = {s.N, pool->Ho, pool->Wo, int64_t{1}, out_a_bits,
                          out_wg};
      words = s.O % kMBBWordBits == 0 ? at::empty(shape, opts)
                                      : at::zeros(shape, opts);
      a.out_K = out_a_bits, a.out_Wg = out_wg;
    }
  } else if (depthwise != nullptr) {
    // the depthwise conv's outputs only (its call holds them)
  } else if (accumulate_only) {
    out = at::empty({s.N, s.O, s.Ho, s.Wo},
                    opts.dtype(at::kInt).memory_format(cl));
    a.out_acc = out.data_ptr<int32_t>();
  } else {
    if (side_words.has_value()) {
      const at::Tensor& side = *side_words;
      const int64_t side_K = side.dim() == 6 ? side.size(4) : 0;
      TORCH_CHECK(side.scalar_type() == at::kLong && side.is_contiguous() &&
                      side_K >= 1 && side_K <= kMBBMaxBits &&
                      side.sizes() ==
                          at::IntArrayRef({s.N, s.Ho, s.Wo, 1, side_K,
                                           mbb_num_words(s.O)}),
                  "side_words must be a contiguous int64 (N, Ho, Wo, 1, "
                  "side_a_bits, ceil(O / 64)) = (", s.N, ", ", s.Ho, ", ",
                  s.Wo, ", 1, 1..8, ", mbb_num_words(s.O), ") tensor, got ",
                  side.scalar_type(), " ", side.sizes());
      // the epilogue writes the 16-bit quarters up to O16 only
      if (O16 < mbb_num_words(s.O) * kMBBWordBits) side.zero_();
      a.side_words = reinterpret_cast<uint16_t*>(side.data_ptr<int64_t>());
      a.side_K = side_K;
      a.side_inv_step = mbb_check_inv_step(side_inv_step);
      a.side_signed = side_signed;
    }
    if (float_out) {
      out = at::empty({s.N, s.O, s.Ho, s.Wo}, float_options.memory_format(cl));
      a.out = out.data_ptr<float>();
      // Large outputs bypass the caches (see MBBLaneArgs::stream_out).
      const int64_t stream_bytes = mbb_stream_threshold_bytes(out_a_bits > 0);
      a.stream_out = s.O % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(a.out) % 64 == 0 &&
                     s.N * s.Ho * s.Wo * s.O * 4 > stream_bytes;
    }
    if (out_a_bits > 0) {
      const int64_t out_wg = mbb_num_words(s.O);
      // The epilogue writes every 16-channel quarter of a word up to O16:
      // only quarters past it (O16 < 64 * Wg) must be zeroed before.
      const auto shape = {s.N, s.Ho, s.Wo, int64_t{1}, out_a_bits, out_wg};
      words = O16 == out_wg * kMBBWordBits ? at::empty(shape, opts)
                                           : at::zeros(shape, opts);
      a.out_words = reinterpret_cast<uint16_t*>(words.data_ptr<int64_t>());
      a.out_K = out_a_bits, a.out_Wg = out_wg;
    }
  }
  prepass_timer.stop();
  MBBPhaseTimer conv_timer(kPhaseAccumulate);
  const int64_t items = s.N * s.Ho * ((OB + chunk - 1) / chunk);
  const bool amx = use_amx(s);
  const auto run_items = [amx](const MBBInt8Args& args, int64_t begin,
                               int64_t end,
                               const MBBInt8RowFill* before_row = nullptr) {
    (void)amx;
#ifdef MMBINARY_MBB_HAVE_INT8_AMX
    if (amx) {
      mbb_int8_amx::conv_items(args, begin, end, before_row);
      return;
    }
#endif
    mbb_int8_avx512::conv_items(args, begin, end, before_row);
  };
  if (pool != nullptr) {
    uint16_t* pooled_words =
        out_a_bits > 0
            ? reinterpret_cast<uint16_t*>(words.data_ptr<int64_t>())
            : nullptr;
    if (pooled_rows(a, *pool, (OB + chunk - 1) / chunk, run_items,
                    out.data_ptr<float>(), row_local ? &fill : nullptr,
                    pooled_words))
      nan.store(true);
    check_nan();  // a row-local fill's
    return {out, words};
  }
  if (depthwise != nullptr) {
    depthwise_check_no_nan(depthwise_rows(a, *depthwise, fill, run_items));
    return {depthwise->out, depthwise->words};
  }
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    if (row_local) {
      // The fill's time is then inside the accumulate phase.
      std::unique_ptr<uint8_t[]> storage;
      uint8_t* row = aligned_buffer(&storage, s.W * a.pixel_bytes);
      MBBInt8Args local = a;
      local.levels = row;
      const MBBInt8RowFill fill_row = [&](int64_t n, int64_t y) {
        if (fill(local, row, n * s.H + y, n * s.H + y + 1)) nan.store(true);
      };
      run_items(local, begin, end, &fill_row);
    } else {
      run_items(a, begin, end);
    }
    if (a.stream_out) _mm_sfence();  // the streamed lines, before returning
  });
  check_nan();  // a row-local fill's
#endif
  return {out, words};
}


}  // namespace

// mbb_conv2d_words with the integer kernel: act_words (N, H, W, 1, K,
// ceil(C / 64)) and the prepared weight (mbb_int8_prepare_weight) -> the
// float32 (N, O, Ho, Wo) output (channels-last; float_out) and/or the next
// layer's (N, Ho, Wo, 1, out_a_bits, ceil(O / 64)) words; with
// accumulate_only the int32 accumulators instead of the float output.
// side_words (optional, written in place): a second consumer's words of
// the same output, (N, Ho, Wo, 1, side_a_bits, ceil(O / 64)) int64,
// quantized with side_inv_step / side_signed (what mbb_quantize_pack of the
// float output gives), in the same pass.
std::tuple<at::Tensor, at::Tensor> mbb_conv2d_int8_words_cpu(
    const at::Tensor& act_words, const at::Tensor& weight_words,
    const at::Tensor& weight_int8, const at::Tensor& weight_sums,
    const at::Tensor& out_scale, const at::Tensor& out_bias,
    int64_t in_channels, int64_t w_bits, int64_t a_bits, bool is_signed,
    at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation,
    const c10::optional<at::Tensor>& residual, double act_min,
    double act_max, bool float_out, int64_t out_a_bits, double out_inv_step,
    bool out_signed, bool accumulate_only,
    const c10::optional<at::Tensor>& side_words, double side_inv_step,
    bool side_signed) {
  const MBBConvShape s = mbb_cpu_conv2d_check(
      act_words, true, weight_words, out_scale, out_bias, in_channels, w_bits,
      a_bits, is_signed, kernel_size, stride, padding, dilation, 1);
  TORCH_CHECK(!side_words.has_value() || !accumulate_only,
              "mbb_conv2d_int8_words: side_words needs the epilogue "
              "(accumulate_only=False)");
  if (side_words.has_value()) MMBINARY_CHECK_CPU((*side_words));
  const LevelFill fill = words_fill(act_words);
  return run_int8(s, s, act_words, fill, kPhasePrepass, false, weight_int8,
                  weight_sums, out_scale, out_bias, residual, act_min,
                  act_max, float_out, out_a_bits, out_inv_step, out_signed,
                  accumulate_only, nullptr, nullptr, side_words,
                  side_inv_step, side_signed);
}

// An inverted-residual block's expand and depthwise convs in one pass:
// the 1x1 conv of mbb_conv2d_int8_words on act_words (N, H, W, 1, K, Wg)
// with its epilogue clamp(acc * scale + bias, act_min, act_max), then
// depthwise_pack on its float output (dw_weight (O, 1, kh, kw), dw_scale
// and dw_bias (O,), clamped to [dw_act_min, dw_act_max]) -> the depthwise
// conv's (float output if float_out, words if out_a_bits > 0), the same
// values bit for bit as the two ops one after the other, without writing
// the expand conv's output (its rows go to a small ring per thread).
std::tuple<at::Tensor, at::Tensor> mbb_conv2d_int8_depthwise_cpu(
    const at::Tensor& act_words, const at::Tensor& weight_words,
    const at::Tensor& weight_int8, const at::Tensor& weight_sums,
    const at::Tensor& out_scale, const at::Tensor& out_bias,
    int64_t in_channels, int64_t w_bits, int64_t a_bits, bool is_signed,
    double act_min, double act_max, const at::Tensor& dw_weight,
    const at::Tensor& dw_scale, const at::Tensor& dw_bias,
    at::IntArrayRef dw_stride, at::IntArrayRef dw_padding,
    at::IntArrayRef dw_dilation, double dw_act_min, double dw_act_max,
    bool float_out, int64_t out_a_bits, double out_inv_step,
    bool out_signed) {
  const int64_t one[2] = {1, 1}, zero[2] = {0, 0};
  const MBBConvShape s = mbb_cpu_conv2d_check(
      act_words, true, weight_words, out_scale, out_bias, in_channels, w_bits,
      a_bits, is_signed, one, one, zero, one, 1);
  const DepthwiseCall dw = depthwise_call(
      s.N, s.O, s.Ho, s.Wo, dw_weight, dw_scale, dw_bias, dw_stride,
      dw_padding, dw_dilation, dw_act_min, dw_act_max, float_out, out_a_bits,
      out_inv_step, out_signed, "dw_");
  const LevelFill fill = words_fill(act_words);
  return run_int8(s, s, act_words, fill, kPhasePrepass, false, weight_int8,
                  weight_sums, out_scale, out_bias, c10::nullopt, act_min,
                  act_max, true, 0, 1.0, false, false, nullptr, &dw);
}

// The same on a float (N, C, H, W) input, quantized straight into the
// kernel's levels (levels = those of mbb_quantize_pack(input, a_bits,
// inv_step, is_signed), without writing the words): bit-identical to
// mbb_quantize_pack followed by mbb_conv2d_int8_words. An input with NaN
// is refused, as mbb_quantize_pack refuses it.
std::tuple<at::Tensor, at::Tensor> mbb_conv2d_int8_cpu(
    const at::Tensor& input, const at::Tensor& weight_words,
    const at::Tensor& weight_int8, const at::Tensor& weight_sums,
    const at::Tensor& out_scale, const at::Tensor& out_bias,
    int64_t in_channels, int64_t w_bits, int64_t a_bits, double inv_step,
    bool is_signed, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation,
    const c10::optional<at::Tensor>& residual, double act_min,
    double act_max, bool float_out, int64_t out_a_bits, double out_inv_step,
    bool out_signed) {
  const MBBConvShape s = mbb_cpu_conv2d_check(
      input, false, weight_words, out_scale, out_bias, in_channels, w_bits,
      a_bits, is_signed, kernel_size, stride, padding, dilation, 1);
  const float inv = mbb_check_inv_step(inv_step);
  const at::Tensor x =
      input.contiguous(at::MemoryFormat::ChannelsLast);  // (N, H, W, C)
  // A strided 1x1 conv without padding (ResNet's downsampling shortcuts)
  // reads one pixel in sh * sw: it runs as the stride-1 conv over those
  // pixels, and only they are quantized (the same taps, levels and
  // accumulators, so the same outputs).
  const bool subsample = s.kh == 1 && s.kw == 1 && s.ph == 0 && s.pw == 0 &&
                         (s.sh > 1 || s.sw > 1);
  const MBBConvShape run = subsample
      ? make_mbb_shape(s.N, s.C, s.Ho, s.Wo, s.O, s.G, 1, 1, 1, 1, 0, 0, 1,
                       1, s.M, s.K, s.is_signed)
      : s;
  LevelFill fill = [&](const MBBInt8Args& a, uint8_t* levels, int64_t begin,
                       int64_t end) {
#ifdef MMBINARY_MBB_HAVE_INT8_AVX512
    return mbb_int8_avx512::quantize_levels(
        a, x.const_data_ptr<float>(), inv, levels, begin, end,
        subsample ? s.sh : 1, subsample ? s.sw : 1, s.H, s.W);
#else
    return false;
#endif
  };
  return run_int8(run, run, input, fill, kPhaseQuantizePack, true,
                  weight_int8, weight_sums, out_scale, out_bias, residual,
                  act_min,
                  act_max, float_out, out_a_bits, out_inv_step, out_signed,
                  false);
}

// mbb_conv2d_int8 with the kernel's taps folded into the channels
// (im2col): each output pixel's patch, kh * kw * C levels in (ky, kx, c)
// order, is one pixel of a 1x1 conv, so a layer with few input channels
// (a network's stem: 3) fills the 64-byte pixels of the integer kernel
// instead of padding every tap's C channels to 64. The input is quantized
// once into a compact (N, H + 2 ph, W + 2 pw, C) level image inside a zero
// border (a padded tap's level is 0, as in the level buffer of
// mbb_conv2d_int8), the patches are put together from it row by row
// (im2col_row: each 64-byte vector in a register, stored once), and the
// signed correction sums the weights over the original kernel's valid
// taps: bit-identical to mbb_conv2d_int8. weight_int8: the layout of
// mbb_int8_prepare_weight for (O, kh * kw * C, 1, 1) weights, channel
// (ky * kw + kx) * C + c; weight_sums: the original kernel's (kh + 1,
// kw + 1, O16) prefix sums.
namespace {

// mbb_conv2d_int8_im2col_cpu once its geometry `s` is checked, with the
// fused max pool `pool` (null: none) after it.
std::tuple<at::Tensor, at::Tensor> int8_im2col(
    const MBBConvShape& s, const at::Tensor& input,
    const at::Tensor& weight_int8, const at::Tensor& weight_sums,
    const at::Tensor& out_scale, const at::Tensor& out_bias, double inv_step,
    const c10::optional<at::Tensor>& residual, double act_min,
    double act_max, bool float_out, int64_t out_a_bits, double out_inv_step,
    bool out_signed, const MaxPoolShape* pool) {
  const float inv = mbb_check_inv_step(inv_step);
  const int64_t patch = s.kh * s.kw * s.C;
  // The conv the kernel runs: 1x1 over the (N, Ho, Wo, patch) patches.
  const MBBConvShape conv = make_mbb_shape(
      s.N, patch, s.Ho, s.Wo, s.O, 1, 1, 1, 1, 1, 0, 0, 1, 1, s.M, s.K,
      s.is_signed);
  check_int8(conv);
  // Channels-last rows are quantized as they are; NCHW ones plane by plane
  // and interleaved (no transposed copy of the input).
  const bool channels_last =
      s.C > 1 && input.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor x = channels_last ? input : input.contiguous();
  const float* x_ptr = x.const_data_ptr<float>();
  const int64_t Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw;
  // 64 bytes on both sides of the image: a patch piece's 64-byte masked
  // load (im2col_row) may start up to 63 bytes before its first level and
  // end up to 63 after its last, so its address stays in the allocation.
  at::Tensor image = at::empty({s.N * Hp * Wp * s.C + 128},
                               input.options().dtype(at::kByte));
  uint8_t* image_ptr = image.data_ptr<uint8_t>() + 64;
  std::atomic<bool> nan{false};
  {
    MBBPhaseTimer quantize_timer(kPhaseQuantizePack);
    at::parallel_for(0, s.N * Hp, 16, [&](int64_t begin, int64_t end) {
      std::vector<uint8_t> planes(channels_last ? 0 : s.C * s.W);
      for (int64_t r = begin; r < end; ++r) {
        uint8_t* row = image_ptr + r * Wp * s.C;
        const int64_t n = r / Hp, iy = r % Hp - s.ph;
        if (iy < 0 || iy >= s.H) {
          std::memset(row, 0, Wp * s.C);
          continue;
        }
        std::memset(row, 0, s.pw * s.C);
        std::memset(row + (s.pw + s.W) * s.C, 0, s.pw * s.C);
        uint8_t* interior = row + s.pw * s.C;
#ifdef MMBINARY_MBB_HAVE_INT8_AVX512
        bool row_nan = false;
        if (channels_last) {
          row_nan = mbb_int8_avx512::quantize_flat(
              x_ptr + (n * s.H + iy) * s.W * s.C, s.W * s.C, inv,
              s.is_signed, s.K, interior);
        } else {
          for (int64_t c = 0; c < s.C; ++c)
            row_nan |= mbb_int8_avx512::quantize_flat(
                x_ptr + ((n * s.C + c) * s.H + iy) * s.W, s.W, inv,
                s.is_signed, s.K, planes.data() + c * s.W);
          for (int64_t ix = 0; ix < s.W; ++ix)
            for (int64_t c = 0; c < s.C; ++c)
              interior[ix * s.C + c] = planes[c * s.W + ix];
        }
        if (row_nan) nan.store(true);
#else
        (void)n, (void)interior, (void)x_ptr;
#endif
      }
    });
  }
  TORCH_CHECK(!nan.load(),
              "mbb_conv2d_int8_im2col: input holds NaN, which has no "
              "activation level (mbb_conv2d on the float input propagates "
              "NaN to the outputs it reaches)");
#ifdef MMBINARY_MBB_HAVE_INT8_AVX512
  const mbb_int8_avx512::PatchPlan plan =
      mbb_int8_avx512::patch_plan(s, conv.Wg * kMBBWordBits);
#endif
  LevelFill fill = [&](const MBBInt8Args& a, uint8_t* levels, int64_t begin,
                       int64_t end) {
#ifdef MMBINARY_MBB_HAVE_INT8_AVX512
    for (int64_t r = begin; r < end; ++r)  // output rows (n, y)
      mbb_int8_avx512::im2col_row(
          s, plan, image_ptr, r / s.Ho, r % s.Ho, a.pixel_bytes,
          levels + mbb_int8_row_offset(a, r / s.Ho, r % s.Ho),
          a.fill_sums ? a.fill_sums + r * s.Wo : nullptr);
#endif
    return false;
  };
  return run_int8(conv, s, input, fill, kPhaseQuantizePack, true,
                  weight_int8, weight_sums, out_scale, out_bias, residual,
                  act_min, act_max, float_out, out_a_bits, out_inv_step,
                  out_signed, false, pool);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> mbb_conv2d_int8_im2col_cpu(
    const at::Tensor& input, const at::Tensor& weight_words,
    const at::Tensor& weight_int8, const at::Tensor& weight_sums,
    const at::Tensor& out_scale, const at::Tensor& out_bias,
    int64_t in_channels, int64_t w_bits, int64_t a_bits, double inv_step,
    bool is_signed, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation,
    const c10::optional<at::Tensor>& residual, double act_min,
    double act_max, bool float_out, int64_t out_a_bits, double out_inv_step,
    bool out_signed) {
  const MBBConvShape s = mbb_cpu_conv2d_check(
      input, false, weight_words, out_scale, out_bias, in_channels, w_bits,
      a_bits, is_signed, kernel_size, stride, padding, dilation, 1);
  return int8_im2col(s, input, weight_int8, weight_sums, out_scale, out_bias,
                     inv_step, residual, act_min, act_max, float_out,
                     out_a_bits, out_inv_step, out_signed, nullptr);
}

// mbb_conv2d_int8_im2col's float output (no residual) through
// max_pool2d(pool_kernel, pool_stride, pool_padding) (dilation 1, ceil_mode
// off), without writing the conv's output: (N, O, Hp, Wp) channels-last,
// the same values bit for bit (ResNet's stem conv, ReLU and max pool),
// and, with out_a_bits > 0, the pooled output's (N, Hp, Wp, 1, out_a_bits,
// ceil(O / 64)) words for the next layer (mbb_quantize_pack's, written as
// the rows are pooled; else an empty tensor).
std::tuple<at::Tensor, at::Tensor> mbb_conv2d_int8_im2col_max_pool_cpu(
    const at::Tensor& input, const at::Tensor& weight_words,
    const at::Tensor& weight_int8, const at::Tensor& weight_sums,
    const at::Tensor& out_scale, const at::Tensor& out_bias,
    int64_t in_channels, int64_t w_bits, int64_t a_bits, double inv_step,
    bool is_signed, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, double act_min,
    double act_max, at::IntArrayRef pool_kernel, at::IntArrayRef pool_stride,
    at::IntArrayRef pool_padding, int64_t out_a_bits, double out_inv_step,
    bool out_signed) {
  const MBBConvShape s = mbb_cpu_conv2d_check(
      input, false, weight_words, out_scale, out_bias, in_channels, w_bits,
      a_bits, is_signed, kernel_size, stride, padding, dilation, 1);
  mbb_check_pair(pool_kernel, "pool_kernel", 1);
  mbb_check_pair(pool_stride, "pool_stride", 1);
  mbb_check_pair(pool_padding, "pool_padding", 0);
  TORCH_CHECK(2 * pool_padding[0] <= pool_kernel[0] &&
                  2 * pool_padding[1] <= pool_kernel[1],
              "pool_padding must be at most half of pool_kernel (as "
              "torch's max_pool2d), got ", pool_padding, " and ",
              pool_kernel);
  MaxPoolShape pool;
  pool.N = s.N, pool.C = s.O, pool.H = s.Ho, pool.W = s.Wo;
  pool.kh = pool_kernel[0], pool.kw = pool_kernel[1];
  pool.sh = pool_stride[0], pool.sw = pool_stride[1];
  pool.ph = pool_padding[0], pool.pw = pool_padding[1];
  pool.dh = 1, pool.dw = 1;
  pool.Ho = mbb_out_size(pool.H, pool.kh, pool.sh, pool.ph, 1);
  pool.Wo = mbb_out_size(pool.W, pool.kw, pool.sw, pool.pw, 1);
  TORCH_CHECK(pool.Ho >= 1 && pool.Wo >= 1, "the pooled output would be "
              "empty: conv output ", s.Ho, "x", s.Wo, ", pool_kernel ",
              pool_kernel, ", pool_stride ", pool_stride);
  return int8_im2col(s, input, weight_int8, weight_sums, out_scale, out_bias,
                     inv_step, c10::nullopt, act_min, act_max, true,
                     out_a_bits, out_inv_step, out_signed, &pool);
}

}  // namespace mmbinary

TORCH_LIBRARY_FRAGMENT(mmbinary, m) {
  m.def("mbb_int8_supported() -> bool", &mmbinary::mbb_int8_supported_cpu);
  m.def("mbb_int8_variant() -> str", &mmbinary::mbb_int8_variant_cpu);
  m.def(
      "mbb_int8_prepare_weight(Tensor weight_words, int in_channels, "
      "int w_bits, int[2] kernel_size) -> (Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // mbb_conv2d_words with the integer (AVX-512 VNNI) kernel (CPU).
  m.def(
      "mbb_conv2d_int8_words(Tensor act_words, Tensor weight_words, "
      "Tensor weight_int8, Tensor weight_sums, Tensor out_scale, "
      "Tensor out_bias, int in_channels, int w_bits, int a_bits, "
      "bool is_signed, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, Tensor? residual, float act_min, float act_max, "
      "bool float_out, int out_a_bits, float out_inv_step, bool out_signed, "
      "bool accumulate_only=False, Tensor(a!)? side_words=None, "
      "float side_inv_step=1., bool side_signed=False) -> (Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // Its 1x1 conv and the depthwise conv after it in one pass (MobileNetV2).
  m.def(
      "mbb_conv2d_int8_depthwise(Tensor act_words, Tensor weight_words, "
      "Tensor weight_int8, Tensor weight_sums, Tensor out_scale, "
      "Tensor out_bias, int in_channels, int w_bits, int a_bits, "
      "bool is_signed, float act_min, float act_max, Tensor dw_weight, "
      "Tensor dw_scale, Tensor dw_bias, int[2] dw_stride, "
      "int[2] dw_padding, int[2] dw_dilation, float dw_act_min, "
      "float dw_act_max, bool float_out, int out_a_bits, "
      "float out_inv_step, bool out_signed) -> (Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // The same on a float input quantized straight into the kernel's levels.
  m.def(
      "mbb_conv2d_int8(Tensor input, Tensor weight_words, "
      "Tensor weight_int8, Tensor weight_sums, Tensor out_scale, "
      "Tensor out_bias, int in_channels, int w_bits, int a_bits, "
      "float inv_step, bool is_signed, int[2] kernel_size, int[2] stride, "
      "int[2] padding, int[2] dilation, Tensor? residual, float act_min, "
      "float act_max, bool float_out, int out_a_bits, float out_inv_step, "
      "bool out_signed) -> (Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // The same with the kernel's taps folded into the channels (im2col).
  m.def(
      "mbb_conv2d_int8_im2col(Tensor input, Tensor weight_words, "
      "Tensor weight_int8, Tensor weight_sums, Tensor out_scale, "
      "Tensor out_bias, int in_channels, int w_bits, int a_bits, "
      "float inv_step, bool is_signed, int[2] kernel_size, int[2] stride, "
      "int[2] padding, int[2] dilation, Tensor? residual, float act_min, "
      "float act_max, bool float_out, int out_a_bits, float out_inv_step, "
      "bool out_signed) -> (Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // Its float output through a max pool, fused (ResNet's stem).
  m.def(
      "mbb_conv2d_int8_im2col_max_pool(Tensor input, Tensor weight_words, "
      "Tensor weight_int8, Tensor weight_sums, Tensor out_scale, "
      "Tensor out_bias, int in_channels, int w_bits, int a_bits, "
      "float inv_step, bool is_signed, int[2] kernel_size, int[2] stride, "
      "int[2] padding, int[2] dilation, float act_min, float act_max, "
      "int[2] pool_kernel, int[2] pool_stride, int[2] pool_padding, "
      "int out_a_bits=0, float out_inv_step=1., bool out_signed=False) "
      "-> (Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(mmbinary, CPU, m) {
  m.impl("mbb_int8_prepare_weight", &mmbinary::mbb_int8_prepare_weight_cpu);
  m.impl("mbb_conv2d_int8_words", &mmbinary::mbb_conv2d_int8_words_cpu);
  m.impl("mbb_conv2d_int8_depthwise",
         &mmbinary::mbb_conv2d_int8_depthwise_cpu);
  m.impl("mbb_conv2d_int8", &mmbinary::mbb_conv2d_int8_cpu);
  m.impl("mbb_conv2d_int8_im2col", &mmbinary::mbb_conv2d_int8_im2col_cpu);
  m.impl("mbb_conv2d_int8_im2col_max_pool",
         &mmbinary::mbb_conv2d_int8_im2col_max_pool_cpu);
}
