// Split-K residual GEMV for decode (matvec_splitk.h). The product loop is matvec.cuh's
// (predicated_pass, warp_sums, pick): each lane sums its 16-byte chunks of the segment pass by
// pass, U loads per row in flight.

#include "cuda/matvec.cuh"
#include "cuda/matvec_splitk.h"

namespace strata::cuda::kernels {
namespace gemv_detail {
namespace {

template <typename T, int B, int R, int U>
__global__ void __launch_bounds__(kWarps * 32) gemv_split_k_kernel(GemvSplitK a) {
  const Gemv& g = a.g;
  const GemvGroup& grp = g.groups[0];
  const int lane = threadIdx.x & 31;
  const std::int64_t warp = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const std::int64_t groups = (grp.n + R - 1) / R;
  const std::int64_t chunks = g.k * static_cast<std::int64_t>(sizeof(T)) / 16;
  // Segments of whole passes of 32 lanes, so a segment's lanes read whole 512-byte runs.
  const std::int64_t per_seg = ((chunks + a.split - 1) / a.split + 31) / 32 * 32;
  wait_for_producer();
  allow_dependents();
  if (warp < groups * a.split) {
    const std::int64_t group = warp / a.split;
    const int seg = static_cast<int>(warp % a.split);
    const std::int64_t row0 = group * R;
    const uint4* w[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const std::int64_t row = row0 + r < grp.n ? row0 + r : grp.n - 1;
      w[r] = reinterpret_cast<const uint4*>(static_cast<const T*>(grp.weight) + row * g.k);
    }
    const uint4* x[B];
#pragma unroll
    for (int b = 0; b < B; ++b) {
      x[b] = reinterpret_cast<const uint4*>(static_cast<const T*>(g.x) + b * g.ldx);
    }
    const std::int64_t begin = seg * per_seg;
    const std::int64_t end = begin + per_seg < chunks ? begin + per_seg : chunks;
    float acc[R][B];
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int b = 0; b < B; ++b) acc[r][b] = 0.0f;
    }
    for (std::int64_t c = begin + lane; c < end; c += 32 * U) {
      predicated_pass<T, B, R, U, false>(acc, w, x, c, end);
    }
    warp_sums<B, R>(acc);
    // Lane r * B + b keeps (row r, input b): its partial to memory, then the ticket.
    const int o = lane / B, my_b = lane % B;
    const float mine = pick<B, R>(acc, o, my_b);
    const std::int64_t n = row0 + o;
    const bool owner = lane < R * B && n < grp.n;
    float* part = a.partials + my_b * grp.n + n;  // + seg * B * n
    const std::int64_t seg_stride = static_cast<std::int64_t>(B) * grp.n;
    if (owner) part[seg * seg_stride] = mine;
    __syncwarp();
    unsigned ticket = 0;
    if (lane == 0) {
      __threadfence();  // the warp's partials before its ticket (the warp barrier orders them)
      ticket = atomicAdd(a.tickets + group, 1u);
    }
    ticket = __shfl_sync(0xFFFFFFFFu, ticket, 0);
    if (ticket == static_cast<unsigned>(a.split - 1)) {  // the row group's last segment
      __threadfence();  // the other segments' partials, read through L2 below
      if (owner) {
        float v = 0.0f;
        for (int s = 0; s < a.split; ++s) v += __ldcg(part + s * seg_stride);
        if (grp.bias != nullptr) v += to_float(static_cast<const T*>(grp.bias)[n]);
        T* out = static_cast<T*>(grp.out) + my_b * grp.ldo + n;
        const T* res = static_cast<const T*>(g.residual) + my_b * grp.ldo + n;
        *out = from_float<T>(to_float(*res) + to_float(from_float<T>(v)));
      }
      if (lane == 0) a.tickets[group] = 0u;
    }
  }
  if (g.tail_norm_out != nullptr) tail_norm<T, B>(g);
}

}  // namespace
}  // namespace gemv_detail

bool gemv_split_k_supported(const GemvSplitK& a) {
  const Gemv& g = a.g;
  const int rows = g.rows == 0 ? 2 : g.rows;
  return g.type == Type::BFloat16 && g.batch == 1 && (rows == 1 || rows == 2) &&
         (g.unroll == 0 || g.unroll == 8) && g.epilogue == GemvEpilogue::AddResidual &&
         g.group_count == 1 && g.norm_weight == nullptr && a.split >= 2 && a.split <= 16 &&
         a.partials != nullptr && a.tickets != nullptr && g.k % 8 == 0 &&
         (g.tail_norm_out == nullptr || (g.ticket != nullptr && g.tail_norm_weight != nullptr &&
                                         g.groups[0].ldo % 8 == 0 && g.groups[0].n % 8 == 0));
}

cudaError_t gemv_split_k(const GemvSplitK& a, cudaStream_t stream) {
  using namespace gemv_detail;
  if (!gemv_split_k_supported(a)) return cudaErrorInvalidValue;
  const int rows = a.g.rows == 0 ? 2 : a.g.rows;
  const std::int64_t tasks = (a.g.groups[0].n + rows - 1) / rows * a.split;
  if (tasks == 0) return cudaSuccess;
  const auto blocks = static_cast<unsigned>((tasks + kWarps - 1) / kWarps);
  if (rows == 1) {
    return launch_maybe_pdl(gemv_split_k_kernel<BF16Bits, 1, 1, 8>, blocks, kWarps * 32, 0, stream,
                            a.g.pdl, a);
  }
  return launch_maybe_pdl(gemv_split_k_kernel<BF16Bits, 1, 2, 8>, blocks, kWarps * 32, 0, stream,
                          a.g.pdl, a);
}

}  // namespace strata::cuda::kernels
