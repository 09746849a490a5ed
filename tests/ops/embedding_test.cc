// embedding: rows copied bit for bit, ids of every integer dtype, bounds errors.

#include <vector>

#include "ops/throws_naming.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata::testing {
namespace {

// table[ids[i], :] for every id, from the values as doubles.
std::vector<double> reference_embedding(const Tensor& ids, const Tensor& table) {
  const std::vector<double> idv = ids.to_doubles(), tv = table.to_doubles();
  const std::int64_t dim = table.size(1);
  std::vector<double> out;
  for (const double id : idv) {
    const auto row = static_cast<std::int64_t>(id);
    out.insert(out.end(), tv.begin() + row * dim, tv.begin() + (row + 1) * dim);
  }
  return out;
}

class EmbeddingTest : public OpTest {};

TEST_P(EmbeddingTest, PicksRowsForEveryIdDType) {
  const Tensor table = random_tensor({17, 5}, dtype(), 1);
  for (const DType id_dtype :
       {DType::Int64, DType::Int32, DType::Int16, DType::Int8, DType::UInt8}) {
    const Tensor ids = random_int_tensor({2, 3}, id_dtype, 2, 0, 17);
    const Tensor out = ops::embedding(on_device(ids), on_device(table));
    EXPECT_EQ(out.device(), device());
    EXPECT_EQ(out.shape(), (Shape{2, 3, 5}));
    EXPECT_EQ(out.dtype(), dtype());
    // A copy: exact.
    EXPECT_TRUE(all_close(out, reference_embedding(ids, table), {0.0, 0.0},
                          fmt::format("ids {}", dtype_name(id_dtype))));
  }
}

TEST_P(EmbeddingTest, OddShapesAndLayouts) {
  const Tensor table = random_tensor({3, 4097}, dtype(), 3);
  const Tensor ids = Tensor::from_vector<std::int64_t>({2, 0, 2, 1}, {4});
  EXPECT_TRUE(all_close(ops::embedding(on_device(ids), on_device(table)),
                        reference_embedding(ids, table), {0.0, 0.0}, "dim 4097"));
  const Tensor one_id = Tensor::from_vector<std::int32_t>({0}, {1});
  const Tensor narrow = random_tensor({1, 1}, dtype(), 4);
  EXPECT_TRUE(all_close(ops::embedding(on_device(one_id), on_device(narrow)), narrow.to_doubles(),
                        {0.0, 0.0}, "1x1 table"));
  const Tensor ids_2d = random_int_tensor({3, 4}, DType::Int64, 5, 0, 17);
  const Tensor table_2 = random_tensor({17, 6}, dtype(), 6);
  const Tensor out =
      ops::embedding(make_noncontiguous(on_device(ids_2d)), make_noncontiguous(on_device(table_2)));
  EXPECT_EQ(out.shape(), (Shape{3, 4, 6}));
  EXPECT_TRUE(all_close(out, reference_embedding(ids_2d, table_2), {0.0, 0.0}, "strided"));
  EXPECT_EQ(ops::embedding(on_device(Tensor::zeros({0}, DType::Int64)), on_device(table)).shape(),
            (Shape{0, 4097}));
}

// The bounds check runs where the ids are (a kernel on the GPU), so both devices are tested.
TEST_P(EmbeddingTest, RejectsIdsOutsideTheVocabulary) {
  const Tensor table = on_device(random_tensor({10, 4}, dtype(), 7));
  const Tensor too_big = on_device(Tensor::from_vector<std::int64_t>({1, 10, 3}, {3}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::embedding(too_big, table); },
                                             {"embedding", "id 10", "[0, 10)"}));
  const Tensor negative = on_device(Tensor::from_vector<std::int32_t>({0, -1}, {2}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::embedding(negative, table); },
                                             {"embedding", "id -1", "[0, 10)"}));
}

INSTANTIATE_TEST_SUITE_P(Devices, EmbeddingTest, STRATA_OP_CASES());

// Front-end checks, the same on every device.
class EmbeddingErrors : public ::testing::TestWithParam<DType> {};

TEST_P(EmbeddingErrors, RejectsBadInputs) {
  const Tensor table = random_tensor({10, 4}, GetParam(), 8);
  const Tensor ids = Tensor::from_vector<std::int64_t>({1, 2}, {2});
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::embedding(ids.to(DType::Float32), table); },
                                             {"embedding", "ids", "integer"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { ops::embedding(ids, random_tensor({10}, GetParam(), 9)); }, {"embedding", "table"}));
  const Tensor meta = Tensor::empty({10, 4}, GetParam(), Device::meta());
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::embedding(ids, meta); },
                                             {"embedding", "table", "meta"}));
}

INSTANTIATE_TEST_SUITE_P(FloatDTypes, EmbeddingErrors, ::testing::ValuesIn(kFloatDTypes),
                         [](const auto& info) { return dtype_test_name(info.param); });

}  // namespace
}  // namespace strata::testing
