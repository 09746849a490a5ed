// Copies and conversions: copy_, contiguous, clone, to, fill_. CPU-to-CPU copies run a strided,
// converting loop over the cores; copies that touch a GPU go through the device backend.

#include <cstring>

#include "strata/core/backend.h"
#include "strata/core/convert.h"
#include "strata/core/parallel.h"
#include "strata/core/tensor.h"

namespace strata {
namespace {

// Shape and the two stride vectors with size-1 dimensions dropped and neighbouring dimensions
// merged where both tensors are laid out contiguously across them, so inner loops run long.
struct CopyLayout {
  Shape shape;
  Shape dst_strides;
  Shape src_strides;
};

CopyLayout coalesce(const Shape& shape, const Shape& dst_strides, const Shape& src_strides) {
  CopyLayout out;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 1) continue;
    if (!out.shape.empty() && out.dst_strides.back() == shape[i] * dst_strides[i] &&
        out.src_strides.back() == shape[i] * src_strides[i]) {
      out.shape.back() *= shape[i];
      out.dst_strides.back() = dst_strides[i];
      out.src_strides.back() = src_strides[i];
      continue;
    }
    out.shape.push_back(shape[i]);
    out.dst_strides.push_back(dst_strides[i]);
    out.src_strides.push_back(src_strides[i]);
  }
  if (out.shape.empty()) {
    out.shape = {1};
    out.dst_strides = {1};
    out.src_strides = {1};
  }
  return out;
}

// dst and src have the same shape (src possibly broadcast with zero strides), both on the CPU.
void copy_cpu(const Tensor& dst, const Tensor& src) {
  const CopyLayout layout = coalesce(dst.shape(), dst.strides(), src.strides());
  const std::int64_t inner = layout.shape.back();
  const std::int64_t rows = shape_numel(layout.shape) / inner;
  const std::size_t rank = layout.shape.size();
  auto* dst_base = static_cast<char*>(dst.data_ptr());
  const auto* src_base = static_cast<const char*>(src.data_ptr());
  const std::size_t dst_size = dtype_size(dst.dtype());
  const std::size_t src_size = dtype_size(src.dtype());
  const std::int64_t grain = std::max<std::int64_t>(1, (1 << 16) / inner);
  parallel_for(rows, grain, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t row = begin; row < end; ++row) {
      std::int64_t rest = row;
      std::int64_t dst_off = 0;
      std::int64_t src_off = 0;
      for (std::size_t d = rank - 1; d-- > 0;) {
        const std::int64_t k = rest % layout.shape[d];
        rest /= layout.shape[d];
        dst_off += k * layout.dst_strides[d];
        src_off += k * layout.src_strides[d];
      }
      convert_elements_strided(src_base + src_off * static_cast<std::int64_t>(src_size),
                               src.dtype(), layout.src_strides.back(),
                               dst_base + dst_off * static_cast<std::int64_t>(dst_size),
                               dst.dtype(), layout.dst_strides.back(),
                               static_cast<std::size_t>(inner));
    }
  });
}

bool same_bytes_layout(const Tensor& dst, const Tensor& src) {
  return dst.dtype() == src.dtype() && dst.shape() == src.shape() && dst.is_contiguous() &&
         src.is_contiguous();
}

[[noreturn]] void unsupported_device_copy(const Tensor& dst, const Tensor& src) {
  STRATA_THROW(NotSupported,
               "copy from {} to {}: copies between two GPUs must keep dtype and shape; convert "
               "on the source GPU first (to(dtype)), or go through the cpu",
               src.describe(), dst.describe());
}

// Copies between a CPU and a GPU tensor, or between two GPU tensors, via the device backend.
void copy_across_devices(const Tensor& dst, const Tensor& src, bool non_blocking) {
  const Device gpu = dst.is_cuda() ? dst.device() : src.device();
  DeviceBackend& backend = backend_for(gpu);
  if (same_bytes_layout(dst, src)) {
    backend.copy(dst.data_ptr(), dst.device(), src.data_ptr(), src.device(), dst.nbytes(),
                 non_blocking);
    return;
  }
  if (dst.device() == src.device() && backend.copy_strided(dst, src)) return;
  if (!src.is_cpu() && !src.is_contiguous()) {
    // Lay the source out on its own device first (a device-side strided copy), then transfer.
    copy_across_devices(dst, src.contiguous(), false);
    return;
  }
  if (!dst.is_cpu() && !dst.is_contiguous()) {
    // Transfer into a contiguous buffer on the destination device, then scatter it there.
    Tensor staged = Tensor::empty(dst.shape(), dst.dtype(), dst.device());
    copy_across_devices(staged, src, false);
    dst.copy_(staged);
    return;
  }
  if (src.is_cpu() && dst.is_contiguous()) {
    // Convert and lay out on the host, then one transfer. The staging tensor dies here, so the
    // transfer must be blocking.
    Tensor staged = Tensor::empty(dst.shape(), dst.dtype());
    staged.copy_(src);
    backend.copy(dst.data_ptr(), dst.device(), staged.data_ptr(), staged.device(), dst.nbytes(),
                 false);
    return;
  }
  if (dst.is_cpu() && src.is_contiguous()) {
    Tensor host = Tensor::empty(src.shape(), src.dtype());
    backend.copy(host.data_ptr(), host.device(), src.data_ptr(), src.device(), src.nbytes(), false);
    dst.copy_(host);
    return;
  }
  unsupported_device_copy(dst, src);
}

}  // namespace

const Tensor& Tensor::copy_(const Tensor& src, bool non_blocking) const {
  check_defined("copy_");
  STRATA_CHECK_ARG(src.defined(), "Tensor::copy_: the source tensor is undefined");
  const Tensor source = src.expand(shape_);  // broadcasting; throws when shapes clash
  if (device_.is_meta()) return *this;       // nothing to write into
  STRATA_CHECK_ARG(!src.is_meta(),
                   "Tensor::copy_: cannot copy out of a meta tensor ({}); it has no data. Load "
                   "the weights (load_checkpoint_in_model) or materialise it first",
                   src.describe());
  STRATA_CHECK_ARG(storage_.writable(),
                   "Tensor::copy_: {} views read-only memory (a mapped checkpoint file); clone() "
                   "it to get a writable copy",
                   describe());
  if (numel() == 0) return *this;
  if (!device_.is_cpu() || !src.is_cpu()) {
    copy_across_devices(*this, source, non_blocking);
    return *this;
  }
  if (storage_.is_same(src.storage())) {
    if (src.offset() == offset_ && source.strides() == strides_ && src.dtype() == dtype_) {
      return *this;  // copying a view onto itself
    }
    // Overlapping memory: read everything before writing anything.
    copy_cpu(*this, source.clone());
    return *this;
  }
  copy_cpu(*this, source);
  return *this;
}

Tensor Tensor::contiguous() const {
  check_defined("contiguous");
  if (is_contiguous() || device_.is_meta()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  check_defined("clone");
  Tensor out =
      empty(shape_, dtype_, device_, is_pinned() ? MemoryKind::Pinned : MemoryKind::Pageable);
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(Device device, DType dtype, bool non_blocking) const {
  check_defined("to");
  if (device.is_cuda() && !device.has_index()) device = resolve_device(device);
  if (device == device_ && dtype == dtype_) return *this;
  if (device.is_meta()) return empty(shape_, dtype, device);
  STRATA_CHECK_ARG(!device_.is_meta(),
                   "Tensor::to: {} is a meta tensor and has no data to move to {}; load or "
                   "initialise its weights first",
                   describe(), device);
  Tensor out = empty(shape_, dtype, device);
  out.copy_(*this, non_blocking);
  return out;
}

const Tensor& Tensor::fill_(double value) const {
  check_defined("fill_");
  if (device_.is_meta() || numel() == 0) return *this;
  Tensor one = empty({}, dtype_);  // a scalar expands to any shape
  convert_elements(&value, DType::Float64, one.data_ptr(), dtype_, 1);
  if (device_.is_cpu() && is_contiguous()) {
    const std::size_t size = element_size();
    auto* out = static_cast<unsigned char*>(data_ptr());
    const auto* pattern = static_cast<const unsigned char*>(one.data_ptr());
    bool all_zero = true;
    for (std::size_t i = 0; i < size; ++i) all_zero = all_zero && pattern[i] == 0;
    STRATA_CHECK_ARG(storage_.writable(), "Tensor::fill_: {} views read-only memory; clone() it",
                     describe());
    if (all_zero) {
      std::memset(out, 0, nbytes());
      return *this;
    }
  }
  if (device_.is_cpu()) return copy_(one.expand(shape_));
  return copy_(one.expand(shape_).contiguous());
}

}  // namespace strata
