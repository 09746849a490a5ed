// PrefetchScheduler::stream_to_device: copies on the scheduler's copy stream for a caller that
// computes offloaded weights itself (a mixture-of-experts prefill). The values arrive once the
// compute stream has waited (ready()); a cpu execution device has no copy stream.

#include <gtest/gtest.h>

#include <cstring>

#include "strata/placement/prefetch.h"
#include "support/op_testing.h"

namespace strata::placement {
namespace {

TEST(StreamToDevice, NoCopyStreamOnACpuExecutionDevice) {
  PrefetchScheduler scheduler(Device::cpu());
  EXPECT_EQ(scheduler.stream_to_device({Tensor::zeros({4}, DType::Float32)}), nullptr);
}

// Pinned and pageable sources (the latter through the staging workers, as a disk unit's), and
// a view of a larger tensor; several transfers in flight, used in reverse order.
TEST(StreamToDevice, TheComputeStreamSeesTheValuesAfterReady) {
  if (!testing::device_available(Device::cuda(0))) GTEST_SKIP() << "no CUDA device";
  PrefetchScheduler scheduler(Device::cuda(0));
  const Tensor pageable = testing::random_tensor({300, 70}, DType::BFloat16, 1);
  const Tensor pinned = Tensor::empty({1000}, DType::Float32, Device::cpu(), MemoryKind::Pinned);
  pinned.copy_(testing::random_tensor({1000}, DType::Float32, 2));
  const Tensor whole = testing::random_tensor({64, 64}, DType::Float16, 3);
  const std::vector<Tensor> sources = {pageable, pinned, whole.narrow(0, 8, 16)};
  std::vector<std::unique_ptr<PrefetchScheduler::StreamedTensors>> transfers;
  for (int i = 0; i < 3; ++i) transfers.push_back(scheduler.stream_to_device(sources));
  const std::int64_t copied = scheduler.stats().bytes_copied;
  EXPECT_GE(copied, 3 * static_cast<std::int64_t>(pageable.nbytes() + pinned.nbytes() +
                                                  whole.narrow(0, 8, 16).nbytes()));
  for (int i = 2; i >= 0; --i) {
    ASSERT_NE(transfers[i], nullptr);
    transfers[i]->ready();
    const std::vector<Tensor>& on_gpu = transfers[i]->tensors();
    ASSERT_EQ(on_gpu.size(), sources.size());
    for (std::size_t t = 0; t < sources.size(); ++t) {
      EXPECT_TRUE(on_gpu[t].is_cuda());
      // A compute-stream op reads it: a copy back on the compute stream.
      const Tensor back = on_gpu[t].to(Device::cpu());
      const Tensor expected = sources[t].contiguous();
      ASSERT_EQ(back.shape(), expected.shape());
      EXPECT_EQ(std::memcmp(back.data_ptr(), expected.data_ptr(), expected.nbytes()), 0)
          << "transfer " << i << ", tensor " << t;
    }
  }
  transfers.clear();  // retired: the memory goes back after the compute stream passes
  scheduler.synchronize();
}

TEST(StreamToDevice, RefusesDeviceSources) {
  if (!testing::device_available(Device::cuda(0))) GTEST_SKIP() << "no CUDA device";
  PrefetchScheduler scheduler(Device::cuda(0));
  EXPECT_THROW(scheduler.stream_to_device({Tensor::zeros({4}, DType::Float32, Device::cuda(0))}),
               InvalidArgument);
}

}  // namespace
}  // namespace strata::placement
