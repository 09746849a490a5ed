#include "ops/op_common.h"

namespace strata::ops::detail {

void check_materialized(const char* op, const char* name, const Tensor& t) {
  STRATA_CHECK_ARG(t.defined(), "{}: input '{}' is an undefined tensor", op, name);
  STRATA_CHECK_ARG(!t.is_meta(), "{}: input '{}' ({}) is a meta tensor with no data; load or "
                   "initialise its weights before running it", op, name, t.describe());
}

void check_float_dtype(const char* op, const char* name, const Tensor& t) {
  if (!is_compute_float(t.dtype())) {
    STRATA_THROW(NotSupported,
                 "{}: input '{}' has dtype {} on {}; this op takes float32, bfloat16 or float16 "
                 "(cast it first with Tensor::to)", op, name, t.dtype(), t.device());
  }
}

void check_same_dtype(const char* op,
                      std::initializer_list<std::pair<const char*, const Tensor*>> tensors) {
  const auto& first = *tensors.begin();
  for (const auto& [name, t] : tensors) {
    STRATA_CHECK_ARG(t->dtype() == first.second->dtype(),
                     "{}: '{}' has dtype {} but '{}' has dtype {}; cast them to one dtype", op,
                     name, t->dtype(), first.first, first.second->dtype());
  }
}

void check_same_device(const char* op,
                       std::initializer_list<std::pair<const char*, const Tensor*>> tensors) {
  const auto& first = *tensors.begin();
  for (const auto& [name, t] : tensors) {
    STRATA_CHECK_ARG(t->device() == first.second->device(),
                     "{}: '{}' is on {} but '{}' is on {}; move them to one device", op, name,
                     t->device(), first.first, first.second->device());
  }
}

void check_rank(const char* op, const char* name, const Tensor& t, std::int64_t rank) {
  STRATA_CHECK_ARG(t.dim() == rank, "{}: '{}' must have {} dimensions, got {} ({})", op, name,
                   rank, t.dim(), t.describe());
}

void unsupported(const char* op, Device device, DType dtype) {
  STRATA_THROW(NotSupported, "{}: no kernel for dtype {} on device {}", op, dtype, device);
}

}  // namespace strata::ops::detail
