#include "selfcheck.h"

#include <fmt/format.h>
#include <fmt/ostream.h>

#include <chrono>
#include <cmath>
#include <random>
#include <sstream>
#include <string>

#include "strata/core/parallel.h"
#include "strata/ops.h"

namespace strata::cli {
namespace {

// Dimensions of the toy decoder block.
constexpr std::int64_t kVocab = 257;
constexpr std::int64_t kHidden = 64;
constexpr std::int64_t kHeads = 8;
constexpr std::int64_t kKvHeads = 2;
constexpr std::int64_t kHeadDim = kHidden / kHeads;
constexpr std::int64_t kIntermediate = 176;
constexpr std::int64_t kSeq = 11;

Tensor random_weights(const Shape& shape, double scale, std::uint64_t seed, DType dtype) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<double> values(static_cast<std::size_t>(shape_numel(shape)));
  for (auto& v : values) v = dist(rng);
  return Tensor::from_doubles(values, shape, dtype);
}

// cos/sin tables for positions 0..seq-1 as transformers builds them (base 10000).
std::pair<Tensor, Tensor> rotary_tables(DType dtype) {
  std::vector<double> cos(kSeq * kHeadDim), sin(kSeq * kHeadDim);
  for (std::int64_t p = 0; p < kSeq; ++p) {
    for (std::int64_t i = 0; i < kHeadDim; ++i) {
      const double inv_freq = std::pow(
          10000.0, -2.0 * static_cast<double>(i % (kHeadDim / 2)) / static_cast<double>(kHeadDim));
      cos[p * kHeadDim + i] = std::cos(static_cast<double>(p) * inv_freq);
      sin[p * kHeadDim + i] = std::sin(static_cast<double>(p) * inv_freq);
    }
  }
  return {Tensor::from_doubles(cos, {1, kSeq, kHeadDim}, dtype),
          Tensor::from_doubles(sin, {1, kSeq, kHeadDim}, dtype)};
}

class StepPrinter {
 public:
  explicit StepPrinter(std::ostream& out) : out_(out) {}
  template <typename F>
  Tensor step(const std::string& name, F&& f) {
    const auto start = std::chrono::steady_clock::now();
    Tensor t = f();
    const double us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    fmt::print(out_, "  {:<34} -> {:<34} {:>9.1f} us\n", name, t.describe(), us);
    return t;
  }

 private:
  std::ostream& out_;
};

struct ForwardResult {
  Tensor logits;  // [1, seq, vocab], float32
  Tensor probs;   // softmax of the last position, float32
  Tensor next_token;
};

ForwardResult forward(DType dtype, std::ostream& out, bool verbose) {
  std::ostringstream sink;
  StepPrinter p(verbose ? out : sink);
  std::uint64_t seed = 1;
  auto w = [&](const Shape& shape, double scale) {
    return random_weights(shape, scale, seed++, dtype);
  };
  const Tensor embed = w({kVocab, kHidden}, 1.0);
  const Tensor norm1 = w({kHidden}, 0.1);
  const Tensor q_proj = w({kHeads * kHeadDim, kHidden}, 0.125);
  const Tensor k_proj = w({kKvHeads * kHeadDim, kHidden}, 0.125);
  const Tensor v_proj = w({kKvHeads * kHeadDim, kHidden}, 0.125);
  const Tensor o_proj = w({kHidden, kHeads * kHeadDim}, 0.125);
  const Tensor norm2 = w({kHidden}, 0.1);
  const Tensor gate = w({kIntermediate, kHidden}, 0.125);
  const Tensor up = w({kIntermediate, kHidden}, 0.125);
  const Tensor down = w({kHidden, kIntermediate}, 0.075);
  const Tensor lm_head = w({kVocab, kHidden}, 0.125);
  const Tensor ones = Tensor::ones({kHidden}, dtype);
  // Plain variables, not a structured binding: clang 14 cannot capture bindings in lambdas.
  const auto rope = rotary_tables(dtype);
  const Tensor& cos = rope.first;
  const Tensor& sin = rope.second;

  std::vector<std::int64_t> ids(kSeq);
  for (std::int64_t i = 0; i < kSeq; ++i) ids[i] = (i * 37 + 11) % kVocab;
  const Tensor input_ids = Tensor::from_vector(ids, {1, kSeq});

  Tensor h = p.step("embedding", [&] { return ops::embedding(input_ids, embed); });
  Tensor x = p.step("rms_norm", [&] { return ops::rms_norm(h, ops::add(ones, norm1), 1e-6); });
  auto heads = [](const Tensor& t, std::int64_t n) {
    return t.view({1, kSeq, n, kHeadDim}).transpose(1, 2);
  };
  Tensor q = p.step("linear q_proj", [&] { return heads(ops::linear(x, q_proj), kHeads); });
  Tensor k = p.step("linear k_proj", [&] { return heads(ops::linear(x, k_proj), kKvHeads); });
  Tensor v = p.step("linear v_proj", [&] { return heads(ops::linear(x, v_proj), kKvHeads); });
  q = p.step("rotary_embedding q", [&] { return ops::rotary_embedding(q, cos, sin); });
  k = p.step("rotary_embedding k", [&] { return ops::rotary_embedding(k, cos, sin); });
  Tensor attn = p.step("attention (causal, 8q/2kv heads)", [&] {
    return ops::scaled_dot_product_attention(q, k, v, {.causal = true});
  });
  attn = attn.transpose(1, 2).reshape({1, kSeq, kHidden});
  h = p.step("linear o_proj + residual", [&] { return ops::add(h, ops::linear(attn, o_proj)); });
  x = p.step("rms_norm", [&] { return ops::rms_norm(h, ops::add(ones, norm2), 1e-6); });
  Tensor mlp = p.step("silu(gate) * up", [&] {
    return ops::mul(ops::silu(ops::linear(x, gate)), ops::linear(x, up));
  });
  h = p.step("linear down + residual", [&] { return ops::add(h, ops::linear(mlp, down)); });
  Tensor logits = p.step("layer_norm + lm_head", [&] {
    return ops::linear(ops::layer_norm(h, std::nullopt, std::nullopt, 1e-5), lm_head);
  });
  logits = logits.to(DType::Float32);
  Tensor probs = p.step("softmax (last position)",
                        [&] { return ops::softmax(logits.select(1, kSeq - 1), -1); });
  Tensor next = p.step("argmax", [&] { return ops::argmax(probs, -1); });
  return {logits, probs, next};
}

}  // namespace

bool run_selfcheck(DType dtype, std::ostream& out) {
  STRATA_CHECK_ARG(dtype == DType::Float32 || dtype == DType::BFloat16 || dtype == DType::Float16,
                   "selfcheck: --dtype {} is not a compute dtype; use f32, bf16 or f16", dtype);
  fmt::print(out,
             "self-check: one decoder block (hidden {}, {} query / {} kv heads, seq {}, vocab "
             "{}) in {} on cpu, {} threads\n",
             kHidden, kHeads, kKvHeads, kSeq, kVocab, dtype, num_threads());
  const ForwardResult result = forward(dtype, out, true);
  bool ok = true;
  auto check = [&](bool condition, const std::string& what) {
    fmt::print(out, "  [{}] {}\n", condition ? "ok" : "FAILED", what);
    ok = ok && condition;
  };
  const std::vector<double> probs = result.probs.to_doubles();
  double sum = 0.0;
  for (double v : probs) sum += v;
  check(std::abs(sum - 1.0) < 1e-4, fmt::format("softmax sums to 1 ({:.6f})", sum));
  bool finite = true;
  for (double v : result.logits.to_doubles()) finite = finite && std::isfinite(v);
  check(finite, "logits are finite");
  const auto [top_values, top_indices] = ops::topk(result.probs, 5, -1);
  check(static_cast<std::int64_t>(top_indices.value_at({0, 0})) ==
            static_cast<std::int64_t>(result.next_token.item()),
        fmt::format("top-1 of topk agrees with argmax (token {})",
                    static_cast<std::int64_t>(result.next_token.item())));
  if (dtype != DType::Float32) {
    const ForwardResult ref = forward(DType::Float32, out, false);
    const std::vector<double> a = result.logits.to_doubles();
    const std::vector<double> b = ref.logits.to_doubles();
    double max_err = 0.0, max_ref = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      max_err = std::max(max_err, std::abs(a[i] - b[i]));
      max_ref = std::max(max_ref, std::abs(b[i]));
    }
    const double rel = max_err / max_ref;
    check(rel < 0.1, fmt::format("{} logits within 10% of the float32 forward of the same "
                                 "weights (max error {:.3g} of scale {:.3g})",
                                 dtype, max_err, max_ref));
  }
  fmt::print(out, "self-check {}\n", ok ? "passed" : "FAILED");
  return ok;
}

}  // namespace strata::cli
