#include "strata/placement/weights_map_adapter.h"

#include <utility>

#include "strata/core/error.h"
#include "strata/io/offload.h"

namespace strata::placement {

WeightSourceMap::WeightSourceMap(std::shared_ptr<const io::WeightSource> source)
    : source_(std::move(source)) {
  STRATA_CHECK_ARG(source_ != nullptr, "WeightSourceMap: the weight source is null");
}

std::optional<Tensor> WeightSourceMap::find(std::string_view name) const {
  // One lookup for absent names; get() would throw for them.
  if (!source_->contains(name)) return std::nullopt;
  return source_->get(name);
}

bool WeightSourceMap::contains(std::string_view name) const { return source_->contains(name); }

std::vector<std::string> WeightSourceMap::keys() const { return source_->keys(); }

std::string WeightSourceMap::describe() const { return source_->describe(); }

std::shared_ptr<const nn::WeightsMap> as_weights_map(std::shared_ptr<const io::WeightSource> src) {
  return std::make_shared<WeightSourceMap>(std::move(src));
}

std::shared_ptr<const nn::WeightsMap> offload_folder_weights_map(
    const std::filesystem::path& folder) {
  return as_weights_map(std::make_shared<io::OffloadFolderReader>(folder));
}

}  // namespace strata::placement
