// Fused decode kernels of quantized_linear on the CPU (docs/quantization.md, "CPU kernels"): for
// up to kFusedMaxRows rows of x, the packed words are unpacked, converted and multiplied in SIMD
// registers (quant_fused_body.inc, compiled for AVX-512, AVX2 and the baseline and picked at run
// time), so the packed bytes are read once and no float tile is written. Layouts they do not
// cover (FP8, narrow groups, GPTQ widths that are not whole 16-lane blocks) return
// false and take the tile path of quant_linear.cc.

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>  // std::fma in quant_fused_body.inc
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "cpu/float_io.h"
#include "cpu/quant_kernels.h"
#include "cpu/simd_target.h"
#include "strata/core/parallel.h"

namespace strata::cpu {
namespace {

// Plain arguments of one layer (no Tensor inside the per-ISA code).
struct FusedArgs {
  ops::QuantFormat format = ops::QuantFormat::FP8;
  std::int64_t n = 0, k = 0, m = 0;
  int bits = 4;
  std::int64_t group = 0, groups = 1;
  const void* weight = nullptr;
  const void* scale = nullptr;  // integer formats: as stored
  DType scale_dtype = DType::Float32;
  const std::int32_t* zeros = nullptr;
  const float* x = nullptr;   // [m, k]
  const float* xp = nullptr;  // compressed-tensors: x de-interleaved by field (and scaled as below)
  std::int64_t xp_stride = 0;
  const float* x_fields = nullptr;      // GPTQ: x [m, k] times field_unit(k % per)
  const std::int32_t* g_idx = nullptr;  // GPTQ with act-order (else the groups are k / group)
  float* acc = nullptr;                 // [m, n]

  // dst[j] = scale[i + j] for j < count (vector conversions, not one switch per element).
  void scales_to_float(std::int64_t i, std::int64_t count, float* dst) const {
    switch (scale_dtype) {
      case DType::BFloat16:
        return convert_row_to_float(static_cast<const BFloat16*>(scale) + i, dst, count);
      case DType::Float16:
        return convert_row_to_float(static_cast<const Half*>(scale) + i, dst, count);
      default:
        return convert_row_to_float(static_cast<const float*>(scale) + i, dst, count);
    }
  }

