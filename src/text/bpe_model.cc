// The BPE model of tokenizer.json: vocab, merges (as "a b" strings or [a, b] pairs), byte
// fallback, unk fusing, ignore_merges. The merge loop is the reference's (a priority queue of
// (rank, position) over a linked list of symbols), so ties resolve identically. A bounded,
// sharded cache keeps the ids of recent words (thread-safe).

#include <fmt/format.h>

#include <array>
#include <mutex>
#include <queue>

#include "strata/core/error.h"
#include "text/tokenizer_parts.h"
#include "text/utf8.h"

namespace strata::text::detail {
namespace {

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, std::int64_t, StringHash, std::equal_to<>>;

struct MergeValue {
  std::uint32_t rank;
  std::uint32_t new_id;
};

constexpr std::size_t kCacheShards = 16;
constexpr std::size_t kCacheShardCapacity = 4096;
constexpr std::size_t kMaxCachedWordBytes = 256;

}  // namespace

struct BpeModel::Impl {
  Vocab vocab;
  std::unordered_map<std::uint64_t, MergeValue> merges;
  std::optional<std::int64_t> unk_id;
  bool byte_fallback = false;
  bool fuse_unk = false;
  bool ignore_merges = false;
  std::array<std::int32_t, 256> byte_ids{};   // <0xXX> ids, -1 when absent
  std::array<std::int32_t, 128> ascii_ids{};  // single ASCII character ids, -1 when absent

  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<std::int64_t>, StringHash, std::equal_to<>> map;
  };
  mutable std::array<Shard, kCacheShards> cache;

  void merge_word(std::string_view word, std::vector<std::int64_t>& out) const;
};

BpeModel::BpeModel() : impl_(std::make_unique<Impl>()) {}
BpeModel::~BpeModel() = default;

std::unique_ptr<BpeModel> BpeModel::load(const JsonRef& model) {
  if (auto type = model.get("type"); type && type->str() != "BPE") {
    type->not_supported("the model type '" + type->str() + "' (only BPE is implemented)");
  }
  if (model.get("dropout") && model.at("dropout").json().is_number() &&
      model.at("dropout").json().get<double>() > 0.0) {
    model.at("dropout").not_supported("BPE dropout");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (auto v = model.get(key); v && !v->str().empty()) {
      v->not_supported(std::string("a non-empty ") + key);
    }
  }
  std::unique_ptr<BpeModel> bpe(new BpeModel());
  Impl& m = *bpe->impl_;
  auto vocab = model.at("vocab");
  if (!vocab.json().is_object()) vocab.malformed("an object of token -> id");
  std::int64_t max_id = -1;
  for (auto it = vocab.json().begin(); it != vocab.json().end(); ++it) {
    JsonRef v(it.value(), vocab.file(), vocab.path() + "[\"" + it.key() + "\"]");
    std::int64_t id = v.integer();
    if (id < 0 || id >= (std::int64_t{1} << 31)) v.malformed("an id in [0, 2^31)");
    m.vocab.emplace(it.key(), id);
    max_id = std::max(max_id, id);
  }
  // Ids index a dense id -> token table: a sparse id space (one entry at id 600 million) would
  // make it gigabytes. Real vocabularies number their tokens 0..n-1; allow generous gaps only.
  const auto entries = static_cast<std::int64_t>(m.vocab.size());
  if (max_id >= 2 * entries + 1024) {
    vocab.malformed(
        fmt::format("ids numbering the {} tokens densely (the largest id is {}; at "
                    "most {} is accepted)",
                    entries, max_id, 2 * entries + 1023));
  }
  bpe->id_to_token_.resize(static_cast<std::size_t>(max_id + 1));
  for (const auto& [token, id] : m.vocab) bpe->id_to_token_[static_cast<std::size_t>(id)] = token;
  m.byte_ids.fill(-1);
  m.ascii_ids.fill(-1);
  for (int b = 0; b < 256; ++b) {
    auto it = m.vocab.find(fmt::format("<0x{:02X}>", b));
    if (it != m.vocab.end()) m.byte_ids[b] = static_cast<std::int32_t>(it->second);
    if (b < 128) {
      auto jt = m.vocab.find(std::string(1, static_cast<char>(b)));
      if (jt != m.vocab.end()) m.ascii_ids[b] = static_cast<std::int32_t>(jt->second);
    }
  }
  auto merges = model.at("merges");
  std::size_t n = merges.size();
  m.merges.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto item = merges.at(i);
    std::string a, b;
    if (item.json().is_string()) {
      std::string s = item.str();
      auto sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        item.malformed("a merge \"left right\" (one space)");
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else {
      if (item.size() != 2) item.malformed("a pair [left, right]");
      a = item.at(std::size_t{0}).str();
      b = item.at(std::size_t{1}).str();
    }
    auto ia = m.vocab.find(a), ib = m.vocab.find(b), ic = m.vocab.find(a + b);
    if (ia == m.vocab.end() || ib == m.vocab.end() || ic == m.vocab.end()) {
      STRATA_THROW(CheckpointError,
                   "{}: '{}' merges '{}' and '{}', but '{}' is not in the vocabulary; the file is "
                   "malformed (re-export it)",
                   item.file(), item.path(), a, b,
                   ia == m.vocab.end()   ? a
                   : ib == m.vocab.end() ? b
                                         : a + b);
    }
    std::uint64_t key =
        (static_cast<std::uint64_t>(ia->second) << 32) | static_cast<std::uint64_t>(ib->second);
    m.merges[key] = {static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(ic->second)};
  }
  if (auto unk = model.get("unk_token")) {
    auto it = m.vocab.find(unk->str());
    if (it == m.vocab.end()) {
      STRATA_THROW(CheckpointError, "{}: '{}' names '{}', which is not in the vocabulary",
                   unk->file(), unk->path(), unk->str());
    }
    m.unk_id = it->second;
  }
  m.byte_fallback = model.bool_or("byte_fallback", false);
  m.fuse_unk = model.bool_or("fuse_unk", false);
  m.ignore_merges = model.bool_or("ignore_merges", false);
  return bpe;
}

