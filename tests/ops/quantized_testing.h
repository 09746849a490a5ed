#pragma once
// An independent naive quantizer for the quantized_linear and quantized model tests. It draws
// integer codes, zero points and scales, packs them the way each producer's own code does (the
// loops of AutoAWQ's WQLinear_GEMM.from_linear, AutoGPTQ's QuantLinear.pack and
// compressed-tensors' pack_to_int32, docs/quantization.md), and computes the dense float32 weight
// element by element from the unpacked values, never from the packed words: a kernel that
// unpacks differently from the producers disagrees with `dense`.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/ops.h"

namespace strata::testing {

struct NaiveQuantized {
  ops::QuantizedWeight weight;
  std::vector<std::pair<std::string, Tensor>> tensors;  // checkpoint-local names
  std::vector<float> dense;                             // [out, in] row-major
};

// float8_e4m3fn decoded from its fields (sign, 4-bit exponent with bias 7, 3-bit mantissa).
inline float naive_fp8_e4m3fn(std::uint8_t b) {
  const int exponent = (b >> 3) & 0xF, mantissa = b & 0x7;
  const float magnitude = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -9)
                                        : std::ldexp(1.0f + mantissa / 8.0f, exponent - 7);
  return (b & 0x80) ? -magnitude : magnitude;
}

class NaiveQuantizer {
 public:
  explicit NaiveQuantizer(std::uint64_t seed) : rng_(seed) {}

  int code(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  // Scales rounded to `dtype` (the kernel reads them from a tensor of that dtype).
  std::pair<Tensor, std::vector<float>> scales(const Shape& shape, DType dtype) {
    std::uniform_real_distribution<float> u(0.01f, 0.05f);
    std::vector<float> v(static_cast<std::size_t>(shape_numel(shape)));
    for (float& s : v) s = u(rng_);
    Tensor t = Tensor::from_vector(v, shape).to(dtype);
    const std::vector<double> rounded = t.to_doubles();
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(rounded[i]);
    return {t, v};
  }

  // FP8: random e4m3fn bytes (no NaN; exponent field at most max_exponent), scale per
  // (block_out x block_in) block or per tensor (block_out = 0), the scale tensor in `scale_dtype`.
  NaiveQuantized fp8(std::int64_t n, std::int64_t k, std::int64_t block_out, std::int64_t block_in,
                     DType scale_dtype = DType::Float32, int max_exponent = 15) {
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(n * k));
    for (auto& b : bytes) {
      do {
        b = static_cast<std::uint8_t>(code(0, 255));
      } while ((b & 0x7F) == 0x7F || ((b >> 3) & 0xF) > max_exponent);
    }
    const std::int64_t so = block_out ? (n + block_out - 1) / block_out : 1;
    const std::int64_t si = block_in ? (k + block_in - 1) / block_in : 1;
    auto [scale, s] = scales(block_out ? Shape{so, si} : Shape{}, scale_dtype);
    NaiveQuantized q;
    Tensor w = Tensor::from_vector(bytes, {n, k});
    w = Tensor::from_storage(w.storage(), DType::Float8E4M3FN, {n, k});
    q.dense.resize(bytes.size());
    for (std::int64_t r = 0; r < n; ++r) {
      for (std::int64_t c = 0; c < k; ++c) {
        const float sc = block_out ? s[(r / block_out) * si + c / block_in] : s[0];
        q.dense[r * k + c] = naive_fp8_e4m3fn(bytes[r * k + c]) * sc;
      }
    }
    q.weight.format = ops::QuantFormat::FP8;
    q.weight.bits = 8;
    q.weight.block_out = block_out;
    q.weight.block_in = block_in;
    finish(q, n, k, 0, w, scale, std::nullopt, std::nullopt);
    q.tensors = {{"weight", w}, {"weight_scale_inv", scale}};
    return q;
  }

  // AWQ GEMM: codes and zeros in [0, 15], scales float16 [k/g, n].
  NaiveQuantized awq(std::int64_t n, std::int64_t k, std::int64_t g) {
    static constexpr int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    const std::int64_t groups = k / g;
    std::vector<int> iw(static_cast<std::size_t>(k * n)), iz(static_cast<std::size_t>(groups * n));
    for (int& v : iw) v = code(0, 15);
    for (int& v : iz) v = code(0, 15);
    auto [scale, s] = scales({groups, n}, DType::Float16);
    // AutoAWQ: for col in range(out // 8): for i in range(8):
    //   qweight[:, col] |= intweight[:, col * 8 + order_map[i]] << (i * 4)
    const auto pack = [&](const std::vector<int>& ints, std::int64_t rows) {
      std::vector<std::uint32_t> packed(static_cast<std::size_t>(rows * (n / 8)), 0);
      for (std::int64_t r = 0; r < rows; ++r) {
        for (std::int64_t col = 0; col < n / 8; ++col) {
          for (int i = 0; i < 8; ++i) {
            packed[r * (n / 8) + col] |=
                static_cast<std::uint32_t>(ints[r * n + col * 8 + kOrder[i]]) << (i * 4);
          }
        }
      }
      return as_int32(packed, {rows, n / 8});
    };
    NaiveQuantized q;
    q.dense.resize(static_cast<std::size_t>(n * k));
    for (std::int64_t r = 0; r < n; ++r) {
      for (std::int64_t c = 0; c < k; ++c) {
        const std::int64_t gi = c / g;
        q.dense[r * k + c] = static_cast<float>(iw[c * n + r] - iz[gi * n + r]) * s[gi * n + r];
      }
    }
    q.weight.format = ops::QuantFormat::AWQ;
    const Tensor qweight = pack(iw, k), qzeros = pack(iz, groups);
    finish(q, n, k, g, qweight, scale, qzeros, std::nullopt);
    q.tensors = {{"qweight", qweight}, {"qzeros", qzeros}, {"scales", scale}};
    return q;
  }

  // GPTQ v1: `bits` 4 or 8, group g (0: one group), act-order g_idx when desc_act, symmetric
  // zero 2^(bits-1) or random zeros in [1, 2^bits - 1] (AutoGPTQ's v1 packing cannot store 0).
  NaiveQuantized gptq(std::int64_t n, std::int64_t k, int bits, std::int64_t g, bool desc_act,
                      bool sym) {
    const int per = 32 / bits, top = (1 << bits) - 1;
    const std::int64_t groups = g ? (k + g - 1) / g : 1;
    std::vector<int> g_idx(static_cast<std::size_t>(k));
    std::vector<std::int64_t> perm(static_cast<std::size_t>(k));
    std::iota(perm.begin(), perm.end(), 0);
    if (desc_act) std::shuffle(perm.begin(), perm.end(), rng_);
    for (std::int64_t c = 0; c < k; ++c) g_idx[c] = g ? static_cast<int>(perm[c] / g) : 0;
    std::vector<int> iw(static_cast<std::size_t>(k * n)), iz(static_cast<std::size_t>(groups * n));
    for (int& v : iw) v = code(0, top);
    for (int& v : iz) v = sym ? (1 << (bits - 1)) : code(1, top);
    auto [scale, s] = scales({groups, n}, DType::Float16);
    // AutoGPTQ: row by row, qweight[row] |= intweight[j] << (bits * (j - i)) for j in the
    // row's 32/bits inputs; zeros -= 1, then packed the same way along the output columns.
    std::vector<std::uint32_t> qw(static_cast<std::size_t>(k / per * n), 0);
    for (std::int64_t row = 0; row < k / per; ++row) {
      for (int j = 0; j < per; ++j) {
        for (std::int64_t c = 0; c < n; ++c) {
          qw[row * n + c] |= static_cast<std::uint32_t>(iw[(row * per + j) * n + c]) << (bits * j);
        }
      }
    }
    std::vector<std::uint32_t> qz(static_cast<std::size_t>(groups * (n / per)), 0);
    for (std::int64_t gi = 0; gi < groups; ++gi) {
      for (std::int64_t col = 0; col < n / per; ++col) {
        for (int j = 0; j < per; ++j) {
          qz[gi * (n / per) + col] |= static_cast<std::uint32_t>(iz[gi * n + col * per + j] - 1)
                                      << (bits * j);
        }
      }
    }
    NaiveQuantized q;
    q.dense.resize(static_cast<std::size_t>(n * k));
    for (std::int64_t r = 0; r < n; ++r) {
      for (std::int64_t c = 0; c < k; ++c) {
        const int gi = g_idx[c];
        q.dense[r * k + c] = static_cast<float>(iw[c * n + r] - iz[gi * n + r]) * s[gi * n + r];
      }
    }
    q.weight.format = ops::QuantFormat::GPTQ;
    q.weight.bits = bits;
    const Tensor qweight = as_int32(qw, {k / per, n}), qzeros = as_int32(qz, {groups, n / per});
    const Tensor gidx =
        Tensor::from_vector(std::vector<std::int32_t>(g_idx.begin(), g_idx.end()), {k});
    finish(q, n, k, g, qweight, scale, qzeros, gidx);
    q.tensors = {{"qweight", qweight}, {"qzeros", qzeros}, {"scales", scale}, {"g_idx", gidx}};
    return q;
  }

