// device_map_cases <file.json>: replays recorded reference cases (format "device-map-cases/1")
// against Strata's planning and prints one line per mismatch, then "N passed, N failed".
//
// Per case:
//   - the reference answered: Strata gives the same answer (device maps compared as unordered
//     mappings; budgets in order; recorded buffer warnings word for word). If the recorded map
//     is itself not a valid plan (it misses tensors, breaks a budget or splits a tie group),
//     Strata's map must be valid instead;
//   - the reference raised on valid input (IndexError, KeyError: its bugs): Strata answers, and a
//     device map must be a valid plan (every tensor covered once, every budget kept, tie groups on
//     one device), balanced budgets no larger than the given ones;
//   - the reference rejected invalid input (ValueError): Strata throws InvalidArgument. The one
//     documented exception: Strata reads a "cuda:N" budget key as GPU N.
// Exit status: 0 when every case passes, 1 otherwise, 2 when the file cannot be read.

#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "fixture_model.h"
#include "strata/core/error.h"
#include "strata/core/logging.h"

namespace strata::device_map_cases {
namespace {

using placement::DevicePlan;
using placement::MaxMemory;
using Outcome = std::optional<std::string>;  // a mismatch, or nullopt when the case passes

// Python exceptions that mean "your input is wrong" rather than "the reference broke".
bool rejects_input(const std::string& raised) {
  return raised.starts_with("ValueError") || raised.starts_with("TypeError");
}

std::optional<MaxMemory> optional_budgets(const json& args) {
  if (!args.contains("max_memory") || args.at("max_memory").is_null()) return std::nullopt;
  return max_memory_from_json(args.at("max_memory"));
}

std::vector<std::string> class_list(const json& args) {
  if (!args.contains("no_split_module_classes")) return {};
  const json& value = args.at("no_split_module_classes");
  if (value.is_null()) return {};
  if (value.is_string()) return {value.get<std::string>()};
  return value.get<std::vector<std::string>>();
}

placement::SizeOptions size_options(const json& args) {
  placement::SizeOptions options;
  if (args.contains("dtype") && !args.at("dtype").is_null()) {
    options.dtype = parse_dtype(args.at("dtype").get<std::string>());
  }
  if (args.contains("special_dtypes") && !args.at("special_dtypes").is_null()) {
    for (const auto& [name, dtype] : args.at("special_dtypes").items()) {
      options.special_dtypes.emplace(name, parse_dtype(dtype.get<std::string>()));
    }
  }
  return options;
}

bool names_cuda_key(const json& args) {
  if (!args.contains("max_memory") || !args.at("max_memory").is_array()) return false;
  for (const json& pair : args.at("max_memory")) {
    if (pair.at(0).is_string() && pair.at(0).get<std::string>().starts_with("cuda:")) return true;
  }
  return false;
}

// A case where the reference raised. `answer` computes Strata's answer and says what is wrong
// with it. Invalid input must be rejected with InvalidArgument, except budgets keyed "cuda:N"
// (Strata's spelling of GPU N), which may be answered; after a reference bug Strata must answer.
Outcome judge_raised(const json& c, const std::function<Outcome()>& answer) {
  const std::string raised = c.at("accelerate_raised");
  const bool invalid = rejects_input(raised);
  try {
    const Outcome wrong = answer();
    if (invalid && !names_cuda_key(c.at("args"))) {
      return "accepted input the reference rejected (" + raised + ")";
    }
    return wrong;
  } catch (const InvalidArgument& e) {
    if (invalid) return std::nullopt;
    return "raised " + std::string(e.what()) + " where the reference crashed (" + raised + ")";
  }
}

class Runner {
 public:
  explicit Runner(const json& file) : file_(file) {}

  Outcome run(const json& c) {
    const std::string function = c.at("function");
    if (function == "convert_file_size_to_int") return size_case(c);
    if (function == "get_max_memory") return max_memory_case(c);
    if (function == "get_balanced_memory") return balanced_case(c);
    if (function == "infer_auto_device_map") return infer_case(c);
    return "unknown function '" + function + "'";
  }

 private:
  nn::Module& model(const json& c) {
    const std::string name = c.at("model");
    auto it = models_.find(name);
    if (it == models_.end()) {
      it = models_.emplace(name, build_model(file_.at("models").at(name))).first;
    }
    return *it->second;
  }

  Outcome size_case(const json& c) {
    const json& size = c.at("args").at("size");
    const auto compute = [&]() -> std::int64_t {
      if (size.is_string()) return placement::parse_memory_size(size.get<std::string>());
      return placement::MemoryBudget(size.get<std::int64_t>()).resolve(placement::MapDevice::cpu());
    };
    if (c.contains("accelerate_raised")) {
      return judge_raised(c, [&]() -> Outcome {
        compute();
        return std::nullopt;
      });
    }
    const auto got = compute();
    if (got == c.at("expected").get<std::int64_t>()) return std::nullopt;
    return fmt::format("expected {}, got {}", to_text(c.at("expected")), got);
  }

