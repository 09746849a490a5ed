// The CUDA DeviceBackend (allocation and copies for the core) and the public async copies.
// Ordering between devices uses events between the compute streams, never a device-wide sync.

#include <memory>

#include "cuda/caching_allocator.h"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_backend_registration.h"
#include "cuda/cuda_check.h"
#include "cuda/pinned_allocator.h"
#include "cuda/stream_internal.h"
#include "strata/core/backend.h"
#include "strata/cuda/device.h"
#include "strata/cuda/stream.h"

namespace strata::cuda {
namespace {

// Queues the copy on `stream`; unified addressing lets cudaMemcpyDefault infer the direction of
// every copy that involves the host or a single GPU.
void enqueue_copy(void* dst, Device dst_device, const void* src, Device src_device,
                  std::size_t nbytes, const Stream& stream) {
  DeviceGuard guard(stream.device());
  auto* handle = static_cast<cudaStream_t>(stream.native_handle());
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index() != src_device.index()) {
    STRATA_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device.index(), src, src_device.index(),
                                          nbytes, handle),
                      stream.device());
    return;
  }
  STRATA_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, handle),
                    stream.device());
}

// `waiter` runs its later work only after what is queued on `producer` so far.
void order_after(const Stream& waiter, const Stream& producer) {
  Event event(producer.device());
  event.record(producer);
  waiter.wait(event);
}

class CudaBackend final : public DeviceBackend {
 public:
  DeviceType type() const override { return DeviceType::CUDA; }
  int device_count() const override { return cuda::device_count(); }
  int resolve_index(int index) const override { return index >= 0 ? index : current_device(); }
  Allocator& allocator(int index) override { return detail::device_allocator(index); }
  Allocator* pinned_host_allocator() override { return &detail::pinned_allocator(); }

  void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t nbytes,
            bool non_blocking) override {
    if (nbytes == 0) return;
    if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index() != src_device.index()) {
      // Peer copy on the destination's compute stream, after the source's pending work; the
      // source stream then waits for the copy, so the source's memory is not reused under it.
      const Stream& dst_stream = Stream::compute(dst_device.index());
      const Stream& src_stream = Stream::compute(src_device.index());
      order_after(dst_stream, src_stream);
      enqueue_copy(dst, dst_device, src, src_device, nbytes, dst_stream);
      order_after(src_stream, dst_stream);
      if (!non_blocking) dst_stream.synchronize();
      return;
    }
    const int gpu = dst_device.is_cuda() ? dst_device.index() : src_device.index();
    const Stream& stream = Stream::compute(gpu);
    enqueue_copy(dst, dst_device, src, src_device, nbytes, stream);
    if (!non_blocking) stream.synchronize();
  }

  bool copy_strided(const Tensor& dst, const Tensor& src) override {
    cuda::copy_strided(dst, src);
    return true;
  }
};

void check_copy_operands(const Tensor& dst, const Tensor& src, const Stream& stream) {
  STRATA_CHECK_ARG(dst.defined() && src.defined() && !dst.is_meta() && !src.is_meta(),
                   "cuda::copy_async: both tensors need data (got {} <- {})", dst.describe(),
                   src.describe());
  STRATA_CHECK_ARG(dst.dtype() == src.dtype() && dst.shape() == src.shape() &&
                       dst.is_contiguous() && src.is_contiguous(),
                   "cuda::copy_async: {} <- {}: both sides must be contiguous with the same dtype "
                   "and shape; call contiguous() and to(dtype) first",
                   dst.describe(), src.describe());
  STRATA_CHECK_ARG(dst.is_cuda() || src.is_cuda(),
                   "cuda::copy_async: {} <- {}: one side must be on a GPU", dst.describe(),
                   src.describe());
  const bool peer = dst.is_cuda() && src.is_cuda() && dst.device() != src.device();
  const int gpu = dst.is_cuda() ? dst.device().index() : src.device().index();
  const bool stream_fits =
      peer ? (stream.device() == dst.device().index() || stream.device() == src.device().index())
           : stream.device() == gpu;
  STRATA_CHECK_ARG(stream_fits,
                   "cuda::copy_async: {} <- {} cannot run on a stream of cuda:{}; use a stream "
                   "of the GPU involved",
                   dst.describe(), src.describe(), stream.device());
}

}  // namespace

void copy_async(const Tensor& dst, const Tensor& src, const Stream& stream) {
  check_copy_operands(dst, src, stream);
  if (dst.numel() == 0) return;
  STRATA_CHECK_ARG(dst.storage().writable(), "cuda::copy_async: {} views read-only memory",
                   dst.describe());
  enqueue_copy(dst.data_ptr(), dst.device(), src.data_ptr(), src.device(), dst.nbytes(), stream);
  for (const Tensor* t : {&dst, &src}) {
    if (t->is_cuda()) record_stream(*t, stream);
  }
}

void record_stream(const Tensor& tensor, const Stream& stream) {
  STRATA_CHECK_ARG(tensor.defined() && tensor.is_cuda(),
                   "cuda::record_stream: {} is not a GPU tensor", tensor.describe());
  if (!tensor.storage().owns_memory() || tensor.numel() == 0) return;
  detail::device_allocator(tensor.device().index())
      .record_stream(tensor.data_ptr(), static_cast<cudaStream_t>(stream.native_handle()),
                     stream.device());
}

void register_cuda_backend_if_present() {
  if (device_count() == 0) return;  // no driver or no GPU: CUDA devices stay unavailable
  (void)peer_access_enabled(0, 0);  // enables peer access between every capable pair
  register_backend(std::make_unique<CudaBackend>());
}

}  // namespace strata::cuda
