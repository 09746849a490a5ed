#include <algorithm>
#include <set>

#include "io/json_util.h"
#include "strata/core/error.h"
#include "strata/io/atomic_file.h"
#include "strata/io/safetensors.h"

namespace strata::io {
namespace {

// Contiguous CPU bytes of `t`: the tensor itself when it already is, else a copy.
Tensor host_contiguous(const Tensor& t) { return t.to(Device::cpu()).contiguous(); }

}  // namespace

void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string file = detail::printable(path.string(), 400);
  // Layout: largest element size first, then by name, as the reference writer orders data;
  // with an 8-aligned data area every tensor then starts at a multiple of its element size.
  std::vector<const std::pair<std::string, Tensor>*> order;
  std::set<std::string_view> names;
  for (const auto& item : tensors) {
    const auto& [name, t] = item;
    STRATA_CHECK_ARG(name != "__metadata__",
                     "save_safetensors {}: '__metadata__' is reserved "
                     "for the metadata and cannot name a tensor",
                     file);
    STRATA_CHECK_ARG(names.insert(name).second,
                     "save_safetensors {}: tensor {} is given twice; names must be unique", file,
                     detail::printable(name));
    STRATA_CHECK_ARG(t.defined() && !t.is_meta(),
                     "save_safetensors {}: tensor {} has no data ({}); load or initialise it "
                     "first",
                     file, detail::printable(name), t.defined() ? t.describe() : "undefined");
    order.push_back(&item);
  }
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    const auto sa = a->second.element_size();
    const auto sb = b->second.element_size();
    return sa != sb ? sa > sb : a->first < b->first;
  });

  detail::Json header = detail::Json::object();
  // transformers refuses files without a "format" (accelerate warns): default to PyTorch's.
  auto meta = metadata;
  meta.try_emplace("format", "pt");
  header["__metadata__"] = meta;
  std::uint64_t offset = 0;
  for (const auto* item : order) {
    const Tensor& t = item->second;
    const std::uint64_t begin = offset;
    offset += t.nbytes();
    header[item->first] = {{"dtype", std::string(safetensors_name(t.dtype()))},
                           {"shape", t.shape()},
                           {"data_offsets", {begin, offset}}};
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const detail::Json::type_error& e) {
    STRATA_THROW(InvalidArgument,
                 "save_safetensors {}: a tensor name or metadata value is not "
                 "valid UTF-8 ({})",
                 file, e.what());
  }
  // Pad with spaces (valid JSON whitespace) so the data area starts 8-aligned.
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  STRATA_CHECK_ARG(text.size() <= kMaxSafetensorsHeaderBytes,
                   "save_safetensors {}: the header would take {} bytes, over the {} byte limit "
                   "readers accept; split the tensors over several files",
                   file, text.size(), kMaxSafetensorsHeaderBytes);

  AtomicFileWriter writer(path);
  const std::uint64_t n = text.size();
  writer.write(&n, 8);
  writer.write(text.data(), text.size());
  for (const auto* item : order) {
    const Tensor host = host_contiguous(item->second);
    if (host.nbytes() > 0) writer.write(host.data_ptr(), host.nbytes());
  }
  writer.commit();
}

}  // namespace strata::io
