#pragma once
// Device backends plug allocation and copies for a device type into the core. The CPU backend is
// built in; the CUDA backend registers itself when the CUDA library is linked and a GPU is found.
// The core never includes CUDA headers: everything device-specific goes through this interface.

#include <cstddef>
#include <memory>

#include "strata/core/allocator.h"
#include "strata/core/device.h"

namespace strata {

class Tensor;

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;
  virtual DeviceType type() const = 0;
  // Number of devices of this type present on the machine.
  virtual int device_count() const = 0;
  // Turns index -1 ("the current device") into a concrete index.
  virtual int resolve_index(int index) const = 0;
  // Allocator for memory on device `index` (already resolved).
  virtual Allocator& allocator(int index) = 0;
  // Page-locked host memory usable for fast transfers, or nullptr when unavailable.
  virtual Allocator* pinned_host_allocator() { return nullptr; }
  // Copies between host memory and this backend's devices, or between two of its devices.
  // Blocking unless `non_blocking`, in which case the caller synchronises.
  virtual void copy(void* dst, Device dst_device, const void* src, Device src_device,
                    std::size_t nbytes, bool non_blocking) = 0;
  // dst <- src, both on one device of this backend, with any strides (0 where broadcast) and
  // any pair of dtypes; queued in device order. False when the backend cannot.
  virtual bool copy_strided(const Tensor& dst, const Tensor& src) { return false; }
};

// Registers (or replaces) the backend for its device type.
void register_backend(std::unique_ptr<DeviceBackend> backend);
// The backend for `type`, or nullptr when none is registered.
DeviceBackend* find_backend(DeviceType type);
// The backend for `device`; throws DeviceError explaining why it is unavailable.
DeviceBackend& backend_for(Device device);
// A concrete device (resolves "cuda" to the current CUDA device). CPU and meta are unchanged.
Device resolve_device(Device device);

}  // namespace strata
