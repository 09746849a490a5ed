// Matrix-vector products for the linear layers of decode (1..8 input rows): bound by reading the
// weight once, so the kernel is built around keeping HBM busy.
//
//  - Each warp owns 2 (batch 1-2) or 4 weight rows and computes them for every input row: the
//    weight is read once whatever the batch, the input rows (a few KB, L1/L2 resident) are
//    reread per warp.
//  - 16-byte loads, kUnroll of them per weight row in flight per lane before the first use.
//  - Small blocks (4 warps) so the grid spreads evenly over the SMs even for 1024-row matrices.
//  - Up to three weights in one launch (q/k/v), and two epilogues that save a kernel each:
//    residual add (o_proj, down_proj) and SiLU(gate) * up (gate/up as one launch).
// Every product accumulates in float32 and is rounded once to T, then each epilogue rounds where
// the unfused ops round (so the fused step and the module path agree bit for bit in the
// epilogues: SiLU result, product and residual sum are each rounded to T, as the separate ops do).

#include <cstdint>

#include "cuda/kernel_common.cuh"

namespace strata::cuda::kernels {
namespace {

constexpr int kWarps = 4;  // warps per block

// 16-byte loads per weight row in flight per lane: at batch 1-2 a warp does little arithmetic
// per byte, so 8 halve the round trips to HBM of a row (the H100 bench read 7B's o_proj at 68%
// and down_proj at 77% of the copy rate with 4); larger batches keep 4 for registers.
template <int B>
constexpr int unroll_for() {
  return B <= 2 ? 8 : 4;
}

// Weight rows per warp: every input chunk a lane loads serves all of them, so more rows cut the
// (L1) input traffic per weight byte, which grows with the batch; two keep small matrices spread.
template <int B>
constexpr int rows_for() {
  return B <= 2 ? 2 : 4;
}
int rows_for_batch(std::int64_t batch) { return batch <= 2 ? 2 : 4; }

template <typename T>
__device__ __forceinline__ float dot16(const uint4& w, const uint4& x) {
  constexpr int kPer = 16 / sizeof(T);
  const T* wp = reinterpret_cast<const T*>(&w);
  const T* xp = reinterpret_cast<const T*>(&x);
  float acc = 0.0f;
#pragma unroll
  for (int e = 0; e < kPer; ++e) acc = fmaf(to_float(wp[e]), to_float(xp[e]), acc);
  return acc;
}

__device__ __forceinline__ float silu(float v) { return v / (1.0f + expf(-v)); }

// Rows per warp task in `g`: R of one group, or (SiluMul) R / 2 outputs, each a gate row and an
// up row.
__host__ __device__ __forceinline__ std::int64_t outputs_per_task(const Gemv& g, int rows) {
  return g.epilogue == GemvEpilogue::SiluMul ? rows / 2 : rows;
}

struct Task {
  int group;
  std::int64_t row;  // first output row
};

template <int R>
__device__ __forceinline__ Task task_of(const Gemv& g, std::int64_t warp) {
  if (g.epilogue == GemvEpilogue::SiluMul) return {0, warp * (R / 2)};
  for (int i = 0; i < g.group_count; ++i) {
    const std::int64_t tasks = (g.groups[i].n + R - 1) / R;
    if (warp < tasks) return {i, warp * R};
    warp -= tasks;
  }
  return {-1, 0};
}

template <typename T, int B>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(Gemv g) {
  constexpr int R = rows_for<B>();
  constexpr int kUnroll = unroll_for<B>();
  const int lane = threadIdx.x & 31;
  const std::int64_t warp = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const Task task = task_of<R>(g, warp);
  if (task.group < 0) return;
  const bool gated = g.epilogue == GemvEpilogue::SiluMul;
  const GemvGroup& first = g.groups[task.group];
  if (task.row >= first.n) return;
  // The warp's weight rows (SiluMul: gate, up, gate, up, ... of consecutive outputs); a row past
  // the end rereads the last one and stores nothing.
  const uint4* w[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const GemvGroup& grp = gated ? g.groups[r % 2] : first;
    const std::int64_t row = gated ? task.row + r / 2 : task.row + r;
    const std::int64_t safe = row < grp.n ? row : grp.n - 1;
    w[r] = reinterpret_cast<const uint4*>(static_cast<const T*>(grp.weight) + safe * g.k);
  }
  const uint4* x[B];
#pragma unroll
  for (int b = 0; b < B; ++b) {
    x[b] = reinterpret_cast<const uint4*>(static_cast<const T*>(g.x) + b * g.ldx);
  }
  const std::int64_t chunks = g.k * static_cast<std::int64_t>(sizeof(T)) / 16;
  float acc[R][B];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int b = 0; b < B; ++b) acc[r][b] = 0.0f;
  }
  std::int64_t c = lane;
  for (; c + 32 * (kUnroll - 1) < chunks; c += 32 * kUnroll) {
    uint4 wr[R][kUnroll];
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) wr[r][u] = __ldcs(w[r] + c + 32 * u);  // streamed once
    }
