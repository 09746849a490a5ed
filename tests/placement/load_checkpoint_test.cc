// load_checkpoint_in_model on small sharded checkpoints written with the io writer: every tensor
// checked against the source it was saved from, after casts, device maps, disk offload and ties.

#include "strata/placement/load_checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/io_testing.h"
#include "placement/placement_testing.h"
#include "strata/core/backend.h"
#include "strata/io/checkpoint.h"
#include "strata/io/offload.h"
#include "strata/io/safetensors.h"
#include "strata/placement/weights_map_adapter.h"

namespace strata::placement {
namespace {

namespace fs = std::filesystem;
using strata::testing::read_text;
using strata::testing::TempDir;
using strata::testing::tensor_bytes;
using testing::LogCapture;
using testing::make_tree;
using testing::ModuleSpecs;
using testing::Specs;

using Tensors = std::map<std::string, Tensor>;

// Values that bf16/fp16/fp8 cannot all hold exactly, so a missing or double cast shows.
Tensor source_like(const Tensor& meta, int seed) {
  std::vector<double> values(static_cast<std::size_t>(meta.numel()));
  for (std::size_t i = 0; i < values.size(); ++i) {
    values[i] = is_floating_point(meta.dtype()) ? 0.1234567 * (seed + 1) - 0.0371 * i
                                                : static_cast<double>(seed * 10 + i);
  }
  return Tensor::from_doubles(values, meta.shape(),
                              is_floating_point(meta.dtype()) ? DType::Float32 : meta.dtype());
}

// One source tensor per checkpoint key of `model` (first name of a tie group only).
Tensors source_for(nn::Module& model, const std::vector<std::string>& skip = {}) {
  Tensors out;
  int seed = 0;
  for (const auto& [name, t] : model.state_dict()) {
    if (std::find(skip.begin(), skip.end(), name) == skip.end()) {
      out.emplace(name, source_like(t, seed));
    }
    ++seed;
  }
  return out;
}

// Shards "model-0000i-of-0000n.safetensors" (each listed name goes to its shard) and
// "model.safetensors.index.json".
fs::path write_sharded(const fs::path& dir, const Tensors& tensors,
                       const std::vector<std::vector<std::string>>& shards) {
  nlohmann::json weight_map = nlohmann::json::object();
  for (std::size_t s = 0; s < shards.size(); ++s) {
    const std::string file = fmt::format("model-{:05}-of-{:05}.safetensors", s + 1, shards.size());
    std::vector<std::pair<std::string, Tensor>> part;
    for (const auto& [name, t] : tensors) {
      for (const std::string& prefix : shards[s]) {
        if (name == prefix || name.rfind(prefix + ".", 0) == 0) {
          part.emplace_back(name, t);
          weight_map[name] = file;
        }
      }
    }
    io::save_safetensors(dir / file, part);
  }
  nlohmann::json index = {{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}};
  strata::testing::write_text(dir / "model.safetensors.index.json", index.dump(2));
  return dir / "model.safetensors.index.json";
}

fs::path write_single(const fs::path& dir, const Tensors& tensors) {
  io::save_safetensors(dir / "model.safetensors",
                       std::vector<std::pair<std::string, Tensor>>(tensors.begin(), tensors.end()));
  return dir / "model.safetensors";
}

// Module "" holds ModelForTest children linear1, batchnorm, linear2 (accelerate-semantics §3.1).
std::shared_ptr<nn::Module> model_for_test() { return testing::model_for_test(); }

// embed (6x3), block0 and block1 (ModelForTest each), lm_head tied to embed.
std::shared_ptr<nn::Module> tied_model() {
  ModuleSpecs modules = {{"embed", "Embedding"}};
  Specs tensors = {{"embed.weight", {6, 3}}};
  testing::add_model_for_test("block0", modules, tensors);
  testing::add_model_for_test("block1", modules, tensors);
  modules.push_back({"lm_head", "Linear"});
  tensors.push_back({"lm_head.weight", {6, 3}});
  return make_tree("TiedModel", modules, tensors, {{"embed.weight", "lm_head.weight"}});
}

const Tensor& tensor_of(nn::Module& model, const std::string& name) {
  const auto [owner, local] = testing::split_last(name);
  const nn::Module& m = model.get_submodule(owner);
  return m.has_buffer(local) ? m.buffer(local) : m.parameter(local);
}

// `got` holds exactly `source` cast to `dtype`.
void expect_same(const Tensor& got, const Tensor& source, DType dtype, const std::string& name) {
  ASSERT_FALSE(got.is_meta()) << name;
  EXPECT_EQ(got.dtype(), dtype) << name;
  EXPECT_EQ(got.shape(), source.shape()) << name;
  EXPECT_EQ(tensor_bytes(got), tensor_bytes(source.to(dtype))) << name;
}

bool is_dat_file(const fs::path& p) { return p.extension() == ".dat"; }

std::size_t count_dat_files(const fs::path& dir) {
  std::size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) n += is_dat_file(e.path());
  return n;
}

// ---- the acceptance case ---------------------------------------------------------------------

// Sharded checkpoint, cpu + disk, bf16 cast, keep_in_fp32_modules, ties: tensor by tensor.
TEST(LoadCheckpoint, ShardedCpuAndDiskWithCastKeepFp32AndTies) {
  TempDir tmp;
  auto model = tied_model();
  // HF checkpoints save a tied weight once.
  const Tensors source = source_for(*model, {"lm_head.weight"});
  const fs::path index =
      write_sharded(tmp.path(), source, {{"embed", "block0.linear1"}, {"block0"}, {"block1"}});
  const fs::path folder = tmp / "offload";

  std::size_t calls = 0;
  io::LoadProgress last;
  const LoadCheckpointResult result = load_checkpoint_in_model(
      *model, index,
      {.device_map = {{"embed", "cpu"}, {"block0", "cpu"}, {"block1", "disk"}, {"lm_head", "cpu"}},
       .offload_folder = folder,
       .dtype = DType::BFloat16,
       .keep_in_fp32_modules = {"linear2"},
       .strict = true,
       .progress = [&](const io::LoadProgress& p) {
         ++calls;
         last = p;
       }});

  const io::OffloadFolderReader disk(folder);
  std::uint64_t cpu_bytes = 0, disk_bytes = 0, view_bytes = 0;
  std::size_t disk_tensors = 0;
  for (const nn::TensorRef& ref : model->tensor_refs(true, true, true, false)) {
    const std::string& name = ref.name;
    const Tensor& src = source.at(name == "lm_head.weight" ? "embed.weight" : name);
    const DType want = !is_floating_point(src.dtype())              ? src.dtype()
                       : name.find("linear2.") != std::string::npos ? DType::Float32
                                                                    : DType::BFloat16;
    const std::uint64_t nbytes = src.numel() * dtype_size(want);
    const bool on_disk = name.rfind("block1.", 0) == 0 && !ref.is_buffer;
    if (on_disk) {
      EXPECT_TRUE(ref.tensor().is_meta()) << name;
      EXPECT_EQ(ref.tensor().dtype(), want) << name;
      expect_same(disk.get(name), src, want, name);
      expect_same(*result.disk_weights->find(name), src, want, name);
      // fp32 linear2 needs no cast: it stays a view of the checkpoint, not a second copy.
      const bool view = want == DType::Float32;
      EXPECT_EQ(result.offload_index.at(name).is_safetensors(), view) << name;
      EXPECT_EQ(fs::exists(folder / (name + ".dat")), !view) << name;
      (view ? view_bytes : disk_bytes) += nbytes;
      ++disk_tensors;
    } else {
      // Buffers of disk modules are loaded too (B5), on the cpu.
      EXPECT_TRUE(ref.tensor().is_cpu()) << name;
      expect_same(ref.tensor(), src, want, name);
      if (name != "lm_head.weight") cpu_bytes += nbytes;
    }
  }
  // The tie survives: one slot, one tensor, under both names.
  EXPECT_EQ(model->child("lm_head").parameter_slot("weight"),
            model->child("embed").parameter_slot("weight"));
  EXPECT_EQ(tensor_of(*model, "lm_head.weight").data_ptr(),
            tensor_of(*model, "embed.weight").data_ptr());

  EXPECT_TRUE(result.unexpected_keys.empty());
  EXPECT_TRUE(result.missing_keys.empty());
  EXPECT_EQ(result.summary.tensors, source.size());
  EXPECT_EQ(result.summary.bytes_per_destination.at("cpu"), cpu_bytes);
  EXPECT_EQ(result.summary.bytes_per_destination.at("disk"), disk_bytes);
  EXPECT_EQ(result.summary.bytes_per_destination.at("disk (checkpoint view)"), view_bytes);
  EXPECT_EQ(calls, source.size());
  EXPECT_EQ(last.tensors_done, last.tensors_total);
  EXPECT_EQ(last.bytes_done, cpu_bytes + disk_bytes + view_bytes);
  EXPECT_EQ(last.bytes_total, last.bytes_done);
  // The index names every disk weight (block1's six parameters) and nothing else.
  EXPECT_EQ(disk_tensors, 6u);
  EXPECT_EQ(disk.index().size(), disk_tensors);
  EXPECT_EQ(disk.index().size(), result.offload_index.size());
}

TEST(LoadCheckpoint, TiedWeightSavedUnderBothNamesIsLoadedOnceAndStaysTied) {
  TempDir tmp;
  auto model = tied_model();
  Tensors source = source_for(*model, {"lm_head.weight"});
  source.emplace("lm_head.weight", source.at("embed.weight"));
  const fs::path file = write_single(tmp.path(), source);
  const auto result = load_checkpoint_in_model(*model, file, {.strict = true});
  EXPECT_EQ(result.summary.tensors, source.size() - 1);
  EXPECT_EQ(tensor_of(*model, "lm_head.weight").data_ptr(),
            tensor_of(*model, "embed.weight").data_ptr());
  expect_same(tensor_of(*model, "lm_head.weight"), source.at("embed.weight"), DType::Float32,
              "lm_head.weight");
}

// ---- disk tier ---------------------------------------------------------------------------------

// §3.8: {"linear1": "cpu", "batchnorm": "disk", "linear2": "cpu"}, no cast: the disk weights stay
// views of the checkpoint, no folder needed, no byte written.
TEST(LoadCheckpoint, DiskWeightsWithoutCastStayViewsOfTheCheckpoint) {
  TempDir tmp;
  auto model = model_for_test();
  const Tensors source = source_for(*model);
  const fs::path file = write_single(tmp.path(), source);
  const auto result = load_checkpoint_in_model(
      *model, file,
      {.device_map = {{"linear1", "cpu"}, {"batchnorm", "disk"}, {"linear2", "cpu"}}});

  EXPECT_TRUE(tensor_of(*model, "batchnorm.weight").is_meta());
  EXPECT_TRUE(tensor_of(*model, "batchnorm.bias").is_meta());
  // Buffers are not offloaded by default, and they are loaded (the reference skipped them, B5).
  for (const char* buffer : {"running_mean", "running_var", "num_batches_tracked"}) {
    const std::string name = std::string("batchnorm.") + buffer;
    expect_same(tensor_of(*model, name), source.at(name), source.at(name).dtype(), name);
  }
  ASSERT_EQ(result.offload_index.size(), 2u);
  for (const auto& [name, entry] : result.offload_index) {
    ASSERT_TRUE(entry.is_safetensors()) << name;
    EXPECT_EQ(fs::path(*entry.safetensors_file), fs::absolute(file).lexically_normal());
    EXPECT_EQ(entry.weight_name.value_or(""), name);
    const Tensor view = *result.disk_weights->find(name);
    EXPECT_FALSE(view.storage().writable()) << name << " should view the mapped file";
    expect_same(view, source.at(name), DType::Float32, name);
  }
  EXPECT_EQ(count_dat_files(tmp.path()), 0u);
  EXPECT_EQ(result.summary.bytes_per_destination.count("disk"), 0u);
}

// A tied weight on disk is stored once; its other name finds the same data (a view of the
// checkpoint without a cast, the offload folder's copy with one).
TEST(LoadCheckpoint, TiedWeightOnDiskIsFoundUnderEveryName) {
  for (const std::optional<DType> dtype :
       {std::optional<DType>{}, std::optional<DType>{DType::BFloat16}}) {
    TempDir tmp;
    auto model = tied_model();
    const Tensors source = source_for(*model, {"lm_head.weight"});
    const fs::path file = write_single(tmp.path(), source);
    const auto result = load_checkpoint_in_model(
        *model, file,
        {.device_map = {{"", "disk"}}, .offload_folder = tmp / "offload", .dtype = dtype});
    ASSERT_NE(result.disk_weights, nullptr);
    const DType expected_dtype = dtype.value_or(DType::Float32);
    for (const char* name : {"embed.weight", "lm_head.weight"}) {
      ASSERT_TRUE(result.disk_weights->contains(name)) << name;
      expect_same(*result.disk_weights->find(name), source.at("embed.weight"), expected_dtype,
                  name);
    }
    EXPECT_FALSE(result.disk_weights->contains("lm_head.bias"));
  }
}

TEST(LoadCheckpoint, OffloadBuffersSendsDiskModuleBuffersToDiskAndRecordsViewsInIndex) {
  TempDir tmp;
  auto model = model_for_test();
  const Tensors source = source_for(*model);
  const fs::path file = write_single(tmp.path(), source);
  const fs::path folder = tmp / "offload";
  load_checkpoint_in_model(
      *model, file,
      {.device_map = {{"linear1", "cpu"}, {"batchnorm", "disk"}, {"linear2", "cpu"}},
       .offload_folder = folder,
       .offload_buffers = true});
  EXPECT_TRUE(tensor_of(*model, "batchnorm.running_mean").is_meta());
  // The observed reference index: all five batchnorm entries; here as checkpoint views.
  const io::OffloadFolderReader disk(folder);
  EXPECT_EQ(disk.keys(),
            (std::vector<std::string>{"batchnorm.bias", "batchnorm.num_batches_tracked",
                                      "batchnorm.running_mean", "batchnorm.running_var",
                                      "batchnorm.weight"}));
  for (const std::string& name : disk.keys()) {
    expect_same(disk.get(name), source.at(name), source.at(name).dtype(), name);
  }
  EXPECT_NE(read_text(folder / "index.json").find("\"safetensors_file\""), std::string::npos);
  EXPECT_EQ(count_dat_files(folder), 0u);
}

// B8: fp8 offload works, stored in the target dtype (W7), integers untouched.
TEST(LoadCheckpoint, Float8DiskOffloadIsStoredInTheTargetDtype) {
  TempDir tmp;
  auto model = model_for_test();
  const Tensors source = source_for(*model);
  const fs::path index = write_sharded(tmp.path(), source, {{"linear1", "batchnorm"}, {"linear2"}});
  const fs::path folder = tmp / "offload";
  load_checkpoint_in_model(*model, index,
                           {.device_map = {{"", "disk"}},
                            .offload_folder = folder,
                            .dtype = DType::Float8E4M3FN,
                            .offload_buffers = true});
  const io::OffloadFolderReader disk(folder);
  ASSERT_EQ(disk.keys().size(), source.size());
  for (const auto& [name, src] : source) {
    const DType want = is_floating_point(src.dtype()) ? DType::Float8E4M3FN : src.dtype();
    EXPECT_EQ(tensor_of(*model, name).dtype(), want) << name;
    expect_same(disk.get(name), src, want, name);
  }
  EXPECT_EQ(disk.index().at("linear1.weight").dtype, DType::Float8E4M3FN);
  EXPECT_FALSE(disk.index().at("linear1.weight").is_safetensors());
  EXPECT_TRUE(disk.index().at("batchnorm.num_batches_tracked").is_safetensors());
  EXPECT_NE(read_text(folder / "index.json").find("\"float8_e4m3fn\""), std::string::npos);
}

TEST(LoadCheckpoint, MergesIntoAnExistingOffloadIndex) {
  TempDir tmp;
  auto model = model_for_test();
  const Tensors source = source_for(*model);
  const fs::path file = write_single(tmp.path(), source);
  const fs::path folder = tmp / "offload";
  io::offload_state_dict(folder, {{"other", Tensor::ones({2})}});
  load_checkpoint_in_model(
      *model, file,
      {.device_map = {{"", "disk"}}, .offload_folder = folder, .dtype = DType::Float16});
  const io::OffloadFolderReader disk(folder);
  EXPECT_TRUE(disk.contains("other"));
  EXPECT_TRUE(disk.contains("linear2.weight"));
  expect_same(disk.get("linear2.weight"), source.at("linear2.weight"), DType::Float16, "l2");
}

TEST(LoadCheckpoint, DiskCopyWithoutOffloadFolderIsRefusedBeforeLoading) {
  TempDir tmp;
  auto model = model_for_test();
  const fs::path file = write_single(tmp.path(), source_for(*model));
  try {
    load_checkpoint_in_model(
        *model, file, {.device_map = {{"linear1", "cpu"}, {"", "disk"}}, .dtype = DType::Float16});
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("offload_folder"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(tensor_of(*model, "linear1.weight").is_meta()) << "nothing may be loaded";
}

// ---- dtype rules -------------------------------------------------------------------------------

TEST(LoadCheckpoint, KeepInFp32MatchesWholeComponentsForHalfAndBfloat16) {
  ModuleSpecs modules = {{"linear2", "Linear"},
                         {"linear21", "Linear"},
                         {"block", "Block"},
                         {"block.linear2", "Linear"}};
  Specs tensors;
  for (const char* m : {"linear2", "linear21", "block.linear2"}) {
    testing::append(tensors, testing::linear(m, 2, 2));
  }
  for (DType dtype : {DType::Float16, DType::BFloat16, DType::Float64}) {
    TempDir tmp;
    auto model = make_tree("M", modules, tensors);
    const Tensors source = source_for(*model);
    const fs::path file = write_single(tmp.path(), source);
    load_checkpoint_in_model(*model, file, {.dtype = dtype, .keep_in_fp32_modules = {"linear2"}});
    const DType kept = dtype == DType::Float64 ? DType::Float64 : DType::Float32;
    expect_same(tensor_of(*model, "linear2.weight"), source.at("linear2.weight"), kept, "l2");
    expect_same(tensor_of(*model, "block.linear2.bias"), source.at("block.linear2.bias"), kept,
                "block.l2");
    expect_same(tensor_of(*model, "linear21.weight"), source.at("linear21.weight"), dtype, "l21");
  }
}

TEST(LoadCheckpoint, ComponentMatching) {
  EXPECT_TRUE(matches_module_components("linear2", "linear2"));
  EXPECT_TRUE(matches_module_components("a.linear2.weight", "linear2"));
  EXPECT_TRUE(matches_module_components("model.block.linear2.bias", "block.linear2"));
  EXPECT_FALSE(matches_module_components("linear21.weight", "linear2"));
  EXPECT_FALSE(matches_module_components("xlinear2.weight", "linear2"));
  EXPECT_FALSE(matches_module_components("block.linear2x.bias", "block.linear2"));
  EXPECT_FALSE(matches_module_components("a.weight", ""));
}

TEST(LoadCheckpoint, IntegerTensorsAreNeverCastAndNoDtypeKeepsTheModulesDtype) {
  TempDir tmp;
  auto model = testing::model_for_test(DType::BFloat16);  // bf16 floats, int64 counter
  const Tensors source = source_for(*model);              // saved as fp32
  const fs::path file = write_single(tmp.path(), source);
  load_checkpoint_in_model(*model, file, {.offload_state_dict = true});
  expect_same(tensor_of(*model, "linear1.weight"), source.at("linear1.weight"), DType::BFloat16,
              "l1");
  expect_same(tensor_of(*model, "batchnorm.num_batches_tracked"),
              source.at("batchnorm.num_batches_tracked"), DType::Int64, "nbt");

  auto again = testing::model_for_test();
  load_checkpoint_in_model(*again, file, {.dtype = DType::Float16});
  expect_same(tensor_of(*again, "batchnorm.running_var"), source.at("batchnorm.running_var"),
              DType::Float16, "running_var");
  expect_same(tensor_of(*again, "batchnorm.num_batches_tracked"),
              source.at("batchnorm.num_batches_tracked"), DType::Int64, "nbt");
}

TEST(LoadCheckpoint, CpuWeightsArePlacedWithOrWithoutPinning) {
  TempDir tmp;
  auto model = model_for_test();
  const Tensors source = source_for(*model);
  const fs::path file = write_single(tmp.path(), source);
  for (bool pin : {false, true}) {
    load_checkpoint_in_model(*model, file, {.pin_cpu_weights = pin});
    const Tensor& w = tensor_of(*model, "linear1.weight");
    expect_same(w, source.at("linear1.weight"), DType::Float32, "l1");
    EXPECT_TRUE(w.storage().writable());
    if (!pin) EXPECT_FALSE(w.is_pinned());
    // Pinned memory needs a GPU backend; without one the allocation falls back to pageable.
    if (pin && find_backend(DeviceType::CUDA) != nullptr) EXPECT_TRUE(w.is_pinned());
  }
}

// GPU placement: runs where a CUDA backend is registered (the device machine).
TEST(LoadCheckpoint, GpuMappedWeightsLandOnTheirGpuCastOnce) {
  if (find_backend(DeviceType::CUDA) == nullptr) GTEST_SKIP() << "no CUDA backend";
  TempDir tmp;
  auto model = model_for_test();
  const Tensors source = source_for(*model);
  const fs::path index = write_sharded(tmp.path(), source, {{"linear1"}, {"batchnorm", "linear2"}});
  const auto result = load_checkpoint_in_model(
      *model, index, {.device_map = {{"linear1", 0}, {"", "cpu"}}, .dtype = DType::BFloat16});
  for (const auto& [name, src] : source) {
    const DType want = is_floating_point(src.dtype()) ? DType::BFloat16 : src.dtype();
    const Tensor& got = tensor_of(*model, name);
    EXPECT_EQ(got.device(), name.rfind("linear1.", 0) == 0 ? Device::cuda(0) : Device::cpu())
        << name;
    expect_same(got.to(Device::cpu()), src, want, name);
    if (got.is_cpu()) EXPECT_TRUE(got.is_pinned()) << name << ": pinned by default with CUDA";
  }
  EXPECT_EQ(result.summary.bytes_per_destination.at("cuda:0"), (12u + 4u) * 2u);
}

// Tensors kept in their stored dtype go to the GPU through pinned staging chunks read by worker
// threads (staged_load.h): many small tensors, empty ones, and tensors of several 8 MiB chunks
// with a partial last chunk must all arrive byte for byte, ordered before compute.
TEST(LoadCheckpoint, GpuWeightsInTheirStoredDtypeArriveThroughStagingByteForByte) {
  if (find_backend(DeviceType::CUDA) == nullptr) GTEST_SKIP() << "no CUDA backend";
  TempDir tmp;
  ModuleSpecs modules;
  Specs tensors;
  const std::vector<std::pair<std::int64_t, std::int64_t>> shapes = {
      {1, 1}, {3, 7}, {0, 5}, {2049, 1031}, {4096, 1537}, {64, 64}};  // 8.1 MiB, 24 MiB in fp32
  for (int block = 0; block < 40; ++block) {  // more tensors than are kept in flight
    const auto [in, out] = shapes[static_cast<std::size_t>(block) % shapes.size()];
    const std::string name = fmt::format("l{}", block);
    modules.push_back({name, "Linear"});
    testing::append(tensors, testing::linear(name, in, out));
  }
  auto model = make_tree("Stack", modules, tensors);
  Tensors source;
  int seed = 0;
  for (const auto& [name, t] : model->state_dict()) {
    const std::int64_t n = t.numel();
    std::vector<float> values(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i)
      values[static_cast<std::size_t>(i)] = float(seed * 7919 + i % 104729);
    source.emplace(name, Tensor::from_vector<float>(values, t.shape()));
    ++seed;
  }
  const fs::path file = write_single(tmp.path(), source);
  const auto result = load_checkpoint_in_model(*model, file, {.device_map = {{"", 0}}});
  std::uint64_t bytes = 0;
  for (const auto& [name, src] : source) {
    const Tensor& got = tensor_of(*model, name);
    EXPECT_EQ(got.device(), Device::cuda(0)) << name;
    expect_same(got.to(Device::cpu()), src, DType::Float32, name);
    bytes += src.nbytes();
  }
  EXPECT_EQ(result.summary.bytes_per_destination.at("cuda:0"), bytes);
}

// ---- keys --------------------------------------------------------------------------------------

TEST(LoadCheckpoint, UnexpectedKeysAreWarnedOrRefusedWhenStrict) {
  TempDir tmp;
  auto model = model_for_test();
  Tensors source = source_for(*model);
  source.emplace("foo", Tensor::ones({4, 5}));
  const fs::path file = write_single(tmp.path(), source);
  try {
    load_checkpoint_in_model(*model, file, {.device_map = {{"", "cpu"}}, .strict = true});
    FAIL() << "expected CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("'foo'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("unexpected"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(tensor_of(*model, "linear1.weight").is_meta()) << "strict checks come first";

  LogCapture logs;
  const auto result = load_checkpoint_in_model(*model, file, {.device_map = {{"", "cpu"}}});
  EXPECT_EQ(result.unexpected_keys, std::vector<std::string>{"foo"});
  EXPECT_TRUE(logs.warned("were not used when"));
  expect_same(tensor_of(*model, "linear1.weight"), source.at("linear1.weight"), DType::Float32,
              "l1");
}

TEST(LoadCheckpoint, MissingKeysAreReportedAndStrictRefusesThem) {
  TempDir tmp;
  auto model = model_for_test();
  const fs::path file = write_single(tmp.path(), source_for(*model, {"linear2.bias"}));
  try {
    load_checkpoint_in_model(*model, file, {.strict = true});
    FAIL() << "expected CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'linear2.bias'"), std::string::npos) << e.what();
  }
  LogCapture logs;
  const auto result = load_checkpoint_in_model(*model, file);
  EXPECT_EQ(result.missing_keys, std::vector<std::string>{"linear2.bias"});
  EXPECT_TRUE(tensor_of(*model, "linear2.bias").is_meta());
  EXPECT_TRUE(logs.warned("linear2.bias"));
}

TEST(LoadCheckpoint, StrictListsAtMostTwentyKeysWithACount) {
  TempDir tmp;
  auto model = model_for_test();
  Tensors source = source_for(*model);
  for (int i = 0; i < 25; ++i) source.emplace(fmt::format("extra.{:02}", i), Tensor::ones({1}));
  const fs::path file = write_single(tmp.path(), source);
  try {
    load_checkpoint_in_model(*model, file, {.strict = true});
    FAIL() << "expected CheckpointError";
  } catch (const CheckpointError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("25 unexpected"), std::string::npos) << what;
    EXPECT_NE(what.find("and 5 more"), std::string::npos) << what;
    EXPECT_EQ(what.find("'extra.24'"), std::string::npos) << what;
  }
}

// ---- bad input ---------------------------------------------------------------------------------

TEST(LoadCheckpoint, ShapeMismatchNamesFileTensorAndBothShapes) {
  TempDir tmp;
  auto model = model_for_test();
  Tensors source = source_for(*model);
  source["linear1.weight"] = Tensor::ones({3, 4});  // the model's is [4, 3]
  const fs::path index = write_sharded(tmp.path(), source, {{"linear1"}, {"batchnorm", "linear2"}});
  try {
    load_checkpoint_in_model(*model, index);
    FAIL() << "expected CheckpointError";
  } catch (const CheckpointError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("model-00001-of-00002.safetensors"), std::string::npos) << what;
    EXPECT_NE(what.find("'linear1.weight'"), std::string::npos) << what;
    EXPECT_NE(what.find(shape_str({3, 4})), std::string::npos) << what;
    EXPECT_NE(what.find(shape_str({4, 3})), std::string::npos) << what;
  }
  EXPECT_TRUE(tensor_of(*model, "linear2.weight").is_meta()) << "nothing may be loaded";
}

TEST(LoadCheckpoint, IntegerTensorForAFloatParameterIsACheckpointError) {
  TempDir tmp;
  auto model = model_for_test();
  Tensors source = source_for(*model);
  source["linear1.bias"] = Tensor::zeros({4}, DType::Int64);
  const fs::path file = write_single(tmp.path(), source);
  EXPECT_THROW(load_checkpoint_in_model(*model, file), CheckpointError);
}

TEST(LoadCheckpoint, BadOptionsAreRefused) {
  TempDir tmp;
  auto model = model_for_test();
  const fs::path file = write_single(tmp.path(), source_for(*model));
  EXPECT_THROW(load_checkpoint_in_model(*model, file, {.dtype = DType::Int8}), InvalidArgument);
  // A tensor no entry covers.
  EXPECT_THROW(load_checkpoint_in_model(*model, file, {.device_map = {{"linear1", "cpu"}}}),
               InvalidArgument);
  EXPECT_THROW(load_checkpoint_in_model(*model, file, {.device_map = {{"", "mps"}}}), NotSupported);
  if (find_backend(DeviceType::CUDA) == nullptr) {
    EXPECT_THROW(load_checkpoint_in_model(*model, file, {.device_map = {{"", 0}}}), DeviceError);
  }
  EXPECT_TRUE(tensor_of(*model, "linear1.weight").is_meta());
}

// ---- the weights-map adapter -------------------------------------------------------------------

TEST(WeightSourceMap, AdaptsAWeightSourceToTheModuleLayersInterface) {
  auto source = std::make_shared<io::InMemoryWeights>(
      std::map<std::string, Tensor, std::less<>>{{"a.weight", Tensor::ones({2})},
                                                 {"b.weight", Tensor::zeros({3})}},
      "test weights");
  const auto map = as_weights_map(source);
  EXPECT_TRUE(map->contains("a.weight"));
  EXPECT_FALSE(map->find("c.weight").has_value());
  EXPECT_EQ(map->find("b.weight")->shape(), Shape{3});
  EXPECT_EQ(map->keys(), (std::vector<std::string>{"a.weight", "b.weight"}));
  EXPECT_EQ(map->describe(), "test weights");
  EXPECT_THROW(map->at("c.weight"), CheckpointError);
  const auto view = nn::with_prefix(map, "a.");
  EXPECT_EQ(view->at("weight").shape(), Shape{2});
  EXPECT_THROW(WeightSourceMap(nullptr), InvalidArgument);
}

}  // namespace
}  // namespace strata::placement
