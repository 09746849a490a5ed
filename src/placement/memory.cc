#include "strata/placement/memory.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

#include "strata/core/backend.h"
#include "strata/core/error.h"
#include "strata/core/logging.h"

#ifdef STRATA_WITH_CUDA
#include "strata/cuda/device.h"
#endif

namespace strata::placement {
namespace {

[[noreturn]] void bad_size(std::string_view text, std::string_view why) {
  STRATA_THROW(InvalidArgument,
               "invalid memory size '{}': {}. Write an integer byte count, or a number with a "
               "unit: KiB, MiB, GiB (powers of 1024) or KB, MB, GB (powers of 1000), like "
               "\"10GiB\" or \"1.5GB\"",
               text, why);
}

// What Python's float() accepts for ordinary numbers: surrounding spaces, a sign, decimals and
// exponents. inf and nan are refused (no budget is infinite).
double parse_number(std::string_view whole, std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  if (text.starts_with('+')) text.remove_prefix(1);
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    bad_size(whole, "the number before the unit does not parse");
  }
  if (!std::isfinite(value)) bad_size(whole, "the number is not finite");
  return value;
}

bool ends_with_upper(std::string_view text, std::string_view suffix) {
  if (text.size() < suffix.size()) return false;
  return std::equal(suffix.begin(), suffix.end(), text.end() - suffix.size(), [](char s, char t) {
    return s == std::toupper(static_cast<unsigned char>(t));
  });
}

int cuda_device_count() {
  const DeviceBackend* backend = find_backend(DeviceType::CUDA);
  return backend ? backend->device_count() : 0;
}

// Free bytes per GPU at call time (what the reference measures); nothing without a GPU backend.
std::vector<std::pair<int, std::int64_t>> free_gpu_memory() {
  std::vector<std::pair<int, std::int64_t>> result;
#ifdef STRATA_WITH_CUDA
  for (int i = 0; i < cuda_device_count(); ++i) {
    try {
      result.emplace_back(i, static_cast<std::int64_t>(cuda::device_memory_info(i).free));
    } catch (const Error& e) {
      log_message(LogLevel::Info,
                  fmt::format("GPU {} seems unavailable ({}); skipping it", i, e.what()));
    }
  }
#endif
  return result;
}

// MemAvailable from /proc/meminfo: what the OS can give without swapping.
std::int64_t available_ram() {
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    if (!line.starts_with("MemAvailable:")) continue;
    std::istringstream fields(line.substr(13));
    std::int64_t kib = 0;
    if (fields >> kib) return kib * 1024;
  }
  STRATA_THROW(DeviceError,
               "cannot read MemAvailable from /proc/meminfo to size the cpu budget; pass "
               "max_memory with a \"cpu\" entry");
}

}  // namespace

std::int64_t parse_memory_size(std::string_view text) {
  struct Unit {
    std::string_view suffix;
    double multiplier;
    bool decimal;  // GB/MB/KB: a lowercase trailing "b" means bits
  };
  // The reference's order: binary units first, so "GIB" is never read as "...B".
  static constexpr Unit kUnits[] = {{"GIB", 1073741824.0, false},
                                    {"MIB", 1048576.0, false},
                                    {"KIB", 1024.0, false},
                                    {"GB", 1e9, true},
                                    {"MB", 1e6, true},
                                    {"KB", 1e3, true}};
  for (const Unit& unit : kUnits) {
    if (!ends_with_upper(text, unit.suffix)) continue;
    const double number = parse_number(text, text.substr(0, text.size() - unit.suffix.size()));
    const double bytes = number * unit.multiplier;
    if (bytes <= -1.0) bad_size(text, "a budget cannot be negative");
    if (bytes >= 9.2e18) bad_size(text, "the size does not fit in 64 bits");
    auto value = static_cast<std::int64_t>(bytes);  // truncates, as Python's int()
    if (unit.decimal && text.back() == 'b') {
      value /= 8;
      log_warning(fmt::format(
          "memory size '{}' ends in a lowercase 'b' and is read as bits: {} bytes (as Accelerate "
          "does). Write '{}B' for bytes",
          text, value, text.substr(0, text.size() - 1)));
    }
    return value;
  }
  bad_size(text, "no unit (KiB, MiB, GiB, KB, MB or GB) at the end");
}

