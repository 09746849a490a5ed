// The generic layers against naive double-precision computations, on the execution device.

#include <cmath>

#include "nn/nn_testing.h"

namespace strata::testing {
namespace {

constexpr Tolerance kTol{1e-5, 1e-5};

class LayersTest : public ExecutionDeviceTest {};

TEST_P(LayersTest, LinearMatchesNaive) {
  Linear linear(3, 2);
  EXPECT_EQ(linear.weight().shape(), (Shape{2, 3}));
  EXPECT_EQ(linear.parameter("bias").shape(), (Shape{2}));
  randomize(linear, 5);
  const std::vector<double> w = linear.weight().to_doubles(),
                            b = linear.parameter("bias").to_doubles();
  const Tensor x = random_tensor({4, 3}, DType::Float32, 9);
  const std::vector<double> xv = x.to_doubles();
  std::vector<double> expected;
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 2; ++j) {
      double sum = b[j];
      for (int k = 0; k < 3; ++k) sum += xv[i * 3 + k] * w[j * 3 + k];
      expected.push_back(sum);
    }
  }
  linear.to(device());
  const Tensor y = linear(x.to(device())).tensor();
  EXPECT_EQ(y.device(), device());
  EXPECT_TRUE(all_close(y, expected, kTol));

  Linear no_bias(3, 2, /*bias=*/false);
  EXPECT_FALSE(no_bias.has_bias());
  EXPECT_EQ(no_bias.named_parameters().size(), 1u);
}

TEST_P(LayersTest, EmbeddingPicksRows) {
  Embedding embedding(5, 3);
  randomize(embedding, 2);
  const std::vector<double> table = embedding.weight().to_doubles();
  embedding.to(device());
  const Tensor ids = Tensor::from_vector<std::int64_t>({4, 0, 4}).to(device());
  std::vector<double> expected;
  for (int id : {4, 0, 4}) {
    for (int j = 0; j < 3; ++j) expected.push_back(table[id * 3 + j]);
  }
  EXPECT_TRUE(all_close(embedding(ids).tensor(), expected, {0, 0}));
}

TEST_P(LayersTest, NormsMatchNaive) {
  const Tensor x = random_tensor({2, 4}, DType::Float32, 11);
  const std::vector<double> xv = x.to_doubles();
  LayerNorm layer_norm(4);
  RMSNorm rms_norm(4, 1e-6);
  randomize(layer_norm, 20);
  randomize(rms_norm, 30);
  const std::vector<double> lw = layer_norm.parameter("weight").to_doubles();
  const std::vector<double> lb = layer_norm.parameter("bias").to_doubles();
  const std::vector<double> rw = rms_norm.parameter("weight").to_doubles();
  std::vector<double> expected_ln, expected_rms;
  for (int row = 0; row < 2; ++row) {
    double mean = 0, var = 0, square = 0;
    for (int j = 0; j < 4; ++j) mean += xv[row * 4 + j] / 4;
    for (int j = 0; j < 4; ++j) {
      const double v = xv[row * 4 + j];
      var += (v - mean) * (v - mean) / 4;
      square += v * v / 4;
    }
    for (int j = 0; j < 4; ++j) {
      const double v = xv[row * 4 + j];
      expected_ln.push_back((v - mean) / std::sqrt(var + 1e-5) * lw[j] + lb[j]);
      expected_rms.push_back(v / std::sqrt(square + 1e-6) * rw[j]);
    }
  }
  layer_norm.to(device());
  rms_norm.to(device());
  EXPECT_TRUE(all_close(layer_norm(x.to(device())).tensor(), expected_ln, kTol));
  EXPECT_TRUE(all_close(rms_norm(x.to(device())).tensor(), expected_rms, kTol));
  LayerNorm plain(4, 1e-5, /*elementwise_affine=*/false);
  EXPECT_TRUE(plain.named_parameters().empty());
}

TEST_P(LayersTest, ActivationsAndSequential) {
  const Tensor x = Tensor::from_vector<float>({-2.0f, -0.5f, 0.0f, 1.5f}).to(device());
  std::vector<double> relu, silu, gelu;
  for (double v : {-2.0, -0.5, 0.0, 1.5}) {
    relu.push_back(std::max(v, 0.0));
    silu.push_back(v / (1 + std::exp(-v)));
    gelu.push_back(0.5 * v * (1 + std::erf(v / std::sqrt(2.0))));
  }
  EXPECT_TRUE(all_close(ReLU()(x).tensor(), relu, kTol));
  EXPECT_TRUE(all_close(SiLU()(x).tensor(), silu, kTol));
  EXPECT_TRUE(all_close(GELU()(x).tensor(), gelu, kTol));
  // Sequential feeds each output to the next module: relu(silu(x)) == silu(x) clamped at 0.
  Sequential seq({std::make_shared<SiLU>(), std::make_shared<ReLU>()});
  std::vector<double> chained;
  for (double v : silu) chained.push_back(std::max(v, 0.0));
  EXPECT_TRUE(all_close(seq(x).tensor(), chained, kTol));
  EXPECT_TRUE(throws_naming<InvalidArgument>([] { (void)Sequential()(Tensor::zeros({1})); },
                                             {"Sequential", "empty"}));
}

STRATA_INSTANTIATE_DEVICE_TESTS(LayersTest);

TEST(LayerErrorsTest, ForwardNamesTheLayerOnBadInput) {
  Linear linear(3, 2);
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { (void)linear(Args{Value(3)}); },
                                             {"Linear.forward", "tensor"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([] { Linear(-1, 2); }, {"Linear", "-1"}));
}

}  // namespace
}  // namespace strata::testing
