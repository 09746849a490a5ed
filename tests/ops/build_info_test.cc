// strata/version.h and strata/build_info.h: what `strata --version` prints.

#include "strata/build_info.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "cpu/simd.h"
#include "strata/version.h"

namespace strata {
namespace {

// The version as the top-level CMakeLists.txt declares it, read independently of the build.
std::string project_version() {
  std::ifstream file(std::string(STRATA_TEST_FIXTURES_DIR) + "/../../CMakeLists.txt");
  std::stringstream text;
  text << file.rdbuf();
  std::smatch match;
  const std::string content = text.str();
  EXPECT_TRUE(
      std::regex_search(content, match, std::regex(R"(project\(strata VERSION ([0-9.]+))")));
  return match.size() > 1 ? match[1].str() : std::string();
}

TEST(BuildInfo, VersionMacrosMatchTheProjectVersion) {
  const std::string version = project_version();
  EXPECT_EQ(std::string(kVersion), version);
  EXPECT_EQ(std::string(STRATA_VERSION_STRING), version);
  EXPECT_EQ(
      fmt::format("{}.{}.{}", STRATA_VERSION_MAJOR, STRATA_VERSION_MINOR, STRATA_VERSION_PATCH),
      version);
  EXPECT_EQ(STRATA_VERSION,
            STRATA_VERSION_MAJOR * 10000 + STRATA_VERSION_MINOR * 100 + STRATA_VERSION_PATCH);
}

TEST(BuildInfo, GitCommitIsAShortHashOrUnknown) {
  const std::string commit = git_commit();
  EXPECT_TRUE(commit == "unknown" || std::regex_match(commit, std::regex("[0-9a-f]{7,40}")))
      << commit;
}

TEST(BuildInfo, CpuKernelIsaIsTheDispatchedTable) {
  const std::string isa = cpu_kernel_isa();
  EXPECT_EQ(isa, cpu::simd::kernels().name);
  // The dispatch takes the widest table the CPU runs.
  const char* expected = cpu::simd::avx512_kernels() != nullptr ? cpu::simd::avx512_kernels()->name
                         : cpu::simd::avx2_kernels() != nullptr ? "avx2"
                                                                : "generic";
  EXPECT_EQ(isa, expected);
  // "avx512+bf16" exactly when the table carries the AVX-512 BF16 kernel, "+amx" after it exactly
  // when it carries the AMX one.
  EXPECT_EQ(isa.rfind("avx512+bf16", 0) == 0, cpu::simd::kernels().matvec_bf16_native != nullptr);
  EXPECT_EQ(isa == "avx512+bf16+amx", cpu::simd::kernels().amx_matvec_bf16 != nullptr);
}

TEST(BuildInfo, CudaInfoFollowsTheBuild) {
  const CudaInfo info = cuda_info();
  EXPECT_EQ(info.built, kBuiltWithCuda);
  if (!info.built) {
    EXPECT_EQ(info.runtime_version, 0);
    EXPECT_EQ(info.driver_version, 0);
    EXPECT_EQ(info.device_count, 0);
  } else {
    EXPECT_GE(info.runtime_version, 11000);  // the backend needs CUDA 11 or later
    EXPECT_GE(info.device_count, 0);
  }
}

TEST(BuildInfo, VersionReportHasOneFactPerLine) {
  const std::string report = version_report();
  const std::string first = fmt::format("strata {} (git {})\n", kVersion, git_commit());
  ASSERT_EQ(report.substr(0, first.size()), first);
  const std::string last = fmt::format("CPU kernels: {}\n", cpu_kernel_isa());
  ASSERT_GE(report.size(), first.size() + last.size());
  EXPECT_EQ(report.substr(report.size() - last.size()), last);
  const std::string cuda = report.substr(first.size(), report.size() - first.size() - last.size());
  if (!kBuiltWithCuda) {
    EXPECT_EQ(cuda, "CUDA: not built (CPU only)\n");
  } else {
    const CudaInfo info = cuda_info();
    EXPECT_EQ(cuda.rfind(fmt::format("CUDA: built, runtime {}.{}", info.runtime_version / 1000,
                                     (info.runtime_version % 1000) / 10),
                         0),
              0u)
        << cuda;
  }
}

}  // namespace
}  // namespace strata
