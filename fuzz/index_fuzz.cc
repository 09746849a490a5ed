// libFuzzer target: the JSON documents Strata reads from checkpoint folders: a sharded
// checkpoint's *.index.json, an offload folder's index.json and config.json. Each must be
// accepted or refused with CheckpointError; nothing else may happen.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "strata/core/error.h"
#include "strata/io/checkpoint.h"
#include "strata/io/model_config.h"
#include "strata/io/offload.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto index = strata::io::parse_checkpoint_index(text, "fuzz.index.json");
    for (const auto& [tensor, shard] : index.weight_map) {
      if (shard.empty() || shard.front() == '/') std::abort();  // must stay in the folder
    }
  } catch (const strata::CheckpointError&) {
  }
  try {
    const auto index = strata::io::parse_offload_index(text, "fuzz/index.json");
    // What was accepted must serialise and parse back to the same thing.
    const auto again =
        strata::io::parse_offload_index(strata::io::serialize_offload_index(index), "again");
    if (again.size() != index.size()) std::abort();
  } catch (const strata::CheckpointError&) {
  }
  try {
    const auto config = strata::io::parse_model_config(text, "fuzz/config.json");
    (void)config.raw_json();
  } catch (const strata::CheckpointError&) {
  }
  return 0;
}
