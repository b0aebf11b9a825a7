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
//   mixed          each layer / KV head its own sinks + window (sinkkv, head_policy.hpp)
//
// A prompt, or a stream being scored, can go through in chunks
// (Transformer::forward_chunk): the projections become matrix-matrix
// products over the chunk and each layer appends and attends the whole chunk
// in one call; query i of a chunk sees what it would have seen token by
// token (sinkkv's chunk semantics), so only float rounding differs.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>
#include <sinkkv/sinkkv.hpp>

#include "checkpoint.hpp"
#include "error.hpp"
#include "head_policy.hpp"

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

enum class Policy { kDense, kWindow, kSink, kRecompute, kWindowStream, kSinkStream, kMixed };

inline const char* policy_name(Policy policy) {
  switch (policy) {
    case Policy::kDense: return "dense";
    case Policy::kWindow: return "window";
    case Policy::kSink: return "sink";
    case Policy::kRecompute: return "recompute";
    case Policy::kWindowStream: return "window-stream";
    case Policy::kSinkStream: return "sink-stream";
    case Policy::kMixed: return "mixed";
  }
  return "?";
}

inline const std::vector<Policy>& all_policies() {
  static const std::vector<Policy> policies = {Policy::kDense,     Policy::kWindow,       Policy::kSink,
                                               Policy::kRecompute, Policy::kWindowStream, Policy::kSinkStream};
  return policies;
}

/// Every policy name; "mixed" needs its per-head configuration
/// (head_policy.hpp), so all_policies() leaves it out.
inline Policy parse_policy(const std::string& name) {
  for (Policy p : all_policies()) {
    if (name == policy_name(p)) return p;
  }
  if (name == policy_name(Policy::kMixed)) return Policy::kMixed;
  TOY_FAIL("policy '" << name << "' is not one of dense, window, sink, recompute, window-stream, sink-stream, mixed");
}

/// Which tokens a policy keeps: num_sinks first tokens plus the last `window`
/// (dense: window = the longest stream it must hold; window, window-stream
/// and recompute: num_sinks = 0). Mixed: each (layer, KV head) its own,
/// from head_policies; num_sinks and window are unused.
struct PolicySpec {
  Policy policy = Policy::kSink;
  int num_sinks = 4;
  int window = 252;
  HeadPolicies head_policies = {};  ///< mixed only: [num_layers * num_kv_heads], layer-major

  /// Tokens kept (mixed: by the head that keeps the most).
  int capacity() const {
    if (policy != Policy::kMixed) return num_sinks + window;
    int largest = 0;
    for (const sinkkv::RetentionPolicy& p : head_policies) largest = std::max(largest, p.capacity());
    return largest;
  }
  /// Tokens every head keeps (mixed: the head that keeps the fewest).
  int smallest_capacity() const {
    if (policy != Policy::kMixed) return capacity();
    int smallest = capacity();
    for (const sinkkv::RetentionPolicy& p : head_policies) smallest = std::min(smallest, p.capacity());
    return smallest;
  }
  /// The policy of one KV head (every head's for a uniform policy).
  sinkkv::RetentionPolicy head(int layer, int kv_head, int num_kv_heads) const {
    if (policy != Policy::kMixed) return sinkkv::RetentionPolicy{num_sinks, window};
    return head_policies[static_cast<std::size_t>(layer) * static_cast<std::size_t>(num_kv_heads) +
                         static_cast<std::size_t>(kv_head)];
  }
  void validate() const {
    if (policy == Policy::kMixed) {
      TOY_CHECK(!head_policies.empty(), "mixed: no per-head policies given");
      for (const sinkkv::RetentionPolicy& p : head_policies) {
        TOY_CHECK(p.window >= 1 && p.num_sinks >= 0, "mixed: policy " << policy_text(p) << " needs sinks >= 0, "
                                                                      << "window >= 1");
      }
      return;
    }
    TOY_CHECK(head_policies.empty(), policy_name(policy) << " is uniform; per-head policies need policy mixed");
    TOY_CHECK(window >= 1, policy_name(policy) << ": window " << window << " must be >= 1");
    TOY_CHECK(num_sinks >= 0, policy_name(policy) << ": sinks " << num_sinks << " must be >= 0");
    const bool sinks_allowed = policy == Policy::kSink || policy == Policy::kSinkStream;
    TOY_CHECK(sinks_allowed || num_sinks == 0,
              policy_name(policy) << " keeps no sinks, but sinks = " << num_sinks << " was asked for");
  }
  /// validate(), and the per-head policies fit `model`.
  void validate(const ModelConfig& model) const {
    validate();
    const std::size_t heads = static_cast<std::size_t>(model.num_layers) * static_cast<std::size_t>(model.num_kv_heads);
    TOY_CHECK(policy != Policy::kMixed || head_policies.size() == heads,
              "mixed: " << head_policies.size() << " per-head policies for a model with " << model.num_layers
                        << " layers x " << model.num_kv_heads << " KV heads = " << heads);
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
  /// The same for a chunk of `n` consecutive tokens: `queries` and `out`
  /// [n, num_heads, head_dim], `keys` and `values` [n, num_kv_heads,
  /// head_dim]; query i sees what it would have seen token by token. Each
  /// layer calls it once per chunk, in the same order as attend().
  virtual void attend_chunk(int layer, int n, const float* queries, const float* keys, const float* values,
                            float* out) = 0;
  /// Forgets every token, keeps the memory.
  virtual void reset() = 0;
  /// Tokens held and kept at most (mixed policies: by the head that keeps the most).
  virtual int size() const = 0;
  virtual int capacity() const = 0;
  /// Bytes of K/V storage, room for chunks included.
  virtual std::size_t bytes() const = 0;
  /// Shows every attention problem of later tokens to `probe` (nullptr: none).
  void set_probe(AttentionProbe* probe) { probe_ = probe; }
  AttentionProbe* probe() const { return probe_; }

 protected:
  AttentionProbe* probe_ = nullptr;
};

/// The library: a sinkkv::SinkKVCache, positions re-assigned inside the cache.
/// Uniform (dense, window, sink, recompute's scratch cache) or one policy per
/// KV head (mixed). `max_chunk` tokens may go through at once (the cache
/// keeps max_chunk - 1 extra rows per head for them).
class SinkCacheState final : public KVState {
 public:
  SinkCacheState(const ModelConfig& model, int num_sinks, int window, int max_chunk = 1)
      : cache_(cache_config(model, num_sinks, window, max_chunk)) {}
  SinkCacheState(const ModelConfig& model, const PolicySpec& spec, int max_chunk)
      : cache_(cache_config(model, spec, max_chunk)), uniform_(cache_.config().is_uniform()) {}

  void attend(int layer, const float* query, const float* keys, const float* values, float* out) override {
    const sinkkv::CacheConfig& c = cache_.config();
    cache_.append(layer, sinkkv::heads_view(keys, c.num_kv_heads, c.head_dim),
                  sinkkv::heads_view(values, c.num_kv_heads, c.head_dim));
    cache_.attend(layer, sinkkv::heads_view(query, c.num_query_heads, c.head_dim),
                  sinkkv::output_view(out, c.num_query_heads, c.head_dim), ProbedCpuKernel{probe_, layer});
  }
  void attend_chunk(int layer, int n, const float* queries, const float* keys, const float* values,
                    float* out) override {
    const sinkkv::CacheConfig& c = cache_.config();
    cache_.append(layer, sinkkv::tokens_view(keys, n, c.num_kv_heads, c.head_dim),
                  sinkkv::tokens_view(values, n, c.num_kv_heads, c.head_dim));
    const auto q = sinkkv::tokens_view(queries, n, c.num_query_heads, c.head_dim);
    const auto o = sinkkv::tokens_output_view(out, n, c.num_query_heads, c.head_dim);
    if (probe_ != nullptr) {
      cache_.attend(layer, q, o, ProbedCpuKernel{probe_, layer});  // one query at a time, each shown to the probe
    } else {
      cache_.attend(layer, q, o, sinkkv::CpuKernel{});
    }
  }
  void reset() override { cache_.reset(); }
  int size() const override {
    if (uniform_) return cache_.size();
    int largest = 0;
    const sinkkv::CacheConfig& c = cache_.config();
    for (int layer = 0; layer < c.num_layers; ++layer) {
      for (int head = 0; head < c.num_kv_heads; ++head) {
        largest = std::max(largest, cache_.positions(layer, head).size());
      }
    }
    return largest;
  }
  int capacity() const override { return cache_.config().capacity(); }
  std::size_t bytes() const override { return cache_.storage_bytes(); }
  const sinkkv::SinkKVCache<float>& cache() const { return cache_; }

