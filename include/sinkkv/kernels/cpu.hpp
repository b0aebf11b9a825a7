// sinkkv: the fast CPU attention kernel for one decode token.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <Eigen/Core>

#include "../attention.hpp"
#include "../detail/simd_common.hpp"
#include "../detail/simd_dispatch.hpp"
#include "../detail/simd_target.hpp"
#include "../detail/softmax_state.hpp"
// The per-instruction-set operations (each compiles to nothing where its
// variant is not built).
#include "../detail/simd_arm_neon.hpp"
#include "../detail/simd_x86_avx2.hpp"
#include "../detail/simd_x86_avx512.hpp"
#include "../detail/simd_x86_sse2.hpp"

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {

/// The sizes every variant of CpuKernel shares.
struct CpuKernelLimits {
  /// Rows (query heads, or query x head pairs) per pass of the portable
  /// engine; more take several passes, each reading the K/V rows again.
  static constexpr int kMaxGroup = 16;
  /// Largest head_dim for bfloat16 dot products.
  static constexpr int kMaxBfloat16DotHeadDim = 256;
};

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail

// ---- the variants: one copy of the algorithm per instruction set ----------

#if SINKKV_VARIANT_AVX512_BF16
SINKKV_TARGET_BEGIN(SINKKV_TARGET_AVX512_BF16)
#define SINKKV_VARIANT avx512_bf16
#define SINKKV_VARIANT_HAS_VECTORS 1
#define SINKKV_VARIANT_HAS_BF16_PAIRS 1
#include "../detail/cpu_kernel_variant.inl"
#undef SINKKV_VARIANT_HAS_BF16_PAIRS
#undef SINKKV_VARIANT_HAS_VECTORS
#undef SINKKV_VARIANT
SINKKV_TARGET_END
#endif

#if SINKKV_VARIANT_AVX512
SINKKV_TARGET_BEGIN(SINKKV_TARGET_AVX512)
#define SINKKV_VARIANT avx512
#define SINKKV_VARIANT_HAS_VECTORS 1
#define SINKKV_VARIANT_HAS_BF16_PAIRS 0
#include "../detail/cpu_kernel_variant.inl"
#undef SINKKV_VARIANT_HAS_BF16_PAIRS
#undef SINKKV_VARIANT_HAS_VECTORS
#undef SINKKV_VARIANT
SINKKV_TARGET_END
#endif

#if SINKKV_VARIANT_AVX2
SINKKV_TARGET_BEGIN(SINKKV_TARGET_AVX2)
#define SINKKV_VARIANT avx2
#define SINKKV_VARIANT_HAS_VECTORS 1
#define SINKKV_VARIANT_HAS_BF16_PAIRS 0
#include "../detail/cpu_kernel_variant.inl"
#undef SINKKV_VARIANT_HAS_BF16_PAIRS
#undef SINKKV_VARIANT_HAS_VECTORS
#undef SINKKV_VARIANT
SINKKV_TARGET_END
#endif

#if SINKKV_VARIANT_SSE2
SINKKV_TARGET_BEGIN(SINKKV_TARGET_SSE2)
#define SINKKV_VARIANT sse2
#define SINKKV_VARIANT_HAS_VECTORS 1
#define SINKKV_VARIANT_HAS_BF16_PAIRS 0
#include "../detail/cpu_kernel_variant.inl"
#undef SINKKV_VARIANT_HAS_BF16_PAIRS
#undef SINKKV_VARIANT_HAS_VECTORS
#undef SINKKV_VARIANT
SINKKV_TARGET_END
#endif

#if SINKKV_VARIANT_NEON
#define SINKKV_VARIANT neon
#define SINKKV_VARIANT_HAS_VECTORS 1
#define SINKKV_VARIANT_HAS_BF16_PAIRS 0
#include "../detail/cpu_kernel_variant.inl"
#undef SINKKV_VARIANT_HAS_BF16_PAIRS
#undef SINKKV_VARIANT_HAS_VECTORS
#undef SINKKV_VARIANT
#endif

// The portable variant: the unit's own flags, no intrinsics.
#define SINKKV_VARIANT scalar
#define SINKKV_VARIANT_HAS_VECTORS 0
#define SINKKV_VARIANT_HAS_BF16_PAIRS 0
#include "../detail/cpu_kernel_variant.inl"
#undef SINKKV_VARIANT_HAS_BF16_PAIRS
#undef SINKKV_VARIANT_HAS_VECTORS
#undef SINKKV_VARIANT

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {

/// Calls f(V{}) with V the Variant struct of instruction set `isa` (which
/// must be supported; see instruction_set_supported) and returns its result.
template <class F>
decltype(auto) with_variant(InstructionSet isa, F&& f) {
  switch (isa) {
#if SINKKV_VARIANT_AVX512_BF16
    case InstructionSet::kAvx512Bf16: return f(avx512_bf16::Variant{});
#endif
#if SINKKV_VARIANT_AVX512
    case InstructionSet::kAvx512: return f(avx512::Variant{});
#endif
#if SINKKV_VARIANT_AVX2
    case InstructionSet::kAvx2: return f(avx2::Variant{});
#endif
#if SINKKV_VARIANT_SSE2
    case InstructionSet::kSse2: return f(sse2::Variant{});
#endif
#if SINKKV_VARIANT_NEON
    case InstructionSet::kNeon: return f(neon::Variant{});
#endif
    default: return f(scalar::Variant{});
  }
}

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail

namespace sinkkv {
// Tagged by the unit's instruction-set flags (detail/simd_target.hpp): two
// units built with different flags each get their own kernel, dispatcher
// and variants, so neither can run the other's instructions.
inline namespace SINKKV_ABI_NAMESPACE {

/// Attention with an online softmax, one thread: decode (one query token,
/// AttentionArgs) and chunks of queries (ChunkArgs), on one engine.
///
/// Memory traffic is the cost of decode attention, so every key and value
/// row is read from memory once for all the query heads that share it
/// (grouped-query attention); a chunk is computed in tiles of (queries x
/// heads) rows, each reading the K/V tokens its queries see once. Tokens go
/// in blocks small enough to stay in L1: scores of the block for the whole
/// row tile (a query-tile x key-tile product), an online-softmax update per
/// row with each row's band masked exactly, then the weighted value rows
/// added to the running output in register tiles (see
/// detail/cpu_kernel_variant.inl). Key tiles outside every row's band are
/// skipped. The running output lives in `out` itself and everything else
/// on the stack (about 80 KiB): zero allocations per call.
///
/// Instruction sets: the algorithm is compiled once per variant (AVX-512
/// with and without AVX512-BF16, AVX2+FMA+F16C, SSE2, NEON on AArch64, and
/// portable C++), whatever the compiler flags, and a kernel runs the best
/// variant the CPU has (CPUID, checked once per process), or the one it is
/// constructed with, or the one the environment variable SINKKV_CPU_ISA
/// names. Storage float, Eigen::half and Eigen::bfloat16 take the vector
/// path when head_dim is a multiple of the vector width (up to 512 on
/// AVX-512); double storage and other head sizes take the portable loop
/// with the same single-read structure.
///
/// Arithmetic is float for float/half/bfloat16 (double for double); results
/// match ReferenceKernel to float rounding on every variant (see
/// tests/kernels_cpu_test.cpp). NaN or infinity in a query, key or value
/// gives a non-finite output, as the reference does, never a finite one.
/// The one exception to exactness is opt-in: bfloat16_dot_products.
/// Cost: O(num_query_heads * num_tokens * head_dim) flops per query (only
/// the tokens a query sees), 2 * num_kv_heads * num_tokens * head_dim *
/// sizeof(T) bytes read per decode call and per query tile of a chunk.
/// Thread-safety: a const call touches only its arguments and the stack;
/// any number of threads may share one kernel.
struct CpuKernel {
  static constexpr int kMaxBfloat16DotHeadDim = detail::CpuKernelLimits::kMaxBfloat16DotHeadDim;

  /// Allows bfloat16 scores: for bfloat16 storage, the query is rounded to
  /// bfloat16 (nearest-even, once per call) and the score dot products run
  /// on bfloat16 pairs (VDPBF16PS), about twice as fast. Every score then
  /// carries the query's rounding, a relative error up to 2^-9 of |q||k|,
  /// as when ggml dots a bfloat16 cache. Takes effect only where
  /// uses_bfloat16_dot() says so (the kAvx512Bf16 variant, bfloat16
  /// storage, head_dim a multiple of 32 up to kMaxBfloat16DotHeadDim);
  /// elsewhere it changes nothing. Off by default.
  bool bfloat16_dot_products = false;

  /// The default variant: SINKKV_CPU_ISA's if set, else the best this CPU
  /// runs (detected once per process). Throws sinkkv::Error if
  /// SINKKV_CPU_ISA names an unknown or unsupported instruction set.
  CpuKernel() : instruction_set_(detail::default_instruction_set()) {}
  /// A chosen variant (kAuto: the default). Throws sinkkv::Error naming it
  /// if this CPU or build cannot run it (see supports()).
  explicit CpuKernel(InstructionSet isa) : instruction_set_(detail::checked_instruction_set(isa, "CpuKernel")) {}

  /// The variant this kernel runs (never kAuto).
  InstructionSet instruction_set() const { return instruction_set_; }
  /// True when this build holds variant `isa` and this CPU can run it.
  static bool supports(InstructionSet isa) { return detail::instruction_set_supported(isa); }
  /// The best variant this CPU runs (ignoring SINKKV_CPU_ISA).
  static InstructionSet best_instruction_set() { return detail::best_instruction_set(); }

  /// Vector width in floats of this kernel's variant (1 for kScalar).
  int vector_lanes() const {
    return detail::with_variant(instruction_set_, [](auto variant) { return decltype(variant)::kVectorLanes; });
  }
  /// True when bfloat16_dot_products takes effect for storage T and this head size.
  template <class T>
  bool uses_bfloat16_dot(int head_dim) const {
    return detail::with_variant(instruction_set_, [head_dim](auto variant) {
      return decltype(variant)::template uses_bfloat16_dot<T>(head_dim);
    });
  }
  /// True when storage T with this head size takes the vectorised path.
  template <class T>
  bool uses_vector_path(int head_dim) const {
    return detail::with_variant(instruction_set_, [head_dim](auto variant) {
      return decltype(variant)::template uses_vector_path<T>(head_dim);
    });
  }
  /// Decode: one query token, every head (the AttentionKernel contract).
  template <class T>
  void operator()(const AttentionArgs<T>& args, const AttentionOutput<compute_t<T>>& out) const {
    const bool pairs = bfloat16_dot_products;
    detail::with_variant(instruction_set_, [&](auto variant) { decltype(variant)::attend(args, out, pairs); });
  }

  /// A chunk of queries (the ChunkAttentionKernel contract): every query
  /// and head of `out`.
  template <class T>
  void operator()(const ChunkArgs<T>& args, const ChunkOutput<compute_t<T>>& out) const {
    attend_queries(args, out, 0, args.num_queries);
  }

  /// Queries [first_query, first_query + num_queries) of a chunk only (their
  /// rows of `out`; the others are not touched): how ParallelCpuKernel
  /// splits a chunk between threads. @pre 0 <= first_query,
  /// first_query + num_queries <= args.num_queries.
  template <class T>
  void attend_queries(const ChunkArgs<T>& args, const ChunkOutput<compute_t<T>>& out, int first_query,
                      int num_queries) const {
    const bool pairs = bfloat16_dot_products;
    detail::with_variant(instruction_set_, [&](auto variant) {
      decltype(variant)::attend_chunk(args, out, first_query, num_queries, pairs);
    });
  }

 private:
  InstructionSet instruction_set_;
};

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv
