// Gemma 2 / Gemma 3 text: the model against an independent naive forward written here from
// transformers' modeling_gemma2.py / modeling_gemma3.py (double precision, plain loops), the
// composed soft-capped attention against the same loops, and the cache and padded-batch paths
// against the model's own full forward. Parity with transformers itself is in parity_test.cc
// (recorded fixtures gemma2, gemma3_text, gemma3_text_softcap).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "models/capped_attention.h"
#include "models/model_testing.h"
#include "strata/core/error.h"
#include "strata/io/model_config.h"
#include "strata/models/models.h"

namespace strata::testing {
namespace {

using models::CausalLM;
using Matrix = std::vector<std::vector<double>>;

// Tiny configs with every twist: heads * head_dim != hidden, a sliding/full pattern with a
// window shorter than the prompt, query_pre_attn_scalar != head_dim, soft-caps small enough to
// bend the scores, two rope bases with linear scaling on the full layers (Gemma 3).
constexpr const char* kGemma2 = R"({
  "model_type": "gemma2", "hidden_size": 12, "intermediate_size": 10, "num_hidden_layers": 3,
  "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "vocab_size": 17,
  "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "sliding_window": 3,
  "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
  "query_pre_attn_scalar": 5, "attn_logit_softcapping": 1.5, "final_logit_softcapping": 2.0,
  "rope_theta": 100.0})";
