#pragma once
// io::WeightSource (checkpoints, offload folders, state dicts) seen as an nn::WeightsMap, the
// interface offload hooks read from. It lives here because nn sits below io and must not know
// about files; placement sees both.

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/io/weight_source.h"
#include "strata/nn/weights_map.h"

namespace strata::placement {

class WeightSourceMap final : public nn::WeightsMap {
 public:
  // `source` must not be null (InvalidArgument).
  explicit WeightSourceMap(std::shared_ptr<const io::WeightSource> source);

  // A view (no copy) for file-backed sources; nullopt when absent.
  std::optional<Tensor> find(std::string_view name) const override;
  bool contains(std::string_view name) const override;
  std::vector<std::string> keys() const override;
  std::string describe() const override;

  const std::shared_ptr<const io::WeightSource>& source() const { return source_; }

 private:
  std::shared_ptr<const io::WeightSource> source_;
};

std::shared_ptr<const nn::WeightsMap> as_weights_map(std::shared_ptr<const io::WeightSource> src);
// `base`, where each key of `aliases` also finds the entry of its value (tied names stored once).
std::shared_ptr<const nn::WeightsMap> with_aliases(
    std::shared_ptr<const nn::WeightsMap> base,
    std::map<std::string, std::string, std::less<>> aliases);
// Offloaded names of tied weights that stay resident under another name, with their slots.
using TiedSlots = std::vector<std::pair<std::string, nn::SlotPtr>>;
// `tied` (found first) over `base` (may be null): each of those names reads its slot's tensor
// as it is when looked up, i.e. the one resident copy wherever placement put it. No names:
// `base` itself.
std::shared_ptr<const nn::WeightsMap> with_resident(std::shared_ptr<const nn::WeightsMap> base,
                                                    TiedSlots tied);
// The offload folder at `folder` (checked at open, see io::OffloadFolderReader).
std::shared_ptr<const nn::WeightsMap> offload_folder_weights_map(
    const std::filesystem::path& folder);

}  // namespace strata::placement
