// gpt-oss: config parsing (GptOssConfig's defaults, the MXFP4 quantization_config), the module
// tree under transformers' names, the MXFP4 decoding and the clamped SwiGLU against hand-worked
// values, and whole-model logits against a naive double-precision forward written from
// transformers' modeling_gpt_oss.py (dense and MXFP4 experts, sliding and full layers, sinks).
// transformers' own numbers are checked by the parity tests on the recorded fixtures.

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "io/json_util.h"
#include "models/model_testing.h"
#include "ops/throws_naming.h"
#include "strata/ops.h"
#include "strata/placement/module_sizes.h"

namespace strata::testing {
namespace {

using models::Architecture;
using models::TransformerConfig;

TransformerConfig parse(const std::string& json) {
  return models::parse_transformer_config(io::parse_model_config(json, "test/config.json"));
}

// Three layers (sliding, full, sliding), a window of 3 tokens, 4 experts of which 2 per token.
const std::string kTiny = R"("model_type": "gpt_oss", "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 50, "num_local_experts": 4,
    "num_experts_per_tok": 2, "sliding_window": 3, "max_position_embeddings": 128,
    "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
    "beta_fast": 32.0, "beta_slow": 1.0, "truncate": false,
    "original_max_position_embeddings": 32})";
const std::string kMxfp4 =
    R"(, "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert":
    ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]})";

TEST(GptOssConfig, DefaultsAreGptOssConfigs) {
  const TransformerConfig c = parse(R"({"model_type": "gpt_oss", "hidden_size": 64,
      "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
      "num_key_value_heads": 2, "vocab_size": 50, "num_local_experts": 4,
      "num_experts_per_tok": 2})");
  EXPECT_EQ(c.architecture, Architecture::GptOss);
  EXPECT_EQ(c.head_dim, 64);  // GptOssConfig's head_dim, not hidden / heads
  EXPECT_TRUE(c.qkv_bias && c.o_bias && c.attention_sinks);
  EXPECT_EQ(c.norm_eps, 1e-5);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(c.sliding_windows, (std::vector<std::int64_t>{128, 0, 128, 0}));
  ASSERT_TRUE(c.rope.has_value());
  EXPECT_EQ(c.rope->type, "yarn");
  EXPECT_EQ(c.rope->theta, 150000.0);
  EXPECT_EQ(c.rope->factor, 32.0);
  EXPECT_EQ(c.rope->original_max_position_embeddings, 4096);
  EXPECT_FALSE(c.rope->truncate);
  EXPECT_EQ(c.swiglu_alpha, 1.702);
  EXPECT_EQ(c.swiglu_limit, 7.0);
  EXPECT_TRUE(c.mxfp4_experts.empty());
  EXPECT_EQ(c.no_split_module_classes(), (std::vector<std::string>{"GptOssDecoderLayer"}));
}

TEST(GptOssConfig, ReadsLayerTypesLimitAndMxfp4) {
  const TransformerConfig c = parse("{" + kTiny + R"(, "swiglu_limit": 5.5,
      "layer_types": ["full_attention", "sliding_attention", "sliding_attention"],
      "attention_bias": false)" + kMxfp4 +
                                    "}");
  EXPECT_EQ(c.sliding_windows, (std::vector<std::int64_t>{0, 3, 3}));
  EXPECT_EQ(c.swiglu_limit, 5.5);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.mxfp4_experts, (std::vector<bool>{true, true, true}));
  EXPECT_FALSE(c.quantization.has_value());  // the decoder family's linear layers stay dense
  // An entry matching a layer's experts keeps them dense (transformers' regex rule).
  const TransformerConfig partial = parse("{" + kTiny + R"(, "quantization_config":
      {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.1.mlp"]}})");
  EXPECT_EQ(partial.mxfp4_experts, (std::vector<bool>{true, false, true}));
}

