#include "strata/io/weight_source.h"

#include <set>

#include "io/json_util.h"
#include "strata/core/error.h"

namespace strata::io {

std::uint64_t TensorMeta::nbytes() const {
  return static_cast<std::uint64_t>(shape_numel(shape)) * dtype_size(dtype);
}

void WeightSource::throw_missing(std::string_view name) const {
  STRATA_THROW(CheckpointError, "{} has no tensor {}", describe(), detail::printable(name));
}

// ---- PrefixedWeights ----------------------------------------------------------------------

PrefixedWeights::PrefixedWeights(std::shared_ptr<const WeightSource> base, std::string prefix)
    : base_(std::move(base)), prefix_(std::move(prefix)) {
  STRATA_CHECK_ARG(base_ != nullptr, "PrefixedWeights: no base source");
}

std::string PrefixedWeights::full_name(std::string_view name) const {
  std::string out = prefix_;
  out += name;
  return out;
}

bool PrefixedWeights::contains(std::string_view name) const {
  return base_->contains(full_name(name));
}

Tensor PrefixedWeights::get(std::string_view name) const {
  const std::string full = full_name(name);
  if (!base_->contains(full)) throw_missing(name);
  return base_->get(full);
}

TensorMeta PrefixedWeights::meta(std::string_view name) const {
  const std::string full = full_name(name);
  if (!base_->contains(full)) throw_missing(name);
  return base_->meta(full);
}

std::vector<std::string> PrefixedWeights::keys() const {
  std::vector<std::string> out;
  for (const auto& k : base_->keys()) {
    if (k.starts_with(prefix_)) out.push_back(k.substr(prefix_.size()));
  }
  return out;
}

std::string PrefixedWeights::describe() const {
  return fmt::format("{} under the prefix {}", base_->describe(), detail::printable(prefix_));
}

// ---- InMemoryWeights ----------------------------------------------------------------------

InMemoryWeights::InMemoryWeights(std::map<std::string, Tensor, std::less<>> tensors,
                                 std::string label)
    : tensors_(std::move(tensors)), label_(std::move(label)) {}

bool InMemoryWeights::contains(std::string_view name) const {
  return tensors_.find(name) != tensors_.end();
}

Tensor InMemoryWeights::get(std::string_view name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) throw_missing(name);
  return it->second;
}

TensorMeta InMemoryWeights::meta(std::string_view name) const {
  const Tensor t = get(name);
  return {t.dtype(), t.shape()};
}

std::vector<std::string> InMemoryWeights::keys() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [k, v] : tensors_) out.push_back(k);
  return out;
}

// ---- ChainedWeights -----------------------------------------------------------------------

ChainedWeights::ChainedWeights(std::vector<std::shared_ptr<const WeightSource>> sources)
    : sources_(std::move(sources)) {
  for (const auto& s : sources_) STRATA_CHECK_ARG(s != nullptr, "ChainedWeights: null source");
}

const WeightSource* ChainedWeights::find(std::string_view name) const {
  for (const auto& s : sources_) {
    if (s->contains(name)) return s.get();
  }
  return nullptr;
}

bool ChainedWeights::contains(std::string_view name) const { return find(name) != nullptr; }

Tensor ChainedWeights::get(std::string_view name) const {
  const WeightSource* s = find(name);
  if (s == nullptr) throw_missing(name);
  return s->get(name);
}

TensorMeta ChainedWeights::meta(std::string_view name) const {
  const WeightSource* s = find(name);
  if (s == nullptr) throw_missing(name);
  return s->meta(name);
}

std::vector<std::string> ChainedWeights::keys() const {
  std::vector<std::string> out;
  std::set<std::string, std::less<>> seen;
  for (const auto& s : sources_) {
    for (auto& k : s->keys()) {
      if (seen.insert(k).second) out.push_back(std::move(k));
    }
  }
  return out;
}

std::string ChainedWeights::describe() const {
  std::string out = "weights from ";
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    out += (i ? ", then " : "") + sources_[i]->describe();
  }
  return out;
}

}  // namespace strata::io
