// Attention kernels at their limits (docs/cuda-backend.md, "Attention"), next to the rates they
// are bound by, measured in the same run on cuda:0:
//  - decode (launch_flash_decode, the kernel-level entry a CUDA graph calls): K+V bytes read per
//    second against a device-to-device copy (bytes read + written per second);
//  - prefill (ops::scaled_dot_product_attention, routed to the tensor-core flash kernel): TFLOP/s
//    against a cuBLAS bf16 GEMM.
// Decode rotates over enough KV caches that each call reads HBM, not the 50 MB L2. Times are
// medians of cudaEvent-timed runs; "pipelined" runs 20 calls between two events (a decode loop).
// Named cuda_*_bench so bench/CMakeLists.txt builds it only with the CUDA backend.

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cuda/flash_decode_probe.h"
#include "cuda/kernels.h"
#include "strata/cuda/device.h"
#include "strata/engine/machine_rates.h"
#include "strata/ops.h"

namespace {

using strata::Device;
using strata::DType;
using strata::Tensor;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median over `reps` of the milliseconds per call of `calls` back-to-back calls on `stream`.
double time_ms(cudaStream_t stream, const std::function<void()>& f, int reps, int calls) {
  cudaEvent_t start, end;
  cudaEventCreate(&start);
  cudaEventCreate(&end);
  for (int i = 0; i < 2; ++i) f();  // warm-up (first-launch setup, the allocator's caches)
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    cudaEventRecord(start, stream);
    for (int i = 0; i < calls; ++i) f();
    cudaEventRecord(end, stream);
    cudaEventSynchronize(end);
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, start, end);
    t.push_back(ms / calls);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(end);
  return median(t);
}

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::printf("%s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

// Fills n bytes of device memory with copies of `pattern` (bf16 values in [-1, 1)).
void fill(void* ptr, std::size_t n, const Tensor& pattern) {
  const std::size_t block = pattern.nbytes();
  for (std::size_t at = 0; at < n; at += block) {
    check(cudaMemcpy(static_cast<char*>(ptr) + at, pattern.data_ptr(), std::min(block, n - at),
                     cudaMemcpyDeviceToDevice),
          "fill");
  }
}

struct Buffer {
  void* ptr = nullptr;
  Buffer(std::size_t n, const Tensor& pattern) {
    check(cudaMalloc(&ptr, n), "cudaMalloc");
    fill(ptr, n, pattern);
  }
  ~Buffer() { cudaFree(ptr); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

Tensor random_pattern(std::int64_t n, std::uint64_t seed) {
  Tensor host = Tensor::empty({n}, DType::Float32);
  std::uint64_t state = 0x9E3779B97F4A7C15ull * (seed + 1);
  float* p = host.data<float>();
  for (std::int64_t i = 0; i < n; ++i) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    p[i] = static_cast<float>(state >> 40) * 0x1p-23f - 1.0f;
  }
  return host.to(Device::cuda(0), DType::BFloat16);
}

struct DecodeCase {
  int batch, q_heads, kv_heads, head_dim, keys;
  bool sinks;
  bool sweep = false;     // also time other split counts (blocks per SM 1-4, half, twice)
  bool diagnose = false;  // also the default with PDL, L2-resident, and with 0 keys
};

// Kernels timed per case (FlashDecodeArgs::variant): 1 the split-K kernel + combine kernel, 2-5
// the one-kernel tile configurations (0 is the default one, already among them), 6-9 the
// one-kernel with a head's splits in one cluster, 10-14 the one-kernel on the tensor cores (13
// with the cluster merge). STRATA_BENCH_VARIANTS="4,7,10" times those alone (and diagnoses them
// at 8k with the default).
std::vector<int> bench_variants() {
  std::vector<int> v;
  const char* env = std::getenv("STRATA_BENCH_VARIANTS");
  for (const char* p = env; p != nullptr && *p != '\0';) {
    char* end = nullptr;
    const long x = std::strtol(p, &end, 10);
    if (end == p) break;
    if (x >= 1 && x <= 14) v.push_back(static_cast<int>(x));
    p = *end == ',' ? end + 1 : end;
  }
  if (v.empty()) v = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
  return v;
}
bool is_cluster(int v) { return (v >= 6 && v <= 9) || v == 13; }
const char* variant_name(int v) {
  switch (v) {
    case 10:
      return "mma tile64x3";
    case 11:
      return "mma tile64x2";
    case 12:
      return "mma tile128x2";
    case 13:
      return "cluster mma 128t tile64x3";
    case 14:
      return "mma 256t tile128x2";
    case 6:
      return "cluster 256t tile64x4";
    case 7:
      return "cluster 128t tile32x6";
    case 8:
      return "cluster 256t tile64x2";
    case 9:
      return "cluster 256t tile64x4 w1 8 rows";
    case 1:
      return "split-K+combine";
    case 2:
      return "fused tile32x3";
    case 3:
      return "fused tile16x4";
    case 4:
      return "fused tile32x3 w2 (default)";
    default:
      return "fused tile64x2";
  }
}

// Milliseconds per call of `calls` calls captured in one CUDA graph (as the decode graph runs
// them: no host launch cost), median of `reps` replays.
double graph_ms(cudaStream_t stream, const std::function<void()>& f, int reps, int calls) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
  for (int i = 0; i < calls; ++i) f();
  check(cudaStreamEndCapture(stream, &graph), "end capture");
  check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  const double ms = time_ms(
                        stream, [&] { cudaGraphLaunch(exec, stream); }, reps, 1) /
                    calls;
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return ms;
}

void decode_case(const DecodeCase& c, const Tensor& pattern, int sms, double copy_gbs,
                 cudaStream_t stream) {
  // Bytes of K (and of V): bf16.
  const std::size_t kv_bytes =
      std::size_t{2} * c.batch * c.kv_heads * static_cast<std::size_t>(c.keys) * c.head_dim;
  // Enough caches in turn that they exceed the L2 three times over.
  const int sets = static_cast<int>(
      std::clamp<std::size_t>((std::size_t{150} << 20) / (2 * kv_bytes) + 1, 2, 64));
  std::vector<std::unique_ptr<Buffer>> ks, vs;
  for (int s = 0; s < sets; ++s) {
    ks.push_back(std::make_unique<Buffer>(kv_bytes, pattern));
    vs.push_back(std::make_unique<Buffer>(kv_bytes, pattern));
  }
  Buffer q(std::size_t{2} * c.batch * c.q_heads * c.head_dim, pattern);
  Buffer out(std::size_t{2} * c.batch * c.q_heads * c.head_dim, pattern);
  std::vector<float> sink_values(c.q_heads, 0.5f);
  float* sinks = nullptr;
  if (c.sinks) {
    check(cudaMalloc(&sinks, c.q_heads * sizeof(float)), "sinks");
    cudaMemcpy(sinks, sink_values.data(), c.q_heads * sizeof(float), cudaMemcpyHostToDevice);
  }
  namespace k = strata::cuda::kernels;
  k::FlashDecodeArgs a;
  a.type = k::Type::BFloat16;
  a.batch = c.batch;
  a.q_heads = c.q_heads;
  a.kv_heads = c.kv_heads;
  a.q_len = 1;
  a.head_dim = a.v_dim = c.head_dim;
  a.q_strides[0] = std::int64_t{c.q_heads} * c.head_dim;
  a.q_strides[1] = a.q_strides[2] = c.head_dim;
  for (std::int64_t* s : {a.k_strides, a.v_strides}) {
    s[0] = std::int64_t{c.kv_heads} * c.keys * c.head_dim;
    s[1] = std::int64_t{c.keys} * c.head_dim;
    s[2] = c.head_dim;
  }
  for (int d = 0; d < 3; ++d) a.out_strides[d] = a.q_strides[d];
  a.max_kv_len = c.keys;
  a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  a.sinks = sinks;
  a.q = q.ptr;
  a.out = out.ptr;
  // Scratch for the most splits any try below uses, its counters zeroed once.
  a.splits = k::kFlashDecodeMaxSplits;
  void* scratch = nullptr;
  check(cudaMalloc(&scratch, k::flash_decode_scratch_bytes(a)), "scratch");
  check(cudaMemset(scratch, 0, k::flash_decode_scratch_bytes(a)), "scratch zeros");
  a.scratch = static_cast<float*>(scratch);
  int next = 0;
  const auto call = [&] {
    a.k = ks[next]->ptr;
    a.v = vs[next]->ptr;
    next = (next + 1) % sets;
    check(k::launch_flash_decode(a, stream), "launch_flash_decode");
  };
  // Fewer repetitions where a call moves gigabytes (the whole run stays under a minute).
  const bool big = 2 * kv_bytes > (std::size_t{1} << 30);
  const int reps = big ? 3 : 10, calls = big ? 4 : 20;
  const int heads = c.batch * c.kv_heads;  // blocks per split (one row chunk at these ratios)
  const std::vector<int> variants = bench_variants();
  for (const int variant : variants) {
    a.variant = variant;
    const int chosen = k::flash_decode_splits(a, sms);
    std::vector<int> tries = {chosen};
    const bool cluster = is_cluster(variant);
    if (c.sweep && cluster) {
      for (const int s : {4, 8, 12, 16}) tries.push_back(s);
    } else if (c.sweep) {
      for (const int per_sm : {1, 2, 3, 4}) tries.push_back((sms * per_sm + heads - 1) / heads);
      tries.push_back(chosen / 2);
      tries.push_back(chosen * 2);
    }
    std::vector<int> done;
    for (int splits : tries) {
      splits = std::clamp(splits, 1, cluster ? 16 : k::kFlashDecodeMaxSplits);
      if (std::find(done.begin(), done.end(), splits) != done.end()) continue;
      done.push_back(splits);
      a.splits = splits;
      // The counters sit after the partials, which move with the split count: zero them again.
      check(k::flash_decode_clear_scratch(a, stream), "clear scratch");
      // A kernel the device refuses (a cluster it cannot place) is reported, not fatal.
      a.k = ks[0]->ptr;
      a.v = vs[0]->ptr;
      const cudaError_t trial = k::launch_flash_decode(a, stream);
      if (trial != cudaSuccess || cudaStreamSynchronize(stream) != cudaSuccess) {
        std::printf("decode b%d %dk %s (%d splits): not launched: %s\n", c.batch, c.keys / 1024,
                    variant_name(variant), splits, cudaGetErrorString(trial));
        cudaGetLastError();
        continue;
      }
      const double graphed = graph_ms(stream, call, reps, calls);
      const double one = time_ms(stream, call, reps, 1);
      char what[160];
      std::snprintf(what, sizeof what, "decode b%d %dk hq%d/hkv%d d%d%s %s (%d splits%s)", c.batch,
                    c.keys / 1024, c.q_heads, c.kv_heads, c.head_dim, c.sinks ? " sinks" : "",
                    variant_name(variant), splits, splits == chosen ? "" : ", tuning");
      const double gbs = 2.0 * static_cast<double>(kv_bytes) / graphed / 1e6;  // K and V
      std::printf("%-72s %9.1f %9.1f %6.1f%% %9.1f us (one launch %.1f us)\n", what, gbs, copy_gbs,
                  100.0 * gbs / copy_gbs, graphed * 1e3, one * 1e3);
    }
  }
  if (c.diagnose) {
    // Where the time of a small call goes, with the default kernel (0) and the cluster kernels
    // (6, 7) at their split counts: launched with programmatic dependent launch (the next call's
    // blocks are placed while this one finishes); the same cache every call (L2-resident up to
    // ~50 MB: no HBM, no TLB misses); a key length of 0 read on the device (launch, the partials
    // and the merge only).
    const auto row = [&](const std::string& how, const std::function<void()>& f, double bytes) {
      const double graphed = graph_ms(stream, f, reps, calls);
      char what[160];
      std::snprintf(what, sizeof what, "decode b%d %dk hq%d/hkv%d d%d %s", c.batch, c.keys / 1024,
                    c.q_heads, c.kv_heads, c.head_dim, how.c_str());
      const double gbs = bytes / graphed / 1e6;
      std::printf("%-72s %9.1f %9.1f %6.1f%% %9.1f us\n", what, gbs, copy_gbs,
                  100.0 * gbs / copy_gbs, graphed * 1e3);
    };
    const double bytes = 2.0 * static_cast<double>(kv_bytes);
    std::int32_t* zero = nullptr;
    check(cudaMalloc(&zero, sizeof(std::int32_t)), "length");
    check(cudaMemset(zero, 0, sizeof(std::int32_t)), "length");
    namespace pr = strata::cuda::kernels::probe;
    std::vector<int> diagnosed = {0};
    for (const int v : variants) {
      if (v >= 6) diagnosed.push_back(v);
    }
    for (const int variant : diagnosed) {
      a.variant = variant;
      a.splits = std::min(k::flash_decode_splits(a, sms), k::kFlashDecodeMaxSplits);
      check(k::flash_decode_clear_scratch(a, stream), "clear scratch");
      const std::string name = std::string(variant == 0 ? "default" : variant_name(variant)) +
                               " (" + std::to_string(a.splits) + " splits), ";
      if (k::launch_flash_decode(a, stream) != cudaSuccess ||
          cudaStreamSynchronize(stream) != cudaSuccess) {
        std::printf("decode %s: not launched\n", name.c_str());
        cudaGetLastError();
        continue;
      }
      a.pdl = true;
      row(name + "PDL", call, bytes);
      a.pdl_prefetch = true;
      row(name + "PDL + prefetch before the wait", call, bytes);
      // As in the decode graph: a small kernel (rotary + KV write there) before each call; the
      // time is the pair's, the floor row "1-block kernel" below is the small kernel's alone.
      const auto pair = [&] {
        check(pr::launch_empty(1, 128, true, stream), "producer");
        call();
      };
      row(name + "after a 1-block kernel, PDL + prefetch", pair, bytes);
      a.pdl_prefetch = false;
      row(name + "after a 1-block kernel, PDL", pair, bytes);
      const auto same = [&] {
        a.k = ks[0]->ptr;
        a.v = vs[0]->ptr;
        check(k::launch_flash_decode(a, stream), "launch_flash_decode");
      };
      row(name + "PDL, same cache each call", same, bytes);
      a.kv_len = zero;
      row(name + "PDL, 0 keys (device length)", same, bytes);
      a.pdl = false;
      row(name + "0 keys (device length)", same, bytes);
      a.kv_len = nullptr;
    }
    cudaFree(zero);
    // Floors: an empty kernel (one graph node's launch and drain) and a pure read of the same
    // K and V bytes (no compute, no merge), with and without programmatic dependent launch.
    row(
        "floor: 1-block kernel, PDL",
        [&] { check(pr::launch_empty(1, 128, true, stream), "empty"); }, bytes);
    unsigned* sink = nullptr;
    check(cudaMalloc(&sink, sizeof(unsigned)), "sink");
    for (const bool pdl : {false, true}) {
      const std::string tail = pdl ? ", PDL" : "";
      row(
          "floor: empty kernel, 264 blocks" + tail,
          [&] { check(pr::launch_empty(264, 128, pdl, stream), "empty"); }, bytes);
      for (const int blocks : {132, 264, 528}) {
        for (const int unroll : {4, 8}) {
          const auto read = [&] {
            const void* kp = ks[next]->ptr;
            const void* vp = vs[next]->ptr;
            next = (next + 1) % sets;
            check(pr::launch_read(kp, vp, kv_bytes, sink, blocks, unroll, pdl, stream), "read");
          };
          row("floor: read K+V, " + std::to_string(blocks) + " blocks x256, unroll " +
                  std::to_string(unroll) + tail,
              read, bytes);
        }
      }
    }
    cudaFree(sink);
  }
  cudaFree(scratch);
  cudaFree(sinks);
}

}  // namespace

