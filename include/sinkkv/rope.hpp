// sinkkv: rotary position embedding (RoPE) at any position.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "config.hpp"
#include "detail/angle.hpp"
#include "detail/element.hpp"

namespace sinkkv {

/// RoPE for one head size: the frequencies of the rotated pairs, and the
/// rotation of a head row to a position.
///
/// Cost: the constructor allocates num_pairs() doubles; set_position() makes
/// num_pairs() sin/cos calls; rotate() is O(head_dim). Neither allocates.
class Rope {
 public:
  /// cos/sin of every pair's angle at one position; reuse it for every head
  /// and layer of a token. Allocated once, refilled by Rope::set_position.
  class Rotation {
   public:
    Rotation() = default;
    explicit Rotation(int num_pairs) : cos_(static_cast<std::size_t>(num_pairs)), sin_(cos_.size()) {}
    std::uint64_t position() const { return position_; }
    double cos(int pair) const { return cos_[static_cast<std::size_t>(pair)]; }
    double sin(int pair) const { return sin_[static_cast<std::size_t>(pair)]; }

   private:
    friend class Rope;
    std::vector<double> cos_;  // [num_pairs]
    std::vector<double> sin_;  // [num_pairs]
    std::uint64_t position_ = 0;
  };

  Rope(const RopeConfig& config, int head_dim)
      : layout_(config.layout), head_dim_(head_dim), rotary_dim_(config.rotary_dim == 0 ? head_dim : config.rotary_dim) {
    SINKKV_CHECK(head_dim >= 1, "head_dim " << head_dim << " must be >= 1");
    SINKKV_CHECK(std::isfinite(config.theta) && config.theta > 1.0,
                 "rope theta " << config.theta << " must be finite and > 1");
    SINKKV_CHECK(rotary_dim_ >= 2 && rotary_dim_ <= head_dim && rotary_dim_ % 2 == 0,
                 "rope rotary dimension " << rotary_dim_ << " must be even and in [2, head_dim " << head_dim << "]");
    inv_frequency_.resize(static_cast<std::size_t>(num_pairs()));
    for (int pair = 0; pair < num_pairs(); ++pair) {
      inv_frequency_[static_cast<std::size_t>(pair)] =
          std::pow(config.theta, -2.0 * static_cast<double>(pair) / static_cast<double>(rotary_dim_));
    }
  }

  int head_dim() const { return head_dim_; }
  int rotary_dim() const { return rotary_dim_; }
  int num_pairs() const { return rotary_dim_ / 2; }
  RopeLayout layout() const { return layout_; }
  double inv_frequency(int pair) const { return inv_frequency_[static_cast<std::size_t>(pair)]; }

  Rotation make_rotation() const { return Rotation(num_pairs()); }

  /// Fills `rotation` for `position`, exactly for any stream length.
  void set_position(Rotation& rotation, std::uint64_t position) const {
    SINKKV_ASSERT(static_cast<int>(rotation.cos_.size()) == num_pairs());
    for (int pair = 0; pair < num_pairs(); ++pair) {
      const double angle = detail::rotary_angle(position, inv_frequency_[static_cast<std::size_t>(pair)]);
      rotation.cos_[static_cast<std::size_t>(pair)] = std::cos(angle);
      rotation.sin_[static_cast<std::size_t>(pair)] = std::sin(angle);
    }
    rotation.position_ = position;
  }

  /// The two coordinates of a rotated pair.
  int first_of_pair(int pair) const { return layout_ == RopeLayout::kAdjacentPairs ? 2 * pair : pair; }
  int second_of_pair(int pair) const {
    return layout_ == RopeLayout::kAdjacentPairs ? 2 * pair + 1 : pair + num_pairs();
  }

  /// out[d] = (R(position) in)[d] for one head; `in(d)` reads element d.
  /// Computed in double, rounded once to Out. Dimensions past rotary_dim()
  /// are copied.
  template <class In, class Out>
  void rotate(const Rotation& rotation, const In& in, Out* out) const {
    for (int pair = 0; pair < num_pairs(); ++pair) {
      const int a = first_of_pair(pair);
      const int b = second_of_pair(pair);
      const double x = detail::to_double(in(a));
      const double y = detail::to_double(in(b));
      out[a] = detail::from_double<Out>(x * rotation.cos(pair) - y * rotation.sin(pair));
      out[b] = detail::from_double<Out>(x * rotation.sin(pair) + y * rotation.cos(pair));
    }
    for (int d = rotary_dim_; d < head_dim_; ++d) out[d] = detail::from_double<Out>(detail::to_double(in(d)));
  }

 private:
  RopeLayout layout_;
  int head_dim_;
  int rotary_dim_;
  std::vector<double> inv_frequency_;  // [num_pairs]
};

}  // namespace sinkkv
