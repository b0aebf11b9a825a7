// toy: errors of the example and its tools (bad files, bad command lines).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace toy {

/// Bad input: a file or a command-line value. The message names the value.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace toy

/// Throws toy::Error with a streamed message: TOY_FAIL("dim = " << dim).
#define TOY_FAIL(stream_message)              \
  do {                                        \
    std::ostringstream toy_fail_stream_;      \
    toy_fail_stream_ << stream_message;       \
    throw ::toy::Error(toy_fail_stream_.str()); \
  } while (false)

/// Throws toy::Error unless `condition` holds.
#define TOY_CHECK(condition, stream_message) \
  do {                                       \
    if (!(condition)) TOY_FAIL(stream_message); \
  } while (false)
