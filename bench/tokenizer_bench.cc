// Tokenizer throughput, single-threaded: encode MB/s (input bytes) and decode MB/s (output
// bytes) of the 1 MB mixed text of the parity tests (tests/fixtures/tools/
// record_tokenizer_corpus.py, seed 2026) and of plain English prose, on the fixture tokenizers.
// bench/reference/tokenizer_reference.py measures the Python `tokenizers` package on the same
// text and files.
//
//   tokenizer_bench [--benchmark_filter=gpt2]
//
// The word cache is warm after the first iteration, as in a server that has seen some text;
// the "cold" cases use a fresh Tokenizer per iteration (no cached words).

#include <benchmark/benchmark.h>

#include <filesystem>
#include <string>
#include <vector>

#include "strata/text/tokenizer.h"
#include "text/tokenizer_testing.h"

namespace {

using strata::text::Tokenizer;
namespace testing = strata::text::testing;

const std::string& mixed() {
  static const std::string text = testing::mixed_text(2026, 1 << 20);
  return text;
}

// English-like prose: the corpus fragments that are words, joined by spaces and punctuation.
const std::string& prose() {
  static const std::string text = [] {
    static const char* words[] = {"the",  "little", "dog",   "ran",   "to",   "park",
                                  "and",  "she",    "said",  "happy", "Once", "upon",
                                  "a",    "time",   "there", "was",   "girl", "named",
                                  "Lily", "who",    "loved", "play",  "with", "ball"};
    std::string out;
    std::uint64_t s = 88172645463325252ull;
    while (out.size() < (1u << 20)) {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      out += words[s % 24];
      out += (s >> 40) % 11 == 0 ? ". " : (s >> 40) % 7 == 0 ? ", " : " ";
    }
    return out;
  }();
  return text;
}

bool available(const std::string& name) {
  auto real = testing::text_fixtures() / "tokenizers" / (name + ".tokenizer.json");
  return name == "stories260K" || std::filesystem::exists(real) ||
         std::filesystem::exists(testing::text_fixtures() / "trained" / name / "tokenizer.json");
}

void encode(benchmark::State& state, std::string name, const std::string* text, bool cold) {
  Tokenizer tok = testing::load_named(name);
  std::size_t n_ids = 0;
  for (auto _ : state) {
    if (cold) {
      state.PauseTiming();
      tok = testing::load_named(name);
      state.ResumeTiming();
    }
    auto ids = tok.encode(*text, false);
    n_ids = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text->size()));
  state.counters["ids"] = static_cast<double>(n_ids);
}

void decode(benchmark::State& state, std::string name, const std::string* text) {
  Tokenizer tok = testing::load_named(name);
  auto ids = tok.encode(*text, false);
  std::size_t bytes = 0;
  for (auto _ : state) {
    auto out = tok.decode(ids);
    bytes = out.size();
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
}

void stream(benchmark::State& state, std::string name, const std::string* text) {
  Tokenizer tok = testing::load_named(name);
  auto ids = tok.encode(*text, false);
  std::size_t bytes = 0;
  for (auto _ : state) {
    strata::text::StreamDecoder s(tok);
    bytes = 0;
    for (auto id : ids) bytes += s.push(id).size();
    bytes += s.finish().size();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
}

const bool registered = [] {
  for (std::string name :
       {"gpt2", "mistral", "phi3", "stories260K", "llama3", "qwen2", "gemma3", "metaspace"}) {
    if (!available(name)) continue;
    for (auto [label, text] : {std::pair{"mixed", &mixed()}, std::pair{"prose", &prose()}}) {
      std::string suffix = name + "/" + label;
      benchmark::RegisterBenchmark(("encode/" + suffix).c_str(), encode, name, text, false)
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("decode/" + suffix).c_str(), decode, name, text)
          ->Unit(benchmark::kMillisecond);
    }
    benchmark::RegisterBenchmark(("encode_cold/" + name + "/mixed").c_str(), encode, name, &mixed(),
                                 true)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("stream_decode/" + name + "/mixed").c_str(), stream, name,
                                 &mixed())
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
