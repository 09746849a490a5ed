// PrefetchScheduler::stream_to_device (prefetch.h): copies on the scheduler's copy engine for a
// caller that computes offloaded weights itself.

#include <exception>
#include <string>

#include "prefetch_engine.h"
#include "strata/core/logging.h"
#include "strata/placement/prefetch.h"

namespace strata::placement {

struct PrefetchScheduler::StreamedTensors::Impl {
  detail::CopyEngine* engine = nullptr;
  std::vector<Tensor> tensors;
  std::unique_ptr<detail::CopyEngine::Ticket> ticket;
};

PrefetchScheduler::StreamedTensors::StreamedTensors(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

PrefetchScheduler::StreamedTensors::~StreamedTensors() {
  try {
    // Waits first if ready() never ran, so the memory is reused only after the copies.
    impl_->engine->retire(std::move(impl_->ticket));
  } catch (const std::exception& e) {  // a staging read failed; ready() reported it if called
    log_warning(std::string("streamed tensors: ") + e.what());
  }
}

const std::vector<Tensor>& PrefetchScheduler::StreamedTensors::tensors() const {
  return impl_->tensors;
}

void PrefetchScheduler::StreamedTensors::ready() { impl_->engine->wait(*impl_->ticket); }

std::unique_ptr<PrefetchScheduler::StreamedTensors> PrefetchScheduler::stream_to_device(
    const std::vector<Tensor>& stored) {
  if (!engine_) return nullptr;
  auto impl = std::make_unique<StreamedTensors::Impl>();
  impl->engine = engine_.get();
  std::vector<Tensor> sources;
  for (const Tensor& t : stored) {
    STRATA_CHECK_ARG(t.is_cpu(), "stream_to_device: {} is not on the cpu", t.describe());
    sources.push_back(t.contiguous());
    impl->tensors.push_back(Tensor::empty(t.shape(), t.dtype(), execution_device_));
  }
  impl->ticket = engine_->start(impl->tensors, sources, stats_);
  return std::unique_ptr<StreamedTensors>(new StreamedTensors(std::move(impl)));
}

}  // namespace strata::placement
