// Padded batches: prompts of different lengths in one batch, left-padded, with an attention
// mask. The reference for every row is the same model run on that row alone (batch 1, no
// padding, no mask), the path the parity tests hold to transformers. Every fixture, on the cpu
// and on cuda:0 (which skips itself where no GPU is usable), plus Mistral and Qwen2 with a
// sliding window shorter than every prompt.

#include <cmath>
#include <limits>
#include <vector>

#include "models/attention.h"
#include "models/model_testing.h"
#include "models/padding_mask.h"
#include "ops/throws_naming.h"
#include "strata/ops.h"

namespace strata::testing {
namespace {

using models::CausalLM;

// Batched and alone differ only in the order of float32 sums (matrix products over more rows,
// softmax over masked keys that contribute exact zeros). On the cpu the largest difference is
// 1.0e-6 of the logits' scale over every fixture: bound 1e-5. cuBLAS picks its kernels (split-K
// included) by the number of rows, so on cuda the bound is the parity bound, 1e-4.
constexpr double kCpuTolerance = 1e-5;
constexpr std::int64_t kPad = 5;  // any id: padded tokens must not matter
constexpr std::int64_t kNewTokens = 12;

struct PaddedCase {
  std::string fixture;
  std::int64_t window;  // > 0: every layer gets this sliding window; 0: the fixture's config
  Device device;
};

std::vector<PaddedCase> padded_cases() {
  std::vector<PaddedCase> out;
  for (const Device device : {Device::cpu(), Device::cuda(0)}) {
    for (const std::string& name : model_fixture_names()) out.push_back({name, 0, device});
    out.push_back({"mistral", 4, device});
    out.push_back({"qwen2", 4, device});
  }
  return out;
}

void PrintTo(const PaddedCase& c, std::ostream* os) {
  *os << c.fixture << " window " << c.window << " on " << c.device;
}

std::string padded_case_name(const ::testing::TestParamInfo<PaddedCase>& info) {
  const PaddedCase& c = info.param;
  return c.fixture + (c.window > 0 ? "_window" + std::to_string(c.window) : "") +
         (c.device.is_cuda() ? "_cuda0" : "_cpu");
}

// Token ids [1, n] as a row.
Tensor row_tensor(const std::vector<std::int64_t>& ids) {
  return Tensor::from_vector(ids, {1, static_cast<std::int64_t>(ids.size())});
}

class PaddedBatchTest : public ::testing::TestWithParam<PaddedCase> {
 protected:
  void SetUp() override {
    if (!device_available(device())) GTEST_SKIP() << device() << " is not available here";
    fixture_ = load_model_fixture(GetParam().fixture);
    models::TransformerConfig config = models::parse_transformer_config(fixture_.config);
    if (GetParam().window > 0) {
      config.sliding_windows.assign(config.sliding_windows.size(), GetParam().window);
    }
    model_ = models::build_causal_lm(config);
    load_safetensors_into(*model_, model_fixture_dir(fixture_.name) / "model.safetensors",
                          device());
    // Rows of different lengths from the recorded prompts. llama_dynamic's prompts pass its 16
    // trained positions; at most 12 tokens keep its frequencies unscaled in the batch and alone.
    const std::vector<std::int64_t> p0 = fixture_.prompt_ids.select(0, 0).to_vector<std::int64_t>();
    const std::vector<std::int64_t> p1 = fixture_.prompt_ids.select(0, 1).to_vector<std::int64_t>();
    const auto n = std::min<std::int64_t>(static_cast<std::int64_t>(p0.size()), 12);
    rows_ = {{p1.begin(), p1.begin() + n - 4},
             {p0.begin(), p0.begin() + n},
             {p0.begin() + 3, p0.begin() + n}};
    second_ = {p1.begin(), p1.begin() + n};
  }
  Device device() const { return GetParam().device; }
  double tolerance() const { return device().is_cuda() ? kFloat32Tolerance : kCpuTolerance; }
  std::int64_t longest() const { return static_cast<std::int64_t>(rows_[1].size()); }

