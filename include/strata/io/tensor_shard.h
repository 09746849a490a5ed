#pragma once
// TensorShard: the part of a checkpoint tensor one tensor-parallel rank loads (a range of rows or
// columns), read through the mapped file: only the shard's bytes are copied, never the whole
// tensor.

#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace strata::io {

struct TensorShard {
  std::int64_t dim = 0;     // the split dimension of the stored tensor
  std::int64_t start = 0;   // first index along `dim`
  std::int64_t length = 0;  // indices along `dim`
  // When the checkpoint lacks the tensor itself, the stored tensor to cut the shard from (a
  // tied head's shard comes from the embedding). Empty: none.
  std::string source;
};

// Model tensor name -> its shard; names not listed are loaded whole.
using TensorShards = std::map<std::string, TensorShard, std::less<>>;

}  // namespace strata::io
