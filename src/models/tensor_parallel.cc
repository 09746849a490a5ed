// Tensor parallelism for the decoder family: the split of each tensor and the two parallel
// linear layers (docs/distributed.md).

#include "strata/models/tensor_parallel.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <vector>

#include "strata/core/error.h"
#include "strata/ops.h"

namespace strata::models {
namespace {

// The heads (query and key/value) one rank holds.
struct HeadSplit {
  ShardRange q, kv;
};

HeadSplit head_split(const TransformerConfig& c, int rank, int size) {
  HeadSplit split;
  split.q = shard_range(c.num_heads, rank, size);
  if (c.num_kv_heads % size == 0) {
    split.kv = shard_range(c.num_kv_heads, rank, size);
  } else {  // fewer KV heads than ranks: size / kv_heads consecutive ranks share one
    split.kv = {rank / (size / c.num_kv_heads), 1};
  }
  return split;
}

// Why `size` ranks cannot split `c`, or empty when they can.
std::string split_problem(const TransformerConfig& c, int size) {
  if (c.num_heads % size != 0) {
    return fmt::format("num_attention_heads {} does not divide by {} ranks", c.num_heads, size);
  }
  if (c.num_kv_heads % size != 0 && size % c.num_kv_heads != 0) {
    return fmt::format(
        "num_key_value_heads {} neither divides by {} ranks nor divides {} (to share each KV head "
        "between ranks)",
        c.num_kv_heads, size, size);
  }
  if (c.intermediate_size % size != 0) {
    return fmt::format("intermediate_size {} does not divide by {} ranks", c.intermediate_size,
                       size);
  }
  if (c.vocab_size < size) {
    return fmt::format("vocab_size {} is smaller than {} ranks", c.vocab_size, size);
  }
  return {};
}

ShardRange scaled(ShardRange heads, std::int64_t head_dim) {
  return {heads.start * head_dim, heads.length * head_dim};
}

void add(io::TensorShards& shards, const std::string& name, std::int64_t dim, ShardRange range,
         std::string source = {}) {
  shards.emplace(name, io::TensorShard{dim, range.start, range.length, std::move(source)});
}

}  // namespace

TensorParallel TensorParallel::over(std::shared_ptr<dist::Communicator> comm) {
  STRATA_CHECK_ARG(comm != nullptr, "TensorParallel::over: the communicator is null");
  TensorParallel tp;
  tp.rank = comm->rank();
  tp.size = comm->size();
  tp.comm = std::move(comm);
  return tp;
}

ShardRange shard_range(std::int64_t n, int rank, int size) {
  STRATA_ASSERT(size >= 1 && rank >= 0 && rank < size, "shard_range: rank {} of {}", rank, size);
  const std::int64_t base = n / size, extra = n % size;
  return {rank * base + std::min<std::int64_t>(rank, extra), base + (rank < extra ? 1 : 0)};
}

void check_tensor_parallel(const TransformerConfig& c, int size) {
  STRATA_CHECK_ARG(size >= 1, "--tensor-parallel {}: it must be at least 1", size);
  if (size == 1) return;
  STRATA_CHECK(c.architecture != Architecture::GPT2 && c.architecture != Architecture::OPT &&
                   c.architecture != Architecture::Gemma2 &&
                   c.architecture != Architecture::Gemma3Text &&
                   c.architecture != Architecture::GptOss,
               NotSupported,
               "{}: tensor parallelism covers the decoder family (llama, mistral, qwen2, qwen3, "
               "mixtral), not model_type '{}'; run it with --tensor-parallel 1 (a device map "
               "still spreads it over several GPUs)",
               c.source, c.model_type);
  STRATA_CHECK(!c.quantization.has_value(), NotSupported,
               "{}: tensor parallelism of quantized checkpoints is not implemented; run it with "
               "--tensor-parallel 1",
               c.source);
  STRATA_CHECK(c.architecture != Architecture::Qwen2Moe && c.architecture != Architecture::Qwen3Moe,
               NotSupported,
               "{}: tensor parallelism of {} (dense and sparse layers mixed, shared experts) is "
               "not implemented; run it with --tensor-parallel 1 and a device map",
               c.source, c.model_type);
  // Phi-3's fused qkv_proj / gate_up_proj would need their stacked parts split separately, and
  // OLMo 2's q/k norms span every head (transformers replicates those projections).
  STRATA_CHECK(c.architecture != Architecture::Phi3 && c.architecture != Architecture::Olmo2,
               NotSupported,
               "{}: tensor parallelism of {} ({}) is not implemented; run it with "
               "--tensor-parallel 1 and a device map",
               c.source, c.model_type,
               c.architecture == Architecture::Phi3 ? "fused qkv_proj and gate_up_proj"
                                                    : "q/k norms over all heads");
  // Only the families whose modules take the split (decoder.cc, moe.cc) and whose parity is
  // tested: a family added later is refused until it is sharded too.
  const Architecture a = c.architecture;
  STRATA_CHECK(a == Architecture::Llama || a == Architecture::Mistral || a == Architecture::Qwen2 ||
                   a == Architecture::Qwen3 || a == Architecture::Mixtral,
               NotSupported,
               "{}: tensor parallelism covers llama, mistral, qwen2, qwen3 and mixtral, not "
               "model_type '{}'; run it with --tensor-parallel 1 and a device map",
               c.source, c.model_type);
  const std::string problem = split_problem(c, size);
  if (problem.empty()) return;
  std::vector<int> sizes;
  for (int n = 1; n <= c.num_heads; ++n) {
    if (split_problem(c, n).empty()) sizes.push_back(n);
  }
  STRATA_THROW(InvalidArgument,
               "{}: the model cannot be split over {} tensor-parallel ranks: {}; use "
               "--tensor-parallel {}",
               c.source, size, problem, fmt::join(sizes, " or "));
}

TransformerConfig rank_config(const TransformerConfig& config, int size) {
  check_tensor_parallel(config, size);
  TransformerConfig local = config;
  const HeadSplit split = head_split(config, 0, size);
  local.num_heads = split.q.length;
  local.num_kv_heads = split.kv.length;
  local.intermediate_size = config.intermediate_size / size;
  local.moe_intermediate_size = config.moe_intermediate_size / size;  // Mixtral's experts
  return local;
}

io::TensorShards tensor_parallel_shards(const TransformerConfig& c, const TensorParallel& tp) {
  io::TensorShards shards;
  if (!tp.active()) return shards;
  check_tensor_parallel(c, tp.size);
  const HeadSplit heads = head_split(c, tp.rank, tp.size);
  const ShardRange q = scaled(heads.q, c.head_dim), kv = scaled(heads.kv, c.head_dim);
  const ShardRange inner = shard_range(c.intermediate_size, tp.rank, tp.size);
  for (std::int64_t i = 0; i < c.num_layers; ++i) {
    const std::string attn = fmt::format("model.layers.{}.self_attn.", i);
    for (const char* kind : {"weight", "bias"}) {
      add(shards, attn + "q_proj." + kind, 0, q);
      add(shards, attn + "k_proj." + kind, 0, kv);
      add(shards, attn + "v_proj." + kind, 0, kv);
    }
    add(shards, attn + "o_proj.weight", 1, q);
    if (c.num_experts > 0) {
      for (std::int64_t e = 0; e < c.num_experts; ++e) {
        const std::string expert =
            fmt::format("model.layers.{}.block_sparse_moe.experts.{}.", i, e);
        add(shards, expert + "w1.weight", 0, inner);
        add(shards, expert + "w3.weight", 0, inner);
        add(shards, expert + "w2.weight", 1, inner);
      }
    } else {
      const std::string mlp = fmt::format("model.layers.{}.mlp.", i);
      for (const char* kind : {"weight", "bias"}) {
        add(shards, mlp + "gate_proj." + kind, 0, inner);
        add(shards, mlp + "up_proj." + kind, 0, inner);
      }
      add(shards, mlp + "down_proj.weight", 1, inner);
    }
  }
  add(shards, "lm_head.weight", 0, shard_range(c.vocab_size, tp.rank, tp.size),
      c.tie_word_embeddings ? "model.embed_tokens.weight" : "");
  return shards;
}

namespace detail {
dist::Communicator& forward_communicator(const TensorParallel& tp, const char* who) {
  STRATA_CHECK_ARG(tp.comm != nullptr,
                   "{}: this model was built for planning {} tensor-parallel ranks without a "
                   "communicator; build it with TensorParallel::over(communicator) to run it",
                   who, tp.size);
  return *tp.comm;
}
}  // namespace detail

RowParallelLinear::RowParallelLinear(std::int64_t local_in_features, std::int64_t out_features,
                                     bool bias, DType dtype, TensorParallel tp)
    : nn::Linear(local_in_features, out_features, bias, dtype), tp_(std::move(tp)) {}

Value RowParallelLinear::forward(Args& args) {
  const Tensor& x = args.tensor(0, "RowParallelLinear.forward");
  dist::Communicator& comm = detail::forward_communicator(tp_, "RowParallelLinear.forward");
  Tensor partial = ops::linear(x, weight()).contiguous();
  comm.all_reduce_sum(partial);
  // The bias is replicated: added once, after the sum.
  return has_bias() ? ops::add(partial, parameter("bias")) : partial;
}

VocabParallelHead::VocabParallelHead(std::int64_t in_features, std::int64_t vocab_size, DType dtype,
                                     TensorParallel tp)
    : nn::Linear(in_features, shard_range(vocab_size, tp.rank, tp.size).length, false, dtype),
      vocab_size_(vocab_size),
      tp_(std::move(tp)) {}

Value VocabParallelHead::forward(Args& args) {
  const Tensor& x = args.tensor(0, "VocabParallelHead.forward");
  dist::Communicator& comm = detail::forward_communicator(tp_, "VocabParallelHead.forward");
  const Tensor local = ops::linear(x, weight());
  const std::int64_t mine = local.size(-1), rows = local.numel() / std::max<std::int64_t>(mine, 1);
  // Every rank sends the same shape: the largest shard (rank 0's), padded.
  const std::int64_t widest = shard_range(vocab_size_, 0, tp_.size).length;
  Tensor padded = Tensor::zeros({rows, widest}, local.dtype(), local.device());
  padded.narrow(1, 0, mine).copy_(local.reshape({rows, mine}));
  const Tensor all = comm.all_gather(padded);  // [ranks, rows, widest]
  Tensor logits = Tensor::empty({rows, vocab_size_}, local.dtype(), local.device());
  for (int r = 0; r < tp_.size; ++r) {
    const ShardRange range = shard_range(vocab_size_, r, tp_.size);
    logits.narrow(1, range.start, range.length)
        .copy_(all.narrow(0, r, 1).view({rows, widest}).narrow(1, 0, range.length));
  }
  Shape shape = x.shape();
  shape.back() = vocab_size_;
  return logits.view(shape);
}

}  // namespace strata::models
