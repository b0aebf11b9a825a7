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
//  2. All of that code, the dispatcher, and the rest of the library live in
//     an inline namespace named after the *baseline* instruction-set macros
//     of the including translation unit (SINKKV_ABI_NAMESPACE,
//     detail/abi_namespace.hpp). Code built
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

#include "abi_namespace.hpp"  // SINKKV_ARCH_*, SINKKV_ABI_NAMESPACE

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

// The enum is a plain type with no code, one type for every unit; the
// function below is code, tagged like the rest of the library.
inline namespace SINKKV_ABI_NAMESPACE {

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

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv
