#pragma once
// Row operations on KV caches for continuous batching (engine/scheduler.h): sequences join and
// leave a running batch, so the batch cache is rebuilt from rows of other caches. A row's tokens
// are the last `length` columns of its cache (the columns before are left padding, hidden by the
// attention mask); the rebuilt cache holds each row's tokens right-aligned to the longest row,
// with zeros as padding (finite, so a masked column never turns attention into NaN).

#include <cstdint>
#include <memory>
#include <span>

#include "strata/models/kv_cache.h"

namespace strata::models {

struct CacheRow {
  const KVCache* cache = nullptr;
  std::int64_t row = 0;     // the batch row in `cache`
  std::int64_t length = 0;  // its tokens: the last `length` columns (<= the cache's seq_length)
};

// A cache of rows.size() rows, [rows, kv_heads, max length, head_dim] per layer on the device of
// the source layers, each layer's capacity at least `reserve_tokens`. Throws InvalidArgument when
// rows is empty, a row is out of range, or the sources differ in layers, heads, dtype or device.
std::shared_ptr<KVCache> gather_cache_rows(std::span<const CacheRow> rows,
                                           std::int64_t reserve_tokens = 0);

}  // namespace strata::models
