#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "ops/throws_naming.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata {
namespace {

using testing::all_close;
using testing::random_tensor;
using testing::throws_naming;
using testing::tolerance_for;

// An op and its definition in double (torch.nn.functional's formulas).
struct Activation {
  const char* name;     // of the case
  const char* op_name;  // what the op calls itself in errors
  std::function<Tensor(const Tensor&)> op;
  double (*reference)(double);
};

const std::vector<Activation>& activations() {
  static const std::vector<Activation> list = {
      {"silu", "silu", [](const Tensor& x) { return ops::silu(x); },
       [](double x) { return x / (1.0 + std::exp(-x)); }},
      {"gelu", "gelu", [](const Tensor& x) { return ops::gelu(x); },
       [](double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }},
      {"gelu_tanh", "gelu",
       [](const Tensor& x) { return ops::gelu(x, ops::GeluApproximation::Tanh); },
       [](double x) {
         const double inner = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
         return 0.5 * x * (1.0 + std::tanh(inner));
       }},
      {"relu", "relu", [](const Tensor& x) { return ops::relu(x); },
       [](double x) { return x > 0.0 || std::isnan(x) ? x : 0.0; }},
      {"tanh", "tanh", [](const Tensor& x) { return ops::tanh(x); },
       [](double x) { return std::tanh(x); }},
  };
  return list;
}

std::vector<double> map_reference(const Tensor& x, double (*f)(double)) {
  std::vector<double> out = x.to_doubles();
  for (double& v : out) v = f(v);
  return out;
}

class ActivationTest : public testing::OpTest {
 protected:
  // x is on the CPU; each activation runs on the case's device.
  void check_all(const Tensor& x, const std::string& what) { check_all(x, on_device(x), what); }
  // `input` is x on the device, in any layout.
  void check_all(const Tensor& x, const Tensor& input, const std::string& what) {
    for (const Activation& a : activations()) {
      const Tensor y = a.op(input);
      EXPECT_EQ(y.device(), device()) << a.name << " " << what;
      EXPECT_EQ(y.shape(), x.shape()) << a.name << " " << what;
      EXPECT_EQ(y.dtype(), x.dtype()) << a.name << " " << what;
      EXPECT_TRUE(y.is_contiguous()) << a.name << " " << what;
      EXPECT_TRUE(all_close(y, map_reference(x, a.reference), tolerance_for(x.dtype()),
                            std::string(a.name) + " " + what));
    }
  }
};

TEST_P(ActivationTest, OddSizes) {
  const Shape shapes[] = {{1}, {3}, {17}, {4097}, {3, 5, 7}, {}};
  std::uint64_t seed = 1;
  for (const Shape& shape : shapes) {
    check_all(random_tensor(shape, dtype(), seed++, -6.0, 6.0), shape_str(shape));
  }
}

TEST_P(ActivationTest, LargeTensorRunsInParallelChunks) {
  check_all(random_tensor({65, 1031}, dtype(), 7, -8.0, 8.0), "[65, 1031]");
}

TEST_P(ActivationTest, NonContiguousInput) {
  const Tensor x = random_tensor({5, 7, 9}, dtype(), 8, -4.0, 4.0);
  const Tensor strided = testing::make_noncontiguous(on_device(x));
  ASSERT_FALSE(strided.is_contiguous());
  check_all(x, strided, "non-contiguous");
  const Tensor t = random_tensor({6, 10}, dtype(), 9);
  check_all(t.transpose(0, 1), on_device(t).transpose(0, 1), "transposed");
}

TEST_P(ActivationTest, SpecialValues) {
  // Saturated tails, signed zeros; relu keeps NaN and +inf, and maps -inf to 0.
  const double inf = std::numeric_limits<double>::infinity();
  check_all(Tensor::from_doubles({-30.0, -10.0, -0.0, 0.0, 10.0, 30.0}, {6}, dtype()), "tails");
  const Tensor special = on_device(Tensor::from_doubles({-inf, inf, std::nan("")}, {3}, dtype()));
  EXPECT_TRUE(all_close(ops::relu(special), {0.0, inf, std::nan("")}, {0.0, 0.0}, "relu"));
}

INSTANTIATE_TEST_SUITE_P(Devices, ActivationTest, STRATA_OP_CASES());

TEST(ActivationErrors, RejectsBadInputs) {
  const Tensor meta = Tensor::empty({4}, DType::BFloat16, Device::meta());
  const Tensor ints = Tensor::zeros({4}, DType::Int64);
  for (const Activation& a : activations()) {
    EXPECT_TRUE(throws_naming<InvalidArgument>([&] { a.op(meta); }, {a.op_name})) << a.name;
    EXPECT_TRUE(throws_naming<NotSupported>([&] { a.op(ints); }, {a.op_name})) << a.name;
  }
}

}  // namespace
}  // namespace strata
