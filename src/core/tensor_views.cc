// Views: tensors that share storage with their source and differ in shape, strides or offset.

#include <algorithm>
#include <optional>

#include "strata/core/tensor.h"

namespace strata {
namespace {

// Resolves one -1 in `shape` so that it holds `numel` elements.
Shape infer_shape(const Shape& shape, std::int64_t numel, const char* what) {
  Shape out = shape;
  std::int64_t known = 1;
  std::optional<std::size_t> infer;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      STRATA_CHECK_ARG(!infer, "{}: only one dimension can be -1 in {}", what, shape_str(shape));
      infer = i;
    } else {
      STRATA_CHECK_ARG(out[i] >= 0, "{}: invalid size {} in {}", what, out[i], shape_str(shape));
      known *= out[i];
    }
  }
  if (infer) {
    STRATA_CHECK_ARG(known != 0 && numel % known == 0,
                     "{}: shape {} is invalid for {} elements", what, shape_str(shape), numel);
    out[*infer] = numel / known;
  }
  STRATA_CHECK_ARG(shape_numel(out) == numel, "{}: shape {} is invalid for {} elements", what,
                   shape_str(shape), numel);
  return out;
}

// Strides that let `new_shape` view memory laid out as (old_shape, old_strides), if any exist
// (the algorithm of PyTorch's computeStride: dimensions are grouped into contiguous chunks).
std::optional<Shape> view_strides(const Shape& old_shape, const Shape& old_strides,
                                  const Shape& new_shape) {
  if (old_shape.empty() || shape_numel(old_shape) == 0) return contiguous_strides(new_shape);
  Shape new_strides(new_shape.size());
  std::int64_t view_d = static_cast<std::int64_t>(new_shape.size()) - 1;
  std::int64_t chunk_base_stride = old_strides.back();
  std::int64_t tensor_numel = 1;
  std::int64_t view_numel = 1;
  for (std::int64_t tensor_d = static_cast<std::int64_t>(old_shape.size()) - 1; tensor_d >= 0;
       --tensor_d) {
    tensor_numel *= old_shape[tensor_d];
    if (tensor_d == 0 || (old_shape[tensor_d - 1] != 1 &&
                          old_strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        new_strides[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (tensor_d > 0) {
        chunk_base_stride = old_strides[tensor_d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return new_strides;
}

}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  check_defined("view");
  const Shape target = infer_shape(shape, numel(), "Tensor::view");
  const auto strides = view_strides(shape_, strides_, target);
  STRATA_CHECK_ARG(strides.has_value(),
                   "Tensor::view: cannot view {} with strides {} as {} without copying; use "
                   "reshape() or contiguous() first",
                   describe(), shape_str(strides_), shape_str(target));
  return Tensor(storage_, device_, dtype_, target, *strides, offset_);
}

Tensor Tensor::reshape(const Shape& shape) const {
  check_defined("reshape");
  const Shape target = infer_shape(shape, numel(), "Tensor::reshape");
  if (auto strides = view_strides(shape_, strides_, target)) {
    return Tensor(storage_, device_, dtype_, target, *strides, offset_);
  }
  return contiguous().view(target);
}

Tensor Tensor::narrow(std::int64_t dim, std::int64_t start, std::int64_t length) const {
  check_defined("narrow");
  STRATA_CHECK_ARG(this->dim() > 0, "Tensor::narrow: {} is a scalar", describe());
  const auto d = static_cast<std::size_t>(wrap_dim(dim, this->dim(), "Tensor::narrow"));
  if (start < 0) start += shape_[d];
  STRATA_CHECK_ARG(start >= 0 && length >= 0 && start + length <= shape_[d],
                   "Tensor::narrow: range [{}, {}) is outside dimension {} of size {} in {}",
                   start, start + length, dim, shape_[d], describe());
  Shape shape = shape_;
  shape[d] = length;
  return Tensor(storage_, device_, dtype_, shape, strides_, offset_ + start * strides_[d]);
}

Tensor Tensor::select(std::int64_t dim, std::int64_t index) const {
  check_defined("select");
  STRATA_CHECK_ARG(this->dim() > 0, "Tensor::select: {} is a scalar", describe());
  const auto d = static_cast<std::size_t>(wrap_dim(dim, this->dim(), "Tensor::select"));
  if (index < 0) index += shape_[d];
  STRATA_CHECK_ARG(index >= 0 && index < shape_[d],
                   "Tensor::select: index {} is out of range for dimension {} of size {} in {}",
                   index, dim, shape_[d], describe());
  Shape shape = shape_;
  Shape strides = strides_;
  const std::int64_t offset = offset_ + index * strides_[d];
  shape.erase(shape.begin() + static_cast<std::ptrdiff_t>(d));
  strides.erase(strides.begin() + static_cast<std::ptrdiff_t>(d));
  return Tensor(storage_, device_, dtype_, shape, strides, offset);
}

Tensor Tensor::transpose(std::int64_t dim0, std::int64_t dim1) const {
  check_defined("transpose");
  const auto a = static_cast<std::size_t>(wrap_dim(dim0, dim(), "Tensor::transpose"));
  const auto b = static_cast<std::size_t>(wrap_dim(dim1, dim(), "Tensor::transpose"));
  Shape shape = shape_;
  Shape strides = strides_;
  if (!shape.empty()) {
    std::swap(shape[a], shape[b]);
    std::swap(strides[a], strides[b]);
  }
  return Tensor(storage_, device_, dtype_, shape, strides, offset_);
}

Tensor Tensor::permute(const std::vector<std::int64_t>& dims) const {
  check_defined("permute");
  STRATA_CHECK_ARG(static_cast<std::int64_t>(dims.size()) == dim(),
                   "Tensor::permute: {} dimensions given for {}", dims.size(), describe());
  Shape shape(dims.size());
  Shape strides(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (std::size_t i = 0; i < dims.size(); ++i) {
    const auto d = static_cast<std::size_t>(wrap_dim(dims[i], dim(), "Tensor::permute"));
    STRATA_CHECK_ARG(!seen[d], "Tensor::permute: dimension {} repeated", dims[i]);
    seen[d] = true;
    shape[i] = shape_[d];
    strides[i] = strides_[d];
  }
  return Tensor(storage_, device_, dtype_, shape, strides, offset_);
}

Tensor Tensor::unsqueeze(std::int64_t dim) const {
  check_defined("unsqueeze");
  const auto d = static_cast<std::size_t>(wrap_dim(dim, this->dim() + 1, "Tensor::unsqueeze"));
  Shape shape = shape_;
  Shape strides = strides_;
  const std::int64_t stride =
      d < shape_.size() ? shape_[d] * strides_[d] : 1;  // any value works for a size-1 dim
  shape.insert(shape.begin() + static_cast<std::ptrdiff_t>(d), 1);
  strides.insert(strides.begin() + static_cast<std::ptrdiff_t>(d), stride);
  return Tensor(storage_, device_, dtype_, shape, strides, offset_);
}

Tensor Tensor::squeeze(std::int64_t dim) const {
  check_defined("squeeze");
  if (this->dim() == 0) return *this;
  const auto d = static_cast<std::size_t>(wrap_dim(dim, this->dim(), "Tensor::squeeze"));
  if (shape_[d] != 1) return *this;  // PyTorch leaves non-1 dimensions alone
  Shape shape = shape_;
  Shape strides = strides_;
  shape.erase(shape.begin() + static_cast<std::ptrdiff_t>(d));
  strides.erase(strides.begin() + static_cast<std::ptrdiff_t>(d));
  return Tensor(storage_, device_, dtype_, shape, strides, offset_);
}

Tensor Tensor::expand(const Shape& shape) const {
  check_defined("expand");
  STRATA_CHECK_ARG(shape.size() >= shape_.size(),
                   "Tensor::expand: target {} has fewer dimensions than {}", shape_str(shape),
                   describe());
  const std::size_t lead = shape.size() - shape_.size();
  Shape out_shape(shape.size());
  Shape out_strides(shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      STRATA_CHECK_ARG(shape[i] >= 0, "Tensor::expand: new leading dimension {} must be >= 0", i);
      out_shape[i] = shape[i];
      out_strides[i] = 0;
      continue;
    }
    const std::int64_t have = shape_[i - lead];
    const std::int64_t want = shape[i] == -1 ? have : shape[i];
    STRATA_CHECK_ARG(want == have || have == 1,
                     "Tensor::expand: cannot expand {} to {} (dimension {} has size {})",
                     describe(), shape_str(shape), i, have);
    out_shape[i] = want;
    out_strides[i] = want == have ? strides_[i - lead] : 0;
  }
  return Tensor(storage_, device_, dtype_, out_shape, out_strides, offset_);
}

}  // namespace strata
