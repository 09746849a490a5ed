// Accelerate-style hooks on a module tree of your own.
//
// A hook runs around a module's forward: pre_forward may rewrite the arguments, post_forward the
// output. This program builds a small two-block network, then
//   1. attaches a tracing hook to every module and prints the order in which they run,
//   2. appends Strata's LayerwiseCastingHook (weights stored in bfloat16, computed in float32)
//      after the tracing hooks, and compares the output with the float32 one,
//   3. removes every hook and checks the plain output is back, bit for bit.
//
// Build: see examples/CMakeLists.txt (find_package(strata) + strata::strata).

#include <fmt/format.h>
#include <strata/big_modeling.h>
#include <strata/core/shape.h>
#include <strata/ops.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

using strata::DType;
using strata::Tensor;
namespace nn = strata::nn;

// Deterministic small weights, so every run prints the same numbers.
Tensor pattern(std::int64_t rows, std::int64_t cols, double scale) {
  std::vector<double> values;
  for (std::int64_t i = 0; i < rows * cols; ++i) values.push_back(scale * std::sin(1.0 + i));
  return Tensor::from_doubles(values, {rows, cols}, DType::Float32);
}

// A residual MLP block: x + down(relu(up(x))). Submodules are registered by name, and those names
// are the dotted names hooks, device maps and checkpoints use ("block1.up.weight").
class ResidualMlp : public nn::Module {
 public:
  ResidualMlp(std::int64_t width, std::int64_t hidden) : nn::Module("ResidualMlp") {
    up_ = register_module("up", std::make_shared<nn::Linear>(width, hidden));
    down_ = register_module("down", std::make_shared<nn::Linear>(hidden, width));
    nn::set_module_tensor_to_device(*this, "up.weight", strata::Device::cpu(),
                                    pattern(hidden, width, 0.5));
    nn::set_module_tensor_to_device(*this, "down.weight", strata::Device::cpu(),
                                    pattern(width, hidden, 0.25));
  }
  nn::Value forward(nn::Args& args) override {
    const Tensor& x = args.tensor(0, "ResidualMlp.forward");
    const Tensor h = strata::ops::relu((*up_)(x).tensor());
    return strata::ops::add(x, (*down_)(h).tensor());
  }

 private:
  std::shared_ptr<nn::Linear> up_;
  std::shared_ptr<nn::Linear> down_;
};

class TinyNet : public nn::Module {
 public:
  TinyNet() : nn::Module("TinyNet") {
    block0_ = register_module("block0", std::make_shared<ResidualMlp>(4, 8));
    block1_ = register_module("block1", std::make_shared<ResidualMlp>(4, 8));
  }
  nn::Value forward(nn::Args& args) override { return (*block1_)((*block0_)(std::move(args))); }

 private:
  std::shared_ptr<ResidualMlp> block0_;
  std::shared_ptr<ResidualMlp> block1_;
};

// Prints "-> name (Class)" before and "<- name [shape]" after the module's forward.
class TraceHook : public nn::ModelHook {
 public:
  explicit TraceHook(std::string name) : name_(std::move(name)) {}
  void pre_forward(nn::Module& module, nn::Args&) override {
    std::printf("  -> %s (%s)\n", name_.c_str(), module.class_name().c_str());
  }
  void post_forward(nn::Module&, nn::Value& output) override {
    std::printf("  <- %s %s\n", name_.c_str(), strata::shape_str(output.tensor().shape()).c_str());
  }
  std::string describe() const override { return "TraceHook(" + name_ + ")"; }

 private:
  std::string name_;
};

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_doubles(), y = b.to_doubles();
  double worst = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(x[i] - y[i]));
  return worst;
}

int main() {
  TinyNet model;
  const Tensor input = pattern(2, 4, 1.0);  // a batch of two rows
  const Tensor plain = model(input).tensor();

  // 1. A tracing hook on every module (root included, as "").
  std::printf("forward with a trace hook on every module:\n");
  for (auto& [name, module] : model.named_modules()) {
    strata::add_hook_to_module(*module,
                               std::make_shared<TraceHook>(name.empty() ? "<root>" : name));
  }
  const Tensor traced = model(input).tensor();
  std::printf("traced output equals the plain output: %s\n",
              max_abs_diff(traced, plain) == 0.0 ? "yes" : "no");

  // 2. Layerwise casting, appended after the trace hooks of the Linear layers: their weights are
  //    stored in bfloat16 and cast to float32 around each forward.
  strata::attach_layerwise_casting_hooks(model, DType::BFloat16, DType::Float32);
  std::printf("hook on block0.up: %s\n",
              model.get_submodule("block0.up").hook()->describe().c_str());
  std::printf(
      "weight dtype between forwards: %s\n",
      fmt::format("{}", model.get_submodule("block0.up").parameter("weight").dtype()).c_str());
  std::printf("forward with the trace hooks and layerwise casting:\n");
  const Tensor cast = model(input).tensor();
  const double cast_error = max_abs_diff(cast, plain);
  // bfloat16 keeps 8 significant bits: weights move by at most 2^-9 of their size.
  std::printf("bfloat16-stored output within 1e-2 of float32: %s\n",
              cast_error < 1e-2 ? "yes" : "no");

  // 3. Removing the hooks leaves a plain module tree (the bfloat16 weights stay bfloat16).
  strata::remove_hook_from_submodules(model);
  std::printf("hooks left after remove_hook_from_submodules: %s\n",
              model.get_submodule("block0.up").hook() == nullptr ? "none" : "some");
  return cast_error < 1e-2 && max_abs_diff(traced, plain) == 0.0 ? 0 : 1;
}
