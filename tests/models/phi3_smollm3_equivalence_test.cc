// Checks of Phi-3's fused projections, partial rotary and SmolLM3's NoPE layers that need no
// recorded fixture: a Phi-3 model equals a Llama model holding the same weights split (q/k/v and
// gate/up are slices of the fused tensors in transformers' order); partial rotary against the
// rotate_half formula written out; a one-layer NoPE model cannot tell the order of the earlier
// tokens (causal attention without positions), while the same layer with RoPE can.

#include "models/attention.h"
#include "models/model_testing.h"

namespace strata::testing {
namespace {

const std::string kSizes = R"("hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96,
    "vocab_size": 128, "rms_norm_eps": 1e-5, "tie_word_embeddings": false)";

std::shared_ptr<models::CausalLM> build(const std::string& json) {
  return models::build_causal_lm(io::parse_model_config(json, "test/config.json"));
}

void randomize(nn::Module& model, std::uint64_t seed) {
  for (const auto& [name, t] : model.named_parameters()) {
    const bool norm = t.dim() == 1;
    t.copy_(
        random_tensor(t.shape(), DType::Float32, seed++, norm ? 0.8 : -0.25, norm ? 1.2 : 0.25));
  }
}

Tensor ids(std::vector<std::int64_t> values) {
  const auto n = static_cast<std::int64_t>(values.size());
  return Tensor::from_vector(values, {1, n});
}

TEST(Phi3Equivalence, FusedProjectionsAreLlamasSlices) {
  auto phi3 = build(R"({"model_type": "phi3", )" + kSizes + "}");
  auto llama = build(R"({"model_type": "llama", )" + kSizes + "}");
  randomize(*phi3, 1);
  const auto param = [](models::CausalLM& m, const std::string& name) {
    const auto dot = name.rfind('.');
    return m.get_submodule(name.substr(0, dot)).parameter(name.substr(dot + 1));
  };
  for (const auto& [name, t] : llama->named_parameters()) {
    const std::string layer =
        name.substr(0, name.find(".self_attn") == std::string::npos ? name.find(".mlp")
                                                                    : name.find(".self_attn"));
    Tensor source;
    if (name.ends_with("q_proj.weight")) {
      source = param(*phi3, layer + ".self_attn.qkv_proj.weight").narrow(0, 0, 64);
    } else if (name.ends_with("k_proj.weight")) {
      source = param(*phi3, layer + ".self_attn.qkv_proj.weight").narrow(0, 64, 32);
    } else if (name.ends_with("v_proj.weight")) {
      source = param(*phi3, layer + ".self_attn.qkv_proj.weight").narrow(0, 96, 32);
    } else if (name.ends_with("gate_proj.weight")) {
      source = param(*phi3, layer + ".mlp.gate_up_proj.weight").narrow(0, 0, 96);
    } else if (name.ends_with("up_proj.weight")) {
      source = param(*phi3, layer + ".mlp.gate_up_proj.weight").narrow(0, 96, 96);
    } else {
      source = param(*phi3, name);
    }
    t.copy_(source);
  }
  const Tensor prompt = ids({3, 77, 12, 90, 5, 41, 8, 120, 64, 2});
  const Tensor ours = phi3->run(prompt).logits;
  const Tensor reference = llama->run(prompt).logits;
  EXPECT_LE(max_abs_diff(ours, reference), 1e-5 * max_abs(reference));
  models::GenerationOptions options;
  options.max_new_tokens = 8;
  EXPECT_EQ(models::generate_greedy(*phi3, prompt, options).tokens.to_vector<std::int64_t>(),
            models::generate_greedy(*llama, prompt, options).tokens.to_vector<std::int64_t>());
}

TEST(PartialRotary, RotatesTheFirstDimensionsAndCopiesTheRest) {
  // 8-dim heads, the first 4 rotate (2 frequencies): out[i] = x[i] cos - x[i + 2] sin,
  // out[i + 2] = x[i + 2] cos + x[i] sin for i < 2; out[4..8) = x[4..8).
  const models::RopeFrequencies f{{1.0f, 0.01f}, 1.0f};
  const auto [cos, sin] = models::rope_tables(f, 5, 3);  // positions 5, 6, 7
  const Tensor x = random_tensor({1, 2, 3, 8}, DType::Float32, 7);
  const Tensor out = models::detail::apply_rotary(x, cos, sin);
  ASSERT_EQ(out.shape(), x.shape());
  for (std::int64_t h = 0; h < 2; ++h) {
    for (std::int64_t s = 0; s < 3; ++s) {
      for (std::int64_t i = 0; i < 2; ++i) {
        const double angle = static_cast<double>(5 + s) * f.inv_freq[static_cast<std::size_t>(i)];
        const double a = x.at<float>({0, h, s, i}), b = x.at<float>({0, h, s, i + 2});
        EXPECT_NEAR(out.at<float>({0, h, s, i}), a * std::cos(angle) - b * std::sin(angle), 1e-5);
        EXPECT_NEAR(out.at<float>({0, h, s, i + 2}), b * std::cos(angle) + a * std::sin(angle),
                    1e-5);
      }
      for (std::int64_t i = 4; i < 8; ++i) {
        EXPECT_EQ(out.at<float>({0, h, s, i}), x.at<float>({0, h, s, i}));
      }
    }
  }
}

TEST(SmolLM3NoPE, NoPELayersCannotTellTheOrderOfEarlierTokens) {
  const auto last_logits = [](models::CausalLM& m, std::vector<std::int64_t> tokens) {
    return m.run(ids(std::move(tokens)), nullptr, 1).logits;
  };
  // One layer (with two, the first layer's outputs at earlier positions already differ).
  std::string sizes = kSizes;
  sizes.replace(sizes.find("\"num_hidden_layers\": 2"), 22, "\"num_hidden_layers\": 1");
  auto nope = build(R"({"model_type": "smollm3", "no_rope_layers": [0], )" + sizes + "}");
  randomize(*nope, 11);
  const Tensor a = last_logits(*nope, {9, 40, 71, 100, 33});
  const Tensor b = last_logits(*nope, {71, 9, 100, 40, 33});  // same earlier tokens, reordered
  EXPECT_LE(max_abs_diff(a, b), 1e-5 * max_abs(a));
  // One RoPE layer: the order shows.
  auto rope = build(R"({"model_type": "smollm3", "no_rope_layers": [1], )" + sizes + "}");
  randomize(*rope, 11);
  EXPECT_GT(max_abs_diff(last_logits(*rope, {9, 40, 71, 100, 33}),
                         last_logits(*rope, {71, 9, 100, 40, 33})),
            1e-3 * max_abs(a));
}

}  // namespace
}  // namespace strata::testing
