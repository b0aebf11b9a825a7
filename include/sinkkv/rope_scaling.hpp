// sinkkv: RoPE variants - the per-pair inverse frequencies and the attention
// factor of linear interpolation, NTK-aware scaling, Llama 3.x, YaRN, or the
// caller's own frequencies.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <utility>
#include <vector>

#include "detail/abi_namespace.hpp"
#include "error.hpp"

namespace sinkkv {
inline namespace SINKKV_ABI_NAMESPACE {

/// YaRN's magnitude correction for a context extended `factor` times:
/// 0.1 * mscale * ln(factor) + 1, and 1 when factor <= 1 (Peng et al. 2023,
/// "YaRN", section 3.4, sqrt(1/t) = 0.1 ln(s) + 1; `mscale` is the
/// coefficient DeepSeek configurations add). RopeScaling uses it for the
/// attention factor; DeepSeek-style models also multiply their softmax scale
/// by yarn_mscale(factor, mscale_all_dim)^2, which is the caller's to pass as
/// the attention scale.
inline double yarn_mscale(double factor, double mscale = 1.0) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

/// How a model's RoPE departs from the plain inverse frequencies
/// theta^(-2i/d) (pair i of d = rotary_dim rotated dimensions), and the
/// attention factor its scheme defines.
///
/// Every scheme reduces to the same two things, which is all Rope needs:
///  * one inverse frequency per rotated pair (inv_frequencies()), and
///  * an attention factor (effective_attention_factor()): each rotated
///    coordinate of q and k is multiplied by it, so rotated-part scores grow
///    by its square. Non-rotated dimensions (partial rotary) are untouched.
///    This is how Hugging Face transformers applies it (cos and sin times
///    `attention_scaling`); see docs/design.md for why sinkkv does the same.
///
/// Build one with a named constructor (none, linear, ntk_aware, llama3, yarn,
/// explicit_frequencies); the fields mirror the keys of a Hugging Face
/// `rope_scaling` dictionary and may be adjusted afterwards (e.g. yarn's
/// `truncate = false` for gpt-oss). Fields a kind does not use are ignored.
/// Large-theta models (Llama 3 500000, Qwen2 1000000, Mistral 7B v0.2
/// 1000000) need no scaling: only RopeConfig::theta.
///
/// Dynamic NTK (Hugging Face "dynamic") is not offered: its frequencies
/// change with the current sequence length, so keys rotated earlier would
/// disagree with later queries; at a fixed length it is ntk_aware with the
/// factor that length implies. LongRoPE (Phi-3) is explicit_frequencies:
/// inverse frequencies theta^(-2i/d) / long_factor[i] and its attention
/// factor sqrt(1 + ln(s) / ln(original_max_positions)).
///
/// Value type; copying copies explicit_inv_frequencies. Not used on hot
/// paths: Rope evaluates it once, at construction.
struct RopeScaling {
  enum class Kind {
    kNone,      ///< theta^(-2i/d)
    kLinear,    ///< position interpolation: every inverse frequency / factor
    kNtkAware,  ///< theta * factor^(d/(d-2)) in place of theta
    kLlama3,    ///< Llama 3.x: low frequencies / factor, high ones kept, a smooth band between
    kYarn,      ///< YaRN "NTK-by-parts" frequencies and 0.1 ln(factor) + 1 attention factor
    kExplicit,  ///< the caller's own inverse frequencies
  };

  Kind kind = Kind::kNone;
  /// Context extension s (linear, ntk_aware, llama3, yarn).
  double factor = 1.0;
  /// Pre-training context length L (llama3, yarn): Hugging Face
  /// `original_max_position_embeddings`.
  double original_max_positions = 0.0;
  /// llama3: wavelengths above L / low_freq_factor are interpolated (divided
  /// by factor), those below L / high_freq_factor kept, a linear blend in
  /// L / wavelength between.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  /// yarn: pairs that turn more than beta_fast times over L keep their
  /// frequency, those turning fewer than beta_slow times are interpolated;
  /// a linear ramp over the pair index in between.
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  /// yarn: round the ramp's ends outwards to whole pairs, as YaRN's reference
  /// code does; gpt-oss sets false.
  bool truncate = true;
  /// yarn, DeepSeek-style: when both are nonzero the attention factor is
  /// yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
  /// (Hugging Face's rule; 0 means absent). The model then also scales its
  /// softmax by yarn_mscale(factor, mscale_all_dim)^2 - pass that as the
  /// attention scale.
  double mscale = 0.0;
  double mscale_all_dim = 0.0;
  /// Replaces the scheme's attention factor (Hugging Face `attention_factor`).
  std::optional<double> attention_factor = std::nullopt;
  /// kExplicit: inverse frequency of each pair, rotary_dim / 2 of them.
  std::vector<double> explicit_inv_frequencies = {};

  /// Plain RoPE: theta^(-2i/d), attention factor 1.
  static RopeScaling none() { return RopeScaling(); }

  /// Linear position interpolation (Chen et al. 2023; kaiokendev), Hugging
  /// Face "linear": position p is encoded as p / factor, i.e. every inverse
  /// frequency is divided by factor.
  static RopeScaling linear(double factor) {
    RopeScaling scaling;
    scaling.kind = Kind::kLinear;
    scaling.factor = factor;
    return scaling;
  }

  /// NTK-aware scaling (bloc97 2023; YaRN paper section 3.1): the base
  /// becomes theta * factor^(d / (d - 2)), so the lowest frequency is
  /// interpolated by `factor` and the highest kept.
  static RopeScaling ntk_aware(double factor) {
    RopeScaling scaling;
    scaling.kind = Kind::kNtkAware;
    scaling.factor = factor;
    return scaling;
  }

  /// Llama 3.x (Meta's `apply_scaling`; Hugging Face "llama3"). Defaults are
  /// Llama 3.1's: factor 8, low_freq_factor 1, high_freq_factor 4, original
  /// context 8192 (Llama 3.2 1B/3B use factor 32).
  static RopeScaling llama3(double factor = 8.0, double low_freq_factor = 1.0, double high_freq_factor = 4.0,
                            double original_max_positions = 8192.0) {
    RopeScaling scaling;
    scaling.kind = Kind::kLlama3;
    scaling.factor = factor;
    scaling.low_freq_factor = low_freq_factor;
    scaling.high_freq_factor = high_freq_factor;
    scaling.original_max_positions = original_max_positions;
    return scaling;
  }

  /// YaRN (Peng et al. 2023; Hugging Face "yarn"): beta_fast 32, beta_slow 1
  /// as the paper suggests, ramp ends truncated to whole pairs, attention
  /// factor 0.1 ln(factor) + 1. E.g. Qwen2.5 yarn(4, 32768); gpt-oss
  /// yarn(32, 4096) with truncate = false (theta 150000).
  static RopeScaling yarn(double factor, double original_max_positions, double beta_fast = 32.0,
                          double beta_slow = 1.0) {
    RopeScaling scaling;
    scaling.kind = Kind::kYarn;
    scaling.factor = factor;
    scaling.original_max_positions = original_max_positions;
    scaling.beta_fast = beta_fast;
    scaling.beta_slow = beta_slow;
    return scaling;
  }

  /// The caller's own inverse frequencies, one per rotated pair, e.g. an
  /// engine's float table promoted to double, so that sinkkv turns rows by
  /// exactly the frequencies the engine rotated them with.
  static RopeScaling explicit_frequencies(std::vector<double> inv_frequencies, double attention_factor = 1.0) {
    RopeScaling scaling;
    scaling.kind = Kind::kExplicit;
    scaling.explicit_inv_frequencies = std::move(inv_frequencies);
    scaling.attention_factor = attention_factor;
    return scaling;
  }

  /// Throws sinkkv::Error naming the first bad value: theta (finite, > 1,
  /// checked for every kind), rotary_dim (even, >= 2), and the parameters
  /// this kind uses (finite; factors > 0; ...).
  void validate(double theta, int rotary_dim) const {
    SINKKV_CHECK(std::isfinite(theta) && theta > 1.0, "rope theta " << theta << " must be finite and > 1");
    SINKKV_CHECK(rotary_dim >= 2 && rotary_dim % 2 == 0,
                 "rope rotary dimension " << rotary_dim << " must be even and >= 2");
    if (attention_factor) {
      SINKKV_CHECK(std::isfinite(*attention_factor) && *attention_factor > 0.0,
                   "rope attention_factor " << *attention_factor << " must be finite and > 0");
    }
    switch (kind) {
      case Kind::kNone:
        break;
      case Kind::kLinear:
      case Kind::kNtkAware:
        check_factor();
        if (kind == Kind::kNtkAware && rotary_dim > 2) {
          const double scaled_theta = theta * std::pow(factor, rotary_dim / (rotary_dim - 2.0));
          SINKKV_CHECK(std::isfinite(scaled_theta) && scaled_theta > 1.0,
                       "ntk_aware rope factor " << factor << " turns theta " << theta << " into " << scaled_theta
                                                << " (rotary_dim " << rotary_dim << "); it must stay finite and > 1");
        }
        break;
      case Kind::kLlama3:
        check_factor();
        check_original_max_positions();
        SINKKV_CHECK(std::isfinite(low_freq_factor) && low_freq_factor > 0.0,
                     "llama3 rope low_freq_factor " << low_freq_factor << " must be finite and > 0");
        SINKKV_CHECK(std::isfinite(high_freq_factor) && high_freq_factor > low_freq_factor,
                     "llama3 rope high_freq_factor " << high_freq_factor << " must be finite and > low_freq_factor "
                                                     << low_freq_factor);
        break;
      case Kind::kYarn:
        check_factor();
        check_original_max_positions();
        SINKKV_CHECK(std::isfinite(beta_slow) && beta_slow > 0.0,
                     "yarn rope beta_slow " << beta_slow << " must be finite and > 0");
        SINKKV_CHECK(std::isfinite(beta_fast) && beta_fast > beta_slow,
                     "yarn rope beta_fast " << beta_fast << " must be finite and > beta_slow " << beta_slow);
        SINKKV_CHECK(std::isfinite(mscale) && mscale >= 0.0,
                     "yarn rope mscale " << mscale << " must be finite and >= 0");
        SINKKV_CHECK(std::isfinite(mscale_all_dim) && mscale_all_dim >= 0.0,
                     "yarn rope mscale_all_dim " << mscale_all_dim << " must be finite and >= 0");
        break;
      case Kind::kExplicit: {
        const std::size_t pairs = static_cast<std::size_t>(rotary_dim / 2);
        SINKKV_CHECK(explicit_inv_frequencies.size() == pairs,
                     "explicit rope inverse frequencies have " << explicit_inv_frequencies.size()
                                                                << " entries, expected rotary_dim / 2 = " << pairs);
        for (std::size_t pair = 0; pair < pairs; ++pair) {
          const double value = explicit_inv_frequencies[pair];
          SINKKV_CHECK(std::isfinite(value) && value >= 0.0,
                       "explicit rope inverse frequency [" << pair << "] = " << value << " must be finite and >= 0");
        }
        break;
      }
    }
  }

  /// The inverse frequency of each of the rotary_dim / 2 pairs, in double.
  /// Validates first (throws sinkkv::Error). Allocates the result.
  std::vector<double> inv_frequencies(double theta, int rotary_dim) const {
    validate(theta, rotary_dim);
    const int pairs = rotary_dim / 2;
    const double d = static_cast<double>(rotary_dim);
    if (kind == Kind::kExplicit) return explicit_inv_frequencies;

    // theta' of NTK-aware; with one pair (d = 2) the base is irrelevant.
    const double base = kind == Kind::kNtkAware && rotary_dim > 2 ? theta * std::pow(factor, d / (d - 2.0)) : theta;
    std::vector<double> result(static_cast<std::size_t>(pairs));
    for (int pair = 0; pair < pairs; ++pair) result[static_cast<std::size_t>(pair)] = std::pow(base, -2.0 * pair / d);

    switch (kind) {
      case Kind::kLinear:
        for (double& value : result) value /= factor;
        break;
      case Kind::kLlama3: {
        constexpr double kTwoPi = 6.283185307179586;
        const double long_wavelength = original_max_positions / low_freq_factor;   // above: interpolate
        const double short_wavelength = original_max_positions / high_freq_factor;  // below: keep
        for (double& value : result) {
          const double wavelength = kTwoPi / value;
          if (wavelength < short_wavelength) continue;
          if (wavelength > long_wavelength) {
            value /= factor;
          } else {  // blend weight: 0 at the long end, 1 at the short end
            const double keep = (original_max_positions / wavelength - low_freq_factor) /
                                (high_freq_factor - low_freq_factor);
            value = (1.0 - keep) * value / factor + keep * value;
          }
        }
        break;
      }
      case Kind::kYarn: {
        // The ramp runs over the pair index: 0 (keep the frequency) up to
        // pair `low`, 1 (divide by factor) from pair `high`. Pair i turns
        // L * theta^(-2i/d) / (2 pi) times over L tokens; `low` and `high` are
        // where that count equals beta_fast and beta_slow. The upper clamp is
        // d - 1, not d/2 - 1, as in YaRN's reference code.
        constexpr double kTwoPi = 6.283185307179586;
        const auto pair_index_for_turns = [&](double turns) {
          return d * std::log(original_max_positions / (turns * kTwoPi)) / (2.0 * std::log(theta));
        };
        double low = pair_index_for_turns(beta_fast);
        double high = pair_index_for_turns(beta_slow);
        if (truncate) {
          low = std::floor(low);
          high = std::ceil(high);
        }
        low = std::max(low, 0.0);
        high = std::min(high, d - 1.0);
        if (low == high) high += 0.001;  // the reference code's guard against a zero-width ramp
        for (int pair = 0; pair < pairs; ++pair) {
          const double interpolate = std::clamp((pair - low) / (high - low), 0.0, 1.0);
          double& value = result[static_cast<std::size_t>(pair)];
          value = interpolate * (value / factor) + (1.0 - interpolate) * value;
        }
        break;
      }
      case Kind::kNone:
      case Kind::kNtkAware:
      case Kind::kExplicit:
        break;
    }
    return result;
  }

  /// The factor each rotated coordinate of q and k is multiplied by: the
  /// attention_factor field if set, YaRN's derived factor, else 1.
  double effective_attention_factor() const {
    if (attention_factor) return *attention_factor;
    return kind == Kind::kYarn ? yarn_attention_factor() : 1.0;
  }

 private:
  double yarn_attention_factor() const {
    if (mscale != 0.0 && mscale_all_dim != 0.0) {
      return yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim);
    }
    return yarn_mscale(factor);
  }
  void check_factor() const {
    SINKKV_CHECK(std::isfinite(factor) && factor > 0.0, "rope scaling factor " << factor << " must be finite and > 0");
  }
  void check_original_max_positions() const {
    SINKKV_CHECK(std::isfinite(original_max_positions) && original_max_positions > 0.0,
                 "rope original_max_positions " << original_max_positions << " must be finite and > 0");
  }
};

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv
