#include <gtest/gtest.h>

#include <numeric>

#include "strata/core/logging.h"
#include "strata/core/tensor.h"

namespace strata {
namespace {

// 0, 1, 2, ... as float32 in `shape`.
Tensor iota(const Shape& shape, DType dtype = DType::Float32) {
  std::vector<double> v(static_cast<std::size_t>(shape_numel(shape)));
  std::iota(v.begin(), v.end(), 0.0);
  return Tensor::from_doubles(v, shape, dtype);
}

// The value at a flat row-major position computed independently from shape and strides.
std::vector<double> naive_values(const Tensor& t) {
  std::vector<double> out;
  std::vector<std::int64_t> idx(t.shape().size(), 0);
  for (std::int64_t n = 0; n < t.numel(); ++n) {
    out.push_back(t.value_at(std::span<const std::int64_t>(idx.data(), idx.size())));
    for (std::size_t d = idx.size(); d-- > 0;) {
      if (++idx[d] < t.shape()[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

TEST(Tensor, FactoriesProduceContiguousCpuTensors) {
  const Tensor z = Tensor::zeros({2, 3}, DType::BFloat16);
  EXPECT_TRUE(z.defined());
  EXPECT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.strides(), (Shape{3, 1}));
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.nbytes(), 12u);
  EXPECT_TRUE(z.is_contiguous());
  EXPECT_EQ(z.to_doubles(), std::vector<double>(6, 0.0));
  EXPECT_EQ(Tensor::ones({4}, DType::Int32).to_vector<std::int32_t>(),
            std::vector<std::int32_t>(4, 1));
  EXPECT_EQ(Tensor::full({2}, 2.5, DType::Float16).to_doubles(), (std::vector<double>{2.5, 2.5}));
  EXPECT_EQ(Tensor::arange(5).to_vector<std::int64_t>(),
            (std::vector<std::int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2}).at<float>({1, 0}), 3.0f);
  EXPECT_FALSE(Tensor().defined());
  EXPECT_EQ(Tensor().describe(), "Tensor(undefined)");
}

TEST(Tensor, DataIsAligned) {
  for (std::int64_t n : {1, 3, 17, 4097}) {
    const Tensor t = Tensor::empty({n}, DType::UInt8);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.data_ptr()) % kStorageAlignment, 0u);
  }
}

TEST(Tensor, ScalarTensors) {
  const Tensor s = Tensor::full({}, 7.0, DType::Float32);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(s.item(), 7.0);
  EXPECT_EQ(s.unsqueeze(0).shape(), (Shape{1}));
  EXPECT_EQ(s.reshape({1, 1}).item(), 7.0);
}

TEST(Tensor, FullConvertsTheValueLikePyTorch) {
  // 0.1 as a double rounds (through float) to bf16 0x3DCD = 0.10009765625.
  EXPECT_EQ(Tensor::full({1}, 0.1, DType::BFloat16).item(), 0.10009765625);
  EXPECT_EQ(Tensor::full({1}, -3.7, DType::Int32).item(), -3.0);  // truncation toward zero
  EXPECT_EQ(Tensor::full({1}, 0.5, DType::Bool).item(), 1.0);
}

TEST(Tensor, ElementAccessChecksTypeAndBounds) {
  const Tensor t = iota({2, 3});
  EXPECT_EQ(t.at<float>({1, 2}), 5.0f);
  EXPECT_EQ(t.at<float>({-1, -1}), 5.0f);
  EXPECT_THROW(t.at<double>({0, 0}), InvalidArgument);
  EXPECT_THROW(t.at<float>({2, 0}), InvalidArgument);
  EXPECT_THROW(t.at<float>({0}), InvalidArgument);
  t.set<float>({0, 1}, 42.0f);
  EXPECT_EQ(t.value_at({0, 1}), 42.0);
  EXPECT_THROW(t.item(), InvalidArgument);
}

TEST(Tensor, ViewSharesStorageAndInfersMinusOne) {
  const Tensor t = iota({2, 3, 4});
  const Tensor v = t.view({6, -1});
  EXPECT_EQ(v.shape(), (Shape{6, 4}));
  EXPECT_TRUE(v.storage().is_same(t.storage()));
  v.set<float>({5, 3}, -1.0f);
  EXPECT_EQ(t.at<float>({1, 2, 3}), -1.0f);
  EXPECT_THROW(t.view({5, -1}), InvalidArgument);
  EXPECT_THROW(t.view({-1, -1}), InvalidArgument);
}

TEST(Tensor, ViewOfNonContiguousFollowsPyTorchRules) {
  const Tensor t = iota({4, 6}).narrow(1, 0, 4);  // strides [6, 1], shape [4, 4]
  // Splitting a dimension is always possible; merging the two is not.
  const Tensor split = t.view({4, 2, 2});
  EXPECT_EQ(split.strides(), (Shape{6, 2, 1}));
  EXPECT_EQ(naive_values(split), naive_values(t));
  EXPECT_THROW(t.view({16}), InvalidArgument);
  // reshape copies when a view is impossible.
  const Tensor flat = t.reshape({16});
  EXPECT_TRUE(flat.is_contiguous());
  EXPECT_FALSE(flat.storage().is_same(t.storage()));
  EXPECT_EQ(naive_values(flat), naive_values(t));
  // A transposed tensor can be viewed only where the layout allows.
  const Tensor tt = iota({2, 3}).transpose(0, 1);
  EXPECT_THROW(tt.view({6}), InvalidArgument);
  EXPECT_EQ(tt.view({3, 2, 1}).shape(), (Shape{3, 2, 1}));
}

TEST(Tensor, NarrowSelectTransposePermute) {
  const Tensor t = iota({2, 3, 4});
  const Tensor n = t.narrow(2, 1, 2);
  EXPECT_EQ(n.shape(), (Shape{2, 3, 2}));
  EXPECT_FALSE(n.is_contiguous());
  EXPECT_EQ(n.value_at({1, 2, 1}), 1 * 12 + 2 * 4 + 2);
  EXPECT_EQ(t.narrow(-1, -2, 2).value_at({0, 0, 0}), 2.0);
  EXPECT_THROW(t.narrow(0, 1, 2), InvalidArgument);

  const Tensor s = t.select(1, 2);
  EXPECT_EQ(s.shape(), (Shape{2, 4}));
  EXPECT_EQ(s.value_at({1, 3}), 12 + 8 + 3);
  EXPECT_EQ(t.select(-1, -1).value_at({0, 0}), 3.0);
  EXPECT_THROW(t.select(0, 2), InvalidArgument);

  const Tensor tr = t.transpose(0, 2);
  EXPECT_EQ(tr.shape(), (Shape{4, 3, 2}));
  EXPECT_EQ(tr.value_at({3, 1, 1}), t.value_at({1, 1, 3}));

  const Tensor p = t.permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.value_at({3, 1, 2}), t.value_at({1, 2, 3}));
  EXPECT_THROW(t.permute({0, 0, 1}), InvalidArgument);
  EXPECT_THROW(t.permute({0, 1}), InvalidArgument);
  EXPECT_THROW(t.transpose(0, 3), InvalidArgument);
}

TEST(Tensor, UnsqueezeSqueezeExpand) {
  const Tensor t = iota({3});
  EXPECT_EQ(t.unsqueeze(0).shape(), (Shape{1, 3}));
  EXPECT_EQ(t.unsqueeze(-1).shape(), (Shape{3, 1}));
  EXPECT_EQ(t.unsqueeze(0).squeeze(0).shape(), (Shape{3}));
  EXPECT_EQ(t.squeeze(0).shape(), (Shape{3}));  // not size 1: unchanged
  const Tensor e = t.unsqueeze(0).expand({4, -1});
  EXPECT_EQ(e.shape(), (Shape{4, 3}));
  EXPECT_EQ(e.strides(), (Shape{0, 1}));
  EXPECT_EQ(e.value_at({3, 2}), 2.0);
  EXPECT_EQ(t.expand({2, 2, 3}).shape(), (Shape{2, 2, 3}));
  EXPECT_THROW(t.expand({4}), InvalidArgument);
  EXPECT_THROW(iota({2, 3}).expand({3}), InvalidArgument);
}

TEST(Tensor, ContiguousCopiesOnlyWhenNeeded) {
  const Tensor t = iota({3, 5});
  EXPECT_TRUE(t.contiguous().storage().is_same(t.storage()));
  const Tensor tr = t.transpose(0, 1);
  const Tensor c = tr.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_FALSE(c.storage().is_same(t.storage()));
  EXPECT_EQ(naive_values(c), naive_values(tr));
}

TEST(Tensor, CopyConvertsBroadcastsAndHandlesStrides) {
  for (DType dst_dtype : {DType::Float32, DType::BFloat16, DType::Float64, DType::Int64}) {
    const Tensor src = iota({3, 1, 4});
    const Tensor dst = Tensor::zeros({3, 2, 4}, dst_dtype);
    dst.copy_(src);
    for (std::int64_t i = 0; i < 3; ++i) {
      for (std::int64_t j = 0; j < 2; ++j) {
        for (std::int64_t k = 0; k < 4; ++k) {
          ASSERT_EQ(dst.value_at({i, j, k}), static_cast<double>(i * 4 + k));
        }
      }
    }
  }
  // Into a strided destination.
  const Tensor big = Tensor::zeros({4, 6}, DType::Float32);
  big.narrow(1, 1, 3).transpose(0, 1).copy_(iota({3, 4}));
  // big[i][1 + j] = src[j][i] = j * 4 + i; column 0 and columns 4..5 stay zero.
  for (std::int64_t i = 0; i < 4; ++i) {
    for (std::int64_t c = 0; c < 6; ++c) {
      const double expected = (c >= 1 && c <= 3) ? (c - 1) * 4.0 + i : 0.0;
      ASSERT_EQ(big.value_at({i, c}), expected) << i << "," << c;
    }
  }
  EXPECT_THROW(Tensor::zeros({2, 3}).copy_(iota({3, 2})), InvalidArgument);
}

TEST(Tensor, CopyBetweenOverlappingViewsReadsBeforeWriting) {
  const Tensor t = iota({6});
  t.narrow(0, 1, 5).copy_(t.narrow(0, 0, 5));
  EXPECT_EQ(t.to_doubles(), (std::vector<double>{0, 0, 1, 2, 3, 4}));
}

TEST(Tensor, LargeCopiesUseTheThreadPoolCorrectly) {
  const Tensor src = iota({257, 1031});
  const Tensor dst = src.transpose(0, 1).contiguous();
  EXPECT_EQ(dst.shape(), (Shape{1031, 257}));
  EXPECT_EQ(dst.value_at({1030, 256}), 256.0 * 1031 + 1030);
  EXPECT_EQ(dst.value_at({5, 7}), 7.0 * 1031 + 5);
}

TEST(Tensor, ToReturnsSelfWhenNothingChanges) {
  const Tensor t = iota({4});
  EXPECT_TRUE(t.to(DType::Float32).storage().is_same(t.storage()));
  EXPECT_TRUE(t.to(Device::cpu()).storage().is_same(t.storage()));
  const Tensor h = t.to(DType::Float16);
  EXPECT_EQ(h.dtype(), DType::Float16);
  EXPECT_EQ(h.to_doubles(), t.to_doubles());
}

TEST(Tensor, MetaTensorsHaveShapeButNoBytes) {
  const Tensor m = Tensor::empty({1024, 1024, 64}, DType::Float32, Device::meta());
  EXPECT_TRUE(m.is_meta());
  EXPECT_FALSE(m.storage().defined());
  EXPECT_EQ(m.nbytes(), 1024u * 1024 * 64 * 4);  // what it would take, not what it holds
  EXPECT_THROW(m.data_ptr(), InvalidArgument);
  EXPECT_THROW(m.to(Device::cpu()), InvalidArgument);
  EXPECT_THROW(Tensor::zeros({2}).copy_(Tensor::empty({2}, DType::Float32, Device::meta())),
               InvalidArgument);
  // Views and dtype changes of meta tensors stay meta.
  EXPECT_EQ(m.view({-1, 64}).shape(), (Shape{1024 * 1024, 64}));
  EXPECT_TRUE(m.to(DType::BFloat16).is_meta());
  EXPECT_TRUE(iota({3}).to(Device::meta()).is_meta());
  try {
    m.to(Device::cpu());
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("meta"), std::string::npos);
  }
}

