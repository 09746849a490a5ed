// The disk tier's staging pipeline: chunk planning, the chunk pool, reads from mapped files, and
// the DiskStreamer against a host stand-in for the GPU (a copy thread that runs queued copies
// late, as a copy engine does), so the recycling and ordering rules run without a GPU. The
// engine tests on cuda:0 stream mapped files and an offload folder and compare bit for bit;
// they skip without a GPU.

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "placement/disk_streamer.h"
#include "placement/prefetch_engine.h"
#include "placement/staging_chunks.h"
#include "strata/core/backend.h"
#include "strata/core/error.h"
#include "strata/io/mapped_file.h"
#include "strata/nn/layers.h"
#include "strata/placement/offload.h"
#include "support/op_testing.h"

namespace strata::placement::detail {
namespace {

using Bytes = std::vector<std::uint8_t>;
namespace fs = std::filesystem;

Bytes random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 random(seed);
  Bytes out(n);
  for (std::uint8_t& b : out) b = static_cast<std::uint8_t>(random());
  return out;
}

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() / ("strata_staging_" + std::to_string(::getpid()) + "_" + name);
}

void write_file(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// MADV_POPULATE_READ (Linux 5.14) is what turns a truncated mapping into an error instead of a
// SIGBUS; without it the truncation tests cannot run.
bool kernel_reports_failed_reads() {
  void* page = ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  const bool ok = ::madvise(page, 4096, 22 /* MADV_POPULATE_READ */) == 0;
  ::munmap(page, 4096);
  return ok;
}

// ---- plain pieces -----------------------------------------------------------------------------

TEST(StagingConfig, AutomaticValuesFollowTheCores) {
  const StagingConfig big = resolve_staging({}, 16);
  EXPECT_EQ(big.workers, 8);
  EXPECT_EQ(big.chunks, 16);
  EXPECT_EQ(big.chunk_bytes, std::size_t{8} << 20);
  EXPECT_EQ(big.pool_bytes(), std::size_t{128} << 20);
  EXPECT_EQ(resolve_staging({}, 64).workers, 8) << "at most 8 automatic threads";
  const StagingConfig small = resolve_staging({}, 2);
  EXPECT_EQ(small.workers, 1);
  EXPECT_EQ(small.chunks, 2);
}

TEST(StagingConfig, ExplicitValuesAndNeverMoreWorkersThanChunks) {
  const StagingConfig c =
      resolve_staging({.io_threads = 6, .staging_chunk_bytes = 4096, .staging_chunks = 4}, 16);
  EXPECT_EQ(c.workers, 4);
  EXPECT_EQ(c.chunks, 4);
  EXPECT_EQ(c.pool_bytes(), 4u * 4096);
  EXPECT_EQ(resolve_staging({.io_threads = 3}, 16).chunks, 6);
}

TEST(StagingConfig, BadValuesAreInvalidArguments) {
  EXPECT_THROW(resolve_staging({.io_threads = -1}), InvalidArgument);
  EXPECT_THROW(resolve_staging({.staging_chunks = -2}), InvalidArgument);
  EXPECT_THROW(resolve_staging({.staging_chunk_bytes = 0}), InvalidArgument);
  EXPECT_THROW(resolve_staging({.staging_chunk_bytes = 1000}), InvalidArgument);
}

TEST(PlanChunks, SplitsEachTensorInOrderAndSkipsEmptyOnes) {
  const std::vector<std::size_t> sizes = {0, 64, 65, 10, 0, 200};
  const std::vector<ChunkJob> expected = {{1, 0, 64}, {2, 0, 64},  {2, 64, 1},   {3, 0, 10},
                                          {5, 0, 64}, {5, 64, 64}, {5, 128, 64}, {5, 192, 8}};
  EXPECT_EQ(plan_chunks(sizes, 64), expected);
  EXPECT_TRUE(plan_chunks(std::vector<std::size_t>{0, 0}, 64).empty());
}

TEST(ChunkPool, LeastRecentlyReleasedFirst) {
  ChunkPool pool(3);
  EXPECT_EQ(pool.acquire(), 0);
  EXPECT_EQ(pool.acquire(), 1);
  EXPECT_EQ(pool.acquire(), 2);
  pool.release(1);
  pool.release(0);
  EXPECT_EQ(pool.acquire(), 1);
  EXPECT_EQ(pool.acquire(), 0);
  EXPECT_EQ(pool.peak_taken(), 3);
  EXPECT_THROW(pool.release(7), InternalError);
}

TEST(ChunkPool, AcquireWaitsForARelease) {
  ChunkPool pool(1);
  const int held = pool.acquire();
  std::atomic<int> got{-1};
  std::thread taker([&] { got = pool.acquire(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(got, -1) << "no chunk was free";
  pool.release(held);
  taker.join();
  EXPECT_EQ(got, held);
  EXPECT_EQ(pool.peak_taken(), 1);
}

TEST(ReadSource, CopiesFromAMappingAndNamesItsFile) {
  const fs::path path = temp_path("read.dat");
  const Bytes bytes = random_bytes(3 * 4096 + 17, 1);
  write_file(path, bytes);
  {
    const auto file = io::MappedFile::open(path, /*keep_descriptor=*/false);
    Bytes out(bytes.size() - 5);
    EXPECT_EQ(read_source(out.data(), file->data() + 5, out.size()), 0);
    EXPECT_TRUE(std::equal(out.begin(), out.end(), bytes.begin() + 5));
    EXPECT_EQ(read_source(out.data(), file->data(), 0), 0);
    const std::string where = describe_address(file->data() + 4096 + 3);
    EXPECT_NE(where.find(path.string()), std::string::npos) << where;
    EXPECT_NE(where.find("at byte 4099"), std::string::npos) << where;
  }
  const Bytes heap(8);
  EXPECT_EQ(describe_address(heap.data()).rfind("memory at ", 0), 0u);
  fs::remove(path);
}

TEST(ReadSource, ATruncatedMappingIsAnErrorNotASignal) {
  if (!kernel_reports_failed_reads()) GTEST_SKIP() << "kernel without MADV_POPULATE_READ";
  const fs::path path = temp_path("truncated.dat");
  write_file(path, random_bytes(4 * 4096, 2));
  const auto file = io::MappedFile::open(path, false);
  fs::resize_file(path, 4096);  // another process shrinks the file under the mapping
  Bytes out(4096);
  EXPECT_EQ(read_source(out.data(), file->data(), 4096), 0) << "the first page is still there";
  EXPECT_EQ(read_source(out.data(), file->data() + 2 * 4096, 4096), EFAULT);
  fs::remove(path);
}

// ---- the streamer against a host "device" -----------------------------------------------------

// Copies queued here run later, in order, on a copy thread (after `latency` each), reading the
// chunk when they run, as a DMA engine does; a chunk's fence is its last queued copy. Writing
// into a chunk whose copy has not run would corrupt the destination, and is counted.
class HostDevice final : public StagingDevice {
 public:
  explicit HostDevice(std::chrono::microseconds latency) : latency_(latency) {
    copier_ = std::thread([this] { copy_loop(); });
  }
  ~HostDevice() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    queued_cv_.notify_all();
    copier_.join();
  }

  void allocate(int chunks, std::size_t chunk_bytes) override {
    std::lock_guard lock(mutex_);
    ++allocations_;
    chunk_bytes_ = chunk_bytes;
    memory_.assign(static_cast<std::size_t>(chunks) * chunk_bytes, 0);
    fences_.assign(static_cast<std::size_t>(chunks), 0);
  }
  void* chunk_data(int chunk) override {
    std::lock_guard lock(mutex_);
    if (completed_ < fences_[static_cast<std::size_t>(chunk)]) ++reused_early_;
    return chunk_at(chunk);
  }
  void wait_chunk(int chunk) override {
    std::unique_lock lock(mutex_);
    completed_cv_.wait(lock,
                       [&] { return completed_ >= fences_[static_cast<std::size_t>(chunk)]; });
  }
  void start_worker() override { ++workers_started_; }

  // Queues dst <- src; a chunk's copy becomes its fence.
  void queue(void* dst, const void* src, std::size_t bytes, int chunk = -1) {
    std::lock_guard lock(mutex_);
    copies_.push_back({dst, src, bytes});
    ++queued_;
    if (chunk >= 0) fences_[static_cast<std::size_t>(chunk)] = queued_;
    queued_cv_.notify_one();
  }
  void queue_chunk(void* dst, int chunk, std::size_t bytes) {
    queue(dst, chunk_at(chunk), bytes, chunk);
  }
  void finish() {
    std::unique_lock lock(mutex_);
    completed_cv_.wait(lock, [&] { return completed_ == queued_; });
  }
  void log(std::string line) { log_.push_back(std::move(line)); }  // under the streamer's lock

  const std::vector<std::string>& log() const { return log_; }
  int allocations() const { return allocations_; }
  int reused_early() const { return reused_early_; }
  int workers_started() const { return workers_started_; }

 private:
  struct Copy {
    void* dst;
    const void* src;
    std::size_t bytes;
  };
  std::uint8_t* chunk_at(int chunk) {
    return memory_.data() + static_cast<std::size_t>(chunk) * chunk_bytes_;
  }
  void copy_loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      queued_cv_.wait(lock, [&] { return stopping_ || !copies_.empty(); });
      if (copies_.empty()) return;
      const Copy copy = copies_.front();
      copies_.pop_front();
      lock.unlock();
      std::this_thread::sleep_for(latency_);
      std::memcpy(copy.dst, copy.src, copy.bytes);
      lock.lock();
      ++completed_;
      completed_cv_.notify_all();
    }
  }

  const std::chrono::microseconds latency_;
  std::mutex mutex_;
  std::condition_variable queued_cv_, completed_cv_;
  std::deque<Copy> copies_;
  std::uint64_t queued_ = 0, completed_ = 0;
  bool stopping_ = false;
  std::size_t chunk_bytes_ = 0;
  Bytes memory_;
  std::vector<std::uint64_t> fences_;
  int allocations_ = 0;
  int reused_early_ = 0;
  std::atomic<int> workers_started_{0};
  std::vector<std::string> log_;
  std::thread copier_;
};

// One unit: sources (staged, or `direct` like pinned ones) copied into `out`.
class HostTransfer final : public StagedTransfer {
 public:
  HostTransfer(HostDevice& device, int id, std::vector<std::span<const std::uint8_t>> sources,
               std::vector<bool> direct = {})
      : device_(device), id_(id), sources_(std::move(sources)), direct_(std::move(direct)) {
    direct_.resize(sources_.size(), false);
    for (const auto& s : sources_) out.emplace_back(s.size(), 0xEE);
  }
  std::vector<StagedSource> staged() const {
    std::vector<StagedSource> result;
    for (std::size_t i = 0; i < sources_.size(); ++i) {
      if (!direct_[i]) result.push_back({i, sources_[i].data(), sources_[i].size()});
    }
    return result;
  }
  bool arrived() const {
    for (std::size_t i = 0; i < sources_.size(); ++i) {
      if (!std::equal(out[i].begin(), out[i].end(), sources_[i].begin())) return false;
    }
    return true;
  }

  void begin() override {
    device_.log("begin " + std::to_string(id_));
    for (std::size_t i = 0; i < sources_.size(); ++i) {
      if (direct_[i]) device_.queue(out[i].data(), sources_[i].data(), sources_[i].size());
    }
  }
  void copy_chunk(int chunk, const ChunkJob& job) override {
    device_.log("copy " + std::to_string(id_));
    device_.queue_chunk(out[job.tensor].data() + job.offset, chunk, job.bytes);
  }
  void end() override { device_.log("end " + std::to_string(id_)); }
  std::string describe(std::size_t tensor) const override {
    return "host tensor " + std::to_string(tensor) + " of unit " + std::to_string(id_);
  }

  std::vector<Bytes> out;

 private:
  HostDevice& device_;
  int id_;
  std::vector<std::span<const std::uint8_t>> sources_;
  std::vector<bool> direct_;
};

StagingConfig config(int workers, int chunks, std::size_t chunk_bytes) {
  return {.workers = workers, .chunks = chunks, .chunk_bytes = chunk_bytes};
}

TEST(DiskStreamer, TensorMuchLargerThanThePoolRecyclesChunks) {
  using namespace std::chrono_literals;
  HostDevice device(20us);
  const Bytes source = random_bytes((1 << 20) + 13, 3);
  std::size_t jobs = 0;
  {
    DiskStreamer streamer(config(2, 3, 4096), device);
    auto transfer = std::make_shared<HostTransfer>(
        device, 0, std::vector<std::span<const std::uint8_t>>{source});
    jobs = streamer.submit(transfer, transfer->staged());
    streamer.wait_queued(*transfer);
    device.finish();
    EXPECT_TRUE(transfer->arrived());
    EXPECT_LE(streamer.peak_chunks_taken(), 3);
  }
  EXPECT_EQ(jobs, (source.size() + 4095) / 4096);
  EXPECT_EQ(device.allocations(), 1);
  EXPECT_EQ(device.reused_early(), 0) << "a chunk was written while its copy was pending";
  EXPECT_EQ(device.workers_started(), 2);
}

TEST(DiskStreamer, OddSizesEmptyTensorsAndDirectCopies) {
  using namespace std::chrono_literals;
  HostDevice device(5us);
  DiskStreamer streamer(config(3, 4, 64), device);
  std::vector<Bytes> sources;
  for (std::size_t n : {0, 1, 63, 64, 65, 127, 129, 1000, 0, 4097}) {
    sources.push_back(random_bytes(n, static_cast<std::uint32_t>(n) + 10));
  }
  std::vector<std::span<const std::uint8_t>> views(sources.begin(), sources.end());
  std::vector<bool> direct(views.size(), false);
  direct[3] = direct[5] = true;  // pinned sources: copied in begin(), never staged
  auto transfer = std::make_shared<HostTransfer>(device, 0, views, direct);
  const std::size_t jobs = streamer.submit(transfer, transfer->staged());
  EXPECT_EQ(jobs, 1u + 1 + 2 + 3 + 16 + 65);  // 1, 63, 65, 129, 1000, 4097 bytes
  streamer.wait_queued(*transfer);
  device.finish();
  EXPECT_TRUE(transfer->arrived());

  // Nothing to stage: the transfer is queued (begin, end) before submit returns.
  const Bytes empty;
  auto nothing = std::make_shared<HostTransfer>(
      device, 1, std::vector<std::span<const std::uint8_t>>{empty, sources[3]},
      std::vector<bool>{false, true});
  EXPECT_EQ(streamer.submit(nothing, nothing->staged()), 0u);
  ASSERT_GE(device.log().size(), 2u);
  EXPECT_EQ(device.log().back(), "end 1");
  streamer.wait_queued(*nothing);
  device.finish();
  EXPECT_TRUE(nothing->arrived());
}

TEST(DiskStreamer, UnitsInFlightQueueTheirCopiesInSubmissionOrder) {
  using namespace std::chrono_literals;
  HostDevice device(10us);
  DiskStreamer streamer(config(4, 5, 512), device);
  std::vector<std::vector<Bytes>> data;
  std::vector<std::shared_ptr<HostTransfer>> transfers;
  for (int u = 0; u < 6; ++u) {
    auto& sources = data.emplace_back();
    for (int t = 0; t < 3; ++t) {
      sources.push_back(random_bytes(static_cast<std::size_t>(1000 * (u + 1) + 77 * t),
                                     static_cast<std::uint32_t>(100 * u + t)));
    }
  }
  for (int u = 0; u < 6; ++u) {  // all in flight before the first wait
    std::vector<std::span<const std::uint8_t>> views(data[u].begin(), data[u].end());
    transfers.push_back(std::make_shared<HostTransfer>(device, u, views));
    streamer.submit(transfers.back(), transfers.back()->staged());
  }
  for (auto& transfer : transfers) streamer.wait_queued(*transfer);
  device.finish();
  for (const auto& transfer : transfers) EXPECT_TRUE(transfer->arrived());
  EXPECT_EQ(device.reused_early(), 0);
  // Every unit is begin, its copies, end, before the next unit's first line.
  int unit = 0;
  std::string expect = "begin";
  for (const std::string& line : device.log()) {
    const auto space = line.find(' ');
    const std::string kind = line.substr(0, space);
    const int id = std::stoi(line.substr(space + 1));
    ASSERT_EQ(id, unit) << "a later unit's copy was queued before unit " << unit << " ended";
    if (expect == "begin") {
      ASSERT_EQ(kind, "begin");
      expect = "copy";
    } else if (kind == "end") {
      ++unit;
      expect = "begin";
    } else {
      ASSERT_EQ(kind, "copy");
    }
  }
  EXPECT_EQ(unit, 6);
}

TEST(DiskStreamer, AFailedReadNamesTheTensorAndFileAndLaterUnitsStillFlow) {
  if (!kernel_reports_failed_reads()) GTEST_SKIP() << "kernel without MADV_POPULATE_READ";
  using namespace std::chrono_literals;
  const fs::path path = temp_path("streamer_truncated.dat");
  const Bytes bytes = random_bytes(16 * 4096, 4);
  write_file(path, bytes);
  const auto file = io::MappedFile::open(path, false);
  fs::resize_file(path, 4096);

  HostDevice device(5us);
  DiskStreamer streamer(config(2, 2, 4096), device);
  auto broken = std::make_shared<HostTransfer>(
      device, 0, std::vector<std::span<const std::uint8_t>>{file->bytes()});
  streamer.submit(broken, broken->staged());
  const Bytes good = random_bytes(5 * 4096 + 1, 5);
  auto next =
      std::make_shared<HostTransfer>(device, 1, std::vector<std::span<const std::uint8_t>>{good});
  streamer.submit(next, next->staged());
  try {
    streamer.wait_queued(*broken);
    ADD_FAILURE() << "the truncated file was read";
  } catch (const IoError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("host tensor 0 of unit 0"), std::string::npos) << message;
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  }
  EXPECT_THROW(streamer.wait_queued(*broken), IoError) << "the error stays with the unit";
  streamer.wait_queued(*next);
  device.finish();
  EXPECT_TRUE(next->arrived());
  fs::remove(path);
}

