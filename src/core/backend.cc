#include "strata/core/backend.h"

#include <array>
#include <mutex>

#include "strata/core/error.h"

#ifdef STRATA_WITH_CUDA
#include "cuda/cuda_backend_registration.h"
#endif

namespace strata {
namespace {

constexpr std::size_t kNumDeviceTypes = 3;

struct Registry {
  std::mutex mutex;
  std::array<std::unique_ptr<DeviceBackend>, kNumDeviceTypes> backends;
};

Registry& registry() {
  static auto* r = new Registry();  // never destroyed: backends outlive static tensors
  return *r;
}

}  // namespace

void register_backend(std::unique_ptr<DeviceBackend> backend) {
  STRATA_ASSERT(backend != nullptr, "register_backend(nullptr)");
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  r.backends[static_cast<std::size_t>(backend->type())] = std::move(backend);
}

DeviceBackend* find_backend(DeviceType type) {
#ifdef STRATA_WITH_CUDA
  // Registered on first use (a self-registering static in a static library would be dropped by
  // the linker); nothing is registered without a GPU.
  static std::once_flag cuda_registered;
  std::call_once(cuda_registered, [] { cuda::register_cuda_backend_if_present(); });
#endif
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  return r.backends[static_cast<std::size_t>(type)].get();
}

DeviceBackend& backend_for(Device device) {
  DeviceBackend* b = find_backend(device.type());
  if (b == nullptr) {
    if (device.is_cuda()) {
      STRATA_THROW(DeviceError,
                   "device {} is not available: this Strata build has no CUDA backend or found no "
                   "GPU; use a cpu device map, or rebuild with STRATA_CUDA=ON on a machine with "
                   "the CUDA toolkit",
                   device);
    }
    STRATA_THROW(DeviceError, "no backend for device {}", device);
  }
  if (device.has_index()) {
    STRATA_CHECK(device.index() < b->device_count(), DeviceError,
                 "device {} does not exist: this machine has {} device(s) of that type", device,
                 b->device_count());
  }
  return *b;
}

Device resolve_device(Device device) {
  if (!device.is_cuda() || device.has_index()) return device;
  return Device::cuda(backend_for(device).resolve_index(-1));
}

}  // namespace strata