  Outcome max_memory_case(const json& c) {
    const json& args = c.at("args");
    const auto compute = [&] { return placement::get_max_memory(optional_budgets(args)); };
    if (c.contains("accelerate_raised")) {
      // An answer must keep every budget under the device its key names.
      return judge_raised(c, [&]() -> Outcome {
        const MaxMemory got = compute();
        for (const json& pair : args.at("max_memory")) {
          const MaxMemory one = max_memory_from_json(json::array({pair}));
          if (got.find(one.begin()->first) != one.begin()->second) {
            return "budget of " + to_text(pair.at(0)) + " lost: got " + got.str();
          }
        }
        return std::nullopt;
      });
    }
    const json got = max_memory_to_json(compute());
    if (got == c.at("expected_max_memory")) return std::nullopt;
    return fmt::format("expected {}, got {}", to_text(c.at("expected_max_memory")), to_text(got));
  }

  Outcome balanced_case(const json& c) {
    const json& args = c.at("args");
    const placement::SizeOptions sizes = size_options(args);
    const auto compute = [&] {
      return placement::get_balanced_memory(model(c), {.max_memory = optional_budgets(args),
                                                       .no_split_module_classes = class_list(args),
                                                       .dtype = sizes.dtype,
                                                       .special_dtypes = sizes.special_dtypes,
                                                       .low_zero = args.value("low_zero", false)});
    };
    if (c.contains("accelerate_raised")) {
      // An answer keeps every device and never raises a GPU budget.
      return judge_raised(c, [&]() -> Outcome {
        const MaxMemory given = placement::get_max_memory(optional_budgets(args));
        const MaxMemory got = compute();
        for (const auto& [device, bytes] : given) {
          const std::optional<std::int64_t> now = got.find(device);
          const bool ok = now && (device.is_gpu() ? *now <= bytes : *now == bytes);
          if (!ok || got.size() != given.size()) {
            return fmt::format("balanced budgets {} do not stay within {}", got.str(), given.str());
          }
        }
        return std::nullopt;
      });
    }
    const json got = max_memory_to_json(compute());
    if (got == c.at("expected_max_memory")) return std::nullopt;
    return fmt::format("expected {}, got {}", to_text(c.at("expected_max_memory")), to_text(got));
  }

  Outcome infer_case(const json& c) {
    const json& args = c.at("args");
    const placement::SizeOptions sizes = size_options(args);
    nn::Module& m = model(c);
    const auto compute = [&] {
      return placement::plan_auto_device_map(
          m, {.max_memory = optional_budgets(args),
              .no_split_module_classes = class_list(args),
              .dtype = sizes.dtype,
              .special_dtypes = sizes.special_dtypes,
              .clean_result = args.value("clean_result", true),
              .offload_buffers = args.value("offload_buffers", false),
              .fallback_allocation = args.value("fallback_allocation", false)});
    };
    const auto valid = [&](const DevicePlan& plan) -> Outcome {
      if (auto why = invalid_plan(m, plan.device_map, plan.max_memory, sizes)) {
        return "invalid map " + placement::device_map_str(plan.device_map) + ": " + *why;
      }
      return std::nullopt;
    };
    if (c.contains("accelerate_raised")) return judge_raised(c, [&] { return valid(compute()); });
    const DevicePlan plan = compute();
    const placement::DeviceMap expected = device_map_from_json(c.at("expected_device_map"));
    const MaxMemory budgets = placement::get_max_memory(optional_budgets(args));
    if (auto why = invalid_plan(m, expected, budgets, sizes)) {
      // The recorded answer is wrong itself (say, a buffer missing: B4): hold Strata to validity.
      return valid(plan);
    }
    if (!placement::same_device_map(plan.device_map, expected)) {
      return fmt::format("expected {}, got {}", placement::device_map_str(expected),
                         placement::device_map_str(plan.device_map));
    }
    // Warnings are recorded for some cases only; an absent key says nothing.
    if (!c.contains("accelerate_warnings")) return std::nullopt;
    const auto warnings = c.at("accelerate_warnings").get<std::vector<std::string>>();
    if (plan.warnings != warnings) {
      return fmt::format("expected warnings {}, got {}", json(warnings).dump(),
                         json(plan.warnings).dump());
    }
    return std::nullopt;
  }

  const json& file_;
  std::map<std::string, std::shared_ptr<nn::Module>> models_;
};

int run_file(const char* path) {
  json file;
  try {
    std::ifstream in(path);
    if (!in) {
      std::fprintf(stderr, "device_map_cases: cannot open %s\n", path);
      return 2;
    }
    file = json::parse(in);
  } catch (const json::exception& e) {
    std::fprintf(stderr, "device_map_cases: %s is not valid JSON: %s\n", path, e.what());
    return 2;
  }
  if (file.value("format", "") != "device-map-cases/1" || !file.contains("cases")) {
    std::fprintf(stderr, "device_map_cases: %s is not in the \"device-map-cases/1\" format\n",
                 path);
    return 2;
  }
  set_log_sink({});  // "GPU 1 is not available" on every case is noise here
  Runner runner(file);
  int passed = 0, failed = 0;
  for (const json& c : file.at("cases")) {
    Outcome outcome;
    try {
      outcome = runner.run(c);
    } catch (const std::exception& e) {
      outcome = std::string("raised ") + e.what();
    }
    if (outcome) {
      ++failed;
      std::printf("FAIL %s: %s\n", c.value("id", "?").c_str(), outcome->c_str());
    } else {
      ++passed;
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace strata::device_map_cases

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <cases.json>\n", argc > 0 ? argv[0] : "device_map_cases");
    return 2;
  }
  return strata::device_map_cases::run_file(argv[1]);
}
