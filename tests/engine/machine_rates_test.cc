// The engine's measuring functions (machine_rates.h), shared by `strata calibrate` and
// `strata bench`: each measures (a positive rate; not timed), the GPU ones answer "none" without a
// usable GPU, and file reads cover every byte or name the file that failed.

#include "strata/engine/machine_rates.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "io/io_testing.h"
#include "strata/core/error.h"
#include "support/op_testing.h"

namespace strata::engine {
namespace {

TEST(MachineRates, HostReadIsMeasured) {
  EXPECT_GT(measure_host_read_gbps(std::int64_t{4} << 20), 0.0);
}

TEST(MachineRates, GpuRatesAreMeasuredOnlyWithAGpu) {
  const bool gpu = testing::device_available(Device::cuda(0));
  const auto h2d = measure_h2d_gbps(std::int64_t{4} << 20);
  const auto hbm = measure_gpu_hbm_gbps(std::int64_t{4} << 20);
  const auto gemm = measure_gpu_gemm_gflops(256);
  if (!gpu) {
    EXPECT_FALSE(h2d.has_value());
    EXPECT_FALSE(hbm.has_value());
    EXPECT_FALSE(gemm.has_value());
    return;
  }
  ASSERT_TRUE(h2d && hbm && gemm);
  EXPECT_GT(*h2d, 0.0);
  EXPECT_GT(*hbm, 0.0);
  EXPECT_GT(*gemm, 0.0);
}

TEST(MachineRates, FileReadsCoverEveryFileOrNameTheOneThatFailed) {
  testing::TempDir tmp;
  std::vector<std::filesystem::path> files;
  for (const std::size_t bytes : {std::size_t{9} << 20, std::size_t{4096} + 3}) {
    files.push_back(tmp.path() / ("f" + std::to_string(files.size())));
    std::ofstream(files.back(), std::ios::binary) << std::string(bytes, 'x');
  }
  EXPECT_GT(measure_file_read_gbps(files, 2, /*direct=*/false), 0.0);
  try {
    EXPECT_GT(measure_file_read_gbps(files, 3, /*direct=*/true), 0.0);
  } catch (const IoError& e) {  // tmpfs and some overlays refuse O_DIRECT
    EXPECT_NE(std::string(e.what()).find("O_DIRECT"), std::string::npos) << e.what();
  }
  files.push_back(tmp.path() / "missing");
  try {
    measure_file_read_gbps(files, 2, false);
    ADD_FAILURE() << "a missing file was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace strata::engine
