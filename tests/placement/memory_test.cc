// Memory sizes, budgets and device-map values. Expected sizes are the reference's observed
// outputs (accelerate-semantics.md §1.10).

#include <gtest/gtest.h>

#include "placement/placement_testing.h"
#include "strata/core/backend.h"
#include "strata/core/error.h"

namespace strata::placement {
namespace {

using testing::LogCapture;

TEST(ParseMemorySize, MatchesTheReference) {
  const std::vector<std::pair<std::string, std::int64_t>> cases = {
      {"0MB", 0},
      {"100MB", 100000000},
      {"2GiB", 2147483648},
      {"512KiB", 524288},
      {"1.5GB", 1500000000},
      {"100KB", 100000},
      {"10GIB", 10737418240},
      {"10 GB", 10000000000},
      {"1e3KB", 1000000},
      {"3KB", 3000},
      {"0.5GiB", 536870912},
      {"1.5GiB", 1610612736},
      {"+2MiB", 2097152},
      {"-0.0001KB", 0},  // int(-0.1) is 0 in Python too
  };
  for (const auto& [text, bytes] : cases) EXPECT_EQ(parse_memory_size(text), bytes) << text;
}

TEST(ParseMemorySize, LowercaseBIsBitsWithAWarning) {
  const std::vector<std::pair<std::string, std::int64_t>> cases = {{"10Gb", 1250000000},
                                                                   {"10gb", 1250000000},
                                                                   {"5gb", 625000000},
                                                                   {"3kb", 375},
                                                                   {"2mb", 250000}};
  for (const auto& [text, bytes] : cases) {
    LogCapture log;
    EXPECT_EQ(parse_memory_size(text), bytes) << text;
    ASSERT_EQ(log.warnings.size(), 1u) << text;
    EXPECT_TRUE(log.warned("'" + text + "'")) << log.warnings[0];
    EXPECT_TRUE(log.warned("bits")) << log.warnings[0];
  }
  LogCapture log;
  EXPECT_EQ(parse_memory_size("5GB"), 5000000000);
  EXPECT_TRUE(log.warnings.empty());
}

TEST(ParseMemorySize, RejectsWhatTheReferenceRejects) {
  for (const char* text : {"5MBB", "5k0MB", "-1GB", "7", "1TB", "10", "", "GB", "inf GB", "nanMB",
                           "1e30GB", "0x10MB"}) {
    try {
      parse_memory_size(text);
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const InvalidArgument& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("'" + std::string(text) + "'"), std::string::npos) << message;
      EXPECT_NE(message.find("GiB"), std::string::npos) << message;  // says what is accepted
    }
  }
}

TEST(FormatBytes, PicksAUnit) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(3221225472), "3.00 GiB");
}

TEST(MapDevice, ParsesTheDeviceMapSpellings) {
  EXPECT_EQ(MapDevice("cpu"), MapDevice::cpu());
  EXPECT_EQ(MapDevice("disk"), MapDevice::disk());
  EXPECT_EQ(MapDevice("mps"), MapDevice::mps());
  EXPECT_EQ(MapDevice("cuda:3"), MapDevice::gpu(3));
  EXPECT_EQ(MapDevice("2"), MapDevice(2));
  EXPECT_EQ(MapDevice(1).str(), "1");
  EXPECT_EQ(MapDevice(1).repr(), "1");
  EXPECT_EQ(MapDevice::cpu().repr(), "'cpu'");
  EXPECT_EQ(MapDevice(1).device(), Device::cuda(1));
  EXPECT_EQ(MapDevice::disk().device(), Device::cpu());
  EXPECT_EQ(MapDevice::mps().device(), std::nullopt);
  EXPECT_EQ(MapDevice::from_device(Device::cuda(2)), MapDevice(2));
  EXPECT_EQ(MapDevice::from_device(Device::cpu()), MapDevice::cpu());
  for (const char* bad : {"gpu0", "cuda:-1", "-1", "", "cuda:", "CPU", "meta"}) {
    EXPECT_THROW(MapDevice{std::string_view(bad)}, InvalidArgument) << bad;
  }
  EXPECT_THROW(MapDevice(-1), InvalidArgument);
  EXPECT_THROW(MapDevice::from_device(Device::meta()), InvalidArgument);
}

TEST(MapDevice, OrdersLikePlanning) {
  std::vector<MapDevice> devices = {"disk", "cpu", 3, "mps", 0};
  std::sort(devices.begin(), devices.end());
  EXPECT_EQ(devices, (std::vector<MapDevice>{0, 3, "mps", "cpu", "disk"}));
}

TEST(MaxMemory, ResolvesBudgetsAndNamesTheDeviceOnErrors) {
  const MaxMemory budgets = {{0, "1GB"}, {1, "1GiB"}, {"cpu", "10MB"}, {"disk", "1KB"}};
  EXPECT_EQ(budgets.at(0), 1000000000);
  EXPECT_EQ(budgets.at(1), 1073741824);
  EXPECT_EQ(budgets.at("cpu"), 10000000);
  EXPECT_EQ(budgets.at("disk"), 1000);
  EXPECT_EQ(budgets.str(), "{0: 1000000000, 1: 1073741824, 'cpu': 10000000, 'disk': 1000}");
  const auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([] { MaxMemory m = {{0, "10"}}; }).find("max_memory[0]"), std::string::npos);
  EXPECT_NE(message([] {
              MaxMemory m = {{"cpu", -5}};
            }).find("max_memory[cpu]"),
            std::string::npos);
  EXPECT_NE(message([] {
              MaxMemory m = {{0, 1}, {"cuda:0", 2}};
            }).find("twice"),
            std::string::npos);
  EXPECT_NE(message([&] { budgets.at(5); }).find("device 5"), std::string::npos);
}

TEST(GetMaxMemory, SortsGpusThenMpsCpuDisk) {
  LogCapture log;  // GPU indices this machine lacks are warned about, not refused
  const MaxMemory sorted = get_max_memory(MaxMemory{{"cpu", 5}, {1, 7}, {0, 3}, {"disk", 9}});
  EXPECT_EQ(sorted.entries(),
            (std::vector<MaxMemory::Entry>{{0, 3}, {1, 7}, {"cpu", 5}, {"disk", 9}}));
  EXPECT_EQ(get_max_memory(MaxMemory{{"disk", 1}, {"mps", 2}}).str(), "{'mps': 2, 'disk': 1}");
}

TEST(GetMaxMemory, WarnsAboutGpusTheMachineLacks) {
  const DeviceBackend* cuda = find_backend(DeviceType::CUDA);
  const int gpus = cuda ? cuda->device_count() : 0;
  LogCapture log;
  get_max_memory(MaxMemory{{gpus + 1, 100}});
  EXPECT_TRUE(log.warned("GPU " + std::to_string(gpus + 1)))
      << ::testing::PrintToString(log.warnings);
}

TEST(GetMaxMemory, MeasuresTheMachineWhenNoBudgetIsGiven) {
  const MaxMemory measured = get_max_memory();
  ASSERT_FALSE(measured.empty());
  EXPECT_EQ(measured.entries().back().first, MapDevice::cpu());
  EXPECT_GT(measured.at("cpu"), 0);
  const DeviceBackend* cuda = find_backend(DeviceType::CUDA);
  const int gpus = cuda ? cuda->device_count() : 0;
  EXPECT_LE(measured.size(), static_cast<std::size_t>(gpus) + 1);
  for (const auto& [device, bytes] : measured) {
    if (device.is_gpu()) EXPECT_LT(device.index(), gpus);
  }
}

TEST(DeviceMapHelpers, LongestPrefixAndUnorderedComparison) {
  const DeviceMap map = {{"a", 0}, {"a.b", 1}, {"c", "cpu"}};
  EXPECT_EQ(device_for(map, "a.x.weight"), MapDevice(0));
  EXPECT_EQ(device_for(map, "a.b.weight"), MapDevice(1));
  EXPECT_EQ(device_for(map, "a.bc"), MapDevice(0));  // "a.b" is not a prefix of "a.bc"
  EXPECT_EQ(device_for(map, "d"), std::nullopt);
  EXPECT_EQ(device_for({{"", "disk"}}, "anything"), MapDevice::disk());
  EXPECT_TRUE(same_device_map({{"x", 0}, {"y", 1}}, {{"y", 1}, {"x", 0}}));
  EXPECT_FALSE(same_device_map({{"x", 0}, {"y", 1}}, {{"y", 0}, {"x", 0}}));
  EXPECT_FALSE(same_device_map({{"x", 0}}, {{"x", 0}, {"y", 0}}));
  EXPECT_EQ(device_map_str({{"linear1", 0}, {"linear2", "cpu"}}),
            "{'linear1': 0, 'linear2': 'cpu'}");
}

}  // namespace
}  // namespace strata::placement
