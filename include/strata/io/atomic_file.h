#pragma once
// AtomicFileWriter: writes a file under a temporary name in the target's folder and renames it
// over the target on commit(). Readers therefore see either the old file or the complete new
// one, never a torn write. An uncommitted writer removes its temporary file when destroyed; a
// crash can leave one behind, named ".<target name>.tmp-XXXXXX", which no Strata reader ever
// opens (discovery looks for exact names and "*.index.json").

#include <cstddef>
#include <cstdint>
#include <filesystem>

namespace strata::io {

class AtomicFileWriter {
 public:
  // Creates the temporary file next to `target` (the folder must exist). Throws IoError.
  explicit AtomicFileWriter(std::filesystem::path target);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Appends `nbytes` bytes (retries short writes and EINTR). Throws IoError (disk full, ...).
  void write(const void* data, std::size_t nbytes);
  std::uint64_t bytes_written() const { return written_; }

  // Makes the file visible under its final name. With `durable`, the data is fsync'ed before
  // the rename and the folder after it, so the new file survives a power loss; without it the
  // rename is still atomic for other processes, and the caller syncs later (see syncfs_folder).
  void commit(bool durable = true);

  const std::filesystem::path& target() const { return target_; }
  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  std::filesystem::path target_;
  std::filesystem::path temp_;
  int fd_ = -1;
  std::uint64_t written_ = 0;
  bool committed_ = false;
};

// Flushes every dirty page of the filesystem holding `folder` (syncfs), so that files renamed
// into place without `durable` are on disk before an index that names them is written.
void sync_filesystem_of(const std::filesystem::path& folder);

// Writes `nbytes` to `target` atomically and durably (a convenience over AtomicFileWriter).
void write_file_atomically(const std::filesystem::path& target, const void* data,
                           std::size_t nbytes);

// True for names AtomicFileWriter uses for its temporary files (".<name>.tmp-XXXXXX").
bool is_temporary_file_name(const std::filesystem::path& name);

}  // namespace strata::io
