// sinkkv: ALiBi slopes.
#pragma once

#include <cmath>
#include <vector>

#include "detail/abi_namespace.hpp"
#include "detail/tagged_vector.hpp"
#include "error.hpp"

namespace sinkkv {
inline namespace SINKKV_ABI_NAMESPACE {

/// The standard ALiBi slopes (Press et al., 2022) for `num_heads` heads: the
/// geometric sequence 2^(-8(i+1)/n) for a power of two n; otherwise those of
/// the largest power of two m < n, followed by every other slope of 2m.
inline std::vector<double> alibi_slopes(int num_heads) {
  SINKKV_CHECK(num_heads >= 1, "alibi num_heads " << num_heads << " must be >= 1");
  int power = 1;
  while (power * 2 <= num_heads) power *= 2;
  // Built in a tagged vector: std::vector<double>'s own growth code would be
  // shared with units built with other flags (detail/tagged_vector.hpp).
  detail::Vector<double> slopes;
  slopes.reserve(static_cast<std::size_t>(num_heads));
  for (int i = 0; i < power; ++i) slopes.push_back(std::exp2(-8.0 * (i + 1) / power));
  for (int j = 0; power + j < num_heads; ++j) slopes.push_back(std::exp2(-4.0 * (2 * j + 1) / power));
  return std::vector<double>(slopes.begin(), slopes.end());
}

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv
