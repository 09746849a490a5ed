#pragma once
// The measuring functions behind the machine constants (machine_constants.h), for callers that
// report against the same rates: `strata calibrate` (measure_machine_constants) and `strata bench`
// (its limits, measured in the same run). Each returns the best of a few repetitions after a
// warm-up; sizes are parameters so a caller can leave the caches with larger buffers. Timed, so
// not for unit tests beyond "positive".

#include <cstdint>
#include <filesystem>
#include <optional>
#include <vector>

namespace strata::engine {

// Reading `bytes` of host memory on all threads of the pool, GB/s.
double measure_host_read_gbps(std::int64_t bytes);

// GPU 0 (nullopt without CUDA or without a usable device):
// pinned host memory -> GPU copies of `bytes`, GB/s;
std::optional<double> measure_h2d_gbps(std::int64_t bytes);
// a device-to-device copy of `bytes`, GB/s of read + write traffic;
std::optional<double> measure_gpu_hbm_gbps(std::int64_t bytes);
// a bf16 [n, n] x [n, n] product, GFLOP/s.
std::optional<double> measure_gpu_gemm_gflops(std::int64_t n);

// The cpu experts of a mixture-of-experts decode step (cpu/expert_gemv.h: 8 experts of
// Qwen3-30B-A3B's shapes, gate and up [768, 2048], down [2048, 768] bf16, one weighted row each),
// cycling through `bytes` of experts so they come from memory: GB/s of expert weights read.
double measure_cpu_expert_gbps(std::int64_t bytes);
// A mixture-of-experts block's fixed host cost per decode step behind GPU 0, in microseconds
// (nullopt without CUDA or a usable device): the routing and input read to pinned memory with one
// wait, the cpu experts' dispatch and activations, the copies back and the 8-way sum.
std::optional<double> measure_moe_block_us();

// Reading `files` whole in 8 MiB blocks (the loader's staging chunk) over `threads` threads, each
// taking the next block: through the page cache, or with O_DIRECT (bypassing it; the file system
// must support it). GB/s. IoError naming the file when one cannot be opened or read.
double measure_file_read_gbps(const std::vector<std::filesystem::path>& files, int threads,
                              bool direct);

}  // namespace strata::engine
