// Finding a checkpoint's files (the reference's rules, load_checkpoint_in_model preamble) and
// parsing "*.index.json".

#include <algorithm>
#include <set>

#include "io/json_util.h"
#include "strata/core/error.h"
#include "strata/io/checkpoint.h"

namespace strata::io {
namespace fs = std::filesystem;
namespace {

using detail::Json;
using detail::printable;

constexpr std::uint64_t kMaxIndexBytes = 100'000'000;
constexpr std::string_view kIndexSuffix = ".index.json";
constexpr std::string_view kSafeIndexSuffix = ".safetensors.index.json";

bool ends_with(std::string_view s, std::string_view suffix) { return s.ends_with(suffix); }

bool is_pytorch_file_name(const fs::path& p) {
  const std::string ext = p.extension().string();
  return ext == ".bin" || ext == ".pt" || ext == ".pth" || ext == ".ckpt" || ext == ".pkl";
}

// A shard name must stay inside the index's folder.
void check_shard_name(const std::string& shard, const std::string& tensor,
                      std::string_view source) {
  const fs::path p(shard);
  bool escapes = shard.empty() || p.is_absolute() || shard.find('\0') != std::string::npos;
  for (const auto& part : p) escapes = escapes || part == "..";
  STRATA_CHECK(!escapes, CheckpointError,
               "checkpoint index {}: tensor {} maps to the shard {}, which is not a file name "
               "inside the index's folder (empty, absolute or with '..'); fix the index",
               source, printable(tensor), printable(shard));
}

CheckpointLayout layout_from_index(const fs::path& checkpoint, const fs::path& index_path) {
  const std::string source = printable(index_path.string(), 400);
  CheckpointLayout layout;
  layout.source = checkpoint;
  layout.index = index_path;
  layout.index_content = parse_checkpoint_index(
      detail::read_text_file(index_path, kMaxIndexBytes, "checkpoint index"), index_path.string());

  // Shard -> one tensor that needs it (for the message when it is missing).
  std::map<std::string, std::string> first_tensor;
  for (const auto& [tensor, shard] : layout.index_content.weight_map) {
    first_tensor.try_emplace(shard, tensor);
  }
  const fs::path folder = index_path.parent_path();
  for (const auto& [shard, tensor] : first_tensor) {
    const fs::path file = folder / shard;
    STRATA_CHECK(!is_pytorch_file_name(file), CheckpointError,
                 "checkpoint index {} lists the PyTorch shard {}: {}", source, printable(shard),
                 pytorch_checkpoint_advice(file));
    std::error_code ec;
    STRATA_CHECK(fs::is_regular_file(file, ec), CheckpointError,
                 "checkpoint index {} maps tensor {} to the shard {}, which is missing from "
                 "'{}'; the download is incomplete: fetch that shard again",
                 source, printable(tensor), printable(shard), folder.string());
    layout.shards.push_back(file);
  }
  // first_tensor is a std::map: shards are already sorted and unique.
  return layout;
}

CheckpointLayout single_file(const fs::path& checkpoint, const fs::path& file) {
  STRATA_CHECK(!is_pytorch_file_name(file), CheckpointError, "{}", pytorch_checkpoint_advice(file));
  CheckpointLayout layout;
  layout.source = checkpoint;
  layout.shards = {file};
  return layout;
}

std::string list_names(const std::vector<std::string>& names) {
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < 10; ++i) {
    out += (i ? ", " : "") + printable(names[i]);
  }
  if (names.size() > 10) out += fmt::format(" and {} more", names.size() - 10);
  return out.empty() ? "nothing" : out;
}

CheckpointLayout from_folder(const fs::path& folder) {
  std::error_code ec;
  if (fs::is_regular_file(folder / "model.safetensors", ec)) {
    return single_file(folder, folder / "model.safetensors");
  }
  std::vector<std::string> names;
  std::vector<std::string> indexes;
  for (const auto& item : fs::directory_iterator(folder, ec)) {
    const std::string name = item.path().filename().string();
    names.push_back(name);
    if (ends_with(name, kIndexSuffix) && item.is_regular_file(ec)) indexes.push_back(name);
  }
  STRATA_CHECK(!ec, IoError, "cannot list the folder '{}': {}", folder.string(), ec.message());
  std::sort(names.begin(), names.end());
  std::sort(indexes.begin(), indexes.end());
  if (indexes.size() > 1) {
    std::vector<std::string> safe;
    std::copy_if(indexes.begin(), indexes.end(), std::back_inserter(safe),
                 [](const std::string& n) { return ends_with(n, kSafeIndexSuffix); });
    STRATA_CHECK(safe.size() == 1, CheckpointError,
                 "checkpoint folder '{}' holds several index files ({}); delete the irrelevant "
                 "ones or pass the index file itself",
                 folder.string(), list_names(indexes));
    indexes = safe;
  }
  if (indexes.size() == 1) return layout_from_index(folder, folder / indexes.front());
  for (const auto& name : names) {
    STRATA_CHECK(!is_pytorch_file_name(name), CheckpointError,
                 "checkpoint folder '{}' holds no safetensors checkpoint, only {}: {}",
                 folder.string(), printable(name), pytorch_checkpoint_advice(folder / name));
  }
  STRATA_THROW(CheckpointError,
               "checkpoint folder '{}' holds neither model.safetensors nor a *.index.json file "
               "(it holds {}); pass the checkpoint file or its index",
               folder.string(), list_names(names));
}

}  // namespace

