// sinkkv::detail: which instruction sets the fast CPU kernel is compiled for,
// how their code is kept apart, and the names the kernel dispatches on.
//
// One header-only library, many instruction sets, and users who compile
// their translation units with different flags. Two rules keep that safe:
//
//  1. Every instruction-set *variant* of the kernel (AVX-512, AVX2, SSE2,
//     NEON, portable scalar) is compiled from the same source inside its own
//     namespace, under a per-function target attribute (GCC's
//     `#pragma GCC target`, clang's `#pragma clang attribute`), so a generic
//     -O2 build still holds AVX2 and AVX-512 code, and a run-time dispatcher
//     (detail/simd_dispatch.hpp) picks the best one the CPU has.
//  2. All of that code, and the dispatcher itself, lives in an inline
//     namespace named after the *baseline* instruction-set macros of the
//     including translation unit (SINKKV_ABI_NAMESPACE below). Code built
//     with -mavx2 may use AVX2 even in its "SSE2" variant or in plain scalar
//     code, so two translation units with different flags must never share
//     one of these symbols: the linker keeps one copy of an inline function,
//     and a generic unit could otherwise end up running the other unit's
//     AVX2 instructions. With the tag, each flag set gets its own copy.
//
// Pinning at compile time: define SINKKV_STATIC_DISPATCH to build only the
// variant the translation unit's own flags enable (plus the portable one)
// and skip the CPU check; compilers without target pragmas always do this.
#pragma once

// ---- function attributes ----------------------------------------------------

// Kernel phases that must get the register allocator to themselves: inlined
// into one large function, GCC 12 spills accumulators and parks pointers in
// vector registers, which halved the FMA rate of the score loop.
// Their inner tiles, and the reductions they call, must be inlined in turn,
// or their accumulator arrays go through memory.
#if defined(__GNUC__) || defined(__clang__)
#define SINKKV_NOINLINE __attribute__((noinline))
#define SINKKV_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define SINKKV_NOINLINE
#define SINKKV_ALWAYS_INLINE inline
#endif

// ---- the architecture and what this compiler can target ---------------------

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(_M_ARM64EC)
#define SINKKV_ARCH_X86_64 1
#else
#define SINKKV_ARCH_X86_64 0
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
#define SINKKV_ARCH_AARCH64 1
#else
#define SINKKV_ARCH_AARCH64 0
#endif

// Per-function targets: GCC >= 10 and clang >= 9 accept every intrinsic the
// variants use inside a target region whatever the command-line flags.
#if !defined(SINKKV_STATIC_DISPATCH) && SINKKV_ARCH_X86_64 &&                                      \
    ((defined(__clang__) && __clang_major__ >= 9) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 10))
#define SINKKV_DYNAMIC_DISPATCH 1
#else
#define SINKKV_DYNAMIC_DISPATCH 0
#endif

#define SINKKV_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define SINKKV_TARGET_BEGIN(targets) \
  SINKKV_PRAGMA(clang attribute push(__attribute__((target(targets))), apply_to = function))
#define SINKKV_TARGET_END SINKKV_PRAGMA(clang attribute pop)
#elif defined(__GNUC__)
#define SINKKV_TARGET_BEGIN(targets) SINKKV_PRAGMA(GCC push_options) SINKKV_PRAGMA(GCC target(targets))
#define SINKKV_TARGET_END SINKKV_PRAGMA(GCC pop_options)
#else
#define SINKKV_TARGET_BEGIN(targets)
#define SINKKV_TARGET_END
#endif

// The target strings of the x86 variants (also what their CPU check asks for).
#define SINKKV_TARGET_AVX512_BF16 "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c"
#define SINKKV_TARGET_AVX512 "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"
#define SINKKV_TARGET_AVX2 "avx2,fma,f16c"
#define SINKKV_TARGET_SSE2 "sse2"

// ---- which variants this translation unit compiles --------------------------
// SINKKV_VARIANT_<NAME> is 1 when the variant is built. The portable scalar
// variant always is.

#if SINKKV_DYNAMIC_DISPATCH
#define SINKKV_VARIANT_AVX512_BF16 1
#define SINKKV_VARIANT_AVX512 1
#define SINKKV_VARIANT_AVX2 1
#define SINKKV_VARIANT_SSE2 1
#else  // static: only what the flags enable
#if SINKKV_ARCH_X86_64 && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__) && defined(__AVX512BF16__) && defined(__FMA__) && defined(__F16C__)
#define SINKKV_VARIANT_AVX512_BF16 1
#else
#define SINKKV_VARIANT_AVX512_BF16 0
#endif
#if SINKKV_ARCH_X86_64 && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__) && defined(__FMA__) && defined(__F16C__) && !SINKKV_VARIANT_AVX512_BF16
#define SINKKV_VARIANT_AVX512 1
#else
#define SINKKV_VARIANT_AVX512 0
#endif
#if SINKKV_ARCH_X86_64 && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && \
    !SINKKV_VARIANT_AVX512_BF16 && !SINKKV_VARIANT_AVX512
#define SINKKV_VARIANT_AVX2 1
#else
#define SINKKV_VARIANT_AVX2 0
#endif
#if SINKKV_ARCH_X86_64 && (defined(__SSE2__) || defined(_M_X64)) && !SINKKV_VARIANT_AVX512_BF16 && \
    !SINKKV_VARIANT_AVX512 && !SINKKV_VARIANT_AVX2
#define SINKKV_VARIANT_SSE2 1
#else
#define SINKKV_VARIANT_SSE2 0
#endif
#endif
// AArch64 always has Advanced SIMD (NEON); GCC and clang spell it the same.
#if SINKKV_ARCH_AARCH64 && defined(__ARM_NEON) && (defined(__GNUC__) || defined(__clang__))
#define SINKKV_VARIANT_NEON 1
#else
#define SINKKV_VARIANT_NEON 0
#endif

// ---- the translation unit's baseline, as a namespace name -------------------
// One binary digit per instruction-set macro the compiler may act on by
// itself (auto-vectorisation, scalar BMI, VEX encoding of SSE code), plus
// fast-math (which changes NaN semantics). E.g. a default x86-64 GCC build
// is sinkkv::abi_x86_1100000000000000000000000_0.

#if defined(__SSE__) || defined(_M_X64)
#define SINKKV_ABI_B00 1
#else
#define SINKKV_ABI_B00 0
#endif
#if defined(__SSE2__) || defined(_M_X64)
#define SINKKV_ABI_B01 1
#else
#define SINKKV_ABI_B01 0
#endif
#if defined(__SSE3__)
#define SINKKV_ABI_B02 1
#else
#define SINKKV_ABI_B02 0
#endif
#if defined(__SSSE3__)
#define SINKKV_ABI_B03 1
#else
#define SINKKV_ABI_B03 0
#endif
#if defined(__SSE4_1__)
#define SINKKV_ABI_B04 1
#else
#define SINKKV_ABI_B04 0
#endif
#if defined(__SSE4_2__)
#define SINKKV_ABI_B05 1
#else
#define SINKKV_ABI_B05 0
#endif
#if defined(__POPCNT__)
#define SINKKV_ABI_B06 1
#else
#define SINKKV_ABI_B06 0
#endif
#if defined(__AVX__)
#define SINKKV_ABI_B07 1
#else
#define SINKKV_ABI_B07 0
#endif
#if defined(__AVX2__)
#define SINKKV_ABI_B08 1
#else
#define SINKKV_ABI_B08 0
#endif
#if defined(__FMA__)
#define SINKKV_ABI_B09 1
#else
#define SINKKV_ABI_B09 0
#endif
#if defined(__F16C__)
#define SINKKV_ABI_B10 1
#else
#define SINKKV_ABI_B10 0
#endif
#if defined(__BMI__)
#define SINKKV_ABI_B11 1
#else
#define SINKKV_ABI_B11 0
#endif
#if defined(__BMI2__)
#define SINKKV_ABI_B12 1
#else
#define SINKKV_ABI_B12 0
#endif
#if defined(__LZCNT__)
#define SINKKV_ABI_B13 1
#else
#define SINKKV_ABI_B13 0
#endif
#if defined(__MOVBE__)
#define SINKKV_ABI_B14 1
#else
#define SINKKV_ABI_B14 0
#endif
#if defined(__AVX512F__)
#define SINKKV_ABI_B15 1
#else
#define SINKKV_ABI_B15 0
#endif
#if defined(__AVX512CD__)
#define SINKKV_ABI_B16 1
#else
#define SINKKV_ABI_B16 0
#endif
#if defined(__AVX512BW__)
#define SINKKV_ABI_B17 1
#else
#define SINKKV_ABI_B17 0
#endif
#if defined(__AVX512DQ__)
#define SINKKV_ABI_B18 1
#else
#define SINKKV_ABI_B18 0
#endif
#if defined(__AVX512VL__)
#define SINKKV_ABI_B19 1
#else
#define SINKKV_ABI_B19 0
#endif
#if defined(__AVX512BF16__)
#define SINKKV_ABI_B20 1
#else
#define SINKKV_ABI_B20 0
#endif
#if defined(__AVX512FP16__)
#define SINKKV_ABI_B21 1
#else
#define SINKKV_ABI_B21 0
#endif
#if defined(__AVX512VNNI__) || defined(__AVXVNNI__)
#define SINKKV_ABI_B22 1
#else
#define SINKKV_ABI_B22 0
#endif
#if defined(__AVX512VBMI__) || defined(__AVX512VBMI2__)
#define SINKKV_ABI_B23 1
#else
#define SINKKV_ABI_B23 0
#endif
#if defined(__AVX512IFMA__)
#define SINKKV_ABI_B24 1
#else
#define SINKKV_ABI_B24 0
#endif
#if defined(__FAST_MATH__)
#define SINKKV_ABI_FM 1
#else
#define SINKKV_ABI_FM 0
#endif
#if defined(__ARM_FEATURE_FMA)
#define SINKKV_ABI_A0 1
#else
#define SINKKV_ABI_A0 0
#endif
#if defined(__ARM_FEATURE_FP16_VECTOR_ARITHMETIC) || defined(__ARM_FEATURE_FP16_SCALAR_ARITHMETIC)
#define SINKKV_ABI_A1 1
#else
#define SINKKV_ABI_A1 0
#endif
#if defined(__ARM_FEATURE_DOTPROD)
#define SINKKV_ABI_A2 1
#else
#define SINKKV_ABI_A2 0
#endif
#if defined(__ARM_FEATURE_BF16) || defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
#define SINKKV_ABI_A3 1
#else
#define SINKKV_ABI_A3 0
#endif
#if defined(__ARM_FEATURE_SVE)
#define SINKKV_ABI_A4 1
#else
#define SINKKV_ABI_A4 0
#endif

#define SINKKV_ABI_JOIN_X86(b00, b01, b02, b03, b04, b05, b06, b07, b08, b09, b10, b11, b12, b13, b14, b15, b16, b17, \
                            b18, b19, b20, b21, b22, b23, b24, fm)                                                  \
  abi_x86_##b00##b01##b02##b03##b04##b05##b06##b07##b08##b09##b10##b11##b12##b13##b14##b15##b16##b17##b18##b19##b20##b21##b22##b23##b24##_##fm