TEST(Tensor, PinnedRequestFallsBackToPageableWithoutAGpu) {
  std::vector<std::string> warnings;
  LogSink previous = set_log_sink([&](LogLevel, const std::string& m) { warnings.push_back(m); });
  const Tensor t = Tensor::empty({16}, DType::Float32, Device::cpu(), MemoryKind::Pinned);
  set_log_sink(previous);
  EXPECT_TRUE(t.is_cpu());
  EXPECT_EQ(t.nbytes(), 64u);
  EXPECT_THROW(Tensor::empty({1}, DType::Float32, Device::meta(), MemoryKind::Pinned).data_ptr(),
               InvalidArgument);
}

TEST(Tensor, WrappedStorageKeepsItsOwnerAlive) {
  auto buffer = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3, 4});
  std::weak_ptr<std::vector<float>> watch = buffer;
  Tensor t;
  {
    Storage s = Storage::wrap(buffer->data(), 16, Device::cpu(), buffer, /*writable=*/false);
    buffer.reset();
    t = Tensor::from_storage(s, DType::Float32, {2, 2});
  }
  EXPECT_FALSE(watch.expired());
  EXPECT_FALSE(t.storage().owns_memory());
  EXPECT_EQ(t.value_at({1, 1}), 4.0);
  // Read-only mappings refuse writes; clone() gives a writable copy.
  EXPECT_THROW(t.copy_(Tensor::zeros({2, 2})), InvalidArgument);
  EXPECT_THROW(t.set<float>({0, 0}, 1.0f), InvalidArgument);
  const Tensor c = t.clone();
  c.fill_(0.0);
  EXPECT_EQ(c.to_doubles(), std::vector<double>(4, 0.0));
  t = Tensor();
  EXPECT_TRUE(watch.expired());
}

