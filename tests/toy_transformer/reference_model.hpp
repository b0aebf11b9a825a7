// Test support: the toy transformer from scratch, in double, with no cache —
// the oracle for toy::Transformer under every policy.
//
// Each token's un-rotated keys and values are kept for every layer. For each
// query, the policy under test names the tokens attended and the rotary
// position of each (and of the query); keys and the query are rotated anew
// for every query. This is the naive "re-rotate everything every step"
// construction that sinkkv avoids, which is what makes it a reference.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "toy/checkpoint.hpp"
#include "toy/model.hpp"

namespace toy_test {

/// Tokens a query attends to and their rotary positions.
struct Attended {
  std::vector<int> tokens;       // stream indices, ascending
  std::vector<double> positions;  // rotary position of each
  double query_position = 0;
};

/// What `policy` attends to for the query at stream index t, spelled out
/// directly from the policy's definition (StreamingLLM, sections 3-4).
/// @pre spec is not mixed (see head_spec)
inline Attended attended(const toy::PolicySpec& spec, int t) {
  Attended a;
  const int sinks = spec.num_sinks, window = spec.window;
  for (int j = 0; j <= t; ++j) {
    const bool is_sink = j < sinks;
    const bool in_window = j > t - window;
    const bool keep = spec.policy == toy::Policy::kDense || is_sink || in_window;
    if (keep) a.tokens.push_back(j);
  }
  const bool stream_positions = spec.policy == toy::Policy::kDense || spec.policy == toy::Policy::kWindowStream ||
                                spec.policy == toy::Policy::kSinkStream;
  for (std::size_t i = 0; i < a.tokens.size(); ++i) {
    a.positions.push_back(stream_positions ? a.tokens[i] : static_cast<double>(i));
  }
  a.query_position = a.positions.back();
  return a;
}

/// The uniform policy one KV head follows: a mixed policy's head keeps its
/// own sinks + window at cache-relative positions, as the sink policy does.
inline toy::PolicySpec head_spec(const toy::PolicySpec& spec, int layer, int kv_head, int num_kv_heads) {
  if (spec.policy != toy::Policy::kMixed) return spec;
  const sinkkv::RetentionPolicy p = spec.head(layer, kv_head, num_kv_heads);
  return toy::PolicySpec{toy::Policy::kSink, p.num_sinks, p.window};
}

/// A dense, double-precision forward pass of one sequence.
class ReferenceModel {
 public:
  explicit ReferenceModel(const toy::ModelWeights& w) : w_(w) {
    keys_.resize(static_cast<std::size_t>(w.config.num_layers));
    values_.resize(keys_.size());
  }

  /// Feeds `token` (stream index = tokens fed so far) and returns the logits
  /// for the next token, attending as `spec` says (not recompute). If
  /// `weights` is given, it receives [layer][head][attended token] softmax
  /// weights.
  std::vector<double> step(int token, const toy::PolicySpec& spec,
                           std::vector<std::vector<std::vector<double>>>* weights = nullptr) {
    const toy::ModelConfig& c = w_.config;
    const int d = c.dim, hd = c.head_dim(), kv_dim = c.kv_dim(), group = c.num_heads / c.num_kv_heads;
    const int t = tokens_++;
    std::vector<double> x(w_.token_embedding.begin() + token * d, w_.token_embedding.begin() + (token + 1) * d);
    if (weights != nullptr) weights->assign(static_cast<std::size_t>(c.num_layers), {});
    for (int l = 0; l < c.num_layers; ++l) {
      const std::vector<double> xb = rms_norm(x, &w_.rms_att[static_cast<std::size_t>(l * d)]);
      const std::vector<double> q = matvec(&w_.wq[static_cast<std::size_t>(l) * d * d], d, d, xb);
      keys_[static_cast<std::size_t>(l)].push_back(
          matvec(&w_.wk[static_cast<std::size_t>(l) * kv_dim * d], kv_dim, d, xb));
      values_[static_cast<std::size_t>(l)].push_back(
          matvec(&w_.wv[static_cast<std::size_t>(l) * kv_dim * d], kv_dim, d, xb));
      std::vector<double> att(static_cast<std::size_t>(d), 0.0);
      for (int h = 0; h < c.num_heads; ++h) {
        const int kvh = h / group;
        const Attended a = attended(head_spec(spec, l, kvh, c.num_kv_heads), t);
        const std::vector<double> qh = rotate(&q[static_cast<std::size_t>(h * hd)], hd, a.query_position);
        std::vector<double> scores;
        for (std::size_t i = 0; i < a.tokens.size(); ++i) {
          const std::vector<double>& k = keys_[static_cast<std::size_t>(l)][static_cast<std::size_t>(a.tokens[i])];
          const std::vector<double> kh = rotate(&k[static_cast<std::size_t>(kvh * hd)], hd, a.positions[i]);
          double dot = 0;
          for (int e = 0; e < hd; ++e) dot += qh[static_cast<std::size_t>(e)] * kh[static_cast<std::size_t>(e)];
          scores.push_back(dot / std::sqrt(static_cast<double>(hd)));
        }
        const double max_score = *std::max_element(scores.begin(), scores.end());
        double sum = 0;
        for (double& s : scores) sum += (s = std::exp(s - max_score));
        for (double& s : scores) s /= sum;
        for (std::size_t i = 0; i < a.tokens.size(); ++i) {
          const std::vector<double>& v = values_[static_cast<std::size_t>(l)][static_cast<std::size_t>(a.tokens[i])];
          for (int e = 0; e < hd; ++e) att[static_cast<std::size_t>(h * hd + e)] += scores[i] * v[static_cast<std::size_t>(kvh * hd + e)];
        }
        if (weights != nullptr) (*weights)[static_cast<std::size_t>(l)].push_back(scores);
      }
      add(x, matvec(&w_.wo[static_cast<std::size_t>(l) * d * d], d, d, att));
      const std::vector<double> xb2 = rms_norm(x, &w_.rms_ffn[static_cast<std::size_t>(l * d)]);
      const std::size_t hidden = static_cast<std::size_t>(c.hidden_dim);
      std::vector<double> h1 = matvec(&w_.w1[l * hidden * d], c.hidden_dim, d, xb2);
      const std::vector<double> h3 = matvec(&w_.w3[l * hidden * d], c.hidden_dim, d, xb2);
      for (std::size_t i = 0; i < hidden; ++i) h1[i] = h1[i] / (1.0 + std::exp(-h1[i])) * h3[i];
      add(x, matvec(&w_.w2[l * hidden * d], d, c.hidden_dim, h1));
    }
    return matvec(w_.classifier_data(), c.vocab_size, d, rms_norm(x, w_.rms_final.data()));
  }

