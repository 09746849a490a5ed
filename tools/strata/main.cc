// The `strata` command: --version, `selfcheck`, `plan`, `run`, `generate`, `tokenize`, `chat`,
// `serve`, `detokenize`, `template`, `bench`, `calibrate`. Each subcommand lives in its own file
// (strata_cli_lib), so the tests call it directly.

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "bench_command.h"
#include "calibrate_command.h"
#include "chat_command.h"
#include "generate_command.h"
#include "plan_command.h"
#include "progress_bar.h"
#include "run_command.h"
#include "selfcheck.h"
#include "serve_command.h"
#include "strata/build_info.h"
#include "strata/core/error.h"
#include "template_command.h"
#include "tokenize_command.h"

int main(int argc, char** argv) {
  CLI::App app{"strata: run neural networks whose weights do not fit on one GPU"};
  // Version, commit, CUDA runtime/driver and the CPU kernels picked (computed only when asked).
  app.set_version_flag("--version", [] {
    std::string text = strata::version_report();
    if (!text.empty() && text.back() == '\n') text.pop_back();  // CLI11 adds the newline
    return text;
  });
  app.require_subcommand(0, 1);

  std::string dtype_text = "bf16";
  CLI::App* selfcheck = app.add_subcommand(
      "selfcheck", "run a small decoder-block forward through the CPU ops and check it");
  selfcheck->add_option("--dtype", dtype_text, "f32, bf16 or f16")->capture_default_str();
  strata::cli::PlanArgs plan_args;
  CLI::App* plan = strata::cli::add_plan_command(app, plan_args);
  strata::cli::RunArgs run_args;
  CLI::App* run = strata::cli::add_run_command(app, run_args);
  strata::cli::GenerateArgs generate_args;
  CLI::App* generate = strata::cli::add_generate_command(app, generate_args);
  strata::cli::TokenizeArgs tokenize_args;
  CLI::App* tokenize = strata::cli::add_tokenize_command(app, tokenize_args);
  strata::cli::DetokenizeArgs detokenize_args;
  CLI::App* detokenize = strata::cli::add_detokenize_command(app, detokenize_args);
  strata::cli::ChatArgs chat_args;
  CLI::App* chat = strata::cli::add_chat_command(app, chat_args);
  strata::cli::ServeArgs serve_args;
  CLI::App* serve = strata::cli::add_serve_command(app, serve_args);
  strata::cli::TemplateArgs template_args;
  CLI::App* chat_template = strata::cli::add_template_command(app, template_args);
  strata::cli::CalibrateArgs calibrate_args;
  CLI::App* calibrate = strata::cli::add_calibrate_command(app, calibrate_args);
  strata::cli::BenchArgs bench_args;
  CLI::App* bench = strata::cli::add_bench_command(app, bench_args);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (selfcheck->parsed()) {
      return strata::cli::run_selfcheck(strata::parse_dtype(dtype_text), std::cout) ? 0 : 1;
    }
    if (plan->parsed()) return strata::cli::run_plan(plan_args, std::cout);
    if (run->parsed()) return strata::cli::run_run(run_args, std::cout, std::cerr);
    if (generate->parsed()) {
      return strata::cli::run_generate(generate_args, std::cin, std::cout, std::cerr,
                                       strata::cli::stderr_is_terminal());
    }
    if (tokenize->parsed()) return strata::cli::run_tokenize(tokenize_args, std::cout);
    if (detokenize->parsed()) return strata::cli::run_detokenize(detokenize_args, std::cout);
    if (chat->parsed()) return strata::cli::run_chat(chat_args, std::cin, std::cout, std::cerr);
    if (serve->parsed()) return strata::cli::run_serve(serve_args, std::cout, std::cerr);
    if (chat_template->parsed()) return strata::cli::run_template(template_args, std::cout);
    if (calibrate->parsed()) {
      return strata::cli::run_calibrate(calibrate_args, std::cout, std::cerr);
    }
    if (bench->parsed()) return strata::cli::run_bench(bench_args, std::cout, std::cerr);
    std::cout << app.help();
    return 0;
  } catch (const strata::Error& e) {
    std::cerr << "strata: error: " << e.what() << "\n";
    return 1;
  }
}
