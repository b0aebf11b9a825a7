// toy: a small serving simulation. Requests (a start token, a random prompt,
// a number of tokens to generate, a sampling seed) wait in a queue; up to N
// of them are decoded in lock-step, one batched forward pass per step
// (toy/batch.hpp), their K/V in one sinkkv::SequencePool whose budget is
// fixed. A request is admitted when a stream slot is free and the pool can
// hold it at its longest (pages reserved, never taken away), prefills its
// prompt in chunks beside the others' decode tokens, and gives its pages
// back the moment it has its last token.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include <sinkkv/sinkkv.hpp>

#include "batch.hpp"
#include "checkpoint.hpp"
#include "error.hpp"
#include "model.hpp"
#include "sampler.hpp"

namespace toy {

/// One request: the tokens fed first and how many to generate. Request i of
/// a ServeConfig with seed s is what `toy_transformer --seed s+i
/// --start-token S [--random-prompt P] --tokens G` generates alone.
struct ServeRequest {
  int index = 0;                     ///< arrival order, from 0
  std::uint64_t seed = 0;            ///< its sampler's seed, and its random prompt's
  std::vector<std::int32_t> inputs;  ///< [1 + prompt] the start token, then the random prompt
  int tokens = 1;                    ///< tokens to generate, >= 1

  int prompt_tokens() const { return static_cast<int>(inputs.size()) - 1; }
  /// Tokens that go through the cache: the inputs, and every generated
  /// token but the last (which is only sampled).
  std::uint64_t cached_tokens() const { return inputs.size() + static_cast<std::uint64_t>(tokens) - 1; }
};

/// The simulation: requests, their lengths, the batch and the pool.
struct ServeConfig {
  PolicySpec spec;      ///< sink, window, dense (window: the longest request) or mixed
  int streams = 4;      ///< sequences in flight at most (the pool's max_sequences)
  int total = 16;       ///< requests, all queued at the start
  int min_tokens = 64;  ///< tokens each request generates: uniform in [min_tokens, max_tokens]
  int max_tokens = 256;
  int min_prompt = 0;  ///< random prompt tokens after the start token: uniform in [min_prompt, max_prompt]
  int max_prompt = 0;
  int start_token = 1;
  float temperature = 1.0f;
  float top_p = 0.9f;
  std::uint64_t seed = 1;      ///< request i samples with seed + i; the lengths come from seed too
  int prefill_chunk = 16;      ///< prompt tokens one sequence feeds per step at most
  int batch_tokens = 0;        ///< tokens per forward pass at most (0: streams + chunk - 1)
  int page_tokens = 16;        ///< tokens per pool page (a power of two)
  std::int64_t max_pages = 0;  ///< the pool's budget (0: every stream at its longest)

  void validate(int vocab_size) const {
    TOY_CHECK(spec.policy == Policy::kSink || spec.policy == Policy::kWindow || spec.policy == Policy::kDense ||
                  spec.policy == Policy::kMixed,
              "serving keeps K/V in a sinkkv::SequencePool: policy " << policy_name(spec.policy)
                                                                     << " is not one (sink, window, dense, mixed)");
    TOY_CHECK(streams >= 1 && streams <= (1 << 16), "streams " << streams << " outside [1, 65536]");
    TOY_CHECK(total >= 1, "requests " << total << " must be >= 1");
    TOY_CHECK(min_tokens >= 1 && min_tokens <= max_tokens,
              "generated tokens " << min_tokens << ":" << max_tokens << " need 1 <= MIN <= MAX");
    TOY_CHECK(min_prompt >= 0 && min_prompt <= max_prompt,
              "prompt tokens " << min_prompt << ":" << max_prompt << " need 0 <= MIN <= MAX");
    TOY_CHECK(start_token >= 0 && start_token < vocab_size,
              "start token " << start_token << " outside the vocabulary [0, " << vocab_size << ")");
    TOY_CHECK(prefill_chunk >= 1 && prefill_chunk <= sinkkv::CacheConfig::kMaxChunk,
              "prefill chunk " << prefill_chunk << " outside [1, " << sinkkv::CacheConfig::kMaxChunk << "]");
    TOY_CHECK(batch_tokens == 0 || batch_tokens >= streams,
              "batch of " << batch_tokens << " tokens cannot hold one token of each of " << streams << " streams");
    TOY_CHECK(max_pages >= 0, "pool of " << max_pages << " pages");
  }
};

/// The requests of `config`, in arrival order (deterministic in its seed).
inline std::vector<ServeRequest> make_requests(const ServeConfig& config, int vocab_size) {
  config.validate(vocab_size);
  Rng lengths(config.seed);
  const auto uniform = [&](int low, int high) {
    return low + static_cast<int>(lengths.next() % static_cast<std::uint64_t>(high - low + 1));
  };
  std::vector<ServeRequest> requests(static_cast<std::size_t>(config.total));
  for (int i = 0; i < config.total; ++i) {
    ServeRequest& r = requests[static_cast<std::size_t>(i)];
    r.index = i;
    r.seed = config.seed + static_cast<std::uint64_t>(i);
    r.tokens = uniform(config.min_tokens, config.max_tokens);
    const int prompt = uniform(config.min_prompt, config.max_prompt);
    r.inputs.push_back(config.start_token);
    Rng ids(r.seed);  // as toy_transformer --random-prompt
    for (int t = 0; t < prompt; ++t) {
      r.inputs.push_back(static_cast<std::int32_t>(ids.next() % static_cast<std::uint64_t>(vocab_size)));
    }
  }
  return requests;
}

/// Pages a sequence of `cache` holds once `tokens` tokens went through it:
/// per (layer, KV head), its slots in use (the tokens, up to the head's
/// sinks + window + chunk room) in pages of `page_tokens`. The pool's own
/// count for a sequence that has seen that many tokens.
inline std::int64_t pages_for_tokens(const sinkkv::CacheConfig& cache, int page_tokens, std::uint64_t tokens) {
  std::int64_t pages = 0;
  for (int layer = 0; layer < cache.num_layers; ++layer) {
    for (int head = 0; head < cache.num_kv_heads; ++head) {
      const std::uint64_t slots = static_cast<std::uint64_t>(cache.slots_of(cache.policy(layer, head)));
      const std::uint64_t used = std::min(tokens, slots);
      pages += static_cast<std::int64_t>((used + static_cast<std::uint64_t>(page_tokens) - 1) /
                                         static_cast<std::uint64_t>(page_tokens));
    }
  }
  return pages;
}

/// Sees every generated token (tests, the program's output). Called on the
/// serving thread; must not throw.
class ServeObserver {
 public:
  virtual ~ServeObserver() = default;
  /// Token `position` (0, 1, ...) of `request`, sampled from `logits`
  /// ([vocab_size], valid during the call).
  virtual void on_token(const ServeRequest& request, int position, int token, const float* logits) = 0;
  /// The request has all its tokens; its pages are free again.
  virtual void on_finish(const ServeRequest& request) { (void)request; }
};

/// Counters of a Server since construction.
struct ServeStats {
  std::int64_t steps = 0;
  std::int64_t prompt_tokens = 0;     ///< inputs fed (start tokens and prompts)
  std::int64_t generated_tokens = 0;  ///< tokens sampled
  int completed = 0;
  int in_flight = 0;
  int queued = 0;
  int most_in_flight = 0;
  std::int64_t most_pages_in_use = 0;
  std::int64_t most_rows = 0;          ///< largest batch, in tokens
  std::int64_t batched_sequences = 0;  ///< sequences in each step's batch, summed over the steps
};

/// The simulation. Construction allocates everything: the pool, the batch's
/// activations, one sampler per stream. step() then allocates nothing.
class Server {
 public:
  /// `threads` (nullptr: the caller only) runs the products' tiles and the
  /// batched attention; it must outlive the server.
  Server(const ModelWeights& weights, const ServeConfig& config, std::vector<ServeRequest> requests,
         sinkkv::ThreadPool* threads = nullptr)
      : config_(config), requests_(std::move(requests)), threads_(threads) {
    const ModelConfig& model = weights.config;
    config_.validate(model.vocab_size);
    TOY_CHECK(!requests_.empty(), "no requests to serve");
    std::size_t longest_inputs = 1;
    std::uint64_t longest = 1;
    for (const ServeRequest& r : requests_) {
      TOY_CHECK(!r.inputs.empty() && r.tokens >= 1, "request " << r.index << " has no inputs or no tokens");
      longest_inputs = std::max(longest_inputs, r.inputs.size());
      longest = std::max(longest, r.cached_tokens());
    }
    if (config_.spec.policy == Policy::kDense) {
      TOY_CHECK(longest <= (1u << 28), "dense: a request of " << longest << " tokens");
      config_.spec.window = static_cast<int>(longest);
      config_.spec.num_sinks = 0;
    }
    config_.spec.validate(model);
    const int chunk =
        static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(config_.prefill_chunk), longest_inputs));
    if (config_.batch_tokens == 0) config_.batch_tokens = config_.streams + chunk - 1;

    sinkkv::PoolConfig pool_config;
    pool_config.cache = SinkCacheState::cache_config(model, config_.spec, chunk);
    pool_config.page_tokens = config_.page_tokens;
    pool_config.max_sequences = config_.streams;
    longest_pages_ = pages_for_tokens(pool_config.cache, config_.page_tokens, longest);
    pool_config.max_pages =
        config_.max_pages > 0 ? config_.max_pages : static_cast<std::int64_t>(config_.streams) * longest_pages_;
    TOY_CHECK(longest_pages_ <= pool_config.max_pages,
              "a request of " << longest << " tokens needs " << longest_pages_ << " pages of " << config_.page_tokens
                              << " tokens, but the pool holds only " << pool_config.max_pages << ": raise the budget");
    config_.max_pages = pool_config.max_pages;
    pool_ = std::make_unique<sinkkv::SequencePool<float>>(pool_config);
    model_ = std::make_unique<BatchedTransformer>(weights, config_.batch_tokens, config_.streams);

    streams_.reserve(static_cast<std::size_t>(config_.streams));
    for (int s = 0; s < config_.streams; ++s) {
      streams_.emplace_back(Sampler(model.vocab_size, config_.temperature, config_.top_p, 0));
    }
    live_.reserve(streams_.size());
    free_.reserve(streams_.size());
    for (int s = config_.streams; s-- > 0;) free_.push_back(s);
    entries_.resize(streams_.size());
    stats_.queued = static_cast<int>(requests_.size());
  }

  /// Admits what fits, runs one batched pass over every stream in flight
  /// (one token each, or a prompt chunk), samples, and releases the
  /// finished. Returns false, doing nothing, once every request is done.
  bool step(ServeObserver* observer = nullptr) {
    admit();
    if (live_.empty()) return false;
    const int count = static_cast<int>(live_.size());
    // One token each, then the rest of the batch to prompts, in arrival order.
    int rows = 0;
    for (int i = 0; i < count; ++i) {
      Stream& s = streams_[static_cast<std::size_t>(live_[static_cast<std::size_t>(i)])];
      const bool prefilling = s.fed < s.request->inputs.size();
      entries_[static_cast<std::size_t>(i)] = BatchEntry{s.id, prefilling ? &s.request->inputs[s.fed] : &s.last, 1};
      ++rows;
    }
    const int chunk = pool_->config().max_chunk;
    for (int i = 0; i < count && rows < config_.batch_tokens; ++i) {
      Stream& s = streams_[static_cast<std::size_t>(live_[static_cast<std::size_t>(i)])];
      if (s.fed >= s.request->inputs.size()) continue;
      const int more = static_cast<int>(
          std::min<std::size_t>({s.request->inputs.size() - s.fed - 1, static_cast<std::size_t>(chunk - 1),
                                 static_cast<std::size_t>(config_.batch_tokens - rows)}));
      entries_[static_cast<std::size_t>(i)].num_tokens += more;
      rows += more;
    }
    const float* logits = model_->forward(entries_.data(), count, *pool_, threads_);
    stats_.batched_sequences += count;
    const int vocab = model_->config().vocab_size;

    // Backwards: a finished stream is swapped with the last, already seen.
    for (int i = count; i-- > 0;) {
      const int slot = live_[static_cast<std::size_t>(i)];
      Stream& s = streams_[static_cast<std::size_t>(slot)];
      const BatchEntry& e = entries_[static_cast<std::size_t>(i)];
      if (s.fed < s.request->inputs.size()) {
        s.fed += static_cast<std::size_t>(e.num_tokens);
        stats_.prompt_tokens += e.num_tokens;
        if (s.fed < s.request->inputs.size()) continue;  // more prompt to go
      }
      const float* row = logits + static_cast<std::ptrdiff_t>(i) * vocab;
      s.last = static_cast<std::int32_t>(s.sampler.sample(row));
      if (observer != nullptr) observer->on_token(*s.request, s.generated, s.last, row);
      ++s.generated;
      ++stats_.generated_tokens;
      if (s.generated < s.request->tokens) continue;
      TOY_CHECK(pool_->pages_held(s.id) <= s.reserved, "request " << s.request->index << " holds "
                                                                  << pool_->pages_held(s.id) << " pages, reserved "
                                                                  << s.reserved);
      pool_->release(s.id);
      ++stats_.completed;
      if (observer != nullptr) observer->on_finish(*s.request);
      live_[static_cast<std::size_t>(i)] = live_.back();
      live_.pop_back();
      free_.push_back(slot);
    }
    ++stats_.steps;
    stats_.in_flight = static_cast<int>(live_.size());
    stats_.most_rows = std::max<std::int64_t>(stats_.most_rows, rows);
    stats_.most_pages_in_use = std::max(stats_.most_pages_in_use, pool_->pages_in_use());
    return true;
  }

  /// Steps until every request is done.
  void run(ServeObserver* observer = nullptr) {
    while (step(observer)) {
    }
  }

  bool done() const { return next_ == requests_.size() && live_.empty(); }
  const ServeStats& stats() const { return stats_; }
  const ServeConfig& config() const { return config_; }  ///< with the defaults filled in
  const std::vector<ServeRequest>& requests() const { return requests_; }
  const sinkkv::SequencePool<float>& pool() const { return *pool_; }
  /// Pages the longest request holds at its end.
  std::int64_t longest_request_pages() const { return longest_pages_; }

 private:
  struct Stream {
    explicit Stream(Sampler s) : sampler(std::move(s)) {}
    Sampler sampler;
    sinkkv::SequenceId id;
    const ServeRequest* request = nullptr;
    std::size_t fed = 0;        // inputs fed so far
    int generated = 0;          // tokens sampled so far
    std::int32_t last = 0;      // the last sampled token: the next input
    std::int64_t reserved = 0;  // pages it holds at its end
  };

  /// Admits queued requests, in order, while a stream is free and the pool
  /// can hold the next one at its longest beside what the streams in flight
  /// may still take.
  void admit() {
    while (next_ < requests_.size() && !free_.empty()) {
      const ServeRequest& r = requests_[next_];
      const std::int64_t reserve = pages_for_tokens(pool_->config(), config_.page_tokens, r.cached_tokens());
      std::int64_t promised = 0;  // pages the streams in flight will still take
      for (int slot : live_) {
        const Stream& s = streams_[static_cast<std::size_t>(slot)];
        promised += s.reserved - pool_->pages_held(s.id);
      }
      if (pool_->free_pages() - promised < reserve) break;  // wait for a stream to finish
      const int slot = free_.back();
      free_.pop_back();
      Stream& s = streams_[static_cast<std::size_t>(slot)];
      s.id = pool_->add();
      s.request = &r;
      s.fed = 0;
      s.generated = 0;
      s.reserved = reserve;
      s.sampler.restart(r.seed);
      live_.push_back(slot);
      ++next_;
    }
    stats_.in_flight = static_cast<int>(live_.size());
    stats_.queued = static_cast<int>(requests_.size() - next_);
    stats_.most_in_flight = std::max(stats_.most_in_flight, stats_.in_flight);
  }

  ServeConfig config_;
  std::vector<ServeRequest> requests_;
  sinkkv::ThreadPool* threads_;
  std::int64_t longest_pages_ = 0;
  std::unique_ptr<sinkkv::SequencePool<float>> pool_;
  std::unique_ptr<BatchedTransformer> model_;
  std::vector<Stream> streams_;      // [streams] one per sequence in flight, reused
  std::vector<int> live_;            // indices into streams_ in flight, in batch order
  std::vector<int> free_;            // indices into streams_ free
  std::vector<BatchEntry> entries_;  // [streams] the step's batch, parallel to live_
  std::size_t next_ = 0;             // the first queued request
  ServeStats stats_;
};

}  // namespace toy
