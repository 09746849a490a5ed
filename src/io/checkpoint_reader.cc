#include <algorithm>
#include <tuple>

#include "io/json_util.h"
#include "strata/core/error.h"
#include "strata/core/logging.h"
#include "strata/io/checkpoint.h"

namespace strata::io {
namespace {

using detail::printable;

// Weights saved by TensorFlow or Flax use other layouts (transposed kernels, other names).
void check_format(const SafetensorsFile& file) {
  const auto it = file.metadata().find("format");
  if (it == file.metadata().end()) return;
  STRATA_CHECK(it->second != "tf" && it->second != "flax", CheckpointError,
               "safetensors file '{}' holds {} weights (metadata format {}), whose layout differs "
               "from PyTorch's; export the model from PyTorch (transformers save_pretrained)",
               file.path().string(), it->second == "tf" ? "TensorFlow" : "Flax",
               printable(it->second));
}

}  // namespace

CheckpointReader::CheckpointReader(const std::filesystem::path& checkpoint)
    : CheckpointReader(discover_checkpoint(checkpoint)) {}

CheckpointReader::CheckpointReader(CheckpointLayout layout) : layout_(std::move(layout)) {
  open_shards();
}

void CheckpointReader::open_shards() {
  STRATA_CHECK(!layout_.shards.empty(), CheckpointError, "checkpoint '{}' has no files",
               layout_.source.string());
  for (const auto& path : layout_.shards) {
    shards_.push_back(SafetensorsFile::open(path));
    check_format(*shards_.back());
  }

  if (!layout_.index) {
    for (const auto& e : shards_.front()->entries()) {
      by_name_.emplace(e.name, Location{shards_.front().get(), &e});
    }
  } else {
    const std::string index = printable(layout_.index->string(), 400);
    const auto folder = layout_.index->parent_path();
    std::map<std::filesystem::path, const SafetensorsFile*> by_path;
    for (const auto& s : shards_) by_path.emplace(s->path(), s.get());
    for (const auto& [tensor, shard] : layout_.index_content.weight_map) {
      const auto shard_it = by_path.find(folder / shard);
      STRATA_CHECK(shard_it != by_path.end(), CheckpointError,
                   "checkpoint index {} maps tensor {} to the shard {}, which is not among the "
                   "checkpoint's files; build the layout with discover_checkpoint",
                   index, printable(tensor), printable(shard));
      const SafetensorsFile* file = shard_it->second;
      const SafetensorsEntry* e = file->header().find(tensor);
      STRATA_CHECK(e != nullptr, CheckpointError,
                   "checkpoint index {} maps tensor {} to the shard {}, which does not contain "
                   "it; the index and the shards come from different saves: download them "
                   "again together",
                   index, printable(tensor), printable(shard));
      by_name_.emplace(tensor, Location{file, e});
    }
    std::size_t unlisted = 0;
    for (const auto& s : shards_) {
      for (const auto& e : s->entries()) {
        const auto it = by_name_.find(e.name);
        unlisted += it == by_name_.end() || it->second.file != s.get();
      }
    }
    if (unlisted > 0) {
      log_warning(
          fmt::format("checkpoint index {}: {} tensors in its shards are not listed in "
                      "it (or listed under another shard) and are ignored",
                      index, unlisted));
    }
  }

  split_fused_experts();

  // File order: shard by shard, by offset, so that iterating keys() reads sequentially.
  std::map<const SafetensorsFile*, std::size_t> shard_rank;
  for (std::size_t i = 0; i < shards_.size(); ++i) shard_rank.emplace(shards_[i].get(), i);
  std::vector<std::pair<const std::string*, Location>> ordered;
  ordered.reserve(by_name_.size());
  for (const auto& [name, loc] : by_name_) {
    ordered.emplace_back(&name, loc);
    total_bytes_ += loc.entry->nbytes();
  }
  std::sort(ordered.begin(), ordered.end(), [&](const auto& a, const auto& b) {
    return std::tuple(shard_rank.at(a.second.file), a.second.entry->begin, *a.first) <
           std::tuple(shard_rank.at(b.second.file), b.second.entry->begin, *b.first);
  });
  ordered_keys_.reserve(ordered.size());
  for (const auto& item : ordered) ordered_keys_.push_back(*item.first);
}

void CheckpointReader::split_fused_experts() {
  constexpr std::string_view kGateUp = ".experts.gate_up_proj", kDown = ".experts.down_proj";
  std::vector<std::string> prefixes;  // "<P>.experts"
  for (const auto& [name, loc] : by_name_) {
    if (name.size() > kGateUp.size() && name.ends_with(kGateUp)) {
      prefixes.push_back(name.substr(0, name.size() - kGateUp.size()) + ".experts");
    }
  }
  for (const std::string& prefix : prefixes) {
    const std::string gate_up_name = prefix + ".gate_up_proj", down_name = prefix + ".down_proj";
    const auto down_it = by_name_.find(down_name);
    if (down_it == by_name_.end()) continue;  // not the pair this layout has: left as stored
    // gpt-oss keeps its fused experts (with biases, gate/up interleaved, [E, hidden, 2I]): its
    // modules read the fused tensors as stored.
    if (by_name_.count(prefix + ".gate_up_proj_bias") != 0) continue;
    const Location gate_up = by_name_.at(gate_up_name), down = down_it->second;
    const Shape& gu = gate_up.entry->shape;
    const Shape& d = down.entry->shape;
    STRATA_CHECK(
        gu.size() == 3 && d.size() == 3 && gu[0] == d[0] && gu[1] % 2 == 0 && gu[1] / 2 == d[2] &&
            gu[2] == d[1] && gate_up.entry->dtype == down.entry->dtype,
        CheckpointError,
        "{}: fused experts {} {} {} and {} {} {} do not fit together; expected "
        "gate_up_proj [experts, 2 x intermediate, hidden] and down_proj [experts, "
        "hidden, intermediate] of one dtype (transformers' fused layout)",
        describe(), printable(gate_up_name), shape_str(gu), dtype_name(gate_up.entry->dtype),
        printable(down_name), shape_str(d), dtype_name(down.entry->dtype));
    const std::int64_t experts = gu[0], inter = d[2], hidden = d[1];
    const std::uint64_t elt = dtype_size(gate_up.entry->dtype);
    const auto matrix = static_cast<std::uint64_t>(inter * hidden) * elt;
    const auto add = [&](const Location& from, std::string name, std::uint64_t offset,
                         Shape shape) {
      SafetensorsEntry& e = split_entries_.emplace_back();
      e.name = std::move(name);
      e.dtype = from.entry->dtype;
      e.shape = std::move(shape);
      e.begin = from.entry->begin + offset;
      e.end = e.begin + matrix;
      by_name_.insert_or_assign(e.name, Location{from.file, &e, true});
    };
    for (std::int64_t x = 0; x < experts; ++x) {
      const std::string p = fmt::format("{}.{}.", prefix, x);
      const auto ux = static_cast<std::uint64_t>(x);
      add(gate_up, p + "gate_proj.weight", 2 * ux * matrix, Shape{inter, hidden});
      add(gate_up, p + "up_proj.weight", (2 * ux + 1) * matrix, Shape{inter, hidden});
      add(down, p + "down_proj.weight", ux * matrix, Shape{hidden, inter});
    }
    by_name_.erase(gate_up_name);
    by_name_.erase(down_name);
  }
}

bool CheckpointReader::is_split_expert(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it != by_name_.end() && it->second.split_expert;
}

CheckpointReader::Location CheckpointReader::locate(std::string_view name) const {
  const auto it = by_name_.find(name);
  if (it == by_name_.end()) throw_missing(name);
  return it->second;
}

bool CheckpointReader::contains(std::string_view name) const {
  return by_name_.find(name) != by_name_.end();
}

Tensor CheckpointReader::get(std::string_view name) const {
  const Location loc = locate(name);
  return loc.file->tensor(*loc.entry);
}

TensorMeta CheckpointReader::meta(std::string_view name) const {
  const Location loc = locate(name);
  return {loc.entry->dtype, loc.entry->shape};
}

std::vector<std::string> CheckpointReader::keys() const { return ordered_keys_; }

std::string CheckpointReader::describe() const {
  if (layout_.index) {
    return fmt::format("checkpoint '{}' ({} shards)", layout_.index->string(), shards_.size());
  }
  return fmt::format("checkpoint '{}'", layout_.shards.front().string());
}

}  // namespace strata::io