void BpeModel::Impl::merge_word(std::string_view w, std::vector<std::int64_t>& out) const {
  struct Symbol {
    std::int64_t id;
    std::int32_t prev, next;
    bool removed;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(w.size());
  auto add = [&](std::int64_t id) {
    auto k = static_cast<std::int32_t>(symbols.size());
    symbols.push_back({id, k - 1, k + 1, false});
  };
  std::optional<std::int64_t> pending_unk;
  std::size_t pos = 0;
  while (pos < w.size()) {
    std::size_t start = pos;
    auto lead = static_cast<unsigned char>(w[pos]);
    std::int64_t id = -1;
    if (lead < 0x80) {
      id = ascii_ids[lead];
      ++pos;
    } else {
      pos += std::min(utf8_len(lead), w.size() - pos);
      auto it = vocab.find(w.substr(start, pos - start));
      if (it != vocab.end()) id = it->second;
    }
    if (id >= 0) {
      if (pending_unk) {
        add(*pending_unk);
        pending_unk.reset();
      }
      add(id);
      continue;
    }
    if (byte_fallback) {
      bool all = true;
      for (std::size_t k = start; k < pos; ++k)
        all &= byte_ids[static_cast<unsigned char>(w[k])] >= 0;
      if (all) {
        // The reference adds the byte tokens without flushing a pending unk first.
        for (std::size_t k = start; k < pos; ++k) add(byte_ids[static_cast<unsigned char>(w[k])]);
        continue;
      }
    }
    if (unk_id) {
      if (pending_unk && !fuse_unk) add(*pending_unk);
      pending_unk = *unk_id;
    }
  }
  if (pending_unk) add(*pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Merge {
    std::uint32_t rank;
    std::int32_t pos;
    std::uint32_t new_id;
    bool operator<(const Merge& o) const {  // max-heap: lowest rank, then lowest position first
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  auto lookup = [&](std::int64_t a, std::int64_t b) -> const MergeValue* {
    auto it = merges.find((static_cast<std::uint64_t>(a) << 32) | static_cast<std::uint64_t>(b));
    return it == merges.end() ? nullptr : &it->second;
  };
  std::vector<Merge> heap_storage;
  heap_storage.reserve(symbols.size());
  std::priority_queue<Merge> queue(std::less<Merge>(), std::move(heap_storage));
  for (std::size_t k = 0; k + 1 < symbols.size(); ++k) {
    if (const auto* mv = lookup(symbols[k].id, symbols[k + 1].id)) {
      queue.push({mv->rank, static_cast<std::int32_t>(k), mv->new_id});
    }
  }
  while (!queue.empty()) {
    Merge top = queue.top();
    queue.pop();
    Symbol& cur = symbols[static_cast<std::size_t>(top.pos)];
    if (cur.removed || cur.next < 0) continue;
    auto next_pos = static_cast<std::size_t>(cur.next);
    Symbol right = symbols[next_pos];
    const auto* mv = lookup(cur.id, right.id);
    if (!mv || mv->new_id != top.new_id) continue;  // a stale queue entry
    cur.id = top.new_id;
    cur.next = right.next;
    symbols[next_pos].removed = true;
    if (right.next >= 0) symbols[static_cast<std::size_t>(right.next)].prev = top.pos;
    if (cur.prev >= 0) {
      if (const auto* pm = lookup(symbols[static_cast<std::size_t>(cur.prev)].id, cur.id)) {
        queue.push({pm->rank, cur.prev, pm->new_id});
      }
    }
    if (cur.next >= 0) {
      if (const auto* nm = lookup(cur.id, symbols[static_cast<std::size_t>(cur.next)].id)) {
        queue.push({nm->rank, top.pos, nm->new_id});
      }
    }
  }
  for (const auto& s : symbols) {
    if (!s.removed) out.push_back(s.id);
  }
}

void BpeModel::tokenize(std::string_view word, std::vector<std::int64_t>& out) const {
  const Impl& m = *impl_;
  if (word.empty()) return;
  if (m.ignore_merges) {
    auto it = m.vocab.find(word);
    if (it != m.vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (word.size() > kMaxCachedWordBytes) {
    m.merge_word(word, out);
    return;
  }
  auto& shard = m.cache[std::hash<std::string_view>{}(word) % kCacheShards];
  {
    std::lock_guard lock(shard.mutex);
    auto it = shard.map.find(word);
    if (it != shard.map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::size_t before = out.size();
  m.merge_word(word, out);
  std::vector<std::int64_t> ids(out.begin() + static_cast<std::ptrdiff_t>(before), out.end());
  std::lock_guard lock(shard.mutex);
  if (shard.map.size() >= kCacheShardCapacity) shard.map.clear();
  shard.map.emplace(std::string(word), std::move(ids));
}

std::optional<std::int64_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = impl_->vocab.find(token);
  if (it == impl_->vocab.end()) return std::nullopt;
  return it->second;
}

std::string_view BpeModel::id_to_token(std::int64_t id) const {
  if (id < 0 || id >= static_cast<std::int64_t>(id_to_token_.size())) return {};
  return id_to_token_[static_cast<std::size_t>(id)];
}

}  // namespace strata::text::detail
