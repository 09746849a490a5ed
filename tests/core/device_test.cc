#include <gtest/gtest.h>

#include <unordered_set>

#include "strata/core/backend.h"
#include "strata/core/device.h"
#include "strata/core/error.h"

namespace strata {
namespace {

TEST(Device, ParsesTheAcceptedForms) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("meta"), Device::meta());
  EXPECT_EQ(Device::parse("cuda"), Device::cuda());
  EXPECT_FALSE(Device::parse("cuda").has_index());
  EXPECT_EQ(Device::parse("cuda:0"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:13"), Device::cuda(13));
  EXPECT_EQ(Device::parse("1"), Device::cuda(1));  // device-map convention: an int is a GPU
  EXPECT_EQ(Device::from_index(2), Device::cuda(2));
}

TEST(Device, FormatsLikePyTorch) {
  EXPECT_EQ(Device::cpu().str(), "cpu");
  EXPECT_EQ(Device::meta().str(), "meta");
  EXPECT_EQ(Device::cuda().str(), "cuda");
  EXPECT_EQ(Device::cuda(3).str(), "cuda:3");
  EXPECT_EQ(fmt::format("{}", Device::cuda(1)), "cuda:1");
  for (const char* text : {"cpu", "meta", "cuda", "cuda:7"}) {
    EXPECT_EQ(Device::parse(text).str(), text);
  }
}

TEST(Device, RejectsEverythingElseClearly) {
  for (const char* text : {"", "gpu", "cuda:", "cuda:-1", "cuda:x", "cuda:1x", "-1", "disk", "CPU",
                           "mps", " cpu"}) {
    try {
      Device::parse(text);
      FAIL() << "accepted '" << text << "'";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("invalid device"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(Device::from_index(-3), InvalidArgument);
}

TEST(Device, DiskIsExplainedAsATier) {
  try {
    Device::parse("disk");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("placement tier"), std::string::npos);
  }
}

TEST(Device, Hashable) {
  std::unordered_set<Device> set = {Device::cpu(), Device::cuda(0), Device::cuda(1), Device::cpu()};
  EXPECT_EQ(set.size(), 3u);
}

TEST(Device, CudaWithoutBackendIsADeviceError) {
  if (find_backend(DeviceType::CUDA) != nullptr) GTEST_SKIP() << "a CUDA backend is registered";
  EXPECT_THROW(backend_for(Device::cuda(0)), DeviceError);
}

}  // namespace
}  // namespace strata
