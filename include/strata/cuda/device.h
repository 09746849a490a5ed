#pragma once
// CUDA device management: count, properties, the current device and an RAII guard. No CUDA
// headers here. Defined only in builds with the CUDA backend (STRATA_WITH_CUDA); on a machine
// with no GPU or driver, device_count() is 0 and the rest throws DeviceError.

#include <cstddef>
#include <string>

namespace strata::cuda {

// Number of usable GPUs; 0 without a driver or without a GPU (never throws).
int device_count() noexcept;
bool is_available() noexcept;
// The CUDA runtime linked in and the installed driver's CUDA version, as 1000 * major +
// 10 * minor (13000 is 13.0); 0 when unknown (no driver). Never throw.
int runtime_version() noexcept;
int driver_version() noexcept;

struct DeviceProperties {
  int index = 0;
  std::string name;
  int major = 0;  // compute capability
  int minor = 0;
  std::size_t total_memory = 0;
  int multiprocessor_count = 0;
  std::size_t l2_cache_bytes = 0;
  std::size_t shared_memory_per_block_optin = 0;
};
// Throws DeviceError naming the index when the device does not exist.
DeviceProperties device_properties(int index);

int current_device();
void set_device(int index);

// Bytes free and total on `index` as the driver reports them (cudaMemGetInfo).
struct DeviceMemoryInfo {
  std::size_t free = 0;
  std::size_t total = 0;
};
DeviceMemoryInfo device_memory_info(int index);

// True once peer access from `device` to `peer` is enabled (done for every pair the hardware
// allows when the backend starts).
bool peer_access_enabled(int device, int peer);

// Makes `index` current for its lifetime and restores the previous device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_;
};

}  // namespace strata::cuda
