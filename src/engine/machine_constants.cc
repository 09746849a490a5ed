// Machine constants: JSON form, hardware fingerprint and the calibration cache
// (machine_constants.h). The measurements themselves are in calibrate_measure.cc.

#include "strata/engine/machine_constants.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "strata/core/error.h"
#include "strata/core/logging.h"
#include "strata/io/atomic_file.h"

#if STRATA_WITH_CUDA
#include "strata/cuda/device.h"
#endif

namespace strata::engine {
namespace {

// The rates a file must carry, by JSON key.
struct RateField {
  const char* key;
  double MachineConstants::*member;
};
constexpr RateField kRates[] = {
    {"h2d_gbps", &MachineConstants::h2d_gbps},
    {"host_read_gbps", &MachineConstants::host_read_gbps},
    {"cpu_gemm_gflops", &MachineConstants::cpu_gemm_gflops},
    {"gpu_hbm_gbps", &MachineConstants::gpu_hbm_gbps},
    {"gpu_gemm_gflops", &MachineConstants::gpu_gemm_gflops},
    {"disk_read_gbps", &MachineConstants::disk_read_gbps},
    {"page_cache_read_gbps", &MachineConstants::page_cache_read_gbps},
    {"transfer_latency_us", &MachineConstants::transfer_latency_us},
};
// Rates added later: a file without them is still valid (they read as 0, "not measured").
constexpr RateField kOptionalRates[] = {
    {"cpu_gemv_layer_gbps", &MachineConstants::cpu_gemv_layer_gbps},
    {"cpu_op_us", &MachineConstants::cpu_op_us},
    {"gpu_launch_us", &MachineConstants::gpu_launch_us},
    {"split_cpu_gemv_gbps", &MachineConstants::split_cpu_gemv_gbps},
    {"split_h2d_gbps", &MachineConstants::split_h2d_gbps},
    {"cpu_expert_gbps", &MachineConstants::cpu_expert_gbps},
    {"moe_block_us", &MachineConstants::moe_block_us},
};

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("model name")) {
      const auto colon = line.find(':');
      if (colon == std::string::npos) break;
      const auto first = line.find_first_not_of(' ', colon + 1);
      return first == std::string::npos ? "" : line.substr(first);
    }
  }
  return "unknown";
}

}  // namespace

double MachineConstants::cpu_gemv_rate(int wanted) const {
  if (cpu_gemv_gbps.empty()) return 0.0;
  if (wanted <= cpu_gemv_gbps.front().first) return cpu_gemv_gbps.front().second;
  for (std::size_t i = 1; i < cpu_gemv_gbps.size(); ++i) {
    const auto [t1, r1] = cpu_gemv_gbps[i];
    if (wanted <= t1) {
      const auto [t0, r0] = cpu_gemv_gbps[i - 1];
      return r0 + (r1 - r0) * (wanted - t0) / static_cast<double>(t1 - t0);
    }
  }
  return cpu_gemv_gbps.back().second;
}

nlohmann::json to_json(const MachineConstants& c) {
  nlohmann::ordered_json json;
  json["schema"] = kMachineConstantsSchema;
  json["fingerprint"] = c.fingerprint;
  json["threads"] = c.threads;
  for (const RateField& f : kRates) json[f.key] = c.*f.member;
  for (const RateField& f : kOptionalRates) json[f.key] = c.*f.member;
  nlohmann::ordered_json gemv = nlohmann::ordered_json::object();
  for (const auto& [threads, rate] : c.cpu_gemv_gbps) gemv[std::to_string(threads)] = rate;
  json["cpu_gemv_gbps"] = gemv;
  return nlohmann::json::parse(json.dump());  // keeps the order when dumped from ordered form
}

MachineConstants machine_constants_from_json(const nlohmann::json& json, const std::string& what) {
  STRATA_CHECK_ARG(json.is_object(), "{}: expected a JSON object of machine constants", what);
  const auto schema = json.find("schema");
  STRATA_CHECK_ARG(
      schema != json.end() && schema->is_string() && *schema == kMachineConstantsSchema,
      "{}: 'schema' must be \"{}\" (written by another version? run strata "
      "calibrate --force)",
      what, kMachineConstantsSchema);
  MachineConstants c;
  const auto number = [&](const char* key) {
    const auto it = json.find(key);
    STRATA_CHECK_ARG(it != json.end() && it->is_number() && it->get<double>() >= 0,
                     "{}: '{}' must be a non-negative number", what, key);
    return it->get<double>();
  };
  for (const RateField& f : kRates) c.*f.member = number(f.key);
  for (const RateField& f : kOptionalRates) {
    if (json.contains(f.key)) c.*f.member = number(f.key);
  }
  c.threads = static_cast<int>(number("threads"));
  const auto fp = json.find("fingerprint");
  STRATA_CHECK_ARG(fp != json.end() && fp->is_string(), "{}: 'fingerprint' must be a string", what);
  c.fingerprint = fp->get<std::string>();
  const auto gemv = json.find("cpu_gemv_gbps");
  STRATA_CHECK_ARG(gemv != json.end() && gemv->is_object() && !gemv->empty(),
                   "{}: 'cpu_gemv_gbps' must be an object {{\"threads\": GB/s, ...}}", what);
  for (const auto& [key, value] : gemv->items()) {
    int threads = 0;
    try {
      threads = std::stoi(key);
    } catch (const std::exception&) {
    }
    STRATA_CHECK_ARG(threads >= 1 && value.is_number() && value.get<double>() > 0,
                     "{}: cpu_gemv_gbps entry '{}' must be a thread count >= 1 with a positive "
                     "rate",
                     what, key);
    c.cpu_gemv_gbps.emplace_back(threads, value.get<double>());
  }
  std::sort(c.cpu_gemv_gbps.begin(), c.cpu_gemv_gbps.end());
  return c;
}

