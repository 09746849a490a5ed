// libFuzzer target: tokenizer.json as Strata reads it from a model folder. Each input must load
// or be refused with CheckpointError / NotSupported; what loads must encode and decode a few
// strings (invalid UTF-8 included) with at most InvalidArgument for ids out of range.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "strata/core/error.h"
#include "strata/text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::optional<strata::text::Tokenizer> tok;
  try {
    tok = strata::text::Tokenizer::from_json(text, {}, {}, "fuzz/tokenizer.json");
  } catch (const strata::CheckpointError&) {
    return 0;
  } catch (const strata::NotSupported&) {
    return 0;
  }
  for (std::string_view s :
       {std::string_view("Hello world <s> 123"), std::string_view("\xff\xfe a\xc3"),
        std::string_view("  \n\t x"), text.substr(0, 64)}) {
    auto ids = tok->encode(s);
    auto plain = tok->encode_plain(s);
    try {
      std::string all;
      strata::text::StreamDecoder stream(*tok);
      for (auto id : ids) all += stream.push(id);
      all += stream.finish();
      if (all != tok->decode(ids)) std::abort();  // streaming must equal decode
      (void)tok->decode(plain, true);
    } catch (const strata::InvalidArgument&) {
      // A template or added token may name an id outside the vocabulary.
    }
  }
  return 0;
}
