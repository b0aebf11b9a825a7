// toy: a Llama-style decoder (llama2.c's run.c) whose attention goes
// through sinkkv.
//
// Per token and layer: RMSNorm -> q, k, v projections -> the KV state
// appends k, v and attends with q (RoPE, positions and grouped-query
// attention are the state's business) -> output projection -> residual ->
// RMSNorm -> SwiGLU feed-forward -> residual. Final RMSNorm, classifier.
//
// How the past is kept is a Policy (a KVState):
//   dense          every token, stream positions      (a sinkkv cache that never evicts)
//   window         the last W tokens                  (sinkkv, 0 sinks)
//   sink           S sinks + last W tokens, cache-relative positions (sinkkv)
//   recompute      fresh forward pass over the last W tokens for every token
//   window-stream  like window, keys keep their stream positions (our own cache)
//   sink-stream    like sink, keys keep their stream positions  (our own cache)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <sinkkv/sinkkv.hpp>

#include "checkpoint.hpp"
#include "error.hpp"

namespace toy {

inline constexpr float kRmsNormEps = 1e-5f;
inline constexpr double kRopeTheta = 10000.0;

/// Sees every attention problem a KV state hands its kernel (for the
/// attention-mass report). Must not allocate.
class AttentionProbe {
 public:
  virtual ~AttentionProbe() = default;
  virtual void record(int layer, const sinkkv::AttentionArgs<float>& args) = 0;
};

/// A kernel in sinkkv's contract (attention.hpp): the library's CpuKernel,
/// with an optional probe that looks at the problem first.
struct ProbedCpuKernel {
  AttentionProbe* probe = nullptr;
  int layer = 0;
  void operator()(const sinkkv::AttentionArgs<float>& args, const sinkkv::AttentionOutput<float>& out) const {
    if (probe != nullptr) probe->record(layer, args);
    sinkkv::CpuKernel{}(args, out);
  }
};

enum class Policy { kDense, kWindow, kSink, kRecompute, kWindowStream, kSinkStream };

inline const char* policy_name(Policy policy) {
  switch (policy) {
    case Policy::kDense: return "dense";
    case Policy::kWindow: return "window";
    case Policy::kSink: return "sink";
    case Policy::kRecompute: return "recompute";
    case Policy::kWindowStream: return "window-stream";
    case Policy::kSinkStream: return "sink-stream";
  }
  return "?";
}

inline const std::vector<Policy>& all_policies() {
  static const std::vector<Policy> policies = {Policy::kDense,     Policy::kWindow,       Policy::kSink,
                                               Policy::kRecompute, Policy::kWindowStream, Policy::kSinkStream};
  return policies;
}

inline Policy parse_policy(const std::string& name) {
  for (Policy p : all_policies()) {
    if (name == policy_name(p)) return p;
  }
  TOY_FAIL("policy '" << name << "' is not one of dense, window, sink, recompute, window-stream, sink-stream");
}

/// Which tokens a policy keeps: num_sinks first tokens plus the last `window`
/// (dense: window = the longest stream it must hold; window, window-stream
/// and recompute: num_sinks = 0).
struct PolicySpec {
  Policy policy = Policy::kSink;
  int num_sinks = 4;
  int window = 252;

  int capacity() const { return num_sinks + window; }
  void validate() const {
    TOY_CHECK(window >= 1, policy_name(policy) << ": window " << window << " must be >= 1");
    TOY_CHECK(num_sinks >= 0, policy_name(policy) << ": sinks " << num_sinks << " must be >= 0");
    const bool sinks_allowed = policy == Policy::kSink || policy == Policy::kSinkStream;
    TOY_CHECK(sinks_allowed || num_sinks == 0,
              policy_name(policy) << " keeps no sinks, but sinks = " << num_sinks << " was asked for");
  }
};

/// One sequence's memory of past tokens, as the model sees it.
class KVState {
 public:
  virtual ~KVState() = default;
  /// Stores the newest token's `keys` and `values` ([num_kv_heads, head_dim],
  /// not rotated) on `layer`, then writes the attention of `query`
  /// ([num_heads, head_dim], not rotated) over every kept token, itself
  /// included, to `out` ([num_heads, head_dim]). Each layer calls it exactly
  /// once per token. No allocation.
  virtual void attend(int layer, const float* query, const float* keys, const float* values, float* out) = 0;
  /// Forgets every token, keeps the memory.
  virtual void reset() = 0;
  virtual int size() const = 0;
  virtual int capacity() const = 0;
  virtual std::size_t bytes() const = 0;
  /// Shows every attention problem of later tokens to `probe` (nullptr: none).
  void set_probe(AttentionProbe* probe) { probe_ = probe; }
  AttentionProbe* probe() const { return probe_; }

 protected:
  AttentionProbe* probe_ = nullptr;
};

/// The library: a sinkkv::SinkKVCache, positions re-assigned inside the cache.
class SinkCacheState final : public KVState {
 public:
  SinkCacheState(const ModelConfig& model, int num_sinks, int window) : cache_(cache_config(model, num_sinks, window)) {}

  void attend(int layer, const float* query, const float* keys, const float* values, float* out) override {
    const sinkkv::CacheConfig& c = cache_.config();
    cache_.append(layer, sinkkv::heads_view(keys, c.num_kv_heads, c.head_dim),
                  sinkkv::heads_view(values, c.num_kv_heads, c.head_dim));
    cache_.attend(layer, sinkkv::heads_view(query, c.num_query_heads, c.head_dim),
                  sinkkv::output_view(out, c.num_query_heads, c.head_dim), ProbedCpuKernel{probe_, layer});
  }
  void reset() override { cache_.reset(); }
  int size() const override { return cache_.size(); }
  int capacity() const override { return cache_.capacity(); }
  std::size_t bytes() const override { return cache_.storage_bytes(); }
  const sinkkv::SinkKVCache<float>& cache() const { return cache_; }

  static sinkkv::CacheConfig cache_config(const ModelConfig& model, int num_sinks, int window) {
    sinkkv::CacheConfig c;
    c.num_layers = model.num_layers;
    c.num_query_heads = model.num_heads;
    c.num_kv_heads = model.num_kv_heads;
    c.head_dim = model.head_dim();
    c.num_sinks = num_sinks;
    c.window = window;
    c.encoding = sinkkv::PositionEncoding::rotary(sinkkv::RopeConfig{kRopeTheta, 0, sinkkv::RopeLayout::kAdjacentPairs});
    return c;
  }

 private:
  sinkkv::SinkKVCache<float> cache_;
};

/// The baseline the paper shows breaking: sinks plus a rolling window whose
/// keys keep their *stream* positions, so the query (at its stream index)
/// sees the sinks ever further away. It is the library's cache with one
/// change: SinkKVCache stores keys rotated by stream index and hands the
/// window segments the query rotated by its stream index, so giving the sink
/// segment that same query (instead of the one at its cache position) is all
/// it takes. No allocation per token.
class StreamPositionState final : public KVState {
 public:
  StreamPositionState(const ModelConfig& model, int num_sinks, int window)
      : cache_(SinkCacheState::cache_config(model, num_sinks, window)),
        log_sum_exp_(static_cast<std::size_t>(model.num_heads)) {}

  void attend(int layer, const float* query, const float* keys, const float* values, float* out) override {
    const sinkkv::CacheConfig& c = cache_.config();
    cache_.append(layer, sinkkv::heads_view(keys, c.num_kv_heads, c.head_dim),
                  sinkkv::heads_view(values, c.num_kv_heads, c.head_dim));
    sinkkv::AttentionArgs<float> args = cache_.prepare(layer, sinkkv::heads_view(query, c.num_query_heads, c.head_dim));
    // The last segment is a window run (stream-frame query) whenever the
    // window holds a token; before that every token is a sink at its stream
    // position anyway.
    const float* stream_frame_query = args.segments[args.num_segments - 1].query;
    for (int s = 0; s < args.num_segments; ++s) {
      segments_[s] = args.segments[s];
      segments_[s].query = stream_frame_query;
    }
    args.segments = segments_;
    ProbedCpuKernel{probe_, layer}(args, sinkkv::AttentionOutput<float>{out, c.head_dim, log_sum_exp_.data()});
  }
  void reset() override { cache_.reset(); }
  int size() const override { return cache_.size(); }
  int capacity() const override { return cache_.capacity(); }
  std::size_t bytes() const override { return cache_.storage_bytes(); }

