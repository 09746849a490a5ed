#pragma once
// Shared by the nn tests: the reference's small test models (accelerate-semantics.md §3.1), the
// execution-device parameterisation (cpu in CI, cuda:0 on the device machine), and helpers.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ops/throws_naming.h"
#include "strata/big_modeling.h"
#include "strata/core/backend.h"
#include "support/op_testing.h"

namespace strata::testing {

using namespace strata::nn;  // NOLINT: tests read better with the nn names unqualified

// ---- models ----------------------------------------------------------------------------------

// nn.BatchNorm1d in eval mode: (x - running_mean) / sqrt(running_var + eps) * weight + bias.
// The per-feature scale and shift are computed on the host: a test model, not a fast layer.
class BatchNorm1d : public Module {
 public:
  explicit BatchNorm1d(std::int64_t features) : Module("BatchNorm1d") {
    create_parameter("weight", {features}, DType::Float32, 1.0);
    create_parameter("bias", {features}, DType::Float32, 0.0);
    create_buffer("running_mean", {features}, DType::Float32, 0.0);
    create_buffer("running_var", {features}, DType::Float32, 1.0);
    create_buffer("num_batches_tracked", {}, DType::Int64, 0.0);
  }
  Value forward(Args& args) override {
    const Tensor& x = args.tensor(0, "BatchNorm1d.forward");
    const auto host = [&](const Tensor& t) { return t.to(Device::cpu()).to_doubles(); };
    const std::vector<double> w = host(parameter("weight")), b = host(parameter("bias"));
    const std::vector<double> mean = host(buffer("running_mean")),
                              var = host(buffer("running_var"));
    std::vector<double> scale(w.size()), shift(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) {
      scale[i] = w[i] / std::sqrt(var[i] + 1e-5);
      shift[i] = b[i] - mean[i] * scale[i];
    }
    const auto n = static_cast<std::int64_t>(w.size());
    const Tensor s = Tensor::from_doubles(scale, {n}, x.dtype()).to(x.device());
    const Tensor t = Tensor::from_doubles(shift, {n}, x.dtype()).to(x.device());
    return ops::add(ops::mul(x, s), t);
  }
};

// linear1 = Linear(3, 4), batchnorm = BatchNorm1d(4), linear2 = Linear(4, 5).
class ModelForTest : public Module {
 public:
  ModelForTest() : Module("ModelForTest") {
    linear1 = register_module("linear1", std::make_shared<Linear>(3, 4));
    batchnorm = register_module("batchnorm", std::make_shared<BatchNorm1d>(4));
    linear2 = register_module("linear2", std::make_shared<Linear>(4, 5));
  }
  Value forward(Args& args) override {
    return (*linear2)((*batchnorm)((*linear1)(std::move(args))));
  }
  std::shared_ptr<Linear> linear1;
  std::shared_ptr<BatchNorm1d> batchnorm;
  std::shared_ptr<Linear> linear2;
};

// Holds a Linear it never calls: forward reads linear.weight and linear.bias directly.
class ModuleWithUnusedSubModules : public Module {
 public:
  ModuleWithUnusedSubModules(std::int64_t in, std::int64_t out)
      : Module("ModuleWithUnusedSubModules") {
    linear = register_module("linear", std::make_shared<Linear>(in, out));
  }
  Value forward(Args& args) override {
    return ops::linear(args.tensor(0, "ModuleWithUnusedSubModules"), linear->weight(),
                       linear->parameter("bias"));
  }
  std::shared_ptr<Linear> linear;
};

class ModelWithUnusedSubModulesForTest : public Module {
 public:
  ModelWithUnusedSubModulesForTest() : Module("ModelWithUnusedSubModulesForTest") {
    linear1 = register_module("linear1", std::make_shared<ModuleWithUnusedSubModules>(3, 4));
    linear2 = register_module("linear2", std::make_shared<ModuleWithUnusedSubModules>(4, 5));
    batchnorm = register_module("batchnorm", std::make_shared<BatchNorm1d>(5));
    linear3 = register_module("linear3", std::make_shared<ModuleWithUnusedSubModules>(5, 6));
    linear4 = register_module("linear4", std::make_shared<ModuleWithUnusedSubModules>(6, 5));
  }
  Value forward(Args& args) override {
    Value x = (*linear2)((*linear1)(std::move(args)));
    return (*linear4)((*linear3)((*batchnorm)(Args{x})));
  }
  std::shared_ptr<ModuleWithUnusedSubModules> linear1, linear2, linear3, linear4;
  std::shared_ptr<BatchNorm1d> batchnorm;
};

// Appended after another hook: records a module's tensor as the module's forward sees it.
class WeightProbe : public ModelHook {
 public:
  explicit WeightProbe(std::string name) : name_(std::move(name)) {}
  void pre_forward(Module& module, Args&) override {
    seen = module.has_buffer(name_) ? module.buffer(name_) : module.parameter(name_);
  }
  Tensor seen;

 private:
  std::string name_;
};

// Gives every floating-point parameter and buffer of `module` seeded random values; variances
// stay positive.
inline void randomize(Module& module, std::uint64_t seed = 1) {
  for (const TensorRef& ref : module.tensor_refs(true, true, /*recurse=*/true)) {
    const Tensor& t = ref.tensor();
    if (!is_floating_point(t.dtype())) continue;
    const bool variance = ref.local_name() == "running_var";
    ref.slot->set(
        random_tensor(t.shape(), t.dtype(), seed++, variance ? 0.5 : -1.0, variance ? 1.5 : 1.0)
            .to(t.device()));
  }
}

// Values of every tensor in the state dict, copied to the cpu (for comparing after hooks).
inline std::vector<std::pair<std::string, std::vector<double>>> snapshot(const Module& module) {
  std::vector<std::pair<std::string, std::vector<double>>> out;
  for (const auto& [name, tensor] : module.state_dict()) {
    out.emplace_back(name, tensor.to(Device::cpu()).to_doubles());
  }
  return out;
}

// Expects `actual` (any device) to hold the same values as `expected` (any device) within tol.
inline ::testing::AssertionResult same_values(const Tensor& actual, const Tensor& expected,
                                              Tolerance tol = {1e-5, 1e-5}) {
  if (actual.shape() != expected.shape()) {
    return ::testing::AssertionFailure()
           << "shapes differ: " << actual.describe() << " vs " << expected.describe();
  }
  return all_close(actual, expected.to(Device::cpu()).to_doubles(), tol);
}

// ---- execution device parameterisation -------------------------------------------------------

// Test bodies take their execution device from the parameter: "cpu" runs everywhere, "cuda:0"
// skips itself when no CUDA backend is registered.
class ExecutionDeviceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    device_ = Device::parse(GetParam());
    if (device_.is_cuda() && find_backend(DeviceType::CUDA) == nullptr) {
      GTEST_SKIP() << "no CUDA backend in this build or machine";
    }
  }
  Device device() const { return device_; }

 private:
  Device device_ = Device::cpu();
};

inline std::string device_test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name) {
    if (c == ':') c = '_';
  }
  return name;
}

#define STRATA_INSTANTIATE_DEVICE_TESTS(Suite)                                 \
  INSTANTIATE_TEST_SUITE_P(Devices, Suite, ::testing::Values("cpu", "cuda:0"), \
                           ::strata::testing::device_test_name)

}  // namespace strata::testing
