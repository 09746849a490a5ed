// Plan a device map: where every module of a model would go, given memory budgets per device.
//
// Planning needs only the module tree: the model is built on the meta device (shapes and dtypes,
// no bytes), so a 70B model plans in milliseconds, and GPUs this machine lacks can be planned
// for all the same (a plan made here can be used on the GPU machine). This is Accelerate's
// infer_auto_device_map with device_map="sequential"; "auto" / "balanced" first spread the
// budgets evenly over the GPUs.
//
// Usage: plan_device_map [MODEL_DIR]   (default: the built-in model of the installed package)

#include <strata/big_modeling.h>
#include <strata/io/model_config.h>
#include <strata/models/models.h>

#include <filesystem>
#include <iostream>

namespace placement = strata::placement;

int main(int argc, char** argv) {
  const std::filesystem::path model_dir = argc > 1 ? argv[1] : STRATA_EXAMPLE_MODEL_DIR;
  try {
    // 1. The model on meta: init_empty_weights is a guard, active for its scope.
    const strata::io::ModelConfig config = strata::io::read_model_config(model_dir / "config.json");
    std::shared_ptr<strata::models::CausalLM> model;
    {
      auto empty = strata::init_empty_weights();
      model = strata::models::build_causal_lm(config, strata::DType::Float32);
    }

    // 2. Budgets: two GPUs, some CPU RAM, and disk for whatever is left. Decoder layers are never
    //    split across devices (the model's no_split_module_classes, as in transformers).
    placement::InferOptions options;
    options.max_memory =
        placement::MaxMemory{{0, "500KiB"}, {1, "400KiB"}, {"cpu", "300KiB"}, {"disk", "1GiB"}};
    options.no_split_module_classes = model->no_split_module_classes();
    const placement::DevicePlan plan =
        placement::plan_device_map(*model, placement::DeviceMapStrategy::Sequential, options);

    // 3. The decisions with their reasons, the map itself, and the bytes booked per device.
    std::cout << placement::explain_table(plan) << "\n";
    std::cout << "device map: " << placement::device_map_str(plan.device_map) << "\n";
    for (const auto& [device, bytes] : plan.used) {
      std::cout << "  " << device.str() << ": " << placement::format_bytes(bytes) << " of "
                << placement::format_bytes(plan.max_memory.at(device)) << "\n";
    }
    return 0;
  } catch (const strata::Error& e) {
    std::cerr << "plan_device_map: " << e.what() << "\n";
    return 1;
  }
}