  static sinkkv::CacheConfig cache_config(const ModelConfig& model, int num_sinks, int window, int max_chunk = 1) {
    sinkkv::CacheConfig c;
    c.num_layers = model.num_layers;
    c.num_query_heads = model.num_heads;
    c.num_kv_heads = model.num_kv_heads;
    c.head_dim = model.head_dim();
    c.num_sinks = num_sinks;
    c.window = window;
    c.max_chunk = max_chunk;
    c.encoding = sinkkv::PositionEncoding::rotary(sinkkv::RopeConfig{kRopeTheta, 0, sinkkv::RopeLayout::kAdjacentPairs});
    return c;
  }
  /// A uniform spec's cache, or a mixed one's with each KV head's policy.
  static sinkkv::CacheConfig cache_config(const ModelConfig& model, const PolicySpec& spec, int max_chunk) {
    spec.validate(model);
    if (spec.policy != Policy::kMixed) return cache_config(model, spec.num_sinks, spec.window, max_chunk);
    const sinkkv::RetentionPolicy first = spec.head_policies.front();
    sinkkv::CacheConfig c = cache_config(model, first.num_sinks, first.window, max_chunk);
    for (int layer = 0; layer < model.num_layers; ++layer) {
      for (int head = 0; head < model.num_kv_heads; ++head) {
        c.set_head_policy(layer, head, spec.head(layer, head, model.num_kv_heads));
      }
    }
    return c;
  }

 private:
  sinkkv::SinkKVCache<float> cache_;
  bool uniform_ = true;  // every head keeps the same tokens (size() can ask the cache)
};

/// The baseline the paper shows breaking: sinks plus a rolling window whose
/// keys keep their *stream* positions, so the query (at its stream index)
/// sees the sinks ever further away. It is the library's cache with one
/// change: SinkKVCache stores keys rotated by stream index and hands the
/// window segments the query rotated by its stream index, so giving the sink
/// segment that same query (instead of the one at its cache position) is all
/// it takes. A chunk goes through the cache in one append and one attend;
/// the kernel below then sees one query at a time. No allocation per token.
class StreamPositionState final : public KVState {
 public:
  StreamPositionState(const ModelConfig& model, int num_sinks, int window, int max_chunk = 1)
      : cache_(SinkCacheState::cache_config(model, num_sinks, window, max_chunk)) {}

  void attend(int layer, const float* query, const float* keys, const float* values, float* out) override {
    attend_chunk(layer, 1, query, keys, values, out);
  }
  void attend_chunk(int layer, int n, const float* queries, const float* keys, const float* values,
                    float* out) override {
    const sinkkv::CacheConfig& c = cache_.config();
    cache_.append(layer, sinkkv::tokens_view(keys, n, c.num_kv_heads, c.head_dim),
                  sinkkv::tokens_view(values, n, c.num_kv_heads, c.head_dim));
    cache_.attend(layer, sinkkv::tokens_view(queries, n, c.num_query_heads, c.head_dim),
                  sinkkv::tokens_output_view(out, n, c.num_query_heads, c.head_dim),
                  StreamFrameKernel{ProbedCpuKernel{probe_, layer}, segments_});
  }
  void reset() override { cache_.reset(); }
  int size() const override { return cache_.size(); }
  int capacity() const override { return cache_.capacity(); }
  std::size_t bytes() const override { return cache_.storage_bytes(); }

 private:
  static constexpr int kMaxSegments = 8;

  /// A single-query kernel (the cache calls it once per query of a chunk)
  /// that scores every segment with the query's stream-frame rows. The last
  /// segment is a window run (stream frame) whenever the window holds a
  /// token; before that every token is a sink at its stream position anyway.
  struct StreamFrameKernel {
    ProbedCpuKernel kernel;
    sinkkv::KVSegment<float>* segments;  // [kMaxSegments] scratch
    void operator()(const sinkkv::AttentionArgs<float>& args, const sinkkv::AttentionOutput<float>& out) const {
      TOY_CHECK(args.num_segments <= kMaxSegments, "stream positions: " << args.num_segments << " segments");
      const float* stream_frame_query = args.segments[args.num_segments - 1].query;
      for (int s = 0; s < args.num_segments; ++s) {
        segments[s] = args.segments[s];
        segments[s].query = stream_frame_query;
      }
      sinkkv::AttentionArgs<float> stream_args = args;
      stream_args.segments = segments;
      kernel(stream_args, out);
    }
  };

  sinkkv::SinkKVCache<float> cache_;
  sinkkv::KVSegment<float> segments_[kMaxSegments] = {};  // the cache's segments, all with the stream-frame query
};

/// The KV state of a caching policy (not recompute, which is a Decoder mode,
/// but whose passes run through a window cache), taking chunks of up to
/// `max_chunk` tokens.
inline std::unique_ptr<KVState> make_state(const ModelConfig& model, const PolicySpec& spec, int max_chunk = 1) {
  spec.validate(model);
  TOY_CHECK(max_chunk >= 1 && max_chunk <= sinkkv::CacheConfig::kMaxChunk,
            "chunk " << max_chunk << " outside [1, " << sinkkv::CacheConfig::kMaxChunk << "]");
  switch (spec.policy) {
    case Policy::kDense:
    case Policy::kWindow:
    case Policy::kSink:
    case Policy::kRecompute:
    case Policy::kMixed: return std::make_unique<SinkCacheState>(model, spec, max_chunk);
    case Policy::kWindowStream:
    case Policy::kSinkStream:
      return std::make_unique<StreamPositionState>(model, spec.num_sinks, spec.window, max_chunk);
  }
  TOY_FAIL("unknown policy");
}

/// Where forward passes spent their time, in seconds (Transformer::set_profile).
struct ForwardProfile {
  double embedding_and_norms = 0;  ///< embedding rows, RMSNorm, SwiGLU, residual adds
  double projections = 0;          ///< q, k, v, o, w1, w2, w3 (matrix-vector or matrix-matrix products)
  double attention = 0;            ///< the KV state: append, RoPE, attend
  double classifier = 0;           ///< final norm and logits
  double total() const { return embedding_and_norms + projections + attention + classifier; }
};

/// RMSNorm of every row of `x` ([n, dim]) into `out`, as run.c per row;
/// `inverse_rms` is scratch of at least n entries (no allocation).
template <class In, class Out>
void rms_norm_rows(const In& x, const float* weight, Eigen::VectorXf& inverse_rms, Out& out) {
  auto inv = inverse_rms.head(x.rows());
  inv = (x.rowwise().squaredNorm().array() / static_cast<float>(x.cols()) + kRmsNormEps).rsqrt().matrix();
  out.array() = (x.array().colwise() * inv.array()).rowwise() *
                Eigen::Map<const Eigen::Array<float, 1, Eigen::Dynamic>>(weight, x.cols());
}

/// Which logits forward_chunk computes.
enum class Logits {
  kNone,  ///< none (a prompt's tokens before the last)
  kLast,  ///< the last token's: [vocab_size]
  kAll,   ///< every token's: [n, vocab_size], row-major (scoring a stream)
};

/// The forward pass, one token at a time (forward, matrix-vector products)
/// or a chunk of up to max_chunk tokens (forward_chunk, matrix-matrix
/// products). Holds a reference to the weights and preallocated activations.
class Transformer {
 public:
  using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using MatrixMap = Eigen::Map<const RowMatrix>;
  using VectorMap = Eigen::Map<const Eigen::VectorXf>;
  using RowVectorMap = Eigen::Map<const Eigen::Array<float, 1, Eigen::Dynamic>>;

  /// Allocates the activations of one token and of a chunk of `max_chunk`.
  explicit Transformer(const ModelWeights& weights, int max_chunk = 1) : w_(weights), max_chunk_(max_chunk) {
    const ModelConfig& c = w_.config;
    c.validate();
    TOY_CHECK(max_chunk >= 1 && max_chunk <= sinkkv::CacheConfig::kMaxChunk,
              "chunk " << max_chunk << " outside [1, " << sinkkv::CacheConfig::kMaxChunk << "]");
    x_.setZero(c.dim);
    xb_.setZero(c.dim);
    q_.setZero(c.dim);
    k_.setZero(c.kv_dim());
    v_.setZero(c.kv_dim());
    att_.setZero(c.dim);
    hb_.setZero(c.hidden_dim);
    hb2_.setZero(c.hidden_dim);
    logits_.setZero(c.vocab_size);
    chunk_x_.setZero(max_chunk, c.dim);
    chunk_xb_.setZero(max_chunk, c.dim);
    chunk_q_.setZero(max_chunk, c.dim);
    chunk_k_.setZero(max_chunk, c.kv_dim());
    chunk_v_.setZero(max_chunk, c.kv_dim());
    chunk_att_.setZero(max_chunk, c.dim);
    chunk_hb_.setZero(max_chunk, c.hidden_dim);
    chunk_hb2_.setZero(max_chunk, c.hidden_dim);
    chunk_inv_rms_.setZero(max_chunk);
  }
  Transformer(const Transformer&) = delete;
  Transformer& operator=(const Transformer&) = delete;

  const ModelConfig& config() const { return w_.config; }
  const ModelWeights& weights() const { return w_; }
  int max_chunk() const { return max_chunk_; }
  /// Adds the time of later passes to `profile` (nullptr: stop). Costs a few
  /// clock reads per layer.
  void set_profile(ForwardProfile* profile) { profile_ = profile; }

  /// Runs `token` through every layer, attending through `state` (which
  /// gains the token). Returns the logits for the next token ([vocab_size],
  /// valid until the next call), or nullptr when `compute_logits` is false.
  /// No allocation. @pre 0 <= token < vocab_size
  const float* forward(int token, KVState& state, bool compute_logits = true) {
    const ModelConfig& c = w_.config;
    TOY_CHECK(token >= 0 && token < c.vocab_size, "token " << token << " outside [0, " << c.vocab_size << ")");
    const std::ptrdiff_t d = c.dim, h = c.hidden_dim, kv = c.kv_dim();
    Lap lap(profile_);
    x_ = VectorMap(w_.token_embedding.data() + token * d, d);
    for (int l = 0; l < c.num_layers; ++l) {
      rms_norm(x_, w_.rms_att.data() + l * d, xb_);
      lap.add(&ForwardProfile::embedding_and_norms);
      q_.noalias() = MatrixMap(w_.wq.data() + l * d * d, d, d) * xb_;
      k_.noalias() = MatrixMap(w_.wk.data() + l * kv * d, kv, d) * xb_;
      v_.noalias() = MatrixMap(w_.wv.data() + l * kv * d, kv, d) * xb_;
      lap.add(&ForwardProfile::projections);
      state.attend(l, q_.data(), k_.data(), v_.data(), att_.data());
      lap.add(&ForwardProfile::attention);
      x_.noalias() += MatrixMap(w_.wo.data() + l * d * d, d, d) * att_;
      lap.add(&ForwardProfile::projections);

      rms_norm(x_, w_.rms_ffn.data() + l * d, xb_);
      lap.add(&ForwardProfile::embedding_and_norms);
      hb_.noalias() = MatrixMap(w_.w1.data() + l * h * d, h, d) * xb_;
      hb2_.noalias() = MatrixMap(w_.w3.data() + l * h * d, h, d) * xb_;
      lap.add(&ForwardProfile::projections);
      hb_.array() = hb_.array() / (1.0f + (-hb_.array()).exp()) * hb2_.array();  // SwiGLU: silu(w1 x) * w3 x
      lap.add(&ForwardProfile::embedding_and_norms);
      x_.noalias() += MatrixMap(w_.w2.data() + l * d * h, d, h) * hb_;
      lap.add(&ForwardProfile::projections);
    }
    if (!compute_logits) return nullptr;
    rms_norm(x_, w_.rms_final.data(), xb_);
    logits_.noalias() = MatrixMap(w_.classifier_data(), c.vocab_size, d) * xb_;
    lap.add(&ForwardProfile::classifier);
    return logits_.data();
  }

