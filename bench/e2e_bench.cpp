// End-to-end tables with the toy transformer (examples/toy_transformer):
//
//  recompute  per-token latency of the sink cache vs sliding-window
//             recomputation (the StreamingLLM paper's baseline) at cache
//             sizes 256..4096, recomputation run token by token (before
//             chunked prefill) and as one chunked prefill of L tokens;
//  stream     per-token latency and resident memory of the sink cache after
//             1K, 100K, 1M (and, with --max-tokens 4000000, 4M) tokens;
//  prefill    a 4,096-token prompt prefilled one token at a time vs in chunks
//             of 64 / 256 / 1024, at the committed models' shape and at a
//             larger random shape, with where the time goes;
//  duo        memory and decode latency of a DuoAttention-style mix (a quarter
//             of the KV heads keep a 4,096-token window, the others 4 sinks +
//             252) against a uniform 4,096-token window, same run;
//  serve      aggregate tokens/s of 1, 4, 16 and 64 streams served in
//             lock-step (toy/serve.hpp: batched products, batched attention,
//             one SequencePool) against the same requests decoded one after
//             another by a toy::Decoder, and memory per stream, at the
//             committed models' shape and at the larger random shape.
//
// Seeded random weights (toy::random_weights): latency does not depend on
// what the weights are. One thread. Prints Markdown tables.
//
// Recomputation's per-token cost is a fresh forward pass over the last L
// tokens, which is what Decoder::recompute does for each scored token of
// sinkkv-eval: reset a 0-sink window cache of L tokens, run the L tokens at
// cache positions 0..L-1 (one at a time, or as chunks), classifier for the
// last one only.
//
//   e2e_bench [--sections recompute,stream,prefill,duo,serve] [--max-tokens N] [--stream-only]
//             [--prefill-tokens N] [--repeats N] [--smoke]
// GCC 12.1/12.2 (PR 105593) reports "__Y is used uninitialized" inside the
// AVX-512 intrinsics of Eigen's GEMV, inlined into the toy model's forward
// pass under -march=native; the pragma must precede the model's code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <toy/checkpoint.hpp>
#include <toy/head_policy.hpp>
#include <toy/model.hpp>
#include <toy/sampler.hpp>
#include <toy/serve.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Resident set size in KiB (Linux /proc/self/statm), 0 elsewhere.
long resident_kib() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) return 0;
  return pages_resident * 4;
}

toy::ModelConfig shape(int dim, int hidden, int layers, int heads, int kv_heads, int vocab) {
  toy::ModelConfig c;
  c.dim = dim;
  c.hidden_dim = hidden;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.vocab_size = vocab;
  c.seq_len = 4096;
  return c;
}

/// stories15M's body (dim 288, 6 layers, 6 heads) with a 512-token vocabulary.
toy::ModelConfig stories_shape() { return shape(288, 768, 6, 6, 6, 512); }
/// The committed trained models' shape (models/README.md).
toy::ModelConfig trained_shape() { return shape(128, 352, 6, 4, 2, 768); }
/// A larger random shape that still runs in seconds on one core: head size
/// 64, grouped-query attention with 4 query heads per KV head.
toy::ModelConfig larger_shape() { return shape(512, 1408, 8, 8, 2, 4096); }

std::string describe(const toy::ModelConfig& c) {
  char text[160];
  std::snprintf(text, sizeof text, "dim %d, %d layers, %d heads / %d KV heads (head size %d), hidden %d, vocab %d",
                c.dim, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim(), c.hidden_dim, c.vocab_size);
  return text;
}

std::vector<std::int32_t> stream_tokens(std::size_t count, int vocab, std::uint64_t offset = 0) {
  std::vector<std::int32_t> tokens(count);
  for (std::size_t i = 0; i < count; ++i) {
    tokens[i] = static_cast<std::int32_t>(((i + offset) * 2654435761u) % static_cast<std::uint64_t>(vocab));
  }
  return tokens;
}

void check(const float* logits) {
  if (logits == nullptr || !(logits[0] == logits[0])) {
    std::fprintf(stderr, "e2e_bench: the forward pass gave no finite logits\n");
    std::abort();
  }
}

/// Runs `run` (which returns its own seconds) up to `repeats` times, fewer
/// when the runs so far took more than `budget` seconds; the median.
template <class Run>
double timed(int repeats, double budget, Run&& run, int* done) {
  std::vector<double> times;
  double spent = 0;
  while (static_cast<int>(times.size()) < repeats && (times.empty() || spent < budget)) {
    times.push_back(run());
    spent += times.back();
  }
  *done = static_cast<int>(times.size());
  return median(times);
}

// ---- recompute ------------------------------------------------------------

void recompute_table(const std::vector<int>& sizes, int repeats) {
  const toy::ModelWeights weights = toy::random_weights(stories_shape(), 42);
  std::printf("\n### Sink cache vs sliding-window recomputation (per-token latency, 1 thread)\n\n");
  std::printf(
      "%s, float. Recompute: a fresh pass over the last L tokens per token, token by token (as before\n"
      "chunked prefill) or as one chunk of L tokens (sinkkv-eval's recompute now).\n\n",
      describe(stories_shape()).c_str());
  std::printf(
      "| cache tokens L | sink cache ms/token (median of 64) | recompute, token by token, ms/token | "
      "recompute, one chunk, ms/token | chunked speed-up | sink vs chunked recompute |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|\n");
  for (int size : sizes) {
    toy::Decoder decoder(weights, toy::PolicySpec{toy::Policy::kSink, 4, size - 4});
    const std::vector<std::int32_t> tokens = stream_tokens(static_cast<std::size_t>(2 * size + 80), 512);
    std::size_t t = 0;
    for (; t < static_cast<std::size_t>(size) + 16; ++t) decoder.step(tokens[t]);
    std::vector<double> sink_times;
    for (int i = 0; i < 64; ++i, ++t) {
      const auto start = Clock::now();
      check(decoder.step(tokens[t]));
      sink_times.push_back(seconds_since(start));
    }
    const toy::PolicySpec window{toy::Policy::kRecompute, 0, size};
    toy::Decoder single(weights, window);
    toy::Decoder chunked(weights, window, size);
    int single_runs = 0, chunked_runs = 0;
    const double single_time = timed(
        repeats, 20.0,
        [&] {
          const auto start = Clock::now();
          check(single.recompute(tokens.data() + 1, static_cast<std::size_t>(size)));
          return seconds_since(start);
        },
        &single_runs);
    const double chunked_time = timed(
        repeats, 20.0,
        [&] {
          const auto start = Clock::now();
          check(chunked.recompute(tokens.data() + 1, static_cast<std::size_t>(size)));
          return seconds_since(start);
        },
        &chunked_runs);
    const double s = median(sink_times);
    std::printf("| %d | %.3f | %.1f (%d) | %.1f (%d) | %.1fx | %.0fx |\n", size, s * 1e3, single_time * 1e3,
                single_runs, chunked_time * 1e3, chunked_runs, single_time / chunked_time, chunked_time / s);
    std::fflush(stdout);
  }
  std::printf("\n(in parentheses: runs, median taken)\n");
}

// ---- stream -----------------------------------------------------------------

void stream_table(std::uint64_t max_tokens) {
  const toy::ModelWeights weights = toy::random_weights(stories_shape(), 42);
  std::printf("\n### Flat in stream length (sink cache, 4 sinks + 1020 window, 1 thread)\n\n");
  std::printf("| streamed tokens | ms/token (median of next 256) | resident memory KiB | cache KiB |\n");
  std::printf("|---:|---:|---:|---:|\n");
  toy::Decoder decoder(weights, toy::PolicySpec{toy::Policy::kSink, 4, 1020});
  std::uint64_t t = 0;
  const std::uint64_t checkpoints[] = {1000, 100000, 1000000, 4000000};
  const auto token_at = [](std::uint64_t i) { return static_cast<int>((i * 2654435761u) % 512u); };
  const auto start = Clock::now();
  for (std::uint64_t checkpoint : checkpoints) {
    if (checkpoint > max_tokens) break;
    for (; t < checkpoint; ++t) decoder.step(token_at(t));
    std::vector<double> times;
    for (int i = 0; i < 256; ++i, ++t) {
      const auto step_start = Clock::now();
      decoder.step(token_at(t));
      times.push_back(seconds_since(step_start));
    }
    std::printf("| %llu | %.3f | %ld | %zu |\n", static_cast<unsigned long long>(checkpoint), median(times) * 1e3,
                resident_kib(), decoder.cache_bytes() / 1024);
    std::fflush(stdout);
  }
  std::printf("\n(%.0f s to stream %llu tokens)\n", seconds_since(start), static_cast<unsigned long long>(t));
}

// ---- prefill ----------------------------------------------------------------

std::string percent(double part, double total) {
  char text[16];
  std::snprintf(text, sizeof text, "%.0f%%", 100.0 * part / total);
  return text;
}

std::string speedup(double before, double after) {
  char text[16];
  std::snprintf(text, sizeof text, "%.1fx", before / after);
  return before > 0 ? text : "-";
}

