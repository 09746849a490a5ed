// The CUDA runtime layer: devices, the caching allocator, pinned memory, streams, events and
// copies. Every test skips itself when no GPU is present.

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "strata/core/backend.h"
#include "strata/core/error.h"
#include "strata/core/tensor.h"
#include "strata/cuda/device.h"
#include "strata/cuda/memory.h"
#include "strata/cuda/stream.h"

namespace strata {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine"

// Host tensor of n float32 values i * scale + offset (never all zero: hides unwritten output).
Tensor host_iota(std::int64_t n, float scale = 1.0f, float offset = 0.5f,
                 MemoryKind memory = MemoryKind::Pageable) {
  Tensor t = Tensor::empty({n}, DType::Float32, Device::cpu(), memory);
  auto* p = t.data<float>();
  for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(i) * scale + offset;
  return t;
}

void expect_same_floats(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.numel(), b.numel());
  ASSERT_EQ(std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()), 0);
}

TEST(CudaDevice, CountAndProperties) {
  SKIP_WITHOUT_GPU();
  const int count = cuda::device_count();
  EXPECT_EQ(find_backend(DeviceType::CUDA)->device_count(), count);
  const cuda::DeviceProperties p = cuda::device_properties(0);
  EXPECT_FALSE(p.name.empty());
  EXPECT_GE(p.major, 7);
  EXPECT_GT(p.total_memory, std::size_t{1} << 30);
  EXPECT_GT(p.multiprocessor_count, 0);
  EXPECT_THROW(cuda::device_properties(count), DeviceError);
  EXPECT_THROW(cuda::set_device(-2), DeviceError);
  const cuda::DeviceMemoryInfo info = cuda::device_memory_info(0);
  EXPECT_GT(info.free, 0u);
  EXPECT_LE(info.free, info.total);
}

TEST(CudaDevice, GuardRestoresTheDevice) {
  SKIP_WITHOUT_GPU();
  const int before = cuda::current_device();
  {
    cuda::DeviceGuard guard(cuda::device_count() - 1);
    EXPECT_EQ(cuda::current_device(), cuda::device_count() - 1);
  }
  EXPECT_EQ(cuda::current_device(), before);
  EXPECT_FALSE(cuda::peer_access_enabled(0, 0));  // a device is not its own peer
}

TEST(CudaAllocator, ReusesFreedBlocksAndCountsBytes) {
  SKIP_WITHOUT_GPU();
  cuda::empty_cache(0);
  const cuda::MemoryStats start = cuda::memory_stats(0);
  void* first = nullptr;
  {
    Tensor t = Tensor::empty({1000, 1000}, DType::Float32, Device::cuda(0));
    first = t.data_ptr();
    const cuda::MemoryStats during = cuda::memory_stats(0);
    EXPECT_GE(during.allocated, start.allocated + 4000000);
    EXPECT_GE(during.reserved, during.allocated);
    EXPECT_GE(during.peak_allocated, during.allocated);
  }
  EXPECT_EQ(cuda::memory_stats(0).allocated, start.allocated);
  const std::uint64_t mallocs = cuda::memory_stats(0).device_mallocs;
  Tensor again = Tensor::empty({1000, 1000}, DType::Float32, Device::cuda(0));
  EXPECT_EQ(again.data_ptr(), first);  // same stream, same size: the cached block comes back
  EXPECT_EQ(cuda::memory_stats(0).device_mallocs, mallocs);
  again = Tensor();
  cuda::empty_cache(0);
  EXPECT_EQ(cuda::memory_stats(0).reserved, start.reserved);
  cuda::reset_peak_memory_stats(0);
  EXPECT_EQ(cuda::memory_stats(0).peak_allocated, cuda::memory_stats(0).allocated);
}

TEST(CudaAllocator, SmallBlocksShareASegment) {
  SKIP_WITHOUT_GPU();
  cuda::empty_cache(0);
  const std::uint64_t mallocs = cuda::memory_stats(0).device_mallocs;
  std::vector<Tensor> small;
  for (int i = 0; i < 16; ++i)
    small.push_back(Tensor::empty({1024}, DType::Float32, Device::cuda(0)));
  EXPECT_EQ(cuda::memory_stats(0).device_mallocs, mallocs + 1);  // one 2 MiB segment
  for (std::size_t i = 1; i < small.size(); ++i) {
    EXPECT_NE(small[i].data_ptr(), small[i - 1].data_ptr());
  }
}

