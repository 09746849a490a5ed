#pragma once
// Device-map values as Accelerate writes them: a GPU index (0, 1, ...), "cpu", "disk", and "mps"
// (accepted so that maps written for Apple machines parse; Strata has no MPS backend). A device
// map assigns one of them to module or tensor names; the longest matching prefix wins.

#include <fmt/format.h>

#include <compare>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strata/core/device.h"

namespace strata::placement {

class MapDevice {
 public:
  // Declaration order is planning order: GPUs by index, then mps, then cpu, then disk.
  enum class Kind : std::uint8_t { Gpu, Mps, Cpu, Disk };

  // Implicit so that maps and budgets read like the reference: {{"linear1", 0}, {"linear2",
  // "cpu"}}.
  MapDevice(int gpu_index);  // NOLINT(google-explicit-constructor)
  // "cpu", "disk", "mps", "cuda:N" or "N"; anything else is InvalidArgument naming the text.
  MapDevice(std::string_view text);  // NOLINT(google-explicit-constructor)
  MapDevice(const char* text) : MapDevice(std::string_view(text)) {}         // NOLINT
  MapDevice(const std::string& text) : MapDevice(std::string_view(text)) {}  // NOLINT

  static MapDevice gpu(int index) { return MapDevice(index); }
  static MapDevice cpu() { return MapDevice(Kind::Cpu, -1); }
  static MapDevice disk() { return MapDevice(Kind::Disk, -1); }
  static MapDevice mps() { return MapDevice(Kind::Mps, -1); }
  // cpu or cuda:N (a CUDA device without index, or meta, is InvalidArgument).
  static MapDevice from_device(Device device);

  Kind kind() const { return kind_; }
  int index() const { return index_; }  // the GPU index; -1 for the other kinds
  bool is_gpu() const { return kind_ == Kind::Gpu; }
  bool is_cpu() const { return kind_ == Kind::Cpu; }
  bool is_disk() const { return kind_ == Kind::Disk; }
  bool is_mps() const { return kind_ == Kind::Mps; }

  // "0", "cpu", "disk", "mps": the spelling of device maps.
  std::string str() const;
  // As Python prints it inside a dict: 0, 'cpu'.
  std::string repr() const;
  // The tensor device for execution: cuda:N or cpu. Disk weights are loaded on the cpu; mps has
  // no Strata device (nullopt).
  std::optional<Device> device() const;

  friend auto operator<=>(const MapDevice&, const MapDevice&) = default;

 private:
  MapDevice(Kind kind, int index) : kind_(kind), index_(index) {}
  Kind kind_ = Kind::Cpu;
  int index_ = -1;
};

std::ostream& operator<<(std::ostream& os, const MapDevice& device);

// Module or tensor name -> device, in insertion order. "" names the whole model.
using DeviceMap = std::vector<std::pair<std::string, MapDevice>>;

// The device of tensor (or module) `name` under `map`: the entry equal to it or to its longest
// dotted prefix ("" matches everything); nullopt when no entry covers it.
//
// A key may be a pattern: a component "*" matches any one component, so
// "model.layers.*.mlp.experts" covers every layer's experts (placement by tensor role). Among
// covering keys the one with more components wins, then the one with fewer "*", then the later
// entry: "model.layers.*.mlp.experts" -> cpu beats "model.layers.3" -> 0 for layer 3's experts.
std::optional<MapDevice> device_for(const DeviceMap& map, std::string_view name);

// True when a device-map key holds a "*" component.
bool is_device_map_pattern(std::string_view key);
// Whether `key` (a name or a pattern) covers `name` (the name itself or a module above it).
bool device_map_key_covers(std::string_view key, std::string_view name);

// Same content, any order (what the reference's tests compare).
bool same_device_map(const DeviceMap& a, const DeviceMap& b);

// {'linear1': 0, 'linear2': 'cpu'}
std::string device_map_str(const DeviceMap& map);

}  // namespace strata::placement

template <>
struct std::hash<strata::placement::MapDevice> {
  std::size_t operator()(const strata::placement::MapDevice& d) const noexcept {
    return (static_cast<std::size_t>(d.kind()) << 32) ^ static_cast<std::size_t>(d.index() + 1);
  }
};

template <>
struct fmt::formatter<strata::placement::MapDevice> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(const strata::placement::MapDevice& device, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(device.str(), ctx);
  }
};