  // compressed-tensors pack-quantized: signed codes, group g (0: channel), symmetric or with a
  // packed zero point; in_features need not be a multiple of 32/bits (the last word is padded).
  NaiveQuantized compressed(std::int64_t n, std::int64_t k, int bits, std::int64_t g, bool sym,
                            DType scale_dtype = DType::BFloat16) {
    const int per = 32 / bits, offset = 1 << (bits - 1);
    const std::int64_t groups = g ? (k + g - 1) / g : 1, kp = (k + per - 1) / per,
                       np_ = (n + per - 1) / per;
    std::vector<int> iw(static_cast<std::size_t>(n * k)), iz(static_cast<std::size_t>(n * groups));
    for (int& v : iw) v = code(-offset, offset - 1);
    for (int& v : iz) v = sym ? 0 : code(-offset, offset - 1);
    auto [scale, s] = scales({n, groups}, scale_dtype);
    // pack_to_int32: value + offset as unsigned, padded, packed |= value[:, i::pf] << bits * i
    // (packed_dim 1); zero points the same along dim 0.
    std::vector<std::uint32_t> packed(static_cast<std::size_t>(n * kp), 0);
    for (std::int64_t r = 0; r < n; ++r) {
      for (std::int64_t c = 0; c < kp; ++c) {
        for (int i = 0; i < per && c * per + i < k; ++i) {
          packed[r * kp + c] |= static_cast<std::uint32_t>(iw[r * k + c * per + i] + offset)
                                << (bits * i);
        }
      }
    }
    std::vector<std::uint32_t> zp(static_cast<std::size_t>(np_ * groups), 0);
    for (std::int64_t r = 0; r < np_; ++r) {
      for (std::int64_t gi = 0; gi < groups; ++gi) {
        for (int i = 0; i < per && r * per + i < n; ++i) {
          zp[r * groups + gi] |=
              static_cast<std::uint32_t>(iz[(r * per + i) * groups + gi] + offset) << (bits * i);
        }
      }
    }
    NaiveQuantized q;
    q.dense.resize(static_cast<std::size_t>(n * k));
    for (std::int64_t r = 0; r < n; ++r) {
      for (std::int64_t c = 0; c < k; ++c) {
        const std::int64_t gi = g ? c / g : 0;
        q.dense[r * k + c] =
            static_cast<float>(iw[r * k + c] - iz[r * groups + gi]) * s[r * groups + gi];
      }
    }
    q.weight.format = ops::QuantFormat::CompressedTensors;
    q.weight.bits = bits;
    const Tensor wp = as_int32(packed, {n, kp});
    std::optional<Tensor> zpt;
    if (!sym) zpt = as_int32(zp, {np_, groups});
    finish(q, n, k, g, wp, scale, zpt, std::nullopt);
    q.tensors = {{"weight_packed", wp},
                 {"weight_scale", scale},
                 {"weight_shape", Tensor::from_vector(std::vector<std::int64_t>{n, k}, {2})}};
    if (zpt) q.tensors.emplace_back("weight_zero_point", *zpt);
    return q;
  }

 private:
  static Tensor as_int32(const std::vector<std::uint32_t>& words, const Shape& shape) {
    std::vector<std::int32_t> v(words.size());
    for (std::size_t i = 0; i < words.size(); ++i) {
      v[i] = static_cast<std::int32_t>(words[i]);  // two's complement (C++20)
    }
    return Tensor::from_vector(v, shape);
  }
  static void finish(NaiveQuantized& q, std::int64_t n, std::int64_t k, std::int64_t g,
                     const Tensor& weight, const Tensor& scale, std::optional<Tensor> zeros,
                     std::optional<Tensor> g_idx) {
    q.weight.in_features = k;
    q.weight.out_features = n;
    q.weight.group_size = g;
    q.weight.weight = weight;
    q.weight.scale = scale;
    q.weight.zeros = std::move(zeros);
    q.weight.g_idx = std::move(g_idx);
  }

  std::mt19937_64 rng_;
};

// The packed tensors of `w` copied to `device`.
inline ops::QuantizedWeight weight_on(const ops::QuantizedWeight& w, Device device) {
  ops::QuantizedWeight out = w;
  out.weight = w.weight.to(device);
  out.scale = w.scale.to(device);
  if (w.zeros) out.zeros = w.zeros->to(device);
  if (w.g_idx) out.g_idx = w.g_idx->to(device);
  return out;
}

// y[m, n] = sum_k x[m, k] * dense[n, k] (+ bias[n]) in double, from float32 values.
inline std::vector<double> naive_linear(const std::vector<double>& x,
                                        const std::vector<float>& dense, std::int64_t m,
                                        std::int64_t n, std::int64_t k,
                                        const std::vector<double>& bias = {}) {
  std::vector<double> y(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double sum = bias.empty() ? 0.0 : bias[j];
      for (std::int64_t t = 0; t < k; ++t)
        sum += x[i * k + t] * static_cast<double>(dense[j * k + t]);
      y[i * n + j] = sum;
    }
  }
  return y;
}

}  // namespace strata::testing
