// Offload folders whose writer is killed (SIGKILL) in the middle of a write: readers refuse a
// folder without index.json, disk_offload and dispatch_model rewrite it and then give the
// unoffloaded model's outputs bit for bit, and a writer replacing entries of a complete folder
// never leaves an index entry that describes other bytes than its file holds.
//
// The writer is a child process: this test binary run again with a filter that selects only
// OffloadCrashChild (fork() alone would copy a process whose thread pool is running). The child
// lowers its file size limit (RLIMIT_FSIZE) below the size of one of the tensors it writes: the
// write that crosses it raises SIGXFSZ, whose handler tells the parent through a pipe and waits
// forever. The parent then kills it with SIGKILL. So the kill always lands inside the write of
// that tensor, with earlier files complete and no index.json, and nothing depends on timing.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "io/io_testing.h"
#include "ops/throws_naming.h"
#include "placement/placement_models.h"
#include "strata/core/error.h"
#include "strata/io/atomic_file.h"
#include "strata/io/offload.h"
#include "strata/placement/dispatch.h"
#include "strata/placement/offload.h"

extern char** environ;

namespace strata::placement {
namespace {

namespace fs = std::filesystem;
using strata::testing::TempDir;
using strata::testing::throws_naming;
using testing::expect_bit_identical;
using testing::Stack;

// What the parent tells the child.
constexpr const char* kDirEnv = "STRATA_TEST_CHILD_WRITE_DIR";
constexpr const char* kModeEnv = "STRATA_TEST_CHILD_MODE";
constexpr const char* kParentEnv = "STRATA_TEST_CHILD_PARENT";
// The child's end of the pipe that says "stopped inside a write".
constexpr int kSignalFd = 200;
// No file of the child may grow past this: the norms' files (1 KiB) fit, fc1.weight (512 KiB)
// does not.
constexpr rlim_t kFileLimit = 64 << 10;
constexpr std::int64_t kBigDim = 256;
constexpr int kBlocks = 3;
// Child exit statuses when it was not stopped.
constexpr int kChildThrew = 2;
constexpr int kChildFinished = 3;

// The model both processes build: the same weights from the same seed.
std::unique_ptr<Stack> big_stack() {
  auto model = std::make_unique<Stack>(kBlocks, kBigDim);
  testing::randomize(*model, 21);
  return model;
}

// dispatch_model's map: blocks 1 and 2 on disk, so their tensors go to the offload folder.
DeviceMap disk_map(const std::string& resident) {
  return {{"blocks.0", resident}, {"blocks.1", "disk"}, {"blocks.2", "disk"}};
}

// A complete folder: four float32 entries of 64 elements. The replacing writer stores "a" as
// float16 (another dtype), "c" with new values (the same description) and "b" with another
// shape, too large to finish.
std::vector<std::pair<std::string, Tensor>> old_entries() {
  std::vector<std::pair<std::string, Tensor>> out;
  std::uint64_t seed = 100;
  for (const char* name : {"a", "b", "c", "d"}) {
    out.emplace_back(name, strata::testing::random_tensor({64}, DType::Float32, seed++));
  }
  return out;
}
struct Replacement {
  std::string name;
  Tensor value;
  DType stored;
};
std::vector<Replacement> replacements() {
  return {{"a", strata::testing::random_tensor({64}, DType::Float32, 200), DType::Float16},
          {"c", strata::testing::random_tensor({64}, DType::Float32, 201), DType::Float32},
          {"b", strata::testing::random_tensor({kFileLimit}, DType::Float32, 202), DType::Float32}};
}

// ---- the child -------------------------------------------------------------------------------

extern "C" void stop_inside_write(int) {
  const char byte = 's';
  (void)!::write(kSignalFd, &byte, 1);
  for (;;) ::pause();  // until the parent's SIGKILL
}

void write_as_child(const std::string& mode, const fs::path& dir) {
  if (mode == "disk_offload") {
    disk_offload(*big_stack(), {.offload_dir = dir, .execution_device = Device::cpu()});
  } else if (mode == "dispatch") {
    dispatch_model(*big_stack(), disk_map("cpu"),
                   {.main_device = Device::cpu(), .offload_dir = dir});
  } else if (mode == "replace") {
    io::OffloadFolderWriter writer(dir);
    for (const Replacement& r : replacements()) writer.write(r.name, r.value, r.stored);
    writer.commit();
  }
}

// Runs only in the child process (the parent passes --gtest_also_run_disabled_tests).
TEST(OffloadCrashChild, DISABLED_WriteUntilStopped) {
  const char* dir = std::getenv(kDirEnv);
  const char* mode = std::getenv(kModeEnv);
  const char* parent = std::getenv(kParentEnv);
  if (dir == nullptr || mode == nullptr || parent == nullptr) {
    GTEST_SKIP() << "runs only as the child of the OffloadCrash tests";
  }
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
  if (std::to_string(::getppid()) != parent) ::_exit(kChildThrew);
  sigset_t xfsz;
  sigemptyset(&xfsz);
  sigaddset(&xfsz, SIGXFSZ);
  ::sigprocmask(SIG_UNBLOCK, &xfsz, nullptr);
  struct sigaction action = {};
  action.sa_handler = stop_inside_write;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGXFSZ, &action, nullptr);
  rlimit limit = {};
  ::getrlimit(RLIMIT_FSIZE, &limit);
  limit.rlim_cur = kFileLimit;
  ::setrlimit(RLIMIT_FSIZE, &limit);
  try {
    write_as_child(mode, dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child: %s\n", e.what());
    ::_exit(kChildThrew);
  }
  ::_exit(kChildFinished);  // the writer never crossed the limit: the parent reports it
}

// ---- the parent ------------------------------------------------------------------------------

std::vector<std::string> child_environment(const fs::path& dir, const std::string& mode) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry = *e;
    // gtest's sharding and output variables would filter the child's test away or overwrite
    // the parent's report.
    if (entry.starts_with("GTEST_") || entry.starts_with("STRATA_TEST_CHILD_")) continue;
    env.emplace_back(entry);
  }
  env.push_back(std::string(kDirEnv) + "=" + dir.string());
  env.push_back(std::string(kModeEnv) + "=" + mode);
  env.push_back(std::string(kParentEnv) + "=" + std::to_string(::getpid()));
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Runs `mode` in a child process writing into `dir` until it is stopped inside a write, then
// kills it with SIGKILL. The child's output goes to `log`, shown when something went wrong.
void kill_writer_mid_write(const fs::path& dir, const std::string& mode, const fs::path& log) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], kSignalFd);  // without O_CLOEXEC
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  // This binary, even if a rebuild replaced the file since it started.
  std::vector<std::string> args = {"/proc/self/exe",
                                   "--gtest_filter=OffloadCrashChild.DISABLED_WriteUntilStopped",
                                   "--gtest_also_run_disabled_tests"};
  std::vector<std::string> env = child_environment(dir, mode);
  std::vector<char*> argv = c_strings(args);
  std::vector<char*> envp = c_strings(env);
  pid_t pid = -1;
  const int spawned = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (spawned != 0) ::close(pipe_fds[0]);
  ASSERT_EQ(spawned, 0) << "posix_spawn: " << std::strerror(spawned);

  char byte = 0;
  ssize_t n = -1;
  do {
    n = ::read(pipe_fds[0], &byte, 1);
  } while (n < 0 && errno == EINTR);
  ::close(pipe_fds[0]);
  if (n == 1) ::kill(pid, SIGKILL);  // stopped inside the write: kill it there
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(n == 1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the child was not stopped inside a write (exit status "
      << (WIFEXITED(status) ? WEXITSTATUS(status) : -1) << "; " << kChildFinished
      << ": it finished below the file size limit); its output:\n"
      << strata::testing::read_text(log);
}

std::vector<std::string> files_in(const fs::path& dir, bool temporary) {
  std::vector<std::string> out;
  for (const auto& item : fs::directory_iterator(dir)) {
    if (io::is_temporary_file_name(item.path()) == temporary) {
      out.push_back(item.path().filename().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// What the killed writer left: the files of the tensors before `cut` whole, `cut` as a
// temporary file cut at the limit, no index.json; readers refuse the folder, naming it.
void expect_interrupted(const fs::path& dir, const std::vector<std::string>& complete,
                        const std::string& cut) {
  EXPECT_FALSE(fs::exists(dir / "index.json"));
  EXPECT_EQ(files_in(dir, /*temporary=*/false), complete);
  const std::vector<std::string> temporary = files_in(dir, /*temporary=*/true);
  ASSERT_EQ(temporary.size(), 1u);
  EXPECT_TRUE(temporary[0].starts_with("." + cut + ".dat.tmp-")) << temporary[0];
  EXPECT_EQ(fs::file_size(dir / temporary[0]), kFileLimit) << "killed inside that write";
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { io::OffloadFolderReader reader(dir); },
                                             {dir.string(), "no index.json"}));
}

class OffloadCrash : public testing::ExecutionDeviceTest {
 protected:
  // Kills the child writing `mode` inside the write of the fc1.weight of `first_block`, the first
  // block it writes; then `offload` (the parent's own run, on the same folder) must rewrite the
  // folder with the tensors of the blocks from `first_block` on, and give the unoffloaded
  // model's outputs.
  void kill_then_rewrite(const std::string& mode, int first_block,
                         const std::function<void(Stack&)>& offload) {
    ASSERT_NO_FATAL_FAILURE(kill_writer_mid_write(dir_, mode, tmp_ / "child.log"));
    const std::string block = "blocks." + std::to_string(first_block);
    expect_interrupted(dir_, {block + ".norm.bias.dat", block + ".norm.weight.dat"},
                       block + ".fc1.weight");

    const auto model = big_stack();
    const Tensor input = testing::stack_input(kBigDim);
    const Tensor expected = testing::unhooked_output(*model, input, exec_);
    std::vector<std::string> stored;
    for (const auto& [name, t] : model->state_dict()) {
      if (std::stoi(name.substr(std::string("blocks.").size())) >= first_block) {
        stored.push_back(name);
      }
    }
    std::sort(stored.begin(), stored.end());
    offload(*model);
    EXPECT_EQ(io::OffloadFolderReader(dir_).keys(), stored) << "rewritten whole";
    EXPECT_TRUE(files_in(dir_, /*temporary=*/true).empty()) << "the cut file was removed";
    for (int i = 0; i < 2; ++i) expect_bit_identical(expected, (*model)(input).tensor());
  }

  TempDir tmp_;
  const fs::path dir_ = tmp_ / "offload";
};

TEST_P(OffloadCrash, KilledDiskOffloadIsRefusedThenRewritten) {
  kill_then_rewrite("disk_offload", 0, [&](Stack& model) {
    disk_offload(model, {.offload_dir = dir_, .execution_device = exec_});
  });
}

TEST_P(OffloadCrash, KilledDispatchIsRefusedThenRewritten) {
  kill_then_rewrite("dispatch", 1, [&](Stack& model) {
    dispatch_model(model, disk_map(gpu_or_cpu()), {.main_device = exec_, .offload_dir = dir_});
  });
}

INSTANTIATE_TEST_SUITE_P(Devices, OffloadCrash, ::testing::Values(Device::cpu(), Device::cuda(0)),
                         [](const auto& info) { return info.param.is_cuda() ? "cuda" : "cpu"; });

std::vector<std::uint8_t> bytes_of(const Tensor& t, DType dtype) {
  return strata::testing::tensor_bytes(t.to(dtype));
}

// A complete folder, then a writer replacing entries is killed mid-write: the index went before
// the first named file was replaced, so the folder is refused as incomplete rather than loading
// a mix of old and new tensors (a was replaced whole, c too, under the same description, b is
// cut, d untouched). Nothing half-written is named, and writing again completes the folder.
TEST(OffloadCrashReplace, KilledReplacingWriterLeavesAnIncompleteFolder) {
  TempDir tmp;
  const fs::path dir = tmp / "offload";
  const auto old = old_entries();
  io::offload_state_dict(dir, old);
  ASSERT_NO_FATAL_FAILURE(kill_writer_mid_write(dir, "replace", tmp / "child.log"));
  const std::vector<Replacement> replaced = replacements();

  EXPECT_FALSE(fs::exists(dir / io::kOffloadIndexName));
  EXPECT_TRUE(strata::testing::throws_naming<CheckpointError>(
      [&] { io::OffloadFolderReader reader(dir); }, {dir.string()}));
  EXPECT_EQ(strata::testing::read_bytes(dir / "a.dat"),
            bytes_of(replaced[0].value, DType::Float16));
  EXPECT_EQ(strata::testing::read_bytes(dir / "c.dat"),
            bytes_of(replaced[1].value, DType::Float32));
  EXPECT_EQ(strata::testing::read_bytes(dir / "b.dat"), bytes_of(old[1].second, DType::Float32));
  EXPECT_EQ(strata::testing::read_bytes(dir / "d.dat"), bytes_of(old[3].second, DType::Float32));
  const std::vector<std::string> temporary = files_in(dir, /*temporary=*/true);
  ASSERT_EQ(temporary.size(), 1u);
  EXPECT_TRUE(temporary[0].starts_with(".b.dat.tmp-")) << temporary[0];

  // The next run writes the whole folder again (without an index, nothing old is kept).
  io::OffloadFolderWriter writer(dir);
  for (const Replacement& r : replaced) writer.write(r.name, r.value, r.stored);
  writer.write("d", old[3].second);
  writer.commit();
  EXPECT_TRUE(files_in(dir, /*temporary=*/true).empty()) << "the cut file was removed";
  const io::OffloadFolderReader after(dir);
  EXPECT_EQ(after.keys(), (std::vector<std::string>{"a", "b", "c", "d"}));
  for (const Replacement& r : replaced) {
    EXPECT_EQ(strata::testing::tensor_bytes(after.get(r.name)), bytes_of(r.value, r.stored))
        << r.name;
  }
}

}  // namespace
}  // namespace strata::placement
