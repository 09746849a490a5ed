#pragma once
// Where a tensor's bytes live. Pinned host memory is a property of a CPU storage, not a device;
// "disk" is a placement tier (a CPU storage that maps a file), not a device.

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace strata {

enum class DeviceType : std::uint8_t { CPU = 0, CUDA = 1, Meta = 2 };

class Device {
 public:
  // index -1 on CUDA means "the current CUDA device" (what "cuda" without an index says).
  constexpr Device() = default;
  constexpr Device(DeviceType type, int index)
      : type_(type), index_(type == DeviceType::CUDA ? index : -1) {}

  static constexpr Device cpu() { return Device(DeviceType::CPU, -1); }
  static constexpr Device meta() { return Device(DeviceType::Meta, -1); }
  static constexpr Device cuda(int index = -1) { return Device(DeviceType::CUDA, index); }

  // Parses "cpu", "meta", "cuda", "cuda:N", "N" (a GPU index, as in Accelerate's device maps).
  // Throws InvalidArgument naming the text and the accepted forms.
  static Device parse(std::string_view text);
  // A bare integer names GPU N (device-map convention). Negative values are rejected.
  static Device from_index(long long gpu_index);

  constexpr DeviceType type() const { return type_; }
  constexpr int index() const { return index_; }
  constexpr bool has_index() const { return index_ >= 0; }
  constexpr bool is_cpu() const { return type_ == DeviceType::CPU; }
  constexpr bool is_cuda() const { return type_ == DeviceType::CUDA; }
  constexpr bool is_meta() const { return type_ == DeviceType::Meta; }

  std::string str() const;

  friend constexpr bool operator==(const Device&, const Device&) = default;

 private:
  DeviceType type_ = DeviceType::CPU;
  int index_ = -1;
};

std::ostream& operator<<(std::ostream& os, const Device& device);

}  // namespace strata

template <>
struct std::hash<strata::Device> {
  std::size_t operator()(const strata::Device& d) const noexcept {
    return (static_cast<std::size_t>(d.type()) << 32) ^ static_cast<std::size_t>(d.index() + 1);
  }
};

template <>
struct fmt::formatter<strata::Device> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(const strata::Device& device, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(device.str(), ctx);
  }
};
