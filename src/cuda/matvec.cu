// Matrix-vector products for the linear layers of decode (1..8 input rows): checks the request,
// sizes the grid and picks the kernel instantiation. The kernel is in matvec.cuh; its
// instantiations are spread over matvec_b1.cu .. matvec_b8.cu (defaults, one batch each) and
// matvec_sweep.cu (the tuning sweep's shapes) so they compile in parallel.

#include <cstdint>
#include <type_traits>

#include "cuda/matvec.cuh"

namespace strata::cuda::kernels {
namespace gemv_detail {

#define STRATA_GEMV_DECLARE_DEFAULT(B)                                 \
  STRATA_GEMV_DECLARE(float, B, default_rows(B), default_unroll(B))    \
  STRATA_GEMV_DECLARE(BF16Bits, B, default_rows(B), default_unroll(B)) \
  STRATA_GEMV_DECLARE(HalfBits, B, default_rows(B), default_unroll(B))
STRATA_GEMV_EACH_BATCH(STRATA_GEMV_DECLARE_DEFAULT)
#undef STRATA_GEMV_DECLARE_DEFAULT

STRATA_GEMV_DECLARE(BF16Bits, 1, 1, 8)
STRATA_GEMV_DECLARE(BF16Bits, 1, 1, 16)
STRATA_GEMV_DECLARE(BF16Bits, 1, 2, 16)
STRATA_GEMV_DECLARE(BF16Bits, 1, 4, 8)
STRATA_GEMV_DECLARE(BF16Bits, 1, 2, 4)
STRATA_GEMV_DECLARE(BF16Bits, 1, 1, 4)
STRATA_GEMV_DECLARE(BF16Bits, 1, 4, 4)
STRATA_GEMV_DECLARE(BF16Bits, 2, 2, 8)
STRATA_GEMV_DECLARE(BF16Bits, 2, 4, 4)
STRATA_GEMV_DECLARE(BF16Bits, 2, 1, 4)
STRATA_GEMV_DECLARE(BF16Bits, 4, 8, 2)
STRATA_GEMV_DECLARE(BF16Bits, 4, 2, 4)
STRATA_GEMV_DECLARE(BF16Bits, 4, 4, 2)
STRATA_GEMV_DECLARE(BF16Bits, 8, 4, 4)
STRATA_GEMV_DECLARE(BF16Bits, 8, 2, 4)
STRATA_GEMV_DECLARE(BF16Bits, 8, 2, 2)

STRATA_GEMV_DECLARE_PRELOAD(BF16Bits, 1, 2, 8)
STRATA_GEMV_DECLARE_PRELOAD(BF16Bits, 2, 2, 4)
STRATA_GEMV_DECLARE_PRELOAD(BF16Bits, 4, 4, 4)
STRATA_GEMV_DECLARE_PRELOAD(BF16Bits, 8, 4, 2)
#define STRATA_GEMV_DECLARE_ROPE_BATCH(B)                                   \
  STRATA_GEMV_DECLARE_ROPE(BF16Bits, B, default_rows(B), default_unroll(B)) \
  STRATA_GEMV_DECLARE_ROPE(HalfBits, B, default_rows(B), default_unroll(B))
STRATA_GEMV_EACH_BATCH(STRATA_GEMV_DECLARE_ROPE_BATCH)
#undef STRATA_GEMV_DECLARE_ROPE_BATCH

namespace {

using Launcher = cudaError_t (*)(const Gemv&, unsigned, cudaStream_t);

struct Shape {
  int batch, rows, unroll;
  Launcher plain, norm;
};

#define STRATA_GEMV_SHAPE(B, R, U) \
  Shape { B, R, U, &launch<BF16Bits, B, R, U, false>, &launch<BF16Bits, B, R, U, true> }
const Shape kSweep[] = {
    STRATA_GEMV_SHAPE(1, 1, 8), STRATA_GEMV_SHAPE(1, 1, 16), STRATA_GEMV_SHAPE(1, 2, 16),
    STRATA_GEMV_SHAPE(1, 4, 8), STRATA_GEMV_SHAPE(1, 2, 4),  STRATA_GEMV_SHAPE(1, 1, 4),
    STRATA_GEMV_SHAPE(1, 4, 4), STRATA_GEMV_SHAPE(2, 2, 8),  STRATA_GEMV_SHAPE(2, 4, 4),
    STRATA_GEMV_SHAPE(2, 1, 4), STRATA_GEMV_SHAPE(4, 8, 2),  STRATA_GEMV_SHAPE(4, 2, 4),
    STRATA_GEMV_SHAPE(4, 4, 2), STRATA_GEMV_SHAPE(8, 4, 4),  STRATA_GEMV_SHAPE(8, 2, 4),
    STRATA_GEMV_SHAPE(8, 2, 2),
};
#undef STRATA_GEMV_SHAPE

// The preloading kernels (Gemv::preload) of the default shapes that have one.
struct Preload {
  int batch;
  Launcher launch;
};
const Preload kPreload[] = {
    {1, &launch<BF16Bits, 1, 2, 8, false, true>},
    {2, &launch<BF16Bits, 2, 2, 4, false, true>},
    {4, &launch<BF16Bits, 4, 4, 4, false, true>},
    {8, &launch<BF16Bits, 8, 4, 2, false, true>},
};

const Shape* sweep_shape(Type type, std::int64_t batch, int rows, int unroll) {
  if (type != Type::BFloat16) return nullptr;
  for (const Shape& s : kSweep) {
    if (s.batch == batch && s.rows == rows && s.unroll == unroll) return &s;
  }
  return nullptr;
}

template <typename T, int B>
Launcher default_launcher(bool norm) {
  constexpr int R = default_rows(B), U = default_unroll(B);
  if constexpr (std::is_same_v<T, float>) {
    return norm ? nullptr : &launch<T, B, R, U, false>;  // no fused norm in float32
  } else {
    return norm ? &launch<T, B, R, U, true> : &launch<T, B, R, U, false>;
  }
}

template <typename T>
Launcher default_typed(std::int64_t batch, bool norm) {
  switch (batch) {
    case 1:
      return default_launcher<T, 1>(norm);
    case 2:
      return default_launcher<T, 2>(norm);
    case 3:
      return default_launcher<T, 3>(norm);
    case 4:
      return default_launcher<T, 4>(norm);
    case 5:
      return default_launcher<T, 5>(norm);
    case 6:
      return default_launcher<T, 6>(norm);
    case 7:
      return default_launcher<T, 7>(norm);
    case 8:
      return default_launcher<T, 8>(norm);
    default:
      return nullptr;
  }
}

// GemvEpilogue::RopeKv's kernel (matvec_rope.cu): bf16 / f16, the default shapes, no fused norm.
template <typename T, int B>
Launcher rope_launcher() {
  return &launch<T, B, default_rows(B), default_unroll(B), false, false, true>;
}
template <typename T>
Launcher rope_typed(std::int64_t batch) {
  static const Launcher kByBatch[] = {
      rope_launcher<T, 1>(), rope_launcher<T, 2>(), rope_launcher<T, 3>(), rope_launcher<T, 4>(),
      rope_launcher<T, 5>(), rope_launcher<T, 6>(), rope_launcher<T, 7>(), rope_launcher<T, 8>()};
  return batch >= 1 && batch <= 8 ? kByBatch[batch - 1] : nullptr;
}
Launcher rope_for(Type type, std::int64_t batch) {
  switch (type) {
    case Type::BFloat16:
      return rope_typed<BF16Bits>(batch);
    case Type::Float16:
      return rope_typed<HalfBits>(batch);
    default:
      return nullptr;
  }
}

Launcher default_for(Type type, std::int64_t batch, bool norm) {
  switch (type) {
    case Type::Float32:
      return default_typed<float>(batch, norm);
    case Type::BFloat16:
      return default_typed<BF16Bits>(batch, norm);
    case Type::Float16:
      return default_typed<HalfBits>(batch, norm);
    default:
      return nullptr;
  }
}

std::size_t type_bytes(Type type) { return type == Type::Float32 ? 4 : 2; }

// GemvEpilogue::RopeKv's request: q, k, v of whole heads (k and v of kv_heads), the caches and
// the position word set, both rope tables or neither. (Its kernels' rows per warp are even.)
bool rope_fits(const Gemv& g) {
  const GemvRope& r = g.rope;
  const std::int64_t d = r.head_dim;
  return g.group_count == 3 && d > 0 && d % 2 == 0 && r.kv_heads > 0 && r.capacity > 0 &&
         g.groups[0].n % d == 0 && g.groups[1].n == r.kv_heads * d &&
         g.groups[2].n == r.kv_heads * d && g.groups[0].out != nullptr && r.past != nullptr &&
         r.k_cache != nullptr && r.v_cache != nullptr && (r.cos == nullptr) == (r.sin == nullptr);
}

}  // namespace
}  // namespace gemv_detail

bool gemv_shape_built(Type type, std::int64_t batch, int rows, int unroll) {
  return gemv_detail::sweep_shape(type, batch, rows, unroll) != nullptr;
}

bool gemv_fused_norm_fits(Type type, std::int64_t batch, std::int64_t k) {
  return type != Type::Float32 && batch >= 1 && k >= 0 &&
         static_cast<std::size_t>(batch * k) * gemv_detail::type_bytes(type) <=
             gemv_detail::kMaxNormBytes;
}

cudaError_t gemv(const Gemv& g, cudaStream_t stream) {
  using namespace gemv_detail;
  if (g.batch < 1 || g.batch > kMaxGemvBatch || g.group_count < 1 ||
      g.group_count > kMaxGemvGroups) {
    return cudaErrorInvalidValue;
  }
  const bool norm = g.norm_weight != nullptr;
  if (norm && !gemv_fused_norm_fits(g.type, g.batch, g.k)) return cudaErrorInvalidValue;
  const bool gated = g.epilogue == GemvEpilogue::SiluMul;
  if (g.tail_norm_out != nullptr) {
    const std::int64_t per = 16 / static_cast<std::int64_t>(type_bytes(g.type));
    if (g.type == Type::Float32 || g.epilogue != GemvEpilogue::AddResidual || g.ticket == nullptr ||
        g.tail_norm_weight == nullptr || g.group_count != 1 || g.groups[0].ldo % per != 0 ||
        g.groups[0].n % per != 0 || reinterpret_cast<std::uintptr_t>(g.tail_norm_out) % 16 != 0 ||
        reinterpret_cast<std::uintptr_t>(g.groups[0].out) % 16 != 0) {
      return cudaErrorInvalidValue;
    }
  }
  const bool rope = g.epilogue == GemvEpilogue::RopeKv;
  if (rope && (norm || !rope_fits(g) || rope_for(g.type, g.batch) == nullptr)) {
    return cudaErrorInvalidValue;
  }
  int rows = default_rows(static_cast<int>(g.batch));
  Launcher launcher = rope ? rope_for(g.type, g.batch) : default_for(g.type, g.batch, norm);
  if (launcher == nullptr) return cudaErrorInvalidValue;
  // A sweep shape where one is built (SiluMul needs an even row count: gate and up pairs; RopeKv
  // keeps its default shape).
  if (const Shape* s = sweep_shape(g.type, g.batch, g.rows, g.unroll);
      !rope && s != nullptr && (!gated || s->rows % 2 == 0)) {
    rows = s->rows;
    launcher = norm ? s->norm : s->plain;
  } else if (g.preload && !norm && !rope && g.type == Type::BFloat16) {
    for (const Preload& p : kPreload) {
      if (p.batch == g.batch) launcher = p.launch;
    }
  }
  const std::int64_t per_task = gated ? rows / 2 : rows;
  std::int64_t warps = 0;
  if (gated) {
    if (g.group_count != 2 || g.groups[0].n != g.groups[1].n) return cudaErrorInvalidValue;
    warps = (g.groups[0].n + per_task - 1) / per_task;
  } else {
    if (g.epilogue == GemvEpilogue::AddResidual && g.group_count != 1) return cudaErrorInvalidValue;
    for (int i = 0; i < g.group_count; ++i) warps += (g.groups[i].n + per_task - 1) / per_task;
  }
  if (warps == 0) return cudaSuccess;
  std::int64_t blocks = (warps + kWarps - 1) / kWarps;
  if (g.grid_blocks > 0 && blocks > g.grid_blocks) blocks = g.grid_blocks;
  return launcher(g, static_cast<unsigned>(blocks), stream);
}

cudaError_t matvec(const void* weight, const void* x, const void* bias, void* out, Type type,
                   std::int64_t n_out, std::int64_t k, cudaStream_t stream) {
  Gemv g;
  g.type = type;
  g.batch = 1;
  g.k = k;
  g.x = x;
  g.ldx = k;
  g.group_count = 1;
  g.groups[0] = GemvGroup{weight, bias, out, n_out, n_out};
  return gemv(g, stream);
}

}  // namespace strata::cuda::kernels