  float scale_at(std::int64_t i) const {
    switch (scale_dtype) {
      case DType::BFloat16:
        return load_as_float(static_cast<const BFloat16*>(scale), i);
      case DType::Float16:
        return load_as_float(static_cast<const Half*>(scale), i);
      default:
        return static_cast<const float*>(scale)[i];
    }
  }
};

using RunUnits = void (*)(const FusedArgs&, std::int64_t, std::int64_t);
// GPTQ panels (quant_fused_body.inc's gptq_panel): packed rows [r0, r1) x blocks [b0, b1).
using RunPanel = void (*)(const FusedArgs&, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                          float*, std::int64_t);
struct Kernels {
  RunUnits units = nullptr;
  RunPanel gptq_panel = nullptr;
  bool operator==(const Kernels&) const = default;
};

}  // namespace

// The body's helpers pass 64-byte vectors by value; they are inlined, internal functions, so
// the compilers' note that such an ABI differs without AVX-512 does not apply (GCC reports it at
// the end of the file, so the pragma stays on to the end).
#if defined(__GNUC__)  // GCC and Clang
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
namespace fused_avx512 {
STRATA_SIMD_TARGET_BEGIN("avx512f,avx512bw,avx512dq,avx512vl,fma")
#include "cpu/quant_fused_body.inc"
STRATA_SIMD_TARGET_END
Kernels entry() { return {&run_units, &gptq_panel}; }
}  // namespace fused_avx512

namespace fused_avx2 {
STRATA_SIMD_TARGET_BEGIN("avx2,fma")
#include "cpu/quant_fused_body.inc"
STRATA_SIMD_TARGET_END
Kernels entry() { return {&run_units, &gptq_panel}; }
}  // namespace fused_avx2
#endif

namespace fused_generic {
#include "cpu/quant_fused_body.inc"
Kernels entry() { return {&run_units, &gptq_panel}; }
}  // namespace fused_generic

namespace {

struct Variant {
  const char* name;
  Kernels run;
};

// The variants this CPU can run, best first.
const std::vector<Variant>& variants() {
  static const std::vector<Variant> all = [] {
    std::vector<Variant> out;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
      out.push_back({"avx512", fused_avx512::entry()});
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      out.push_back({"avx2", fused_avx2::entry()});
    }
#endif
    out.push_back({"generic", fused_generic::entry()});
    return out;
  }();
  return all;
}

std::atomic<const Variant*> g_pinned{nullptr};

Kernels kernels_in_use() {
  const Variant* pinned = g_pinned.load(std::memory_order_relaxed);
  return pinned != nullptr ? pinned->run : variants().front().run;
}

const char* active_variant_name() {
  const Kernels run = kernels_in_use();
  for (const Variant& v : variants()) {
    if (v.run == run) return v.name;
  }
  return "";
}

// STRATA_QUANT_CPU_GPTQ=strips|panels unless a test pinned one (-1: not pinned). Strips stay the
// default until the device host measures panels (session 8 had no device run; docs).
std::atomic<int> g_gptq_layout{-1};
constexpr GptqCpuLayout kDefaultGptqLayout = GptqCpuLayout::Strips;

// GPTQ in panels (gptq_panel): packed rows split in chunks of whole groups where they can be, the
// outputs in stretches of up to 1024 (4 KiB of each packed row), tasks of about 256 KiB; each
// task's sums go to its chunk's slice of a scratch [chunks, m, n], added in chunk order after.
void run_gptq_panels(const FusedArgs& f, RunPanel panel) {
  const int per = 32 / f.bits;
  const std::int64_t packed_rows = f.k / per, blocks = f.n / 16;
  const std::int64_t width_blocks = std::min<std::int64_t>(blocks, 64);
  const std::int64_t stretches = (blocks + width_blocks - 1) / width_blocks;
  const std::int64_t rows_per_group = std::max<std::int64_t>(1, f.group / per);
  std::int64_t chunk_rows = std::max<std::int64_t>(
      1, (std::int64_t{256} << 10) / (width_blocks * 64));  // 256 KiB of packed bytes
  if (chunk_rows >= rows_per_group) chunk_rows -= chunk_rows % rows_per_group;  // whole groups
  const std::int64_t chunks = (packed_rows + chunk_rows - 1) / chunk_rows;
  std::vector<float> scratch(static_cast<std::size_t>(chunks * f.m * f.n));
  parallel_for(chunks * stretches, 1, [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t chunk = t / stretches, b0 = (t % stretches) * width_blocks;
      const std::int64_t r0 = chunk * chunk_rows;
      panel(f, r0, std::min(packed_rows, r0 + chunk_rows), b0, std::min(blocks, b0 + width_blocks),
            scratch.data() + chunk * f.m * f.n + b0 * 16, f.n);
    }
  });
  parallel_for(f.m * f.n, 4096, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) {
      float sum = 0.0f;
      for (std::int64_t c = 0; c < chunks; ++c)
        sum += scratch[static_cast<std::size_t>(c * f.m * f.n + i)];
      f.acc[i] = sum;
    }
  });
}

// The power of two that x takes for packed field j < per (of a word) where the kernels read
// fields in place (quant_fused_body.inc's InPlace: position j % (per / 2)), once per call rather
// than a division per input.
std::array<float, 8> field_units(int bits, int per) {
  std::array<float, 8> units{};
  for (int j = 0; j < per; ++j)
    units[j] = 1.0f / static_cast<float>(1u << (bits * (j % (per / 2))));
  return units;
}

bool sequential_g_idx(const ops::QuantizedWeight& w, std::int64_t group) {
  if (w.g_idx_sequential) return *w.g_idx_sequential;
  const std::int32_t* g = w.g_idx->data<std::int32_t>();
  for (std::int64_t k = 0; k < w.in_features; ++k) {
    if (g[k] != k / group) return false;
  }
  return true;
}

}  // namespace