// ---- the CUDA engine --------------------------------------------------------------------------

bool have_gpu() { return find_backend(DeviceType::CUDA) != nullptr; }

// A read-only view of `file`'s bytes [offset, offset + numel * size) as a tensor, as the offload
// folder gives them.
Tensor mapped_view(const std::shared_ptr<const io::MappedFile>& file, std::size_t offset,
                   DType dtype, const Shape& shape) {
  const std::size_t nbytes = static_cast<std::size_t>(shape_numel(shape)) * dtype_size(dtype);
  Storage storage = Storage::wrap(const_cast<std::uint8_t*>(file->data()) + offset, nbytes,
                                  Device::cpu(), file, /*writable=*/false);
  return Tensor::from_storage(std::move(storage), dtype, shape);
}

void expect_same_bytes(const Tensor& expected, const Tensor& actual) {
  const Tensor a = actual.to(Device::cpu());
  ASSERT_EQ(expected.nbytes(), a.nbytes());
  EXPECT_EQ(std::memcmp(expected.data_ptr(), a.data_ptr(), a.nbytes()), 0)
      << "bytes differ for " << expected.describe();
}

TEST(CudaDiskStaging, UnitsInFlightArriveBitExactFromAMappedFile) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA backend";
  const fs::path path = temp_path("engine.dat");
  write_file(path, random_bytes(6 << 20, 6));
  const auto file = io::MappedFile::open(path, false);
  const PrefetchOptions options{
      .io_threads = 3, .staging_chunk_bytes = 64 << 10, .staging_chunks = 3};
  auto engine = make_copy_engine(0, options);
  ASSERT_NE(engine, nullptr);

  // Unit sources: a tensor of ~80 chunks, odd sizes below and above a chunk, an empty tensor,
  // and a pinned one (copied directly) among them.
  const Tensor pinned = Tensor::empty({333}, DType::Float32, Device::cpu(), MemoryKind::Pinned);
  pinned.copy_(strata::testing::random_tensor({333}, DType::Float32, 7));
  const std::vector<std::vector<Tensor>> units = {
      {mapped_view(file, 0, DType::BFloat16, {1280, 2049})},
      {mapped_view(file, 5 << 20, DType::UInt8, {3}),
       mapped_view(file, 5 << 20, DType::Float16, {0}), pinned,
       mapped_view(file, (5 << 20) + 64, DType::Float32, {129, 129})},
      {mapped_view(file, 1 << 20, DType::Float64, {8193})},
  };
  PrefetchStats stats;
  std::vector<std::vector<Tensor>> dsts;
  std::vector<std::unique_ptr<CopyEngine::Ticket>> tickets;
  for (const auto& srcs : units) {
    auto& d = dsts.emplace_back();
    for (const Tensor& s : srcs) d.push_back(Tensor::empty(s.shape(), s.dtype(), Device::cuda(0)));
    tickets.push_back(engine->start(d, srcs, stats));
  }
  std::int64_t read = 0;
  for (std::size_t u = 0; u < units.size(); ++u) {
    engine->wait(*tickets[u]);
    for (std::size_t i = 0; i < units[u].size(); ++i) {
      expect_same_bytes(units[u][i], dsts[u][i]);
      if (!units[u][i].is_pinned()) read += static_cast<std::int64_t>(units[u][i].nbytes());
    }
  }
  EXPECT_EQ(stats.bytes_read, read);
  EXPECT_EQ(stats.bytes_copied, read + static_cast<std::int64_t>(pinned.nbytes()));
  EXPECT_EQ(stats.staged_chunks, 81 + 1 + 2 + 2);
  for (auto& ticket : tickets) engine->retire(std::move(ticket));
  engine->synchronize();
  engine.reset();
  fs::remove(path);
}

TEST(CudaDiskStaging, ATruncatedFileFailsTheWaitAndTheEngineGoesOn) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA backend";
  if (!kernel_reports_failed_reads()) GTEST_SKIP() << "kernel without MADV_POPULATE_READ";
  const fs::path path = temp_path("engine_truncated.dat");
  write_file(path, random_bytes(1 << 20, 8));
  const auto file = io::MappedFile::open(path, false);
  const Tensor whole = mapped_view(file, 0, DType::Float32, {1 << 18});
  auto engine = make_copy_engine(0, {.io_threads = 2, .staging_chunk_bytes = 64 << 10});
  PrefetchStats stats;
  const Tensor before = whole.clone();
  fs::resize_file(path, 4096);
  auto broken =
      engine->start({Tensor::empty(whole.shape(), whole.dtype(), Device::cuda(0))}, {whole}, stats);
  const Tensor dst = Tensor::empty(before.shape(), before.dtype(), Device::cuda(0));
  auto fine = engine->start({dst}, {before}, stats);
  try {
    engine->wait(*broken);
    ADD_FAILURE() << "the truncated file was read";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
  engine->retire(std::move(broken));
  engine->wait(*fine);
  expect_same_bytes(before, dst);
  engine->retire(std::move(fine));
  engine->synchronize();
  fs::remove(path);
}

