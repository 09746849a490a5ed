#pragma once
// The checks rms_norm and layer_norm share: x is [..., dim] and each affine parameter is [dim]
// with x's dtype and device.

#include "ops/op_common.h"

namespace strata::ops::detail {

inline void check_norm_input(const char* op, const Tensor& x) {
  check_materialized(op, "x", x);
  check_float_dtype(op, "x", x);
  STRATA_CHECK_ARG(x.dim() >= 1, "{}: 'x' must be [..., dim], got a 0-dimensional tensor ({})", op,
                   x.describe());
}

inline void check_norm_param(const char* op, const char* name, const Tensor& param,
                             const Tensor& x) {
  check_materialized(op, name, param);
  check_same_dtype(op, {{"x", &x}, {name, &param}});
  check_same_device(op, {{"x", &x}, {name, &param}});
  STRATA_CHECK_ARG(param.dim() == 1 && param.size(0) == x.size(-1),
                   "{}: '{}' ({}) must be [{}], the last dimension of 'x' ({})", op, name,
                   param.describe(), x.size(-1), x.describe());
}

}  // namespace strata::ops::detail
