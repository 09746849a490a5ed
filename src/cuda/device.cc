// Device management: count, properties, guard, peer access, and CUDA error reporting.

#include "strata/cuda/device.h"

#include <mutex>
#include <vector>

#include "cuda/cuda_check.h"

namespace strata::cuda {
namespace detail {

int current_device_or_unknown() noexcept {
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return device;
}

void throw_cuda_error(cudaError_t status, const char* what, int device) {
  cudaGetLastError();  // clear non-sticky errors so the next call starts clean
  const std::string where = device >= 0 ? fmt::format("cuda:{}", device) : std::string("cuda");
  if (status == cudaErrorMemoryAllocation) {
    STRATA_THROW(OutOfMemory, "{} failed on {}: {} ({}); free tensors, call empty_cache, or lower "
                 "the memory budget of this device", what, where, cudaGetErrorString(status),
                 cudaGetErrorName(status));
  }
  STRATA_THROW(DeviceError, "{} failed on {}: {} ({})", what, where, cudaGetErrorString(status),
               cudaGetErrorName(status));
}

}  // namespace detail

namespace {

// Peer access is enabled once per process for every pair that supports it.
struct PeerTable {
  int count = 0;
  std::vector<char> enabled;  // count * count
};

const PeerTable& peer_table() {
  static const PeerTable table = [] {
    PeerTable t;
    t.count = device_count();
    t.enabled.assign(static_cast<std::size_t>(t.count) * t.count, 0);
    for (int d = 0; d < t.count; ++d) {
      DeviceGuard guard(d);
      for (int p = 0; p < t.count; ++p) {
        if (p == d) continue;
        int can = 0;
        if (cudaDeviceCanAccessPeer(&can, d, p) != cudaSuccess || can == 0) continue;
        const cudaError_t status = cudaDeviceEnablePeerAccess(p, 0);
        if (status == cudaSuccess || status == cudaErrorPeerAccessAlreadyEnabled) {
          t.enabled[static_cast<std::size_t>(d) * t.count + p] = 1;
        }
        cudaGetLastError();
      }
    }
    return t;
  }();
  return table;
}

void check_index(int index) {
  const int count = device_count();
  STRATA_CHECK(index >= 0 && index < count, DeviceError,
               "cuda:{} does not exist: this machine has {} GPU(s)", index, count);
}

}  // namespace

int device_count() noexcept {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // no driver or no GPU: the sticky error must not leak into later calls
      return 0;
    }
    return n;
  }();
  return count;
}

bool is_available() noexcept { return device_count() > 0; }

DeviceProperties device_properties(int index) {
  check_index(index);
  cudaDeviceProp prop{};
  STRATA_CUDA_CHECK(cudaGetDeviceProperties(&prop, index), index);
  DeviceProperties out;
  out.index = index;
  out.name = prop.name;
  out.major = prop.major;
  out.minor = prop.minor;
  out.total_memory = prop.totalGlobalMem;
  out.multiprocessor_count = prop.multiProcessorCount;
  out.l2_cache_bytes = static_cast<std::size_t>(prop.l2CacheSize);
  out.shared_memory_per_block_optin = prop.sharedMemPerBlockOptin;
  return out;
}

int current_device() {
  int device = 0;
  STRATA_CUDA_CHECK(cudaGetDevice(&device), -1);
  return device;
}

void set_device(int index) {
  check_index(index);
  STRATA_CUDA_CHECK(cudaSetDevice(index), index);
}

DeviceMemoryInfo device_memory_info(int index) {
  DeviceGuard guard(index);
  DeviceMemoryInfo info;
  STRATA_CUDA_CHECK(cudaMemGetInfo(&info.free, &info.total), index);
  return info;
}

bool peer_access_enabled(int device, int peer) {
  const PeerTable& t = peer_table();
  if (device < 0 || peer < 0 || device >= t.count || peer >= t.count) return false;
  return t.enabled[static_cast<std::size_t>(device) * t.count + peer] != 0;
}

DeviceGuard::DeviceGuard(int index) : previous_(current_device()) {
  if (index != previous_) set_device(index);
}

DeviceGuard::~DeviceGuard() {
  // Restoring cannot fail for a device that was current a moment ago; errors are not thrown
  // from a destructor.
  if (cudaSetDevice(previous_) != cudaSuccess) cudaGetLastError();
}

}  // namespace strata::cuda
