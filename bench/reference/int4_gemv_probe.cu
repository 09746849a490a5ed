// A standalone probe of GPTQ 4-bit decode GEMV layouts on one GPU (issue 16, session 14): not part
// of the build, compiled on the device machine with nvcc alone, so a layout can be tried in one
// device call without the library. It prints the read rate of a 1 GiB streaming kernel (the
// physical limit in the same run), then, per configuration of the 128-output-tile design that
// src/cuda/quant_gemv_tc.cu's gptq4_wide took from it, the time per call in a CUDA graph of 200
// calls over enough copies of the layer to miss L2, GB/s of the packed bytes, and the largest
// difference from a plain one-thread-per-output reference (float32, so ~1e-5 of the scale).
//   nvcc -O3 -std=c++20 -arch=sm_90 -Isrc -o /tmp/int4_probe bench/reference/int4_gemv_probe.cu
//   /tmp/int4_probe 11008 4096      # n k; group 128, bf16 x and scales, one row of x
//   /tmp/int4_probe 11008 4096 awq  # AWQ's layout in 256-output tiles (awq1_kernel; n % 256 == 0)
// Session 14 (H100, read rate 3026-3064 GB/s): 16-row stages in blocks of 2-8 warps read
// 11008 x 4096 in 10.8-11.1 us (72%), 4096 x 11008 in 10.7, 12288 x 4096 in 11.2; 4096 x 4096
// best with 8-row stages (5.97 us). Differences from the library kernel: float atomics across
// blocks instead of the ticketed reduction, no PDL, blocks of W warps.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

#include "cuda/quant_mma.cuh"

using namespace strata::cuda::kernels;
#define CK(x)                                                          \
  do {                                                                 \
    cudaError_t e = (x);                                               \
    if (e != cudaSuccess) {                                            \
      printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); \
      exit(1);                                                         \
    }                                                                  \
  } while (0)

struct Layer {
  const uint4* qw;     // [k/8, n] int32
  const uint32_t* qz;  // [k/g, n/8]
  const uint16_t* sc;  // [k/g, n] bf16
};

__global__ void read_kernel(const uint4* p, long n16, unsigned* sink) {
  long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
  long stride = (long)gridDim.x * blockDim.x;
  unsigned acc = 0;
  for (; i + 7 * stride < n16; i += 8 * stride) {
    uint4 v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) v[u] = __ldcs(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < 8; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n16; i += stride) {
    uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) sink[0] = acc;
}

// The plain reference: one thread per output, float32. GPTQ v1: qweight [k/8, n] (nibble i % 8 of
// word (i / 8, o)), qzeros stored minus one. AWQ (GEMM layout): qweight [k, n/8], nibble p of word
// (i, o / 8) is output 8 (o / 8) + order[p], order = 0, 2, 4, 6, 1, 3, 5, 7, qzeros packed alike
// with no offset (the probe's buffers have the same sizes in both layouts). Scales [k/g, n].
__global__ void ref_kernel(Layer L, const __nv_bfloat16* x, float* y, int n, int k, int gs,
                           bool awq) {
  int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= n) return;
  const int32_t* qw = reinterpret_cast<const int32_t*>(L.qw);
  const int j = o % 8, awq_nibble = (j >> 1) | ((j & 1) << 2);  // order[awq_nibble] == j
  float acc = 0;
  for (int i = 0; i < k; ++i) {
    const int word = awq ? qw[(long)i * (n / 8) + o / 8] : qw[(long)(i / 8) * n + o];
    const int q = (word >> (4 * (awq ? awq_nibble : i % 8))) & 15;
    const int gi = i / gs;
    const uint32_t zw = L.qz[(long)gi * (n / 8) + o / 8];
    const int z = awq ? (zw >> (4 * awq_nibble)) & 15 : ((zw >> (4 * j)) & 15) + 1;
    const float s = __uint_as_float((uint32_t)L.sc[(long)gi * n + o] << 16);
    acc += (q - z) * s * __bfloat162float(x[i]);
  }
  y[o] = acc;
}

// The W warps' sums red[w][o] of one tile's N outputs, added in warp order into y_tile: stored
// where grid.y does not split the rows, else added atomically (y starts at zero).
template <int W, int N>
__device__ void block_sum_to(const float (&red)[W][N], float* y_tile) {
  __syncthreads();
  for (int o = threadIdx.x; o < N; o += W * 32) {
    float s = 0;
#pragma unroll
    for (int w = 0; w < W; ++w) s += red[w][o];
    if (gridDim.y == 1)
      y_tile[o] = s;
    else
      atomicAdd(y_tile + o, s);
  }
}

