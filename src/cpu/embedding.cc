// embedding on the CPU: validate every id first (so a bad id fails before any output is
// written and the error names the first offender), then copy rows in parallel.

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/layer_kernels.h"
#include "strata/core/parallel.h"

namespace strata::cpu {

void embedding(const Tensor& ids, const Tensor& table, const Tensor& out) {
  const std::int64_t count = ids.numel();
  const std::int64_t vocab = table.size(0);
  const std::size_t row_bytes = static_cast<std::size_t>(table.size(1)) * table.element_size();
  const Tensor flat = ids.contiguous();
  std::vector<std::int64_t> rows(static_cast<std::size_t>(count));
  visit_dtype(flat.dtype(), [&]<typename I>(TypeTag<I>) {
    if constexpr (std::is_integral_v<I> && !std::is_same_v<I, bool>) {
      const I* p = flat.data<I>();
      for (std::int64_t i = 0; i < count; ++i) {
        const auto id = static_cast<std::int64_t>(p[i]);
        STRATA_CHECK_ARG(id >= 0 && id < vocab,
                         "embedding: id {} (element {} of 'ids' {}) is outside the vocabulary of "
                         "'table' ({}): ids must lie in [0, {}); check the tokenizer matches the "
                         "model",
                         id, i, ids.describe(), table.describe(), vocab);
        rows[static_cast<std::size_t>(i)] = id;
      }
    } else {
      STRATA_THROW(InternalError, "embedding kernel reached with ids of dtype {}", flat.dtype());
    }
  });
  const auto* src = static_cast<const std::byte*>(table.data_ptr());
  auto* dst = static_cast<std::byte*>(out.data_ptr());
  const auto grain =
      static_cast<std::int64_t>((64 << 10) / std::max<std::size_t>(row_bytes, 1)) + 1;
  parallel_for(count, grain, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      std::memcpy(dst + i * row_bytes, src + rows[static_cast<std::size_t>(i)] * row_bytes,
                  row_bytes);
    }
  });
}

}  // namespace strata::cpu
