#pragma once
// Helpers for the io tests: a temporary folder, raw file access, and tensors of any dtype with
// deterministic bytes (so a round trip can be checked byte for byte).

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "strata/core/tensor.h"

namespace strata::testing {

// A fresh folder under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "strata-io-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline std::vector<std::uint8_t> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), {});
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_bytes(const std::filesystem::path& path, const void* data, std::size_t n) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
}
inline void write_bytes(const std::filesystem::path& path, const std::vector<std::uint8_t>& b) {
  write_bytes(path, b.data(), b.size());
}
inline void write_text(const std::filesystem::path& path, const std::string& text) {
  write_bytes(path, text.data(), text.size());
}

// The bytes of a CPU tensor in row-major order.
inline std::vector<std::uint8_t> tensor_bytes(const Tensor& t) {
  const Tensor c = t.to(Device::cpu()).contiguous();
  const auto* p = static_cast<const std::uint8_t*>(c.nbytes() ? c.data_ptr() : nullptr);
  return std::vector<std::uint8_t>(p, p + c.nbytes());
}

// A contiguous CPU tensor whose bytes come from a fixed generator (splitmix64): every bit
// pattern can occur (NaNs, infinities, subnormals), except that bool bytes are 0 or 1.
inline Tensor pattern_tensor(DType dtype, const Shape& shape, std::uint64_t seed) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* p = static_cast<std::uint8_t*>(t.nbytes() ? t.data_ptr() : nullptr);
  std::uint64_t x = seed;
  for (std::size_t i = 0; i < t.nbytes(); ++i) {
    x += 0x9e3779b97f4a7c15ull;
    std::uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    p[i] = dtype == DType::Bool ? static_cast<std::uint8_t>(z & 1) : static_cast<std::uint8_t>(z);
  }
  return t;
}

}  // namespace strata::testing