TEST(GptOssConfig, UnsupportedQuantizationIsNamed) {
  EXPECT_TRUE(throws_naming<NotSupported>(
      [] { parse("{" + kTiny + R"(, "quantization_config": {"quant_method": "fp8"}})"); },
      {"quantization_config.quant_method", "fp8", "mxfp4", "test/config.json"}));
  EXPECT_TRUE(throws_naming<NotSupported>(
      [] {
        parse(R"({"model_type": "gpt_oss", "hidden_size": 48, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 50, "num_local_experts": 2, "num_experts_per_tok": 1,
            "quantization_config": {"quant_method": "mxfp4"}})");
      },
      {"hidden_size", "48", "32"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] { parse("{" + kTiny + R"(, "quantization_config": {"modules_to_not_convert": []}})"); },
      {"quant_method"}));
  EXPECT_TRUE(throws_naming<CheckpointError>([] { parse("{" + kTiny + R"(, "swiglu_limit": 0})"); },
                                             {"swiglu_limit"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] { parse(R"({"model_type": "gpt_oss", "hidden_size": 64, "num_hidden_layers": 1})"); },
      {"num_attention_heads"}));
}

// transformers' names, shapes and classes (GptOssForCausalLM.state_dict(), v5.17; the MXFP4
// names are Mxfp4GptOssExperts', which the published checkpoints use).
TEST(GptOssModel, ModuleTreeIsTransformers) {
  for (const bool mxfp4 : {false, true}) {
    auto model =
        models::build_causal_lm(parse("{" + kTiny + (mxfp4 ? kMxfp4 : "") + "}"), DType::BFloat16);
    std::map<std::string, Shape> shapes;
    std::map<std::string, DType> dtypes;
    for (const auto& [name, t] : model->state_dict()) {
      shapes[name] = t.shape();
      dtypes[name] = t.dtype();
    }
    const std::string l = "model.layers.1.";
    EXPECT_EQ(shapes.at(l + "self_attn.sinks"), (Shape{4}));
    EXPECT_EQ(shapes.at(l + "self_attn.q_proj.bias"), (Shape{64}));
    EXPECT_EQ(shapes.at(l + "self_attn.o_proj.bias"), (Shape{64}));
    EXPECT_EQ(shapes.at(l + "mlp.router.weight"), (Shape{4, 64}));
    EXPECT_EQ(shapes.at(l + "mlp.router.bias"), (Shape{4}));
    EXPECT_EQ(shapes.at(l + "mlp.experts.gate_up_proj_bias"), (Shape{4, 192}));
    EXPECT_EQ(shapes.at(l + "mlp.experts.down_proj_bias"), (Shape{4, 64}));
    if (mxfp4) {
      EXPECT_EQ(shapes.at(l + "mlp.experts.gate_up_proj_blocks"), (Shape{4, 192, 2, 16}));
      EXPECT_EQ(shapes.at(l + "mlp.experts.gate_up_proj_scales"), (Shape{4, 192, 2}));
      EXPECT_EQ(shapes.at(l + "mlp.experts.down_proj_blocks"), (Shape{4, 64, 3, 16}));
      EXPECT_EQ(shapes.at(l + "mlp.experts.down_proj_scales"), (Shape{4, 64, 3}));
      EXPECT_EQ(dtypes.at(l + "mlp.experts.down_proj_blocks"), DType::UInt8);
      EXPECT_EQ(dtypes.at(l + "mlp.experts.down_proj_scales"), DType::UInt8);
      EXPECT_EQ(shapes.count(l + "mlp.experts.gate_up_proj"), 0u);
    } else {
      EXPECT_EQ(shapes.at(l + "mlp.experts.gate_up_proj"), (Shape{4, 64, 192}));
      EXPECT_EQ(shapes.at(l + "mlp.experts.down_proj"), (Shape{4, 96, 64}));
    }
    EXPECT_EQ(shapes.size(), 3u + 3u * (mxfp4 ? 19u : 17u));  // embed, norm, lm_head + layers
    EXPECT_EQ(model->get_submodule("model.layers.0").class_name(), "GptOssDecoderLayer");
    EXPECT_EQ(model->get_submodule("model.layers.0.self_attn").class_name(), "GptOssAttention");
    EXPECT_EQ(model->get_submodule("model.layers.0.mlp").class_name(), "GptOssMLP");
    EXPECT_EQ(model->get_submodule("model.layers.0.mlp.router").class_name(), "GptOssTopKRouter");
    EXPECT_EQ(model->get_submodule("model.layers.0.mlp.experts").class_name(),
              mxfp4 ? "Mxfp4GptOssExperts" : "GptOssExperts");
    EXPECT_EQ(model->get_submodule("model.norm").class_name(), "GptOssRMSNorm");
    EXPECT_EQ(model->get_submodule("model.rotary_emb").class_name(), "GptOssRotaryEmbedding");
    EXPECT_EQ(model->class_name(), "GptOssForCausalLM");
  }
}

// ---- MXFP4 and the SwiGLU against hand-worked values -------------------------------------------

TEST(GptOssMxfp4, DecodesCodesAndScales) {
  // One row of 2 blocks. Block 0, scale 127 (x1): byte 0x21 = codes 1 (0.5), 2 (1.0); 0xF7 =
  // 7 (6.0), 15 (-6.0); 0x98 = 8 (-0.0), 9 (-0.5). Block 1, scale 129 (x4): byte 0x5C = 12
  // (-2.0), 5 (3.0); scale applies to every value of its block only.
  std::vector<std::uint8_t> blocks(32, 0);
  blocks[0] = 0x21;
  blocks[1] = 0xF7;
  blocks[2] = 0x98;
  blocks[16] = 0x5C;
  blocks[31] = 0x34;  // codes 4 (2.0), 3 (1.5)
  const Tensor b = Tensor::from_vector(blocks, {1, 2, 16});
  const Tensor s = Tensor::from_vector(std::vector<std::uint8_t>{127, 129}, {1, 2});
  const Tensor w = models::mxfp4_dequantize(b, s, DType::Float32);
  ASSERT_EQ(w.shape(), (Shape{1, 64}));
  std::vector<double> expected(64, 0.0);
  const double first[] = {0.5, 1.0, 6.0, -6.0, -0.0, -0.5};
  std::copy(std::begin(first), std::end(first), expected.begin());
  expected[32] = -8.0;
  expected[33] = 12.0;
  expected[62] = 8.0;
  expected[63] = 6.0;
  EXPECT_EQ(w.to_doubles(), expected);
  EXPECT_TRUE(std::signbit(w.to_doubles()[4]));  // -0.0 stays negative zero, as the table says
  // Scales far from 1: 2^-20 and 2^20; bfloat16 holds these products exactly.
  const Tensor s2 = Tensor::from_vector(std::vector<std::uint8_t>{107, 147}, {1, 2});
  const std::vector<double> bf = models::mxfp4_dequantize(b, s2, DType::BFloat16).to_doubles();
  EXPECT_EQ(bf[0], 0.5 * std::ldexp(1.0, -20));
  EXPECT_EQ(bf[33], 3.0 * std::ldexp(1.0, 20));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        models::mxfp4_dequantize(b, Tensor::zeros({1, 3}, DType::UInt8), DType::Float32);
      },
      {"mxfp4_dequantize", "scales"}));
}

double naive_swiglu_gate(double g, double alpha, double limit) {
  g = std::min(g, limit);
  return g / (1.0 + std::exp(-alpha * g));
}

TEST(GptOssSwiGLU, ClampsAndGatesLikeTransformers) {
  // Interleaved pairs (gate, up) on both sides of the limit.
  const std::vector<double> pairs = {0.3,  -0.2, 9.0, 8.0,  -9.0, -8.0, 6.9,  7.2,
                                     -1.5, 2.5,  7.0, -7.0, 12.0, 0.0,  -3.0, 100.0};
  const Tensor x = Tensor::from_doubles(pairs, {2, 8}, DType::Float32);
  const std::vector<double> y = models::clamped_swiglu(x, 1.702, 7.0).to_doubles();
  ASSERT_EQ(y.size(), 8u);
  for (std::size_t i = 0; i < 8; ++i) {
    const double up = std::clamp(pairs[2 * i + 1], -7.0, 7.0);
    const double want = (up + 1.0) * naive_swiglu_gate(pairs[2 * i], 1.702, 7.0);
    EXPECT_NEAR(y[i], want, 1e-5 * std::max(1.0, std::abs(want))) << "pair " << i;
  }
}

