// sinkkv::detail: the running state of an online softmax.
#pragma once

#include <limits>

#include "simd_common.hpp"

namespace sinkkv::detail {
// Tagged by the unit's instruction-set flags like the kernels that inline
// it (see simd_target.hpp): float code compiled with -mavx2 must not be
// shared with a generic unit.
inline namespace SINKKV_ABI_NAMESPACE {

/// Running maximum and normaliser of exp(score - max) for one query head.
/// A partial attention result is (normalised output, log_sum_exp()); two
/// results over disjoint key sets merge exactly through their log-sum-exps.
template <class C>
struct SoftmaxState {
  C max = -std::numeric_limits<C>::infinity();
  C sum = 0;

  /// Raises the maximum to `new_max` if larger; returns the factor by which
  /// everything accumulated so far must be scaled. A NaN new_max changes
  /// nothing (the NaN reaches the result through its own weight).
  SINKKV_ALWAYS_INLINE C rescale_to(C new_max) {
    if (!(new_max > max)) return C(1);
    const C factor = scalar_exp(max - new_max);  // exp(-inf) = 0 for the first block
    sum *= factor;
    max = new_max;
    return factor;
  }

  SINKKV_ALWAYS_INLINE C log_sum_exp() const { return max + scalar_log(sum); }
};

/// Weights that combine two normalised partial outputs with log-sum-exps a
/// and b: out = w_a * out_a + w_b * out_b, lse = log(e^a + e^b).
template <class C>
struct MergeWeights {
  C weight_a;
  C weight_b;
  C log_sum_exp;
};

/// A NaN log-sum-exp on either side gives NaN weights (so the merged
/// output is NaN, never a finite mix); both -inf (no keys) gives zeros.
template <class C>
inline MergeWeights<C> merge_weights(C lse_a, C lse_b) {
  const C high = lse_a > lse_b ? lse_a : lse_b;
  if (high == -std::numeric_limits<C>::infinity()) return {C(0), C(0), high};
  const C ea = scalar_exp(lse_a - high);
  const C eb = scalar_exp(lse_b - high);
  const C total = ea + eb;
  return {ea / total, eb / total, high + scalar_log(total)};
}

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail
