// The decode fast path's model side (strata/models/decode_graph.h): decides whether a model can
// take the fused step, resolves its weight tensors from the module tree once, keeps the rope
// tables, and moves the KVCache's length around each replay. The kernels and the graph are the
// CUDA backend's (src/cuda/decode_graph.cc).

#include "strata/models/decode_graph.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <unordered_set>
#include <vector>

#include "strata/core/error.h"
#include "strata/core/logging.h"
#include "strata/models/decoder.h"
#include "strata/models/quant_linear.h"
#include "strata/models/rope.h"
#include "strata/nn/align_devices_hook.h"
#include "strata/nn/hooks.h"

#ifdef STRATA_WITH_CUDA
#include "cuda/decode_graph.h"
#endif

namespace strata::models {

namespace {

// True when the variable is set to 0, "off" or "false".
bool environment_off(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && (std::strcmp(value, "0") == 0 || std::strcmp(value, "off") == 0 ||
                              std::strcmp(value, "false") == 0);
}

}  // namespace

bool decode_graph_allowed_by_environment() { return !environment_off("STRATA_DECODE_GRAPH"); }

namespace {

// Why `config` is outside what the fused step computes ("" when inside).
std::string config_refusal(const TransformerConfig& c) {
  switch (c.architecture) {
    case Architecture::Llama:
    case Architecture::Mistral:
    case Architecture::Qwen2:
    case Architecture::Qwen3:
    case Architecture::SmolLM3:
      break;
    default:
      return fmt::format("the {} family has no fused decode step", class_prefix(c.architecture));
  }
  if (c.fused_projections || c.post_norms || c.qk_norm_over_projection) {
    return "fused projections, post-norms or whole-projection q/k norms";
  }
  if (c.num_experts > 0) return "a mixture of experts";
  if (c.activation != Activation::SiLU) return "an MLP activation other than SiLU";
  if (c.attn_logit_softcapping || c.final_logit_softcapping) return "logit soft-capping";
  if (!c.rope) return "no rope parameters";
  if (c.rope->type == "dynamic" || c.rope->type == "longrope") {
    return fmt::format("{} rope (its frequencies follow the sequence length)", c.rope->type);
  }
  return "";
}

// The hook attached to any module that the fused step would skip ("" when none would matter):
// an AlignDevicesHook without offload only moves inputs, which already are where it would put
// them.
bool harmless(const nn::ModelHook& hook) {
  if (const auto* seq = dynamic_cast<const nn::SequentialHook*>(&hook)) {
    return std::all_of(seq->hooks().begin(), seq->hooks().end(),
                       [](const auto& h) { return h != nullptr && harmless(*h); });
  }
  const auto* align = dynamic_cast<const nn::AlignDevicesHook*>(&hook);
  return align != nullptr && !align->offload();
}

std::string hook_refusal(CausalLM& model) {
  for (auto& [name, module] : model.named_modules()) {
    const nn::ModelHook* hook = module->hook();
    if (hook == nullptr || harmless(*hook)) continue;
    return fmt::format("the hook {} on '{}' would not run", hook->describe(),
                       name.empty() ? model.class_name() : name);
  }
  return "";
}

}  // namespace

struct DecodeGraphRunner::State {
  CausalLM* model = nullptr;
  Device device = Device::cpu();
  DType dtype = DType::Float32;
  std::int64_t layers = 0;
  RopeFrequencies frequencies;
  std::int64_t rotary_dim = 0;
  Tensor cos, sin;  // [positions, rotary_dim] on the GPU in the model dtype
#ifdef STRATA_WITH_CUDA
  std::unique_ptr<cuda::DecodeGraph> graph;
#endif
  std::vector<Tensor> keys, values;

  // The tables for positions [0, positions), rebuilt larger when the cache outgrows them.
  void ensure_tables(std::int64_t positions) {
    if (cos.defined() && cos.size(0) >= positions) return;
    auto [c, s] = rope_tables(frequencies, 0, positions);  // float32 [1, positions, dim]
    // As the rotary module hands them to the layers: in the hidden states' dtype.
    cos = c.view({positions, rotary_dim}).to(device, dtype);
    sin = s.view({positions, rotary_dim}).to(device, dtype);
  }
};

namespace {
DecodeGraphOptions options_of(bool use_graph, bool flash_decode) {
  DecodeGraphOptions o;
  o.use_graph = use_graph;
  o.flash_decode = flash_decode;
  return o;
}
}  // namespace

DecodeGraphRunner::DecodeGraphRunner(CausalLM& model, bool use_graph, bool flash_decode)
    : DecodeGraphRunner(model, options_of(use_graph, flash_decode)) {}

DecodeGraphRunner::DecodeGraphRunner(CausalLM& model, const DecodeGraphOptions& options)
    : state_(std::make_unique<State>()) {
  State& st = *state_;
  st.model = &model;
  const TransformerConfig& c = model.config();
  st.layers = c.num_layers;
  if (!decode_graph_allowed_by_environment()) {
    reason_ = "STRATA_DECODE_GRAPH=0";
  } else if (dynamic_cast<DecoderForCausalLM*>(&model) == nullptr) {
    reason_ = fmt::format("{} is not a decoder-family model", model.class_name());
  } else if (std::string why = config_refusal(c); !why.empty()) {
    reason_ = std::move(why);
  } else if (model.tensor_parallel().active()) {
    reason_ = "the model is split over ranks (tensor parallelism)";
  }
#ifndef STRATA_WITH_CUDA
  if (reason_.empty()) reason_ = "this build has no CUDA backend";
#endif
  if (reason_.empty()) {
    const Tensor& embed = model.input_embeddings().weight();
    st.device = embed.device();
    st.dtype = embed.dtype();
    if (!st.device.is_cuda()) reason_ = fmt::format("the embedding is on {}, not a GPU", st.device);
    // A quantized layer's packed tensors keep their formats' dtypes (its bias follows the model).
    std::unordered_set<std::string> packed;
    for (const auto& [name, module] : model.named_modules()) {
      if (dynamic_cast<const QuantizedLinear*>(module) == nullptr) continue;
      for (const auto& [local, t] : module->named_parameters()) {
        if (local != "bias") packed.insert(name.empty() ? local : name + "." + local);
      }
    }
    for (const auto& [name, t] : model.named_parameters()) {
      if (!reason_.empty()) break;
      if (t.device() != st.device || (t.dtype() != st.dtype && packed.count(name) == 0)) {
        reason_ = fmt::format(
            "{} is {}; every weight must be {} on {} (offloaded, split or "
            "cast placements take the module path)",
            name, t.describe(), st.dtype, st.device);
      }
    }
  }
  if (reason_.empty()) reason_ = hook_refusal(model);
#ifdef STRATA_WITH_CUDA
  if (reason_.empty()) {
    const std::string base = model.base_model_prefix();
    const auto module = [&](const std::string& path) -> nn::Module& {
      return model.get_submodule(base + "." + path);
    };
    const auto linear = [&](const std::string& path, Tensor& weight, Tensor& bias,
                            std::optional<ops::QuantizedWeight>& quant) {
      if (auto* q = dynamic_cast<QuantizedLinear*>(&module(path)); q != nullptr) {
        quant = q->quantized_weight();  // checks g_idx / weight_shape once, before any capture
        if (q->has_parameter("bias")) bias = q->parameter("bias");
        return;
      }
      auto* l = dynamic_cast<nn::Linear*>(&module(path));
      STRATA_CHECK(l != nullptr, NotSupported, "decode graph: {}.{} is not a Linear", base, path);
      weight = l->weight();
      if (l->has_bias()) bias = l->parameter("bias");
    };
    const auto norm = [&](const std::string& path) { return module(path).parameter("weight"); };
    cuda::DecodeWeights w;
    w.embed = model.input_embeddings().weight();
    w.lm_head = model.lm_head().weight();
    w.final_norm = norm("norm");
    w.q_heads = c.num_heads;
    w.kv_heads = c.num_kv_heads;
    w.head_dim = c.head_dim;
    w.rotary_dim = c.rope->dim;
    w.norm_eps = c.norm_eps;
    const char* attention = std::getenv("STRATA_DECODE_ATTENTION");
    w.flash_decode =
        options.flash_decode && (attention == nullptr || std::strcmp(attention, "own") != 0);
    w.pdl = options.pdl && !environment_off("STRATA_DECODE_PDL");
    w.fused_norm = options.fused_norm;
    if (std::getenv("STRATA_DECODE_FUSED_NORM") != nullptr) {
      w.fused_norm = !environment_off("STRATA_DECODE_FUSED_NORM");
    }
    w.l2_prefetch = options.l2_prefetch;
    w.tail_norm = options.tail_norm;
    if (std::getenv("STRATA_DECODE_TAIL_NORM") != nullptr) {
      w.tail_norm = !environment_off("STRATA_DECODE_TAIL_NORM");
    }
    w.split_k = options.split_k;
    w.split_down_only = options.split_down_only;
    if (const char* split = std::getenv("STRATA_DECODE_SPLIT_K"); split != nullptr) {
      // "S" segments, or "SxR" with R rows per warp task; anything else turns it off.
      if (std::sscanf(split, "%dx%d", &w.split_k, &w.split_rows) < 1) w.split_k = 0;
      w.split_down_only = std::strstr(split, "@down") != nullptr;  // "2x2@down": down_proj only
    }
    const auto flag = [](const char* name, bool& value) {
      if (std::getenv(name) != nullptr) value = !environment_off(name);
    };
    w.fused_rope = options.fused_rope;
    flag("STRATA_DECODE_FUSED_ROPE", w.fused_rope);
    w.flash_prefetch = options.flash_prefetch;
    flag("STRATA_DECODE_FLASH_PREFETCH", w.flash_prefetch);
    flag("STRATA_GEMV_LATE_TRIGGER", w.gemv_late_trigger);
    // "P" passes of down_proj's (o_proj's) rows fetched before its wait, or "PxB" by its first B
    // blocks.
    const auto passes_blocks = [](const char* name, int& passes, int& blocks) {
      const char* value = std::getenv(name);
      if (value != nullptr && std::sscanf(value, "%dx%d", &passes, &blocks) < 1) passes = -1;
    };
    passes_blocks("STRATA_GEMV_PREFETCH_DOWN", w.down_prefetch, w.down_prefetch_blocks);
    passes_blocks("STRATA_GEMV_PREFETCH_O", w.o_prefetch, w.o_prefetch_blocks);
    if (const char* l2 = std::getenv("STRATA_DECODE_L2"); l2 != nullptr) w.l2_prefetch = l2;
    if (const char* passes = std::getenv("STRATA_GEMV_PREFETCH"); passes != nullptr) {
      w.gemv_prefetch = std::atoi(passes);  // weight passes fetched into L2 before the wait
    }
    if (const char* preload = std::getenv("STRATA_GEMV_PRELOAD"); preload != nullptr) {
      w.gemv_preload = !environment_off("STRATA_GEMV_PRELOAD");  // first loads before the wait
    }
    if (const char* blocks = std::getenv("STRATA_GEMV_PREFETCH_BLOCKS"); blocks != nullptr) {
      w.gemv_prefetch_blocks = std::atoi(blocks);  // only the first blocks prefetch
    }
    if (const char* grid = std::getenv("STRATA_GEMV_GRID"); grid != nullptr) {
      w.gemv_grid = std::atoi(grid);  // blocks of a grid-stride GEMV (0: a warp per task)
    }
    if (const char* shape = std::getenv("STRATA_GEMV_SHAPE_RESIDUAL"); shape != nullptr) {
      if (std::sscanf(shape, "%dx%d", &w.residual_rows, &w.residual_unroll) != 2) {
        w.residual_rows = w.residual_unroll = 0;
      }
    }
    if (const char* shape = std::getenv("STRATA_GEMV_SHAPE"); shape != nullptr) {
      // "RxU" (rows per warp x loads in flight); anything else keeps the defaults.
      if (std::sscanf(shape, "%dx%d", &w.gemv_rows, &w.gemv_unroll) != 2) {
        w.gemv_rows = w.gemv_unroll = 0;
      }
    }
    try {
      for (std::int64_t i = 0; i < c.num_layers; ++i) {
        const std::string p = fmt::format("layers.{}.", i);
        cuda::DecodeLayer l;
        l.input_norm = norm(p + "input_layernorm");
        l.post_norm = norm(p + "post_attention_layernorm");
        linear(p + "self_attn.q_proj", l.q, l.q_bias, l.q_quant);
        linear(p + "self_attn.k_proj", l.k, l.k_bias, l.k_quant);
        linear(p + "self_attn.v_proj", l.v, l.v_bias, l.v_quant);
        linear(p + "self_attn.o_proj", l.o, l.o_bias, l.o_quant);
        if (c.qk_norm) {
          l.q_norm = norm(p + "self_attn.q_norm");
          l.k_norm = norm(p + "self_attn.k_norm");
        }
        linear(p + "mlp.gate_proj", l.gate, l.gate_bias, l.gate_quant);
        linear(p + "mlp.up_proj", l.up, l.up_bias, l.up_quant);
        linear(p + "mlp.down_proj", l.down, l.down_bias, l.down_quant);
        const auto layer = static_cast<std::size_t>(i);
        l.rope = c.rope_layers.empty() || c.rope_layers.at(layer);
        l.window = c.sliding_windows.at(layer);
        w.layers.push_back(std::move(l));
      }
      auto* rotary = dynamic_cast<RotaryEmbedding*>(&module("rotary_emb"));
      STRATA_CHECK(rotary != nullptr, NotSupported,
                   "decode graph: {}.rotary_emb is not a "
                   "RotaryEmbedding",
                   base);
      st.frequencies = rotary->frequencies(0);
      st.rotary_dim = static_cast<std::int64_t>(st.frequencies.inv_freq.size()) * 2;
      STRATA_CHECK(st.rotary_dim == w.rotary_dim, NotSupported,
                   "decode graph: the rotary module covers {} dimensions, the config {}",
                   st.rotary_dim, w.rotary_dim);
      st.graph = std::make_unique<cuda::DecodeGraph>(std::move(w), options.use_graph);
    } catch (const Error& e) {
      reason_ = e.what();
    }
  }
#endif
  if (!reason_.empty()) log_message(LogLevel::Debug, "decode graph off: " + reason_);
}

DecodeGraphRunner::~DecodeGraphRunner() = default;

int DecodeGraphRunner::captures() const {
#ifdef STRATA_WITH_CUDA
  if (state_->graph) return state_->graph->captures();
#endif
  return 0;
}

std::optional<Tensor> DecodeGraphRunner::step(const Tensor& input_ids, KVCache& cache) {
  if (!usable()) return std::nullopt;
#ifndef STRATA_WITH_CUDA
  (void)input_ids;
  (void)cache;
  return std::nullopt;
#else
  State& st = *state_;
  const auto refuse = [&](std::string why) -> std::optional<Tensor> {
    if (why != step_reason_) log_message(LogLevel::Debug, "decode graph step refused: " + why);
    step_reason_ = std::move(why);
    return std::nullopt;
  };
  if (input_ids.dim() != 2 || input_ids.size(1) != 1 || input_ids.size(0) < 1 ||
      input_ids.size(0) > 8 || input_ids.dtype() != DType::Int64) {
    return refuse(fmt::format("input_ids {} is not int64 [1..8, 1]", input_ids.describe()));
  }
  const std::int64_t batch = input_ids.size(0);
  if (cache.num_layers() != st.layers) return refuse("the cache belongs to another model");
  const std::int64_t past = cache.seq_length(0);
  for (std::int64_t l = 0; l < st.layers; ++l) {
    const Tensor k = cache.keys(l);
    if (!k.defined() || cache.seq_length(l) != past || k.device() != st.device ||
        k.dtype() != st.dtype || k.size(0) != batch) {
      return refuse(fmt::format("layer {} of the cache is not {} rows of {} tokens in {} on {}", l,
                                batch, past, st.dtype, st.device));
    }
  }
  const std::vector<std::int64_t> ids =
      input_ids.to(Device::cpu()).contiguous().to_vector<std::int64_t>();
  const std::int64_t vocab = st.model->input_embeddings().weight().size(0);
  for (const std::int64_t id : ids) {
    // The module path reports it as an error naming the id.
    if (id < 0 || id >= vocab)
      return refuse(fmt::format("token id {} is outside the vocabulary", id));
  }
  st.keys.resize(static_cast<std::size_t>(st.layers));
  st.values.resize(static_cast<std::size_t>(st.layers));
  for (std::int64_t l = 0; l < st.layers; ++l) {
    std::tie(st.keys[static_cast<std::size_t>(l)], st.values[static_cast<std::size_t>(l)]) =
        cache.storage_for_append(l, 1);
  }
  st.ensure_tables(st.keys[0].size(2));
  Tensor logits = st.graph->step(ids, past, st.keys, st.values, st.cos, st.sin);
  for (std::int64_t l = 0; l < st.layers; ++l) cache.commit_append(l, 1);
  step_reason_.clear();
  return logits.view({batch, 1, logits.size(1)});
#endif
}

}  // namespace strata::models
