// Two translation units of one program, built with different instruction-set
// flags (unit_generic.cpp: none; unit_avx2.cpp: -mavx2 -mfma -mf16c), each
// running sinkkv on its own data (issue 12, finding 2). Only plain types
// cross between units, so nothing but sinkkv itself could share code.
#pragma once

namespace two_flag_sets {

/// Attention of one query over a hand-made half-precision K/V cache with
/// CpuKernel: [kQueryHeads * kHeadDim] into `out`.
inline constexpr int kQueryHeads = 8, kKvHeads = 2, kHeadDim = 64, kTokens = 300;
/// The cache scenario: SinkKVCache<Eigen::half>, kSinks + kWindow, no
/// position encoding, kStreamTokens tokens; the last token's output.
inline constexpr int kSinks = 4, kWindow = 60, kStreamTokens = 200;

/// What a unit ran: the variant its CpuKernel chose and the kernel's type
/// name (which carries the unit's instruction-set tag).
struct UnitReport {
  const char* instruction_set;
  const char* kernel_type;
  /// The cache scenario: SinkKVCache<Eigen::half>'s type name (the rest of
  /// the library carries the tag too); the kernel scenario: nullptr.
  const char* cache_type;
};

UnitReport generic_kernel(float* out);
UnitReport avx2_kernel(float* out);
UnitReport generic_cache(float* out);
UnitReport avx2_cache(float* out);
/// Throws the sinkkv::Error of an invalid CacheConfig (window 0): callers
/// in another unit must catch it as sinkkv::Error, one type for all flags.
void generic_throw_error();
void avx2_throw_error();

/// K, V and query element i of token t, head h: multiples of 1/8 in [-1, 1],
/// exact in half precision, so the reference needs no rounding. Static:
/// each unit keeps its own copy (an inline one would be shared code).
static constexpr float element(int which, int t, int h, int d) {
  return static_cast<float>((which * 7 + t * 13 + h * 5 + d * 3) % 17 - 8) / 8.0f;
}

}  // namespace two_flag_sets
