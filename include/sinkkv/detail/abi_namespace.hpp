// sinkkv::detail: the inline namespace that gives every sinkkv symbol the
// instruction-set flags of the translation unit that compiled it.
//
// sinkkv is header-only: each translation unit compiles its own copy of every
// inline function and template it uses, with its own flags, and the linker
// keeps one copy per symbol for the whole program. Built with -mavx2 (or
// even just -mavx, which VEX-encodes plain scalar float code), a copy may
// hold instructions that a unit built for a baseline CPU must not run; at
// -O0 (nothing inlined) or wherever the inliner declines, the baseline unit
// then calls that copy. Wrapping the library in
//
//   namespace sinkkv { inline namespace SINKKV_ABI_NAMESPACE { ... } }
//
// makes the flags part of every mangled name (sinkkv::SinkKVCache<float> is
// sinkkv::abi_x86_..._0::SinkKVCache<float> to the linker), so each flag set
// gets its own copies. Users never spell the tag; a forward declaration
// `namespace sinkkv { class Foo; }` would name a different entity and is not
// supported. sinkkv::Error stays outside (see error.hpp): one type, so a
// catch in any unit catches what any other unit threw.
#pragma once

// ---- the architecture -------------------------------------------------------

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

/// The inline namespace that holds all of sinkkv's code for this translation
/// unit's flags (see the top of this file). Users never spell it. Defining it
/// before including sinkkv overrides it (every unit of a program that shares
/// sinkkv types must then agree on it).
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
