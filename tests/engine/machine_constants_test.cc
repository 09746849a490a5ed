// The machine constants' JSON form and cache (machine_constants.h): a round trip, the cache file
// keyed by the hardware fingerprint, a corrupt or foreign file measured again with a warning,
// --force, and a short real measurement (its values are only checked to be measured: not timed).

#include "strata/engine/machine_constants.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "io/io_testing.h"
#include "strata/core/error.h"

namespace strata::engine {
namespace {

MachineConstants sample() {
  MachineConstants c;
  c.h2d_gbps = 52.5;
  c.host_read_gbps = 120;
  c.cpu_gemv_gbps = {{1, 11.5}, {16, 98}};
  c.cpu_gemm_gflops = 900;
  c.gpu_hbm_gbps = 2900;
  c.gpu_gemm_gflops = 600000;
  c.disk_read_gbps = 2.5;
  c.page_cache_read_gbps = 18;
  c.transfer_latency_us = 9;
  c.threads = 16;
  c.fingerprint = "cpu=Test CPU;cores=16;gpus=H100;driver=12040";
  return c;
}

void expect_same(const MachineConstants& a, const MachineConstants& b) {
  EXPECT_EQ(to_json(a), to_json(b));
  EXPECT_EQ(a.cpu_gemv_gbps, b.cpu_gemv_gbps);
  EXPECT_EQ(a.fingerprint, b.fingerprint);
  EXPECT_EQ(a.threads, b.threads);
  EXPECT_EQ(a.h2d_gbps, b.h2d_gbps);
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(MachineConstants, JsonRoundTrip) {
  const MachineConstants c = sample();
  const nlohmann::json json = to_json(c);
  EXPECT_EQ(json.at("schema"), kMachineConstantsSchema);
  EXPECT_EQ(json.at("cpu_gemv_gbps").at("16"), 98);
  expect_same(machine_constants_from_json(json, "test"), c);
  EXPECT_TRUE(c.has_gpu());
  EXPECT_FALSE(MachineConstants{}.has_gpu());
}

TEST(MachineConstants, TheLaterRatesRoundTripAndMayBeAbsent) {
  MachineConstants c = sample();
  c.cpu_gemv_layer_gbps = 91;
  c.cpu_op_us = 12.5;
  c.gpu_launch_us = 4.5;
  c.split_cpu_gemv_gbps = 80;
  c.split_h2d_gbps = 45;
  c.cpu_expert_gbps = 96.5;
  c.moe_block_us = 38;
  nlohmann::json json = to_json(c);
  const MachineConstants back = machine_constants_from_json(json, "test");
  EXPECT_EQ(back.cpu_gemv_layer_gbps, 91);
  EXPECT_EQ(back.cpu_op_us, 12.5);
  EXPECT_EQ(back.gpu_launch_us, 4.5);
  EXPECT_EQ(back.split_cpu_gemv_gbps, 80);
  EXPECT_EQ(back.split_h2d_gbps, 45);
  EXPECT_EQ(back.cpu_expert_gbps, 96.5);
  EXPECT_EQ(back.moe_block_us, 38);
  // A file written before them is still valid: they read as "not measured".
  for (const char* key :
       {"cpu_gemv_layer_gbps", "cpu_op_us", "gpu_launch_us", "split_cpu_gemv_gbps",
        "split_h2d_gbps", "cpu_expert_gbps", "moe_block_us"}) {
    json.erase(key);
  }
  const MachineConstants old = machine_constants_from_json(json, "old.json");
  EXPECT_EQ(old.cpu_gemv_layer_gbps, 0);
  EXPECT_EQ(old.split_h2d_gbps, 0);
  EXPECT_EQ(old.cpu_expert_gbps, 0);
  EXPECT_EQ(old.moe_block_us, 0);
  EXPECT_EQ(old.h2d_gbps, 52.5);
  // Present, they must be numbers.
  json["cpu_op_us"] = "fast";
  try {
    machine_constants_from_json(json, "constants.json");
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("cpu_op_us"), std::string::npos) << e.what();
  }
}

TEST(MachineConstants, BadJsonNamesTheField) {
  nlohmann::json json = to_json(sample());
  json.erase("h2d_gbps");
  try {
    machine_constants_from_json(json, "constants.json");
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("constants.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("h2d_gbps"), std::string::npos) << e.what();
  }
  json = to_json(sample());
  json["cpu_gemv_gbps"] = {{"zero", 3}};
  EXPECT_THROW(machine_constants_from_json(json, "x"), InvalidArgument);
  json = to_json(sample());
  json["schema"] = "strata-machine-constants/0";
  EXPECT_THROW(machine_constants_from_json(json, "x"), InvalidArgument);
  EXPECT_THROW(machine_constants_from_json(nlohmann::json::array(), "x"), InvalidArgument);
}

TEST(MachineConstants, CacheFileIsKeyedByTheFingerprint) {
  // FNV-1a 64 of "a" is af63dc4c8601ec8c (the published test vector).
  EXPECT_EQ(calibration_cache_file("/c", "a"),
            std::filesystem::path("/c/machine-af63dc4c8601ec8c.json"));
  EXPECT_NE(calibration_cache_file("/c", "b"), calibration_cache_file("/c", "a"));
  const std::string fingerprint = hardware_fingerprint();
  EXPECT_TRUE(fingerprint.starts_with("cpu=")) << fingerprint;
  EXPECT_NE(fingerprint.find(";cores="), std::string::npos) << fingerprint;
  EXPECT_EQ(hardware_fingerprint(), fingerprint);
}

TEST(MachineConstants, CacheDirFollowsXdg) {
  const char* old_xdg = std::getenv("XDG_CACHE_HOME");
  const std::string saved = old_xdg ? old_xdg : "";
  ::setenv("XDG_CACHE_HOME", "/tmp/xdg-test", 1);
  EXPECT_EQ(calibration_cache_dir(), std::filesystem::path("/tmp/xdg-test/strata"));
  ::unsetenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  if (home != nullptr) {
    EXPECT_EQ(calibration_cache_dir(), std::filesystem::path(home) / ".cache" / "strata");
  }
  if (old_xdg != nullptr) ::setenv("XDG_CACHE_HOME", saved.c_str(), 1);
}

struct CountingMeasurer {
  int calls = 0;
  Measurer fn() {
    return [this] {
      ++calls;
      MachineConstants c = sample();
      c.host_read_gbps = 100 + calls;  // tells the measurements apart
      return c;
    };
  }
};

TEST(MachineConstants, MeasuredOnFirstUseThenReadFromTheCache) {
  testing::TempDir tmp;
  const CalibrationOptions options{.cache_dir = tmp.path() / "cache"};
  CountingMeasurer measurer;
  const Calibration first = load_or_measure(options, measurer.fn(), "fp-1");
  EXPECT_TRUE(first.measured);
  EXPECT_EQ(measurer.calls, 1);
  EXPECT_EQ(first.file, calibration_cache_file(tmp.path() / "cache", "fp-1"));
  EXPECT_TRUE(std::filesystem::is_regular_file(first.file));
  EXPECT_EQ(first.constants.fingerprint, "fp-1");
  EXPECT_TRUE(first.warnings.empty());

  const Calibration second = load_or_measure(options, measurer.fn(), "fp-1");
  EXPECT_FALSE(second.measured);
  EXPECT_EQ(measurer.calls, 1);
  expect_same(second.constants, first.constants);
  EXPECT_EQ(second.constants.host_read_gbps, 101);

  // Other hardware has its own file.
  const Calibration other = load_or_measure(options, measurer.fn(), "fp-2");
  EXPECT_TRUE(other.measured);
  EXPECT_NE(other.file, first.file);

  // --force measures again and replaces the file.
  const Calibration forced =
      load_or_measure({.force = true, .cache_dir = options.cache_dir}, measurer.fn(), "fp-1");
  EXPECT_TRUE(forced.measured);
  EXPECT_EQ(read_machine_constants(first.file).host_read_gbps, forced.constants.host_read_gbps);
}

TEST(MachineConstants, ACorruptCacheIsMeasuredAgainWithAWarning) {
  testing::TempDir tmp;
  const CalibrationOptions options{.cache_dir = tmp.path()};
  const std::filesystem::path file = calibration_cache_file(tmp.path(), "fp");
  {
    std::ofstream out(file);
    out << "{\"schema\": \"strata-machine-constants/1\", \"h2d_gbps\": ";  // truncated
  }
  CountingMeasurer measurer;
  const Calibration c = load_or_measure(options, measurer.fn(), "fp");
  EXPECT_TRUE(c.measured);
  EXPECT_EQ(measurer.calls, 1);
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find(file.string()), std::string::npos) << c.warnings[0];
  EXPECT_NE(c.warnings[0].find("measuring this machine again"), std::string::npos);
  // The file is whole again.
  expect_same(read_machine_constants(file), c.constants);

  // A file measured on other hardware (a copied cache directory) is measured again too.
  nlohmann::json foreign = to_json(sample());
  foreign["fingerprint"] = "someone else's";
  {
    std::ofstream out(file);
    out << foreign.dump();
  }
  const Calibration again = load_or_measure(options, measurer.fn(), "fp");
  EXPECT_TRUE(again.measured);
  ASSERT_EQ(again.warnings.size(), 1u);
  EXPECT_NE(again.warnings[0].find("someone else's"), std::string::npos) << again.warnings[0];
}

TEST(MachineConstants, AnUnwritableCacheIsAWarning) {
  testing::TempDir tmp;
  const std::filesystem::path blocker = tmp.path() / "file";
  std::ofstream(blocker) << "x";
  CountingMeasurer measurer;
  const Calibration c = load_or_measure({.cache_dir = blocker / "sub"}, measurer.fn(), "fp");
  EXPECT_TRUE(c.measured);
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("could not cache"), std::string::npos) << c.warnings[0];
}

TEST(MachineConstants, NoCacheDirectoryMeasuresWithAWarning) {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  const std::string saved_xdg = xdg ? xdg : "", saved_home = home ? home : "";
  ::unsetenv("XDG_CACHE_HOME");
  ::unsetenv("HOME");
  EXPECT_THROW(calibration_cache_dir(), InvalidArgument);
  CountingMeasurer measurer;
  const Calibration c = load_or_measure({}, measurer.fn(), "fp");
  if (xdg != nullptr) ::setenv("XDG_CACHE_HOME", saved_xdg.c_str(), 1);
  if (home != nullptr) ::setenv("HOME", saved_home.c_str(), 1);
  EXPECT_TRUE(c.measured);
  EXPECT_TRUE(c.file.empty());
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("XDG_CACHE_HOME"), std::string::npos) << c.warnings[0];
}