#define SINKKV_ABI_EXPAND_X86(...) SINKKV_ABI_JOIN_X86(__VA_ARGS__)
#define SINKKV_ABI_JOIN_ARM(a0, a1, a2, a3, a4, fm) abi_arm64_##a0##a1##a2##a3##a4##_##fm
#define SINKKV_ABI_EXPAND_ARM(...) SINKKV_ABI_JOIN_ARM(__VA_ARGS__)
#define SINKKV_ABI_JOIN_OTHER(fm) abi_generic_##fm
#define SINKKV_ABI_EXPAND_OTHER(...) SINKKV_ABI_JOIN_OTHER(__VA_ARGS__)

/// The inline namespace that holds sinkkv's instruction-set-dependent code
/// for this translation unit's flags (see rule 2 above). Users never spell
/// it; other headers of the library may wrap code in it the same way.
#ifndef SINKKV_ABI_NAMESPACE
#if SINKKV_ARCH_X86_64
#define SINKKV_ABI_NAMESPACE                                                                                       \
  SINKKV_ABI_EXPAND_X86(SINKKV_ABI_B00, SINKKV_ABI_B01, SINKKV_ABI_B02, SINKKV_ABI_B03, SINKKV_ABI_B04,             \
                        SINKKV_ABI_B05, SINKKV_ABI_B06, SINKKV_ABI_B07, SINKKV_ABI_B08, SINKKV_ABI_B09,             \
                        SINKKV_ABI_B10, SINKKV_ABI_B11, SINKKV_ABI_B12, SINKKV_ABI_B13, SINKKV_ABI_B14,             \
                        SINKKV_ABI_B15, SINKKV_ABI_B16, SINKKV_ABI_B17, SINKKV_ABI_B18, SINKKV_ABI_B19,             \
                        SINKKV_ABI_B20, SINKKV_ABI_B21, SINKKV_ABI_B22, SINKKV_ABI_B23, SINKKV_ABI_B24, SINKKV_ABI_FM)
#elif SINKKV_ARCH_AARCH64
#define SINKKV_ABI_NAMESPACE \
  SINKKV_ABI_EXPAND_ARM(SINKKV_ABI_A0, SINKKV_ABI_A1, SINKKV_ABI_A2, SINKKV_ABI_A3, SINKKV_ABI_A4, SINKKV_ABI_FM)
#else
#define SINKKV_ABI_NAMESPACE SINKKV_ABI_EXPAND_OTHER(SINKKV_ABI_FM)
#endif
#endif

namespace sinkkv {

/// The instruction-set variants of CpuKernel. kAuto means "the best one this
/// CPU runs" (or the one the SINKKV_CPU_ISA environment variable names).
enum class InstructionSet {
  kAuto,
  kScalar,      ///< portable C++, any CPU (the compiler may vectorise it for the build's flags)
  kSse2,        ///< x86-64 baseline: 4 float lanes
  kAvx2,        ///< AVX2 + FMA + F16C (Haswell, Zen 1 and later): 8 lanes
  kAvx512,      ///< AVX-512 F/BW/VL/DQ (Skylake-SP, Zen 4 and later): 16 lanes
  kAvx512Bf16,  ///< kAvx512 plus AVX512-BF16 (Cooper Lake, Sapphire Rapids, Zen 4): VDPBF16PS
  kNeon,        ///< AArch64 Advanced SIMD: 4 lanes
};

/// "auto", "scalar", "sse2", "avx2", "avx512", "avx512_bf16", "neon": the
/// names SINKKV_CPU_ISA accepts.
inline const char* instruction_set_name(InstructionSet isa) {
  switch (isa) {
    case InstructionSet::kAuto: return "auto";
    case InstructionSet::kScalar: return "scalar";
    case InstructionSet::kSse2: return "sse2";
    case InstructionSet::kAvx2: return "avx2";
    case InstructionSet::kAvx512: return "avx512";
    case InstructionSet::kAvx512Bf16: return "avx512_bf16";
    case InstructionSet::kNeon: return "neon";
  }
  return "?";
}

}  // namespace sinkkv
