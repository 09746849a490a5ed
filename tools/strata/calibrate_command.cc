#include "calibrate_command.h"

#include <fmt/format.h>

#include <ostream>

namespace strata::cli {

CLI::App* add_calibrate_command(CLI::App& app, CalibrateArgs& args) {
  CLI::App* cmd = app.add_subcommand(
      "calibrate",
      "measure this machine's bandwidths and compute rates for the cost model (about 10 s; "
      "cached, measured on first use otherwise)");
  cmd->add_flag("--force", args.force, "measure again even when cached");
  cmd->add_flag("--json", args.json, "print the constants as JSON");
  cmd->add_option("--cache-dir", args.cache_dir,
                  "where the constants are cached (default: $XDG_CACHE_HOME/strata, else "
                  "~/.cache/strata)");
  return cmd;
}

std::string constants_table(const engine::MachineConstants& c) {
  std::string out;
  const auto row = [&](std::string_view what, double value, std::string_view unit) {
    out += fmt::format("  {:<36} {:>10.2f} {}\n", what, value, unit);
  };
  row("pinned host -> GPU", c.h2d_gbps, "GB/s");
  row("host memory read", c.host_read_gbps, "GB/s");
  for (const auto& [threads, rate] : c.cpu_gemv_gbps) {
    row(fmt::format("cpu bf16 matrix-vector, {} thread{}", threads, threads == 1 ? "" : "s"), rate,
        "GB/s");
  }
  row("cpu bf16 product, 64 rows", c.cpu_gemm_gflops, "GFLOP/s");
  row("GPU memory", c.gpu_hbm_gbps, "GB/s");
  row("GPU bf16 GEMM", c.gpu_gemm_gflops, "GFLOP/s");
  row("file from the disk", c.disk_read_gbps, "GB/s");
  row("file in the page cache", c.page_cache_read_gbps, "GB/s");
  row("small host <-> GPU copy", c.transfer_latency_us, "us");
  return out;
}

int run_calibrate(const CalibrateArgs& args, std::ostream& out, std::ostream& err) {
  engine::CalibrationOptions options;
  options.force = args.force;
  if (args.cache_dir) options.cache_dir = *args.cache_dir;
  engine::MeasureOptions measure;
  if (!args.json) measure.progress = &err;
  const engine::Calibration calibration = engine::load_or_measure(
      options, [&] { return engine::measure_machine_constants(measure); },
      engine::hardware_fingerprint());
  if (args.json) {
    out << engine::to_json(calibration.constants).dump(2) << "\n";
    return 0;
  }
  out << fmt::format("machine: {}\n{} {}\n", calibration.constants.fingerprint,
                     calibration.measured ? "measured now, cached in" : "cached in",
                     calibration.file.string());
  out << constants_table(calibration.constants);
  if (!calibration.constants.has_gpu()) out << "  (no GPU measured)\n";
  return 0;
}

}  // namespace strata::cli