  // The rows left-padded to the longest: ids and mask, int64 [rows, longest] on the cpu.
  std::pair<Tensor, Tensor> padded_batch() const {
    const auto batch = static_cast<std::int64_t>(rows_.size());
    Tensor ids = Tensor::full({batch, longest()}, static_cast<double>(kPad), DType::Int64);
    Tensor mask = Tensor::zeros({batch, longest()}, DType::Int64);
    for (std::int64_t r = 0; r < batch; ++r) {
      const std::vector<std::int64_t>& row = rows_[static_cast<std::size_t>(r)];
      const auto len = static_cast<std::int64_t>(row.size());
      ids.select(0, r).narrow(0, longest() - len, len).copy_(Tensor::from_vector(row));
      mask.select(0, r).narrow(0, longest() - len, len).copy_(Tensor::ones({len}, DType::Int64));
    }
    return {ids, mask};
  }

  ModelFixture fixture_;
  std::shared_ptr<CausalLM> model_;
  std::vector<std::vector<std::int64_t>> rows_;
  std::vector<std::int64_t> second_;  // the second recorded prompt (n tokens)
};

// (a) Each row's logits at its tokens equal the row's logits alone; the padded positions give
// finite numbers (a padding query attends to nothing and yields zeros, never NaN).
TEST_P(PaddedBatchTest, LogitsOfEachRowEqualTheRowAlone) {
  const auto [ids, mask] = padded_batch();
  // The mask stays on the cpu for a cuda model: the forward moves it where it is needed.
  const Tensor logits = model_->run(ids.to(device()), nullptr, 0, mask).logits.to(Device::cpu());
  ASSERT_EQ(logits.shape(), (Shape{3, longest(), fixture_.logits.size(2)}));
  for (std::size_t r = 0; r < rows_.size(); ++r) {
    const Tensor alone = model_->run(row_tensor(rows_[r]).to(device())).logits;
    const auto len = static_cast<std::int64_t>(rows_[r].size());
    const Tensor mine =
        logits.narrow(0, static_cast<std::int64_t>(r), 1).narrow(1, longest() - len, len);
    EXPECT_LE(max_abs_diff(mine, alone), tolerance() * max_abs(alone))
        << fixture_.name << " row " << r << " (" << len << " tokens)";
  }
  for (const double v : logits.to_doubles()) ASSERT_TRUE(std::isfinite(v)) << fixture_.name;
}

// (b) Greedy decoding of the padded batch gives each row the tokens it gets alone.
TEST_P(PaddedBatchTest, GreedyTokensOfEachRowEqualTheRowAlone) {
  if (fixture_.name == "llama_dynamic" || fixture_.name == "phi3") {
    // Dynamic NTK RoPE and longrope take the batch's longest length (transformers too): once a
    // row passes the trained positions (phi3: original_max_position_embeddings 16), the shorter
    // rows are rotated with the longest row's frequencies.
    GTEST_SKIP() << "dynamic RoPE / longrope use the batch's longest length, by design";
  }
  const auto [ids, mask] = padded_batch();
  models::GenerationOptions options;
  options.max_new_tokens = kNewTokens;
  options.attention_mask = mask.to(device());  // any device
  const Tensor batched = models::generate_greedy(*model_, ids, options).tokens;
  ASSERT_EQ(batched.shape(), (Shape{3, kNewTokens}));
  models::GenerationOptions alone_options;
  alone_options.max_new_tokens = kNewTokens;
  for (std::size_t r = 0; r < rows_.size(); ++r) {
    const Tensor alone =
        models::generate_greedy(*model_, row_tensor(rows_[r]), alone_options).tokens;
    EXPECT_EQ(batched.select(0, static_cast<std::int64_t>(r)).to_vector<std::int64_t>(),
              alone.select(0, 0).to_vector<std::int64_t>())
        << fixture_.name << " row " << r;
  }
}

// Continuous batching's shape: padding inside a row, in the cache and in the new tokens. Row A
// is prefilled with p tokens beside B (2 tokens, left-padded), then A gets 1 token padded to the
// 3 B gets in the same pass (padding after A's cached tokens), then both decode one token.
TEST_P(PaddedBatchTest, PaddingInsideRowsAndInTheCache) {
  const std::vector<std::int64_t>& a = rows_[1];  // p + 2 tokens
  const std::vector<std::int64_t>& b = second_;
  const auto p = static_cast<std::int64_t>(a.size()) - 2;
  const auto b_len = std::min<std::int64_t>(static_cast<std::int64_t>(b.size()), 6);
  ASSERT_GE(b_len, 5);                     // B's second chunk is at least 2 tokens: A's is padded
  const std::int64_t b_chunk = b_len - 3;  // B's tokens in the second pass (then 1 in the third)
  const std::int64_t vocab = fixture_.logits.size(2);

  // Pass 1: A[0, p) beside B[0, 2) padded on the left.
  Tensor ids1 = Tensor::full({2, p}, static_cast<double>(kPad), DType::Int64);
  std::vector<std::int64_t> mask(static_cast<std::size_t>(2 * p), 0);
  for (std::int64_t j = 0; j < p; ++j) {
    ids1.set<std::int64_t>({0, j}, a[static_cast<std::size_t>(j)]);
    mask[static_cast<std::size_t>(j)] = 1;
  }
  for (std::int64_t j = 0; j < 2; ++j) {
    ids1.set<std::int64_t>({1, p - 2 + j}, b[static_cast<std::size_t>(j)]);
    mask[static_cast<std::size_t>(p + p - 2 + j)] = 1;
  }
  auto cache = model_->make_cache();
  const auto mask_tensor = [&](std::int64_t width) {
    return Tensor::from_vector(mask, {2, width});
  };
  model_->run(ids1.to(device()), cache, 0, mask_tensor(p));

  // Pass 2: A[p] padded on the left to B[2, 2 + b_chunk).
  Tensor ids2 = Tensor::full({2, b_chunk}, static_cast<double>(kPad), DType::Int64);
  ids2.set<std::int64_t>({0, b_chunk - 1}, a[static_cast<std::size_t>(p)]);
  for (std::int64_t j = 0; j < b_chunk; ++j) {
    ids2.set<std::int64_t>({1, j}, b[static_cast<std::size_t>(2 + j)]);
  }
  std::vector<std::int64_t> wide;
  const auto extend = [&](std::int64_t old_width, const std::vector<std::int64_t>& row0,
                          const std::vector<std::int64_t>& row1) {
    wide.clear();
    wide.insert(wide.end(), mask.begin(), mask.begin() + old_width);
    wide.insert(wide.end(), row0.begin(), row0.end());
    wide.insert(wide.end(), mask.begin() + old_width, mask.end());
    wide.insert(wide.end(), row1.begin(), row1.end());
    mask = wide;
  };
  std::vector<std::int64_t> a_cols(static_cast<std::size_t>(b_chunk), 0);
  a_cols.back() = 1;
  extend(p, a_cols, std::vector<std::int64_t>(static_cast<std::size_t>(b_chunk), 1));
  const Tensor logits2 =
      model_->run(ids2.to(device()), cache, 0, mask_tensor(p + b_chunk)).logits.to(Device::cpu());

  // Pass 3: one token each.
  Tensor ids3 =
      Tensor::from_vector(std::vector<std::int64_t>{a[static_cast<std::size_t>(p + 1)],
                                                    b[static_cast<std::size_t>(2 + b_chunk)]},
                          {2, 1});
  extend(p + b_chunk, {1}, {1});
  const Tensor logits3 = model_->run(ids3.to(device()), cache, 0, mask_tensor(p + b_chunk + 1))
                             .logits.to(Device::cpu());
  EXPECT_EQ(cache->seq_length(), p + b_chunk + 1);

  const Tensor a_alone = model_->run(row_tensor(a).to(device())).logits;  // p + 2 positions
  const Tensor b_alone =
      model_->run(row_tensor({b.begin(), b.begin() + 3 + b_chunk}).to(device())).logits;
  const double a_tol = tolerance() * max_abs(a_alone), b_tol = tolerance() * max_abs(b_alone);
  const auto at = [&](const Tensor& logits, std::int64_t row, std::int64_t col, std::int64_t n) {
    return logits.narrow(0, row, 1).narrow(1, col, n);
  };
  EXPECT_LE(max_abs_diff(at(logits2, 0, b_chunk - 1, 1), at(a_alone, 0, p, 1)), a_tol);
  EXPECT_LE(max_abs_diff(at(logits3, 0, 0, 1), at(a_alone, 0, p + 1, 1)), a_tol);
  EXPECT_LE(max_abs_diff(at(logits2, 1, 0, b_chunk), at(b_alone, 0, 2, b_chunk)), b_tol);
  EXPECT_LE(max_abs_diff(at(logits3, 1, 0, 1), at(b_alone, 0, 2 + b_chunk, 1)), b_tol);
  for (const double v : logits2.to_doubles()) ASSERT_TRUE(std::isfinite(v)) << fixture_.name;
  EXPECT_EQ(logits2.size(2), vocab);
}

// A mask of all ones is the unpadded path itself (nothing is built); int32 and bool masks read
// as int64.
TEST_P(PaddedBatchTest, MaskOfOnesAndMaskDtypes) {
  const auto [ids, mask] = padded_batch();
  const Tensor on_device = ids.to(device());
  const Tensor plain = model_->run(on_device).logits;
  const Tensor ones =
      model_->run(on_device, nullptr, 0, Tensor::ones(ids.shape(), DType::Int64)).logits;
  EXPECT_EQ(max_abs_diff(plain, ones), 0.0);
  const Tensor as_int64 = model_->run(on_device, nullptr, 0, mask).logits;
  for (const DType dtype : {DType::Int32, DType::Bool}) {
    const Tensor other = model_->run(on_device, nullptr, 0, mask.to(dtype)).logits;
    EXPECT_EQ(max_abs_diff(as_int64, other), 0.0) << dtype;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, PaddedBatchTest, ::testing::ValuesIn(padded_cases()),
                         padded_case_name);

// Positions and the additive mask of one row with padding on the left and inside, worked out by
// hand from transformers' rules: mask [0, 1, 1, 0, 1], 2 cached tokens and 3 new ones.
TEST(PaddingMask, PositionsAndAdditiveMaskFollowTheRules) {
  const Tensor m = Tensor::from_vector(std::vector<std::int64_t>{0, 1, 1, 0, 1}, {1, 5});
  models::detail::PaddingMask mask(m, 1, 3, 2, "test");
  // cumsum - 1 = [-1, 0, 1, 1, 2]; new columns 2..4, padding at 1.
  EXPECT_EQ(mask.position_ids(Device::cpu()).to_vector<std::int64_t>(),
            (std::vector<std::int64_t>{1, 1, 2}));
  // OPT: cumsum * mask - 1 = [-1, 0, 1, -1, 2], + 2.
  EXPECT_EQ(mask.opt_position_ids(2, Device::cpu()).to_vector<std::int64_t>(),
            (std::vector<std::int64_t>{3, 1, 4}));
  EXPECT_EQ(mask.max_position(), 2);
  const float x = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(mask.additive(0, Device::cpu()).to_vector<float>(),
            (std::vector<float>{x, 0, 0, x, x,  //
                                x, x, x, x, x,  // a padding query sees nothing
                                x, 0, 0, x, 0}));
  EXPECT_EQ(mask.additive(0, Device::cpu()).shape(), (Shape{1, 1, 3, 5}));
  // Window 2 counted in tokens: the last query (position 2) sees positions 1 and 2.
  EXPECT_EQ(mask.additive(2, Device::cpu()).to_vector<float>(),
            (std::vector<float>{x, 0, 0, x, x,  //
                                x, x, x, x, x,  //
                                x, x, 0, x, 0}));
  EXPECT_THROW(mask.check_position_limit(2, "test"), InvalidArgument);
  mask.check_position_limit(3, "test");
}

// Attention with that mask: the padding query's output is exactly zero, the others finite.
TEST(PaddingMask, PaddingQueriesGiveZeros) {
  const Tensor m = Tensor::from_vector(std::vector<std::int64_t>{0, 1, 1, 0, 1}, {1, 5});
  models::detail::PaddingMask mask(m, 1, 3, 2, "test");
  const Tensor q = random_tensor({1, 4, 3, 8}, DType::Float32, 1);
  const Tensor k = random_tensor({1, 2, 5, 8}, DType::Float32, 2);
  const Tensor v = random_tensor({1, 2, 5, 8}, DType::Float32, 3);
  models::KVCache cache(1);
  cache.update(0, k.narrow(2, 0, 2), v.narrow(2, 0, 2));
  const Tensor out = models::detail::causal_attention(
      q, k.narrow(2, 2, 3), v.narrow(2, 2, 3), &cache, 0, 0.35, 0, mask.additive(0, Device::cpu()));
  EXPECT_EQ(max_abs(out.narrow(2, 1, 1)), 0.0);
  for (const double value : out.to_doubles()) EXPECT_TRUE(std::isfinite(value));
  EXPECT_GT(max_abs(out.narrow(2, 2, 1)), 0.0);
}

class PaddedBatchErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    fixture_ = load_model_fixture("llama");
    model_ = load_fixture_model(fixture_, Device::cpu());
    ids_ = fixture_.prompt_ids;  // [2, 10]
  }
  ModelFixture fixture_;
  std::shared_ptr<CausalLM> model_;
  Tensor ids_;
};

TEST_F(PaddedBatchErrors, WrongShapeDtypeOrValuesNameAttentionMask) {
  const auto run = [&](const Tensor& mask) { model_->run(ids_, nullptr, 0, mask); };
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        run(Tensor::ones({2, 11}, DType::Int64));
      },
      {"attention_mask", "[2, 10]"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        run(Tensor::ones({1, 10}, DType::Int64));
      },
      {"attention_mask", "[batch, past + seq]"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { run(Tensor::ones({10}, DType::Int64)); },
                                             {"attention_mask"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        run(Tensor::ones({2, 10}, DType::Float32));
      },
      {"attention_mask", "float32", "int64"}));
  Tensor two = Tensor::ones({2, 10}, DType::Int64);
  two.set<std::int64_t>({1, 3}, 2);
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { run(two); },
                                             {"attention_mask[1, 3]", "is 2", "0 (padding)"}));
  // With a cache, the mask covers the cached tokens too.
  auto cache = model_->make_cache();
  model_->run(ids_, cache, 0, Tensor::ones({2, 10}, DType::Int64));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        model_->run(ids_.narrow(1, 0, 1), cache, 0, Tensor::ones({2, 1}, DType::Int64));
      },
      {"attention_mask", "[2, 11]", "10 cached"}));
  // Every family checks it (GPT-2 and OPT have their own base models).
  for (const char* name : {"gpt2", "opt"}) {
    const ModelFixture f = load_model_fixture(name);
    auto model = load_fixture_model(f, Device::cpu());
    EXPECT_TRUE(throws_naming<InvalidArgument>(
        [&] {
          model->run(f.prompt_ids, nullptr, 0, Tensor::ones({2, 3}, DType::Int64));
        },
        {"attention_mask"}))
        << name;
  }
}

TEST_F(PaddedBatchErrors, GenerateNeedsLeftPaddingAndTheMaskOfThePrompt) {
  models::GenerationOptions options;
  options.max_new_tokens = 2;
  Tensor right = Tensor::ones({2, 10}, DType::Int64);
  right.set<std::int64_t>({1, 9}, 0);
  options.attention_mask = right;
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { models::generate_greedy(*model_, ids_, options); },
      {"generate_greedy", "attention_mask row 1", "pad prompts on the left"}));
  options.attention_mask = Tensor::ones({2, 9}, DType::Int64);
  EXPECT_TRUE(
      throws_naming<InvalidArgument>([&] { models::generate_greedy(*model_, ids_, options); },
                                     {"generate_greedy", "attention_mask", "[2, 10]"}));
  options.attention_mask = Tensor::ones({2, 10}, DType::Float32);
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { models::generate_greedy(*model_, ids_, options); }, {"attention_mask", "float32"}));
}

}  // namespace
}  // namespace strata::testing