TEST(MachineConstants, HostBuffersLeaveTheLastLevelCache) {
  // By default the buffers are sized at measurement time: 4 x the last-level cache (this
  // machine's, read here from sysfs as the kernel reports it), clamped to [256 MiB, 4 GiB].
  EXPECT_EQ(MeasureOptions{}.host_bytes, 0);
  std::int64_t cache = 0;
  for (int index = 0; index < 8; ++index) {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
    std::string text;
    if (!(in >> text) || text.empty()) continue;
    const char unit = text.back();
    const std::int64_t scale = unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : 1;
    cache = std::max<std::int64_t>(cache, std::stoll(text) * scale);
  }
  const std::int64_t bytes = host_buffer_bytes();
  EXPECT_GE(bytes, std::int64_t{256} << 20);
  EXPECT_LE(bytes, std::int64_t{4} << 30);
  EXPECT_GE(bytes, std::min<std::int64_t>(4 * cache, std::int64_t{4} << 30)) << cache;
}

TEST(MachineConstants, AShortMeasurementMeasuresEveryCpuConstant) {
  testing::TempDir tmp;
  MeasureOptions options;
  options.host_bytes = std::int64_t{8} << 20;
  options.file_bytes = std::int64_t{16} << 20;
  options.scratch_dir = tmp.path();
  const MachineConstants c = measure_machine_constants(options);
  EXPECT_GT(c.host_read_gbps, 0);
  ASSERT_FALSE(c.cpu_gemv_gbps.empty());
  EXPECT_EQ(c.cpu_gemv_gbps.back().first, c.threads);
  EXPECT_GT(c.cpu_gemv_rate(c.threads), 0);
  EXPECT_GT(c.cpu_gemm_gflops, 0);
  EXPECT_GT(c.cpu_gemv_layer_gbps, 0);
  EXPECT_GT(c.cpu_op_us, 0);
  EXPECT_GT(c.cpu_expert_gbps, 0);
  EXPECT_GT(c.page_cache_read_gbps, 0);
  EXPECT_GT(c.disk_read_gbps, 0);
  EXPECT_TRUE(std::filesystem::is_empty(tmp.path())) << "the scratch file was left behind";
  // The JSON of a real measurement reads back.
  expect_same(machine_constants_from_json(to_json(c), "measured"), c);
}

}  // namespace
}  // namespace strata::engine
