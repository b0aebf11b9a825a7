// sinkkv: rotary position embedding (RoPE) at any position, for every RoPE
// variant (see rope_scaling.hpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "config.hpp"
#include "detail/abi_namespace.hpp"
#include "detail/angle.hpp"
#include "detail/element.hpp"
#include "detail/tagged_vector.hpp"
#include "rope_scaling.hpp"

namespace sinkkv {
inline namespace SINKKV_ABI_NAMESPACE {

/// RoPE for one head size: the inverse frequencies of the rotated pairs
/// (theta^(-2i/rotary_dim), or a RopeScaling variant's), the attention
/// factor, and the rotation of a head row to a position - or, for rows an
/// engine has already rotated, by a signed difference of positions.
///
/// Invariants: num_pairs() = rotary_dim() / 2 inverse frequencies, finite
/// and >= 0; attention_factor() finite and > 0. Angles are exact (a few
/// 1e-16 rad) at every position below 2^53 (detail::rotary_angle).
///
/// Cost: the constructor allocates num_pairs() doubles; set_position() and
/// set_difference() make num_pairs() sin/cos calls; rotate() is
/// O(head_dim). None of these allocate. A Rope never changes after
/// construction, so its const members may be called from several threads;
/// each thread needs its own Rotation.
class Rope {
 public:
  /// cos/sin of every pair's angle at one position (or for one difference of
  /// positions), and the scale that goes with it; reuse it for every head
  /// and layer of a token. Allocated once, refilled by Rope::set_position or
  /// Rope::set_difference.
  class Rotation {
   public:
    Rotation() = default;
    explicit Rotation(int num_pairs) : cos_(static_cast<std::size_t>(num_pairs)), sin_(cos_.size()) {}
    /// The position of the last Rope::set_position (0 after set_difference).
    std::uint64_t position() const { return position_; }
    /// cos and sin of the pair's angle: a pure rotation, without the scale.
    double cos(int pair) const { return cos_[static_cast<std::size_t>(pair)]; }
    double sin(int pair) const { return sin_[static_cast<std::size_t>(pair)]; }
    /// Rope::rotate multiplies every rotated coordinate by this: the
    /// attention factor after set_position (a row is encoded at a position),
    /// 1 after set_difference (an encoded row is only turned, so the factor
    /// it already carries is never applied twice).
    double scale() const { return scale_; }

   private:
    friend class Rope;
    detail::Vector<double> cos_;  // [num_pairs]
    detail::Vector<double> sin_;  // [num_pairs]
    std::uint64_t position_ = 0;
    double scale_ = 1.0;
  };

  /// RoPE as configured, with config.scaling's frequencies and attention
  /// factor. Throws sinkkv::Error naming the first bad value.
  Rope(const RopeConfig& config, int head_dim)
      : layout_(config.layout),
        head_dim_(head_dim),
        rotary_dim_(config.rotary_dim == 0 ? head_dim : config.rotary_dim) {
    SINKKV_CHECK(head_dim >= 1, "head_dim " << head_dim << " must be >= 1");
    SINKKV_CHECK(rotary_dim_ >= 2 && rotary_dim_ <= head_dim && rotary_dim_ % 2 == 0,
                 "rope rotary dimension " << rotary_dim_ << " must be even and in [2, head_dim " << head_dim << "]");
    const std::vector<double> inv_frequency = config.scaling.inv_frequencies(config.theta, rotary_dim_);  // validates
    inv_frequency_.assign(inv_frequency.begin(), inv_frequency.end());
    attention_factor_ = config.scaling.effective_attention_factor();
  }

  int head_dim() const { return head_dim_; }
  int rotary_dim() const { return rotary_dim_; }
  int num_pairs() const { return rotary_dim_ / 2; }
  RopeLayout layout() const { return layout_; }
  double inv_frequency(int pair) const { return inv_frequency_[static_cast<std::size_t>(pair)]; }
  /// Each rotated coordinate of an encoded row is multiplied by this (YaRN's
  /// magnitude correction; 1 for most variants). Scores between encoded q
  /// and k carry its square on the rotated dimensions.
  double attention_factor() const { return attention_factor_; }

  Rotation make_rotation() const { return Rotation(num_pairs()); }

  /// Fills `rotation` to encode `position` (angles position * inv_frequency,
  /// scale attention_factor()), exactly for any stream length.
  void set_position(Rotation& rotation, std::uint64_t position) const {
    SINKKV_ASSERT(static_cast<int>(rotation.cos_.size()) == num_pairs());
    for (int pair = 0; pair < num_pairs(); ++pair) {
      const double angle = detail::rotary_angle(position, inv_frequency_[static_cast<std::size_t>(pair)]);
      rotation.cos_[static_cast<std::size_t>(pair)] = std::cos(angle);
      rotation.sin_[static_cast<std::size_t>(pair)] = std::sin(angle);
    }
    rotation.position_ = position;
    rotation.scale_ = attention_factor_;
  }

  /// Fills `rotation` to turn an already encoded row by `difference`
  /// positions (negative turns back), scale 1: rotating a row encoded at a
  /// by the difference b - a gives the row encoded at b, to a few 1e-16
  /// relative. This is how a query an engine rotated at its stream index
  /// moves into the sink frame (difference = cache position - stream index).
  /// Exact for |difference| below 2^53; the frequencies must be the ones the
  /// row was encoded with (for an engine's rows: RopeScaling::
  /// explicit_frequencies with the engine's own table).
  void set_difference(Rotation& rotation, std::int64_t difference) const {
    SINKKV_ASSERT(static_cast<int>(rotation.cos_.size()) == num_pairs());
    const bool backwards = difference < 0;
    const std::uint64_t magnitude =
        backwards ? std::uint64_t{0} - static_cast<std::uint64_t>(difference) : static_cast<std::uint64_t>(difference);
    for (int pair = 0; pair < num_pairs(); ++pair) {
      const double angle = detail::rotary_angle(magnitude, inv_frequency_[static_cast<std::size_t>(pair)]);
      rotation.cos_[static_cast<std::size_t>(pair)] = std::cos(angle);
      rotation.sin_[static_cast<std::size_t>(pair)] = backwards ? -std::sin(angle) : std::sin(angle);
    }
    rotation.position_ = 0;
    rotation.scale_ = 1.0;
  }

  /// The two coordinates of a rotated pair.
  int first_of_pair(int pair) const { return layout_ == RopeLayout::kAdjacentPairs ? 2 * pair : pair; }
  int second_of_pair(int pair) const {
    return layout_ == RopeLayout::kAdjacentPairs ? 2 * pair + 1 : pair + num_pairs();
  }

  /// out[d] = (rotation.scale() * R in)[d] for one head; `in(d)` reads
  /// element d. Computed in double, rounded once to Out. Dimensions past
  /// rotary_dim() are copied unscaled (as Hugging Face applies the attention
  /// factor: to cos and sin only).
  template <class In, class Out>
  void rotate(const Rotation& rotation, const In& in, Out* out) const {
    const double scale = rotation.scale();
    for (int pair = 0; pair < num_pairs(); ++pair) {
      const int a = first_of_pair(pair);
      const int b = second_of_pair(pair);
      const double x = detail::to_double(in(a));
      const double y = detail::to_double(in(b));
      out[a] = detail::from_double<Out>(scale * (x * rotation.cos(pair) - y * rotation.sin(pair)));
      out[b] = detail::from_double<Out>(scale * (x * rotation.sin(pair) + y * rotation.cos(pair)));
    }
    for (int d = rotary_dim_; d < head_dim_; ++d) out[d] = detail::from_double<Out>(detail::to_double(in(d)));
  }

 private:
  RopeLayout layout_;
  int head_dim_;
  int rotary_dim_;
  detail::Vector<double> inv_frequency_;  // [num_pairs]
  double attention_factor_ = 1.0;
};

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv
