// GatedMLP computes its first half with ops::swiglu where that gives the numbers of calling its
// modules (plain bias-free Linears, SiLU, hooks that move nothing): on a GPU, one launch for up
// to 8 rows. Checked against the same module with a hook on gate_proj that does nothing but
// forces the module calls, bit for bit, on every device.

#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "strata/models/decoder.h"
#include "strata/nn/align_devices_hook.h"
#include "strata/nn/hooks.h"
#include "strata/nn/module.h"
#include "support/op_testing.h"

namespace strata::testing {
namespace {

// Calls the module as it is: no fused path may skip it.
class Observer : public nn::ModelHook {
 public:
  void pre_forward(nn::Module&, nn::Args&) override { ++calls; }
  int calls = 0;
};

void randomize_parameters(nn::Module& module, DType dtype, std::uint64_t seed) {
  for (const nn::TensorRef& ref : module.tensor_refs(true, false, /*recurse=*/true)) {
    ref.slot->set(random_tensor(ref.tensor().shape(), dtype, seed++, -0.3, 0.3));
  }
}

class GatedMlpTest : public OpTest {};

TEST_P(GatedMlpTest, SwigluPathGivesTheBitsOfTheModuleCalls) {
  for (const bool bias : {false, true}) {
    for (const models::Activation act : {models::Activation::SiLU, models::Activation::GeluTanh}) {
      models::GatedMLP mlp("LlamaMLP", models::GatedMLP::Naming::Llama, 64, 96, bias, act, dtype());
      randomize_parameters(mlp, dtype(), 11);
      mlp.to(device());
      for (const std::int64_t rows : {1, 3, 8, 12}) {
        const Tensor x = on_device(random_tensor({rows, 64}, dtype(), 5 + rows, -2.0, 2.0));
        const Tensor direct = mlp(x).tensor();
        auto observer = std::make_shared<Observer>();
        nn::add_hook_to_module(mlp.get_submodule("gate_proj"), observer);
        const Tensor called = mlp(x).tensor();
        nn::remove_hook_from_module(mlp.get_submodule("gate_proj"));
        EXPECT_EQ(observer->calls, 1);
        const Tensor a = direct.to(Device::cpu()), b = called.to(Device::cpu());
        ASSERT_EQ(a.shape(), b.shape());
        EXPECT_EQ(std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()), 0)
            << "rows " << rows << (bias ? ", bias" : "") << ", activation "
            << static_cast<int>(act);
      }
    }
  }
}

// A dispatched module's resident hooks (an AlignDevicesHook on its execution device) keep the
// fused path's numbers too.
TEST_P(GatedMlpTest, ResidentHooksKeepTheNumbers) {
  models::GatedMLP mlp("LlamaMLP", models::GatedMLP::Naming::Llama, 64, 32, false,
                       models::Activation::SiLU, dtype());
  randomize_parameters(mlp, dtype(), 3);
  mlp.to(device());
  const Tensor x = on_device(random_tensor({2, 64}, dtype(), 4, -2.0, 2.0));
  const Tensor plain = mlp(x).tensor().to(Device::cpu());
  for (const char* name : {"gate_proj", "up_proj", "act_fn", "down_proj"}) {
    nn::AlignDevicesOptions options;
    options.execution_device = device();
    nn::add_hook_to_module(mlp.get_submodule(name),
                           std::make_shared<nn::AlignDevicesHook>(options));
  }
  const Tensor hooked = mlp(x).tensor().to(Device::cpu());
  EXPECT_EQ(std::memcmp(plain.data_ptr(), hooked.data_ptr(), plain.nbytes()), 0);
}

INSTANTIATE_TEST_SUITE_P(Devices, GatedMlpTest, STRATA_OP_CASES());

}  // namespace
}  // namespace strata::testing