std::string pytorch_checkpoint_advice(const fs::path& file) {
  return fmt::format(
      "'{}' is a PyTorch pickle checkpoint, which Strata does not read (unpickling can run "
      "arbitrary code). Convert it to safetensors once, in Python: "
      "`transformers.AutoModel.from_pretrained(folder).save_pretrained(out, "
      "safe_serialization=True)`, or `safetensors.torch.save_file(torch.load(path, "
      "weights_only=True), \"model.safetensors\", metadata={{\"format\": \"pt\"}})` (the "
      "safetensors project's convert.py script does the same for Hub repositories)",
      file.string());
}

CheckpointIndex parse_checkpoint_index(std::string_view json_text, std::string_view source) {
  const std::string src = printable(source, 400);
  const Json doc = detail::parse_json_strict(json_text, fmt::format("checkpoint index {}", src));
  STRATA_CHECK(doc.is_object(), CheckpointError,
               "checkpoint index {}: the document is {}, expected an object; fix or re-download "
               "the index",
               src, detail::json_kind(doc));
  CheckpointIndex index;
  const Json* map = &doc;
  if (const auto it = doc.find("weight_map"); it != doc.end()) {
    map = &*it;
    STRATA_CHECK(map->is_object(), CheckpointError,
                 "checkpoint index {}: weight_map is {}, expected an object of tensor -> shard "
                 "file names; fix or re-download the index",
                 src, detail::json_kind(*map));
    if (const auto meta = doc.find("metadata"); meta != doc.end() && meta->is_object()) {
      if (const auto total = meta->find("total_size"); total != meta->end()) {
        index.total_size = detail::as_uint(*total);
      }
    }
  }
  for (const auto& [tensor, shard] : map->items()) {
    STRATA_CHECK(shard.is_string(), CheckpointError,
                 "checkpoint index {}: tensor {} maps to {}, expected a shard file name; fix or "
                 "re-download the index",
                 src, printable(tensor), detail::json_kind(shard));
    check_shard_name(shard.get_ref<const std::string&>(), tensor, src);
    index.weight_map.emplace(tensor, shard.get<std::string>());
  }
  STRATA_CHECK(!index.weight_map.empty(), CheckpointError,
               "checkpoint index {} names no tensors; fix or re-download the index", src);
  return index;
}

CheckpointLayout discover_checkpoint(const fs::path& checkpoint) {
  std::error_code ec;
  const auto status = fs::status(checkpoint, ec);
  STRATA_CHECK(fs::exists(status), CheckpointError,
               "checkpoint '{}' does not exist; pass a safetensors file, an index file or a "
               "folder holding them",
               checkpoint.string());
  if (fs::is_directory(status)) return from_folder(checkpoint);
  if (ends_with(checkpoint.filename().string(), ".json")) {
    return layout_from_index(checkpoint, checkpoint);
  }
  return single_file(checkpoint, checkpoint);
}

}  // namespace strata::io
