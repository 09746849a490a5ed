#pragma once
// The physical limits `strata bench` reports its rates against, measured in the same run with the
// engine's measuring functions (engine/machine_rates.h, those of `strata calibrate`): GPU 0's
// memory bandwidth (a device-to-device copy, bytes read + written) and bf16 tensor-core GEMM
// rate, and the host's memory read rate over the cores.

#include <optional>

namespace strata::cli {

struct DeviceLimits {
  std::optional<double> hbm_gb_s;     // GPU 0: none without CUDA
  std::optional<double> gemm_tflops;  // GPU 0, bf16 8192^3
  double host_read_gb_s = 0.0;        // all cores
};

DeviceLimits measure_device_limits();

}  // namespace strata::cli
