// Checkpoint load bandwidth: a multi-GB sharded safetensors checkpoint, already in the page
// cache, copied into CPU memory (pageable and pinned), next to a plain memcpy of the same bytes.
//
//   checkpoint_load_bench [--gib N] [--shards K] [--dir DIR] [--repeat R]
//   (or STRATA_BENCH_CKPT_GIB=N). The checkpoint is generated under /tmp on first use.
//
// Each "load" pass opens the checkpoint (maps and validates every shard), then for every tensor
// allocates its destination and copies it out of the mapping, as a loader does. Pinned memory
// falls back to pageable (with one warning) when no GPU backend can pin.

#include <fmt/format.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "strata/core/parallel.h"
#include "strata/core/tensor.h"
#include "strata/io/checkpoint.h"

namespace {

namespace fs = std::filesystem;
using strata::DType;
using strata::Tensor;

constexpr std::int64_t kRows = 4096;  // each tensor: 4096 x 8192 bf16 = 64 MiB
constexpr std::int64_t kCols = 8192;

struct Options {
  double gib = 2.0;
  int shards = 4;
  int repeat = 3;
  fs::path dir;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Writes the checkpoint with Strata's own writer, and a Hugging Face style index.
void generate(const Options& opt) {
  const auto tensor_bytes = static_cast<std::uint64_t>(kRows * kCols * 2);
  const auto count = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(opt.gib * double(1ull << 30)) / tensor_bytes);
  fmt::print("generating {} tensors of 64 MiB in {} shards under {} ...\n", count, opt.shards,
             opt.dir.string());
  fs::create_directories(opt.dir);
  const auto t0 = std::chrono::steady_clock::now();
  std::string weight_map;
  const auto per_shard = (count + opt.shards - 1) / static_cast<std::uint64_t>(opt.shards);
  for (int s = 0; s < opt.shards; ++s) {
    const std::string shard = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, opt.shards);
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (std::uint64_t i = s * per_shard; i < std::min(count, (s + 1) * per_shard); ++i) {
      const std::string name = fmt::format("model.layers.{}.weight", i);
      Tensor t = Tensor::empty({kRows, kCols}, DType::BFloat16);
      std::memset(t.data_ptr(), static_cast<int>(i & 0x7f), t.nbytes());
      tensors.emplace_back(name, std::move(t));
      weight_map += fmt::format("{}\"{}\": \"{}\"", weight_map.empty() ? "" : ", ", name, shard);
    }
    strata::io::save_safetensors(opt.dir / shard, tensors);
  }
  std::ofstream(opt.dir / "model.safetensors.index.json")
      << fmt::format(R"({{"metadata": {{"total_size": {}}}, "weight_map": {{{}}}}})",
                     count * tensor_bytes, weight_map);
  fmt::print("generated in {:.1f} s\n", seconds_since(t0));
}

// Copies [0, n) bytes with the thread pool, in chunks of 4 MiB.
void parallel_memcpy(void* dst, const void* src, std::size_t n) {
  constexpr std::int64_t kChunk = 4 << 20;
  const auto chunks = static_cast<std::int64_t>((n + kChunk - 1) / kChunk);
  strata::parallel_for(chunks, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t c = b; c < e; ++c) {
      const auto off = static_cast<std::size_t>(c * kChunk);
      std::memcpy(static_cast<char*>(dst) + off, static_cast<const char*>(src) + off,
                  std::min<std::size_t>(kChunk, n - off));
    }
  });
}

struct Result {
  std::string name;
  std::vector<double> gbps;
};

void report(const Result& r) {
  const double best = *std::max_element(r.gbps.begin(), r.gbps.end());
  double mean = 0;
  for (double g : r.gbps) mean += g / static_cast<double>(r.gbps.size());
  fmt::print("  {:<56} {:>8.2f} {:>9.2f}\n", r.name, best, mean);
}

// How a load pass gets bytes out of the file.
enum class Copy {
  TensorCopy,      // Tensor::copy_ from the mapped view (page faults on the mapping)
  PopulateMemcpy,  // MADV_POPULATE_READ on the range, then memcpy from the mapping
  Pread,           // pread() from the page cache into the destination (no mapping faults)
  PreadParallel,   // pread() in 8 MiB chunks over the thread pool
};