 private:
  sinkkv::SinkKVCache<float> cache_;
  sinkkv::KVSegment<float> segments_[3] = {};  // the cache's segments, all with the stream-frame query
  std::vector<float> log_sum_exp_;              // [num_heads]
};

/// The KV state of a caching policy (not recompute, which is a Decoder mode).
inline std::unique_ptr<KVState> make_state(const ModelConfig& model, const PolicySpec& spec) {
  spec.validate();
  switch (spec.policy) {
    case Policy::kDense:
    case Policy::kWindow:
    case Policy::kSink:
    case Policy::kRecompute:
      return std::make_unique<SinkCacheState>(model, spec.num_sinks, spec.window);
    case Policy::kWindowStream:
    case Policy::kSinkStream:
      return std::make_unique<StreamPositionState>(model, spec.num_sinks, spec.window);
  }
  TOY_FAIL("unknown policy");
}

/// The forward pass of one token. Holds a reference to the weights and
/// preallocated activations; forward() never allocates.
class Transformer {
 public:
  using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using MatrixMap = Eigen::Map<const RowMatrix>;
  using VectorMap = Eigen::Map<const Eigen::VectorXf>;

  explicit Transformer(const ModelWeights& weights) : w_(weights) {
    const ModelConfig& c = w_.config;
    c.validate();
    x_.setZero(c.dim);
    xb_.setZero(c.dim);
    q_.setZero(c.dim);
    k_.setZero(c.kv_dim());
    v_.setZero(c.kv_dim());
    att_.setZero(c.dim);
    hb_.setZero(c.hidden_dim);
    hb2_.setZero(c.hidden_dim);
    logits_.setZero(c.vocab_size);
  }
  Transformer(const Transformer&) = delete;
  Transformer& operator=(const Transformer&) = delete;

  const ModelConfig& config() const { return w_.config; }
  const ModelWeights& weights() const { return w_; }

  /// Runs `token` through every layer, attending through `state` (which
  /// gains the token). Returns the logits for the next token ([vocab_size],
  /// valid until the next call), or nullptr when `compute_logits` is false.
  /// No allocation. @pre 0 <= token < vocab_size
  const float* forward(int token, KVState& state, bool compute_logits = true) {
    const ModelConfig& c = w_.config;
    TOY_CHECK(token >= 0 && token < c.vocab_size, "token " << token << " outside [0, " << c.vocab_size << ")");
    const std::ptrdiff_t d = c.dim, h = c.hidden_dim, kv = c.kv_dim();
    x_ = VectorMap(w_.token_embedding.data() + token * d, d);
    for (int l = 0; l < c.num_layers; ++l) {
      rms_norm(x_, w_.rms_att.data() + l * d, xb_);
      q_.noalias() = MatrixMap(w_.wq.data() + l * d * d, d, d) * xb_;
      k_.noalias() = MatrixMap(w_.wk.data() + l * kv * d, kv, d) * xb_;
      v_.noalias() = MatrixMap(w_.wv.data() + l * kv * d, kv, d) * xb_;
      state.attend(l, q_.data(), k_.data(), v_.data(), att_.data());
      x_.noalias() += MatrixMap(w_.wo.data() + l * d * d, d, d) * att_;

      rms_norm(x_, w_.rms_ffn.data() + l * d, xb_);
      hb_.noalias() = MatrixMap(w_.w1.data() + l * h * d, h, d) * xb_;
      hb2_.noalias() = MatrixMap(w_.w3.data() + l * h * d, h, d) * xb_;
      hb_.array() = hb_.array() / (1.0f + (-hb_.array()).exp()) * hb2_.array();  // SwiGLU: silu(w1 x) * w3 x
      x_.noalias() += MatrixMap(w_.w2.data() + l * d * h, d, h) * hb_;
    }
    if (!compute_logits) return nullptr;
    rms_norm(x_, w_.rms_final.data(), xb_);
    logits_.noalias() = MatrixMap(w_.classifier_data(), c.vocab_size, d) * xb_;
    return logits_.data();
  }

