// RAII streams and events; the per-device compute streams.

#include <mutex>
#include <utility>
#include <vector>

#include "cuda/caching_allocator.h"
#include "cuda/cuda_check.h"
#include "cuda/stream_internal.h"
#include "strata/cuda/device.h"
#include "strata/cuda/stream.h"

namespace strata::cuda {
namespace {

int resolve(int device) { return device < 0 ? current_device() : device; }

cudaStream_t as_stream(void* handle) { return static_cast<cudaStream_t>(handle); }
cudaEvent_t as_event(void* handle) { return static_cast<cudaEvent_t>(handle); }

}  // namespace

Stream::Stream(int device) : device_(resolve(device)) {
  DeviceGuard guard(device_);
  cudaStream_t stream = nullptr;
  STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), device_);
  handle_ = stream;
}

Stream::~Stream() { release(); }

Stream::Stream(Stream&& other) noexcept
    : device_(other.device_),
      handle_(std::exchange(other.handle_, nullptr)),
      owned_(other.owned_) {}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    release();
    device_ = other.device_;
    handle_ = std::exchange(other.handle_, nullptr);
    owned_ = other.owned_;
  }
  return *this;
}

void Stream::release() noexcept {
  if (handle_ != nullptr && owned_) {
    // Tensors recorded on this stream may outlive it: once its work is done (a wait on this
    // stream only), the allocator no longer needs to order their reuse after it.
    if (cudaStreamSynchronize(as_stream(handle_)) != cudaSuccess) cudaGetLastError();
    for (int d = 0; d < device_count(); ++d) {  // a peer copy may have recorded it anywhere
      detail::device_allocator(d).forget_stream(as_stream(handle_));
    }
    if (cudaStreamDestroy(as_stream(handle_)) != cudaSuccess) cudaGetLastError();
  }
  handle_ = nullptr;
}

const Stream& Stream::compute(int device) {
  static std::once_flag once;
  static std::vector<Stream*>* streams = nullptr;  // never destroyed: used until process exit
  std::call_once(once, [] {
    streams = new std::vector<Stream*>();
    for (int d = 0; d < device_count(); ++d) {
      DeviceGuard guard(d);
      cudaStream_t stream = nullptr;
      STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), d);
      streams->push_back(new Stream(d, stream, /*owned=*/false));
    }
  });
  STRATA_CHECK(device >= 0 && device < static_cast<int>(streams->size()), DeviceError,
               "cuda:{} does not exist: this machine has {} GPU(s)", device, streams->size());
  return *(*streams)[static_cast<std::size_t>(device)];
}

void Stream::synchronize() const {
  STRATA_CUDA_CHECK(cudaStreamSynchronize(as_stream(handle_)), device_);
}

bool Stream::query() const {
  const cudaError_t status = cudaStreamQuery(as_stream(handle_));
  if (status == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  STRATA_CUDA_CHECK(status, device_);
  return true;
}

void Stream::wait(const Event& event) const {
  STRATA_CUDA_CHECK(cudaStreamWaitEvent(as_stream(handle_), as_event(event.native_handle()), 0),
                    device_);
}

Event::Event(int device, bool enable_timing) : device_(resolve(device)) {
  DeviceGuard guard(device_);
  cudaEvent_t event = nullptr;
  STRATA_CUDA_CHECK(
      cudaEventCreateWithFlags(&event, enable_timing ? cudaEventDefault : cudaEventDisableTiming),
      device_);
  handle_ = event;
}

Event::~Event() { release(); }

Event::Event(Event&& other) noexcept
    : device_(other.device_), handle_(std::exchange(other.handle_, nullptr)) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    release();
    device_ = other.device_;
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}

void Event::release() noexcept {
  if (handle_ != nullptr && cudaEventDestroy(as_event(handle_)) != cudaSuccess) cudaGetLastError();
  handle_ = nullptr;
}

void Event::record(const Stream& stream) {
  STRATA_CHECK(stream.device() == device_, DeviceError,
               "Event::record: the event belongs to cuda:{} but the stream to cuda:{}; create the "
               "event on the stream's device",
               device_, stream.device());
  STRATA_CUDA_CHECK(cudaEventRecord(as_event(handle_), as_stream(stream.native_handle())),
                    device_);
}

void Event::synchronize() const {
  STRATA_CUDA_CHECK(cudaEventSynchronize(as_event(handle_)), device_);
}

bool Event::query() const {
  const cudaError_t status = cudaEventQuery(as_event(handle_));
  if (status == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  STRATA_CUDA_CHECK(status, device_);
  return true;
}

float Event::elapsed_ms(const Event& end) const {
  float ms = 0.0f;
  STRATA_CUDA_CHECK(cudaEventElapsedTime(&ms, as_event(handle_), as_event(end.handle_)), device_);
  return ms;
}

namespace detail {

cudaStream_t compute_stream_handle(int device) {
  return static_cast<cudaStream_t>(Stream::compute(device).native_handle());
}

}  // namespace detail
}  // namespace strata::cuda