void prefill_table(const std::vector<toy::ModelConfig>& shapes, std::size_t prompt_length,
                   const std::vector<int>& chunks, int repeats) {
  std::printf("\n### Prefill of a %zu-token prompt: one token at a time vs chunks (1 thread)\n\n", prompt_length);
  std::printf(
      "Sink cache of 4 sinks + %zu window tokens (the prompt fits), float, CpuKernel. Where the time goes: "
      "ForwardProfile of the timed runs (embedding, RMSNorm, SwiGLU and residuals; the q/k/v/o/w1/w2/w3 "
      "products; the cache's append + attend; the classifier, last token only).\n\n",
      prompt_length - 4);
  std::printf(
      "| shape | chunk | prefill s (runs) | tokens/s | vs one at a time | norms | projections | attention "
      "| classifier |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const toy::ModelConfig& config : shapes) {
    const toy::ModelWeights weights = toy::random_weights(config, 7);
    const std::vector<std::int32_t> prompt = stream_tokens(prompt_length, config.vocab_size);
    const toy::PolicySpec spec{toy::Policy::kSink, 4, static_cast<int>(prompt_length) - 4};
    double single_seconds = 0;
    for (int chunk : chunks) {
      toy::Decoder decoder(weights, spec, chunk);
      toy::ForwardProfile profile;
      decoder.model().set_profile(&profile);
      int runs = 0;
      const double seconds = timed(
          repeats, 30.0,
          [&] {
            decoder.reset();
            const auto start = Clock::now();
            check(decoder.prefill(prompt.data(), prompt.size()));
            return seconds_since(start);
          },
          &runs);
      if (chunk == 1) single_seconds = seconds;
      const double total = profile.total();
      std::printf("| %s | %s | %.2f (%d) | %.0f | %s | %s | %s | %s | %s |\n", describe(config).c_str(),
                  chunk == 1 ? "1 (token at a time)" : std::to_string(chunk).c_str(), seconds, runs,
                  static_cast<double>(prompt_length) / seconds, speedup(single_seconds, seconds).c_str(),
                  percent(profile.embedding_and_norms, total).c_str(), percent(profile.projections, total).c_str(),
                  percent(profile.attention, total).c_str(), percent(profile.classifier, total).c_str());
      std::fflush(stdout);
    }
  }
  std::printf("\n(runs: median of that many prefills; the percentages sum all of them)\n");
}

// ---- DuoAttention-style mix ----------------------------------------------------

/// A quarter of the KV heads keep the last `long_window` tokens (KV head 0
/// of layers 0, 2, 4, ..., then of the odd layers, then KV head 1, ...),
/// all the others 4 sinks + short_window.
toy::PolicySpec duo_mix(const toy::ModelConfig& config, int long_window, int short_window, int* long_heads) {
  const int layers = config.num_layers, kv_heads = config.num_kv_heads;
  toy::PolicySpec spec{toy::Policy::kMixed, 0, 0};
  spec.head_policies.assign(static_cast<std::size_t>(layers * kv_heads), sinkkv::RetentionPolicy{4, short_window});
  *long_heads = layers * kv_heads / 4;
  int chosen = 0;
  for (int head = 0; head < kv_heads; ++head) {
    for (int parity = 0; parity < 2; ++parity) {
      for (int layer = parity; layer < layers && chosen < *long_heads; layer += 2, ++chosen) {
        spec.head_policies[static_cast<std::size_t>(layer * kv_heads + head)] = sinkkv::RetentionPolicy{0, long_window};
      }
    }
  }
  return spec;
}

void duo_table(const std::vector<toy::ModelConfig>& shapes, int long_window, int short_window, int steps) {
  std::printf("\n### DuoAttention-style mix vs a uniform %d-token window: memory and decode latency (1 thread)\n\n",
              long_window);
  std::printf(
      "A quarter of the KV heads (KV head 0 of layers 0, 2, 4, ...) keep a %d-token window, the others 4 "
      "sinks + %d; the uniform cache keeps %d tokens on every head. Both filled with %d tokens (chunked "
      "prefill), then decoded alternately, %d steps each; memory is the K/V storage a decode-only cache of "
      "that policy allocates (max_chunk 1).\n\n",
      long_window, short_window, long_window, long_window + 64, steps);
  std::printf(
      "| shape | KV heads long / all | uniform KiB | mix KiB | memory ratio | uniform ms/token | mix ms/token | "
      "speed-up | attention share, uniform / mix |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const toy::ModelConfig& config : shapes) {
    const toy::ModelWeights weights = toy::random_weights(config, 11);
    const toy::PolicySpec uniform{toy::Policy::kSink, 0, long_window};
    int long_heads = 0;
    const toy::PolicySpec mix = duo_mix(config, long_window, short_window, &long_heads);
    const std::size_t uniform_bytes = toy::Decoder(weights, uniform).cache_bytes();
    const std::size_t mix_bytes = toy::Decoder(weights, mix).cache_bytes();
    const std::vector<std::int32_t> tokens =
        stream_tokens(static_cast<std::size_t>(long_window + 64 + steps), config.vocab_size);
    toy::Decoder a(weights, uniform, 256), b(weights, mix, 256);
    const std::size_t fill = static_cast<std::size_t>(long_window + 64);
    check(a.prefill(tokens.data(), fill));
    check(b.prefill(tokens.data(), fill));
    toy::ForwardProfile profile_a, profile_b;
    a.model().set_profile(&profile_a);
    b.model().set_profile(&profile_b);
    std::vector<double> times_a, times_b;
    for (int i = 0; i < steps; ++i) {
      const std::int32_t token = tokens[fill + static_cast<std::size_t>(i)];
      auto start = Clock::now();
      check(a.step(token));
      times_a.push_back(seconds_since(start));
      start = Clock::now();
      check(b.step(token));
      times_b.push_back(seconds_since(start));
    }
    const double ta = median(times_a), tb = median(times_b);
    std::printf("| %s | %d / %d | %zu | %zu | %.2fx less | %.3f | %.3f | %.2fx | %s / %s |\n", describe(config).c_str(),
                long_heads, config.num_layers * config.num_kv_heads, uniform_bytes / 1024, mix_bytes / 1024,
                static_cast<double>(uniform_bytes) / static_cast<double>(mix_bytes), ta * 1e3, tb * 1e3, ta / tb,
                percent(profile_a.attention, profile_a.total()).c_str(),
                percent(profile_b.attention, profile_b.total()).c_str());
    std::fflush(stdout);
  }
}

// ---- serve ---------------------------------------------------------------------

/// The requests of `config` decoded one after another on one Decoder (its
/// cache reset between them), each with its own sampler: the reference the
/// server is timed against. Returns the tokens generated.
std::int64_t decode_one_after_another(toy::Decoder& decoder, const toy::ServeConfig& config,
                                      const std::vector<toy::ServeRequest>& requests, int vocab) {
  std::int64_t generated = 0;
  toy::Sampler sampler(vocab, config.temperature, config.top_p, 0);
  for (const toy::ServeRequest& r : requests) {
    decoder.reset();
    sampler.restart(r.seed);
    const float* logits = decoder.prefill(r.inputs.data(), r.inputs.size());
    for (int k = 0; k < r.tokens; ++k, ++generated) {
      const int token = sampler.sample(logits);
      if (k + 1 < r.tokens) logits = decoder.step(token);
    }
  }
  return generated;
}

void serve_table(const toy::ModelConfig& model, const std::vector<int>& stream_counts, int min_tokens,
                 int max_tokens, int max_prompt, int repeats) {
  const toy::ModelWeights weights = toy::random_weights(model, 13);
  const toy::PolicySpec spec{toy::Policy::kSink, 4, 124};
  std::printf("\n### Serving: N streams in lock-step vs the same streams one after another (1 thread)\n\n");
  std::printf(
      "%s, float, sink cache 4 + 124 per sequence. N requests, all queued at the start, each generating "
      "%d..%d tokens (sampled, temperature 1, top-p 0.9) after a start token and 0..%d random prompt tokens "
      "(prefilled in chunks of 16). Served: toy::Server, up to N sequences per batched forward pass "
      "(matrix-matrix products over the batch, one SequencePool::attend_batch per layer), pages of 16 "
      "tokens. One after another: one toy::Decoder (SinkKVCache, matrix-vector products), reset between "
      "requests. Sizes interleaved, %d repetitions; medians. Memory per stream: the pool's peak pages in use / N "
      "(pages are taken as tokens arrive) against the Decoder's cache (allocated whole, with 16 rows of "
      "chunk room).\n\n",
      describe(model).c_str(), min_tokens, max_tokens, max_prompt, repeats);
  std::printf(
      "| streams N | generated tokens | served tokens/s | one after another tokens/s | speed-up | "
      "pool KiB per stream (peak) | SinkKVCache KiB per stream |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|\n");
  struct Row {
    std::vector<double> served, alone;
    std::int64_t generated = 0;
    double pool_kib_per_stream = 0;
  };
  std::vector<Row> rows(stream_counts.size());
  toy::Decoder decoder(weights, spec, 16);
  for (int repeat = 0; repeat < repeats; ++repeat) {
    for (std::size_t i = 0; i < stream_counts.size(); ++i) {
      toy::ServeConfig config;
      config.spec = spec;
      config.streams = stream_counts[i];
      config.total = stream_counts[i];
      config.min_tokens = min_tokens;
      config.max_tokens = max_tokens;
      config.max_prompt = max_prompt;
      config.prefill_chunk = 16;
      config.seed = 100;
      const std::vector<toy::ServeRequest> requests = toy::make_requests(config, model.vocab_size);
      toy::Server server(weights, config, requests);
      auto start = Clock::now();
      server.run();
      rows[i].served.push_back(seconds_since(start));
      start = Clock::now();
      const std::int64_t alone = decode_one_after_another(decoder, config, requests, model.vocab_size);
      rows[i].alone.push_back(seconds_since(start));
      const toy::ServeStats& stats = server.stats();
      if (alone != stats.generated_tokens || stats.most_in_flight != config.streams) {
        std::fprintf(stderr, "e2e_bench: served %lld tokens (%d in flight at most), alone %lld\n",
                     static_cast<long long>(stats.generated_tokens), stats.most_in_flight,
                     static_cast<long long>(alone));
        std::abort();
      }
      rows[i].generated = alone;
      rows[i].pool_kib_per_stream = static_cast<double>(server.pool().page_bytes()) *
                                    static_cast<double>(stats.most_pages_in_use) / 1024.0 / config.streams;
    }
  }
  for (std::size_t i = 0; i < stream_counts.size(); ++i) {
    const double served = median(rows[i].served), alone = median(rows[i].alone);
    const double tokens = static_cast<double>(rows[i].generated);
    std::printf("| %d | %lld | %.0f | %.0f | %.2fx | %.0f | %zu |\n", stream_counts[i],
                static_cast<long long>(rows[i].generated), tokens / served, tokens / alone, alone / served,
                rows[i].pool_kib_per_stream, decoder.cache_bytes() / 1024);
  }
  std::fflush(stdout);
}

bool has(const std::string& list, const char* section) {
  const std::string padded = "," + list + ",";
  return padded.find(std::string(",") + section + ",") != std::string::npos;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t max_tokens = 1000000;
  std::size_t prefill_tokens = 4096;
  int repeats = 3;
  bool smoke = false;
  std::string sections = "recompute,stream,prefill,duo,serve";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--max-tokens") == 0 && i + 1 < argc) {
      max_tokens = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--prefill-tokens") == 0 && i + 1 < argc) {
      prefill_tokens = std::max<std::size_t>(64, std::strtoull(argv[++i], nullptr, 10));
    } else if (std::strcmp(argv[i], "--repeats") == 0 && i + 1 < argc) {
      repeats = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--sections") == 0 && i + 1 < argc) {
      sections = argv[++i];
    } else if (std::strcmp(argv[i], "--smoke") == 0) {
      smoke = true;
    } else if (std::strcmp(argv[i], "--stream-only") == 0) {
      sections = "stream";
    } else {
      std::fprintf(stderr,
                   "usage: %s [--sections recompute,stream,prefill,duo,serve] [--max-tokens N] [--stream-only] "
                   "[--prefill-tokens N] [--repeats N] [--smoke]\n",
                   argv[0]);
      return 2;
    }
  }
  std::printf("toy transformer end to end: float, CpuKernel (%s), seeded random weights\n",
              sinkkv::instruction_set_name(sinkkv::CpuKernel{}.instruction_set()));
  if (smoke) {
    recompute_table({64}, 1);
    stream_table(1000);
    prefill_table({trained_shape()}, 64, {1, 16}, 1);
    duo_table({trained_shape()}, 64, 12, 4);
    serve_table(trained_shape(), {1, 4}, 4, 12, 8, 1);
    return 0;
  }
  if (has(sections, "recompute")) recompute_table({256, 512, 1024, 2048, 4096}, repeats);
  if (has(sections, "prefill"))
    prefill_table({trained_shape(), larger_shape()}, prefill_tokens, {1, 64, 256, 1024}, repeats);
  if (has(sections, "duo")) duo_table({trained_shape(), larger_shape()}, 4096, 252, 64);
  if (has(sections, "serve")) {
    serve_table(trained_shape(), {1, 4, 16, 64}, 128, 384, 32, repeats);
    // Shorter requests: one token alone reads the ~100 MB of weights.
    serve_table(larger_shape(), {1, 4, 16, 64}, 16, 48, 16, repeats);
  }
  if (has(sections, "stream")) stream_table(max_tokens);
  return 0;
}