bool fused_quantized_decode(const ops::QuantizedWeight& w, const float* x, std::int64_t m,
                            float* acc) {
  if (m < 1 || m > kFusedMaxRows) return false;
  FusedArgs f;
  f.format = w.format;
  f.n = w.out_features;
  f.k = w.in_features;
  f.m = m;
  f.bits = w.bits;
  f.group = w.group_size > 0 ? w.group_size : w.in_features;
  f.weight = w.weight.data_ptr();
  f.x = x;
  f.acc = acc;
  const int per = 32 / std::max(1, w.bits);
  std::int64_t units = 0;
  std::int64_t bytes_per_unit = 0;
  std::vector<float> xp, x_fields;
  const std::array<float, 8> unit = field_units(f.bits, per);
  switch (w.format) {
    case ops::QuantFormat::FP8:
      // AVX-512 widens e4m3 through half precision (quant_fp8_fused.cc); elsewhere the table
      // lookup of quant_fp8.cc (an exact vector decode in float32 needs a select for subnormals
      // or a denormal-input multiply, which microcode assists make 10x slower).
      return std::string(active_variant_name()) == "avx512" &&
             fused_fp8_decode_avx512(w, x, m, acc);
    case ops::QuantFormat::CompressedTensors:
      f.groups = w.scale.size(1);
      if (f.groups > 1 && (f.group % per != 0 || f.group / per < 16)) return false;
      units = f.n;
      bytes_per_unit = (f.k + per - 1) / per * 4;
      break;
    case ops::QuantFormat::AWQ:
      f.groups = w.scale.size(0);
      units = (f.n / 8 + 15) / 16;  // the last block may be partial
      bytes_per_unit = f.k * 16 * 4;
      break;
    case ops::QuantFormat::GPTQ:
      f.groups = w.scale.size(0);
      if (f.n % 16 != 0) return false;
      if (!sequential_g_idx(w, f.group)) {
        f.g_idx = w.g_idx->data<std::int32_t>();  // checked: each in [0, groups)
      } else if (f.group % per != 0) {
        return false;
      }
      units = f.n / 16;
      bytes_per_unit = f.k / per * 16 * 4;
      break;
  }
  if (w.format == ops::QuantFormat::CompressedTensors) {
    // x de-interleaved: field j of word c multiplies x[c * per + j].
    const int fields = per;
    const std::int64_t words = (f.k + fields - 1) / fields;
    f.xp_stride = words;
    xp.assign(static_cast<std::size_t>(m * fields * words), 0.0f);
    for (std::int64_t r = 0; r < m; ++r) {
      for (std::int64_t kk = 0; kk < f.k; ++kk) {
        xp[static_cast<std::size_t>((r * fields + kk % fields) * words + kk / fields)] =
            x[r * f.k + kk] * unit[kk % fields];
      }
    }
    f.xp = xp.data();
  }
  if (w.format == ops::QuantFormat::GPTQ) {
    x_fields.resize(static_cast<std::size_t>(m * f.k));
    for (std::int64_t r = 0; r < m; ++r) {
      for (std::int64_t kk = 0; kk < f.k; ++kk) {
        x_fields[static_cast<std::size_t>(r * f.k + kk)] = x[r * f.k + kk] * unit[kk % per];
      }
    }
    f.x_fields = x_fields.data();
  }
  {
    f.scale = w.scale.data_ptr();
    f.scale_dtype = w.scale.dtype();
    f.zeros = w.zeros ? w.zeros->data<std::int32_t>() : nullptr;
  }
  const Kernels run = kernels_in_use();
  if (w.format == ops::QuantFormat::GPTQ && f.g_idx == nullptr &&
      gptq_cpu_layout() == GptqCpuLayout::Panels) {
    run_gptq_panels(f, run.gptq_panel);
    return true;
  }
  // Tasks of about 256 KiB of packed bytes.
  const std::int64_t grain = std::max<std::int64_t>(
      1, (std::int64_t{256} << 10) / std::max<std::int64_t>(1, bytes_per_unit));
  parallel_for(units, grain, [&](std::int64_t u0, std::int64_t u1) { run.units(f, u0, u1); });
  return true;
}

std::vector<std::string> fused_kernel_variants() {
  std::vector<std::string> names;
  for (const Variant& v : variants()) names.emplace_back(v.name);
  return names;
}

void pin_fused_kernel_variant(const std::string& name) {
  const Variant* run = nullptr;
  for (const Variant& v : variants()) {
    if (name == v.name) run = &v;
  }
  STRATA_CHECK_ARG(name.empty() || run != nullptr,
                   "pin_fused_kernel_variant: '{}' is not a variant this CPU runs", name);
  g_pinned.store(run, std::memory_order_relaxed);
}

GptqCpuLayout gptq_cpu_layout() {
  const int pinned = g_gptq_layout.load(std::memory_order_relaxed);
  if (pinned >= 0) return static_cast<GptqCpuLayout>(pinned);
  static const GptqCpuLayout from_env = [] {
    const char* env = std::getenv("STRATA_QUANT_CPU_GPTQ");
    if (env != nullptr && std::string(env) == "strips") return GptqCpuLayout::Strips;
    if (env != nullptr && std::string(env) == "panels") return GptqCpuLayout::Panels;
    return kDefaultGptqLayout;
  }();
  return from_env;
}

void pin_gptq_cpu_layout(std::optional<GptqCpuLayout> layout) {
  g_gptq_layout.store(layout ? static_cast<int>(*layout) : -1, std::memory_order_relaxed);
}

}  // namespace strata::cpu
