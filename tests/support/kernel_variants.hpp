// Test support: CpuKernel's instruction-set variants as test parameters,
// and result comparison that also covers non-finite values.
#pragma once

#include <sinkkv/kernels/cpu.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

namespace sinkkv::testing {

/// Every variant, supported here or not: a test on one this CPU (or build)
/// cannot run skips, so the test list is the same on every machine.
inline std::vector<InstructionSet> all_variants() {
  return {InstructionSet::kScalar, InstructionSet::kSse2, InstructionSet::kAvx2, InstructionSet::kAvx512,
          InstructionSet::kAvx512Bf16, InstructionSet::kNeon};
}

/// Skips the running test when `isa` cannot run here.
#define SINKKV_SKIP_UNLESS_SUPPORTED(isa)                                                                   \
  do {                                                                                                      \
    if (!::sinkkv::CpuKernel::supports(isa)) {                                                              \
      GTEST_SKIP() << "instruction set " << ::sinkkv::instruction_set_name(isa) << " does not run here"; \
    }                                                                                                       \
  } while (false)

/// `got` against `want` (the reference): a finite reference value must be
/// matched within atol + rtol * |want|; a non-finite one (NaN or +-inf
/// from NaN/Inf inputs) must not come out finite. Returns a description of
/// the first violation, empty if none.
inline std::string compare_value(double got, double want, double atol, double rtol) {
  if (std::isfinite(want)) {
    if (std::abs(got - want) <= atol + rtol * std::abs(want)) return {};
    return "got " + std::to_string(got) + ", reference " + std::to_string(want);
  }
  if (!std::isfinite(got)) return {};
  return "got the finite " + std::to_string(got) + " where the reference is " + std::to_string(want);
}

}  // namespace sinkkv::testing

namespace sinkkv {
/// gtest prints variants by name.
inline void PrintTo(InstructionSet isa, std::ostream* os) { *os << instruction_set_name(isa); }
}  // namespace sinkkv
