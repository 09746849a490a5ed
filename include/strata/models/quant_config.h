#pragma once
// quantization_config from config.json (docs/quantization.md): which format the checkpoint's
// linear layers are stored in and which modules stay dense. It decides the linear modules the
// model builder creates (strata/models/quant_linear.h).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/io/model_config.h"
#include "strata/ops.h"

namespace strata::models {

struct QuantizationConfig {
  ops::QuantFormat format = ops::QuantFormat::FP8;
  std::string quant_method;  // as written: "fp8", "awq", "gptq", "compressed-tensors"
  int bits = 8;
  std::int64_t group_size = 0;               // inputs per scale group; 0 = one group per output row
  bool symmetric = true;                     // compressed-tensors: no weight_zero_point when true
  std::int64_t block_out = 0, block_in = 0;  // FP8 weight_block_size; 0, 0 = per tensor
  // Modules left dense: modules_to_not_convert (fp8, awq, gptq: a module is skipped when an entry
  // is a substring of its dotted name, transformers' rule) or compressed-tensors' ignore (an exact
  // name or dotted suffix, or "re:<regex>" matched from the start of the name).
  std::vector<std::string> not_converted;
  std::string source;  // config file, for messages

  // Whether the linear module at `module_path` (e.g. "model.layers.0.self_attn.q_proj") is
  // stored quantized. lm_head always stays dense (transformers keeps the output embedding).
  bool converts(std::string_view module_path) const;
};

// The quantization_config of `config`, or nullopt when there is none. Throws NotSupported naming
// the key and value for a method, bit width, group size, strategy or layout Strata does not
// implement, CheckpointError for a malformed entry.
std::optional<QuantizationConfig> parse_quantization_config(const io::ModelConfig& config);

}  // namespace strata::models
