// Atomic writes: a write interrupted at any point (here: a child process that dies mid-write)
// never leaves something a reader takes for a checkpoint or an offload folder.

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/io_testing.h"
#include "ops/throws_naming.h"
#include "strata/io/atomic_file.h"
#include "strata/io/checkpoint.h"
#include "strata/io/offload.h"

namespace strata::io {
namespace {

namespace fs = std::filesystem;
using strata::testing::TempDir;
using strata::testing::throws_naming;

// Ends the child process on the spot: no destructors run, temporary files stay, as after a
// crash. `work` must call it while its writers are still alive.
[[noreturn]] void crash() { ::_exit(0); }

// Runs `work` in a child process that must crash() (exit status 0) partway through.
template <typename F>
void run_until_crash(F&& work) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    try {
      work();
    } catch (...) {
      ::_exit(2);
    }
    ::_exit(3);  // returned without crashing: the test is wrong
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
}

std::vector<fs::path> temporaries(const fs::path& folder) {
  std::vector<fs::path> out;
  for (const auto& item : fs::directory_iterator(folder)) {
    if (is_temporary_file_name(item.path())) out.push_back(item.path());
  }
  return out;
}

TEST(AtomicFileWriter, TemporaryNamesAreRecognised) {
  EXPECT_TRUE(is_temporary_file_name(".model.safetensors.tmp-a1B2c3"));
  EXPECT_TRUE(is_temporary_file_name("/x/.index.json.tmp-zzzzzz"));
  EXPECT_FALSE(is_temporary_file_name("model.safetensors"));
  EXPECT_FALSE(is_temporary_file_name(".hidden"));
  EXPECT_FALSE(is_temporary_file_name("model.safetensors.tmp-abcdef"));
}

TEST(AtomicFileWriter, NothingIsVisibleBeforeCommitAndNothingLeftWithout) {
  TempDir dir;
  {
    AtomicFileWriter w(dir / "f.bin");
    w.write("abc", 3);
    EXPECT_FALSE(fs::exists(dir / "f.bin"));
    EXPECT_TRUE(fs::exists(w.temp_path()));
    EXPECT_EQ(w.temp_path().parent_path(), dir.path());
  }
  EXPECT_TRUE(fs::is_empty(dir.path()));
  AtomicFileWriter w(dir / "f.bin");
  w.write("abcd", 4);
  w.commit();
  EXPECT_EQ(strata::testing::read_text(dir / "f.bin"), "abcd");
  EXPECT_EQ(fs::status(dir / "f.bin").permissions() & fs::perms::others_read,
            fs::perms::others_read);
  EXPECT_THROW(w.write("x", 1), IoError);
  EXPECT_THROW(w.commit(), IoError);
  EXPECT_TRUE(temporaries(dir.path()).empty());
}

TEST(AtomicWrite, ACrashedCheckpointWriteIsNeverReadAsTheCheckpoint) {
  TempDir dir;
  run_until_crash([&] {
    AtomicFileWriter w(dir / "model.safetensors");
    const std::uint64_t n = 1000;
    w.write(&n, 8);
    w.write("{\"a\":", 5);  // half a header, then the process dies
    crash();
  });
  ASSERT_EQ(temporaries(dir.path()).size(), 1u);
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { discover_checkpoint(dir.path()); },
                                             {"neither model.safetensors"}));
  // With a previous checkpoint in place, that one is what readers get.
  save_safetensors(dir / "model.safetensors", {{"w", Tensor::full({2}, 3.0, DType::Float32)}});
  EXPECT_EQ(CheckpointReader(dir.path()).get("w").to_vector<float>(),
            (std::vector<float>{3.0f, 3.0f}));
}

TEST(AtomicWrite, ACrashedOffloadLeavesAFolderReadersRefuse) {
  TempDir dir;
  const Tensor t = Tensor::ones({16});
  run_until_crash([&] {
    OffloadFolderWriter writer(dir.path());
    writer.write("a", t);
    writer.write("b", t);
    crash();  // before commit(): no index.json
  });
  EXPECT_TRUE(fs::exists(dir / "a.dat"));
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { OffloadFolderReader r(dir.path()); },
                                             {"no index.json"}));
  // A crash while adding to a complete folder leaves the earlier entries readable.
  offload_state_dict(dir.path(), {{"a", t}});
  run_until_crash([&] {
    OffloadFolderWriter writer(dir.path());
    writer.write("c", t);
    crash();
  });
  const OffloadFolderReader reader(dir.path());
  EXPECT_EQ(reader.keys(), std::vector<std::string>{"a"});
}

}  // namespace
}  // namespace strata::io
