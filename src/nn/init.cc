#include "strata/nn/init.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>

#include "strata/core/error.h"
#include "strata/nn/module.h"

namespace strata::nn {
namespace {

thread_local std::optional<InitPlacement> t_placement;

constexpr const char* kIncludeBuffersEnv = "STRATA_INIT_INCLUDE_BUFFERS";

bool include_buffers_from_env() {
  const char* raw = std::getenv(kIncludeBuffersEnv);
  if (raw == nullptr) return false;
  std::string value(raw);
  std::transform(value.begin(), value.end(), value.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* yes : {"y", "yes", "t", "true", "on", "1"}) {
    if (value == yes) return true;
  }
  for (const char* no : {"n", "no", "f", "false", "off", "0"}) {
    if (value == no) return false;
  }
  STRATA_THROW(InvalidArgument,
               "{}='{}' is not a boolean: use one of y, yes, t, true, on, 1 or n, no, f, false, "
               "off, 0",
               kIncludeBuffersEnv, raw);
}

}  // namespace

std::optional<InitPlacement> current_init_placement() { return t_placement; }

InitOnDevice::InitOnDevice(Device device, std::optional<bool> include_buffers)
    : previous_(t_placement) {
  t_placement = InitPlacement{device, include_buffers.value_or(include_buffers_from_env())};
}

InitOnDevice::~InitOnDevice() { t_placement = previous_; }

void materialize_non_persistent_buffers(Module& root, Device device) {
  auto on_meta = [](const TensorEntry& e) { return !e.persistent && e.slot->tensor().is_meta(); };
  for (auto& [name, module] : root.named_modules()) {
    const auto& buffers = module->direct_buffers();
    if (std::none_of(buffers.begin(), buffers.end(), on_meta)) continue;
    module->reset_non_persistent_buffers(device);
    for (const TensorEntry& e : module->direct_buffers()) {
      STRATA_CHECK_ARG(!on_meta(e),
                       "materialize_non_persistent_buffers: {}::reset_non_persistent_buffers left "
                       "'{}' on the meta device",
                       module->class_name(), name.empty() ? e.name : name + "." + e.name);
    }
  }
}

}  // namespace strata::nn