constexpr const char* kGemma3 = R"({
  "model_type": "gemma3_text", "hidden_size": 12, "intermediate_size": 10,
  "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4,
  "vocab_size": 17, "max_position_embeddings": 64, "sliding_window": 3,
  "tie_word_embeddings": false, "sliding_window_pattern": 2, "query_pre_attn_scalar": 3,
  "rope_parameters": {
    "sliding_attention": {"rope_type": "default", "rope_theta": 50.0},
    "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0}}})";

std::shared_ptr<CausalLM> random_model(const char* json, std::uint64_t seed) {
  auto model = models::build_causal_lm(io::parse_model_config(json, "test"), DType::Float32);
  for (const auto& [name, tensor] : model->state_dict()) {
    const bool norm = name.find("norm") != std::string::npos;
    tensor.copy_(random_tensor(tensor.shape(), DType::Float32, seed++, norm ? -0.3 : -0.6,
                               norm ? 0.3 : 0.6));
  }
  return model;
}

// ---- the naive forward -------------------------------------------------------------------
struct Naive {
  models::TransformerConfig c;
  std::map<std::string, std::vector<double>> w;

  explicit Naive(CausalLM& model) : c(model.config()) {
    for (const auto& [name, tensor] : model.state_dict()) w[name] = tensor.to_doubles();
  }
  const std::vector<double>& at(const std::string& name) const { return w.at(name); }

  // x [rows][in] @ W^T, W [out, in].
  Matrix linear(const Matrix& x, const std::string& name, std::int64_t out) const {
    const std::vector<double>& m = at(name);
    const auto in = static_cast<std::int64_t>(x[0].size());
    Matrix y(x.size(), std::vector<double>(static_cast<std::size_t>(out)));
    for (std::size_t r = 0; r < x.size(); ++r) {
      for (std::int64_t o = 0; o < out; ++o) {
        double s = 0;
        for (std::int64_t i = 0; i < in; ++i) s += x[r][i] * m[o * in + i];
        y[r][o] = s;
      }
    }
    return y;
  }
  // Gemma's norm over the last `dim` values of each chunk: x / rms * (1 + w).
  Matrix norm(Matrix x, const std::string& name, std::int64_t dim) const {
    const std::vector<double>& g = at(name);
    for (auto& row : x) {
      for (std::size_t c0 = 0; c0 < row.size(); c0 += static_cast<std::size_t>(dim)) {
        double ms = 0;
        for (std::int64_t i = 0; i < dim; ++i) ms += row[c0 + i] * row[c0 + i];
        const double inv = 1.0 / std::sqrt(ms / static_cast<double>(dim) + c.norm_eps);
        for (std::int64_t i = 0; i < dim; ++i) row[c0 + i] *= inv * (1.0 + g[i]);
      }
    }
    return x;
  }
  static double cap(double x, const std::optional<double>& c) {
    return c ? *c * std::tanh(x / *c) : x;
  }
  // Rotates each head of x [rows][heads * hd] at positions 0..rows-1 (rotate_half convention).
  void rope(Matrix& x, std::int64_t heads, const models::RopeConfig& r) const {
    const std::int64_t hd = c.head_dim, half = hd / 2;
    for (std::size_t p = 0; p < x.size(); ++p) {
      for (std::int64_t h = 0; h < heads; ++h) {
        double* v = &x[p][static_cast<std::size_t>(h * hd)];
        std::vector<double> out(static_cast<std::size_t>(hd));
        for (std::int64_t i = 0; i < half; ++i) {
          double inv = 1.0 / std::pow(r.theta, static_cast<double>(2 * i) / hd);
          if (r.type == "linear") inv /= r.factor;
          const double a = static_cast<double>(p) * inv;
          out[i] = v[i] * std::cos(a) - v[i + half] * std::sin(a);
          out[i + half] = v[i + half] * std::cos(a) + v[i] * std::sin(a);
        }
        std::copy(out.begin(), out.end(), v);
      }
    }
  }
  static double gelu_tanh(double x) {
    return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  }

  Matrix logits(const std::vector<std::int64_t>& ids) const {
    const std::int64_t H = c.hidden_size, hd = c.head_dim, nq = c.num_heads, nkv = c.num_kv_heads;
    const auto S = static_cast<std::int64_t>(ids.size());
    const std::vector<double>& emb = at("model.embed_tokens.weight");
    Matrix h(ids.size(), std::vector<double>(static_cast<std::size_t>(H)));
    const double scale = static_cast<float>(std::sqrt(static_cast<double>(H)));
    for (std::int64_t s = 0; s < S; ++s) {
      for (std::int64_t d = 0; d < H; ++d) h[s][d] = emb[ids[s] * H + d] * scale;
    }
    for (std::int64_t l = 0; l < c.num_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const std::int64_t window = c.sliding_windows[l];
      const bool sliding = c.sliding_layers.empty() ? window > 0 : c.sliding_layers[l];
      Matrix x = norm(h, p + "input_layernorm.weight", H);
      Matrix q = linear(x, p + "self_attn.q_proj.weight", nq * hd);
      Matrix k = linear(x, p + "self_attn.k_proj.weight", nkv * hd);
      const Matrix v = linear(x, p + "self_attn.v_proj.weight", nkv * hd);
      if (c.qk_norm) {
        q = norm(q, p + "self_attn.q_norm.weight", hd);
        k = norm(k, p + "self_attn.k_norm.weight", hd);
      }
      const models::RopeConfig& r = sliding && c.sliding_rope ? *c.sliding_rope : *c.rope;
      rope(q, nq, r);
      rope(k, nkv, r);
      Matrix attn(ids.size(), std::vector<double>(static_cast<std::size_t>(nq * hd), 0.0));
      for (std::int64_t head = 0; head < nq; ++head) {
        const std::int64_t kvh = head / (nq / nkv);
        for (std::int64_t i = 0; i < S; ++i) {
          std::vector<double> sc;
          std::vector<std::int64_t> keys;
          for (std::int64_t j = 0; j <= i; ++j) {
            if (window > 0 && j <= i - window) continue;
            double dot = 0;
            for (std::int64_t d = 0; d < hd; ++d) dot += q[i][head * hd + d] * k[j][kvh * hd + d];
            sc.push_back(cap(dot / std::sqrt(c.query_pre_attn_scalar), c.attn_logit_softcapping));
            keys.push_back(j);
          }
          const double mx = *std::max_element(sc.begin(), sc.end());
          double sum = 0;
          for (double& e : sc) sum += (e = std::exp(e - mx));
          for (std::size_t n = 0; n < keys.size(); ++n) {
            for (std::int64_t d = 0; d < hd; ++d) {
              attn[i][head * hd + d] += sc[n] / sum * v[keys[n]][kvh * hd + d];
            }
          }
        }
      }
      const Matrix o = norm(linear(attn, p + "self_attn.o_proj.weight", H),
                            p + "post_attention_layernorm.weight", H);
      for (std::int64_t s = 0; s < S; ++s) {
        for (std::int64_t d = 0; d < H; ++d) h[s][d] += o[s][d];
      }
      x = norm(h, p + "pre_feedforward_layernorm.weight", H);
      const Matrix g = linear(x, p + "mlp.gate_proj.weight", c.intermediate_size);
      Matrix u = linear(x, p + "mlp.up_proj.weight", c.intermediate_size);
      for (std::size_t s = 0; s < u.size(); ++s) {
        for (std::size_t d = 0; d < u[s].size(); ++d) u[s][d] *= gelu_tanh(g[s][d]);
      }
      const Matrix m = norm(linear(u, p + "mlp.down_proj.weight", H),
                            p + "post_feedforward_layernorm.weight", H);
      for (std::int64_t s = 0; s < S; ++s) {
        for (std::int64_t d = 0; d < H; ++d) h[s][d] += m[s][d];
      }
    }
    const Matrix out = linear(
        norm(h, "model.norm.weight", H),
        c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight", c.vocab_size);
    Matrix capped = out;
    for (auto& row : capped) {
      for (double& e : row) e = cap(e, c.final_logit_softcapping);
    }
    return capped;
  }
};

Tensor ids_tensor(const std::vector<std::int64_t>& ids) {
  return Tensor::from_vector(ids, {1, static_cast<std::int64_t>(ids.size())});
}

void expect_matches_naive(const char* json, std::uint64_t seed) {
  auto model = random_model(json, seed);
  const std::vector<std::int64_t> ids = {3, 16, 0, 7, 7, 12, 1, 9, 4};
  const Tensor logits = model->run(ids_tensor(ids)).logits;
  const Matrix expected = Naive(*model).logits(ids);
  const std::vector<double> got = logits.to_doubles();
  const std::int64_t vocab = model->config().vocab_size;
  double scale = 0, diff = 0;
  for (std::size_t s = 0; s < ids.size(); ++s) {
    for (std::int64_t v = 0; v < vocab; ++v) {
      scale = std::max(scale, std::abs(expected[s][v]));
      diff = std::max(diff, std::abs(expected[s][v] - got[s * vocab + v]));
    }
  }
  EXPECT_LE(diff, 1e-5 * scale) << "scale " << scale;
  EXPECT_GT(scale, 0.1);
}

TEST(Gemma, Gemma2MatchesNaiveForward) { expect_matches_naive(kGemma2, 11); }
TEST(Gemma, Gemma3MatchesNaiveForward) { expect_matches_naive(kGemma3, 12); }

TEST(Gemma, ModuleTreeHasTransformersNames) {
  auto g2 = random_model(kGemma2, 1);
  EXPECT_EQ(g2->class_name(), "Gemma2ForCausalLM");
  EXPECT_EQ(g2->base_model().class_name(), "Gemma2Model");
  EXPECT_EQ(g2->no_split_module_classes(), std::vector<std::string>{"Gemma2DecoderLayer"});
  const auto sd = g2->state_dict();
  for (const char* name :
       {"model.layers.0.pre_feedforward_layernorm.weight",
        "model.layers.0.post_feedforward_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight", "model.layers.2.mlp.gate_proj.weight"}) {
    EXPECT_TRUE(std::any_of(sd.begin(), sd.end(), [&](const auto& e) { return e.first == name; }))
        << name;
  }
  EXPECT_TRUE(g2->get_submodule("lm_head").parameter("weight").storage().is_same(
      g2->get_submodule("model.embed_tokens").parameter("weight").storage()));
  auto g3 = random_model(kGemma3, 2);
  EXPECT_EQ(g3->class_name(), "Gemma3ForCausalLM");
  EXPECT_EQ(g3->base_model().class_name(), "Gemma3TextModel");
  EXPECT_EQ(g3->get_submodule("model.embed_tokens").class_name(), "Gemma3TextScaledWordEmbedding");
  EXPECT_EQ(g3->get_submodule("model.rotary_emb").class_name(), "Gemma3RotaryEmbedding");
  EXPECT_EQ(g3->get_submodule("model.layers.1.self_attn.q_norm").class_name(), "Gemma3RMSNorm");
  EXPECT_EQ(g3->no_split_module_classes(), std::vector<std::string>{"Gemma3DecoderLayer"});
}

// Prefill, then one token at a time: each step's logits equal the full forward's (capped
// attention's cache path and both window kinds).
TEST(Gemma, CachedDecodeMatchesFullForward) {
  for (const char* json : {kGemma2, kGemma3}) {
    auto model = random_model(json, 21);
    const std::vector<std::int64_t> ids = {5, 2, 9, 9, 14, 0, 3, 8, 1, 6};
    const Tensor full = model->run(ids_tensor(ids)).logits;
    auto cache = model->make_cache();
    const std::int64_t prompt = 4;
    const Tensor first = model->run(ids_tensor({ids.begin(), ids.begin() + prompt}), cache).logits;
    EXPECT_LE(max_abs_diff(first, full.narrow(1, 0, prompt)), 1e-5 * max_abs(full));
    for (std::size_t i = prompt; i < ids.size(); ++i) {
      const Tensor step = model->run(ids_tensor({ids[i]}), cache).logits;
      EXPECT_LE(max_abs_diff(step, full.narrow(1, static_cast<std::int64_t>(i), 1)),
                1e-5 * max_abs(full))
          << "position " << i;
    }
  }
}

// A row padded on the left computes what it computes alone (finite masks in capped layers).
TEST(Gemma, PaddedRowMatchesItsOwnForward) {
  for (const char* json : {kGemma2, kGemma3}) {
    auto model = random_model(json, 31);
    const std::vector<std::int64_t> row = {4, 11, 2, 2, 15, 6, 1};
    const Tensor alone = model->run(ids_tensor(row)).logits;
    const std::int64_t pad = 3, len = static_cast<std::int64_t>(row.size());
    std::vector<std::int64_t> ids(static_cast<std::size_t>(2 * (len + pad)), 0),
        mask(ids.size(), 1);
    for (std::int64_t j = 0; j < len + pad; ++j) {
      ids[j] = j < pad ? 0 : row[j - pad];
      mask[j] = j < pad ? 0 : 1;
      ids[len + pad + j] = (3 * j + 1) % 17;
    }
    const Tensor logits = model
                              ->run(Tensor::from_vector(ids, {2, len + pad}), nullptr, 0,
                                    Tensor::from_vector(mask, {2, len + pad}))
                              .logits;
    EXPECT_TRUE(std::isfinite(max_abs(logits)));
    EXPECT_LE(max_abs_diff(logits.narrow(0, 0, 1).narrow(1, pad, len), alone),
              1e-5 * max_abs(alone));
  }
}

TEST(Gemma, SoftCapIsCapTimesTanhOfXOverCap) {
  const Tensor x = random_tensor({3, 5}, DType::Float32, 3, -40.0, 40.0);
  const std::vector<double> in = x.to_doubles(),
                            out = models::detail::soft_cap(x, 7.5).to_doubles();
  for (std::size_t i = 0; i < in.size(); ++i) {
    EXPECT_NEAR(out[i], 7.5 * std::tanh(in[i] / 7.5), 1e-5) << in[i];
  }
  EXPECT_THROW(models::detail::soft_cap(x, 0.0), InvalidArgument);
}

// Long prompts take several query blocks; each block narrows the keys to its window.
TEST(Gemma, CappedAttentionMatchesNaiveOverSeveralBlocks) {
  const std::int64_t heads = 4, kv = 2, len = 300, hd = 8, window = 37;
  const Tensor q = random_tensor({1, heads, len, hd}, DType::Float32, 41);
  const Tensor k = random_tensor({1, kv, len, hd}, DType::Float32, 42);
  const Tensor v = random_tensor({1, kv, len, hd}, DType::Float32, 43);
  const double scale = 0.7, cap = 1.25;
  for (std::int64_t w : {std::int64_t{0}, window}) {
    const Tensor out = models::detail::capped_causal_attention(q, k, v, nullptr, 0, scale, cap, w);
    const std::vector<double> qd = q.to_doubles(), kd = k.to_doubles(), vd = v.to_doubles(),
                              od = out.to_doubles();
    double diff = 0;
    for (std::int64_t h = 0; h < heads; ++h) {
      const std::int64_t g = h / (heads / kv);
      for (std::int64_t i = 0; i < len; i += 7) {
        std::vector<double> sc;
        const std::int64_t j0 = w > 0 ? std::max<std::int64_t>(0, i - w + 1) : 0;
        for (std::int64_t j = j0; j <= i; ++j) {
          double dot = 0;
          for (std::int64_t d = 0; d < hd; ++d) {
            dot += qd[(h * len + i) * hd + d] * kd[(g * len + j) * hd + d];
          }
          sc.push_back(cap * std::tanh(dot * scale / cap));
        }
        double mx = *std::max_element(sc.begin(), sc.end()), sum = 0;
        for (double& e : sc) sum += (e = std::exp(e - mx));
        for (std::int64_t d = 0; d < hd; ++d) {
          double acc = 0;
          for (std::int64_t j = j0; j <= i; ++j)
            acc += sc[j - j0] / sum * vd[(g * len + j) * hd + d];
          diff = std::max(diff, std::abs(acc - od[(h * len + i) * hd + d]));
        }
      }
    }
    EXPECT_LE(diff, 1e-5) << "window " << w;
  }
}

}  // namespace
}  // namespace strata::testing
