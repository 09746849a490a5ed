#pragma once
// Checkpoints as users have them: one safetensors file, or shards listed by a
// "*.index.json" (Hugging Face layout), found with the reference's rules (see
// discover_checkpoint), opened once and checked against each other.

#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/io/safetensors.h"
#include "strata/io/weight_source.h"

namespace strata::io {

// A parsed "*.index.json": {"metadata": {...}, "weight_map": {"tensor": "shard file"}} or a
// bare {"tensor": "shard file"} map (the reference accepts both).
struct CheckpointIndex {
  std::map<std::string, std::string, std::less<>> weight_map;
  std::optional<std::uint64_t> total_size;  // metadata.total_size, when present
};

// Validates index JSON text: an object, string shard names that are relative paths staying
// inside the index's folder, no duplicate keys. Throws CheckpointError naming `source`.
CheckpointIndex parse_checkpoint_index(std::string_view json_text, std::string_view source);

// Where a checkpoint's files are.
struct CheckpointLayout {
  std::filesystem::path source;                // what the caller passed
  std::optional<std::filesystem::path> index;  // the index file, for sharded checkpoints
  std::vector<std::filesystem::path> shards;   // sorted, unique (one file when not sharded)
  CheckpointIndex index_content;               // empty weight_map when not sharded
};

// Finds the files of `checkpoint` with the reference's rules, in this order:
//   - a file ending in ".json": an index;
//   - any other file: a single checkpoint (PyTorch pickles are refused, see below);
//   - a folder holding "model.safetensors": that file;
//   - a folder holding exactly one "*.index.json" (when there are several, exactly one
//     "*.safetensors.index.json" among them is taken: a Hugging Face repo often ships the
//     PyTorch index beside the safetensors one, which the reference refuses);
//   - otherwise CheckpointError saying what was looked for and what was found.
// PyTorch ".bin"/".pt"/".pth"/".ckpt" files (or an index naming them) are refused with a
// CheckpointError telling how to convert them to safetensors: Strata never unpickles.
// Shard existence is checked here; shard contents are checked by CheckpointReader.
CheckpointLayout discover_checkpoint(const std::filesystem::path& checkpoint);

// The text of the "convert to safetensors" advice, for messages about PyTorch files.
std::string pytorch_checkpoint_advice(const std::filesystem::path& file);

// All tensors of a checkpoint. Every shard is mapped and validated once, at construction; the
// index is checked against the shards (a missing shard, or an index entry naming a tensor its
// shard does not hold, is a CheckpointError naming the index, the shard and the tensor).
// Tensors present in a shard but absent from the index are not exposed (the index decides),
// with one warning. get() returns zero-copy read-only views of the mappings.
//
// Fused expert tensors (the layout transformers v5 keeps in memory and some exports store):
// a pair "<P>.experts.gate_up_proj" [E, 2I, H] (gate rows, then up rows) and
// "<P>.experts.down_proj" [E, H, I] is exposed as the per-expert tensors
// "<P>.experts.N.gate_proj.weight" [I, H], "...up_proj.weight" [I, H] and
// "...down_proj.weight" [H, I]: byte ranges of the fused tensors (row-major slices are
// contiguous), so they are read, placed and offloaded one expert at a time like any tensor.
// The fused names themselves are not listed. A pair whose shapes disagree is a CheckpointError
// naming both tensors. gpt-oss' fused experts (recognised by their "gate_up_proj_bias") are
// left as stored: its modules hold the fused tensors.
class CheckpointReader final : public WeightSource {
 public:
  explicit CheckpointReader(const std::filesystem::path& checkpoint);
  explicit CheckpointReader(CheckpointLayout layout);

  const CheckpointLayout& layout() const { return layout_; }
  const std::vector<std::shared_ptr<const SafetensorsFile>>& shards() const { return shards_; }

  bool contains(std::string_view name) const override;
  Tensor get(std::string_view name) const override;
  TensorMeta meta(std::string_view name) const override;
  // Shard by shard, in file order within each shard: iterating keys() reads sequentially.
  std::vector<std::string> keys() const override;
  std::string describe() const override;

  // The shard holding `name` and its entry there (for loaders that read ranges themselves or
  // keep "disk" weights as views of the checkpoint). Throws CheckpointError when absent.
  struct Location {
    const SafetensorsFile* file;
    const SafetensorsEntry* entry;
    bool split_expert = false;  // one expert's slice of a fused tensor (see above)
  };
  Location locate(std::string_view name) const;

  std::size_t size() const { return by_name_.size(); }
  // True for a per-expert tensor split out of a fused one (not an entry of the file's header:
  // a disk offload must copy it rather than name it in the file).
  bool is_split_expert(std::string_view name) const;
  std::uint64_t total_bytes() const { return total_bytes_; }

 private:
  void open_shards();
  void split_fused_experts();

  CheckpointLayout layout_;
  std::vector<std::shared_ptr<const SafetensorsFile>> shards_;
  std::map<std::string, Location, std::less<>> by_name_;
  std::vector<std::string> ordered_keys_;
  std::uint64_t total_bytes_ = 0;
  std::deque<SafetensorsEntry> split_entries_;  // stable addresses for Location::entry
};

}  // namespace strata::io
