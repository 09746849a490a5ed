// The BatchModel of a CausalLM: a batch KV cache whose rows are the running sequences (left
// padded to the longest, hidden by the attention mask), rebuilt when sequences join or leave.
#include <algorithm>
#include <memory>
#include <optional>
#include <unordered_map>

#include "strata/engine/sampling.h"
#include "strata/engine/scheduler.h"
#include "strata/models/causal_lm.h"
#include "strata/models/decode_graph.h"
#include "strata/models/kv_cache_rows.h"

namespace strata::engine {
namespace {

class ModelBatch final : public BatchModel {
 public:
  ModelBatch(std::shared_ptr<models::CausalLM> model, ModelBatchOptions options)
      : model_(std::move(model)), options_(options) {
    STRATA_CHECK_ARG(model_ != nullptr, "make_model_batch: the model is null");
  }

  std::vector<std::int64_t> step(std::span<const StepRow> rows) override {
    std::vector<std::int64_t> out(rows.size(), 0);
    std::vector<std::size_t> decode;
    std::vector<std::size_t> prefill;
    for (std::size_t i = 0; i < rows.size(); ++i) (rows[i].prefill ? prefill : decode).push_back(i);

    if (!decode.empty()) run_decode(rows, decode, out);
    if (!prefill.empty()) {
      const Prefilled joined = run_prefill(rows, prefill, out);
      merge(rows, decode, prefill, joined);
    } else if (decode.empty()) {
      batch_.reset();
    }
    return out;
  }

  void release(SequenceId id) override {
    auto it = std::find(members_.begin(), members_.end(), id);
    if (it == members_.end()) return;
    const auto row = static_cast<std::size_t>(it - members_.begin());
    members_.erase(it);
    lengths_.erase(lengths_.begin() + static_cast<std::ptrdiff_t>(row));
    rows_in_cache_.erase(rows_in_cache_.begin() + static_cast<std::ptrdiff_t>(row));
    if (members_.empty()) batch_.reset();
  }

  std::uint64_t cache_bytes() const override { return batch_ ? batch_->allocated_bytes() : 0; }

 private:
  struct Prefilled {
    std::shared_ptr<models::KVCache> cache;
    std::vector<std::int64_t> lengths;  // tokens of each prefilled row
  };

  Device input_device() const {
    const Tensor& w = model_->input_embeddings().weight();
    return w.is_meta() ? Device::cpu() : w.device();
  }

  std::vector<std::int64_t> draw(const Tensor& logits, std::span<const StepRow> rows,
                                 const std::vector<std::size_t>& which) {
    std::vector<SampleRow> sample_rows;
    sample_rows.reserve(which.size());
    for (std::size_t i : which) {
      const StepRow& row = rows[i];
      STRATA_CHECK_ARG(row.params != nullptr,
                       "the model batch: sequence {} has no sampling "
                       "parameters",
                       row.id);
      sample_rows.push_back(SampleRow{row.params, row.tokens, row.generated, row.seed});
    }
    return sample(logits, sample_rows);
  }

  // One token for every running sequence: their last tokens through the batch cache. The
  // batch keeps its rows when the same sequences decode again; otherwise (some left) it is
  // compacted to the rows that decode, in their order.
  void run_decode(std::span<const StepRow> rows, const std::vector<std::size_t>& decode,
                  std::vector<std::int64_t>& out) {
    std::vector<SequenceId> ids;
    for (std::size_t i : decode) ids.push_back(rows[i].id);
    if (ids != members_ || batch_->keys(0).size(0) != static_cast<std::int64_t>(ids.size())) {
      compact(ids);
    }
    const auto n = static_cast<std::int64_t>(ids.size());
    const std::int64_t columns = batch_->seq_length(0);
    Tensor input = Tensor::empty({n, 1}, DType::Int64);
    auto* in = input.data<std::int64_t>();
    bool padded = false;
    for (std::int64_t r = 0; r < n; ++r) {
      const StepRow& row = rows[decode[static_cast<std::size_t>(r)]];
      STRATA_CHECK_ARG(lengths_[r] == static_cast<std::int64_t>(row.tokens.size()) - 1,
                       "the model batch: sequence {} has {} tokens cached but {} tokens; the "
                       "scheduler and the cache disagree",
                       row.id, lengths_[r], row.tokens.size());
      in[r] = row.tokens.back();
      padded = padded || lengths_[r] != columns;
    }
    std::optional<Tensor> mask;
    if (padded) {
      mask = Tensor::ones({n, columns + 1}, DType::Int64);
      auto* m = mask->data<std::int64_t>();
      for (std::int64_t r = 0; r < n; ++r)
        std::fill_n(m + r * (columns + 1), columns - lengths_[r], 0);
    }
    // Rows of one length (no padding) may take the fused CUDA-graph step (it refuses, and the
    // module path runs, for anything it cannot take; STRATA_DECODE_GRAPH=0 turns it off).
    std::optional<Tensor> fast_logits;
    if (!padded) {
      if (!fast_) fast_ = std::make_unique<models::DecodeGraphRunner>(*model_);
      fast_logits = fast_->step(input, *batch_);
    }
    const Tensor logits =
        fast_logits ? *fast_logits : model_->run(input.to(input_device()), batch_, 1, mask).logits;
    const std::vector<std::int64_t> next = draw(logits, rows, decode);
    for (std::size_t r = 0; r < decode.size(); ++r) {
      out[decode[r]] = next[r];
      lengths_[r] += 1;
    }
  }

  // The joining sequences' prompts, left-padded into one batch with a fresh cache.
  Prefilled run_prefill(std::span<const StepRow> rows, const std::vector<std::size_t>& prefill,
                        std::vector<std::int64_t>& out) {
    const auto n = static_cast<std::int64_t>(prefill.size());
    std::int64_t length = 0;
    for (std::size_t i : prefill) {
      length = std::max(length, static_cast<std::int64_t>(rows[i].tokens.size()));
    }
    Tensor input = Tensor::zeros({n, length}, DType::Int64);
    Tensor mask = Tensor::ones({n, length}, DType::Int64);
    auto* in = input.data<std::int64_t>();
    auto* m = mask.data<std::int64_t>();
    Prefilled result;
    bool padded = false;
    for (std::int64_t r = 0; r < n; ++r) {
      const auto& tokens = rows[prefill[static_cast<std::size_t>(r)]].tokens;
      const auto size = static_cast<std::int64_t>(tokens.size());
      std::copy(tokens.begin(), tokens.end(), in + r * length + (length - size));
      std::fill_n(m + r * length, length - size, 0);
      padded = padded || size != length;
      result.lengths.push_back(size);
    }
    result.cache = model_->make_cache(length);
    const Tensor logits = model_
                              ->run(input.to(input_device()), result.cache, 1,
                                    padded ? std::optional<Tensor>(mask) : std::nullopt)
                              .logits;
    const std::vector<std::int64_t> next = draw(logits, rows, prefill);
    for (std::size_t r = 0; r < prefill.size(); ++r) out[prefill[r]] = next[r];
    return result;
  }

  // The batch becomes the decoded rows followed by the joined ones.
  void merge(std::span<const StepRow> rows, const std::vector<std::size_t>& decode,
             const std::vector<std::size_t>& prefill, const Prefilled& joined) {
    std::vector<models::CacheRow> sources;
    std::vector<SequenceId> members;
    std::vector<std::int64_t> lengths;
    for (std::size_t r = 0; r < decode.size(); ++r) {
      sources.push_back({batch_.get(), rows_in_cache_[r], lengths_[r]});
      members.push_back(members_[r]);
      lengths.push_back(lengths_[r]);
    }
    for (std::size_t r = 0; r < prefill.size(); ++r) {
      sources.push_back({joined.cache.get(), static_cast<std::int64_t>(r), joined.lengths[r]});
      members.push_back(rows[prefill[r]].id);
      lengths.push_back(joined.lengths[r]);
    }
    install(sources, std::move(members), std::move(lengths));
  }

  // Keeps only `ids` (all members), in that order.
  void compact(const std::vector<SequenceId>& ids) {
    std::vector<models::CacheRow> sources;
    std::vector<std::int64_t> lengths;
    for (SequenceId id : ids) {
      auto it = std::find(members_.begin(), members_.end(), id);
      STRATA_CHECK_ARG(it != members_.end(),
                       "the model batch: sequence {} decodes but has no cache (was it prefilled?)",
                       id);
      const auto r = static_cast<std::size_t>(it - members_.begin());
      sources.push_back({batch_.get(), rows_in_cache_[r], lengths_[r]});
      lengths.push_back(lengths_[r]);
    }
    install(sources, ids, std::move(lengths));
  }

  void install(const std::vector<models::CacheRow>& sources, std::vector<SequenceId> members,
               std::vector<std::int64_t> lengths) {
    std::int64_t longest = 0;
    for (std::int64_t l : lengths) longest = std::max(longest, l);
    batch_ = models::gather_cache_rows(sources, longest + options_.reserve_tokens);
    members_ = std::move(members);
    lengths_ = std::move(lengths);
    rows_in_cache_.resize(members_.size());
    for (std::size_t r = 0; r < members_.size(); ++r) {
      rows_in_cache_[r] = static_cast<std::int64_t>(r);
    }
  }

  std::shared_ptr<models::CausalLM> model_;
  ModelBatchOptions options_;
  std::unique_ptr<models::DecodeGraphRunner> fast_;  // made on the first unpadded decode step
  std::shared_ptr<models::KVCache> batch_;
  std::vector<SequenceId> members_;          // the sequence of each live row
  std::vector<std::int64_t> lengths_;        // its cached tokens
  std::vector<std::int64_t> rows_in_cache_;  // its row in batch_ (rows of released ones remain)
};

}  // namespace

std::shared_ptr<BatchModel> make_model_batch(std::shared_ptr<models::CausalLM> model,
                                             ModelBatchOptions options) {
  return std::make_shared<ModelBatch>(std::move(model), options);
}

}  // namespace strata::engine