// Block: W warps over one 128-output tile, consecutive stretches of RW packed rows each; grid.y
// splits the rows further (float atomics here: the probe measures, the product reduces in order).
template <int U, int W>
__global__ void __launch_bounds__(W * 32)
    g1_kernel(Layer L, const __nv_bfloat16* x, float* y, int n, int k, int rows_per_group,
              int rows_per_warp) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const int tile = blockIdx.x;
  const long col = (long)tile * 128 + 4 * lane;  // this lane's 4 outputs (as 4 words)
  const int packed = k / 8;
  const int r0 = (blockIdx.y * W + warp) * rows_per_warp;
  const int r1 = min(r0 + rows_per_warp, packed);
  const bool diag = g == c;
  const long scol = (long)tile * 128 + 16 * g + 8 * (c & 1);
  float acc[2][4] = {};
  const uint4* qw = L.qw + col / 4;
  const long row_stride = n / 4;  // uint4 per packed row
  for (int r = r0; r < r1; r += U) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = __ldcs(qw + (long)(r + u) * row_stride);
    const int gi = r / rows_per_group;
    const uint32_t zw = __ldg(L.qz + (long)gi * (n / 8) + col / 8);
    const uint4 sraw = __ldg(reinterpret_cast<const uint4*>(L.sc + (long)gi * n + scol));
    uint32_t zz[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) zz[j] = bf16_zero_pair(((zw >> (4 * ((col & 7) + j))) & 0xFu) + 1);
    float d[2][2][4] = {};
#pragma unroll
    for (int u = 0; u < U; ++u) {
      uint32_t xb[4];
      x_pairs(__ldg(reinterpret_cast<const uint4*>(x + 8 * (r + u))), xb);
#pragma unroll
      for (int s = 0; s < 4; ++s) xb[s] = diag ? xb[s] : 0u;
      const uint32_t w[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
#pragma unroll
      for (int p = 0; p < 2; ++p) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          mma_bf16(d[p][h], pair_minus(w[2 * p], 2 * h, zz[2 * p]),
                   pair_minus(w[2 * p + 1], 2 * h, zz[2 * p + 1]),
                   pair_minus(w[2 * p], 2 * h + 1, zz[2 * p]),
                   pair_minus(w[2 * p + 1], 2 * h + 1, zz[2 * p + 1]), xb[2 * h], xb[2 * h + 1]);
        }
      }
    }
    const uint32_t su[4] = {sraw.x, sraw.y, sraw.z, sraw.w};
#pragma unroll
    for (int p = 0; p < 2; ++p) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int q = 4 * (e & 1) + 2 * p + (e >> 1);  // scale index among the 8
        const uint32_t bits = (q & 1) ? (su[q >> 1] & 0xFFFF0000u) : (su[q >> 1] << 16);
        acc[p][e] = fmaf(d[p][0][e] + d[p][1][e], __uint_as_float(bits), acc[p][e]);
      }
    }
  }
  __shared__ float red[W][128];
  if (c < 2) {
#pragma unroll
    for (int p = 0; p < 2; ++p)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        red[warp][16 * g + 8 * c + 4 * (e & 1) + 2 * p + (e >> 1)] = acc[p][e];
  }
  block_sum_to(red, y + (long)tile * 128);
}

// Microseconds per call of launch(layer, stream), 200 calls over the layer copies in one CUDA graph
// (the best of 5 replays).
template <typename Launch>
float time_calls(std::vector<Layer>& layers, int iters, Launch launch) {
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  for (int i = 0; i < iters; ++i) launch(layers[i % layers.size()], st);
  CK(cudaStreamEndCapture(st, &graph));
  CK(cudaGraphInstantiate(&exec, graph, 0));
  CK(cudaGraphLaunch(exec, st));
  CK(cudaStreamSynchronize(st));
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  float best = 1e9;
  for (int rep = 0; rep < 5; ++rep) {
    cudaEventRecord(a, st);
    CK(cudaGraphLaunch(exec, st));
    cudaEventRecord(b, st);
    CK(cudaEventSynchronize(b));
    float ms;
    cudaEventElapsedTime(&ms, a, b);
    best = fminf(best, ms);
  }
  CK(cudaGetLastError());
  return best * 1000 / iters;
}

// AWQ in 256-output tiles: lane l owns word column 32 t + l (8 outputs), a warp reads 128
// contiguous bytes of a row per load; __byte_perm of rows (r, r + 1) pairs a nibble's codes along
// the inputs (A pairs (q_r, q_r+1) of outputs 2T / 2T + 1), x pairs are stored consecutively, and
// B is diagonal in the supplying lane as in g1_kernel. U rows (a multiple of 4) per load batch.
template <int U, int W>
__global__ void __launch_bounds__(W * 32)
    awq1_kernel(Layer L, const __nv_bfloat16* x, float* y, int n, int k, int rows_per_group,
                int rows_per_warp) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const int tile = blockIdx.x;
  const long words = n / 8;
  const long colw = (long)tile * 32 + lane;
  const long scol = 8 * ((long)tile * 32 + 4 * g + 2 * (c & 1));  // 16 outputs of its C values
  const int r0 = (blockIdx.y * W + warp) * rows_per_warp;
  const int r1 = min(r0 + rows_per_warp, k);
  const bool diag = (g & 3) == c;
  const uint32_t* qw = reinterpret_cast<const uint32_t*>(L.qw) + colw;
  float acc[4][4] = {};
  for (int r = r0; r < r1; r += U) {
    uint32_t v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = __ldcs(qw + (long)(r + u) * words);
    const int gi = r / rows_per_group;
    const uint32_t zw = __ldg(L.qz + (long)gi * words + colw);
    const uint4 s0 = __ldg(reinterpret_cast<const uint4*>(L.sc + (long)gi * n + scol));
    const uint4 s1 = __ldg(reinterpret_cast<const uint4*>(L.sc + (long)gi * n + scol + 8));
    uint32_t za[4], zb[4];
#pragma unroll
    for (int T = 0; T < 4; ++T) {
      za[T] = bf16_zero_pair((zw >> (4 * T)) & 0xFu);
      zb[T] = bf16_zero_pair((zw >> (4 * T + 16)) & 0xFu);
    }
    float d[4][4] = {};
#pragma unroll
    for (int q = 0; q < U / 4; ++q) {
      const uint32_t lo01 = __byte_perm(v[4 * q], v[4 * q + 1], 0x5410),
                     hi01 = __byte_perm(v[4 * q], v[4 * q + 1], 0x7632),
                     lo23 = __byte_perm(v[4 * q + 2], v[4 * q + 3], 0x5410),
                     hi23 = __byte_perm(v[4 * q + 2], v[4 * q + 3], 0x7632);
      const uint2 xv = __ldg(reinterpret_cast<const uint2*>(x + r + 4 * q));
      const uint32_t b0 = diag ? xv.x : 0u, b1 = diag ? xv.y : 0u;
#pragma unroll
      for (int T = 0; T < 4; ++T) {
        mma_bf16(d[T], pair_minus(lo01, T, za[T]), pair_minus(hi01, T, zb[T]),
                 pair_minus(lo23, T, za[T]), pair_minus(hi23, T, zb[T]), b0, b1);
      }
    }
    const uint32_t su[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
#pragma unroll
    for (int T = 0; T < 4; ++T) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int q = 8 * (e & 1) + 2 * T + (e >> 1);  // among the 16 scales
        const uint32_t bits = (q & 1) ? (su[q >> 1] & 0xFFFF0000u) : (su[q >> 1] << 16);
        acc[T][e] = fmaf(d[T][e], __uint_as_float(bits), acc[T][e]);
      }
    }
  }
  __shared__ float red[W][256];
  if (c < 2) {
#pragma unroll
    for (int T = 0; T < 4; ++T)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        red[warp][8 * (4 * g + 2 * c + (e & 1)) + 2 * T + (e >> 1)] = acc[T][e];
  }
  block_sum_to(red, y + (long)tile * 256);
}

int main(int argc, char** argv) {
  const int n = argc > 1 ? atoi(argv[1]) : 11008, k = argc > 2 ? atoi(argv[2]) : 4096;
  const bool awq = argc > 3 && strcmp(argv[3], "awq") == 0;
  const int gs = 128;
  const long wbytes = (long)k / 8 * n * 4, zbytes = (long)k / gs * n / 8 * 4,
             sbytes = (long)k / gs * n * 2;
  const long layer_bytes = wbytes + zbytes + sbytes;
  const int copies = (int)std::max<long>(2, (600l << 20) / layer_bytes);
  std::vector<Layer> layers;
  std::mt19937 rng(1);
  std::vector<uint32_t> hw(wbytes / 4), hz(zbytes / 4);
  std::vector<uint16_t> hs(sbytes / 2);
  for (auto& v : hw) v = rng();
  for (auto& v : hz) v = rng() & 0x77777777u;
  for (auto& v : hs) {
    float f = 0.01f * (1 + (rng() % 100) / 100.f);
    uint32_t b;
    memcpy(&b, &f, 4);
    v = b >> 16;
  }
  for (int i = 0; i < copies; ++i) {
    void *w, *z, *s;
    CK(cudaMalloc(&w, wbytes));
    CK(cudaMalloc(&z, zbytes));
    CK(cudaMalloc(&s, sbytes));
    CK(cudaMemcpy(w, hw.data(), wbytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(z, hz.data(), zbytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(s, hs.data(), sbytes, cudaMemcpyHostToDevice));
    layers.push_back({(const uint4*)w, (const uint32_t*)z, (const uint16_t*)s});
  }
  std::vector<__nv_bfloat16> hx(k);
  for (auto& v : hx) v = __float2bfloat16((int)(rng() % 2001 - 1000) / 1000.f);
  __nv_bfloat16* x;
  CK(cudaMalloc(&x, k * 2));
  CK(cudaMemcpy(x, hx.data(), k * 2, cudaMemcpyHostToDevice));
  float *y, *yr;
  CK(cudaMalloc(&y, n * 4));
  CK(cudaMalloc(&yr, n * 4));
  // read bandwidth of one big buffer
  {
    long big = 1l << 30;
    void* p;
    CK(cudaMalloc(&p, big));
    CK(cudaMemset(p, 1, big));
    unsigned* sink;
    CK(cudaMalloc(&sink, 4));
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    float best = 1e9;
    int sms;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    for (int rep = 0; rep < 5; ++rep) {
      cudaEventRecord(a);
      read_kernel<<<sms * 8, 256>>>((const uint4*)p, big / 16, sink);
      cudaEventRecord(b);
      cudaEventSynchronize(b);
      float ms;
      cudaEventElapsedTime(&ms, a, b);
      best = fminf(best, ms);
    }
    printf("read bandwidth %.0f GB/s (1 GiB, %d SMs)\n", big / best / 1e6, sms);
    cudaFree(p);
  }
  ref_kernel<<<(n + 127) / 128, 128>>>(layers[0], x, yr, n, k, gs, awq);
  std::vector<float> ref(n), got(n);
  CK(cudaMemcpy(ref.data(), yr, n * 4, cudaMemcpyDeviceToHost));
  auto check = [&](const char* name, auto launch_once, float us) {
    CK(cudaMemset(y, 0, n * 4));
    launch_once();
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(got.data(), y, n * 4, cudaMemcpyDeviceToHost));
    double err = 0, scale = 0;
    for (int i = 0; i < n; ++i) {
      err = fmax(err, fabs(got[i] - ref[i]));
      scale = fmax(scale, fabs(ref[i]));
    }
    printf("%-28s %7.2f us  %6.0f GB/s  max err %.2e of %.2e\n", name, us, layer_bytes / us / 1e3,
           err, scale);
  };
  const int iters = 200;
  // g1_kernel (GPTQ) or awq1_kernel (AWQ) with U rows per load batch, W warps per block and RPW
  // rows per warp.
  const auto run = [&](auto u, auto w, int rpw) {
    constexpr int U = decltype(u)::value, W = decltype(w)::value;
    const int rows = awq ? k : k / 8, tile = awq ? 256 : 128;
    const dim3 grid(n / tile, (rows + W * rpw - 1) / (W * rpw));
    const auto launch = [&](const Layer& l, cudaStream_t st) {
      if (awq) {
        awq1_kernel<U, W><<<grid, W * 32, 0, st>>>(l, x, y, n, k, gs, rpw);
      } else {
        g1_kernel<U, W><<<grid, W * 32, 0, st>>>(l, x, y, n, k, gs / 8, rpw);
      }
    };
    const float us = time_calls(layers, iters, launch);
    char name[64];
    snprintf(name, sizeof(name), "%s U%d W%d rpw%d (%dx%d)", awq ? "awq1" : "g1", U, W, rpw, grid.x,
             grid.y);
    check(
        name, [&] { launch(layers[0], nullptr); }, us);
  };
  using std::integral_constant;
  const integral_constant<int, 2> w2;
  const integral_constant<int, 4> u4, w4;
  const integral_constant<int, 8> u8, w8;
  const integral_constant<int, 16> u16;
  const integral_constant<int, 32> u32;
  printf("%s n %d k %d: layer %.1f MB, %d copies\n", awq ? "awq" : "gptq", n, k, layer_bytes / 1e6,
         copies);
  if (awq) {
    run(u16, w4, 16), run(u16, w4, 32), run(u32, w4, 32), run(u32, w4, 64), run(u16, w8, 16);
    run(u32, w2, 32), run(u32, w8, 32);
  } else {
    run(u8, w4, 16), run(u8, w4, 32), run(u16, w4, 16), run(u16, w4, 32), run(u8, w8, 16);
    run(u16, w8, 16), run(u4, w4, 16), run(u8, w2, 16), run(u16, w2, 16), run(u16, w4, 64);
    run(u8, w4, 8);
  }
  return 0;
}