// One load pass: open the checkpoint, then fill every tensor: each into a new allocation of
// `memory` (what a CPU load does), or, with `staging`, all into that one reused, prefaulted
// buffer (what a GPU load through a pinned staging buffer does). Returns GB/s.
double load_pass(const fs::path& dir, strata::MemoryKind memory, Copy how,
                 const Tensor* staging = nullptr) {
  const auto t0 = std::chrono::steady_clock::now();
  const strata::io::CheckpointReader reader(dir);
  std::vector<Tensor> loaded;
  std::uint64_t bytes = 0;
  for (const auto& name : reader.keys()) {
    const auto location = reader.locate(name);
    const auto* file = location.file;
    const auto* entry = location.entry;
    Tensor dst = staging ? staging->view(entry->shape)
                         : Tensor::empty(entry->shape, entry->dtype, strata::Device::cpu(), memory);
    switch (how) {
      case Copy::TensorCopy:
        dst.copy_(file->tensor(*entry));
        break;
      case Copy::PopulateMemcpy:
        file->mapping()->populate(file->file_offset(*entry), entry->nbytes());
        std::memcpy(dst.data_ptr(), file->bytes(*entry).data(), entry->nbytes());
        break;
      case Copy::Pread:
        file->read_into(*entry, dst.data_ptr());
        break;
      case Copy::PreadParallel: {
        constexpr std::int64_t kChunk = 8 << 20;
        const auto n = static_cast<std::int64_t>(entry->nbytes());
        strata::parallel_for((n + kChunk - 1) / kChunk, 1, [&](std::int64_t b, std::int64_t e) {
          const auto begin = static_cast<std::uint64_t>(b * kChunk);
          const auto end = std::min<std::uint64_t>(static_cast<std::uint64_t>(e * kChunk),
                                                   static_cast<std::uint64_t>(n));
          file->mapping()->read(file->file_offset(*entry) + begin,
                                static_cast<char*>(dst.data_ptr()) + begin, end - begin);
        });
        break;
      }
    }
    bytes += entry->nbytes();
    if (!staging) loaded.push_back(std::move(dst));
  }
  return static_cast<double>(bytes) / 1e9 / seconds_since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  if (const char* env = std::getenv("STRATA_BENCH_CKPT_GIB")) opt.gib = std::atof(env);
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--gib")
      opt.gib = std::atof(argv[i + 1]);
    else if (flag == "--shards")
      opt.shards = std::atoi(argv[i + 1]);
    else if (flag == "--repeat")
      opt.repeat = std::max(1, std::atoi(argv[i + 1]));
    else if (flag == "--dir")
      opt.dir = argv[i + 1];
    else {
      fmt::print(stderr, "unknown flag {}\n", flag);
      return 2;
    }
  }
  if (opt.dir.empty()) opt.dir = fmt::format("/tmp/strata_bench_ckpt_{}g_{}s", opt.gib, opt.shards);

  try {
    if (!fs::exists(opt.dir / "model.safetensors.index.json")) generate(opt);

    // Warm the page cache: read every byte once through a mapping.
    const auto t0 = std::chrono::steady_clock::now();
    std::uint64_t total = 0;
    {
      const strata::io::CheckpointReader reader(opt.dir);
      volatile std::uint64_t sink = 0;
      for (const auto& shard : reader.shards()) {
        const auto bytes = shard->mapping()->bytes();
        for (std::size_t i = 0; i < bytes.size(); i += 4096) sink = sink + bytes[i];
      }
      total = reader.total_bytes();
      fmt::print("checkpoint {}: {} shards, {} tensors, {:.2f} GB; threads {}\n", opt.dir.string(),
                 reader.shards().size(), reader.size(), double(total) / 1e9, strata::num_threads());
    }
    fmt::print("page cache warmed in {:.2f} s\n\n", seconds_since(t0));

    // Baseline: memcpy between two prefaulted buffers of the checkpoint's size.
    std::vector<char> a(total, 1);
    std::vector<char> b(total, 2);
    Result memcpy1{"memcpy RAM->RAM, 1 thread (prefaulted)", {}};
    Result memcpyn{"memcpy RAM->RAM, thread pool (prefaulted)", {}};
    Result fresh{"memcpy RAM->fresh 64 MiB allocations, 1 thread", {}};
    Result huge{"memcpy RAM->fresh MADV_HUGEPAGE allocations, 1 thread", {}};
    for (int r = 0; r < opt.repeat; ++r) {
      auto t = std::chrono::steady_clock::now();
      std::memcpy(b.data(), a.data(), total);
      memcpy1.gbps.push_back(double(total) / 1e9 / seconds_since(t));
      t = std::chrono::steady_clock::now();
      parallel_memcpy(b.data(), a.data(), total);
      memcpyn.gbps.push_back(double(total) / 1e9 / seconds_since(t));
      // Destinations allocated per tensor, as a loader does: their pages fault in on first write.
      t = std::chrono::steady_clock::now();
      {
        std::vector<Tensor> out;
        for (std::uint64_t off = 0; off + kRows * kCols * 2 <= total; off += kRows * kCols * 2) {
          out.push_back(Tensor::empty({kRows, kCols}, DType::BFloat16));
          std::memcpy(out.back().data_ptr(), a.data() + off, out.back().nbytes());
        }
        fresh.gbps.push_back(double(out.size() * out[0].nbytes()) / 1e9 / seconds_since(t));
      }
      // The same with transparent huge pages asked for (512x fewer faults where THP is on).
      t = std::chrono::steady_clock::now();
      {
        std::vector<std::unique_ptr<char, decltype(&std::free)>> out;
        const std::size_t n = kRows * kCols * 2;
        for (std::uint64_t off = 0; off + n <= total; off += n) {
          void* p = nullptr;
          if (::posix_memalign(&p, 2 << 20, n) != 0) throw std::bad_alloc();
          ::madvise(p, n, MADV_HUGEPAGE);
          out.emplace_back(static_cast<char*>(p), &std::free);
          std::memcpy(p, a.data() + off, n);
        }
        huge.gbps.push_back(double(out.size() * n) / 1e9 / seconds_since(t));
      }
    }
    a = {};
    b = {};
    a.shrink_to_fit();
    b.shrink_to_fit();

    using strata::MemoryKind;
    struct Case {
      Result result;
      MemoryKind memory;
      Copy how;
    };
    std::vector<Case> loads = {
        {{"load -> new pageable, Tensor::copy_ from the mapping", {}},
         MemoryKind::Pageable,
         Copy::TensorCopy},
        {{"load -> new pageable, pread", {}}, MemoryKind::Pageable, Copy::Pread},
        {{"load -> new pageable, pread over the thread pool", {}},
         MemoryKind::Pageable,
         Copy::PreadParallel},
        {{"load -> new pinned, pread over the thread pool", {}},
         MemoryKind::Pinned,
         Copy::PreadParallel},
    };
    // All tensors have one shape here; a reused buffer stands for a pinned staging slot.
    const Tensor staging = Tensor::zeros({kRows, kCols}, DType::BFloat16);
    std::vector<Case> staged = {
        {{"load -> reused buffer, memcpy from the mapping", {}},
         MemoryKind::Pageable,
         Copy::TensorCopy},
        {{"load -> reused buffer, MADV_POPULATE_READ + memcpy", {}},
         MemoryKind::Pageable,
         Copy::PopulateMemcpy},
        {{"load -> reused buffer, pread", {}}, MemoryKind::Pageable, Copy::Pread},
        {{"load -> reused buffer, pread over the thread pool", {}},
         MemoryKind::Pageable,
         Copy::PreadParallel},
    };
    for (int r = 0; r < opt.repeat; ++r) {
      for (auto& c : loads) c.result.gbps.push_back(load_pass(opt.dir, c.memory, c.how));
      for (auto& c : staged) {
        c.result.gbps.push_back(load_pass(opt.dir, c.memory, c.how, &staging));
      }
    }
    fmt::print("  {:<56} {:>8} {:>9}\n", fmt::format("GB/s over {} runs", opt.repeat), "best",
               "mean");
    report(memcpy1);
    report(memcpyn);
    report(fresh);
    report(huge);
    for (const auto& c : loads) report(c.result);
    for (const auto& c : staged) report(c.result);
    fmt::print("\n(load = open + validate + allocate + copy out of the file; GB = 1e9 bytes)\n");
  } catch (const std::exception& e) {
    fmt::print(stderr, "checkpoint_load_bench: {}\n", e.what());
    return 1;
  }
  return 0;
}
