#pragma once
// EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ... }, {"linear", "weight"})): the call
// throws exactly that error type and its message mentions every given word (the op, the tensor).

#include <gtest/gtest.h>

#include <exception>
#include <initializer_list>
#include <string>

namespace strata::testing {

template <typename E, typename F>
::testing::AssertionResult throws_naming(F&& call, std::initializer_list<std::string> words) {
  try {
    call();
  } catch (const E& e) {
    const std::string message = e.what();
    for (const std::string& word : words) {
      if (message.find(word) == std::string::npos) {
        return ::testing::AssertionFailure()
               << "message does not mention '" << word << "': " << message;
      }
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw another error type: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

}  // namespace strata::testing
