#include "cli_options.h"

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "strata/core/error.h"
#include "strata/io/atomic_file.h"
#include "strata/io/model_config.h"
#include "strata/nn/init.h"

namespace strata::cli {
namespace {

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t");
  return text.substr(first, last - first + 1);
}

// A plain integer is a byte count (what Accelerate's max_memory holds as a Python int); anything
// else is a size with a unit.
std::int64_t parse_budget(const std::string& text) {
  std::int64_t bytes = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), bytes);
  if (text.empty() || end != text.data() + text.size()) return placement::parse_memory_size(text);
  STRATA_CHECK_ARG(ec == std::errc(), "invalid memory size '{}': does not fit in 64 bits", text);
  STRATA_CHECK_ARG(bytes >= 0, "invalid memory size '{}': a budget cannot be negative", text);
  return bytes;
}

}  // namespace

std::vector<std::string> split_list(std::string_view text, std::string_view what) {
  std::vector<std::string> items;
  std::size_t begin = 0;
  while (true) {
    const std::size_t comma = text.find(',', begin);
    const std::string_view item =
        trim(text.substr(begin, comma == std::string_view::npos ? comma : comma - begin));
    STRATA_CHECK_ARG(!item.empty(), "{}: empty item in '{}' (expected a comma-separated list)",
                     what, text);
    items.emplace_back(item);
    if (comma == std::string_view::npos) return items;
    begin = comma + 1;
  }
}

placement::MaxMemory parse_max_memory(std::string_view text) {
  std::vector<placement::MaxMemory::Entry> entries;
  for (const std::string& item : split_list(text, "--max-memory")) {
    const std::size_t eq = item.find('=');
    STRATA_CHECK_ARG(eq != std::string::npos,
                     "--max-memory: '{}' is not DEVICE=SIZE (e.g. cuda:0=10GiB,cpu=30GiB)", item);
    const std::string device_text(trim(std::string_view(item).substr(0, eq)));
    const std::string size_text(trim(std::string_view(item).substr(eq + 1)));
    // MapDevice and parse_memory_size name what they accept; prefix the option for context.
    try {
      const placement::MapDevice device(device_text);
      entries.emplace_back(device, parse_budget(size_text));
    } catch (const InvalidArgument& e) {
      STRATA_THROW(InvalidArgument, "--max-memory: '{}': {}", item, e.what());
    }
  }
  // The MaxMemory constructor refuses a device given twice.
  return placement::MaxMemory(std::move(entries));
}

std::vector<std::int64_t> parse_token_ids(std::string_view text) {
  std::vector<std::int64_t> ids;
  for (const std::string& item : split_list(text, "--token-ids")) {
    std::int64_t id = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
    STRATA_CHECK_ARG(ec == std::errc() && end == item.data() + item.size() && id >= 0,
                     "--token-ids: '{}' is not a non-negative integer token id", item);
    ids.push_back(id);
  }
  return ids;
}

std::optional<placement::ExpertPlacement> parse_expert_placement(
    const std::optional<std::string>& experts, const std::optional<std::int64_t>& n_cpu_moe) {
  if (!experts && !n_cpu_moe) return std::nullopt;
  placement::ExpertPlacement out;
  if (experts) {
    STRATA_CHECK_ARG(*experts == "auto" || *experts == "cpu",
                     "--experts {}: choose auto (routed experts placed after the rest of the "
                     "model, on a GPU where room is left) or cpu (never on a GPU)",
                     *experts);
    out.keep_off_gpu = *experts == "cpu";
  }
  if (n_cpu_moe) {
    STRATA_CHECK_ARG(*n_cpu_moe >= 0, "--n-cpu-moe {}: must not be negative", *n_cpu_moe);
    out.n_cpu_moe = *n_cpu_moe;
  }
  return out;
}

placement::DeviceMap read_device_map_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  STRATA_CHECK(in.good(), IoError, "cannot read device map file {}", path.string());
  std::stringstream text;
  text << in.rdbuf();
  const auto json = nlohmann::ordered_json::parse(text.str(), nullptr,
                                                  /*allow_exceptions=*/false);
  STRATA_CHECK_ARG(json.is_object(),
                   "device map file {}: expected a JSON object {{\"module\": device, ...}}",
                   path.string());
  placement::DeviceMap map;
  for (const auto& [name, value] : json.items()) {
    try {
      if (value.is_number_integer()) {
        map.emplace_back(name, placement::MapDevice(value.get<int>()));
      } else if (value.is_string()) {
        map.emplace_back(name, placement::MapDevice(value.get<std::string>()));
      } else {
        STRATA_THROW(InvalidArgument, "expected a GPU index or \"cpu\", \"disk\", \"cuda:N\"");
      }
    } catch (const InvalidArgument& e) {
      STRATA_THROW(InvalidArgument, "device map file {}: entry '{}': {}", path.string(), name,
                   e.what());
    }
  }
  STRATA_CHECK_ARG(!map.empty(), "device map file {} is empty", path.string());
  return map;
}

void write_device_map_file(const std::filesystem::path& path, const placement::DeviceMap& map) {
  nlohmann::ordered_json json = nlohmann::ordered_json::object();
  for (const auto& [name, device] : map) {
    if (device.is_gpu()) {
      json[name] = device.index();
    } else {
      json[name] = device.str();
    }
  }
  // Atomically: an interrupted write never leaves a half map that a later `run` reads.
  const std::string text = json.dump(2) + "\n";
  io::write_file_atomically(path, text.data(), text.size());
}

std::string read_user_file(const std::filesystem::path& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK(in.good(), IoError, "{} {}: cannot open it ({})", what, path.string(),
               std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  STRATA_CHECK(!in.bad(), IoError, "{} {}: read failed", what, path.string());
  return std::move(text).str();
}

EmptyModel build_empty_model(const std::filesystem::path& model_dir,
                             const std::optional<std::string>& dtype_text,
                             const models::TensorParallel& tp) {
  STRATA_CHECK_ARG(std::filesystem::is_directory(model_dir),
                   "model folder {} does not exist (expected a folder with config.json and "
                   "*.safetensors)",
                   model_dir.string());
  STRATA_CHECK_ARG(std::filesystem::is_regular_file(model_dir / "config.json"),
                   "{} has no config.json", model_dir.string());
  const io::ModelConfig raw = io::read_model_config(model_dir / "config.json");
  EmptyModel out;
  out.config = models::parse_transformer_config(raw);
  out.dtype = dtype_text ? parse_dtype(*dtype_text) : raw.torch_dtype.value_or(DType::Float32);
  STRATA_CHECK_ARG(is_floating_point(out.dtype), "--dtype {}: models run in a floating-point dtype",
                   out.dtype);
  auto guard = nn::init_empty_weights();
  out.model = models::build_causal_lm(out.config, out.dtype, tp);
  return out;
}

std::vector<std::string> no_split_classes(const models::CausalLM& model,
                                          const std::optional<std::string>& text) {
  if (!text) return model.no_split_module_classes();
  if (trim(*text).empty()) return {};
  return split_list(*text, "--no-split");
}

}  // namespace strata::cli
