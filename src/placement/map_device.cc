#include "strata/placement/map_device.h"

#include <algorithm>
#include <charconv>
#include <ostream>
#include <unordered_map>

#include "strata/core/error.h"

namespace strata::placement {
namespace {

constexpr std::string_view kAccepted =
    "a GPU index (0, 1, ...), \"cuda:N\", \"cpu\", \"disk\" or \"mps\"";

// A non-negative decimal integer, the whole of `text`.
std::optional<int> parse_index(std::string_view text) {
  int value = -1;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < 0) {
    return std::nullopt;
  }
  return value;
}

}  // namespace

MapDevice::MapDevice(int gpu_index) : kind_(Kind::Gpu), index_(gpu_index) {
  STRATA_CHECK_ARG(gpu_index >= 0, "device-map GPU index {} is negative: expected {}", gpu_index,
                   kAccepted);
}

MapDevice::MapDevice(std::string_view text) {
  if (text == "cpu") {
    kind_ = Kind::Cpu;
  } else if (text == "disk") {
    kind_ = Kind::Disk;
  } else if (text == "mps") {
    kind_ = Kind::Mps;
  } else {
    std::optional<int> index = parse_index(text.starts_with("cuda:") ? text.substr(5) : text);
    STRATA_CHECK_ARG(index.has_value(), "device '{}' is not recognized: expected {}", text,
                     kAccepted);
    kind_ = Kind::Gpu;
    index_ = *index;
  }
}

MapDevice MapDevice::from_device(Device device) {
  if (device.is_cpu()) return cpu();
  STRATA_CHECK_ARG(device.is_cuda() && device.has_index(),
                   "device {} cannot hold planned weights: expected cpu or cuda:N", device.str());
  return gpu(device.index());
}

std::string MapDevice::str() const {
  switch (kind_) {
    case Kind::Gpu:
      return std::to_string(index_);
    case Kind::Mps:
      return "mps";
    case Kind::Cpu:
      return "cpu";
    case Kind::Disk:
      return "disk";
  }
  return "?";
}

std::string MapDevice::repr() const { return is_gpu() ? str() : fmt::format("'{}'", str()); }

std::optional<Device> MapDevice::device() const {
  switch (kind_) {
    case Kind::Gpu:
      return Device::cuda(index_);
    case Kind::Cpu:
    case Kind::Disk:
      return Device::cpu();
    case Kind::Mps:
      return std::nullopt;
  }
  return std::nullopt;
}

std::ostream& operator<<(std::ostream& os, const MapDevice& device) { return os << device.str(); }

namespace {

// The dotted components of a name ("" has none).
std::vector<std::string_view> components(std::string_view name) {
  std::vector<std::string_view> out;
  if (name.empty()) return out;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = name.find('.', start);
    out.push_back(name.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) return out;
    start = dot + 1;
  }
}

// Components of a key and how many are "*", without allocating for plain keys.
std::size_t count_components(std::string_view key) {
  return key.empty() ? 0 : static_cast<std::size_t>(std::count(key.begin(), key.end(), '.')) + 1;
}
std::size_t count_stars(std::string_view key) {
  if (key.find('*') == std::string_view::npos) return 0;
  const auto parts = components(key);
  return static_cast<std::size_t>(std::count(parts.begin(), parts.end(), std::string_view("*")));
}

}  // namespace

bool is_device_map_pattern(std::string_view key) { return count_stars(key) > 0; }

bool device_map_key_covers(std::string_view key, std::string_view name) {
  if (key.empty() || name == key) return true;
  if (!is_device_map_pattern(key)) {
    return name.size() > key.size() && name.starts_with(key) && name[key.size()] == '.';
  }
  const auto k = components(key), n = components(name);
  if (k.size() > n.size()) return false;
  for (std::size_t i = 0; i < k.size(); ++i) {
    if (k[i] != "*" && k[i] != n[i]) return false;
  }
  return true;
}

std::optional<MapDevice> device_for(const DeviceMap& map, std::string_view name) {
  // Longest covering key: the name itself, then each dotted prefix, then "". Plain keys compare
  // by length in characters (as before patterns existed); a pattern by its components.
  std::optional<MapDevice> best;
  std::size_t best_parts = 0, best_length = 0, best_stars = 0;
  for (const auto& [key, device] : map) {
    if (!device_map_key_covers(key, name)) continue;
    const std::size_t parts = count_components(key), stars = count_stars(key);
    const bool better =
        !best || parts > best_parts ||
        (parts == best_parts &&
         (stars < best_stars || (stars == best_stars && key.size() >= best_length)));
    if (better) {
      best = device;
      best_parts = parts;
      best_length = key.size();
      best_stars = stars;
    }
  }
  return best;
}

bool same_device_map(const DeviceMap& a, const DeviceMap& b) {
  if (a.size() != b.size()) return false;
  std::unordered_map<std::string_view, MapDevice> lookup;
  for (const auto& [key, device] : a) lookup.emplace(key, device);
  if (lookup.size() != a.size()) return false;
  return std::all_of(b.begin(), b.end(), [&](const auto& entry) {
    auto it = lookup.find(entry.first);
    return it != lookup.end() && it->second == entry.second;
  });
}

std::string device_map_str(const DeviceMap& map) {
  std::string out = "{";
  for (std::size_t i = 0; i < map.size(); ++i) {
    out += fmt::format("{}'{}': {}", i ? ", " : "", map[i].first, map[i].second.repr());
  }
  return out + "}";
}

}  // namespace strata::placement