int main(int argc, char** argv) {
  // --decode: the decode rows only (the device run's sweep). Line-buffered: a run cut short by a
  // timeout keeps the rows it printed.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const bool decode_only = argc > 1 && std::string(argv[1]) == "--decode";
  if (!strata::cuda::is_available()) {
    std::printf("no CUDA GPU: nothing to measure\n");
    return 0;
  }
  check(cudaSetDevice(0), "cudaSetDevice");
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  std::printf("device: %s, %d SMs\n", strata::cuda::device_properties(0).name.c_str(), sms);
  cudaStream_t stream;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  const Tensor pattern = random_pattern(std::int64_t{1} << 22, 1);

  // The copy rate: 256 MiB device to device, bytes read + written (strata bench's measurement).
  const double copy_gbs = strata::engine::measure_gpu_hbm_gbps(std::int64_t{1} << 28).value_or(0.0);
  // The GEMM rate: cuBLAS bf16 4096^3, float32 accumulation.
  double gemm_tflops = 0.0;
  if (!decode_only) {
    const int n = 4096;
    Buffer a(std::size_t{2} * n * n, pattern), b(std::size_t{2} * n * n, pattern),
        c(std::size_t{2} * n * n, pattern);
    cublasHandle_t h;
    cublasCreate(&h);
    cublasSetStream(h, stream);
    const float alpha = 1.0f, beta = 0.0f;
    const double ms = time_ms(
        stream,
        [&] {
          cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, b.ptr, CUDA_R_16BF, n, a.ptr,
                       CUDA_R_16BF, n, &beta, c.ptr, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT);
        },
        10, 5);
    gemm_tflops = 2.0 * n * n * static_cast<double>(n) / ms / 1e9;
    cublasDestroy(h);
  }
  std::printf("%-72s %9s %9s %7s\n", "decode, bf16 (K+V GB/s vs D2D copy, graph-replayed)", "GB/s",
              "copy", "ratio");
  std::vector<DecodeCase> cases;
  // Batch 1 first (issue 14's goal: 8k and 32k keys), the diagnosis at 8k.
  for (const int keys : {8192, 32768, 1024, 2048, 16384}) {
    cases.push_back({1, 32, 8, 128, keys, false, keys > 1024, keys == 8192});
  }
  for (const int keys : {1024, 8192, 32768}) {
    for (const int batch : {4, 16, 64}) cases.push_back({batch, 32, 8, 128, keys, false});
  }
  cases.push_back({1, 32, 32, 128, 8192, false});
  cases.push_back({1, 64, 8, 64, 8192, true});
  cases.push_back({1, 16, 8, 256, 8192, false});
  cases.push_back({1, 28, 4, 128, 8192, false});  // Qwen2.5-7B's ratio 7
  for (const DecodeCase& c : cases) decode_case(c, pattern, sms, copy_gbs, stream);
  if (decode_only) {
    cudaStreamDestroy(stream);
    return 0;
  }

  // Prefill of a 7B model's attention (Llama-2-7B: 32 heads, head_dim 128, MHA; Llama-3-8B: GQA
  // 32/8), causal, bf16, through launch_flash_prefill with 16 and 32 query rows per warp.
  std::printf("%-52s %9s %9s %7s\n", "prefill, bf16 causal (TFLOP/s vs cuBLAS GEMM)", "TFLOP/s",
              "GEMM", "ratio");
  for (const int kv_heads : {32, 8}) {
    for (const int s : {512, 2048, 8192}) {
      const std::size_t q_bytes = std::size_t{2} * 32 * s * 128;
      const std::size_t kv_bytes = std::size_t{2} * kv_heads * s * 128;
      Buffer q(q_bytes, pattern), k(kv_bytes, pattern), v(kv_bytes, pattern), out(q_bytes, pattern);
      strata::cuda::kernels::Attention a;
      a.q = q.ptr;
      a.k = k.ptr;
      a.v = v.ptr;
      a.out = out.ptr;
      a.type = strata::cuda::kernels::Type::BFloat16;
      a.batch = 1;
      a.q_heads = 32;
      a.kv_heads = kv_heads;
      a.q_len = a.k_len = s;
      a.head_dim = a.v_dim = 128;
      const std::int64_t q_strides[4] = {32LL * s * 128, std::int64_t{s} * 128, 128, 1};
      const std::int64_t kv_strides[4] = {std::int64_t{kv_heads} * s * 128, std::int64_t{s} * 128,
                                          128, 1};
      for (int d = 0; d < 4; ++d) {
        a.q_strides[d] = q_strides[d];
        a.k_strides[d] = a.v_strides[d] = kv_strides[d];
      }
      a.causal = true;
      a.scale = 1.0f / std::sqrt(128.0f);
      const double flops = 4.0 * 32 * static_cast<double>(s) * s * 128 / 2;  // causal half
      for (const int rows : {16, 32}) {
        const double ms = time_ms(
            stream,
            [&] { check(strata::cuda::kernels::launch_flash_prefill(a, stream, rows), "prefill"); },
            10, 3);
        char what[120];
        std::snprintf(what, sizeof what, "prefill %d tokens hq32/hkv%d d128 causal, %d rows/warp",
                      s, kv_heads, rows);
        const double tflops = flops / ms / 1e9;
        std::printf("%-52s %9.1f %9.1f %6.1f%% %9.1f us\n", what, tflops, gemm_tflops,
                    100.0 * tflops / gemm_tflops, ms * 1e3);
      }
    }
  }
  cudaStreamDestroy(stream);
  return 0;
}
