#pragma once
// One BaseModel forward's state between its steps (private to src/models; base_model.h).

#include <cstdint>
#include <map>
#include <string>

#include "models/forward_inputs.h"
#include "strata/models/base_model.h"

namespace strata::models {

struct BaseModel::Pass {
  detail::ForwardInputs in;
  Tensor hidden;                          // the residual stream
  std::map<std::string, Value> ropes;     // [cos, sin] per rope layer type ("" when one rope)
  std::map<std::int64_t, Tensor> finite;  // finite padding masks per window (soft-capping)
};

}  // namespace strata::models
