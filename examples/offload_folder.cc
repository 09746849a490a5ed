// Run a model with some of its layers on disk: load_checkpoint_and_dispatch with an offload
// folder, then greedy decoding.
//
// The device map sends the last two decoder layers to "disk": their weights are written once to
// the offload folder (Accelerate's format: one .dat file per tensor and an index.json) and read
// back for each forward of that layer, while the rest stays in memory. The model runs in bfloat16
// here, so the float32 checkpoint is cast once while loading; without a cast, disk weights of a
// safetensors checkpoint are read from the checkpoint itself and the folder holds only
// index.json. On a GPU machine the same map with 0 instead of "cpu" runs those layers on the GPU.
//
// Usage: offload_folder [MODEL_DIR] [OFFLOAD_DIR]
//   (defaults: the built-in model of the installed package, a folder under the temp directory)

#include <fmt/format.h>
#include <strata/big_modeling.h>
#include <strata/io/model_config.h>
#include <strata/models/models.h>
#include <strata/placement/load_and_dispatch.h>

#include <filesystem>
#include <iostream>

namespace fs = std::filesystem;
namespace placement = strata::placement;
using strata::Tensor;

int main(int argc, char** argv) {
  const fs::path model_dir = argc > 1 ? argv[1] : STRATA_EXAMPLE_MODEL_DIR;
  const fs::path offload_dir =
      argc > 2 ? fs::path(argv[2]) : fs::temp_directory_path() / "strata-offload-example";
  try {
    // 1. The model on meta, as the config describes it (no weights allocated yet).
    const strata::io::ModelConfig config = strata::io::read_model_config(model_dir / "config.json");
    std::shared_ptr<strata::models::CausalLM> model;
    {
      auto empty = strata::init_empty_weights();
      model = strata::models::build_causal_lm(config, strata::DType::BFloat16);
    }

    // 2. Load the checkpoint straight onto an explicit map; the longest matching prefix wins.
    const std::int64_t layers = model->config().num_layers;
    placement::DeviceMap map = {{"model.embed_tokens", "cpu"},
                                {"model.norm", "cpu"},
                                {"model.rotary_emb", "cpu"},
                                {"lm_head", "cpu"}};
    for (std::int64_t i = 0; i < layers; ++i) {
      map.emplace_back(fmt::format("model.layers.{}", i), i < layers - 2 ? "cpu" : "disk");
    }
    placement::LoadAndDispatchOptions options;
    options.device_map = map;
    options.offload_folder = offload_dir;
    options.dtype = strata::DType::BFloat16;
    const placement::LoadAndDispatchResult loaded =
        placement::load_checkpoint_and_dispatch(*model, model_dir, options);
    std::cout << "device map: " << placement::device_map_str(loaded.dispatch->device_map) << "\n";
    std::cout << "weights per destination:";
    for (const auto& [destination, bytes] : loaded.load.summary.bytes_per_destination) {
      std::cout << " " << destination << "=" << bytes;
    }
    int dat_files = 0;
    for (const auto& entry : fs::directory_iterator(offload_dir)) {
      dat_files += entry.path().extension() == ".dat" ? 1 : 0;
    }
    std::cout << "\noffload folder: index.json "
              << (fs::exists(offload_dir / "index.json") ? "yes" : "no") << ", " << dat_files
              << " .dat files\n";

    // 3. Greedy decoding from the beginning-of-text token (id 1 for this model).
    const Tensor prompt = Tensor::from_vector<std::int64_t>({1}, {1, 1});
    strata::models::GenerationOptions generation;
    generation.max_new_tokens = 24;
    const auto result = strata::models::generate_greedy(*model, prompt, generation);
    std::cout << fmt::format("tokens: {}\n",
                             fmt::join(result.tokens.to_vector<std::int64_t>(), ","));
    return 0;
  } catch (const strata::Error& e) {
    std::cerr << "offload_folder: " << e.what() << "\n";
    return 1;
  }
}
