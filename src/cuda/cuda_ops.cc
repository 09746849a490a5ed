// Host entry points of the CUDA kernels: Tensors to kernel arguments, launch on the compute
// stream, launch status to a typed error.

#include "cuda/cuda_ops.h"

#include <array>
#include <atomic>

#include "cuda/caching_allocator.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "cuda/stream_internal.h"
#include "engine/sampling_rows.h"
#include "strata/cuda/device.h"

namespace strata::cuda {
namespace {

using kernels::Type;

static_assert(static_cast<int>(Type::Float8E5M2) == static_cast<int>(DType::Float8E5M2) &&
              static_cast<int>(Type::Float32) == static_cast<int>(DType::Float32) &&
              static_cast<int>(Type::Bool) == static_cast<int>(DType::Bool));

Type type_of(DType dtype) { return static_cast<Type>(dtype); }

int gpu_of(const Tensor& t) { return t.device().index(); }

cudaStream_t stream_of(const Tensor& t) { return detail::compute_stream_handle(gpu_of(t)); }

// Runs `launch` with `t`'s device current and turns its status into an error naming `op`.
template <typename F>
void launch_on(const char* op, const Tensor& t, F&& launch) {
  DeviceGuard guard(gpu_of(t));
  detail::check(launch(stream_of(t)), op, gpu_of(t));
}

kernels::Strided strided(const Tensor& t) {
  STRATA_CHECK(t.dim() <= kernels::kMaxRank, NotSupported,
               "CUDA kernels take tensors of up to {} dimensions; {} has {}", kernels::kMaxRank,
               t.describe(), t.dim());
  kernels::Strided s;
  s.data = t.data_ptr();
  s.type = type_of(t.dtype());
  s.rank = static_cast<int>(t.dim());
  for (int d = 0; d < s.rank; ++d) {
    s.sizes[d] = t.size(d);
    s.strides[d] = t.stride(d);
  }
  if (s.rank == 0) {  // a scalar is one element
    s.rank = 1;
    s.sizes[0] = 1;
    s.strides[0] = 1;
  }
  return s;
}

// [outer, dim, inner] split of a contiguous tensor around `dim`.
struct Around {
  std::int64_t outer = 1, dim = 1, inner = 1;
};
Around around(const Tensor& x, std::int64_t dim) {
  Around a;
  for (std::int64_t d = 0; d < x.dim(); ++d) {
    if (d < dim) a.outer *= x.size(d);
    if (d == dim) a.dim = x.size(d);
    if (d > dim) a.inner *= x.size(d);
  }
  return a;
}

// Asked once per device (an attention launch needs it every time).
int multiprocessor_count(int device) {
  static std::array<std::atomic<int>, 64> counts{};
  const auto slot = static_cast<std::size_t>(device);
  if (slot < counts.size()) {
    if (const int known = counts[slot].load(std::memory_order_relaxed); known > 0) return known;
  }
  int count = 0;
  STRATA_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device), device);
  if (slot < counts.size()) counts[slot].store(count, std::memory_order_relaxed);
  return count;
}

kernels::Unary unary_of(cpu::UnaryKind kind) {
  switch (kind) {
    case cpu::UnaryKind::Silu:
      return kernels::Unary::Silu;
    case cpu::UnaryKind::GeluErf:
      return kernels::Unary::GeluErf;
    case cpu::UnaryKind::GeluTanh:
      return kernels::Unary::GeluTanh;
    case cpu::UnaryKind::Relu:
      return kernels::Unary::Relu;
    case cpu::UnaryKind::Tanh:
      return kernels::Unary::Tanh;
  }
  STRATA_ASSERT(false, "unknown unary kind {}", static_cast<int>(kind));
}

}  // namespace

void copy_strided(const Tensor& dst, const Tensor& src) {
  STRATA_ASSERT(dst.device() == src.device() && dst.is_cuda(), "copy_strided: {} <- {}",
                dst.describe(), src.describe());
  // Overlapping views of one storage: read everything before writing anything.
  const Tensor source =
      dst.storage().is_same(src.storage()) && src.dtype() != dst.dtype() ? src.contiguous() : src;
  Tensor staged;
  if (dst.storage().is_same(source.storage())) {
    staged = Tensor::empty(source.shape(), source.dtype(), source.device());
    launch_on("strided copy", dst, [&](cudaStream_t s) {
      return kernels::strided_convert(strided(staged), strided(source), source.numel(), s);
    });
  }
  const Tensor& from = staged.defined() ? staged : source;
  launch_on("strided copy", dst, [&](cudaStream_t s) {
    return kernels::strided_convert(strided(dst), strided(from), dst.numel(), s);
  });
}

void unary_float(cpu::UnaryKind kind, const Tensor& x, const Tensor& out) {
  const Tensor xc = x.contiguous();
  launch_on("unary op", out, [&](cudaStream_t s) {
    return kernels::unary(unary_of(kind), xc.data_ptr(), out.data_ptr(), type_of(x.dtype()),
                          out.numel(), s);
  });
}

void binary_float(cpu::BinaryKind kind, const Tensor& a, const Tensor& b, const Tensor& out) {
  const auto op = kind == cpu::BinaryKind::Add ? kernels::Binary::Add : kernels::Binary::Mul;
  launch_on(kind == cpu::BinaryKind::Add ? "add" : "mul", out, [&](cudaStream_t s) {
    return kernels::binary(op, strided(a), strided(b), out.data_ptr(), out.numel(), s);
  });
}

void sum_in_order(const std::vector<Tensor>& parts, const Tensor& out) {
  // Past kMaxSumParts the running sum (in `out`) is the first part of the next launch: the same
  // chain of roundings.
  std::size_t next = 0;
  while (next < parts.size()) {
    kernels::SumParts s;
    if (next > 0) s.parts[s.count++] = out.data_ptr();
    for (; next < parts.size() && s.count < kernels::kMaxSumParts; ++next) {
      s.parts[s.count++] = parts[next].data_ptr();
    }
    launch_on("sum_in_order", out, [&](cudaStream_t stream) {
      return kernels::sum_in_order(s, out.data_ptr(), type_of(out.dtype()), out.numel(), stream);
    });
  }
}

void softmax(const Tensor& x, std::int64_t dim, const Tensor& out) {
  const Tensor xc = x.contiguous();
  const Around a = around(xc, dim);
  launch_on("softmax", out, [&](cudaStream_t s) {
    return kernels::softmax(xc.data_ptr(), out.data_ptr(), type_of(x.dtype()), a.outer, a.dim,
                            a.inner, s);
  });
}

void argmax(const Tensor& x, std::int64_t dim, const Tensor& out) {
  const Tensor xc = x.contiguous();
  const Around a = around(xc, dim);
  launch_on("argmax", out, [&](cudaStream_t s) {
    return kernels::argmax(xc.data_ptr(), type_of(x.dtype()), a.outer, a.dim, a.inner,
                           static_cast<std::int64_t*>(out.data_ptr()), s);
  });
}

void topk(const Tensor& x, std::int64_t k, std::int64_t dim, const Tensor& values,
          const Tensor& indices) {
  const Tensor xc = x.contiguous();
  const Around a = around(xc, dim);
  launch_on("topk", values, [&](cudaStream_t s) {
    return kernels::topk(xc.data_ptr(), type_of(x.dtype()), a.outer, a.dim, a.inner, k,
                         values.data_ptr(), static_cast<std::int64_t*>(indices.data_ptr()), s);
  });
}

void sample_rows(const Tensor& logits, const Tensor& rows, std::int64_t penalty_count,
                 const Tensor& ids, const Tensor* probs) {
  const std::int64_t batch = logits.size(0), vocab = logits.size(1);
  STRATA_ASSERT(rows.nbytes() == batch * sizeof(engine::detail::RowParams) +
                                     penalty_count * sizeof(engine::detail::PenaltyEntry),
                "sample_rows: {} bytes of rows for {} rows and {} penalties", rows.nbytes(), batch,
                penalty_count);
  const Tensor workspace = Tensor::empty({batch, vocab}, DType::Float32, logits.device());
  const auto* base = static_cast<const char*>(rows.data_ptr());
  launch_on("sample", logits, [&](cudaStream_t s) {
    return kernels::sample_rows(logits.data_ptr(), type_of(logits.dtype()), batch, vocab, base,
                                base + batch * sizeof(engine::detail::RowParams),
                                workspace.data<float>(), ids.data<std::int64_t>(),
                                probs != nullptr ? probs->data<float>() : nullptr, s);
  });
}

void rms_norm(const Tensor& x, const Tensor& weight, double eps, const Tensor& out) {
  const std::int64_t dim = x.dim() == 0 ? 1 : x.size(-1);
  const std::int64_t rows = dim == 0 ? 0 : x.numel() / dim;
  launch_on("rms_norm", out, [&](cudaStream_t s) {
    return kernels::rms_norm(x.data_ptr(), weight.data_ptr(), out.data_ptr(), type_of(x.dtype()),
                             rows, dim, static_cast<float>(eps), s);
  });
}

void layer_norm(const Tensor& x, const std::optional<Tensor>& weight,
                const std::optional<Tensor>& bias, double eps, const Tensor& out) {
  const std::int64_t dim = x.dim() == 0 ? 1 : x.size(-1);
  const std::int64_t rows = dim == 0 ? 0 : x.numel() / dim;
  launch_on("layer_norm", out, [&](cudaStream_t s) {
    return kernels::layer_norm(x.data_ptr(), weight ? weight->data_ptr() : nullptr,
                               bias ? bias->data_ptr() : nullptr, out.data_ptr(),
                               type_of(x.dtype()), rows, dim, static_cast<float>(eps), s);
  });
}

void rotary_embedding(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& out) {
  launch_on("rotary_embedding", out, [&](cudaStream_t s) {
    return kernels::rotary(strided(x), strided(cos), strided(sin), out.data_ptr(), s);
  });
}

void embedding(const Tensor& ids, const Tensor& table, const Tensor& out) {
  const std::int64_t n = ids.numel();
  const std::int64_t vocab = table.size(0);
  // The first bad position comes back through a small device word (one sync, as the CPU path
  // reports the id).
  Tensor bad = Tensor::full({}, static_cast<double>(n), DType::Int64, out.device());
  launch_on("embedding", out, [&](cudaStream_t s) {
    return kernels::embedding(strided(ids), n, table.data_ptr(), vocab,
                              table.size(1) * static_cast<std::int64_t>(table.element_size()),
                              out.data_ptr(), static_cast<unsigned long long*>(bad.data_ptr()), s);
  });
  const auto position = static_cast<std::int64_t>(bad.to(Device::cpu()).item());
  if (position < n) {
    const auto id = static_cast<std::int64_t>(
        ids.contiguous().view({n}).narrow(0, position, 1).to(Device::cpu()).item());
    STRATA_THROW(InvalidArgument,
                 "embedding: id {} at position {} of 'ids' ({}) is outside the vocabulary [0, "
                 "{}) of 'table' ({})",
                 id, position, ids.describe(), vocab, table.describe());
  }
}

void scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor* mask, bool causal, float scale, const Tensor& out,
                                  const Tensor* sinks) {
  const Tensor qc = q.stride(3) == 1 ? q : q.contiguous();
  const Tensor kc = k.stride(3) == 1 ? k : k.contiguous();
  const Tensor vc = v.stride(3) == 1 ? v : v.contiguous();
  kernels::Attention a;
  a.q = qc.data_ptr();
  a.k = kc.data_ptr();
  a.v = vc.data_ptr();
  a.out = out.data_ptr();
  a.type = type_of(q.dtype());
  a.batch = q.size(0);
  a.q_heads = q.size(1);
  a.q_len = q.size(2);
  a.head_dim = q.size(3);
  a.kv_heads = k.size(1);
  a.k_len = k.size(2);
  a.v_dim = v.size(3);
  for (int d = 0; d < 4; ++d) {
    a.q_strides[d] = qc.stride(d);
    a.k_strides[d] = kc.stride(d);
    a.v_strides[d] = vc.stride(d);
  }
  if (mask != nullptr) {
    a.mask = mask->data_ptr();
    a.mask_type = type_of(mask->dtype());
    for (int d = 0; d < 4; ++d) a.mask_strides[d] = mask->stride(d);
  }
  a.causal = causal;
  a.scale = scale;
  if (sinks != nullptr) a.sinks = static_cast<const float*>(sinks->data_ptr());
  STRATA_CHECK(a.head_dim <= 256 && a.v_dim <= 256, NotSupported,
               "scaled_dot_product_attention on {}: head dimensions up to 256 are supported, got "
               "q {} and v {}",
               q.device(), q.describe(), v.describe());
  const int sms = multiprocessor_count(gpu_of(q));
  const std::size_t ws_bytes = kernels::attention_workspace_bytes(a, sms);
  Tensor workspace;
  if (ws_bytes > 0) {
    workspace = Tensor::empty({static_cast<std::int64_t>(ws_bytes / sizeof(float))}, DType::Float32,
                              q.device());
  }
  launch_on("scaled_dot_product_attention", out, [&](cudaStream_t s) {
    return kernels::attention(a, ws_bytes > 0 ? workspace.data_ptr() : nullptr, sms, s);
  });
}

}  // namespace strata::cuda
