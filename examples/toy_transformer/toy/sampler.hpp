// toy: choosing the next token from logits — greedy, or temperature with
// nucleus (top-p) sampling from a seeded generator.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "checkpoint.hpp"
#include "error.hpp"

namespace toy {

/// Greedy when temperature == 0; else softmax(logits / temperature)
/// restricted to the smallest set of most likely tokens whose mass reaches
/// top_p (1 = no restriction). Buffers are sized at construction; sample()
/// never allocates.
class Sampler {
 public:
  Sampler(int vocab_size, float temperature, float top_p, std::uint64_t seed)
      : temperature_(temperature), top_p_(top_p), rng_(seed), probs_(static_cast<std::size_t>(vocab_size)),
        order_(static_cast<std::size_t>(vocab_size)) {
    TOY_CHECK(vocab_size >= 1, "sampler: vocab_size " << vocab_size);
    TOY_CHECK(temperature >= 0 && std::isfinite(temperature), "temperature " << temperature << " must be >= 0");
    TOY_CHECK(top_p > 0 && top_p <= 1, "top-p " << top_p << " outside (0, 1]");
  }

  /// Starts the generator over from `seed` (a new stream on the same
  /// buffers; as if constructed with it). No allocation.
  void restart(std::uint64_t seed) { rng_ = Rng(seed); }

  /// Index of the largest logit (the first, on ties).
  static int argmax(const float* logits, int n) { return static_cast<int>(std::max_element(logits, logits + n) - logits); }

  int sample(const float* logits) {
    const int n = static_cast<int>(probs_.size());
    if (temperature_ == 0) return argmax(logits, n);
    const float max_logit = *std::max_element(logits, logits + n);
    double sum = 0;
    for (int i = 0; i < n; ++i) {
      probs_[static_cast<std::size_t>(i)] = std::exp((logits[i] - max_logit) / temperature_);
      sum += probs_[static_cast<std::size_t>(i)];
    }
    for (float& p : probs_) p = static_cast<float>(p / sum);
    const float coin = rng_.uniform();
    if (top_p_ >= 1) {
      float cdf = 0;
      for (int i = 0; i < n; ++i) {
        cdf += probs_[static_cast<std::size_t>(i)];
        if (coin < cdf) return i;
      }
      return n - 1;  // rounding
    }
    // Nucleus: like llama2.c, drop tokens that cannot be in it before sorting.
    const float cutoff = (1.0f - top_p_) / static_cast<float>(std::max(1, n - 1));
    int kept = 0;
    for (int i = 0; i < n; ++i) {
      if (probs_[static_cast<std::size_t>(i)] >= cutoff) order_[static_cast<std::size_t>(kept++)] = {probs_[static_cast<std::size_t>(i)], i};
    }
    std::sort(order_.begin(), order_.begin() + kept,
              [](const std::pair<float, int>& a, const std::pair<float, int>& b) {
                return a.first > b.first || (a.first == b.first && a.second < b.second);
              });
    float mass = 0;
    int last = kept - 1;
    for (int i = 0; i < kept; ++i) {
      mass += order_[static_cast<std::size_t>(i)].first;
      if (mass > top_p_) {
        last = i;
        break;
      }
    }
    const float r = coin * mass;
    float cdf = 0;
    for (int i = 0; i <= last; ++i) {
      cdf += order_[static_cast<std::size_t>(i)].first;
      if (r < cdf) return order_[static_cast<std::size_t>(i)].second;
    }
    return order_[static_cast<std::size_t>(last)].second;
  }

 private:
  float temperature_;
  float top_p_;
  Rng rng_;
  std::vector<float> probs_;                 // [vocab_size]
  std::vector<std::pair<float, int>> order_;  // [vocab_size] (probability, id), nucleus candidates
};

}  // namespace toy