TEST(CudaAllocator, OutOfMemoryNamesDeviceSizesAndAdvice) {
  SKIP_WITHOUT_GPU();
  const std::int64_t huge = std::int64_t{1} << 50;  // 1 PiB of bytes
  try {
    Tensor t = Tensor::empty({huge}, DType::UInt8, Device::cuda(0));
    FAIL() << "allocating 1 PiB succeeded";
  } catch (const OutOfMemory& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("cuda:0"), std::string::npos) << message;
    EXPECT_NE(message.find("1048576.00 GiB"), std::string::npos) << message;
    EXPECT_NE(message.find("free"), std::string::npos) << message;
    EXPECT_NE(message.find("reserved"), std::string::npos) << message;
    EXPECT_NE(message.find("max_memory"), std::string::npos) << message;
  }
  // The allocator still works afterwards.
  Tensor ok = Tensor::empty({16}, DType::Float32, Device::cuda(0));
  EXPECT_NE(ok.data_ptr(), nullptr);
}

TEST(CudaAllocator, RecordStreamDelaysReuseUntilTheStreamIsDone) {
  SKIP_WITHOUT_GPU();
  cuda::Stream side(0);
  Tensor host = host_iota(1 << 20, 1.0f, 0.5f, MemoryKind::Pinned);
  void* ptr = nullptr;
  {
    Tensor t = Tensor::empty({1 << 20}, DType::Float32, Device::cuda(0));
    ptr = t.data_ptr();
    cuda::copy_async(t, host, side);  // records `side` as a user of t's block
  }
  // Freed while `side` may still write it: a new tensor must not get the block before then.
  side.synchronize();
  Tensor next = Tensor::empty({1 << 20}, DType::Float32, Device::cuda(0));
  // After the sync the pending event has completed, so reuse is allowed again.
  EXPECT_EQ(next.data_ptr(), ptr);
}

TEST(CudaPinned, ExactSizesInSharedArenas) {
  SKIP_WITHOUT_GPU();
  const cuda::PinnedMemoryStats before = cuda::pinned_memory_stats();
  Tensor a = Tensor::empty({1000}, DType::UInt8, Device::cpu(), MemoryKind::Pinned);
  Tensor b = Tensor::empty({3000}, DType::UInt8, Device::cpu(), MemoryKind::Pinned);
  EXPECT_TRUE(a.is_pinned());
  EXPECT_TRUE(b.is_pinned());
  const cuda::PinnedMemoryStats during = cuda::pinned_memory_stats();
  EXPECT_EQ(during.allocated, before.allocated + 4000);  // exactly what was asked
  EXPECT_LE(during.arenas, before.arenas + 1);           // both fit one arena
  // 64-byte alignment, and b starts right after a's 1024 rounded bytes when the arena was fresh.
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.data_ptr()) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.data_ptr()) % 64, 0u);
  a = Tensor();
  b = Tensor();
  EXPECT_EQ(cuda::pinned_memory_stats().allocated, before.allocated);
  cuda::empty_pinned_cache();
  EXPECT_LE(cuda::pinned_memory_stats().reserved, before.reserved);
}

TEST(CudaCopy, RoundTripsThroughTheGpu) {
  SKIP_WITHOUT_GPU();
  for (MemoryKind memory : {MemoryKind::Pageable, MemoryKind::Pinned}) {
    Tensor host = host_iota(3 << 20, 0.25f, 1.5f, memory);
    Tensor gpu = host.to(Device::cuda(0));
    EXPECT_TRUE(gpu.is_cuda());
    Tensor copy = gpu.clone();  // device-to-device
    Tensor back = copy.to(Device::cpu());
    expect_same_floats(back, host);
  }
}

