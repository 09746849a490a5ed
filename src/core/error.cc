#include "strata/core/error.h"

namespace strata::detail {

void throw_internal(const char* file, int line, const char* condition, const std::string& message) {
  throw InternalError(fmt::format("internal error at {}:{}: {} ({}). This is a bug in Strata; "
                                  "please report it with this message.",
                                  file, line, message, condition));
}

}  // namespace strata::detail
