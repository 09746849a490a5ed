// Load a checkpoint onto memory budgets and generate text, printing it as it is produced.
//
//   1. the tokenizer (tokenizer.json) and the generation settings (generation_config.json) come
//      from the model folder;
//   2. the model is built on meta, planned against the budgets ("auto" strategy: GPUs first,
//      then cpu RAM, then disk) and loaded straight onto that plan;
//   3. the engine generates token by token; each new token goes through a streaming decoder,
//      which returns the text that became final (a multi-byte character split over two tokens
//      is printed once whole).
//
// Usage: generate_text [MODEL_DIR] [PROMPT] [MAX_NEW_TOKENS]
//   (defaults: the built-in model of the installed package, no prompt: the story starts at the
//   beginning-of-text token, 64 tokens). Decoding is greedy, so the output is reproducible.

#include <strata/big_modeling.h>
#include <strata/engine/generate.h>
#include <strata/io/model_config.h>
#include <strata/models/models.h>
#include <strata/placement/load_and_dispatch.h>
#include <strata/text/generation_config.h>
#include <strata/text/tokenizer.h>

#include <filesystem>
#include <iostream>
#include <string>

namespace placement = strata::placement;

int main(int argc, char** argv) {
  const std::filesystem::path model_dir = argc > 1 ? argv[1] : STRATA_EXAMPLE_MODEL_DIR;
  const std::string prompt = argc > 2 ? argv[2] : "";
  const std::int64_t max_new_tokens = argc > 3 ? std::stoll(argv[3]) : 64;
  try {
    // 1. Tokenizer and generation settings.
    const strata::text::Tokenizer tokenizer = strata::text::Tokenizer::from_folder(model_dir);
    const strata::text::GenerationConfig generation_config =
        strata::text::read_generation_config(model_dir);

    // 2. The model on meta, then loaded onto the plan for the budgets. On a GPU machine, give
    //    the GPUs budgets too: {{0, "20GiB"}, {"cpu", "64GiB"}}.
    const strata::io::ModelConfig config = strata::io::read_model_config(model_dir / "config.json");
    std::shared_ptr<strata::models::CausalLM> model;
    {
      auto empty = strata::init_empty_weights();
      model = strata::models::build_causal_lm(config, strata::DType::Float32);
    }
    placement::LoadAndDispatchOptions options;
    options.device_map = placement::DeviceMapStrategy::Auto;
    options.max_memory = placement::MaxMemory{{"cpu", "2GiB"}};
    options.no_split_module_classes = model->no_split_module_classes();
    placement::load_checkpoint_and_dispatch(*model, model_dir, options);

    // 3. Generate, streaming. The prompt's ids start with the model's beginning-of-text token.
    strata::engine::GenerateRequest request;
    request.prompt = tokenizer.encode(prompt);
    request.params.do_sample = false;  // greedy
    strata::engine::GenerateOptions generate;
    generate.max_new_tokens = max_new_tokens;
    generate.eos_token_ids = generation_config.eos_token_ids;

    strata::text::StreamDecoder stream(tokenizer, /*skip_special_tokens=*/true);
    std::cout << prompt;
    strata::engine::generate(*model, {&request, 1}, generate,
                             [&](std::int64_t /*row*/, std::int64_t token) {
                               std::cout << stream.push(token) << std::flush;
                               return true;  // false would end the row here
                             });
    std::cout << stream.finish() << "\n";
    return 0;
  } catch (const strata::Error& e) {
    std::cerr << "generate_text: " << e.what() << "\n";
    return 1;
  }
}
