#include "strata/placement/weights_map_adapter.h"

#include <utility>

#include <fmt/format.h>

#include "strata/core/error.h"
#include "strata/io/offload.h"
#include "strata/placement/offload.h"

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

namespace {

class AliasedWeightsMap final : public nn::WeightsMap {
 public:
  AliasedWeightsMap(std::shared_ptr<const nn::WeightsMap> base,
                    std::map<std::string, std::string, std::less<>> aliases)
      : base_(std::move(base)), aliases_(std::move(aliases)) {}

  std::optional<Tensor> find(std::string_view name) const override {
    if (auto found = base_->find(name)) return found;
    const auto it = aliases_.find(name);
    return it == aliases_.end() ? std::nullopt : base_->find(it->second);
  }
  bool contains(std::string_view name) const override {
    if (base_->contains(name)) return true;
    const auto it = aliases_.find(name);
    return it != aliases_.end() && base_->contains(it->second);
  }
  std::vector<std::string> keys() const override {
    std::vector<std::string> out = base_->keys();
    for (const auto& [alias, target] : aliases_) {
      if (!base_->contains(alias) && base_->contains(target)) out.push_back(alias);
    }
    return out;
  }
  std::string describe() const override {
    return fmt::format("{} (with {} tied alias(es))", base_->describe(), aliases_.size());
  }

 private:
  std::shared_ptr<const nn::WeightsMap> base_;
  std::map<std::string, std::string, std::less<>> aliases_;
};

// Names resolved through tensor slots, read when looked up.
class TiedSlotsWeightsMap final : public nn::WeightsMap {
 public:
  explicit TiedSlotsWeightsMap(TiedSlots tied) {
    for (auto& [name, slot] : tied) {
      STRATA_CHECK_ARG(slot != nullptr, "with_resident: the slot of '{}' is null", name);
      names_.push_back(name);
      slots_.emplace(std::move(name), std::move(slot));
    }
  }

  std::optional<Tensor> find(std::string_view name) const override {
    const auto it = slots_.find(name);
    if (it == slots_.end()) return std::nullopt;
    return it->second->tensor();
  }
  bool contains(std::string_view name) const override { return slots_.contains(name); }
  std::vector<std::string> keys() const override { return names_; }
  std::string describe() const override {
    return fmt::format("{} tied weight(s) resident under another name", names_.size());
  }

 private:
  std::vector<std::string> names_;
  std::map<std::string, nn::SlotPtr, std::less<>> slots_;
};

}  // namespace

std::shared_ptr<const nn::WeightsMap> with_resident(std::shared_ptr<const nn::WeightsMap> base,
                                                    TiedSlots tied) {
  if (tied.empty()) return base;
  auto slots = std::make_shared<TiedSlotsWeightsMap>(std::move(tied));
  if (!base) return slots;
  return std::make_shared<LayeredWeightsMap>(std::move(slots), std::move(base));
}

std::shared_ptr<const nn::WeightsMap> with_aliases(
    std::shared_ptr<const nn::WeightsMap> base,
    std::map<std::string, std::string, std::less<>> aliases) {
  STRATA_CHECK_ARG(base != nullptr, "with_aliases: the base weights map is null");
  return std::make_shared<AliasedWeightsMap>(std::move(base), std::move(aliases));
}

}  // namespace strata::placement
