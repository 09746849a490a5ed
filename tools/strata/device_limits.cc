#include "device_limits.h"

#include "strata/engine/machine_rates.h"

namespace strata::cli {

DeviceLimits measure_device_limits() {
  // The engine's measuring functions (as `strata calibrate`), with buffers far beyond the GPU's
  // L2 and the host's last-level cache.
  DeviceLimits limits;
  limits.hbm_gb_s = engine::measure_gpu_hbm_gbps(std::int64_t{2} << 30);
  if (const std::optional<double> gflops = engine::measure_gpu_gemm_gflops(8192)) {
    limits.gemm_tflops = *gflops / 1e3;
  }
  limits.host_read_gb_s = engine::measure_host_read_gbps(std::int64_t{1} << 30);
  return limits;
}

}  // namespace strata::cli
