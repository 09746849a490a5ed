// Post-processors: TemplateProcessing (single sequence), ByteLevel (offsets only: no change to
// ids), RobertaProcessing/BertProcessing are refused, Sequence of the above.

#include "strata/core/error.h"
#include "text/tokenizer_parts.h"

namespace strata::text::detail {
namespace {

void load_into(const JsonRef& node, const AddedVocabulary& added, const BpeModel& model,
               std::vector<PostProcessor::Item>& items, bool& have_template) {
  std::string type = node.at("type").str();
  if (type == "Sequence") {
    auto list = node.at("processors");
    for (std::size_t i = 0; i < list.size(); ++i)
      load_into(list.at(i), added, model, items, have_template);
    return;
  }
  if (type == "ByteLevel") return;
  if (type != "TemplateProcessing")
    node.at("type").not_supported("the post-processor type '" + type + "'");
  if (have_template) node.not_supported("a second TemplateProcessing in one Sequence");
  have_template = true;
  auto single = node.at("single");
  auto specials = node.get("special_tokens");
  for (std::size_t i = 0; i < single.size(); ++i) {
    auto piece = single.at(i);
    if (auto seq = piece.get("Sequence")) {
      std::string id = seq->at("id").str();
      if (id != "A") seq->at("id").malformed("\"A\" in a single-sequence template");
      items.push_back({true, {}});
      continue;
    }
    auto special = piece.at("SpecialToken");
    std::string name = special.at("id").str();
    PostProcessor::Item item;
    std::optional<JsonRef> entry;
    if (specials) entry = specials->get(name);
    if (entry && entry->get("ids")) {
      auto ids = entry->at("ids");
      for (std::size_t k = 0; k < ids.size(); ++k) {
        std::int64_t v = ids.at(k).integer();
        if (v < 0) ids.at(k).malformed("a non-negative id");
        item.ids.push_back(v);
      }
    } else if (auto id = added.find(name)) {
      item.ids.push_back(*id);
    } else if (auto mid = model.token_to_id(name)) {
      item.ids.push_back(*mid);
    } else {
      STRATA_THROW(CheckpointError, "{}: '{}' names the special token '{}', which has no id",
                   special.file(), special.path(), name);
    }
    items.push_back(std::move(item));
  }
}

}  // namespace

PostProcessor PostProcessor::from_json(const JsonRef& node, const AddedVocabulary& added,
                                       const BpeModel& model) {
  PostProcessor p;
  bool have_template = false;
  load_into(node, added, model, p.items_, have_template);
  return p;
}

PostProcessor PostProcessor::from_flags(std::optional<std::int64_t> bos,
                                        std::optional<std::int64_t> eos) {
  PostProcessor p;
  if (bos) p.items_.push_back({false, {*bos}});
  p.items_.push_back({true, {}});
  if (eos) p.items_.push_back({false, {*eos}});
  return p;
}

void PostProcessor::apply(std::vector<std::int64_t>& ids) const {
  if (items_.empty()) return;
  std::vector<std::int64_t> out;
  out.reserve(ids.size() + items_.size());
  for (const auto& item : items_) {
    if (item.is_sequence) {
      out.insert(out.end(), ids.begin(), ids.end());
    } else {
      out.insert(out.end(), item.ids.begin(), item.ids.end());
    }
  }
  ids = std::move(out);
}

}  // namespace strata::text::detail
