#pragma once
// Measured machine constants for the cost model, and their cache (`strata calibrate`,
// docs/hybrid-execution.md). Measured in about 10 s (cpu-side always, GPU-side when CUDA is
// present), cached as JSON under $XDG_CACHE_HOME/strata (else ~/.cache/strata), one file per
// hardware fingerprint (cpu model, core count, GPU names, driver), written atomically; measured
// on first use when absent or unreadable.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace strata::engine {

// Rates in GB/s (1e9 bytes per second) and FLOP rates in GFLOP/s.
struct MachineConstants {
  double h2d_gbps = 0;        // pinned host memory -> GPU copies (0: no GPU)
  double host_read_gbps = 0;  // reading host memory, all threads
  // The bf16 matrix-vector product through ops::linear, per thread count: {threads, GB/s of
  // weights read}, ascending threads.
  std::vector<std::pair<int, double>> cpu_gemv_gbps;
  double cpu_gemm_gflops = 0;       // bf16 products of 64 rows through ops::linear
  double gpu_hbm_gbps = 0;          // read + write traffic of a device copy (0: no GPU)
  double gpu_gemm_gflops = 0;       // bf16 GEMM on the GPU (0: no GPU)
  double disk_read_gbps = 0;        // reading a file not in the page cache (O_DIRECT)
  double page_cache_read_gbps = 0;  // copying from a mapped file in the page cache
  double transfer_latency_us = 0;   // one small host <-> GPU copy, synchronised
  // Optional (0 when a cache file written before them lacks them; the cost model then falls back
  // to the rates above and leaves the overhead terms out):
  double cpu_gemv_layer_gbps = 0;  // all threads over eight [4096, 4096] bf16 products in a row
  double cpu_op_us = 0;            // one small cpu op (checks, allocation, pool dispatch)
  double gpu_launch_us = 0;        // one small GPU op, back to back (0: no GPU)
  double split_cpu_gemv_gbps = 0;  // the cpu's matrix-vector rate while pinned H2D copies run
  double split_h2d_gbps = 0;       // pinned H2D while the cpu runs matrix-vector products
  // Mixture of experts (moe-execution.md): the rate of a decode step's cpu experts (8 experts of
  // [768, 2048] bf16, one row each, through cpu::cpu_experts_gemv), and a block step's fixed host
  // cost behind a GPU (one wait for the routing, the copies, the cpu dispatch, the k-way sum).
  double cpu_expert_gbps = 0;
  double moe_block_us = 0;  // 0: no GPU
  int threads = 0;          // the thread pool's size when measured
  std::string fingerprint;  // hardware_fingerprint() of the machine measured

  bool has_gpu() const { return h2d_gbps > 0 && gpu_hbm_gbps > 0 && gpu_gemm_gflops > 0; }
  // The matrix-vector rate with `threads` threads: linear between measured counts, the nearest
  // measured count outside them. 0 when nothing was measured.
  double cpu_gemv_rate(int threads) const;
};

inline constexpr const char* kMachineConstantsSchema = "strata-machine-constants/1";

// {"schema": ..., "fingerprint": ..., "threads": ..., "h2d_gbps": ..., "cpu_gemv_gbps":
// {"1": ..., "16": ...}, ...}. from_json throws InvalidArgument naming `what` (a file) and the
// missing or bad field.
nlohmann::json to_json(const MachineConstants& constants);
MachineConstants machine_constants_from_json(const nlohmann::json& json, const std::string& what);
// Reads a constants file (IoError / InvalidArgument naming it).
MachineConstants read_machine_constants(const std::filesystem::path& path);

// "cpu=<model name>;cores=<n>;gpus=<name,name>;driver=<version>" (no GPU: "gpus=;driver=").
std::string hardware_fingerprint();
// $XDG_CACHE_HOME/strata, else $HOME/.cache/strata (InvalidArgument when neither is set).
std::filesystem::path calibration_cache_dir();
// The cache file of a fingerprint: <dir>/machine-<16 hex digits of FNV-1a 64>.json.
std::filesystem::path calibration_cache_file(const std::filesystem::path& dir,
                                             const std::string& fingerprint);

struct MeasureOptions {
  std::ostream* progress = nullptr;  // one line per measurement
  // Buffer sizes: large enough to leave the caches (defaults), small in tests. host_bytes 0:
  // host_buffer_bytes() (the cpu's products and reads must come from memory, not the cache).
  std::int64_t host_bytes = 0;
  std::int64_t file_bytes = std::int64_t{256} << 20;
  std::filesystem::path scratch_dir;  // for the disk measurement; empty: the temp directory
};
// The host buffers' size for the rates that must come from memory: 4 x the last-level cache
// (sysconf, else /sys/devices/system/cpu/cpu0/cache), at least 256 MiB, at most 4 GiB. The H100
// host's 300 MiB L3 held the 256 MiB used before: its matrix-vector rates (137 GB/s) were the
// cache's, and the plan predicted the cpu's decode 20% too fast.
std::int64_t host_buffer_bytes();
// Measures every constant of this machine (GPU ones when a CUDA device is usable).
MachineConstants measure_machine_constants(const MeasureOptions& options = {});

struct CalibrationOptions {
  bool force = false;                              // measure even when a valid cache exists
  std::optional<std::filesystem::path> cache_dir;  // default: calibration_cache_dir()
};
struct Calibration {
  MachineConstants constants;
  std::filesystem::path file;         // the cache file read or written
  bool measured = false;              // false: read from the cache
  std::vector<std::string> warnings;  // also logged
};
using Measurer = std::function<MachineConstants()>;
// The constants of this machine: the cache file of `fingerprint` when it is valid and was
// written for that fingerprint, else measured (with a warning when a file was there but
// unreadable) and written atomically. A cache that cannot be written, or no cache directory at
// all (neither XDG_CACHE_HOME nor HOME), is a warning (then `file` is empty).
Calibration load_or_measure(const CalibrationOptions& options, const Measurer& measure,
                            const std::string& fingerprint);
// The same for this machine, measured by measure_machine_constants.
Calibration load_or_measure(const CalibrationOptions& options = {});

}  // namespace strata::engine
