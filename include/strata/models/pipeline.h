#pragma once
// Pipelined micro-batches over a model's stages (docs/distributed.md, "Pipelined execution of
// device maps"; issue 20): a batch of rows is cut into micro-batches, and micro-batch m runs
// stage g (a run of consecutive decoder layers, the embedding with the first stage, the final
// norm and the head with the last) while micro-batch m + 1 runs stage g - 1: GPipe's schedule
// for inference (no backward pass, so no bubble after the fill of G - 1 steps).
//
// Each stage runs on a host thread of its own; activations move to the next stage through a
// bounded queue (depth 2). A micro-batch is a row range with its own KVCache (the caller keeps
// one per micro-batch across decode steps; gather_cache_rows joins rows of caches), its rows of
// the attention mask and so its own positions. The numbers are those of the whole batch run at
// once (each row's computation does not depend on the others').
//
// Only the BaseModel families (decoder family, Gemma, gpt-oss) are staged. A stage calls its
// modules through their operator(), so dispatch and offload hooks run on the stage's thread.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/models/causal_lm.h"
#include "strata/models/kv_cache.h"
#include "strata/placement/map_device.h"

namespace strata::models {

// Decoder layers [first_layer, end_layer) of the base model.
struct PipelineStage {
  std::int64_t first_layer = 0;
  std::int64_t end_layer = 0;
  friend bool operator==(const PipelineStage&, const PipelineStage&) = default;
};

// The stages of a device map: maximal runs of consecutive layers ("<prefix>.layers.N", prefix the
// model's base_model_prefix) that the map puts on the same device. `num_layers` layers; a layer
// the map does not cover is InvalidArgument naming it.
std::vector<PipelineStage> pipeline_stages(const placement::DeviceMap& map,
                                           const std::string& base_model_prefix,
                                           std::int64_t num_layers);

struct PipelineOptions {
  std::int64_t micro_batches = 1;   // row ranges of (almost) equal size, at most the batch size
  std::int64_t logits_to_keep = 0;  // as CausalLM's keyword (0 = all positions)
  // 0/1 [batch, past + seq] as CausalLM's keyword; each micro-batch gets its rows.
  std::optional<Tensor> attention_mask;
  // One per micro-batch (read and extended), or empty: no cache.
  std::vector<std::shared_ptr<KVCache>> caches;
};

// Runs `model` (a BaseModel family) over `input_ids` [batch, seq] in `stages` (consecutive,
// covering every layer once) with options.micro_batches micro-batches; returns the logits
// [batch, kept, vocab] of the whole batch, rows in order. Errors (InvalidArgument): another
// model family, stages that do not tile the layers, micro_batches outside [1, batch], a cache
// count other than micro_batches; an error inside a stage stops every stage and is rethrown here.
Tensor run_pipelined(CausalLM& model, const std::vector<PipelineStage>& stages,
                     const Tensor& input_ids, const PipelineOptions& options = {});

}  // namespace strata::models
