#pragma once
// Helpers shared by the `strata` subcommands: parsing what users type (budgets, lists, token ids,
// device-map files) and building a model from a checkpoint folder without weights.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/core/dtype.h"
#include "strata/models/causal_lm.h"
#include "strata/models/config.h"
#include "strata/models/tensor_parallel.h"
#include "strata/placement/auto_device_map.h"
#include "strata/placement/map_device.h"
#include "strata/placement/memory.h"

namespace strata::cli {

// "cuda:0=10GiB,cpu=30GiB" (devices as device maps spell them: 0, cuda:N, cpu, disk; sizes as
// parse_memory_size reads them, or a plain integer byte count: "0=1347683123,cpu=0"). Throws
// InvalidArgument naming the bad entry.
placement::MaxMemory parse_max_memory(std::string_view text);

// --experts (auto: routed experts planned after the rest, on a GPU where room is left; cpu: never
// on a GPU) and --n-cpu-moe N (the first N MoE blocks' experts off the GPUs, llama.cpp's
// option). Neither given: nullopt (the reference's module-order planning). A bad value or a
// negative count is InvalidArgument naming the option.
std::optional<placement::ExpertPlacement> parse_expert_placement(
    const std::optional<std::string>& experts, const std::optional<std::int64_t>& n_cpu_moe);

// "a, b,c" -> {"a", "b", "c"}; empty items are InvalidArgument naming `what`.
std::vector<std::string> split_list(std::string_view text, std::string_view what);

// "1,2,3" -> {1, 2, 3}: non-negative integers. Throws InvalidArgument naming the bad item.
std::vector<std::int64_t> parse_token_ids(std::string_view text);

// A device map written as JSON, {"model.layers.0": 0, "lm_head": "cpu", ...} (Accelerate's
// hf_device_map). Throws IoError for an unreadable file, InvalidArgument for bad content.
placement::DeviceMap read_device_map_file(const std::filesystem::path& path);

// Writes `map` in the form read_device_map_file reads, in map order: GPUs as integers, the other
// devices as names. Throws IoError when the file cannot be written.
void write_device_map_file(const std::filesystem::path& path, const placement::DeviceMap& map);

// The whole of a file the user named (`what` says which option, for the message). Throws IoError
// naming the file when it cannot be read.
std::string read_user_file(const std::filesystem::path& path, std::string_view what);

// A model built from MODEL_DIR/config.json under init_empty_weights: every weight on meta.
struct EmptyModel {
  models::TransformerConfig config;
  std::shared_ptr<models::CausalLM> model;
  DType dtype = DType::Float32;
};

// `dtype_text` unset: the checkpoint's torch_dtype, else float32. Throws InvalidArgument for a
// missing folder, as parse_transformer_config for a bad config. With an active `tp`, the rank's
// part of the model (models/tensor_parallel.h); `config` stays the whole model's.
EmptyModel build_empty_model(const std::filesystem::path& model_dir,
                             const std::optional<std::string>& dtype_text,
                             const models::TensorParallel& tp = {});

// Classes never split over devices: `text` ("A,B") when given ("" for none: any module may be
// split), else the model's decoder block.
std::vector<std::string> no_split_classes(const models::CausalLM& model,
                                          const std::optional<std::string>& text);

}  // namespace strata::cli
