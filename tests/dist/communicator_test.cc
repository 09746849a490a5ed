// The communicators against naive sums. Run alone, these tests use the single-process
// communicator; CTest also runs the binary under `mpirun -np 2` and `-np 4` (tests/CMakeLists.txt),
// where every rank runs every test against MPI_COMM_WORLD.

#include <gtest/gtest.h>

#include <vector>

#include "dist/dist_testing.h"
#include "strata/core/error.h"
#include "strata/core/float_types.h"

namespace strata::testing {
namespace {

// The value rank r holds at index i: distinct per rank and index, exact in float32.
float value_of(int r, std::int64_t i) {
  return static_cast<float>(r * 1000) + 0.25f * static_cast<float>(i) - 3.0f;
}

std::vector<float> rank_values(int r, std::int64_t n) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = value_of(r, i);
  return v;
}

TEST(Communicator, AllReduceSumFloat32EqualsTheNaiveSum) {
  auto& comm = test_communicator();
  const std::int64_t n = 1000;
  Tensor t = Tensor::from_vector(rank_values(comm.rank(), n), {10, 100});
  comm.all_reduce_sum(t);
  const std::vector<float> got = t.to_vector<float>();
  for (std::int64_t i = 0; i < n; ++i) {
    float expected = 0.0f;
    for (int r = 0; r < comm.size(); ++r) expected += value_of(r, i);
    ASSERT_EQ(got[static_cast<std::size_t>(i)], expected) << "index " << i;
  }
}

TEST(Communicator, AllReduceSumHalfTypesRoundsTheFloat32SumOnce) {
  auto& comm = test_communicator();
  for (DType dtype : {DType::BFloat16, DType::Float16}) {
    const std::int64_t n = 257;
    // Values with more bits than the type holds: each rank's value is rounded on the cast, the
    // sum of the rounded values in float32 is rounded once more.
    std::vector<float> mine(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      mine[static_cast<std::size_t>(i)] = 0.1f * static_cast<float>(i) + 0.37f * comm.rank();
    }
    Tensor t = Tensor::from_vector(mine, {n}).to(Device::cpu(), dtype);
    comm.all_reduce_sum(t);
    const std::vector<float> got = t.to(Device::cpu(), DType::Float32).to_vector<float>();
    for (std::int64_t i = 0; i < n; ++i) {
      float sum = 0.0f;
      for (int r = 0; r < comm.size(); ++r) {
        const float v = 0.1f * static_cast<float>(i) + 0.37f * r;
        sum += dtype == DType::BFloat16 ? static_cast<float>(BFloat16(v))
                                        : static_cast<float>(Half(v));
      }
      const float expected = dtype == DType::BFloat16 ? static_cast<float>(BFloat16(sum))
                                                      : static_cast<float>(Half(sum));
      ASSERT_EQ(got[static_cast<std::size_t>(i)], expected) << dtype << " index " << i;
    }
  }
}

TEST(Communicator, AllGatherStacksEveryRankInRankOrder) {
  auto& comm = test_communicator();
  const Tensor mine = Tensor::from_vector(rank_values(comm.rank(), 6), {2, 3});
  const Tensor all = comm.all_gather(mine);
  ASSERT_EQ(all.shape(), (Shape{comm.size(), 2, 3}));
  const std::vector<float> got = all.to_vector<float>();
  for (int r = 0; r < comm.size(); ++r) {
    for (std::int64_t i = 0; i < 6; ++i) {
      ASSERT_EQ(got[static_cast<std::size_t>(r * 6 + i)], value_of(r, i)) << r << " " << i;
    }
  }
  // Integer tensors travel as bytes.
  const Tensor ids = comm.all_gather(Tensor::from_vector(std::vector<std::int64_t>{comm.rank()}));
  EXPECT_EQ(ids.to_vector<std::int64_t>().back(), comm.size() - 1);
}

TEST(Communicator, SendRecvAroundARing) {
  auto& comm = test_communicator();
  if (comm.size() < 2) GTEST_SKIP() << "point to point needs two ranks (run under mpirun)";
  const int next = (comm.rank() + 1) % comm.size();
  const int prev = (comm.rank() + comm.size() - 1) % comm.size();
  const Tensor mine = Tensor::from_vector(rank_values(comm.rank(), 5));
  Tensor got = Tensor::empty({5});
  // Even ranks send first, odd ranks receive first: no cycle of blocked senders.
  if (comm.rank() % 2 == 0) {
    comm.send(mine, next);
    comm.recv(got, prev);
  } else {
    comm.recv(got, prev);
    comm.send(mine, next);
  }
  EXPECT_EQ(got.to_vector<float>(), rank_values(prev, 5));
}

TEST(Communicator, BroadcastCopiesTheRootsTensor) {
  auto& comm = test_communicator();
  const int root = comm.size() - 1;
  Tensor t = Tensor::from_vector(rank_values(comm.rank(), 4));
  comm.broadcast(t, root);
  EXPECT_EQ(t.to_vector<float>(), rank_values(root, 4));
  comm.barrier();
}

TEST(Communicator, BadArgumentsAreTypedErrors) {
  auto& comm = test_communicator();
  Tensor ints = Tensor::zeros({4}, DType::Int32);
  EXPECT_THROW(comm.all_reduce_sum(ints), NotSupported);
  Tensor strided = Tensor::zeros({4, 4}).transpose(0, 1);
  EXPECT_THROW(comm.all_reduce_sum(strided), InvalidArgument);
  Tensor t = Tensor::zeros({4});
  EXPECT_THROW(comm.broadcast(t, comm.size()), InvalidArgument);
  EXPECT_THROW(comm.send(t, comm.size() + 3), InvalidArgument);
  EXPECT_THROW(comm.recv(t, -1), InvalidArgument);
  try {
    comm.broadcast(t, -2);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("rank"), std::string::npos) << e.what();
  }
}

TEST(Communicator, ReceivingIntoTheWrongSizeIsAnError) {
  auto& comm = test_communicator();
  if (comm.size() < 2) GTEST_SKIP() << "point to point needs two ranks (run under mpirun)";
  if (comm.rank() == 0) comm.send(Tensor::zeros({8}), 1);
  if (comm.rank() == 1) {
    Tensor small = Tensor::zeros({4});
    EXPECT_THROW(comm.recv(small, 0), InvalidArgument);
  }
  comm.barrier();
}

TEST(Communicator, TensorParallelSizeMustMatchTheJob) {
  auto& comm = test_communicator();
  EXPECT_THROW(dist::communicator_for(0, false), InvalidArgument);
  if (dist::launched_by_mpirun()) {
    try {
      dist::communicator_for(comm.size() + 1, false);
      FAIL() << "expected InvalidArgument";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("mpirun -np"), std::string::npos) << e.what();
    }
    EXPECT_EQ(dist::communicator_for(comm.size(), false)->size(), comm.size());
  } else {
    EXPECT_EQ(dist::communicator_for(1, false)->size(), 1);
  }
}

}  // namespace
}  // namespace strata::testing
