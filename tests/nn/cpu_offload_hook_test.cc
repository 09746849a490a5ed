// CpuOffload and UserCpuOffloadHook (accelerate-semantics.md §1.3, §3.9).

#include "nn/nn_testing.h"

namespace strata::testing {
namespace {

class CpuOffloadTest : public ExecutionDeviceTest {
 protected:
  void SetUp() override {
    ExecutionDeviceTest::SetUp();
    if (IsSkipped()) return;
    randomize(*model1_, 1);
    randomize(*model2_, 50);
    x_ = random_tensor({2, 3}, DType::Float32, 42);
    expected1_ = (*model1_)(x_).tensor();
    expected2_ = (*model2_)(x_).tensor();
  }
  std::shared_ptr<ModelForTest> model1_ = std::make_shared<ModelForTest>();
  std::shared_ptr<ModelForTest> model2_ = std::make_shared<ModelForTest>();
  Tensor x_, expected1_, expected2_;
};

TEST_P(CpuOffloadTest, MovesTheModelAtFirstForwardAndKeepsItThere) {
  model1_->to(device());
  auto hook = std::make_shared<CpuOffload>(device());
  add_hook_to_module(*model1_, hook);
  EXPECT_TRUE(model1_->linear1->weight().is_cpu());  // init_hook offloads to the cpu
  for (int pass = 0; pass < 2; ++pass) {
    // A cpu input is moved every time, also once the model is in place (B17).
    const Tensor y = (*model1_)(x_).tensor();
    EXPECT_EQ(y.device(), device());
    EXPECT_TRUE(same_values(y, expected1_));
    EXPECT_EQ(model1_->linear2->weight().device(), device());
  }
  remove_hook_from_module(*model1_);
  EXPECT_EQ(model1_->linear1->weight().device(), device());  // weights stay where they are
}

TEST_P(CpuOffloadTest, PreviousModelIsOffloadedWhenTheNextOneRuns) {
  auto hook1 = std::make_shared<CpuOffload>(device());
  add_hook_to_module(*model1_, hook1);
  auto user_hook1 = std::make_shared<UserCpuOffloadHook>(model1_, hook1);
  auto hook2 = std::make_shared<CpuOffload>(device(), user_hook1);
  add_hook_to_module(*model2_, hook2);
  EXPECT_TRUE(same_values((*model1_)(x_).tensor(), expected1_));
  EXPECT_EQ(model1_->linear1->weight().device(), device());
  EXPECT_TRUE(same_values((*model2_)(x_).tensor(), expected2_));
  EXPECT_TRUE(model1_->linear1->weight().is_cpu());
  EXPECT_EQ(model2_->linear1->weight().device(), device());
  // The last model in a pipeline is offloaded by hand; remove() detaches the hook.
  UserCpuOffloadHook user_hook2(model2_, hook2);
  user_hook2.offload();
  EXPECT_TRUE(model2_->linear2->weight().is_cpu());
  user_hook2.remove();
  EXPECT_EQ(model2_->hook(), nullptr);
}

STRATA_INSTANTIATE_DEVICE_TESTS(CpuOffloadTest);

TEST(CpuOffloadDefaults, ExecutionDeviceIsConcrete) {
  const Device expected = find_backend(DeviceType::CUDA) != nullptr &&
                                  find_backend(DeviceType::CUDA)->device_count() > 0
                              ? Device::cuda(0)
                              : Device::cpu();
  EXPECT_EQ(default_execution_device(), expected);
  EXPECT_EQ(CpuOffload().execution_device(), expected);  // never a bare "cuda" (B17)
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [] { UserCpuOffloadHook(nullptr, std::make_shared<CpuOffload>()); }, {"UserCpuOffloadHook"}));
}

}  // namespace
}  // namespace strata::testing