// ---- the whole model against a naive forward ------------------------------------------------

// Every parameter drawn uniformly; expert gate/up weights wide enough that gate and up pass the
// clamp for some tokens; packed MXFP4 bytes random with scales near 2^-4.
void randomize(models::CausalLM& model, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  for (auto& [name, t] : model.named_parameters()) {
    if (t.dtype() == DType::UInt8) {
      const bool scales = name.ends_with("_scales");
      std::uniform_int_distribution<int> d(scales ? 122 : 0, scales ? 124 : 255);
      std::vector<std::uint8_t> v(static_cast<std::size_t>(t.numel()));
      for (auto& b : v) b = static_cast<std::uint8_t>(d(gen));
      t.copy_(Tensor::from_vector(v, t.shape()));
      continue;
    }
    double lo = -0.3, hi = 0.3;
    if (name.ends_with("layernorm.weight") || name == "model.norm.weight") lo = 0.8, hi = 1.2;
    if (name.ends_with("sinks")) lo = -2.0, hi = 2.0;
    if (name.ends_with("gate_up_proj")) lo = -0.8, hi = 0.8;
    t.copy_(random_tensor(t.shape(), t.dtype(), gen(), lo, hi));
  }
}

// transformers' GptOss forward in double, for one sequence: [seq, vocab] logits.
class NaiveGptOss {
 public:
  NaiveGptOss(models::CausalLM& model, const TransformerConfig& c) : model_(model), c_(c) {
    for (const auto& [name, t] : model.state_dict()) p_[name] = t.to_doubles();
  }

  std::vector<double> logits(const std::vector<std::int64_t>& ids) {
    const std::int64_t S = static_cast<std::int64_t>(ids.size()), H = c_.hidden_size;
    const std::int64_t V = c_.vocab_size, D = c_.head_dim;
    // cos/sin from the rotary module (its frequencies are checked against transformers'
    // buffers by rope_test): [S, D].
    auto& rotary = model_.get_submodule("model.rotary_emb");
    const nn::Value cs = rotary(nn::Args({Tensor::zeros({1, S, H})}, {{"past_length", 0}}));
    cos_ = cs.list()[0].tensor().to_doubles();
    sin_ = cs.list()[1].tensor().to_doubles();
    std::vector<double> h(static_cast<std::size_t>(S * H));
    const auto& embed = p_.at("model.embed_tokens.weight");
    for (std::int64_t t = 0; t < S; ++t) {
      std::copy_n(embed.begin() + ids[t] * H, H, h.begin() + t * H);
    }
    for (std::int64_t l = 0; l < c_.num_layers; ++l) {
      const std::string pre = "model.layers." + std::to_string(l) + ".";
      std::vector<double> x = rms(h, p_.at(pre + "input_layernorm.weight"));
      add_to(h, attention(x, pre, l, S));
      x = rms(h, p_.at(pre + "post_attention_layernorm.weight"));
      add_to(h, experts(x, pre, S));
    }
    const std::vector<double> x = rms(h, p_.at("model.norm.weight"));
    return linear(x, p_.at("lm_head.weight"), nullptr, S, H, V);
  }