TEST(Tensor, StorageTooSmallForTheViewIsRejected) {
  auto buffer = std::make_shared<std::vector<float>>(4);
  Storage s = Storage::wrap(buffer->data(), 16, Device::cpu(), buffer);
  EXPECT_THROW(Tensor::from_storage(s, DType::Float32, {5}), InvalidArgument);
  EXPECT_THROW(Tensor::from_storage(s, DType::Float32, {4}, 1), InvalidArgument);
  EXPECT_NO_THROW(Tensor::from_storage(s, DType::Float32, {3}, 1));
}

TEST(Tensor, NegativeShapesAreRejected) {
  EXPECT_THROW(Tensor::empty({2, -1}, DType::Float32), InvalidArgument);
}

TEST(Tensor, ZeroSizedTensors) {
  const Tensor t = Tensor::zeros({0, 3}, DType::Float32);
  EXPECT_EQ(t.numel(), 0);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.reshape({3, 0}).shape(), (Shape{3, 0}));
  EXPECT_EQ(t.clone().numel(), 0);
  EXPECT_TRUE(t.to_doubles().empty());
}

TEST(Tensor, DescribeNamesShapeDtypeAndDevice) {
  EXPECT_EQ(Tensor::zeros({2, 3}, DType::BFloat16).describe(), "Tensor[2, 3] bfloat16 cpu");
  EXPECT_EQ(Tensor::empty({4}, DType::Int64, Device::meta()).describe(), "Tensor[4] int64 meta");
}

}  // namespace
}  // namespace strata