std::string format_bytes(std::int64_t bytes) {
  static constexpr std::string_view kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024 && bytes > -1024) return fmt::format("{} B", bytes);
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  value /= 1024;
  while ((value >= 1024 || value <= -1024) && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  return fmt::format("{:.2f} {}", value, kUnits[unit]);
}

std::int64_t MemoryBudget::resolve(const MapDevice& device) const {
  if (const auto* bytes = std::get_if<std::int64_t>(&value_)) {
    STRATA_CHECK_ARG(*bytes >= 0,
                     "max_memory[{}] = {} is negative: give the bytes the device may "
                     "hold (0 or more)",
                     device.str(), *bytes);
    return *bytes;
  }
  const auto& text = std::get<std::string>(value_);
  try {
    return parse_memory_size(text);
  } catch (const InvalidArgument& e) {
    STRATA_THROW(InvalidArgument, "max_memory[{}]: {}", device.str(), e.what());
  }
}

MaxMemory::MaxMemory(std::initializer_list<std::pair<MapDevice, MemoryBudget>> budgets) {
  for (const auto& [device, budget] : budgets) {
    STRATA_CHECK_ARG(!contains(device),
                     "max_memory names device {} twice (GPU N and \"cuda:N\" are the same "
                     "device); give one budget per device",
                     device.str());
    set(device, budget.resolve(device));
  }
}

MaxMemory::MaxMemory(std::vector<Entry> entries) {
  for (const auto& [device, bytes] : entries) {
    STRATA_CHECK_ARG(!contains(device), "max_memory names device {} twice", device.str());
    set(device, bytes);
  }
}

void MaxMemory::set(const MapDevice& device, std::int64_t bytes) {
  STRATA_CHECK_ARG(bytes >= 0, "max_memory[{}] = {} is negative", device.str(), bytes);
  for (auto& entry : entries_) {
    if (entry.first == device) {
      entry.second = bytes;
      return;
    }
  }
  entries_.emplace_back(device, bytes);
}

std::optional<std::int64_t> MaxMemory::find(const MapDevice& device) const {
  for (const auto& [d, bytes] : entries_) {
    if (d == device) return bytes;
  }
  return std::nullopt;
}

std::int64_t MaxMemory::at(const MapDevice& device) const {
  if (auto bytes = find(device)) return *bytes;
  STRATA_THROW(InvalidArgument, "no budget for device {} in max_memory {}", device.str(), str());
}

std::string MaxMemory::str() const {
  std::string out = "{";
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    out += fmt::format("{}{}: {}", i ? ", " : "", entries_[i].first.repr(), entries_[i].second);
  }
  return out + "}";
}

MaxMemory get_max_memory(const std::optional<MaxMemory>& max_memory) {
  if (!max_memory) {
    MaxMemory measured;
    for (const auto& [index, bytes] : free_gpu_memory()) measured.set(MapDevice::gpu(index), bytes);
    measured.set(MapDevice::cpu(), available_ram());
    return measured;
  }
  std::vector<MaxMemory::Entry> entries = max_memory->entries();
  std::stable_sort(entries.begin(), entries.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  const int gpus = cuda_device_count();
  std::vector<std::string> missing;
  for (const auto& [device, bytes] : entries) {
    if (device.is_gpu() && device.index() >= gpus) missing.push_back(device.str());
  }
  if (!missing.empty()) {
    log_warning(fmt::format(
        "max_memory names GPU {} but this machine has {} GPU(s) here; planning uses the budgets as "
        "given",
        fmt::join(missing, ", "), gpus));
  }
  return MaxMemory(std::move(entries));
}

}  // namespace strata::placement