TEST(CudaCopy, AsyncCopiesOrderedWithEvents) {
  SKIP_WITHOUT_GPU();
  const std::int64_t n = 1 << 22;
  Tensor src = host_iota(n, 2.0f, 0.5f, MemoryKind::Pinned);
  Tensor dst = Tensor::empty({n}, DType::Float32, Device::cpu(), MemoryKind::Pinned);
  dst.fill_(-1.0);
  Tensor gpu = Tensor::empty({n}, DType::Float32, Device::cuda(0));
  cuda::Stream upload(0), download(0);
  cuda::Event uploaded(0, /*enable_timing=*/true), done(0, true);
  cuda::copy_async(gpu, src, upload);
  uploaded.record(upload);
  download.wait(uploaded);  // no host blocking, no device-wide sync
  cuda::copy_async(dst, gpu, download);
  done.record(download);
  done.synchronize();
  EXPECT_TRUE(done.query());
  EXPECT_TRUE(download.query());
  expect_same_floats(dst, src);
  EXPECT_GE(uploaded.elapsed_ms(done), 0.0f);
}

TEST(CudaCopy, PeerCopiesBetweenGpus) {
  SKIP_WITHOUT_GPU();
  if (cuda::device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  Tensor host = host_iota(1 << 20);
  Tensor on0 = host.to(Device::cuda(0));
  Tensor on1 = on0.to(Device::cuda(1));
  EXPECT_EQ(on1.device(), Device::cuda(1));
  expect_same_floats(on1.to(Device::cpu()), host);
  cuda::Stream stream(1);
  Tensor again = Tensor::empty({1 << 20}, DType::Float32, Device::cuda(1));
  cuda::copy_async(again, on0, stream);
  stream.synchronize();
  expect_same_floats(again.to(Device::cpu()), host);
}

TEST(CudaCopy, RejectsMismatchedOperandsWithClearErrors) {
  SKIP_WITHOUT_GPU();
  cuda::Stream stream(0);
  Tensor gpu = Tensor::empty({4, 4}, DType::Float32, Device::cuda(0));
  Tensor host16 = Tensor::empty({4, 4}, DType::Float16);
  EXPECT_THROW(cuda::copy_async(gpu, host16, stream), InvalidArgument);
  Tensor host = Tensor::empty({4, 4}, DType::Float32);
  EXPECT_THROW(cuda::copy_async(host, host, stream), InvalidArgument);
  EXPECT_THROW(cuda::copy_async(gpu.transpose(0, 1), host, stream), InvalidArgument);
}

TEST(CudaCopy, StridedAndConvertingCopiesOnTheDevice) {
  SKIP_WITHOUT_GPU();
  Tensor host = host_iota(6 * 5, 0.5f, -3.0f).view({6, 5});
  Tensor gpu = host.to(Device::cuda(0));
  // Transposed view made contiguous on the GPU, then cast to bf16 and back on the GPU.
  Tensor t = gpu.transpose(0, 1).contiguous();
  Tensor expected = host.transpose(0, 1).contiguous();
  expect_same_floats(t.to(Device::cpu()), expected);
  Tensor bf = t.to(DType::BFloat16);
  EXPECT_TRUE(bf.is_cuda());
  Tensor back = bf.to(Device::cpu());
  Tensor expected_bf = expected.to(DType::BFloat16);
  ASSERT_EQ(std::memcmp(back.data_ptr(), expected_bf.data_ptr(), back.nbytes()), 0);
  // Broadcast fill through a stride-0 source.
  Tensor filled = Tensor::empty({3, 7}, DType::Float32, Device::cuda(0));
  filled.fill_(2.5);
  Tensor filled_host = filled.to(Device::cpu());
  for (std::int64_t i = 0; i < filled_host.numel(); ++i)
    EXPECT_EQ(filled_host.data<float>()[i], 2.5f);
}

TEST(CudaStream, MovesAndComputeStreamIsShared) {
  SKIP_WITHOUT_GPU();
  cuda::Stream a(0);
  void* handle = a.native_handle();
  cuda::Stream b(std::move(a));
  EXPECT_EQ(b.native_handle(), handle);
  EXPECT_EQ(a.native_handle(), nullptr);
  EXPECT_EQ(&cuda::Stream::compute(0), &cuda::Stream::compute(0));
  EXPECT_THROW(cuda::Stream::compute(cuda::device_count()), DeviceError);
  b.synchronize();
  EXPECT_TRUE(b.query());
}

}  // namespace
}  // namespace strata