#pragma unroll
    for (int b = 0; b < B; ++b) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const uint4 xv = __ldg(x[b] + c + 32 * u);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r][b] += dot16<T>(wr[r][u], xv);
      }
    }
  }
  // The rest (fewer than kUnroll chunks per lane): one predicated pass, every load in flight.
  if (c < chunks) {
    const uint4 zero = make_uint4(0, 0, 0, 0);
    uint4 wr[R][kUnroll];
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        wr[r][u] = c + 32 * u < chunks ? __ldcs(w[r] + c + 32 * u) : zero;
      }
    }
#pragma unroll
    for (int b = 0; b < B; ++b) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const uint4 xv = c + 32 * u < chunks ? __ldg(x[b] + c + 32 * u) : zero;
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r][b] += dot16<T>(wr[r][u], xv);
      }
    }
  }
  // Every lane ends with every sum; lane o * B + b stores (output o of the task, input row b).
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int b = 0; b < B; ++b) acc[r][b] = warp_sum(acc[r][b]);
  }
  constexpr int kOutputs = R;  // at most; SiluMul uses R / 2
  const int outputs = gated ? R / 2 : R;
  if (lane >= outputs * B) return;
  const int o = lane / B, my_b = lane % B;
  float v = 0.0f, up = 0.0f;
#pragma unroll
  for (int i = 0; i < kOutputs; ++i) {
#pragma unroll
    for (int b = 0; b < B; ++b) {
      if (b != my_b) continue;
      if (gated) {
        if (2 * i + 1 < R && i == o) {
          v = acc[2 * i][b];
          up = acc[2 * i + 1][b];
        }
      } else if (i == o) {
        v = acc[i][b];
      }
    }
  }
  const std::int64_t n = task.row + o;
  if (n >= first.n) return;
  if (first.bias != nullptr) v += to_float(static_cast<const T*>(first.bias)[n]);
  T* out = static_cast<T*>(first.out) + my_b * first.ldo + n;
  if (gated) {
    const GemvGroup& up_group = g.groups[1];
    if (up_group.bias != nullptr) up += to_float(static_cast<const T*>(up_group.bias)[n]);
    // act(gate) and up rounded as the separate ops leave them, then their product.
    const float act = to_float(from_float<T>(silu(to_float(from_float<T>(v)))));
    *out = from_float<T>(act * to_float(from_float<T>(up)));
  } else if (g.epilogue == GemvEpilogue::AddResidual) {
    const T* res = static_cast<const T*>(g.residual) + my_b * first.ldo + n;
    *out = from_float<T>(to_float(*res) + to_float(from_float<T>(v)));
  } else {
    *out = from_float<T>(v);
  }
}

template <typename T, int B>
cudaError_t launch_batch(const Gemv& g, unsigned blocks, cudaStream_t stream) {
  gemv_kernel<T, B><<<blocks, kWarps * 32, 0, stream>>>(g);
  return launched();
}

template <typename T>
cudaError_t launch_typed(const Gemv& g, unsigned blocks, cudaStream_t stream) {
  switch (g.batch) {
    case 1:
      return launch_batch<T, 1>(g, blocks, stream);
    case 2:
      return launch_batch<T, 2>(g, blocks, stream);
    case 3:
      return launch_batch<T, 3>(g, blocks, stream);
    case 4:
      return launch_batch<T, 4>(g, blocks, stream);
    case 5:
      return launch_batch<T, 5>(g, blocks, stream);
    case 6:
      return launch_batch<T, 6>(g, blocks, stream);
    case 7:
      return launch_batch<T, 7>(g, blocks, stream);
    case 8:
      return launch_batch<T, 8>(g, blocks, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t gemv(const Gemv& g, cudaStream_t stream) {
  if (g.batch < 1 || g.batch > kMaxGemvBatch || g.group_count < 1 ||
      g.group_count > kMaxGemvGroups) {
    return cudaErrorInvalidValue;
  }
  const std::int64_t per_task = outputs_per_task(g, rows_for_batch(g.batch));
  std::int64_t warps = 0;
  if (g.epilogue == GemvEpilogue::SiluMul) {
    if (g.group_count != 2 || g.groups[0].n != g.groups[1].n) return cudaErrorInvalidValue;
    warps = (g.groups[0].n + per_task - 1) / per_task;
  } else {
    if (g.epilogue == GemvEpilogue::AddResidual && g.group_count != 1) return cudaErrorInvalidValue;
    for (int i = 0; i < g.group_count; ++i) warps += (g.groups[i].n + per_task - 1) / per_task;
  }
  if (warps == 0) return cudaSuccess;
  const auto blocks = static_cast<unsigned>((warps + kWarps - 1) / kWarps);
  return dispatch_float(g.type,
                        [&](auto tag) { return launch_typed<decltype(tag)>(g, blocks, stream); });
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
