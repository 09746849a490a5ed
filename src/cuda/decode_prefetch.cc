// The decode step's L2 prefetch plan (decode_graph.h: L2PrefetchPlan): the spec's parser and the
// byte ranges one fetch covers. The graph (decode_graph.cc) launches kernels::l2_prefetch with
// them after a layer's GEMVs.

#include "cuda/decode_prefetch.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "strata/core/error.h"

namespace strata::cuda {
namespace {

constexpr std::string_view kGemvNames[] = {"qkv", "o", "gu", "down"};

// The GEMV named `name`, or -1.
int gemv_of(std::string_view name) {
  for (int i = 0; i < 4; ++i) {
    if (kGemvNames[i] == name) return i;
  }
  return -1;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

// Appends [ptr, ptr + min(bytes, size)) when the tensor is defined, 16-byte aligned (the
// kernel's loads; a view at an odd offset is left out: a hint, not a need) and anything is asked.
void add_range(kernels::L2Prefetch& a, const Tensor& t, std::int64_t bytes) {
  if (!t.defined() || bytes <= 0 || a.count >= kernels::kMaxL2Ranges ||
      reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 != 0) {
    return;
  }
  a.ptr[a.count] = t.data_ptr();
  a.bytes[a.count] = std::min(bytes, static_cast<std::int64_t>(t.nbytes()));
  ++a.count;
}

// A quantized projection's packed tensors: the first `bytes` of its packed weight, and its scales
// and zero points whole once any of the weight is asked (they are ~3% of it, and its kernels read
// them beside every stage of weights). Returns the bytes of the weight taken.
std::int64_t add_quantized(kernels::L2Prefetch& a, const ops::QuantizedWeight& w,
                           std::int64_t bytes) {
  if (bytes <= 0) return 0;
  add_range(a, w.weight, bytes);
  add_range(a, w.scale, static_cast<std::int64_t>(w.scale.nbytes()));
  if (w.zeros) add_range(a, *w.zeros, static_cast<std::int64_t>(w.zeros->nbytes()));
  return static_cast<std::int64_t>(w.weight.nbytes());
}

// The first `bytes` of what `target`'s GEMV reads, in the order its warps take the rows: q, then
// k, then v; gate row n with up row n (half of the bytes from each). A quantized GEMV's packed
// tensors (add_quantized) in the same order: its tensor-core kernels read a whole layer at once,
// so the budget covers q, k, v (gate, up) one after the other.
void add_gemv(kernels::L2Prefetch& a, const DecodeLayer& l, int target, std::int64_t bytes) {
  switch (target) {
    case L2PrefetchPlan::Qkv:
      if (l.q_quant) {
        for (const auto* q : {&l.q_quant, &l.k_quant, &l.v_quant}) {
          if (*q) bytes -= add_quantized(a, **q, bytes);
        }
        return;
      }
      for (const Tensor* t : {&l.q, &l.k, &l.v}) {
        if (!t->defined()) return;
        add_range(a, *t, bytes);
        bytes -= static_cast<std::int64_t>(t->nbytes());
      }
      return;
    case L2PrefetchPlan::O:
      if (l.o_quant) {
        add_quantized(a, *l.o_quant, bytes);
        return;
      }
      add_range(a, l.o, bytes);
      return;
    case L2PrefetchPlan::GateUp:
      if (l.gate_quant) {
        bytes -= add_quantized(a, *l.gate_quant, bytes);
        add_quantized(a, *l.up_quant, bytes);
        return;
      }
      add_range(a, l.gate, bytes / 2);
      add_range(a, l.up, bytes / 2);
      return;
    default:
      if (l.down_quant) {
        add_quantized(a, *l.down_quant, bytes);
        return;
      }
      add_range(a, l.down, bytes);
      return;
  }
}

}  // namespace

L2PrefetchPlan parse_l2_prefetch(const std::string& spec) {
  L2PrefetchPlan plan;
  bool chain = false, early = false;
  std::vector<bool> suffixed;
  std::string_view rest = spec;
  while (!rest.empty()) {
    const std::size_t comma = rest.find(',');
    const std::string_view item = trim(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (item.empty()) continue;
    const auto bad = [&](const char* why) {
      STRATA_THROW(InvalidArgument,
                   "decode graph: L2 prefetch spec \"{}\": item \"{}\" {}; expected a comma list "
                   "of TARGET@AFTER:MB[/chain|/early] (TARGET and AFTER one of qkv, o, gu, down; "
                   "MB > 0), chain, early, last or blocks=N (STRATA_DECODE_L2, "
                   "docs/decode-graph.md)",
                   spec, item, why);
    };
    if (item == "chain") {
      chain = true;
    } else if (item == "early") {
      early = true;
    } else if (item == "last") {
      plan.evict_last = true;
    } else if (item.starts_with("blocks=")) {
      const std::string n(item.substr(7));
      char* end = nullptr;
      const long blocks = std::strtol(n.c_str(), &end, 10);
      if (n.empty() || *end != '\0' || blocks < 1 || blocks > 65535) bad("has a bad block count");
      plan.blocks = static_cast<int>(blocks);
    } else {
      const std::size_t at = item.find('@'), colon = item.find(':');
      if (at == std::string_view::npos || colon == std::string_view::npos || colon < at) {
        bad("is not TARGET@AFTER:MB");
      }
      L2PrefetchPlan::Fetch f;
      f.target = gemv_of(item.substr(0, at));
      f.after = gemv_of(item.substr(at + 1, colon - at - 1));
      if (f.target < 0 || f.after < 0) bad("names an unknown GEMV");
      std::string_view size = item.substr(colon + 1);
      const std::size_t slash = size.find('/');
      suffixed.push_back(slash != std::string_view::npos);
      if (slash != std::string_view::npos) {
        const std::string_view mode = size.substr(slash + 1);
        if (mode == "chain") {
          f.mode = L2PrefetchPlan::Mode::Chain;
        } else if (mode == "early") {
          f.mode = L2PrefetchPlan::Mode::Early;
        } else {
          bad("has an unknown mode (chain or early)");
        }
        size = size.substr(0, slash);
      }
      const std::string mb(size);
      char* end = nullptr;
      const double v = std::strtod(mb.c_str(), &end);
      if (mb.empty() || *end != '\0' || !(v > 0.0) || v > 1e6) bad("has a bad size");
      f.bytes = static_cast<std::int64_t>(std::llround(v * 1024.0 * 1024.0));
      plan.fetches.push_back(f);
    }
  }
  const auto all = early   ? L2PrefetchPlan::Mode::Early
                   : chain ? L2PrefetchPlan::Mode::Chain
                           : L2PrefetchPlan::Mode::Branch;
  for (std::size_t i = 0; i < plan.fetches.size(); ++i) {
    if (!suffixed[i]) plan.fetches[i].mode = all;
  }
  return plan;
}

kernels::L2Prefetch l2_fetches_after(const L2PrefetchPlan& plan,
                                     const std::vector<DecodeLayer>& layers, const Tensor& lm_head,
                                     std::size_t layer, int after, L2PrefetchPlan::Mode mode) {
  kernels::L2Prefetch a;
  a.blocks = plan.blocks;
  a.evict_last = plan.evict_last;
  for (const L2PrefetchPlan::Fetch& f : plan.fetches) {
    if (f.after != after || f.mode != mode) continue;
    // A GEMV not later in this layer is the next layer's; after the last layer only q/k/v has a
    // successor: the head, which reads its rows in order too.
    const std::size_t target_layer = f.target > after ? layer : layer + 1;
    if (target_layer < layers.size()) {
      add_gemv(a, layers[target_layer], f.target, f.bytes);
    } else if (f.target == L2PrefetchPlan::Qkv) {
      add_range(a, lm_head, f.bytes);
    }
  }
  return a;
}

}  // namespace strata::cuda
