// toy: small helpers of the two command-line programs — strict number
// parsing, resident memory, a wall clock and CPU time.
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>

#include <unistd.h>

#include "error.hpp"

namespace toy {

/// A whole decimal number in [min, max]; anything else (garbage, a sign
/// where none fits, overflow) is an error naming the flag and the text.
inline long long parse_integer(const std::string& flag, const std::string& text, long long min, long long max) {
  std::size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &used, 10);
  } catch (const std::exception&) {
    TOY_FAIL(flag << ": '" << text << "' is not an integer");
  }
  TOY_CHECK(used == text.size(), flag << ": '" << text << "' is not an integer");
  TOY_CHECK(value >= min && value <= max, flag << ": " << value << " outside [" << min << ", " << max << "]");
  return value;
}

inline double parse_real(const std::string& flag, const std::string& text, double min, double max) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    TOY_FAIL(flag << ": '" << text << "' is not a number");
  }
  TOY_CHECK(used == text.size(), flag << ": '" << text << "' is not a number");
  TOY_CHECK(value >= min && value <= max, flag << ": " << value << " outside [" << min << ", " << max << "]");
  return value;
}

/// Resident set size in bytes, from /proc/self/statm (0 where unavailable).
inline std::uint64_t resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long long total = 0, resident = 0;
  const int fields = std::fscanf(f, "%llu %llu", &total, &resident);
  std::fclose(f);
  if (fields != 2) return 0;
  return resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

inline double mib(std::uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

/// CPU time of the whole process (every thread) in seconds.
inline double process_cpu_seconds() {
  timespec now{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

class Stopwatch {
 public:
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace toy