  /// Runs `n` consecutive tokens (1 <= n <= max_chunk) through every layer
  /// at once: each projection is one matrix-matrix product over the chunk,
  /// RMSNorm and SwiGLU work on all rows together, and each layer hands the
  /// chunk's q, k, v to `state` in one attend_chunk call. Token i's result
  /// equals forward()'s for the same stream up to float rounding (summation
  /// order in the products and the attention). Returns the logits `which`
  /// asks for (valid until the next call), or nullptr for Logits::kNone.
  /// Allocates only inside Eigen's matrix products (their packing buffers)
  /// and, on the first Logits::kAll call, the [max_chunk, vocab_size] logits.
  /// @pre every token in [0, vocab_size)
  const float* forward_chunk(const std::int32_t* tokens, int n, KVState& state, Logits which) {
    const ModelConfig& c = w_.config;
    TOY_CHECK(n >= 1 && n <= max_chunk_, "chunk of " << n << " tokens outside [1, max_chunk " << max_chunk_ << "]");
    for (int i = 0; i < n; ++i) {
      TOY_CHECK(tokens[i] >= 0 && tokens[i] < c.vocab_size,
                "token " << tokens[i] << " (chunk row " << i << ") outside [0, " << c.vocab_size << ")");
    }
    const std::ptrdiff_t d = c.dim, h = c.hidden_dim, kv = c.kv_dim();
    Lap lap(profile_);
    auto x = chunk_x_.topRows(n);
    auto xb = chunk_xb_.topRows(n);
    auto q = chunk_q_.topRows(n);
    auto k = chunk_k_.topRows(n);
    auto v = chunk_v_.topRows(n);
    auto att = chunk_att_.topRows(n);
    auto hb = chunk_hb_.topRows(n);
    auto hb2 = chunk_hb2_.topRows(n);
    for (int i = 0; i < n; ++i) x.row(i) = RowVectorMap(w_.token_embedding.data() + tokens[i] * d, d).matrix();
    // Weights are [out, in] row-major: activations [n, in] times the transpose.
    const auto weight = [](const std::vector<float>& w, std::ptrdiff_t layer, std::ptrdiff_t out, std::ptrdiff_t in) {
      return MatrixMap(w.data() + layer * out * in, out, in).transpose();
    };
    for (int l = 0; l < c.num_layers; ++l) {
      rms_norm_rows(x, w_.rms_att.data() + l * d, xb);
      lap.add(&ForwardProfile::embedding_and_norms);
      q.noalias() = xb * weight(w_.wq, l, d, d);
      k.noalias() = xb * weight(w_.wk, l, kv, d);
      v.noalias() = xb * weight(w_.wv, l, kv, d);
      lap.add(&ForwardProfile::projections);
      state.attend_chunk(l, n, q.data(), k.data(), v.data(), att.data());
      lap.add(&ForwardProfile::attention);
      x.noalias() += att * weight(w_.wo, l, d, d);
      lap.add(&ForwardProfile::projections);

      rms_norm_rows(x, w_.rms_ffn.data() + l * d, xb);
      lap.add(&ForwardProfile::embedding_and_norms);
      hb.noalias() = xb * weight(w_.w1, l, h, d);
      hb2.noalias() = xb * weight(w_.w3, l, h, d);
      lap.add(&ForwardProfile::projections);
      hb.array() = hb.array() / (1.0f + (-hb.array()).exp()) * hb2.array();  // SwiGLU
      lap.add(&ForwardProfile::embedding_and_norms);
      x.noalias() += hb * weight(w_.w2, l, d, h);
      lap.add(&ForwardProfile::projections);
    }
    const MatrixMap classifier(w_.classifier_data(), c.vocab_size, d);
    switch (which) {
      case Logits::kNone: return nullptr;
      case Logits::kLast:
        x_ = x.row(n - 1).transpose();
        rms_norm(x_, w_.rms_final.data(), xb_);
        logits_.noalias() = classifier * xb_;
        lap.add(&ForwardProfile::classifier);
        return logits_.data();
      case Logits::kAll:
        if (chunk_logits_.rows() < max_chunk_) chunk_logits_.setZero(max_chunk_, c.vocab_size);
        rms_norm_rows(x, w_.rms_final.data(), xb);
        chunk_logits_.topRows(n).noalias() = xb * classifier.transpose();
        lap.add(&ForwardProfile::classifier);
        return chunk_logits_.data();
    }
    return nullptr;
  }

 private:
  /// Adds the time since the previous mark to a profile bucket (nothing
  /// without a profile).
  class Lap {
   public:
    explicit Lap(ForwardProfile* profile) : profile_(profile) {
      if (profile_ != nullptr) mark_ = std::chrono::steady_clock::now();
    }
    void add(double ForwardProfile::*bucket) {
      if (profile_ == nullptr) return;
      const auto now = std::chrono::steady_clock::now();
      profile_->*bucket += std::chrono::duration<double>(now - mark_).count();
      mark_ = now;
    }

   private:
    ForwardProfile* profile_;
    std::chrono::steady_clock::time_point mark_;
  };

  /// out = weight * x / sqrt(mean(x^2) + eps), as run.c (float sums).
  static void rms_norm(const Eigen::VectorXf& x, const float* weight, Eigen::VectorXf& out) {
    const float inv = 1.0f / std::sqrt(x.squaredNorm() / static_cast<float>(x.size()) + kRmsNormEps);
    out.array() = VectorMap(weight, x.size()).array() * x.array() * inv;
  }
  template <class In, class Out>
  void rms_norm_rows(const In& x, const float* weight, Out& out) {
    toy::rms_norm_rows(x, weight, chunk_inv_rms_, out);
  }

  const ModelWeights& w_;
  int max_chunk_;
  ForwardProfile* profile_ = nullptr;
  Eigen::VectorXf x_;       // [dim] residual stream
  Eigen::VectorXf xb_;      // [dim] normalised input of a block
  Eigen::VectorXf q_;       // [num_heads, head_dim]
  Eigen::VectorXf k_;       // [num_kv_heads, head_dim]
  Eigen::VectorXf v_;       // [num_kv_heads, head_dim]
  Eigen::VectorXf att_;     // [num_heads, head_dim] attention output
  Eigen::VectorXf hb_;      // [hidden_dim]
  Eigen::VectorXf hb2_;     // [hidden_dim]
  Eigen::VectorXf logits_;  // [vocab_size]
  // The same for a chunk, one row per token.
  RowMatrix chunk_x_;              // [max_chunk, dim]
  RowMatrix chunk_xb_;             // [max_chunk, dim]
  RowMatrix chunk_q_;              // [max_chunk, num_heads * head_dim]
  RowMatrix chunk_k_;              // [max_chunk, num_kv_heads * head_dim]
  RowMatrix chunk_v_;              // [max_chunk, num_kv_heads * head_dim]
  RowMatrix chunk_att_;            // [max_chunk, num_heads * head_dim]
  RowMatrix chunk_hb_;             // [max_chunk, hidden_dim]
  RowMatrix chunk_hb2_;            // [max_chunk, hidden_dim]
  RowMatrix chunk_logits_;         // [max_chunk, vocab_size], allocated by the first Logits::kAll pass
  Eigen::VectorXf chunk_inv_rms_;  // [max_chunk]
};

/// Next-token prediction under a policy: feed tokens one at a time (step),
/// a prompt (prefill) or a chunk whose every logit is wanted (step_chunk).
/// Caching policies forward each token once; recompute keeps the last
/// `window` token ids and runs a fresh pass over them (cache positions
/// 0..window-1) for every token, O(window^2) per token.
///
/// `max_chunk` > 1 lets prefill, step_chunk and recompute's passes run up to
/// that many tokens per forward_chunk (1: every pass token by token, as
/// step). step() never allocates; the chunked paths allocate only inside
/// Eigen's matrix products.
class Decoder {
 public:
  Decoder(const ModelWeights& weights, const PolicySpec& spec, int max_chunk = 1)
      : spec_(spec),
        model_(weights, spec.policy == Policy::kRecompute ? std::min(max_chunk, std::max(spec.window, 1)) : max_chunk),
        state_(make_state(weights.config, spec, model_.max_chunk())) {
    if (spec.policy == Policy::kRecompute) {
      history_.assign(static_cast<std::size_t>(spec.window), 0);
      context_.assign(static_cast<std::size_t>(spec.window), 0);
    }
  }

  /// Feeds `token`; returns the logits for the token after it ([vocab_size]).
  const float* step(int token) {
    if (spec_.policy != Policy::kRecompute) {
      ++tokens_seen_;
      return model_.forward(token, *state_);
    }
    remember(token);
    return recompute_window();
  }

  /// Feeds `n` >= 1 tokens (a prompt) in chunks of at most max_chunk and
  /// returns the logits after the last one: what n step() calls return, up
  /// to float rounding (with max_chunk 1, exactly). Recompute keeps the ids
  /// and runs one pass, for the last token.
  const float* prefill(const std::int32_t* tokens, std::size_t n) {
    TOY_CHECK(n >= 1, "prefill of no tokens");
    if (spec_.policy == Policy::kRecompute) {
      for (std::size_t i = 0; i < n; ++i) remember(tokens[i]);
      return recompute_window();
    }
    const float* logits = nullptr;
    if (model_.max_chunk() == 1) {
      for (std::size_t i = 0; i < n; ++i) logits = step(tokens[i]);
      return logits;
    }
    for (std::size_t begin = 0; begin < n;) {
      const int count =
          static_cast<int>(std::min<std::size_t>(n - begin, static_cast<std::size_t>(model_.max_chunk())));
      const bool last = begin + static_cast<std::size_t>(count) == n;
      logits = model_.forward_chunk(tokens + begin, count, *state_, last ? Logits::kLast : Logits::kNone);
      tokens_seen_ += static_cast<std::uint64_t>(count);
      begin += static_cast<std::size_t>(count);
    }
    return logits;
  }

  /// Feeds `n` (1..max_chunk) tokens as one chunk and returns the logits
  /// after each: [n, vocab_size], row-major, valid until the next call.
  /// Row i is what step() returns for token i, up to float rounding. Not
  /// for recompute (every token is its own pass).
  const float* step_chunk(const std::int32_t* tokens, int n) {
    TOY_CHECK(spec_.policy != Policy::kRecompute, "step_chunk under recompute: each token is its own pass");
    const float* logits = model_.forward_chunk(tokens, n, *state_, Logits::kAll);
    tokens_seen_ += static_cast<std::uint64_t>(n);
    return logits;
  }

  /// The recompute policy's pass: forgets the cache, runs `context` (n <=
  /// window tokens, oldest first) at positions 0..n-1 and returns the logits
  /// after its last token. With max_chunk > 1 the context goes through in
  /// chunks (one chunk when max_chunk >= window). Only the last token's
  /// attention is shown to a probe, and only it pays for the classifier.
  /// @pre policy is recompute
  template <class Int>
  const float* recompute(const Int* context, std::size_t n) {
    TOY_CHECK(spec_.policy == Policy::kRecompute, "recompute() on a " << policy_name(spec_.policy) << " decoder");
    TOY_CHECK(n >= 1 && n <= static_cast<std::size_t>(spec_.window),
              "recompute over " << n << " tokens, window " << spec_.window);
    state_->reset();
    AttentionProbe* const probe = state_->probe();
    const std::size_t chunk = static_cast<std::size_t>(model_.max_chunk());
    if (chunk == 1 || probe != nullptr) {  // the last token on its own, shown to the probe
      state_->set_probe(nullptr);
      for (std::size_t begin = 0; begin + 1 < n;) {
        const std::size_t count = std::min(n - 1 - begin, chunk);
        if (chunk == 1) {
          model_.forward(static_cast<int>(context[begin]), *state_, false);
        } else {
          forward_context(context + begin, count, Logits::kNone);
        }
        begin += count;
      }
      state_->set_probe(probe);
      return model_.forward(static_cast<int>(context[n - 1]), *state_, true);
    }
    const float* logits = nullptr;
    for (std::size_t begin = 0; begin < n;) {
      const std::size_t count = std::min(n - begin, chunk);
      logits = forward_context(context + begin, count, begin + count == n ? Logits::kLast : Logits::kNone);
      begin += count;
    }
    return logits;
  }

  void reset() {
    state_->reset();
    tokens_seen_ = 0;
  }
  const PolicySpec& spec() const { return spec_; }
  std::uint64_t tokens_seen() const { return tokens_seen_; }
  int max_chunk() const { return model_.max_chunk(); }
  int cache_size() const { return state_->size(); }
  int cache_capacity() const { return state_->capacity(); }
  std::size_t cache_bytes() const { return state_->bytes(); }
  KVState& state() { return *state_; }
  Transformer& model() { return model_; }
  const ModelConfig& config() const { return model_.config(); }

 private:
  /// Recompute: the id joins the ring of the last `window` ids.
  void remember(int token) {
    TOY_CHECK(token >= 0 && token < model_.config().vocab_size,
              "token " << token << " outside [0, " << model_.config().vocab_size << ")");
    ++tokens_seen_;
    history_[static_cast<std::size_t>((tokens_seen_ - 1) % history_.size())] = token;
  }
  /// Recompute: one pass over the last `window` ids, oldest first.
  const float* recompute_window() {
    const std::size_t window = history_.size();
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(tokens_seen_, window));
    for (std::size_t i = 0; i < n; ++i) {
      context_[i] = history_[static_cast<std::size_t>((tokens_seen_ - n + i) % window)];
    }
    return recompute(context_.data(), n);
  }
  template <class Int>
  const float* forward_context(const Int* context, std::size_t count, Logits which) {
    if constexpr (std::is_same_v<Int, std::int32_t>) {
      return model_.forward_chunk(context, static_cast<int>(count), *state_, which);
    } else {
      for (std::size_t i = 0; i < count; ++i) chunk_ids_[i] = static_cast<std::int32_t>(context[i]);
      return model_.forward_chunk(chunk_ids_.data(), static_cast<int>(count), *state_, which);
    }
  }

  PolicySpec spec_;
  Transformer model_;
  std::unique_ptr<KVState> state_;
  std::vector<std::int32_t> history_;  // [window] ring of token ids (recompute)
  std::vector<std::int32_t> context_;  // [window] the same, oldest first
  std::vector<std::int32_t> chunk_ids_ = std::vector<std::int32_t>(static_cast<std::size_t>(model_.max_chunk()));
  std::uint64_t tokens_seen_ = 0;
};

}  // namespace toy