 private:
  /// out = weight * x / sqrt(mean(x^2) + eps), as run.c (float sums).
  static void rms_norm(const Eigen::VectorXf& x, const float* weight, Eigen::VectorXf& out) {
    const float inv = 1.0f / std::sqrt(x.squaredNorm() / static_cast<float>(x.size()) + kRmsNormEps);
    out.array() = VectorMap(weight, x.size()).array() * x.array() * inv;
  }

  const ModelWeights& w_;
  Eigen::VectorXf x_;       // [dim] residual stream
  Eigen::VectorXf xb_;      // [dim] normalised input of a block
  Eigen::VectorXf q_;       // [num_heads, head_dim]
  Eigen::VectorXf k_;       // [num_kv_heads, head_dim]
  Eigen::VectorXf v_;       // [num_kv_heads, head_dim]
  Eigen::VectorXf att_;     // [num_heads, head_dim] attention output
  Eigen::VectorXf hb_;      // [hidden_dim]
  Eigen::VectorXf hb2_;     // [hidden_dim]
  Eigen::VectorXf logits_;  // [vocab_size]
};

/// Next-token prediction under a policy: feed tokens one at a time, get the
/// logits after each. Caching policies forward each token once; recompute
/// keeps the last `window` token ids and runs a fresh pass over them (cache
/// positions 0..window-1) for every token, O(window^2) per token. step()
/// never allocates.
class Decoder {
 public:
  Decoder(const ModelWeights& weights, const PolicySpec& spec)
      : spec_(spec), model_(weights), state_(make_state(weights.config, spec)) {
    if (spec.policy == Policy::kRecompute) {
      history_.assign(static_cast<std::size_t>(spec.window), 0);
      context_.assign(static_cast<std::size_t>(spec.window), 0);
    }
  }

  /// Feeds `token`; returns the logits for the token after it ([vocab_size]).
  const float* step(int token) {
    ++tokens_seen_;
    if (spec_.policy != Policy::kRecompute) return model_.forward(token, *state_);
    TOY_CHECK(token >= 0 && token < model_.config().vocab_size,
              "token " << token << " outside [0, " << model_.config().vocab_size << ")");
    const std::size_t window = history_.size();
    history_[static_cast<std::size_t>((tokens_seen_ - 1) % window)] = token;
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(tokens_seen_, window));
    for (std::size_t i = 0; i < n; ++i) {  // oldest first
      context_[i] = history_[static_cast<std::size_t>((tokens_seen_ - n + i) % window)];
    }
    return recompute(context_.data(), n);
  }

  /// The recompute policy's pass: forgets the cache, runs `context` (n <=
  /// window tokens, oldest first) at positions 0..n-1 and returns the logits
  /// after its last token. Only the last token's attention is shown to a
  /// probe, and only it pays for the classifier. No allocation.
  /// @pre policy is recompute
  template <class Int>
  const float* recompute(const Int* context, std::size_t n) {
    TOY_CHECK(spec_.policy == Policy::kRecompute, "recompute() on a " << policy_name(spec_.policy) << " decoder");
    TOY_CHECK(n >= 1 && n <= static_cast<std::size_t>(spec_.window),
              "recompute over " << n << " tokens, window " << spec_.window);
    state_->reset();
    AttentionProbe* const probe = state_->probe();
    state_->set_probe(nullptr);
    for (std::size_t i = 0; i + 1 < n; ++i) model_.forward(static_cast<int>(context[i]), *state_, false);
    state_->set_probe(probe);
    return model_.forward(static_cast<int>(context[n - 1]), *state_, true);
  }

  void reset() {
    state_->reset();
    tokens_seen_ = 0;
  }
  const PolicySpec& spec() const { return spec_; }
  std::uint64_t tokens_seen() const { return tokens_seen_; }
  int cache_size() const { return state_->size(); }
  int cache_capacity() const { return state_->capacity(); }
  std::size_t cache_bytes() const { return state_->bytes(); }
  KVState& state() { return *state_; }
  const ModelConfig& config() const { return model_.config(); }

 private:
  PolicySpec spec_;
  Transformer model_;
  std::unique_ptr<KVState> state_;
  std::vector<int> history_;  // [window] ring of token ids (recompute)
  std::vector<int> context_;  // [window] the same, oldest first
  std::uint64_t tokens_seen_ = 0;
};

}  // namespace toy
