// The NCCL communicator and the tensor-parallel forward on GPUs. These run only under mpirun on
// a machine with a GPU per rank, with STRATA_TEST_NCCL=1 (scripts/gpu-tp-check.sh sets it and
// pins each rank to its GPU, so every rank works on its cuda:0); elsewhere they skip.

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "dist/dist_testing.h"
#include "models/model_testing.h"
#include "strata/core/float_types.h"
#include "strata/models/tensor_parallel.h"
#include "strata/placement/load_checkpoint.h"

namespace strata::testing {
namespace {

// The job's NCCL communicator, or null when these tests do not apply here.
dist::Communicator* nccl() {
  if (std::getenv("STRATA_TEST_NCCL") == nullptr || !dist::nccl_built() ||
      !dist::launched_by_mpirun() || !device_available(Device::cuda(0))) {
    return nullptr;
  }
  static const std::shared_ptr<dist::Communicator> comm = dist::nccl_communicator();
  return comm.get();
}

#define STRATA_NEED_NCCL()           \
  dist::Communicator* comm = nccl(); \
  if (comm == nullptr) GTEST_SKIP() << "needs mpirun, a GPU per rank and STRATA_TEST_NCCL=1"

TEST(Nccl, AllReduceSumOnTheGpuEqualsTheNaiveSum) {
  STRATA_NEED_NCCL();
  for (DType dtype : {DType::Float32, DType::BFloat16, DType::Float16}) {
    // Small integers: exact in every dtype, so any order of summation gives the same values.
    std::vector<float> mine(300);
    for (std::size_t i = 0; i < mine.size(); ++i) {
      mine[i] = static_cast<float>((static_cast<int>(i) % 17) - 8 + comm->rank());
    }
    Tensor t = Tensor::from_vector(mine).to(Device::cuda(0), dtype);
    comm->all_reduce_sum(t);
    const std::vector<float> got = t.to(Device::cpu(), DType::Float32).to_vector<float>();
    for (std::size_t i = 0; i < mine.size(); ++i) {
      float expected = 0.0f;
      for (int r = 0; r < comm->size(); ++r) {
        expected += static_cast<float>((static_cast<int>(i) % 17) - 8 + r);
      }
      ASSERT_EQ(got[i], expected) << dtype << " index " << i;
    }
  }
}

TEST(Nccl, AllGatherBroadcastAndCpuTensors) {
  STRATA_NEED_NCCL();
  const Tensor mine = Tensor::full({3}, comm->rank() + 1.0, DType::Float32, Device::cuda(0));
  const std::vector<float> all = comm->all_gather(mine).to(Device::cpu()).to_vector<float>();
  ASSERT_EQ(all.size(), static_cast<std::size_t>(3 * comm->size()));
  for (int r = 0; r < comm->size(); ++r) EXPECT_EQ(all[static_cast<std::size_t>(3 * r)], r + 1.0f);
  Tensor b = Tensor::full({4}, comm->rank(), DType::Float32, Device::cuda(0));
  comm->broadcast(b, comm->size() - 1);
  EXPECT_EQ(b.to(Device::cpu()).to_vector<float>().front(), comm->size() - 1.0f);
  Tensor host = Tensor::full({2}, 1.0, DType::Float32);  // cpu: through MPI
  comm->all_reduce_sum(host);
  EXPECT_EQ(host.to_vector<float>().front(), static_cast<float>(comm->size()));
  comm->barrier();
}

class NcclParity : public ::testing::TestWithParam<std::string> {};

TEST_P(NcclParity, LogitsAndGreedyTokensEqualTheSingleGpuModel) {
  STRATA_NEED_NCCL();
  const ModelFixture f = load_model_fixture(GetParam());
  const models::TransformerConfig config = models::parse_transformer_config(f.config);
  const auto tp = models::TensorParallel::over(
      std::shared_ptr<dist::Communicator>(comm, [](dist::Communicator*) {}));
  const auto whole = load_fixture_model(f, Device::cuda(0));
  auto split = models::build_causal_lm(config, DType::Float32, tp);
  placement::LoadCheckpointOptions options;
  options.device_map = {{"", placement::MapDevice(0)}};
  options.shards = models::tensor_parallel_shards(config, tp);
  options.strict = true;
  placement::load_checkpoint_in_model(*split, model_fixture_dir(f.name), options);
  split->to(Device::cuda(0));  // the non-persistent buffers (rotary) too

  const Tensor prompt = f.prompt_ids.to(Device::cuda(0));
  const Tensor expected = whole->run(prompt).logits;
  const Tensor got = split->run(prompt).logits;
  EXPECT_LE(max_abs_diff(got, expected), 1e-5) << f.name;
  models::GenerationOptions generation;
  generation.max_new_tokens = f.greedy_ids.size(1);
  EXPECT_EQ(models::generate_greedy(*split, f.prompt_ids.narrow(0, 0, 1), generation)
                .tokens.to_vector<std::int64_t>(),
            f.greedy_ids.to_vector<std::int64_t>())
      << f.name;
}

INSTANTIATE_TEST_SUITE_P(Decoders, NcclParity,
                         ::testing::Values("llama", "llama_linear", "llama_dynamic", "llama_yarn",
                                           "llama3", "mistral", "qwen2", "qwen3", "mixtral"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace strata::testing
