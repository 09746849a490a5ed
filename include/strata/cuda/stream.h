#pragma once
// RAII CUDA streams and events, and asynchronous tensor copies ordered by them. No CUDA headers:
// the handles are opaque (native_handle() gives the cudaStream_t / cudaEvent_t as void*).
//
// Ordering is explicit: work goes to a stream the caller names, and streams wait on events,
// never on a device-wide synchronisation. Ops and plain Tensor::to/copy_ run on each device's
// compute stream (Stream::compute), owned by the backend.

#include "strata/core/tensor.h"

namespace strata::cuda {

class Event;

class Stream {
 public:
  // A new non-blocking stream on `device` (-1: the current device).
  explicit Stream(int device = -1);
  ~Stream();
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // The backend's compute stream of `device`: ops, Tensor::to and copy_ run there.
  static const Stream& compute(int device);

  int device() const { return device_; }
  void* native_handle() const { return handle_; }
  // Blocks the host until everything queued so far has run.
  void synchronize() const;
  // True when everything queued so far has run.
  bool query() const;
  // Later work on this stream waits until `event` has completed (no host blocking).
  void wait(const Event& event) const;

 private:
  Stream(int device, void* handle, bool owned) : device_(device), handle_(handle), owned_(owned) {}
  void release() noexcept;

  int device_ = -1;
  void* handle_ = nullptr;
  bool owned_ = true;
};

class Event {
 public:
  // An event on `device` (-1: the current device); timing events can measure elapsed time.
  explicit Event(int device = -1, bool enable_timing = false);
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  int device() const { return device_; }
  void* native_handle() const { return handle_; }
  void record(const Stream& stream);
  void synchronize() const;
  bool query() const;
  // Milliseconds from this event to `end` (both recorded, both timing events).
  float elapsed_ms(const Event& end) const;

 private:
  void release() noexcept;

  int device_ = -1;
  void* handle_ = nullptr;
};

// Queues dst <- src on `stream` and returns at once. Host <-> device, device <-> device and peer
// copies between GPUs; both tensors contiguous with the same dtype and shape. Host memory should
// be pinned (pageable memory works, at pageable speed). Both tensors must stay alive until the
// copy is done: record an event after it or call record_stream on the device side.
void copy_async(const Tensor& dst, const Tensor& src, const Stream& stream);

// Tells the caching allocator that `tensor` (on a GPU) is used on `stream`, so its memory is not
// handed out again before the work queued there so far has finished.
void record_stream(const Tensor& tensor, const Stream& stream);

}  // namespace strata::cuda
