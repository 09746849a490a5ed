// config.json -> TransformerConfig: transformers' defaults, and one clear typed error per bad
// field. Module trees: transformers' names and class names, so checkpoint keys and
// no_split_module_classes match.

#include <set>

#include "models/model_testing.h"
#include "ops/throws_naming.h"

namespace strata::testing {
namespace {

using models::Architecture;
using models::parse_transformer_config;
using models::TransformerConfig;

TransformerConfig parse(const std::string& json) {
  return parse_transformer_config(io::parse_model_config(json, "test/config.json"));
}

const std::string kSizes = R"("hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96,
    "vocab_size": 128)";
const std::string kLlama = R"("model_type": "llama", )" + kSizes;

TEST(ModelConfig, LlamaDefaultsAreTransformers) {
  const TransformerConfig c = parse("{" + kLlama + "}");
  EXPECT_EQ(c.architecture, Architecture::Llama);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.norm_eps, 1e-6);
  ASSERT_TRUE(c.rope.has_value());
  EXPECT_EQ(c.rope->type, "default");
  EXPECT_EQ(c.rope->theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.sliding_windows, (std::vector<std::int64_t>{0, 0}));
  EXPECT_EQ(c.no_split_module_classes(), (std::vector<std::string>{"LlamaDecoderLayer"}));
  EXPECT_EQ(c.base_model_prefix(), "model");
  // 2 layers x (k + v) x 2 kv heads x 16 dims x 2 bytes.
  EXPECT_EQ(c.kv_cache_bytes_per_token(DType::BFloat16), 2u * 2 * 2 * 16 * 2);
}

TEST(ModelConfig, PerTypeDefaults) {
  const std::string sizes = R"("hidden_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 4, "intermediate_size": 96, "vocab_size": 128)";
  const TransformerConfig mixtral = parse(R"({"model_type": "mixtral", "num_local_experts": 4,
      "num_experts_per_tok": 2, )" + sizes +
                                          "}");
  EXPECT_EQ(mixtral.norm_eps, 1e-5);
  EXPECT_EQ(mixtral.rope->theta, 1e6);
  EXPECT_EQ(mixtral.num_kv_heads, 4);  // absent: multi-head attention
  EXPECT_EQ(mixtral.sliding_windows, (std::vector<std::int64_t>{0, 0}));
  const TransformerConfig qwen3 = parse(R"({"model_type": "qwen3", )" + sizes + "}");
  EXPECT_EQ(qwen3.head_dim, 128);  // Qwen3Config's default, not hidden / heads
  EXPECT_TRUE(qwen3.qk_norm);
  const TransformerConfig qwen2 = parse(R"({"model_type": "qwen2", )" + sizes + "}");
  EXPECT_TRUE(qwen2.qkv_bias);
  EXPECT_FALSE(qwen2.o_bias);
  // Mistral: an absent sliding_window is the class default 4096, null is none.
  EXPECT_EQ(parse(R"({"model_type": "mistral", )" + sizes + "}").sliding_windows[1], 4096);
  EXPECT_EQ(parse(R"({"model_type": "mistral", "sliding_window": null, )" + sizes + "}")
                .sliding_windows[1],
            0);
  // Qwen2: use_sliding_window applies from max_window_layers on.
  const TransformerConfig windowed = parse(R"({"model_type": "qwen2", "use_sliding_window": true,
      "sliding_window": 32, "max_window_layers": 1, )" +
                                           sizes + "}");
  EXPECT_EQ(windowed.sliding_windows, (std::vector<std::int64_t>{0, 32}));
  // v5 layer_types win.
  const TransformerConfig typed = parse(R"({"model_type": "qwen3", "use_sliding_window": true,
      "sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"], )" +
                                        sizes + "}");
  EXPECT_EQ(typed.sliding_windows, (std::vector<std::int64_t>{8, 0}));
}

TEST(ModelConfig, GPT2AndOPTNames) {
  const TransformerConfig gpt2 = parse(
      R"({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 32,
          "vocab_size": 100, "n_inner": null})");
  EXPECT_EQ(gpt2.intermediate_size, 256);
  EXPECT_EQ(gpt2.activation, models::Activation::GeluTanh);
  EXPECT_TRUE(gpt2.tie_word_embeddings);
  EXPECT_FALSE(gpt2.rope.has_value());
  EXPECT_EQ(gpt2.no_split_module_classes(), (std::vector<std::string>{"GPT2Block"}));
  EXPECT_EQ(gpt2.base_model_prefix(), "transformer");
  const TransformerConfig opt = parse(
      R"({"model_type": "opt", "hidden_size": 64, "num_hidden_layers": 2, "ffn_dim": 128,
          "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 32,
          "do_layer_norm_before": false, "word_embed_proj_dim": 32})");
  EXPECT_FALSE(opt.final_layer_norm);
  EXPECT_EQ(opt.word_embed_proj_dim, 32);
  EXPECT_EQ(opt.activation, models::Activation::ReLU);
}

TEST(ModelConfig, ErrorsNameTheField) {
  EXPECT_TRUE(
      throws_naming<NotSupported>([] { parse(R"({"model_type": "bert", "hidden_size": 8})"); },
                                  {"model_type 'bert'", "llama", "mixtral", "test/config.json"}));
  EXPECT_TRUE(throws_naming<NotSupported>([] { parse(R"({"hidden_size": 8})"); }, {"<missing>"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] { parse(R"({"model_type": "llama", "num_hidden_layers": 2})"); },
      {"'hidden_size' is missing", "add it to config.json"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] {
        parse(R"({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 3, "intermediate_size": 8,
                  "vocab_size": 8})");
      },
      {"num_attention_heads 4", "num_key_value_heads 3"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] {
        parse(R"({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 5, "intermediate_size": 8, "vocab_size": 8})");
      },
      {"hidden_size 64", "num_attention_heads 5", "head_dim"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] { parse(R"({"model_type": "gpt2", "n_layer": 2, "n_head": 4, "vocab_size": 8})"); },
      {"'n_embd' is missing"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] { parse(R"({"model_type": "mixtral", )" + kSizes + "}"); }, {"num_local_experts"}));
  EXPECT_TRUE(throws_naming<NotSupported>(
      [] {
        parse("{" + kLlama + R"(, "rope_parameters": {"rope_type": "proportional",
               "rope_theta": 10000.0}})");
      },
      {"rope type 'proportional'", "longrope"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] {
        parse("{" + kLlama + R"(, "rope_parameters": {"rope_type": "longrope",
               "rope_theta": 10000.0}})");
      },
      {"'short_factor'", "8 numbers"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] {
        parse("{" + kLlama + R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}})");
      },
      {"low_freq_factor"}));
  EXPECT_TRUE(throws_naming<NotSupported>(
      [] { parse("{" + kLlama + R"(, "hidden_act": "mish"})"); }, {"hidden_act 'mish'"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] { parse("{" + kLlama + R"(, "partial_rotary_factor": 1.5})"); },
      {"partial_rotary_factor is 1.5", "(0, 1]"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] { parse("{" + kLlama + R"(, "partial_rotary_factor": 0.1})"); },
      {"partial_rotary_factor 0.1", "rotates 1 dimensions"}));
}

// Checkpoint keys, class names and no-split classes for every recorded architecture.
class ModuleTreeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ModuleTreeTest, StateDictIsTheCheckpointKeys) {
  const ModelFixture f = load_model_fixture(GetParam());
  auto model = models::build_causal_lm(f.config);
  // The keys as the loaders read them (fused expert tensors split into per-expert ones).
  const io::CheckpointReader file(model_fixture_dir(f.name) / "model.safetensors");
  std::set<std::string> in_file, in_model;
  for (const std::string& name : file.keys()) in_file.insert(name);
  for (const auto& [name, tensor] : model->state_dict()) {
    in_model.insert(name);
    if (file.contains(name)) {
      EXPECT_EQ(tensor.shape(), file.meta(name).shape) << name;
    }
  }
  // The only model key a checkpoint may leave out is the tied head.
  std::set<std::string> missing;
  for (const std::string& name : in_model) {
    if (!in_file.contains(name)) missing.insert(name);
  }
  if (model->config().tie_word_embeddings) {
    EXPECT_EQ(missing, (std::set<std::string>{"lm_head.weight"}));
  } else {
    EXPECT_TRUE(missing.empty());
  }
  for (const std::string& name : in_file) EXPECT_TRUE(in_model.contains(name)) << name;
  // Tied: one slot under both names (named_parameters lists it once).
  const bool tied = model->lm_head().parameter_slot("weight") ==
                    model->input_embeddings().parameter_slot("weight");
  EXPECT_EQ(tied, model->config().tie_word_embeddings);
}