TEST(CudaDiskStaging, DiskOffloadWithTinyChunksMatchesTheResidentModel) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA backend";
  std::vector<std::shared_ptr<nn::Module>> layers;
  for (int i = 0; i < 3; ++i) {
    auto linear = std::make_shared<nn::Linear>(300, 300);
    linear->parameter_slot("weight")->set(
        strata::testing::random_tensor({300, 300}, DType::Float32, 20 + i));
    linear->parameter_slot("bias")->set(
        strata::testing::random_tensor({300}, DType::Float32, 30 + i));
    layers.push_back(linear);
  }
  nn::Sequential model(layers);
  const Tensor input = strata::testing::random_tensor({2, 300}, DType::Float32, 9);
  model.to(Device::cuda(0));
  const Tensor expected = model(input.to(Device::cuda(0))).tensor().to(Device::cpu());
  model.to(Device::cpu());

  const fs::path dir = temp_path("offload");
  fs::remove_all(dir);
  disk_offload(
      model,
      {.offload_dir = dir,
       .execution_device = Device::cuda(0),
       .prefetch = {
           .staging_slots = 3, .io_threads = 3, .staging_chunk_bytes = 4096, .staging_chunks = 4}});
  for (int i = 0; i < 3; ++i) expect_same_bytes(expected, model(input).tensor());
  const auto scheduler = find_scheduler(model);
  ASSERT_NE(scheduler, nullptr);
  EXPECT_GT(scheduler->stats().staged_chunks, 4) << "the pool was recycled";
  EXPECT_EQ(scheduler->stats().bytes_read, scheduler->stats().bytes_copied);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace strata::placement::detail
