// toy_transformer: generate an endless stream from a Llama-style model whose
// KV cache is a sinkkv::SinkKVCache (or another policy, to compare).
//
//   toy_transformer                                   seeded random weights
//   toy_transformer --checkpoint model.bin --tokenizer tokenizer.bin --tokens 1000000
//
// Progress (tokens/s, cache occupancy, resident memory) goes to stderr, the
// generated text (or token ids) to stdout.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "toy/checkpoint.hpp"
#include "toy/cli.hpp"
#include "toy/model.hpp"
#include "toy/sampler.hpp"
#include "toy/tokens.hpp"

namespace {

constexpr const char* kUsage = R"(usage: toy_transformer [options]

Model (default: seeded random weights, dim 128, 6 layers, 4 heads, 2 KV heads, vocab 768):
  --checkpoint PATH      llama2.c checkpoint (legacy version-0 format)
  --tokenizer PATH       llama2.c tokenizer.bin: print text instead of token ids
  --model-seed N         seed of the random weights (default 1)
  --save-checkpoint PATH write the model in use as a llama2.c checkpoint and exit
Generation:
  --tokens N             tokens to generate (default 256)
  --start-token ID       first input token (default 1, llama2.c's BOS)
  --temperature T        0 = greedy (default 1.0)
  --top-p P              nucleus sampling threshold in (0, 1] (default 0.9)
  --seed N               sampling seed (default 1)
Cache:
  --policy P             sink (default), window, dense, recompute, window-stream, sink-stream
  --sinks S              attention sinks kept (sink policies; default 4)
  --window W             most recent tokens kept (default 252)
Output:
  --quiet                do not print the generated tokens
  --progress-every SEC   seconds between progress lines on stderr (default 1; 0 = none)
)";

struct Options {
  std::string checkpoint;
  std::string tokenizer;
  std::string save_checkpoint;
  std::uint64_t model_seed = 1;
  long long tokens = 256;
  int start_token = 1;
  float temperature = 1.0f;
  float top_p = 0.9f;
  std::uint64_t seed = 1;
  toy::Policy policy = toy::Policy::kSink;
  int sinks = 4;
  int window = 252;
  bool sinks_given = false;
  bool quiet = false;
  double progress_every = 1.0;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (flag == "--quiet") {
      o.quiet = true;
      continue;
    }
    TOY_CHECK(i + 1 < argc, flag << " needs a value (see --help)");
    const std::string value = argv[++i];
    if (flag == "--checkpoint") {
      o.checkpoint = value;
    } else if (flag == "--tokenizer") {
      o.tokenizer = value;
    } else if (flag == "--save-checkpoint") {
      o.save_checkpoint = value;
    } else if (flag == "--model-seed") {
      o.model_seed = static_cast<std::uint64_t>(toy::parse_integer(flag, value, 0, (1LL << 62)));
    } else if (flag == "--tokens") {
      o.tokens = toy::parse_integer(flag, value, 1, 1LL << 40);
    } else if (flag == "--start-token") {
      o.start_token = static_cast<int>(toy::parse_integer(flag, value, 0, toy::ModelConfig::kMaxVocab - 1));
    } else if (flag == "--temperature") {
      o.temperature = static_cast<float>(toy::parse_real(flag, value, 0, 100));
    } else if (flag == "--top-p") {
      o.top_p = static_cast<float>(toy::parse_real(flag, value, 1e-6, 1));
    } else if (flag == "--seed") {
      o.seed = static_cast<std::uint64_t>(toy::parse_integer(flag, value, 0, (1LL << 62)));
    } else if (flag == "--policy") {
      o.policy = toy::parse_policy(value);
    } else if (flag == "--sinks") {
      o.sinks = static_cast<int>(toy::parse_integer(flag, value, 0, 1 << 20));
      o.sinks_given = true;
    } else if (flag == "--window") {
      o.window = static_cast<int>(toy::parse_integer(flag, value, 1, 1 << 28));
    } else if (flag == "--progress-every") {
      o.progress_every = toy::parse_real(flag, value, 0, 1e6);
    } else {
      TOY_FAIL("unknown option '" << flag << "' (see --help)");
    }
  }
  return o;
}

