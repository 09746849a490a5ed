#pragma once
// The strata::Error hierarchy and the check macros.
//
// Two families of checks, kept apart on purpose:
//   STRATA_CHECK(cond, ErrorType, fmt, args...)  - bad user input: a typed error whose message
//                                                  names the thing, what was expected and found,
//                                                  and what to do.
//   STRATA_ASSERT(cond, fmt, args...)            - an internal invariant: InternalError with the
//                                                  source location (a bug in Strata, not in input).
// Both throw; the library never exits or aborts on bad input.

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace strata {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A value, shape, dtype or option that the caller passed is not acceptable.
class InvalidArgument : public Error {
  using Error::Error;
};
// An operation is not supported for this combination (op, device, dtype).
class NotSupported : public Error {
  using Error::Error;
};
// A checkpoint, index or offload folder is malformed or inconsistent.
class CheckpointError : public Error {
  using Error::Error;
};
// A file could not be read, written, mapped or renamed.
class IoError : public Error {
  using Error::Error;
};
// Memory could not be allocated on a device (or pinned on the host).
class OutOfMemory : public Error {
  using Error::Error;
};
// A device is missing, unusable, or a driver call failed.
class DeviceError : public Error {
  using Error::Error;
};
// An internal invariant broke: a bug in Strata.
class InternalError : public Error {
  using Error::Error;
};

namespace detail {
[[noreturn]] void throw_internal(const char* file, int line, const char* condition,
                                 const std::string& message);
}  // namespace detail

}  // namespace strata

#define STRATA_CHECK(cond, ErrorType, ...)                \
  do {                                                    \
    if (!(cond)) [[unlikely]] {                           \
      throw ErrorType(::fmt::format(__VA_ARGS__));        \
    }                                                     \
  } while (false)

#define STRATA_CHECK_ARG(cond, ...) STRATA_CHECK(cond, ::strata::InvalidArgument, __VA_ARGS__)

#define STRATA_THROW(ErrorType, ...) throw ErrorType(::fmt::format(__VA_ARGS__))

#define STRATA_ASSERT(cond, ...)                                                        \
  do {                                                                                  \
    if (!(cond)) [[unlikely]] {                                                         \
      ::strata::detail::throw_internal(__FILE__, __LINE__, #cond, ::fmt::format(__VA_ARGS__)); \
    }                                                                                   \
  } while (false)
