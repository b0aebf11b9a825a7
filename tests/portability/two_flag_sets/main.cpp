// Issue 12, finding 2: one program, two translation units built with
// different instruction-set flags, both using CpuKernel (and, in the cache
// scenario, SinkKVCache<Eigen::half>). Each unit's result must match an
// independent double-precision reference, and the generic unit must run on
// a CPU without AVX2 (CTest runs this under qemu-x86_64 -cpu Westmere):
// with one shared copy of the kernel, the linker could hand the generic unit
// the AVX2 unit's code (objects are linked AVX2 unit first, so such a copy
// would be the one kept).
//
//   two_flag_sets kernel|cache
#include <cpuid.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <sinkkv/error.hpp>

#include "units.hpp"

namespace {

using namespace two_flag_sets;

bool cpu_has_avx2_fma_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0) return false;
  const bool fma = (c >> 12) & 1u, osxsave = (c >> 27) & 1u, avx = (c >> 28) & 1u, f16c = (c >> 29) & 1u;
  if (!(fma && osxsave && avx && f16c)) return false;
  unsigned xcr0 = 0, high = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0), "=d"(high) : "c"(0));
  if ((xcr0 & 6u) != 6u || __get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 0, a, b, c, d);
  return (b >> 5) & 1u;
}

/// 0 if `throw_error` (another unit's function) throws a sinkkv::Error that
/// this unit catches as its own sinkkv::Error.
int check_error_is_one_type(const char* unit, void (*throw_error)()) {
  try {
    throw_error();
  } catch (const sinkkv::Error&) {
    return 0;
  } catch (...) {
    std::printf("FAIL: %s unit threw something this unit does not catch as sinkkv::Error\n", unit);
    return 1;
  }
  std::printf("FAIL: %s unit threw nothing for an invalid CacheConfig\n", unit);
  return 1;
}

/// Dense attention in double of the last query over `tokens`.
std::vector<double> reference(const std::vector<int>& tokens, int query_token) {
  std::vector<double> out(kQueryHeads * kHeadDim, 0.0);
  for (int q = 0; q < kQueryHeads; ++q) {
    const int kv = q / (kQueryHeads / kKvHeads);
    std::vector<double> scores;
    double max_score = -INFINITY;
    for (int t : tokens) {
      double dot = 0;
      for (int d = 0; d < kHeadDim; ++d) dot += double(element(2, query_token, q, d)) * element(0, t, kv, d);
      scores.push_back(dot / std::sqrt(double(kHeadDim)));
      max_score = std::max(max_score, scores.back());
    }
    double sum = 0;
    for (double& s : scores) sum += (s = std::exp(s - max_score));
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      for (int d = 0; d < kHeadDim; ++d) out[q * kHeadDim + d] += scores[i] / sum * element(1, tokens[i], kv, d);
    }
  }
  return out;
}

int check(const char* unit, const UnitReport& report, const float* got, const std::vector<double>& want) {
  std::printf("%s unit: CpuKernel variant %s, kernel type %s\n", unit, report.instruction_set, report.kernel_type);
  if (report.cache_type != nullptr) std::printf("%s unit: cache type %s\n", unit, report.cache_type);
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!(std::abs(got[i] - want[i]) <= 1e-5 + 1e-5 * std::abs(want[i]))) {
      std::printf("FAIL: %s unit, element %zu: %.7g, reference %.7g\n", unit, i, double(got[i]), want[i]);
      return 1;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "kernel";
  if (mode != "kernel" && mode != "cache") {
    std::printf("usage: %s kernel|cache\n", argv[0]);
    return 2;
  }
  std::vector<int> tokens;
  int query_token = 0;
  if (mode == "kernel") {
    for (int t = 0; t < kTokens; ++t) tokens.push_back(t);
    query_token = kTokens - 1;
  } else {
    for (int t = 0; t < kSinks; ++t) tokens.push_back(t);
    for (int t = kStreamTokens - kWindow; t < kStreamTokens; ++t) tokens.push_back(t);
    query_token = kStreamTokens - 1;
  }
  const std::vector<double> want = reference(tokens, query_token);

  int failures = 0;
  float generic_out[kQueryHeads * kHeadDim], avx2_out[kQueryHeads * kHeadDim];
  const UnitReport generic = mode == "kernel" ? generic_kernel(generic_out) : generic_cache(generic_out);
  failures += check("generic", generic, generic_out, want);
  if (mode == "cache") failures += check_error_is_one_type("generic", generic_throw_error);
  if (!cpu_has_avx2_fma_f16c()) {
    std::printf("this CPU has no AVX2+FMA+F16C: the -mavx2 unit is not run\n");
  } else {
    const UnitReport avx2 = mode == "kernel" ? avx2_kernel(avx2_out) : avx2_cache(avx2_out);
    failures += check("avx2", avx2, avx2_out, want);
    if (std::strcmp(generic.kernel_type, avx2.kernel_type) == 0) {
      std::printf("FAIL: both units share one CpuKernel type (%s): one instruction-set tag for two flag sets\n",
                  generic.kernel_type);
      ++failures;
    }
    if (mode == "cache") {
      if (std::strcmp(generic.cache_type, avx2.cache_type) == 0) {
        std::printf("FAIL: both units share one SinkKVCache type (%s): its code is shared by two flag sets\n",
                    generic.cache_type);
        ++failures;
      }
      failures += check_error_is_one_type("avx2", avx2_throw_error);
    }
  }
  std::printf(failures == 0 ? "PASS\n" : "FAILED\n");
  return failures == 0 ? 0 : 1;
}
