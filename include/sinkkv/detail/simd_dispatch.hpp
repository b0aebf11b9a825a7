// sinkkv::detail: which instruction-set variants this CPU runs, detected
// once (CPUID and XGETBV on x86-64), and the variant a CpuKernel uses by
// default (the best one, or the one SINKKV_CPU_ISA names).
#pragma once

#include <cstdlib>
#include <cstring>
#include <string>

#include "../error.hpp"
#include "simd_target.hpp"

#if SINKKV_DYNAMIC_DISPATCH
#include <cpuid.h>
#endif

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {

/// What the running x86-64 CPU and its operating system support, as far as
/// the kernel's variants care.
struct CpuFeatures {
  bool sse2 = false;
  bool avx2_fma_f16c = false;  ///< and the OS saves YMM state
  bool avx512 = false;         ///< F, BW, VL, DQ, and the OS saves ZMM state
  bool avx512_bf16 = false;
};

#if SINKKV_DYNAMIC_DISPATCH
inline CpuFeatures detect_cpu_features() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0) return f;
  f.sse2 = (d >> 26) & 1u;
  const bool fma = (c >> 12) & 1u, osxsave = (c >> 27) & 1u, avx = (c >> 28) & 1u, f16c = (c >> 29) & 1u;
  unsigned xcr0 = 0;
  if (osxsave) {
    unsigned high = 0;
    __asm__ volatile("xgetbv" : "=a"(xcr0), "=d"(high) : "c"(0));
  }
  const bool os_ymm = (xcr0 & 0x6u) == 0x6u;     // SSE and AVX state
  const bool os_zmm = (xcr0 & 0xE6u) == 0xE6u;   // plus opmask, ZMM0-15 high halves, ZMM16-31
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = (b >> 5) & 1u;
  const bool avx512f = (b >> 16) & 1u, avx512dq = (b >> 17) & 1u, avx512bw = (b >> 30) & 1u,
             avx512vl = (b >> 31) & 1u;
  const unsigned max_subleaf = a;
  f.avx2_fma_f16c = avx && avx2 && fma && f16c && os_ymm;
  f.avx512 = f.avx2_fma_f16c && avx512f && avx512dq && avx512bw && avx512vl && os_zmm;
  if (f.avx512 && max_subleaf >= 1) {
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512_bf16 = (a >> 5) & 1u;
  }
  return f;
}
#endif

/// Features of this CPU, detected on first use (thread-safe, then free).
inline const CpuFeatures& cpu_features() {
#if SINKKV_DYNAMIC_DISPATCH
  static const CpuFeatures features = detect_cpu_features();
#else
  static const CpuFeatures features{};
#endif
  return features;
}

/// True when this build holds variant `isa` and the CPU can run it. In a
/// static build, the variant the flags selected is taken to run (the
/// whole translation unit already requires it).
inline bool instruction_set_supported(InstructionSet isa) {
  constexpr bool kDynamic = SINKKV_DYNAMIC_DISPATCH != 0;
  switch (isa) {
    case InstructionSet::kAuto:
    case InstructionSet::kScalar: return true;
    case InstructionSet::kSse2: return SINKKV_VARIANT_SSE2 && (!kDynamic || cpu_features().sse2);
    case InstructionSet::kAvx2: return SINKKV_VARIANT_AVX2 && (!kDynamic || cpu_features().avx2_fma_f16c);
    case InstructionSet::kAvx512: return SINKKV_VARIANT_AVX512 && (!kDynamic || cpu_features().avx512);
    case InstructionSet::kAvx512Bf16:
      return SINKKV_VARIANT_AVX512_BF16 && (!kDynamic || cpu_features().avx512_bf16);
    case InstructionSet::kNeon: return SINKKV_VARIANT_NEON != 0;
  }
  return false;
}

/// Every variant, best first.
inline constexpr InstructionSet kVariantsBestFirst[] = {InstructionSet::kAvx512Bf16, InstructionSet::kAvx512,
                                                        InstructionSet::kAvx2,       InstructionSet::kSse2,
                                                        InstructionSet::kNeon,       InstructionSet::kScalar};

inline InstructionSet best_instruction_set() {
  for (InstructionSet isa : kVariantsBestFirst) {
    if (instruction_set_supported(isa)) return isa;
  }
  return InstructionSet::kScalar;
}

/// "avx2, sse2, scalar": the supported variants, for error messages.
inline std::string supported_instruction_sets() {
  std::string names;
  for (InstructionSet isa : kVariantsBestFirst) {
    if (!instruction_set_supported(isa)) continue;
    if (!names.empty()) names += ", ";
    names += instruction_set_name(isa);
  }
  return names;
}

inline InstructionSet default_instruction_set();

/// `isa` itself if supported (kAuto: the default); throws sinkkv::Error
/// naming it otherwise.
inline InstructionSet checked_instruction_set(InstructionSet isa, const char* origin) {
  if (isa == InstructionSet::kAuto) return default_instruction_set();
  SINKKV_CHECK(instruction_set_supported(isa), origin << " asks for instruction set " << instruction_set_name(isa)
                                                      << ", which this CPU or build does not run (it runs "
                                                      << supported_instruction_sets() << ")");
  return isa;
}

/// The variant named by the SINKKV_CPU_ISA environment variable ("auto" or
/// unset: the best supported one), read once. An unknown or unsupported
/// name throws sinkkv::Error (again at the next call: nothing is cached).
inline InstructionSet instruction_set_from_environment() {
  const char* value = std::getenv("SINKKV_CPU_ISA");
  if (value == nullptr || value[0] == '\0') return best_instruction_set();
  const InstructionSet all[] = {InstructionSet::kAuto, InstructionSet::kScalar, InstructionSet::kSse2,
                                InstructionSet::kAvx2, InstructionSet::kAvx512, InstructionSet::kAvx512Bf16,
                                InstructionSet::kNeon};
  for (InstructionSet isa : all) {
    if (std::strcmp(value, instruction_set_name(isa)) == 0) {
      return isa == InstructionSet::kAuto ? best_instruction_set()
                                          : checked_instruction_set(isa, "the environment variable SINKKV_CPU_ISA");
    }
  }
  SINKKV_THROW(std::string("sinkkv: the environment variable SINKKV_CPU_ISA is \"") + value +
               "\", which names no instruction set (auto, scalar, sse2, avx2, avx512, avx512_bf16, neon)");
  return best_instruction_set();  // only if a user's SINKKV_THROW returns
}

inline InstructionSet default_instruction_set() {
  static const InstructionSet chosen = instruction_set_from_environment();
  return chosen;
}

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail
