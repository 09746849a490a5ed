#pragma once
// Tensor: storage + offset + shape + strides + dtype. Copying a Tensor shares its storage (like a
// shared_ptr); views share storage too. A meta tensor has shape and dtype but no bytes.

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "strata/core/device.h"
#include "strata/core/dtype.h"
#include "strata/core/dtype_traits.h"
#include "strata/core/error.h"
#include "strata/core/shape.h"
#include "strata/core/storage.h"

namespace strata {

enum class MemoryKind : std::uint8_t {
  Pageable,  // ordinary host memory (or device memory for GPU tensors)
  Pinned,    // page-locked host memory; falls back to pageable with a warning if refused
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor
  // A tensor over `storage`; for meta tensors pass an empty storage and Device::meta().
  Tensor(Storage storage, Device device, DType dtype, Shape shape, Shape strides,
         std::int64_t offset);

  // ---- factories (float32 on the cpu unless told otherwise, as in PyTorch) ----------------
  static Tensor empty(const Shape& shape, DType dtype = DType::Float32,
                      Device device = Device::cpu(), MemoryKind memory = MemoryKind::Pageable);
  static Tensor zeros(const Shape& shape, DType dtype = DType::Float32,
                      Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::Float32,
                     Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype, Device device = Device::cpu());
  // 0, 1, ..., n-1
  static Tensor arange(std::int64_t n, DType dtype = DType::Int64, Device device = Device::cpu());
  static Tensor empty_like(const Tensor& other);
  // Contiguous CPU tensor holding a copy of `values`; shape defaults to [values.size()].
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, Shape shape = {});
  // Contiguous CPU tensor of `dtype` from doubles (each converted as PyTorch converts a double).
  static Tensor from_doubles(const std::vector<double>& values, Shape shape, DType dtype);
  // A view of `storage` (for example a file mapping) as a contiguous tensor.
  static Tensor from_storage(Storage storage, DType dtype, const Shape& shape,
                             std::int64_t offset_elements = 0);

  // ---- metadata -------------------------------------------------------------------------
  bool defined() const { return defined_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_meta() const { return device_.is_meta(); }
  bool is_cpu() const { return device_.is_cpu(); }
  bool is_cuda() const { return device_.is_cuda(); }
  bool is_pinned() const { return storage_.defined() && storage_.pinned(); }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  std::int64_t dim() const { return static_cast<std::int64_t>(shape_.size()); }
  std::int64_t size(std::int64_t dim) const;    // negative dims count from the end
  std::int64_t stride(std::int64_t dim) const;  // negative dims count from the end
  std::int64_t offset() const { return offset_; }  // in elements
  std::int64_t numel() const;
  std::size_t element_size() const { return dtype_size(dtype_); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * element_size(); }
  bool is_contiguous() const;
  const Storage& storage() const { return storage_; }
  // "Tensor[2, 3] float32 cpu"
  std::string describe() const;

  // ---- data -----------------------------------------------------------------------------
  // Address of the first element. Throws for meta and undefined tensors.
  void* data_ptr() const;
  template <typename T>
  T* data() const;

  // Element access on CPU tensors (any layout). Indices may be negative.
  template <typename T>
  T at(std::initializer_list<std::int64_t> index) const;
  template <typename T>
  void set(std::initializer_list<std::int64_t> index, T value) const;
  // The element converted to double (any dtype).
  double value_at(std::span<const std::int64_t> index) const;
  double value_at(std::initializer_list<std::int64_t> index) const {
    return value_at(std::span<const std::int64_t>(index.begin(), index.size()));
  }
  // The only element of a one-element tensor, converted to double.
  double item() const;
  // All elements in row-major order (CPU; the dtype must be T).
  template <typename T>
  std::vector<T> to_vector() const;
  // All elements converted to double, row-major (CPU).
  std::vector<double> to_doubles() const;

  // ---- views (share storage) ------------------------------------------------------------
  // New shape with the same elements; one dimension may be -1. Fails if strides do not allow it.
  Tensor view(const Shape& shape) const;
  // view() when possible, else a contiguous copy.
  Tensor reshape(const Shape& shape) const;
  Tensor narrow(std::int64_t dim, std::int64_t start, std::int64_t length) const;
  Tensor select(std::int64_t dim, std::int64_t index) const;
  Tensor transpose(std::int64_t dim0, std::int64_t dim1) const;
  Tensor permute(const std::vector<std::int64_t>& dims) const;
  Tensor unsqueeze(std::int64_t dim) const;
  Tensor squeeze(std::int64_t dim) const;
  // Broadcasts size-1 dimensions (stride 0); -1 keeps a size. May add leading dimensions.
  Tensor expand(const Shape& shape) const;

  // ---- copies ---------------------------------------------------------------------------
  // This tensor if already contiguous, else a contiguous copy.
  Tensor contiguous() const;
  // A contiguous copy on the same device.
  Tensor clone() const;
  // Same tensor when device and dtype already match; otherwise a contiguous copy. Integer and
  // bool conversions follow PyTorch's. A "cuda" device without index means the current GPU.
  Tensor to(Device device, DType dtype, bool non_blocking = false) const;
  Tensor to(Device device, bool non_blocking = false) const {
    return to(device, dtype_, non_blocking);
  }
  Tensor to(DType dtype) const { return to(device_, dtype, false); }
  // Copies `src` into this tensor, converting dtype, broadcasting src to this shape, across
  // devices. Returns *this.
  const Tensor& copy_(const Tensor& src, bool non_blocking = false) const;
  // Fills every element with `value` (converted as PyTorch converts a double).
  const Tensor& fill_(double value) const;

 private:
  void check_defined(const char* what) const;
  std::int64_t element_offset(std::span<const std::int64_t> index) const;
  void check_access(DType requested, const char* what) const;

  Storage storage_;
  Device device_ = Device::cpu();
  DType dtype_ = DType::Float32;
  Shape shape_;
  Shape strides_;
  std::int64_t offset_ = 0;
  bool defined_ = false;
};

// ---- template definitions -------------------------------------------------------------------

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, Shape shape) {
  if (shape.empty() && values.size() != 1) shape = {static_cast<std::int64_t>(values.size())};
  STRATA_CHECK_ARG(shape_numel(shape) == static_cast<std::int64_t>(values.size()),
                   "Tensor::from_vector: {} values do not fill shape {}", values.size(),
                   shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>);
  T* out = t.data<T>();
  for (std::size_t i = 0; i < values.size(); ++i) out[i] = values[i];
  return t;
}

template <typename T>
T* Tensor::data() const {
  check_access(dtype_of<T>, "data<T>()");
  return static_cast<T*>(data_ptr());
}

template <typename T>
T Tensor::at(std::initializer_list<std::int64_t> index) const {
  check_access(dtype_of<T>, "at<T>()");
  STRATA_CHECK(device_.is_cpu(), DeviceError, "Tensor::at: {} is on {}; move it to cpu first",
               describe(), device_.str());
  const auto* base = static_cast<const T*>(storage_.data());
  return base[element_offset(std::span<const std::int64_t>(index.begin(), index.size()))];
}

template <typename T>
void Tensor::set(std::initializer_list<std::int64_t> index, T value) const {
  check_access(dtype_of<T>, "set<T>()");
  STRATA_CHECK(device_.is_cpu(), DeviceError, "Tensor::set: {} is on {}; move it to cpu first",
               describe(), device_.str());
  STRATA_CHECK(storage_.writable(), InvalidArgument,
               "Tensor::set: {} views read-only memory (a mapped file); clone() it first",
               describe());
  auto* base = static_cast<T*>(storage_.data());
  base[element_offset(std::span<const std::int64_t>(index.begin(), index.size()))] = value;
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  check_access(dtype_of<T>, "to_vector<T>()");
  const Tensor c = to(Device::cpu()).contiguous();
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}

}  // namespace strata
