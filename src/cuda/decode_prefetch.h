#pragma once
// The byte ranges of the decode step's L2 prefetches (decode_prefetch.cc; the plan and its spec
// are in decode_graph.h).

#include <cstddef>
#include <vector>

#include "cuda/decode_graph.h"
#include "cuda/kernels.h"

namespace strata::cuda {

// The ranges the plan fetches in `mode` right after GEMV `after` (L2PrefetchPlan::Gemv) of
// `layer`: every such fetch of that point, each the first bytes of its target in the order the
// target's warps start (quantized projections are left out). count 0: nothing to launch.
kernels::L2Prefetch l2_fetches_after(const L2PrefetchPlan& plan,
                                     const std::vector<DecodeLayer>& layers, const Tensor& lm_head,
                                     std::size_t layer, int after, L2PrefetchPlan::Mode mode);

}  // namespace strata::cuda
