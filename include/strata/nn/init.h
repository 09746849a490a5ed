#pragma once
// Empty initialisation: RAII guards under which newly registered parameters (and buffers, if
// asked) are created on another device, usually meta: a 70B-parameter tree builds in
// milliseconds and allocates no tensor memory. The state is thread-local, so a guard on one
// thread never affects modules built on another (the reference patches a class attribute
// process-wide). Guards nest; each restores what was active before it.

#include <optional>

#include "strata/core/device.h"

namespace strata::nn {

class Module;

struct InitPlacement {
  Device device;
  bool include_buffers = false;
};

// The placement the innermost guard on this thread imposes, or nullopt when there is none.
std::optional<InitPlacement> current_init_placement();

// include_buffers unset reads STRATA_INIT_INCLUDE_BUFFERS (y/yes/t/true/on/1 or
// n/no/f/false/off/0; anything else is InvalidArgument), defaulting to false.
class InitOnDevice {
 public:
  explicit InitOnDevice(Device device, std::optional<bool> include_buffers = std::nullopt);
  ~InitOnDevice();
  InitOnDevice(const InitOnDevice&) = delete;
  InitOnDevice& operator=(const InitOnDevice&) = delete;

 private:
  std::optional<InitPlacement> previous_;
};

// Parameters become meta tensors (buffers too with include_buffers).
class InitEmptyWeights : public InitOnDevice {
 public:
  explicit InitEmptyWeights(std::optional<bool> include_buffers = std::nullopt)
      : InitOnDevice(Device::meta(), include_buffers) {}
};

// The seed API's spelling: `auto guard = init_empty_weights();` (guaranteed copy elision, so the
// guard needs no move).
[[nodiscard]] inline InitEmptyWeights init_empty_weights(
    std::optional<bool> include_buffers = std::nullopt) {
  return InitEmptyWeights(include_buffers);
}
// The seed API's init_on_device: `auto guard = init_on_device(Device::cuda(0));` creates the
// parameters (and buffers when include_buffers) registered in its scope directly on `device`.
[[nodiscard]] inline InitOnDevice init_on_device(
    Device device, std::optional<bool> include_buffers = std::nullopt) {
  return InitOnDevice(device, include_buffers);
}

// Rebuilds, on `device`, the non-persistent buffers still on meta anywhere under `root` (they are
// not in checkpoints) by calling Module::reset_non_persistent_buffers on their modules. Throws
// InvalidArgument naming any buffer still on meta afterwards.
void materialize_non_persistent_buffers(Module& root, Device device);

}  // namespace strata::nn
