// Tensor: construction, factories, metadata and element access. Views are in tensor_views.cc,
// copies and conversions in tensor_copy.cc.

#include "strata/core/tensor.h"

#include <cstring>
#include <mutex>

#include "strata/core/backend.h"
#include "strata/core/convert.h"
#include "strata/core/logging.h"

namespace strata {
namespace {

// Pinned bytes when a GPU backend can pin them; pageable bytes, with a warning, when it cannot
// or when the OS refuses to pin (the storage then reports pinned() == false).
Storage allocate_pinned_or_pageable(std::size_t nbytes) {
  if (DeviceBackend* cuda = find_backend(DeviceType::CUDA)) {
    if (Allocator* pinned = cuda->pinned_host_allocator()) {
      try {
        return Storage::allocate(nbytes, *pinned);
      } catch (const OutOfMemory& e) {
        log_warning(std::string(e.what()) + "; using pageable memory instead");
        return Storage::allocate(nbytes, cpu_allocator());
      }
    }
  }
  static std::once_flag warned;
  std::call_once(warned, [] {
    log_warning("pinned host memory was asked for but no GPU backend can pin memory here; using "
                "pageable memory (host-to-device copies will be slower)");
  });
  return Storage::allocate(nbytes, cpu_allocator());
}

}  // namespace

Tensor::Tensor(Storage storage, Device device, DType dtype, Shape shape, Shape strides,
               std::int64_t offset)
    : storage_(std::move(storage)),
      device_(device),
      dtype_(dtype),
      shape_(std::move(shape)),
      strides_(std::move(strides)),
      offset_(offset),
      defined_(true) {
  STRATA_ASSERT(shape_.size() == strides_.size(), "shape {} and strides {} differ in rank",
                shape_str(shape_), shape_str(strides_));
  for (auto d : shape_) {
    STRATA_CHECK_ARG(d >= 0, "invalid tensor shape {}: sizes must be non-negative",
                     shape_str(shape_));
  }
  if (device_.is_meta()) return;
  STRATA_ASSERT(storage_.defined(), "a {} tensor needs a storage", device_.str());
  // The furthest element reachable must lie inside the storage.
  if (numel() > 0) {
    std::int64_t last = offset_;
    for (std::size_t i = 0; i < shape_.size(); ++i) last += (shape_[i] - 1) * strides_[i];
    const auto needed = static_cast<std::size_t>(last + 1) * dtype_size(dtype_);
    STRATA_CHECK_ARG(offset_ >= 0 && needed <= storage_.nbytes(),
                     "tensor of shape {} with strides {} and offset {} ({}) needs {} bytes but its "
                     "storage holds {}",
                     shape_str(shape_), shape_str(strides_), offset_, dtype_, needed,
                     storage_.nbytes());
  }
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device, MemoryKind memory) {
  for (auto d : shape) {
    STRATA_CHECK_ARG(d >= 0, "Tensor::empty: invalid shape {}: sizes must be non-negative",
                     shape_str(shape));
  }
  if (device.is_meta())
    return Tensor(Storage(), device, dtype, shape, contiguous_strides(shape), 0);
  const std::size_t nbytes = static_cast<std::size_t>(shape_numel(shape)) * dtype_size(dtype);
  Storage storage;
  if (device.is_cpu()) {
    storage = memory == MemoryKind::Pinned ? allocate_pinned_or_pageable(nbytes)
                                           : Storage::allocate(nbytes, cpu_allocator());
  } else {
    STRATA_CHECK_ARG(memory == MemoryKind::Pageable,
                     "Tensor::empty: pinned memory is a host-memory property; {} is not the cpu",
                     device);
    device = resolve_device(device);
    storage = Storage::allocate(nbytes, backend_for(device).allocator(device.index()));
  }
  return Tensor(std::move(storage), device, dtype, shape, contiguous_strides(shape), 0);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::arange(std::int64_t n, DType dtype, Device device) {
  STRATA_CHECK_ARG(n >= 0, "Tensor::arange: n must be non-negative, got {}", n);
  std::vector<double> values(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) values[static_cast<std::size_t>(i)] = static_cast<double>(i);
  return from_doubles(values, {n}, dtype).to(device);
}

Tensor Tensor::empty_like(const Tensor& other) {
  other.check_defined("empty_like");
  return empty(other.shape(), other.dtype(), other.device(),
               other.is_pinned() ? MemoryKind::Pinned : MemoryKind::Pageable);
}

Tensor Tensor::from_doubles(const std::vector<double>& values, Shape shape, DType dtype) {
  STRATA_CHECK_ARG(shape_numel(shape) == static_cast<std::int64_t>(values.size()),
                   "Tensor::from_doubles: {} values do not fill shape {}", values.size(),
                   shape_str(shape));
  Tensor t = empty(shape, dtype);
  convert_elements(values.data(), DType::Float64, t.data_ptr(), dtype, values.size());
  return t;
}

Tensor Tensor::from_storage(Storage storage, DType dtype, const Shape& shape,
                            std::int64_t offset_elements) {
  STRATA_CHECK_ARG(storage.defined(), "Tensor::from_storage: undefined storage");
  const Device device = storage.device();
  return Tensor(std::move(storage), device, dtype, shape, contiguous_strides(shape),
                offset_elements);
}

std::int64_t Tensor::size(std::int64_t dim) const {
  return shape_[static_cast<std::size_t>(wrap_dim(dim, this->dim(), "Tensor::size"))];
}

std::int64_t Tensor::stride(std::int64_t dim) const {
  return strides_[static_cast<std::size_t>(wrap_dim(dim, this->dim(), "Tensor::stride"))];
}

std::int64_t Tensor::numel() const { return shape_numel(shape_); }

bool Tensor::is_contiguous() const {
  std::int64_t expected = 1;
  for (std::size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (shape_[i] == 0) return true;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

std::string Tensor::describe() const {
  if (!defined_) return "Tensor(undefined)";
  return fmt::format("Tensor{} {} {}{}", shape_str(shape_), dtype_, device_,
                     is_pinned() ? " pinned" : "");
}

void Tensor::check_defined(const char* what) const {
  STRATA_CHECK_ARG(defined_, "Tensor::{}: the tensor is undefined", what);
}

void* Tensor::data_ptr() const {
  check_defined("data_ptr");
  STRATA_CHECK_ARG(!device_.is_meta(),
                   "{} is a meta tensor and has no data; load or initialise its weights first",
                   describe());
  return static_cast<char*>(storage_.data()) +
         static_cast<std::size_t>(offset_) * dtype_size(dtype_);
}

void Tensor::check_access(DType requested, const char* what) const {
  check_defined(what);
  STRATA_CHECK_ARG(requested == dtype_, "Tensor::{}: element type {} requested but {} holds {}",
                   what, requested, describe(), dtype_);
}

std::int64_t Tensor::element_offset(std::span<const std::int64_t> index) const {
  STRATA_CHECK_ARG(static_cast<std::int64_t>(index.size()) == dim(),
                   "index with {} components for {} which has {} dimensions", index.size(),
                   describe(), dim());
  std::int64_t off = offset_;
  for (std::size_t i = 0; i < index.size(); ++i) {
    std::int64_t k = index[i];
    if (k < 0) k += shape_[i];
    STRATA_CHECK_ARG(k >= 0 && k < shape_[i], "index {} is out of range for dimension {} of {}",
                     index[i], i, describe());
    off += k * strides_[i];
  }
  return off;
}

double Tensor::value_at(std::span<const std::int64_t> index) const {
  check_defined("value_at");
  STRATA_CHECK(device_.is_cpu(), DeviceError,
               "Tensor::value_at: {} is on {}; move it to cpu first", describe(), device_);
  const std::int64_t off = element_offset(index);
  return visit_dtype(dtype_, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T v = static_cast<const T*>(storage_.data())[off];
    if constexpr (std::is_same_v<T, bool>) {
      return v ? 1.0 : 0.0;
    } else if constexpr (std::is_arithmetic_v<T>) {
      return static_cast<double>(v);
    } else {
      return static_cast<double>(static_cast<float>(v));
    }
  });
}

double Tensor::item() const {
  check_defined("item");
  STRATA_CHECK_ARG(numel() == 1, "Tensor::item: {} has {} elements, item() needs exactly one",
                   describe(), numel());
  const Tensor flat = to(Device::cpu()).reshape({1});
  const std::int64_t zero = 0;
  return flat.value_at(std::span<const std::int64_t>(&zero, 1));
}

std::vector<double> Tensor::to_doubles() const {
  check_defined("to_doubles");
  const Tensor c = to(Device::cpu(), DType::Float64).contiguous();
  const double* p = c.data<double>();
  return std::vector<double>(p, p + c.numel());
}

}  // namespace strata
