// libFuzzer target: encode and decode arbitrary bytes (invalid UTF-8 included) with real
// tokenizers loaded once (GPT-2 byte-level and the SentencePiece-style stories260K, paths from
// compile definitions). Encoding never throws; ids decode, and streamed pieces concatenate to
// decode(); bytes read as ids (mod vocabulary) decode the same way.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "strata/text/tokenizer.h"

namespace {

std::string read(const char* path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const strata::text::Tokenizer& tokenizer(int which) {
  static const strata::text::Tokenizer gpt2 = strata::text::Tokenizer::from_json(
      read(STRATA_FUZZ_GPT2_TOKENIZER), read(STRATA_FUZZ_GPT2_CONFIG), {}, "gpt2.tokenizer.json");
  static const strata::text::Tokenizer stories =
      strata::text::Tokenizer::from_folder(STRATA_FUZZ_STORIES_DIR);
  return which ? stories : gpt2;
}

void check_stream(const strata::text::Tokenizer& tok, const std::vector<std::int64_t>& ids,
                  bool skip) {
  strata::text::StreamDecoder stream(tok, skip);
  std::string all;
  for (auto id : ids) all += stream.push(id);
  all += stream.finish();
  if (all != tok.decode(ids, skip)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto& tok = tokenizer(data[0] & 1);
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  auto ids = tok.encode(text, (data[0] & 2) != 0);
  auto plain = tok.encode_plain(text);
  for (auto id : ids) {
    if (id < 0 || id >= tok.vocab_size()) std::abort();
  }
  check_stream(tok, ids, (data[0] & 4) != 0);
  check_stream(tok, plain, false);
  // The same bytes as a sequence of ids.
  std::vector<std::int64_t> raw;
  for (std::size_t i = 1; i + 1 < size; i += 2) {
    raw.push_back(static_cast<std::int64_t>((data[i] | (data[i + 1] << 8)) % tok.vocab_size()));
  }
  check_stream(tok, raw, (data[0] & 8) != 0);
  return 0;
}
