#include "strata/models/kv_cache_rows.h"

#include <algorithm>

#include "strata/core/error.h"

namespace strata::models {

std::shared_ptr<KVCache> gather_cache_rows(std::span<const CacheRow> rows,
                                           std::int64_t reserve_tokens) {
  STRATA_CHECK_ARG(!rows.empty(), "gather_cache_rows: no rows to gather");
  const std::int64_t layers = rows.front().cache->num_layers();
  std::int64_t columns = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const CacheRow& r = rows[i];
    STRATA_CHECK_ARG(r.cache != nullptr && r.cache->num_layers() == layers,
                     "gather_cache_rows: row {} comes from a cache of another model ({} layers; "
                     "expected {})",
                     i, r.cache ? r.cache->num_layers() : 0, layers);
    const Tensor keys = r.cache->keys(0);
    STRATA_CHECK_ARG(keys.defined() && r.row >= 0 && r.row < keys.size(0) && r.length >= 1 &&
                         r.length <= r.cache->seq_length(0),
                     "gather_cache_rows: row {} asks for batch row {} with {} tokens of a cache "
                     "of {} rows and {} tokens",
                     i, r.row, r.length, keys.defined() ? keys.size(0) : 0, r.cache->seq_length(0));
    columns = std::max(columns, r.length);
  }
  const auto count = static_cast<std::int64_t>(rows.size());
  auto out = std::make_shared<KVCache>(layers, std::max(reserve_tokens, columns));
  for (std::int64_t layer = 0; layer < layers; ++layer) {
    const Tensor first = rows.front().cache->keys(layer);
    const Tensor first_values = rows.front().cache->values(layer);
    Tensor keys = Tensor::zeros({count, first.size(1), columns, first.size(3)}, first.dtype(),
                                first.device());
    // Values may be narrower than keys (DeepSeek's compressed cache: latent keys, rope values).
    Tensor values = Tensor::zeros({count, first.size(1), columns, first_values.size(3)},
                                  first.dtype(), first.device());
    for (std::int64_t i = 0; i < count; ++i) {
      const CacheRow& r = rows[static_cast<std::size_t>(i)];
      // A layer's entries live where the layer last computed: a sequence whose prompt streamed
      // holds them on the GPU while older ones decoded that layer on the cpu (offload policy
      // auto). They meet on row 0's device.
      Tensor k = r.cache->keys(layer);
      Tensor v = r.cache->values(layer);
      if (k.device() != first.device()) {
        k = k.to(first.device());
        v = v.to(first.device());
      }
      STRATA_CHECK_ARG(k.size(1) == first.size(1) && k.size(3) == first.size(3) &&
                           v.size(3) == first_values.size(3) && k.dtype() == first.dtype(),
                       "gather_cache_rows: layer {} of row {} is {}; row 0's is {}", layer, i,
                       k.describe(), first.describe());
      const std::int64_t length = k.size(2);
      keys.narrow(0, i, 1)
          .narrow(2, columns - r.length, r.length)
          .copy_(k.narrow(0, r.row, 1).narrow(2, length - r.length, r.length));
      values.narrow(0, i, 1)
          .narrow(2, columns - r.length, r.length)
          .copy_(v.narrow(0, r.row, 1).narrow(2, length - r.length, r.length));
    }
    out->update(layer, keys, values);
  }
  return out;
}

}  // namespace strata::models
