// sinkkv: error reporting.
//
// Three tiers, as in the rest of the library:
//  * bad configuration or misuse at the API boundary -> sinkkv::Error, with a
//    message that names the offending value;
//  * programming errors on hot paths -> SINKKV_ASSERT (debug builds only);
//  * expected conditions (a full window evicts its oldest token) -> not errors.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace sinkkv {

/// The one exception type the library throws. Thrown only at the API
/// boundary (construction, append, attend), never from a kernel.
class Error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

}  // namespace sinkkv

/// How errors leave the library. Override before including sinkkv to, say,
/// log and abort in a build without exceptions.
#ifndef SINKKV_THROW
#define SINKKV_THROW(message) throw ::sinkkv::Error(message)
#endif

/// Checks an API-boundary condition; the message is a stream expression that
/// is only evaluated on failure: SINKKV_CHECK(w > 0, "window " << w << " ...").
#define SINKKV_CHECK(condition, stream_message)                  \
  do {                                                           \
    if (!(condition)) {                                          \
      std::ostringstream sinkkv_check_stream_;                   \
      sinkkv_check_stream_ << "sinkkv: " << stream_message;      \
      SINKKV_THROW(sinkkv_check_stream_.str());                  \
    }                                                            \
  } while (false)

/// Hot-path invariant; compiled out unless SINKKV_DEBUG is defined (or
/// NDEBUG is not). Users may define their own.
#ifndef SINKKV_ASSERT
#if defined(SINKKV_DEBUG) || !defined(NDEBUG)
#include <cassert>
#define SINKKV_ASSERT(condition) assert(condition)
#else
#define SINKKV_ASSERT(condition) ((void)0)
#endif
#endif