  /// Logits after a fresh dense pass over `context` (positions 0..n-1).
  static std::vector<double> fresh(const toy::ModelWeights& w, const std::vector<int>& context) {
    ReferenceModel model(w);
    toy::PolicySpec dense{toy::Policy::kDense, 0, static_cast<int>(context.size())};
    std::vector<double> logits;
    for (int token : context) logits = model.step(token, dense);
    return logits;
  }

 private:
  static std::vector<double> matvec(const float* m, int rows, int cols, const std::vector<double>& x) {
    std::vector<double> y(static_cast<std::size_t>(rows), 0.0);
    for (int r = 0; r < rows; ++r) {
      double sum = 0;
      for (int k = 0; k < cols; ++k) sum += static_cast<double>(m[static_cast<std::ptrdiff_t>(r) * cols + k]) * x[static_cast<std::size_t>(k)];
      y[static_cast<std::size_t>(r)] = sum;
    }
    return y;
  }
  static std::vector<double> rms_norm(const std::vector<double>& x, const float* weight) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + 1e-5);
    std::vector<double> y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = weight[i] * x[i] * inv;
    return y;
  }
  static void add(std::vector<double>& x, const std::vector<double>& y) {
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += y[i];
  }
  /// Adjacent-pair RoPE, theta 10000, angle position * theta^(-2i/head_dim).
  static std::vector<double> rotate(const double* v, int hd, double position) {
    std::vector<double> out(static_cast<std::size_t>(hd));
    for (int i = 0; i < hd / 2; ++i) {
      const double angle = position * std::pow(10000.0, -2.0 * i / hd);
      const double a = v[2 * i], b = v[2 * i + 1];
      out[static_cast<std::size_t>(2 * i)] = a * std::cos(angle) - b * std::sin(angle);
      out[static_cast<std::size_t>(2 * i + 1)] = a * std::sin(angle) + b * std::cos(angle);
    }
    return out;
  }

  const toy::ModelWeights& w_;
  int tokens_ = 0;
  std::vector<std::vector<std::vector<double>>> keys_;    // [layer][token][kv_dim], not rotated
  std::vector<std::vector<std::vector<double>>> values_;  // [layer][token][kv_dim]
};

/// A small model shape for the tests.
inline toy::ModelConfig small_config(int num_heads, int num_kv_heads, int head_dim = 8, bool shared = true) {
  toy::ModelConfig c;
  c.dim = num_heads * head_dim;
  c.hidden_dim = 3 * c.dim / 2 + 2;
  c.num_layers = 2;
  c.num_heads = num_heads;
  c.num_kv_heads = num_kv_heads;
  c.vocab_size = 37;
  c.seq_len = 16;
  c.shared_classifier = shared;
  return c;
}

/// Deterministic token ids in [0, vocab).
inline std::vector<std::int32_t> random_tokens(int count, int vocab, std::uint64_t seed) {
  toy::Rng rng(seed);
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(count));
  for (auto& t : tokens) t = static_cast<std::int32_t>(rng.next() % static_cast<std::uint64_t>(vocab));
  return tokens;
}

/// |actual - expected| <= atol + rtol * |expected| for each logit, with a
/// message naming the step, the index, both values and the case.
///
/// Tolerance: the model runs in float (unit roundoff 6e-8) through a few
/// dot products of length <= 100 per layer; logits of order 1 end up within
/// about 1e-5 of the double reference. 1e-4 leaves a 10x margin and still
/// catches any position or masking error, which moves logits by O(0.1).
inline ::testing::AssertionResult logits_close(const float* actual, const std::vector<double>& expected, int step,
                                               const std::string& what, double atol = 1e-4, double rtol = 1e-4) {
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const double diff = std::abs(static_cast<double>(actual[i]) - expected[i]);
    if (!(diff <= atol + rtol * std::abs(expected[i]))) {
      return ::testing::AssertionFailure() << what << ": step " << step << " logit " << i << " = " << actual[i]
                                           << ", reference " << expected[i] << " (|diff| " << diff << " > " << atol
                                           << " + " << rtol << " * |ref|)";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace toy_test
