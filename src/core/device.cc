#include "strata/core/device.h"

#include <charconv>
#include <ostream>

#include "strata/core/error.h"

namespace strata {
namespace {

[[noreturn]] void bad_device(std::string_view text, std::string_view why) {
  STRATA_THROW(InvalidArgument,
               "invalid device '{}': {}. Expected \"cpu\", \"meta\", \"cuda\", \"cuda:N\" or a GPU "
               "index N (\"disk\" is a placement tier in device maps, not a tensor device)",
               text, why);
}

}  // namespace

Device Device::parse(std::string_view text) {
  if (text == "cpu" || text == "cpu:0") return cpu();
  if (text == "meta") return meta();
  if (text == "cuda") return cuda();
  if (text.starts_with("cuda:")) {
    const std::string_view digits = text.substr(5);
    int index = -1;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || index < 0) {
      bad_device(text, "the CUDA index must be a non-negative integer");
    }
    return cuda(index);
  }
  long long index = -1;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), index);
  if (!text.empty() && ec == std::errc() && end == text.data() + text.size()) {
    return from_index(index);
  }
  bad_device(text, "unrecognised name");
}

Device Device::from_index(long long gpu_index) {
  STRATA_CHECK_ARG(gpu_index >= 0 && gpu_index < (1 << 20),
                   "invalid device index {}: a GPU index must be between 0 and the number of GPUs "
                   "minus one", gpu_index);
  return cuda(static_cast<int>(gpu_index));
}

std::string Device::str() const {
  switch (type_) {
    case DeviceType::CPU: return "cpu";
    case DeviceType::Meta: return "meta";
    case DeviceType::CUDA: return index_ >= 0 ? fmt::format("cuda:{}", index_) : "cuda";
  }
  return "unknown";
}

std::ostream& operator<<(std::ostream& os, const Device& device) { return os << device.str(); }

}  // namespace strata
