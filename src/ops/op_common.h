#pragma once
// Shared checks for op front ends. Each front end validates its inputs once with these, then
// calls the backend kernel for the device (src/cpu/*.cc, later src/cuda/*.cu).

#include <initializer_list>

#include "strata/core/error.h"
#include "strata/core/tensor.h"

namespace strata::ops::detail {

// The dtypes floating-point ops accept as inputs and outputs.
inline bool is_compute_float(DType dtype) {
  return dtype == DType::Float32 || dtype == DType::BFloat16 || dtype == DType::Float16;
}

// `t` is defined and not a meta tensor (ops need bytes).
void check_materialized(const char* op, const char* name, const Tensor& t);
// `t` has a float32/bfloat16/float16 dtype, else NotSupported naming op, device and dtype.
void check_float_dtype(const char* op, const char* name, const Tensor& t);
// Every tensor has the dtype of the first one.
void check_same_dtype(const char* op,
                      std::initializer_list<std::pair<const char*, const Tensor*>> tensors);
// Every tensor lives on the device of the first one.
void check_same_device(const char* op,
                       std::initializer_list<std::pair<const char*, const Tensor*>> tensors);
// `t` has `rank` dimensions.
void check_rank(const char* op, const char* name, const Tensor& t, std::int64_t rank);
// Throws NotSupported: `op` has no kernel for this device and dtype.
[[noreturn]] void unsupported(const char* op, Device device, DType dtype);

}  // namespace strata::ops::detail