MachineConstants read_machine_constants(const std::filesystem::path& path) {
  std::ifstream in(path);
  STRATA_CHECK(in.good(), IoError, "machine constants {}: cannot read it", path.string());
  std::stringstream text;
  text << in.rdbuf();
  const auto json = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  STRATA_CHECK_ARG(!json.is_discarded(), "machine constants {}: not valid JSON", path.string());
  return machine_constants_from_json(json, "machine constants " + path.string());
}

std::string hardware_fingerprint() {
  std::vector<std::string> gpus;
  std::string driver;
#if STRATA_WITH_CUDA
  if (cuda::is_available()) {
    for (int i = 0; i < cuda::device_count(); ++i) gpus.push_back(cuda::device_properties(i).name);
    driver = std::to_string(cuda::driver_version());
  }
#endif
  return fmt::format("cpu={};cores={};gpus={};driver={}", cpu_model_name(),
                     std::thread::hardware_concurrency(), fmt::join(gpus, ","), driver);
}

std::filesystem::path calibration_cache_dir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg != nullptr && *xdg == '/') return std::filesystem::path(xdg) / "strata";
  const char* home = std::getenv("HOME");
  STRATA_CHECK_ARG(home != nullptr && *home != '\0',
                   "no cache directory for the machine constants: neither XDG_CACHE_HOME nor "
                   "HOME is set; set one, or pass the constants file explicitly");
  return std::filesystem::path(home) / ".cache" / "strata";
}

std::filesystem::path calibration_cache_file(const std::filesystem::path& dir,
                                             const std::string& fingerprint) {
  std::uint64_t hash = 14695981039346656037ULL;  // FNV-1a 64: stable across builds and runs
  for (const unsigned char ch : fingerprint) {
    hash ^= ch;
    hash *= 1099511628211ULL;
  }
  return dir / fmt::format("machine-{:016x}.json", hash);
}

Calibration load_or_measure(const CalibrationOptions& options, const Measurer& measure,
                            const std::string& fingerprint) {
  Calibration out;
  const auto warn = [&](std::string message) {
    log_warning(message);
    out.warnings.push_back(std::move(message));
  };
  std::filesystem::path dir;
  try {
    dir = options.cache_dir ? *options.cache_dir : calibration_cache_dir();
  } catch (const InvalidArgument& e) {  // no HOME: measure every time rather than fail
    warn(e.what());
  }
  if (!dir.empty()) out.file = calibration_cache_file(dir, fingerprint);
  std::error_code error;
  if (!options.force && !dir.empty() && std::filesystem::exists(out.file, error)) {
    try {
      MachineConstants cached = read_machine_constants(out.file);
      if (cached.fingerprint == fingerprint) {
        out.constants = std::move(cached);
        return out;
      }
      warn(
          fmt::format("machine constants {} were measured on other hardware ({}); measuring "
                      "this machine again",
                      out.file.string(), cached.fingerprint));
    } catch (const Error& e) {
      warn(fmt::format("{}; measuring this machine again", e.what()));
    }
  }
  out.constants = measure();
  out.constants.fingerprint = fingerprint;
  out.measured = true;
  if (dir.empty()) return out;
  try {
    std::filesystem::create_directories(dir);
    const std::string text = to_json(out.constants).dump(2) + "\n";
    io::write_file_atomically(out.file, text.data(), text.size());
  } catch (const std::exception& e) {
    warn(fmt::format("could not cache the machine constants in {}: {}", out.file.string(),
                     e.what()));
  }
  return out;
}

Calibration load_or_measure(const CalibrationOptions& options) {
  return load_or_measure(
      options, [] { return measure_machine_constants(); }, hardware_fingerprint());
}

}  // namespace strata::engine
