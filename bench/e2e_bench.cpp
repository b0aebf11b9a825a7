// End-to-end decode with the toy transformer (examples/toy_transformer):
//
//  1. per-token latency of the sink cache vs sliding-window recomputation
//     (the StreamingLLM paper's baseline) at cache sizes 256..4096;
//  2. per-token latency and resident memory of the sink cache after 1K,
//     100K, 1M (and, with --max-tokens 4000000, 4M) streamed tokens.
//
// Seeded random weights (toy::random_weights): latency does not depend on
// what the weights are. Prints Markdown tables.
//
// Recomputation's per-token cost is a fresh forward pass over the last L
// tokens. Getting a recompute decoder to a full window costs O(L^2) passes,
// so its step is timed directly as what Decoder::step does for that policy:
// reset a 0-sink window cache of L tokens and run L forward passes (cache
// positions 0..L-1). Unlike Decoder's recompute it computes the classifier
// for every pass; with the 512-token vocabulary used here that is under 3%
// of a pass.
//
//   e2e_bench [--max-tokens N] [--stream-only] [--smoke]
// GCC 12.1/12.2 (PR 105593) reports "__Y is used uninitialized" inside the
// AVX-512 intrinsics of Eigen's GEMV, inlined into the toy model's forward
// pass under -march=native; the pragma must precede the model's code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <toy/checkpoint.hpp>
#include <toy/model.hpp>

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

toy::ModelConfig model_config() {
  toy::ModelConfig c;  // stories15M's body (dim 288, 6 layers, 6 heads) with a 512-token vocabulary
  c.dim = 288;
  c.hidden_dim = 768;
  c.num_layers = 6;
  c.num_heads = 6;
  c.num_kv_heads = 6;
  c.vocab_size = 512;
  c.seq_len = 4096;
  return c;
}

int token_at(std::uint64_t t) { return static_cast<int>((t * 2654435761u) % 512u); }

void recompute_table(const toy::ModelWeights& weights, const std::vector<int>& sizes, int repeats) {
  std::printf("\n### Sink cache vs sliding-window recomputation (per-token latency, 1 thread)\n\n");
  std::printf(
      "| cache tokens L | sink cache ms/token (median of %d) | recompute ms/token (median of %d) | speed-up |\n", 64,
      repeats);
  std::printf("|---:|---:|---:|---:|\n");
  for (int size : sizes) {
    toy::PolicySpec sink{toy::Policy::kSink, 4, size - 4};
    toy::Decoder decoder(weights, sink);
    std::uint64_t t = 0;
    for (; t < static_cast<std::uint64_t>(size) + 16; ++t) decoder.step(token_at(t));
    std::vector<double> sink_times;
    for (int i = 0; i < 64; ++i, ++t) {
      const auto start = Clock::now();
      const float* logits = decoder.step(token_at(t));
      sink_times.push_back(seconds_since(start));
      if (!(logits[0] == logits[0])) std::abort();
    }

    toy::PolicySpec window{toy::Policy::kWindow, 0, size};
    toy::Decoder recompute(weights, window);
    std::vector<double> recompute_times;
    for (int r = 0; r < repeats; ++r) {
      const auto start = Clock::now();
      recompute.reset();
      const float* logits = nullptr;
      for (int i = 0; i < size; ++i) logits = recompute.step(token_at(t + static_cast<std::uint64_t>(i)));
      recompute_times.push_back(seconds_since(start));
      if (!(logits[0] == logits[0])) std::abort();
    }
    const double s = median(sink_times), rc = median(recompute_times);
    std::printf("| %d | %.3f | %.1f | %.0fx |\n", size, s * 1e3, rc * 1e3, rc / s);
    std::fflush(stdout);
  }
}

void stream_table(const toy::ModelWeights& weights, std::uint64_t max_tokens) {
  std::printf("\n### Flat in stream length (sink cache, 4 sinks + 1020 window, 1 thread)\n\n");
  std::printf("| streamed tokens | ms/token (median of next 256) | resident memory KiB | cache KiB |\n");
  std::printf("|---:|---:|---:|---:|\n");
  toy::Decoder decoder(weights, toy::PolicySpec{toy::Policy::kSink, 4, 1020});
  std::uint64_t t = 0;
  const std::uint64_t checkpoints[] = {1000, 100000, 1000000, 4000000};
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

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t max_tokens = 1000000;
  bool smoke = false;
  bool stream_only = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--max-tokens") == 0 && i + 1 < argc) {
      max_tokens = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--smoke") == 0) {
      smoke = true;
    } else if (std::strcmp(argv[i], "--stream-only") == 0) {
      stream_only = true;
    } else {
      std::fprintf(stderr, "usage: %s [--max-tokens N] [--stream-only] [--smoke]\n", argv[0]);
      return 2;
    }
  }
  const toy::ModelWeights weights = toy::random_weights(model_config(), 42);
  std::printf(
      "toy transformer: dim 288, 6 layers, 6 heads (head_dim 48), hidden 768, vocab 512, float, CpuKernel (%s)\n",
      sinkkv::instruction_set_name(sinkkv::CpuKernel{}.instruction_set()));
  if (smoke) {
    recompute_table(weights, {64}, 1);
    stream_table(weights, 1000);
    return 0;
  }
  if (!stream_only) recompute_table(weights, {256, 512, 1024, 2048, 4096}, 3);
  stream_table(weights, max_tokens);
  return 0;
}
