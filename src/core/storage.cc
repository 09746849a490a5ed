#include "strata/core/storage.h"

#include "strata/core/error.h"

namespace strata {

struct Storage::Impl {
  void* data = nullptr;
  std::size_t nbytes = 0;
  Device device;
  bool pinned = false;
  bool writable = true;
  Allocator* allocator = nullptr;      // set when the bytes are owned
  std::shared_ptr<const void> owner;   // keeps a view's memory alive

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    if (allocator != nullptr) allocator->deallocate(data, nbytes);
  }
};

Storage Storage::allocate(std::size_t nbytes, Allocator& allocator) {
  auto impl = std::make_shared<Impl>();
  impl->data = allocator.allocate(nbytes);
  impl->nbytes = nbytes;
  impl->device = allocator.device();
  impl->pinned = allocator.pinned();
  impl->allocator = &allocator;
  Storage s;
  s.impl_ = std::move(impl);
  return s;
}

Storage Storage::wrap(void* data, std::size_t nbytes, Device device,
                      std::shared_ptr<const void> owner, bool writable, bool pinned) {
  STRATA_CHECK_ARG(data != nullptr || nbytes == 0, "Storage::wrap: null data for {} bytes", nbytes);
  auto impl = std::make_shared<Impl>();
  impl->data = data;
  impl->nbytes = nbytes;
  impl->device = device;
  impl->pinned = pinned;
  impl->writable = writable;
  impl->owner = std::move(owner);
  Storage s;
  s.impl_ = std::move(impl);
  return s;
}

void* Storage::data() const { return impl_ ? impl_->data : nullptr; }
std::size_t Storage::nbytes() const { return impl_ ? impl_->nbytes : 0; }
Device Storage::device() const { return impl_ ? impl_->device : Device::cpu(); }
bool Storage::pinned() const { return impl_ && impl_->pinned; }
bool Storage::writable() const { return impl_ && impl_->writable; }
bool Storage::owns_memory() const { return impl_ && impl_->allocator != nullptr; }

}  // namespace strata
