// Dtype conversions: bit-exact with PyTorch (the table in fixtures/dtype/conversions.json, recorded
// by fixtures/tools/record_dtype_conversions.py), plus table-free checks: exhaustive round trips of
// every 16- and 8-bit pattern and a naive reference rounding over a dense sweep of floats.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "strata/core/convert.h"
#include "strata/core/dtype.h"
#include "strata/core/error.h"
#include "strata/core/float_types.h"

namespace strata {
namespace {

static_assert(std::endian::native == std::endian::little, "the table stores little-endian bits");

using Bytes = std::vector<std::byte>;

DType dtype_named(const std::string& name) {
  static const std::map<std::string, DType> names = {{"bool", DType::Bool},
                                                     {"uint8", DType::UInt8},
                                                     {"int8", DType::Int8},
                                                     {"int16", DType::Int16},
                                                     {"int32", DType::Int32},
                                                     {"int64", DType::Int64},
                                                     {"float16", DType::Float16},
                                                     {"bfloat16", DType::BFloat16},
                                                     {"float32", DType::Float32},
                                                     {"float64", DType::Float64},
                                                     {"float8_e4m3fn", DType::Float8E4M3FN},
                                                     {"float8_e5m2", DType::Float8E5M2}};
  const auto it = names.find(name);
  if (it == names.end()) throw std::runtime_error("unknown dtype in table: " + name);
  return it->second;
}

std::uint64_t load_bits(const std::byte* p, std::size_t size) {
  std::uint64_t v = 0;
  std::memcpy(&v, p, size);
  return v;
}
void store_bits(std::byte* p, std::size_t size, std::uint64_t v) { std::memcpy(p, &v, size); }

bool is_nan_bits(DType dtype, std::uint64_t b) {
  switch (dtype) {
    case DType::Float64:
      return (b & 0x7FFFFFFFFFFFFFFFull) > 0x7FF0000000000000ull;
    case DType::Float32:
      return (b & 0x7FFFFFFFu) > 0x7F800000u;
    case DType::Float16:
      return (b & 0x7FFFu) > 0x7C00u;
    case DType::BFloat16:
      return (b & 0x7FFFu) > 0x7F80u;
    case DType::Float8E4M3FN:
      return (b & 0x7Fu) == 0x7Fu;
    case DType::Float8E5M2:
      return (b & 0x7Fu) > 0x7Cu;
    default:
      return false;
  }
}
std::uint64_t sign_of(DType dtype, std::uint64_t b) {
  return (b >> (dtype_size(dtype) * 8 - 1)) & 1;
}

std::string hex(DType dtype, std::uint64_t bits) {
  return fmt::format("{:0{}x}", bits, dtype_size(dtype) * 2);
}

// One (source dtype, destination dtype) column of the table.
struct Case {
  DType src;
  DType dst;
  std::vector<std::uint64_t> src_bits;
  std::vector<std::uint64_t> dst_bits;               // PyTorch's element-by-element path
  std::map<std::size_t, std::uint64_t> vector_bits;  // where its vectorised path differed
  std::string name() const { return fmt::format("{} -> {}", dtype_name(src), dtype_name(dst)); }
};

struct Table {
  std::string torch_version;
  std::vector<Case> cases;
};

const Table& table() {
  static const Table loaded = [] {
    const std::string path = std::string(STRATA_TEST_FIXTURES_DIR) + "/dtype/conversions.json";
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open " + path);
    const auto json = nlohmann::json::parse(in);
    Table t;
    t.torch_version = json.at("torch_version").get<std::string>();
    const auto parse = [](const std::string& h) { return std::stoull(h, nullptr, 16); };
    for (const auto& group : json.at("groups")) {
      const DType src = dtype_named(group.at("src").get<std::string>());
      std::vector<std::uint64_t> src_bits;
      for (const auto& h : group.at("src_bits")) src_bits.push_back(parse(h.get<std::string>()));
      for (const auto& [dst_name, values] : group.at("dst").items()) {
        Case c{src, dtype_named(dst_name), src_bits, {}, {}};
        for (const auto& h : values) c.dst_bits.push_back(parse(h.get<std::string>()));
        if (c.dst_bits.size() != c.src_bits.size()) throw std::runtime_error("ragged table");
        if (group.contains("vector_diff") && group["vector_diff"].contains(dst_name)) {
          for (const auto& [index, h] : group["vector_diff"][dst_name].items()) {
            c.vector_bits[std::stoul(index)] = parse(h.get<std::string>());
          }
        }
        t.cases.push_back(std::move(c));
      }
    }
    return t;
  }();
  return loaded;
}

// Collects mismatches and reports the first few of them with context.
class Mismatches {
 public:
  void add(std::string message) {
    if (count_++ < kShown) messages_ += message + "\n";
  }
  int count() const { return count_; }
  const std::string& messages() const { return messages_; }

 private:
  static constexpr int kShown = 12;
  int count_ = 0;
  std::string messages_;
};

// Compares one converted element with the table: bit-exact, except that a NaN result only has
// to be a NaN (PyTorch's own paths disagree on payloads), with PyTorch's sign wherever both of
// its paths agree on it.
void check_element(const Case& c, std::size_t i, std::uint64_t actual, const char* path,
                   Mismatches& out) {
  const std::uint64_t expected = c.dst_bits[i];
  bool ok = actual == expected;
  if (!ok && is_nan_bits(c.dst, expected) && is_nan_bits(c.dst, actual)) {
    const auto alt = c.vector_bits.find(i);
    const bool sign_agreed =
        alt == c.vector_bits.end() || (is_nan_bits(c.dst, alt->second) &&
                                       sign_of(c.dst, alt->second) == sign_of(c.dst, expected));
    ok = !sign_agreed || sign_of(c.dst, actual) == sign_of(c.dst, expected);
  }
  if (!ok) {
    out.add(fmt::format("{} [{}] #{}: src {} -> {} (torch {})", c.name(), path, i,
                        hex(c.src, c.src_bits[i]), hex(c.dst, actual), hex(c.dst, expected)));
  }
}

Bytes source_buffer(const Case& c, std::size_t offset, std::int64_t stride) {
  const std::size_t size = dtype_size(c.src);
  Bytes buf(offset + c.src_bits.size() * size * static_cast<std::size_t>(stride), std::byte{0xA5});
  for (std::size_t i = 0; i < c.src_bits.size(); ++i) {
    store_bits(buf.data() + offset + i * size * static_cast<std::size_t>(stride), size,
               c.src_bits[i]);
  }
  return buf;
}

TEST(DtypeConversionTable, CoversEveryPairOfDifferentDtypes) {
  const Table& t = table();
  EXPECT_FALSE(t.torch_version.empty());
  ::testing::Test::RecordProperty("torch_version", t.torch_version);
  std::set<std::pair<DType, DType>> pairs;
  for (const Case& c : t.cases) {
    EXPECT_FALSE(c.src_bits.empty()) << c.name();
    EXPECT_TRUE(pairs.insert({c.src, c.dst}).second) << "duplicate " << c.name();
  }
  for (DType src : kAllDTypes) {
    for (DType dst : kAllDTypes) {
      if (src != dst) {
        EXPECT_TRUE(pairs.count({src, dst}))
            << "table lacks " << dtype_name(src) << " -> " << dtype_name(dst);
      }
    }
  }
}

TEST(DtypeConversionTable, ContiguousMatchesTorch) {
  Mismatches bad;
  for (const Case& c : table().cases) {
    // Aligned, and one byte off alignment (checkpoint data need not be aligned).
    for (std::size_t offset : {std::size_t{0}, std::size_t{1}}) {
      const Bytes src = source_buffer(c, offset, 1);
      const std::size_t dsize = dtype_size(c.dst);
      Bytes dst(offset + c.dst_bits.size() * dsize);
      convert_elements(src.data() + offset, c.src, dst.data() + offset, c.dst, c.src_bits.size());
      for (std::size_t i = 0; i < c.dst_bits.size(); ++i) {
        check_element(c, i, load_bits(dst.data() + offset + i * dsize, dsize),
                      offset ? "contiguous, unaligned" : "contiguous", bad);
      }
    }
  }
  EXPECT_EQ(bad.count(), 0) << bad.messages();
}

TEST(DtypeConversionTable, StridedMatchesTorch) {
  Mismatches bad;
  for (const Case& c : table().cases) {
    const Bytes src = source_buffer(c, 0, 2);
    const std::size_t dsize = dtype_size(c.dst);
    const std::size_t n = c.dst_bits.size();
    const Bytes sentinel(dsize, std::byte{0x5A});
    Bytes dst(2 * n * dsize, std::byte{0x5A});
    convert_elements_strided(src.data(), c.src, 2, dst.data(), c.dst, 2, n);
    for (std::size_t i = 0; i < n; ++i) {
      check_element(c, i, load_bits(dst.data() + 2 * i * dsize, dsize), "stride 2", bad);
      if (std::memcmp(dst.data() + (2 * i + 1) * dsize, sentinel.data(), dsize) != 0) {
        bad.add(fmt::format("{} [stride 2]: wrote between elements at #{}", c.name(), i));
      }
    }
    // Negative destination stride: the results land in reverse order.
    Bytes reversed(n * dsize);
    convert_elements_strided(src.data(), c.src, 2, reversed.data() + (n - 1) * dsize, c.dst, -1, n);
    for (std::size_t i = 0; i < n; ++i) {
      check_element(c, i, load_bits(reversed.data() + (n - 1 - i) * dsize, dsize), "stride -1",
                    bad);
    }
  }
  EXPECT_EQ(bad.count(), 0) << bad.messages();
}

TEST(DtypeConversionTable, BroadcastSourceMatchesTorch) {
  Mismatches bad;
  for (const Case& c : table().cases) {
    const Bytes src = source_buffer(c, 0, 1);
    const std::size_t ssize = dtype_size(c.src);
    const std::size_t dsize = dtype_size(c.dst);
    constexpr std::size_t kCopies = 3;
    Bytes dst(kCopies * dsize);
    for (std::size_t i = 0; i < c.src_bits.size(); ++i) {
      convert_elements_strided(src.data() + i * ssize, c.src, 0, dst.data(), c.dst, 1, kCopies);
      for (std::size_t k = 0; k < kCopies; ++k) {
        check_element(c, i, load_bits(dst.data() + k * dsize, dsize), "source stride 0", bad);
      }
    }
  }
  EXPECT_EQ(bad.count(), 0) << bad.messages();
}

// The scalar entry points of float_types.h on every float32 <-> 16/8-bit pair of the table.
TEST(DtypeConversionTable, ScalarFunctionsMatchTorch) {
  Mismatches bad;
  int checked = 0;
  for (const Case& c : table().cases) {
    for (std::size_t i = 0; i < c.src_bits.size(); ++i) {
      const std::uint64_t s = c.src_bits[i];
      std::uint64_t actual = 0;
      if (c.src == DType::Float32) {
        const float f = std::bit_cast<float>(static_cast<std::uint32_t>(s));
        switch (c.dst) {
          case DType::Float16:
            actual = float_to_half_bits(f);
            break;
          case DType::BFloat16:
            actual = float_to_bfloat16_bits(f);
            break;
          case DType::Float8E4M3FN:
            actual = float_to_float8_e4m3fn_bits(f);
            break;
          case DType::Float8E5M2:
            actual = float_to_float8_e5m2_bits(f);
            break;
          default:
            continue;
        }
      } else if (c.dst == DType::Float32) {
        float f = 0;
        switch (c.src) {
          case DType::Float16:
            f = half_bits_to_float(static_cast<std::uint16_t>(s));
            break;
          case DType::BFloat16:
            f = bfloat16_bits_to_float(static_cast<std::uint16_t>(s));
            break;
          case DType::Float8E4M3FN:
            f = float8_e4m3fn_bits_to_float(static_cast<std::uint8_t>(s));
            break;
          case DType::Float8E5M2:
            f = float8_e5m2_bits_to_float(static_cast<std::uint8_t>(s));
            break;
          default:
            continue;
        }
        actual = std::bit_cast<std::uint32_t>(f);
      } else {
        continue;
      }
      check_element(c, i, actual, "scalar function", bad);
      ++checked;
    }
  }
  EXPECT_GT(checked, 1000);
  EXPECT_EQ(bad.count(), 0) << bad.messages();
}

TEST(DtypeConversion, SameDtypeIsABitCopy) {
  for (DType dtype : kAllDTypes) {
    const std::size_t size = dtype_size(dtype);
    Bytes src(64 * size);
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::byte>(i * 37 + 11);
    Bytes dst(src.size());
    convert_elements(src.data(), dtype, dst.data(), dtype, 64);
    EXPECT_EQ(dst, src) << dtype_name(dtype);
    Bytes strided(2 * src.size());
    convert_elements_strided(src.data(), dtype, 1, strided.data(), dtype, 2, 64);
    for (std::size_t i = 0; i < 64; ++i) {
      EXPECT_EQ(std::memcmp(strided.data() + 2 * i * size, src.data() + i * size, size), 0)
          << dtype_name(dtype) << " #" << i;
    }
  }
}

// ---- Table-free checks -------------------------------------------------------------------------

// A narrow float format, described by its numbers only.
struct Narrow {
  const char* name;
  DType dtype;
  int total_bits;
  int mantissa_bits;
  int min_exponent;      // of the smallest normal
  double max;            // largest finite value
  bool nan_on_overflow;  // e4m3fn: no infinities, overflow is NaN
  bool nan_keeps_sign;   // bf16 NaN is canonical 0x7FC0, as c10::BFloat16
};
constexpr Narrow kHalf{"float16", DType::Float16, 16, 10, -14, 65504.0, false, true};
constexpr Narrow kBf16{"bfloat16", DType::BFloat16, 16, 7, -126, 0x1.FEp127, false, false};
constexpr Narrow kE4M3{"float8_e4m3fn", DType::Float8E4M3FN, 8, 3, -6, 448.0, true, true};
constexpr Narrow kE5M2{"float8_e5m2", DType::Float8E5M2, 8, 2, -14, 57344.0, false, true};
constexpr Narrow kNarrow[] = {kHalf, kBf16, kE4M3, kE5M2};

std::uint32_t strata_encode(const Narrow& f, float v) {
  switch (f.dtype) {
    case DType::Float16:
      return float_to_half_bits(v);
    case DType::BFloat16:
      return float_to_bfloat16_bits(v);
    case DType::Float8E4M3FN:
      return float_to_float8_e4m3fn_bits(v);
    default:
      return float_to_float8_e5m2_bits(v);
  }
}
float strata_decode(const Narrow& f, std::uint32_t b) {
  switch (f.dtype) {
    case DType::Float16:
      return half_bits_to_float(static_cast<std::uint16_t>(b));
    case DType::BFloat16:
      return bfloat16_bits_to_float(static_cast<std::uint16_t>(b));
    case DType::Float8E4M3FN:
      return float8_e4m3fn_bits_to_float(static_cast<std::uint8_t>(b));
    default:
      return float8_e5m2_bits_to_float(static_cast<std::uint8_t>(b));
  }
}

bool narrow_is_nan(const Narrow& f, std::uint32_t b) { return is_nan_bits(f.dtype, b); }

// Value of a bit pattern from the format's definition (NaN for NaN patterns).
double naive_decode(const Narrow& f, std::uint32_t b) {
  if (narrow_is_nan(f, b)) return std::nan("");
  const int exp_bits = f.total_bits - 1 - f.mantissa_bits;
  const std::uint32_t sign = b >> (f.total_bits - 1);
  const int e = static_cast<int>((b >> f.mantissa_bits) & ((1u << exp_bits) - 1));
  const std::uint32_t m = b & ((1u << f.mantissa_bits) - 1);
  double v;
  if (!f.nan_on_overflow && e == (1 << exp_bits) - 1) {
    v = INFINITY;
  } else if (e == 0) {
    v = std::ldexp(m, f.min_exponent - f.mantissa_bits);
  } else {
    v = std::ldexp(m + (1u << f.mantissa_bits), e - 1 + f.min_exponent - f.mantissa_bits);
  }
  return sign ? -v : v;
}

// Spacing of the format's grid at |v|, as if the exponent range had no top.
double quantum(const Narrow& f, double a) {
  if (a < std::ldexp(1.0, f.min_exponent)) return std::ldexp(1.0, f.min_exponent - f.mantissa_bits);
  return std::ldexp(1.0, std::ilogb(a) - f.mantissa_bits);
}

// Round to nearest, ties to even, with double arithmetic and nearbyint (independent of the bit
// tricks under test); past max: infinity, or NaN for e4m3fn.
std::uint32_t naive_encode(const Narrow& f, float v) {
  const int exp_bits = f.total_bits - 1 - f.mantissa_bits;
  const std::uint32_t sign = std::signbit(v) ? 1u << (f.total_bits - 1) : 0u;
  const std::uint32_t inf = ((1u << exp_bits) - 1) << f.mantissa_bits;
  const std::uint32_t nan =
      f.nan_on_overflow ? (1u << (f.total_bits - 1)) - 1 : inf | (1u << (f.mantissa_bits - 1));
  if (std::isnan(v)) return sign | nan;
  const std::uint32_t overflow = f.nan_on_overflow ? nan : inf;
  if (std::isinf(v)) return sign | overflow;
  const double a = std::fabs(static_cast<double>(v));
  const double q = quantum(f, a);
  const double r = std::nearbyint(a / q) * q;  // a / q is exact: q is a power of two
  if (r > f.max) return sign | overflow;
  if (r < std::ldexp(1.0, f.min_exponent)) {
    return sign | static_cast<std::uint32_t>(r / std::ldexp(1.0, f.min_exponent - f.mantissa_bits));
  }
  const int e = std::ilogb(r);
  const auto biased = static_cast<std::uint32_t>(e - f.min_exponent + 1);
  const auto m = static_cast<std::uint32_t>(r / std::ldexp(1.0, e - f.mantissa_bits)) -
                 (1u << f.mantissa_bits);
  return sign | (biased << f.mantissa_bits) | m;
}

// NaN: any NaN (with the sign where the format's rule keeps it); everything else bit-exact.
bool same_encoding(const Narrow& f, std::uint32_t expected, std::uint32_t actual) {
  if (narrow_is_nan(f, expected)) {
    const std::uint32_t sign_bit = 1u << (f.total_bits - 1);
    return narrow_is_nan(f, actual) &&
           (!f.nan_keeps_sign || (expected & sign_bit) == (actual & sign_bit));
  }
  return expected == actual;
}

TEST(DtypeConversion, EveryNarrowPatternWidensToItsValue) {
  for (const Narrow& f : kNarrow) {
    for (std::uint32_t b = 0; b < (1u << f.total_bits); ++b) {
      const float got = strata_decode(f, b);
      const double want = naive_decode(f, b);
      if (std::isnan(want)) {
        ASSERT_TRUE(std::isnan(got)) << f.name << " " << hex(f.dtype, b);
        ASSERT_EQ(std::signbit(got), (b >> (f.total_bits - 1)) != 0) << f.name << " " << b;
      } else {
        // Exact, zero signs included.
        ASSERT_EQ(std::bit_cast<std::uint32_t>(got),
                  std::bit_cast<std::uint32_t>(static_cast<float>(want)))
            << f.name << " " << hex(f.dtype, b);
      }
    }
  }
}

TEST(DtypeConversion, EveryNarrowPatternRoundTripsThroughFloat) {
  for (const Narrow& f : kNarrow) {
    const std::size_t n = std::size_t{1} << f.total_bits;
    Bytes patterns(n * f.total_bits / 8);
    for (std::uint32_t b = 0; b < n; ++b)
      store_bits(patterns.data() + b * f.total_bits / 8, f.total_bits / 8, b);
    // Through the scalar functions, and through convert_elements via float32 and float64.
    std::vector<float> as_float(n);
    std::vector<double> as_double(n);
    convert_elements(patterns.data(), f.dtype, as_float.data(), DType::Float32, n);
    convert_elements(patterns.data(), f.dtype, as_double.data(), DType::Float64, n);
    Bytes back_from_float(patterns.size());
    Bytes back_from_double(patterns.size());
    convert_elements(as_float.data(), DType::Float32, back_from_float.data(), f.dtype, n);
    convert_elements(as_double.data(), DType::Float64, back_from_double.data(), f.dtype, n);
    for (std::uint32_t b = 0; b < n; ++b) {
      const std::size_t at = b * f.total_bits / 8;
      const std::uint32_t scalar = strata_encode(f, strata_decode(f, b));
      const auto via_float =
          static_cast<std::uint32_t>(load_bits(back_from_float.data() + at, f.total_bits / 8));
      const auto via_double =
          static_cast<std::uint32_t>(load_bits(back_from_double.data() + at, f.total_bits / 8));
      ASSERT_TRUE(same_encoding(f, b, scalar))
          << f.name << " " << hex(f.dtype, b) << " -> " << hex(f.dtype, scalar);
      ASSERT_TRUE(same_encoding(f, b, via_float)) << f.name << " " << hex(f.dtype, b);
      ASSERT_TRUE(same_encoding(f, b, via_double)) << f.name << " " << hex(f.dtype, b);
    }
  }
}

// Floats to test for one format: a dense stride over all 2^32 patterns, and every tie of the
// format (midpoints between neighbours, the overflow tie past max included) +-2 float ulps.
std::vector<std::uint32_t> sweep_floats(const Narrow& f) {
  std::vector<std::uint32_t> out;
  for (std::uint64_t b = 0; b < (std::uint64_t{1} << 32); b += 509) {
    out.push_back(static_cast<std::uint32_t>(b));
  }
  for (std::uint32_t b = 0; b < (1u << (f.total_bits - 1)); ++b) {
    const double v = naive_decode(f, b);
    if (!std::isfinite(v)) continue;
    const auto mid = static_cast<float>(v + quantum(f, v) / 2);  // exact: m + 2 bits
    const auto mid_bits = std::bit_cast<std::uint32_t>(mid);
    for (std::uint32_t k = 0; k < 5; ++k) {
      out.push_back(mid_bits + k - 2);
      out.push_back((mid_bits + k - 2) | 0x80000000u);
    }
  }
  return out;
}

TEST(DtypeConversion, FloatToNarrowMatchesNaiveRounding) {
  for (const Narrow& f : kNarrow) {
    const std::vector<std::uint32_t> inputs = sweep_floats(f);
    Mismatches bad;
    // Scalar function.
    for (std::uint32_t bits : inputs) {
      const float v = std::bit_cast<float>(bits);
      const std::uint32_t want = naive_encode(f, v);
      const std::uint32_t got = strata_encode(f, v);
      if (!same_encoding(f, want, got)) {
        bad.add(fmt::format("{} scalar: {:08x} -> {} (naive {})", f.name, bits, hex(f.dtype, got),
                            hex(f.dtype, want)));
      }
    }
    // The (vectorised) bulk loop.
    const std::size_t width = f.total_bits / 8;
    Bytes out(inputs.size() * width);
    convert_elements(inputs.data(), DType::Float32, out.data(), f.dtype, inputs.size());
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      const std::uint32_t want = naive_encode(f, std::bit_cast<float>(inputs[i]));
      const auto got = static_cast<std::uint32_t>(load_bits(out.data() + i * width, width));
      if (!same_encoding(f, want, got)) {
        bad.add(fmt::format("{} bulk: {:08x} -> {} (naive {})", f.name, inputs[i],
                            hex(f.dtype, got), hex(f.dtype, want)));
      }
    }
    EXPECT_EQ(bad.count(), 0) << bad.messages();
  }
}

// Counts large enough for the parallel path give the same bits as the scalar functions.
TEST(DtypeConversion, LargeCountsMatchElementwise) {
  constexpr std::size_t kCount = (std::size_t{1} << 18) + 7;
  std::vector<float> src(kCount);
  for (std::size_t i = 0; i < kCount; ++i) {
    src[i] = std::bit_cast<float>(static_cast<std::uint32_t>(i * 2654435761u));
  }
  std::vector<std::uint16_t> half(kCount);
  std::vector<std::uint16_t> bf16(kCount);
  std::vector<std::uint8_t> e4m3(kCount);
  convert_elements(src.data(), DType::Float32, half.data(), DType::Float16, kCount);
  convert_elements(src.data(), DType::Float32, bf16.data(), DType::BFloat16, kCount);
  convert_elements_strided(src.data(), DType::Float32, 1, e4m3.data(), DType::Float8E4M3FN, 1,
                           kCount);
  int bad = 0;
  for (std::size_t i = 0; i < kCount; ++i) {
    bad += half[i] != float_to_half_bits(src[i]);
    bad += bf16[i] != float_to_bfloat16_bits(src[i]);
    bad += e4m3[i] != float_to_float8_e4m3fn_bits(src[i]);
  }
  EXPECT_EQ(bad, 0);
}

// Strata's rules where PyTorch has none of its own (see docs/dtype-conversions.md).
TEST(DtypeConversion, NonZeroBoolBytesReadAsTrue) {
  const std::uint8_t bytes[] = {0, 1, 2, 0x80, 0xFF};
  float as_float[5];
  std::int32_t as_int[5];
  convert_elements(bytes, DType::Bool, as_float, DType::Float32, 5);
  convert_elements(bytes, DType::Bool, as_int, DType::Int32, 5);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(as_float[i], bytes[i] ? 1.0f : 0.0f) << i;
    EXPECT_EQ(as_int[i], bytes[i] ? 1 : 0) << i;
  }
}

TEST(DtypeConversion, RejectsBadBuffers) {
  float buf[16] = {};
  EXPECT_THROW(convert_elements(nullptr, DType::Float32, buf, DType::Float16, 2), InvalidArgument);
  EXPECT_THROW(convert_elements(buf, DType::Float32, nullptr, DType::Float16, 2), InvalidArgument);
  EXPECT_NO_THROW(convert_elements(nullptr, DType::Float32, nullptr, DType::Float16, 0));
  // Overlap: same bytes read as float32 and written as float16.
  EXPECT_THROW(convert_elements(buf, DType::Float32, buf, DType::Float16, 4), InvalidArgument);
  EXPECT_THROW(convert_elements(buf, DType::Float32, buf + 1, DType::Float32, 4), InvalidArgument);
  EXPECT_THROW(convert_elements_strided(buf, DType::Float32, 2, buf + 2, DType::Float32, 2, 4),
               InvalidArgument);
  EXPECT_THROW(convert_elements_strided(buf + 6, DType::Float32, -2, buf, DType::Float32, -2, 4),
               InvalidArgument);
  // Interleaved but disjoint (one column into the next) is fine.
  for (int i = 0; i < 16; ++i) buf[i] = static_cast<float>(i);
  convert_elements_strided(buf, DType::Float32, 2, buf + 1, DType::Float32, 2, 8);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(buf[i], static_cast<float>(i - i % 2)) << i;
  // Writing several elements to one place.
  float out[1];
  EXPECT_THROW(convert_elements_strided(buf, DType::Float32, 1, out, DType::Float32, 0, 2),
               InvalidArgument);
  // The same buffer with the same dtype and stride is a no-op.
  buf[0] = 1.5f;
  EXPECT_NO_THROW(convert_elements(buf, DType::Float32, buf, DType::Float32, 8));
  EXPECT_NO_THROW(convert_elements_strided(buf, DType::Float32, 2, buf, DType::Float32, 2, 4));
  EXPECT_EQ(buf[0], 1.5f);
}

}  // namespace
}  // namespace strata
