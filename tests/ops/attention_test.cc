#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "ops/throws_naming.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata {
namespace {

using testing::all_close;
using testing::random_tensor;
using testing::throws_naming;
using testing::tolerance_for;

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Dims {
  std::int64_t batch, q_heads, kv_heads, q_len, k_len, head_dim, v_dim;
};

// Naive attention in double, straight from the definition: every score, the end-aligned causal
// mask, the broadcast additive mask, a softmax over the visible keys (zeros when none is) and, with
// sinks, the head's sink logit as one more term of the denominator (transformers' gpt-oss eager
// attention: cat the sink to the scores, softmax, drop its column).
std::vector<double> attention_reference(const Tensor& q, const Tensor& k, const Tensor& v,
                                        const ops::AttentionOptions& options) {
  const Dims d{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
  const std::vector<double> qv = q.to_doubles(), kv = k.to_doubles(), vv = v.to_doubles();
  std::vector<double> mask;
  Shape mask_shape(4, 1);
  if (options.mask) {
    mask = options.mask->to_doubles();
    const Shape& s = options.mask->shape();
    for (std::size_t i = 0; i < s.size(); ++i) mask_shape[4 - s.size() + i] = s[i];
  }
  auto mask_at = [&](std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) {
    const std::int64_t index[4] = {b, h, i, j};
    std::int64_t flat = 0;
    for (int a = 0; a < 4; ++a) flat = flat * mask_shape[a] + (mask_shape[a] == 1 ? 0 : index[a]);
    return mask[flat];
  };
  const double scale = options.scale.value_or(1.0 / std::sqrt(static_cast<double>(d.head_dim)));
  const std::vector<double> sinks =
      options.sinks ? options.sinks->to_doubles() : std::vector<double>{};
  const std::int64_t group = d.q_heads / d.kv_heads;
  std::vector<double> out(d.batch * d.q_heads * d.q_len * d.v_dim, 0.0);
  std::vector<double> scores(d.k_len);
  for (std::int64_t b = 0; b < d.batch; ++b) {
    for (std::int64_t h = 0; h < d.q_heads; ++h) {
      const std::int64_t kh = h / group;
      for (std::int64_t i = 0; i < d.q_len; ++i) {
        double max = -kInf;
        for (std::int64_t j = 0; j < d.k_len; ++j) {
          double s = 0.0;
          for (std::int64_t c = 0; c < d.head_dim; ++c) {
            s += qv[((b * d.q_heads + h) * d.q_len + i) * d.head_dim + c] *
                 kv[((b * d.kv_heads + kh) * d.k_len + j) * d.head_dim + c];
          }
          s *= scale;
          if (options.mask) s += mask_at(b, h, i, j);
          if (options.causal && j > d.k_len - d.q_len + i) s = -kInf;
          scores[j] = s;
          max = std::max(max, s);
        }
        if (max == -kInf) continue;  // nothing visible: zeros
        if (!sinks.empty()) max = std::max(max, sinks[h]);
        double sum = sinks.empty() ? 0.0 : std::exp(sinks[h] - max);
        for (std::int64_t j = 0; j < d.k_len; ++j) sum += std::exp(scores[j] - max);
        double* o = &out[((b * d.q_heads + h) * d.q_len + i) * d.v_dim];
        for (std::int64_t j = 0; j < d.k_len; ++j) {
          const double p = std::exp(scores[j] - max) / sum;
          for (std::int64_t c = 0; c < d.v_dim; ++c) {
            o[c] += p * vv[((b * d.kv_heads + kh) * d.k_len + j) * d.v_dim + c];
          }
        }
      }
    }
  }
  return out;
}

class AttentionTest : public testing::OpTest {
 protected:
  // On the CPU; the op sees them on the case's device.
  struct Inputs {
    Tensor q, k, v;
  };
  Inputs make(const Dims& d, std::uint64_t seed) {
    return {random_tensor({d.batch, d.q_heads, d.q_len, d.head_dim}, dtype(), seed, -2.0, 2.0),
            random_tensor({d.batch, d.kv_heads, d.k_len, d.head_dim}, dtype(), seed + 1, -2.0, 2.0),
            random_tensor({d.batch, d.kv_heads, d.k_len, d.v_dim}, dtype(), seed + 2)};
  }
  // Runs the op on the device copies of the inputs (and of the mask).
  Tensor run(const Inputs& in, ops::AttentionOptions options) {
    if (options.mask) options.mask = on_device(*options.mask);
    if (options.sinks) options.sinks = on_device(*options.sinks);
    return ops::scaled_dot_product_attention(on_device(in.q), on_device(in.k), on_device(in.v),
                                             options);
  }
  // The kernel rounds once, at the output; scores and softmax stay in float32. So the per-dtype
  // tolerance of one rounding applies unchanged.
  void check(const Inputs& in, const ops::AttentionOptions& options, const std::string& what) {
    verify(run(in, options), in, options, what);
  }
  // `out` is the op's result for inputs with the values of `in` (in any layout on the device).
  void verify(const Tensor& out, const Inputs& in, const ops::AttentionOptions& options,
              const std::string& what) {
    const Shape expected_shape{in.q.size(0), in.q.size(1), in.q.size(2), in.v.size(3)};
    EXPECT_EQ(out.device(), device()) << what;
    EXPECT_EQ(out.shape(), expected_shape) << what;
    EXPECT_EQ(out.dtype(), in.q.dtype()) << what;
    EXPECT_TRUE(out.is_contiguous()) << what;
    EXPECT_TRUE(all_close(out, attention_reference(in.q, in.k, in.v, options),
                          tolerance_for(dtype()), what));
  }
};

TEST_P(AttentionTest, MultiHeadNoMask) { check(make({2, 3, 3, 5, 5, 8, 8}, 1), {}, "mha"); }

TEST_P(AttentionTest, OddSizesAndSingleElements) {
  check(make({1, 1, 1, 1, 1, 1, 1}, 2), {}, "all ones");
  check(make({1, 2, 1, 3, 17, 17, 3}, 3), {}, "odd");
  check(make({1, 2, 2, 17, 17, 3, 5}, 4), {.causal = true}, "odd causal");
}

TEST_P(AttentionTest, CausalSquareIsLowerTriangular) {
  check(make({1, 2, 2, 17, 17, 16, 16}, 5), {.causal = true}, "causal square");
}

TEST_P(AttentionTest, GroupedQueryHeadsWithKvCache) {
  // 8 query heads on 2 kv heads; 7 new queries after 12 cached keys.
  check(make({2, 8, 2, 7, 19, 16, 16}, 6), {.causal = true}, "gqa causal q_len < k_len");
  check(make({1, 8, 2, 7, 19, 16, 16}, 7), {}, "gqa full");
}

TEST_P(AttentionTest, MoreQueriesThanKeysLeavesEarlyRowsEmpty) {
  // With end alignment query i sees keys [0, k_len - q_len + i]: the first 3 rows see nothing.
  const Inputs in = make({1, 2, 1, 8, 5, 4, 4}, 8);
  check(in, {.causal = true}, "q_len > k_len");
  const Tensor out = run(in, {.causal = true}).to(Device::cpu());
  for (std::int64_t c = 0; c < 4; ++c) EXPECT_EQ(out.value_at({0, 1, 2, c}), 0.0);
}

TEST_P(AttentionTest, DecodeOneQueryManyKeys) {
  // One query against a long cache: few work blocks, so the keys are split and merged.
  check(make({1, 8, 2, 1, 1500, 64, 64}, 9), {}, "decode gqa");
  check(make({2, 4, 4, 1, 777, 32, 32}, 10), {.causal = true}, "decode mha");
}

TEST_P(AttentionTest, DecodeLongCacheGroupedHeads) {
  // A Llama-like decode step: 8 query heads per kv head, head_dim 128, thousands of cached keys
  // (split across many blocks and merged), odd lengths that leave partial key tiles.
  check(make({1, 16, 2, 1, 9000, 128, 128}, 21), {}, "decode 9000 keys");
  check(make({2, 8, 2, 1, 4099, 128, 128}, 22), {.causal = true}, "decode 4099 keys, batch 2");
  check(make({1, 4, 1, 1, 2053, 64, 64}, 23), {}, "decode head_dim 64");
  check(make({1, 6, 2, 1, 3001, 96, 80}, 24), {}, "decode head_dim 96, v_dim 80");
}

TEST_P(AttentionTest, DecodeLongCacheWithPaddingMask) {
  const Dims d{2, 8, 2, 1, 5000, 128, 128};
  const Inputs in = make(d, 25);
  // [batch, 1, 1, k_len]: the first 300 keys of batch 0 are padding, batch 1 sees every key.
  std::vector<double> m(2 * d.k_len, 0.0);
  for (std::int64_t j = 0; j < 300; ++j) m[j] = -kInf;
  check(in, {.mask = Tensor::from_doubles(m, {2, 1, 1, d.k_len}, DType::Float32)}, "padding");
}

TEST_P(AttentionTest, KeySplitsWithCausalPrefill) {
  // 2 blocks of 20 rows over 1100 keys: split key ranges, some of them masked for some rows.
  check(make({1, 1, 1, 40, 1100, 8, 8}, 11), {.causal = true}, "split causal");
}

TEST_P(AttentionTest, ManyRowBlocksAndKeyChunks) {
  check(make({1, 2, 1, 150, 150, 8, 8}, 12), {.causal = true}, "blocks x chunks");
}

TEST_P(AttentionTest, AdditiveMaskWithFullyMaskedRows) {
  const Dims d{2, 4, 2, 5, 9, 8, 8};
  const Inputs in = make(d, 13);
  // [batch, 1, q_len, k_len]: random finite biases, some -inf, and row 2 of batch 1 all -inf.
  std::vector<double> m = random_tensor({2, 1, 5, 9}, DType::Float32, 14, -1.0, 1.0).to_doubles();
  for (std::size_t i = 0; i < m.size(); i += 4) m[i] = -kInf;
  for (std::int64_t j = 0; j < 9; ++j) m[(1 * 5 + 2) * 9 + j] = -kInf;
  for (DType mask_dtype : {DType::Float32, dtype()}) {
    const Tensor mask = Tensor::from_doubles(m, {2, 1, 5, 9}, mask_dtype);
    check(in, {.mask = mask}, "mask " + std::string(dtype_name(mask_dtype)));
    check(in, {.causal = true, .mask = mask}, "mask + causal");
    const Tensor out = run(in, {.mask = mask}).to(Device::cpu());
    for (std::int64_t h = 0; h < 4; ++h) {
      for (std::int64_t c = 0; c < 8; ++c) EXPECT_EQ(out.value_at({1, h, 2, c}), 0.0);
    }
  }
}

TEST_P(AttentionTest, MaskBroadcastShapes) {
  const Inputs in = make({2, 4, 2, 3, 6, 4, 4}, 15);
  const Shape shapes[] = {{6}, {3, 6}, {1, 3, 6}, {4, 1, 6}, {2, 4, 3, 6}, {2, 1, 1, 6}};
  std::uint64_t seed = 16;
  for (const Shape& shape : shapes) {
    const Tensor mask = random_tensor(shape, DType::Float32, seed++, -2.0, 2.0);
    check(in, {.mask = mask}, "mask " + shape_str(shape));
  }
}

TEST_P(AttentionTest, NonContiguousInputsAndMask) {
  const Inputs in = make({2, 4, 2, 6, 11, 8, 8}, 17);
  const Inputs strided{testing::make_noncontiguous(on_device(in.q)),
                       testing::make_noncontiguous(on_device(in.k)),
                       testing::make_noncontiguous(on_device(in.v))};
  ASSERT_FALSE(strided.k.is_contiguous());
  const Tensor mask = random_tensor({2, 1, 6, 11}, DType::Float32, 18, -1.0, 1.0);
  ops::AttentionOptions device_options{.causal = true};
  device_options.mask = testing::make_noncontiguous(on_device(mask));
  verify(ops::scaled_dot_product_attention(strided.q, strided.k, strided.v, device_options), in,
         {.causal = true, .mask = mask}, "non-contiguous");
  // A KV cache stored [batch, k_len, kv_heads, head_dim] and viewed as [b, kv_heads, k_len, d].
  const Tensor k_cache = on_device(in.k.permute({0, 2, 1, 3}).contiguous()).permute({0, 2, 1, 3});
  verify(ops::scaled_dot_product_attention(on_device(in.q), k_cache, on_device(in.v),
                                           {.causal = true}),
         in, {.causal = true}, "permuted cache");
}

TEST_P(AttentionTest, ExplicitScaleAndValueDim) {
  check(make({1, 2, 1, 4, 6, 8, 5}, 19), {.scale = 0.3}, "scale 0.3, v_dim 5");
}

TEST_P(AttentionTest, EmptyKeysGiveZeros) {
  const Tensor out = run(make({1, 2, 1, 3, 0, 4, 4}, 20), {});
  EXPECT_TRUE(all_close(out, std::vector<double>(24, 0.0), {0.0, 0.0}, "no keys"));
}

// Attention sinks (gpt-oss): per-head logits that take a share of every row's softmax.
TEST_P(AttentionTest, SinksJoinEveryRowsSoftmax) {
  const Tensor sinks = random_tensor({8}, DType::Float32, 30, -3.0, 3.0);
  // Prefill with grouped heads, causal; a long decode (split keys, merged); a padded batch whose
  // row 1 sees no key at all (zeros, as without sinks); sinks in the query dtype.
  check(make({2, 8, 2, 7, 7, 16, 16}, 31), {.causal = true, .sinks = sinks}, "prefill");
  check(make({1, 8, 2, 1, 1500, 64, 64}, 32), {.sinks = sinks}, "decode, split keys");
  check(make({1, 8, 4, 1, 9000, 128, 128}, 33), {.causal = true, .sinks = sinks}, "decode 9000");
  const Dims d{2, 8, 2, 3, 9, 8, 8};
  std::vector<double> m(2 * 3 * 9, 0.0);
  for (std::int64_t j = 0; j < 9; ++j) m[(1 * 3 + 1) * 9 + j] = -kInf;
  const Tensor mask = Tensor::from_doubles(m, {2, 1, 3, 9}, DType::Float32);
  const Inputs in = make(d, 34);
  check(in, {.causal = true, .mask = mask, .sinks = sinks}, "masked");
  const Tensor out = run(in, {.mask = mask, .sinks = sinks}).to(Device::cpu());
  for (std::int64_t c = 0; c < 8; ++c) EXPECT_EQ(out.value_at({1, 3, 1, c}), 0.0);
  check(in, {.sinks = sinks.to(dtype())}, "sinks in " + std::string(dtype_name(dtype())));
  // A sink far above every score takes almost all the weight; far below, none.
  const Tensor big = Tensor::from_doubles(std::vector<double>(8, 60.0), {8}, DType::Float32);
  const Tensor small = Tensor::from_doubles(std::vector<double>(8, -60.0), {8}, DType::Float32);
  check(in, {.causal = true, .sinks = big}, "dominant sink");
  check(in, {.causal = true, .sinks = small}, "negligible sink");
}

INSTANTIATE_TEST_SUITE_P(Devices, AttentionTest, STRATA_OP_CASES());

TEST(AttentionErrors, RejectsBadInputs) {
  const std::string op = "scaled_dot_product_attention";
  const auto t = [](Shape shape, DType dt = DType::Float32) { return Tensor::zeros(shape, dt); };
  const auto sdpa = [](const Tensor& q, const Tensor& k, const Tensor& v,
                       const ops::AttentionOptions& o = {}) {
    return ops::scaled_dot_product_attention(q, k, v, o);
  };
  const Tensor q = t({1, 6, 2, 8}), k = t({1, 2, 3, 8}), v = t({1, 2, 3, 8});
  const auto fails = [&](const Tensor& q2, const Tensor& k2, const Tensor& v2,
                         const ops::AttentionOptions& o, const std::string& word) {
    return throws_naming<InvalidArgument>([&] { sdpa(q2, k2, v2, o); }, {op, word});
  };
  EXPECT_TRUE(fails(q, t({1, 4, 3, 8}), t({1, 4, 3, 8}), {}, "multiple"));  // 6 on 4 kv heads
  EXPECT_TRUE(fails(t({6, 2, 8}), k, v, {}, "'q'"));
  EXPECT_TRUE(fails(q, t({1, 2, 3, 4}), v, {}, "head_dim"));
  EXPECT_TRUE(fails(q, k, t({1, 2, 4, 8}), {}, "v"));
  EXPECT_TRUE(fails(q, t({2, 2, 3, 8}), v, {}, "batch"));
  EXPECT_TRUE(fails(q, t({1, 2, 3, 8}, DType::BFloat16), v, {}, "dtype"));
  EXPECT_TRUE(fails(Tensor::empty({1, 6, 2, 8}, DType::Float32, Device::meta()), k, v, {}, "meta"));
  EXPECT_TRUE(fails(q, k, v, {.mask = t({2, 4})}, "mask"));           // wrong k_len
  EXPECT_TRUE(fails(q, k, v, {.mask = t({2, 1, 2, 3})}, "mask"));     // batch 2 > 1
  EXPECT_TRUE(fails(q, k, v, {.mask = t({5, 1, 6, 2, 3})}, "mask"));  // rank 5
  EXPECT_TRUE(fails(q, k, v, {.mask = t({2, 3}, DType::Bool)}, "mask"));
  EXPECT_TRUE(fails(q, k, v, {.mask = t({2, 3}, DType::BFloat16)}, "mask"));
  EXPECT_TRUE(fails(q, k, v, {.scale = std::numeric_limits<double>::quiet_NaN()}, "scale"));
  EXPECT_TRUE(fails(q, k, v, {.sinks = t({2})}, "sinks"));  // one per query head: 6
  EXPECT_TRUE(fails(q, k, v, {.sinks = t({1, 6})}, "sinks"));
  EXPECT_TRUE(fails(q, k, v, {.sinks = t({6}, DType::Int32)}, "sinks"));
  const Tensor i32 = t({1, 2, 3, 8}, DType::Int32);
  EXPECT_TRUE(throws_naming<NotSupported>([&] { sdpa(i32, i32, i32); }, {op, "int32"}));
}

}  // namespace
}  // namespace strata