/// The cache the options ask for; dense holds the whole generation.
toy::PolicySpec policy_spec(const Options& o, const toy::ModelConfig& model) {
  toy::PolicySpec spec;
  spec.policy = o.policy;
  const bool sinks_allowed = o.policy == toy::Policy::kSink || o.policy == toy::Policy::kSinkStream;
  TOY_CHECK(sinks_allowed || !o.sinks_given || o.sinks == 0,
            "--sinks " << o.sinks << " given, but policy " << toy::policy_name(o.policy) << " keeps no sinks");
  spec.num_sinks = sinks_allowed ? o.sinks : 0;
  spec.window = o.window;
  if (o.policy == toy::Policy::kDense) {
    const long long needed = o.tokens + 1;
    const double bytes = static_cast<double>(needed) * model.num_layers * 2.0 * model.kv_dim() * sizeof(float);
    TOY_CHECK(needed <= (1 << 28) && bytes <= 8.0 * (1ull << 30),
              "--policy dense for --tokens " << o.tokens << " needs a " << toy::mib(static_cast<std::uint64_t>(bytes))
                                             << " MiB cache; use a sink policy for long streams");
    spec.window = static_cast<int>(needed);
  }
  return spec;
}

toy::ModelConfig default_config() {
  toy::ModelConfig c;
  c.dim = 128;
  c.hidden_dim = 352;
  c.num_layers = 6;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.vocab_size = 768;
  c.seq_len = 256;
  return c;
}

int run(const Options& o) {
  const toy::ModelWeights weights =
      o.checkpoint.empty() ? toy::random_weights(default_config(), o.model_seed) : toy::load_checkpoint(o.checkpoint);
  const toy::ModelConfig& config = weights.config;
  if (!o.save_checkpoint.empty()) {
    toy::save_checkpoint(weights, o.save_checkpoint);
    std::cerr << "wrote " << o.save_checkpoint << " (" << config << ")\n";
    return 0;
  }
  std::optional<toy::Tokenizer> tokenizer;
  if (!o.tokenizer.empty()) tokenizer = toy::load_tokenizer(o.tokenizer, config.vocab_size);
  TOY_CHECK(o.start_token < config.vocab_size,
            "--start-token " << o.start_token << " outside the vocabulary [0, " << config.vocab_size << ")");

  const toy::PolicySpec spec = policy_spec(o, config);
  toy::Decoder decoder(weights, spec);
  toy::Sampler sampler(config.vocab_size, o.temperature, o.top_p, o.seed);
  std::cerr << "model: " << (o.checkpoint.empty() ? "random weights (seed " + std::to_string(o.model_seed) + ")"
                                                  : o.checkpoint)
            << ", " << config << "\n"
            << "cache: " << toy::policy_name(spec.policy) << ", " << spec.num_sinks << " sinks + " << spec.window
            << " window = " << spec.capacity() << " tokens, " << toy::mib(decoder.cache_bytes()) << " MiB\n";

  const std::uint64_t rss_before = toy::resident_bytes();
  const toy::Stopwatch clock;
  double next_report = o.progress_every;
  const auto progress = [&](long long done) {
    const double seconds = clock.seconds();
    std::fprintf(stderr, "[%s] %lld/%lld tokens | %.0f tok/s | cache %d/%d | RSS %.1f MiB\n",
                 toy::policy_name(spec.policy), done, o.tokens, static_cast<double>(done) / seconds,
                 decoder.cache_size(), decoder.cache_capacity(), toy::mib(toy::resident_bytes()));
  };

  int token = o.start_token;
  for (long long n = 1; n <= o.tokens; ++n) {
    token = sampler.sample(decoder.step(token));
    if (!o.quiet) {
      if (tokenizer) {
        const std::string piece = tokenizer->decode(token);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
      } else {
        std::fprintf(stdout, "%d%c", token, n % 20 == 0 ? '\n' : ' ');
      }
    }
    if (o.progress_every > 0 && clock.seconds() >= next_report) {
      std::fflush(stdout);
      progress(n);
      next_report = clock.seconds() + o.progress_every;
    }
  }
  const double seconds = clock.seconds();
  const std::uint64_t rss_after = toy::resident_bytes();
  if (!o.quiet) std::fputc('\n', stdout);
  std::fflush(stdout);
  if (o.progress_every > 0) progress(o.tokens);
  std::fprintf(stderr,
               "generated %lld tokens in %.2f s: %.0f tokens/s; cache %d/%d tokens; "
               "resident memory %.1f MiB before, %.1f MiB after\n",
               o.tokens, seconds, static_cast<double>(o.tokens) / seconds, decoder.cache_size(),
               decoder.cache_capacity(), toy::mib(rss_before), toy::mib(rss_after));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {  // toy::Error, sinkkv::Error, std::bad_alloc
    std::cerr << "toy_transformer: error: " << e.what() << "\n";
    return 1;
  }
}
