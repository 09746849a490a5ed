#include "support/op_testing.h"

#include <cmath>
#include <random>

#include <fmt/format.h>

#include "strata/core/backend.h"

namespace strata::testing {

Tolerance tolerance_for(DType dtype) {
  switch (dtype) {
    case DType::Float32: return {1e-5, 1e-5};
    case DType::Float16: return {2e-3, 2e-3};   // 11-bit significand, one rounding plus slack
    case DType::BFloat16: return {1.6e-2, 1.6e-2};  // 8-bit significand
    default: return {0.0, 0.0};
  }
}

Tensor random_tensor(const Shape& shape, DType dtype, std::uint64_t seed, double lo, double hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> values(static_cast<std::size_t>(shape_numel(shape)));
  for (auto& v : values) v = dist(rng);
  return Tensor::from_doubles(values, shape, dtype);
}

Tensor random_int_tensor(const Shape& shape, DType dtype, std::uint64_t seed, std::int64_t lo,
                         std::int64_t hi) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> dist(lo, hi - 1);
  std::vector<double> values(static_cast<std::size_t>(shape_numel(shape)));
  for (auto& v : values) v = static_cast<double>(dist(rng));
  return Tensor::from_doubles(values, shape, dtype);
}

Tensor make_noncontiguous(const Tensor& t) {
  const Shape& shape = t.shape();
  if (shape.empty()) return t.clone();
  // Store the elements interleaved with padding (innermost stride 2) and, for rank >= 2, with
  // the first two dimensions swapped in memory, then view them back in t's shape.
  Shape storage_shape = shape;
  if (shape.size() >= 2) std::swap(storage_shape[0], storage_shape[1]);
  storage_shape.push_back(2);
  Tensor buffer = Tensor::full(storage_shape, 12345.0, t.dtype(), t.device());
  Tensor view = buffer.select(-1, 1);
  if (shape.size() >= 2) view = view.transpose(0, 1);
  view.copy_(t);
  return view;
}

::testing::AssertionResult all_close(const Tensor& actual, const std::vector<double>& expected,
                                     Tolerance tol, const std::string& what) {
  if (actual.numel() != static_cast<std::int64_t>(expected.size())) {
    return ::testing::AssertionFailure() << what << ": result has " << actual.numel()
                                         << " elements, expected " << expected.size();
  }
  const std::vector<double> got = actual.to_doubles();
  std::size_t mismatches = 0;
  std::string first;
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double e = expected[i];
    const double a = got[i];
    bool ok;
    if (std::isnan(e) || std::isnan(a)) {
      ok = std::isnan(e) && std::isnan(a);
    } else if (std::isinf(e) || std::isinf(a)) {
      ok = a == e;
    } else {
      const double err = std::abs(a - e);
      worst = std::max(worst, err - tol.rtol * std::abs(e));
      ok = err <= tol.atol + tol.rtol * std::abs(e);
    }
    if (!ok) {
      if (mismatches < 5) first += fmt::format("\n  [{}] got {} expected {}", i, a, e);
      ++mismatches;
    }
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << mismatches << " of " << got.size() << " elements differ beyond atol="
         << tol.atol << " rtol=" << tol.rtol << " (" << actual.describe() << ")" << first;
}

std::string dtype_test_name(DType dtype) { return std::string(dtype_name(dtype)); }

void PrintTo(const OpCase& c, std::ostream* os) { *os << c.device << " " << c.dtype; }

std::vector<OpCase> op_cases(const std::vector<DType>& dtypes) {
  std::vector<OpCase> cases;
  for (const Device device : {Device::cpu(), Device::cuda(0)}) {
    for (const DType dtype : dtypes) cases.push_back({device, dtype});
  }
  return cases;
}

std::string op_case_name(const ::testing::TestParamInfo<OpCase>& info) {
  const Device d = info.param.device;
  const std::string device = d.is_cuda() ? fmt::format("cuda{}", d.index()) : d.str();
  return device + "_" + dtype_test_name(info.param.dtype);
}

bool device_available(Device device) {
  if (device.is_cpu()) return true;
  if (!device.is_cuda()) return false;
  const DeviceBackend* backend = find_backend(DeviceType::CUDA);
  return backend != nullptr && device.index() < backend->device_count();
}

void OpTest::SetUp() {
  if (!device_available(device())) GTEST_SKIP() << device() << " is not available here";
}

}  // namespace strata::testing