 private:
  std::vector<double> rms(const std::vector<double>& h, const std::vector<double>& w) const {
    const std::int64_t H = c_.hidden_size, S = static_cast<std::int64_t>(h.size()) / H;
    std::vector<double> out(h.size());
    for (std::int64_t t = 0; t < S; ++t) {
      double ms = 0.0;
      for (std::int64_t i = 0; i < H; ++i) ms += h[t * H + i] * h[t * H + i];
      const double inv = 1.0 / std::sqrt(ms / static_cast<double>(H) + c_.norm_eps);
      for (std::int64_t i = 0; i < H; ++i) out[t * H + i] = w[i] * h[t * H + i] * inv;
    }
    return out;
  }
  // x [S, in] @ w[out, in]^T + b.
  static std::vector<double> linear(const std::vector<double>& x, const std::vector<double>& w,
                                    const std::vector<double>* b, std::int64_t S, std::int64_t in,
                                    std::int64_t out) {
    std::vector<double> y(static_cast<std::size_t>(S * out));
    for (std::int64_t t = 0; t < S; ++t) {
      for (std::int64_t o = 0; o < out; ++o) {
        double acc = b ? (*b)[o] : 0.0;
        for (std::int64_t i = 0; i < in; ++i) acc += x[t * in + i] * w[o * in + i];
        y[t * out + o] = acc;
      }
    }
    return y;
  }
  static void add_to(std::vector<double>& h, const std::vector<double>& d) {
    for (std::size_t i = 0; i < h.size(); ++i) h[i] += d[i];
  }
  // rotate_half RoPE of head vector v [D] at position t.
  void rope(double* v, std::int64_t t) const {
    const std::int64_t D = c_.head_dim, half = D / 2;
    std::vector<double> r(v, v + D);
    for (std::int64_t d = 0; d < D; ++d) {
      const double rot = d < half ? -r[d + half] : r[d - half];
      v[d] = r[d] * cos_[t * D + d] + rot * sin_[t * D + d];
    }
  }
  std::vector<double> attention(const std::vector<double>& x, const std::string& pre,
                                std::int64_t layer, std::int64_t S) {
    const std::int64_t H = c_.hidden_size, D = c_.head_dim, nh = c_.num_heads,
                       nkv = c_.num_kv_heads;
    const std::string a = pre + "self_attn.";
    auto proj = [&](const char* n, std::int64_t out) {
      return linear(x, p_.at(a + n + ".weight"), &p_.at(a + n + ".bias"), S, H, out);
    };
    std::vector<double> q = proj("q_proj", nh * D), k = proj("k_proj", nkv * D),
                        v = proj("v_proj", nkv * D);
    for (std::int64_t t = 0; t < S; ++t) {
      for (std::int64_t hd = 0; hd < nh; ++hd) rope(&q[(t * nh + hd) * D], t);
      for (std::int64_t hd = 0; hd < nkv; ++hd) rope(&k[(t * nkv + hd) * D], t);
    }
    const std::int64_t window = c_.sliding_windows[static_cast<std::size_t>(layer)];
    const std::vector<double>& sinks = p_.at(a + "sinks");
    std::vector<double> o(static_cast<std::size_t>(S * nh * D), 0.0);
    for (std::int64_t hd = 0; hd < nh; ++hd) {
      const std::int64_t kh = hd / (nh / nkv);
      for (std::int64_t i = 0; i < S; ++i) {
        std::vector<double> s;
        double mx = sinks[hd];  // the sink joins the softmax (transformers cats it last)
        for (std::int64_t j = 0; j <= i; ++j) {
          double dot = 0.0;
          for (std::int64_t d = 0; d < D; ++d)
            dot += q[(i * nh + hd) * D + d] * k[(j * nkv + kh) * D + d];
          dot /= std::sqrt(static_cast<double>(D));
          if (window > 0 && i - j >= window) dot = -INFINITY;
          s.push_back(dot);
          mx = std::max(mx, dot);
        }
        double denom = std::exp(sinks[hd] - mx);
        for (double& e : s) denom += (e = std::exp(e - mx));
        for (std::int64_t j = 0; j <= i; ++j) {
          for (std::int64_t d = 0; d < D; ++d) {
            o[(i * nh + hd) * D + d] += s[j] / denom * v[(j * nkv + kh) * D + d];
          }
        }
      }
    }
    return linear(o, p_.at(a + "o_proj.weight"), &p_.at(a + "o_proj.bias"), S, nh * D, H);
  }
  // Expert e's weight as [in, out] (the dense layout), decoding MXFP4 bytes by hand if packed.
  double weight(const std::string& e_pre, const char* proj, std::int64_t e, std::int64_t in,
                std::int64_t out, std::int64_t i, std::int64_t o) const {
    const auto dense = p_.find(e_pre + proj);
    if (dense != p_.end()) return dense->second[(e * in + i) * out + o];
    static const double kValues[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
    const auto& blocks = p_.at(e_pre + proj + "_blocks");  // [E, out, in / 32, 16]
    const auto& scales = p_.at(e_pre + proj + "_scales");  // [E, out, in / 32]
    const auto byte =
        static_cast<int>(blocks[((e * out + o) * (in / 32) + i / 32) * 16 + (i % 32) / 2]);
    const int code = i % 2 == 0 ? byte & 15 : byte >> 4;
    const double value = (code & 8 ? -1.0 : 1.0) * kValues[code & 7];
    return std::ldexp(value, static_cast<int>(scales[(e * out + o) * (in / 32) + i / 32]) - 127);
  }
  std::vector<double> experts(const std::vector<double>& x, const std::string& pre,
                              std::int64_t S) {
    const std::int64_t H = c_.hidden_size, I = c_.intermediate_size, E = c_.num_experts;
    const std::string m = pre + "mlp.";
    const std::vector<double> logits =
        linear(x, p_.at(m + "router.weight"), &p_.at(m + "router.bias"), S, H, E);
    std::vector<double> out(static_cast<std::size_t>(S * H), 0.0);
    const std::string e_pre = m + "experts.";
    for (std::int64_t t = 0; t < S; ++t) {
      std::vector<std::int64_t> order(static_cast<std::size_t>(E));
      for (std::int64_t e = 0; e < E; ++e) order[e] = e;
      std::stable_sort(order.begin(), order.end(),
                       [&](auto a, auto b) { return logits[t * E + a] > logits[t * E + b]; });
      double denom = 0.0;
      const double top = logits[t * E + order[0]];
      for (std::int64_t j = 0; j < c_.num_experts_per_tok; ++j) {
        denom += std::exp(logits[t * E + order[j]] - top);
      }
      for (std::int64_t j = 0; j < c_.num_experts_per_tok; ++j) {
        const std::int64_t e = order[j];
        const double w = std::exp(logits[t * E + e] - top) / denom;
        std::vector<double> act(static_cast<std::size_t>(I));
        for (std::int64_t n = 0; n < I; ++n) {
          double gate = p_.at(e_pre + "gate_up_proj_bias")[e * 2 * I + 2 * n];
          double up = p_.at(e_pre + "gate_up_proj_bias")[e * 2 * I + 2 * n + 1];
          for (std::int64_t i = 0; i < H; ++i) {
            gate += x[t * H + i] * weight(e_pre, "gate_up_proj", e, H, 2 * I, i, 2 * n);
            up += x[t * H + i] * weight(e_pre, "gate_up_proj", e, H, 2 * I, i, 2 * n + 1);
          }
          clamped_ += (gate > c_.swiglu_limit) + (std::abs(up) > c_.swiglu_limit);
          up = std::clamp(up, -c_.swiglu_limit, c_.swiglu_limit);
          act[n] = (up + 1.0) * naive_swiglu_gate(gate, c_.swiglu_alpha, c_.swiglu_limit);
        }
        for (std::int64_t o = 0; o < H; ++o) {
          double acc = p_.at(e_pre + "down_proj_bias")[e * H + o];
          for (std::int64_t n = 0; n < I; ++n)
            acc += act[n] * weight(e_pre, "down_proj", e, I, H, n, o);
          out[t * H + o] += w * acc;
        }
      }
    }
    return out;
  }

  models::CausalLM& model_;
  const TransformerConfig& c_;
  std::map<std::string, std::vector<double>> p_;
  std::vector<double> cos_, sin_;

 public:
  std::int64_t clamped_ = 0;  // gate/up values the clamp changed (the test needs some)
};

class GptOssNaiveTest : public ::testing::TestWithParam<bool> {};

TEST_P(GptOssNaiveTest, LogitsMatchANaiveForward) {
  const bool mxfp4 = GetParam();
  const TransformerConfig c = parse("{" + kTiny + (mxfp4 ? kMxfp4 : "") + "}");
  auto model = models::build_causal_lm(c, DType::Float32);
  randomize(*model, mxfp4 ? 7 : 5);
  const std::vector<std::vector<std::int64_t>> prompts = {{3, 17, 42, 8, 8, 29, 1}, {49, 0, 12}};
  NaiveGptOss naive(*model, c);
  for (const auto& ids : prompts) {
    const auto n = static_cast<std::int64_t>(ids.size());
    const Tensor logits = model->run(Tensor::from_vector(ids, {1, n})).logits;
    const std::vector<double> want = naive.logits(ids);
    double scale = 0.0;
    for (double w : want) scale = std::max(scale, std::abs(w));
    EXPECT_TRUE(all_close(logits, want, {1e-5 * scale, 0.0}, "gpt_oss vs naive"));
  }
  EXPECT_GT(naive.clamped_, 0) << "the weights must push some gate/up values past the limit";
}

TEST_P(GptOssNaiveTest, CachedDecodeMatchesFullForward) {
  const TransformerConfig c = parse("{" + kTiny + (GetParam() ? kMxfp4 : "") + "}");
  auto model = models::build_causal_lm(c, DType::Float32);
  randomize(*model, 11);
  const std::vector<std::int64_t> ids = {5, 9, 14, 2, 33, 40, 7, 21, 18};
  const auto n = static_cast<std::int64_t>(ids.size());
  const Tensor full = model->run(Tensor::from_vector(ids, {1, n})).logits;
  auto cache = model->make_cache();
  const std::int64_t prefill = 5;  // past the window of 3, then one token at a time
  const Tensor first =
      model->run(Tensor::from_vector(ids, {1, n}).narrow(1, 0, prefill), cache).logits;
  const double tol = kFloat32Tolerance * max_abs(full);
  EXPECT_LE(max_abs_diff(first, full.narrow(1, 0, prefill)), tol);
  for (std::int64_t t = prefill; t < n; ++t) {
    const Tensor step = model->run(Tensor::from_vector(ids, {1, n}).narrow(1, t, 1), cache).logits;
    EXPECT_LE(max_abs_diff(step, full.narrow(1, t, 1)), tol) << "position " << t;
  }
}

// Planner sizes of the published gpt-oss-20b and gpt-oss-120b configs against transformers' own
// count (tests/fixtures/models/gpt_oss_sizes.json, record_gpt_oss_fixtures.py: the model built
// on the meta device in bfloat16). With MXFP4 experts the packed bytes: uint8 blocks and scales,
// every other tensor bfloat16 (13,761,264,768 bytes for gpt-oss-20b).
TEST(GptOssPlanSizes, MatchTransformersCount) {
  const auto path =
      std::filesystem::path(STRATA_TEST_FIXTURES_DIR) / "models" / "gpt_oss_sizes.json";
  const auto doc = nlohmann::json::parse(io::detail::read_text_file(path, 1 << 20, "sizes"));
  for (const char* name : {"gpt-oss-20b", "gpt-oss-120b"}) {
    SCOPED_TRACE(name);
    const auto& entry = doc.at(name);
    for (const bool mxfp4 : {false, true}) {
      nlohmann::json config = entry.at("config");
      if (!mxfp4) config.erase("quantization_config");
      std::shared_ptr<models::CausalLM> model;
      {
        auto guard = nn::init_empty_weights();
        model = models::build_causal_lm(
            models::parse_transformer_config(io::parse_model_config(config.dump(), path.string())),
            DType::BFloat16);
      }
      std::int64_t params = 0, bytes = 0;
      for (const auto& [n, t] : model->named_parameters()) {
        params += t.numel();
        bytes += t.numel() * static_cast<std::int64_t>(dtype_size(t.dtype()));
      }
      std::int64_t buffers = 0;
      for (const auto& [n, t] : model->named_buffers()) {
        buffers += t.numel() * static_cast<std::int64_t>(dtype_size(t.dtype()));
      }
      const std::int64_t planned = placement::compute_module_sizes(*model).total() - buffers;
      if (!mxfp4) {
        EXPECT_EQ(params, entry.at("dense_bf16").at("parameters").get<std::int64_t>());
        EXPECT_EQ(bytes, entry.at("dense_bf16").at("parameter_bytes").get<std::int64_t>());
        EXPECT_EQ(planned, bytes);
      } else {
        EXPECT_EQ(bytes, entry.at("mxfp4_formula").at("parameter_bytes").get<std::int64_t>());
        EXPECT_EQ(planned, bytes);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Experts, GptOssNaiveTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "mxfp4" : "dense"; });

}  // namespace
}  // namespace strata::testing
