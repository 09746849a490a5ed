#pragma once
// Memory sizes and per-device budgets (Accelerate's convert_file_size_to_int and get_max_memory).

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "strata/placement/map_device.h"

namespace strata::placement {

// Parses "10GiB", "512MiB", "64KiB" (powers of 1024), "10GB", "1.5MB", "3KB" (powers of 1000),
// case-insensitively, with a decimal or exponent number ("1e3KB") and optional spaces ("10 GB").
// As in the reference, a size ending in a lowercase "b" ("5gb", "10Gb") is read as bits (divided
// by 8); that is kept for parity but logged as a warning. Anything else (no unit, "TB", a
// negative or non-finite number) is InvalidArgument naming the text and the accepted forms.
std::int64_t parse_memory_size(std::string_view text);

// "1.50 GiB", "512 B": for messages and explain tables.
std::string format_bytes(std::int64_t bytes);

// A budget as users write it: a byte count or a size string, resolved by MaxMemory.
class MemoryBudget {
 public:
  template <std::integral T>
  MemoryBudget(T bytes) : value_(static_cast<std::int64_t>(bytes)) {}  // NOLINT
  MemoryBudget(const char* text) : value_(std::string(text)) {}        // NOLINT
  MemoryBudget(std::string text) : value_(std::move(text)) {}          // NOLINT
  MemoryBudget(std::string_view text) : value_(std::string(text)) {}   // NOLINT

  // Bytes; a string is parsed with parse_memory_size. Errors name `device`.
  std::int64_t resolve(const MapDevice& device) const;

 private:
  std::variant<std::int64_t, std::string> value_;
};

// Bytes available per device. Entries keep their insertion order until get_max_memory sorts them
// (GPUs by index, then mps, cpu, disk: the order planning visits them).
class MaxMemory {
 public:
  using Entry = std::pair<MapDevice, std::int64_t>;

  MaxMemory() = default;
  // {{0, "10GiB"}, {"cpu", "30GiB"}}. A negative or unparsable budget, or a device given twice
  // (0 and "cuda:0"), is InvalidArgument naming the device.
  MaxMemory(std::initializer_list<std::pair<MapDevice, MemoryBudget>> budgets);
  explicit MaxMemory(std::vector<Entry> entries);

  // Adds or replaces the budget of `device` (bytes >= 0).
  void set(const MapDevice& device, std::int64_t bytes);
  std::optional<std::int64_t> find(const MapDevice& device) const;
  // Throws InvalidArgument naming the device and the devices present.
  std::int64_t at(const MapDevice& device) const;
  bool contains(const MapDevice& device) const { return find(device).has_value(); }

  const std::vector<Entry>& entries() const { return entries_; }
  std::vector<Entry>::const_iterator begin() const { return entries_.begin(); }
  std::vector<Entry>::const_iterator end() const { return entries_.end(); }
  std::size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }

  // {0: 1000, 'cpu': 2000}
  std::string str() const;
  friend bool operator==(const MaxMemory&, const MaxMemory&) = default;

 private:
  std::vector<Entry> entries_;
};

// With budgets: the same budgets in planning order, warning about GPU indices this machine does
// not have (planning still uses them, as the reference does). Without: the free memory of every
// GPU of the registered CUDA backend, then "cpu" with the RAM the OS reports available
// (MemAvailable in /proc/meminfo).
MaxMemory get_max_memory(const std::optional<MaxMemory>& max_memory = std::nullopt);

}  // namespace strata::placement
