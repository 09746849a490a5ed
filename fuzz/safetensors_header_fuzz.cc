// libFuzzer target: the safetensors header validator. Any input must either parse into a header
// whose every entry lies inside the input, or throw CheckpointError; anything else (a crash, a
// sanitizer report, another exception type) is a bug.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "strata/core/error.h"
#include "strata/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  try {
    const auto header = strata::io::parse_safetensors_header(bytes, "fuzz.safetensors");
    // Invariants a reader relies on.
    if (header.data_offset + header.data_bytes != size) std::abort();
    for (const auto& e : header.entries) {
      if (e.begin > e.end || e.end > header.data_bytes) std::abort();
      if (e.nbytes() % strata::dtype_size(e.dtype) != 0) std::abort();
      if (header.find(e.name) != &e) std::abort();
      // Touch the first and last byte of each tensor, so ASan sees any bad range.
      if (e.nbytes() > 0) {
        volatile std::uint8_t sink = data[header.data_offset + e.begin];
        sink = data[header.data_offset + e.end - 1];
        (void)sink;
      }
    }
  } catch (const strata::CheckpointError&) {
    // Refused with a typed error: what malformed input must get.
  }
  return 0;
}
