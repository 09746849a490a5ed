#pragma once

#include <ostream>

#include "strata/core/dtype.h"

namespace strata::cli {

// Runs a small decoder block (embedding, RMSNorm, grouped-query attention with rotary embeddings,
// SwiGLU MLP, LM head, softmax, argmax/top-k) through the CPU ops on deterministic weights, checks
// the result against invariants and against the same forward in float32, and prints each step.
// Returns true when every check holds.
bool run_selfcheck(DType dtype, std::ostream& out);

}  // namespace strata::cli
