#pragma once
// Storage: reference-counted bytes on one device. Either owned (made by an Allocator, returned to
// it when the last reference goes) or a non-owning view of memory kept alive by an `owner`
// handle, such as a memory-mapped file range.

#include <cstddef>
#include <memory>

#include "strata/core/allocator.h"
#include "strata/core/device.h"

namespace strata {

class Storage {
 public:
  Storage() = default;

  // Owned bytes from `allocator`. Device and pinned flag come from the allocator.
  static Storage allocate(std::size_t nbytes, Allocator& allocator);
  // A view of `nbytes` at `data`, valid while `owner` lives (the storage holds `owner`).
  // `writable` false marks read-only mappings: copies into such a storage are refused.
  static Storage wrap(void* data, std::size_t nbytes, Device device,
                      std::shared_ptr<const void> owner, bool writable = true, bool pinned = false);

  bool defined() const { return impl_ != nullptr; }
  void* data() const;
  std::size_t nbytes() const;
  Device device() const;
  bool pinned() const;
  bool writable() const;
  // True when the bytes belong to an allocator (false for views such as file mappings).
  bool owns_memory() const;
  long use_count() const { return impl_.use_count(); }
  bool is_same(const Storage& other) const { return impl_ == other.impl_; }

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace strata