TEST_P(ModuleTreeTest, ClassNamesAreTransformers) {
  const ModelFixture f = load_model_fixture(GetParam());
  auto model = models::build_causal_lm(f.config);
  const TransformerConfig& c = model->config();
  std::map<std::string, std::string> expected;
  switch (c.architecture) {
    case Architecture::GPT2:
      expected = {{"", "GPT2LMHeadModel"},
                  {"transformer", "GPT2Model"},
                  {"transformer.h.0", "GPT2Block"},
                  {"transformer.h.1.attn", "GPT2Attention"},
                  {"transformer.h.0.attn.c_attn", "Conv1D"},
                  {"transformer.h.0.mlp", "GPT2MLP"},
                  {"transformer.ln_f", "LayerNorm"},
                  {"lm_head", "Linear"}};
      break;
    case Architecture::OPT:
      expected = {{"", "OPTForCausalLM"},
                  {"model", "OPTModel"},
                  {"model.decoder", "OPTDecoder"},
                  {"model.decoder.embed_positions", "OPTLearnedPositionalEmbedding"},
                  {"model.decoder.layers.0", "OPTDecoderLayer"},
                  {"model.decoder.layers.0.self_attn", "OPTAttention"},
                  {"model.decoder.layers.0.fc1", "Linear"}};
      break;
    case Architecture::Gemma2:
    case Architecture::Gemma3Text: {
      const bool gemma3 = c.architecture == Architecture::Gemma3Text;
      const std::string p(models::class_prefix(c.architecture));
      expected = {{"", p + "ForCausalLM"},
                  {"model", gemma3 ? "Gemma3TextModel" : "Gemma2Model"},
                  {"model.embed_tokens", p + "TextScaledWordEmbedding"},
                  {"model.layers.0", p + "DecoderLayer"},
                  {"model.layers.0.self_attn", p + "Attention"},
                  {"model.layers.0.mlp", p + "MLP"},
                  {"model.layers.0.pre_feedforward_layernorm", p + "RMSNorm"},
                  {"model.layers.0.post_feedforward_layernorm", p + "RMSNorm"},
                  {"model.rotary_emb", p + "RotaryEmbedding"}};
      if (gemma3) expected["model.layers.0.self_attn.q_norm"] = "Gemma3RMSNorm";
      break;
    }
    default: {
      const std::string p(models::class_prefix(c.architecture));
      // OLMo 2 has no input_layernorm: its norms follow the sublayers.
      const std::string norm = c.post_norms ? "model.layers.0.post_feedforward_layernorm"
                                            : "model.layers.0.input_layernorm";
      expected = {{"", p + "ForCausalLM"},
                  {"model", p + "Model"},
                  {"model.layers.0", p + "DecoderLayer"},
                  {"model.layers.0.self_attn", p + "Attention"},
                  {norm, p + "RMSNorm"},
                  {"model.rotary_emb", p + "RotaryEmbedding"},
                  {"model.embed_tokens", "Embedding"}};
      if (c.fused_projections) {  // Phi-3
        expected["model.layers.0.self_attn.qkv_proj"] = "Linear";
        expected["model.layers.0.mlp.gate_up_proj"] = "Linear";
        expected["model.layers.0.mlp.activation_fn"] = "SiLUActivation";
      }
      if (c.architecture == Architecture::GptOss) {  // fused experts, gpt_oss_test.cc
        expected["model.layers.1.mlp"] = "GptOssMLP";
        expected["model.layers.1.mlp.router"] = "GptOssTopKRouter";
        expected["model.layers.1.mlp.experts"] =
            c.mxfp4_experts.empty() ? "GptOssExperts" : "Mxfp4GptOssExperts";
      } else if (c.architecture == Architecture::Qwen2Moe ||
                 c.architecture == Architecture::Qwen3Moe) {
        const auto sparse = static_cast<std::size_t>(
            std::find(c.sparse_layers.begin(), c.sparse_layers.end(), true) -
            c.sparse_layers.begin());
        const std::string block = fmt::format("model.layers.{}.mlp", sparse);
        expected[block] = p + "SparseMoeBlock";
        expected[block + ".gate"] = "Linear";
        expected[block + ".experts.3"] = p + "MLP";
        expected[block + ".experts.3.down_proj"] = "Linear";
        if (c.shared_expert_intermediate_size > 0) expected[block + ".shared_expert"] = p + "MLP";
        const auto dense = std::find(c.sparse_layers.begin(), c.sparse_layers.end(), false);
        if (dense != c.sparse_layers.end()) {
          expected[fmt::format("model.layers.{}.mlp", dense - c.sparse_layers.begin())] = p + "MLP";
        }
      } else if (c.deepseek) {  // deepseek_test.cc checks the attention's tree
        const bool v3 = c.architecture == Architecture::DeepseekV3;
        expected["model.layers.0.mlp"] = p + "MLP";
        expected["model.layers.1.mlp"] = v3 ? "DeepseekV3MoE" : "DeepseekV2Moe";
        expected["model.layers.1.mlp.gate"] = v3 ? "DeepseekV3TopkRouter" : "Linear";
        expected["model.layers.1.mlp.experts.3"] = p + "MLP";
        expected["model.layers.1.mlp.shared_experts"] = p + "MLP";
        expected["model.layers.1.self_attn.kv_a_layernorm"] = p + "RMSNorm";
        expected["model.layers.1.self_attn.kv_b_proj"] = c.quantization ? "FP8Linear" : "Linear";
      } else if (c.num_experts > 0) {
        expected["model.layers.1.block_sparse_moe"] = "MixtralSparseMoeBlock";
        expected["model.layers.1.block_sparse_moe.experts.3"] = "MixtralBlockSparseTop2MLP";
        expected["model.layers.1.block_sparse_moe.experts.3.w2"] = "Linear";
      } else {
        expected["model.layers.0.mlp"] = p + "MLP";
      }
    }
  }
  for (const auto& [path, class_name] : expected) {
    EXPECT_EQ(model->get_submodule(path).class_name(), class_name) << path;
  }
  // The no-split class names a real block of the tree.
  bool found = false;
  for (const auto& [name, module] : model->named_modules()) {
    found = found || module->class_name() == c.no_split_module_classes().front();
  }
  EXPECT_TRUE(found);
}

INSTANTIATE_TEST_SUITE_P(Models, ModuleTreeTest, ::testing::ValuesIn(model_fixture_names()));

}  // namespace
}  // namespace strata::testing
