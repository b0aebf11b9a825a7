// toy_transformer: generate an endless stream from a Llama-style model whose
// KV cache is a sinkkv::SinkKVCache (or another policy, to compare).
//
//   toy_transformer                                   seeded random weights
//   toy_transformer --checkpoint model.bin --tokenizer tokenizer.bin --tokens 1000000
//   toy_transformer --checkpoint models/sink_token/model.bin --tokenizer models/sink_token/vocab.json
//                   --start-token 767 --prompt "1 And God said"
//   toy_transformer --dim 1024 --layers 8 --heads 16 --kv-heads 4 --hidden-dim 2816 --random-prompt 4000
//                   --window 4092 --tokens 64 --quiet          a random model of your shape; prefill timed
//   toy_transformer --head-policies "all: 4+252; heads 0: 0+4096" ...     per-layer / per-head caches
//   toy_transformer --serve 16 --requests 64 --serve-tokens 64:512 --serve-prompt 0:64 --quiet
//                   a serving simulation: 16 streams in lock-step over one sinkkv::SequencePool
//
// Progress (tokens/s, cache occupancy, resident memory) goes to stderr, the
// generated text (or token ids) to stdout.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "toy/checkpoint.hpp"
#include "toy/cli.hpp"
#include "toy/head_policy.hpp"
#include "toy/model.hpp"
#include "toy/sampler.hpp"
#include "toy/serve.hpp"
#include "toy/tokenizer.hpp"
#include "toy/tokens.hpp"

namespace {

constexpr const char* kUsage = R"(usage: toy_transformer [options]

Model (default: seeded random weights, dim 128, 6 layers, 4 heads, 2 KV heads, vocab 768):
  --checkpoint PATH      llama2.c checkpoint (legacy version-0 format)
  --tokenizer PATH       print text instead of token ids: the model's BPE vocab.json (tools/train; also
                         encodes --prompt) or a llama2.c tokenizer.bin (decodes only)
  --model-seed N         seed of the random weights (default 1)
  --dim N --hidden-dim N --layers N --heads N --kv-heads N --vocab-size N --context N
                         the random model's shape (defaults above; hidden 352, context 256 = the
                         checkpoint's seq_len); head size = dim / heads, even
  --save-checkpoint PATH write the model in use as a llama2.c checkpoint and exit
Prompt (fed before generation, in chunks; must fit in the cache, in its longest heads):
  --prompt TEXT          start from TEXT, encoded by --tokenizer's vocab.json
  --prompt-tokens FILE   start from the token ids in FILE (--prompt-format bin: int32, or text)
  --random-prompt N      start from N seeded random token ids (--seed), e.g. to time a long prefill
  --prefill-chunk N      tokens per forward pass while prefilling (default 256; 1 = one at a time)
Generation:
  --tokens N             tokens to generate (default 256)
  --start-token ID       first input token (default 1, llama2.c's BOS; with --prompt: none unless given,
                         then it goes before the prompt, e.g. 767 = <sink> for models/sink_token)
  --temperature T        0 = greedy (default 1.0)
  --top-p P              nucleus sampling threshold in (0, 1] (default 0.9)
  --seed N               sampling seed (default 1)
Cache:
  --policy P             sink (default), window, dense, recompute, window-stream, sink-stream, mixed
  --sinks S              attention sinks kept (sink policies; default 4)
  --window W             most recent tokens kept (default 252)
  --head-policies TEXT   policy mixed: each layer / KV head its own SINKS+WINDOW, e.g.
                         "all: 4+252; layers 0-1: 0+1024; layer 5 heads 0,1: 1+4095" (later rules win;
                         docs/toy_transformer.md)
  --head-policies-file PATH   the same, from a file (one rule per line, # comments)
Serving (a simulation: requests queue, up to N decode in lock-step, each step one batched forward
pass - matrix-matrix products over the batch, one batched attention per layer - with K/V in one
sinkkv::SequencePool; uses --seed, --start-token, --temperature, --top-p and the Cache options):
  --serve N              serve with N streams in flight at most
  --requests R           requests, all queued at the start (default 4 x N); request i samples with
                         --seed + i and is what --seed S+i --random-prompt P --tokens G gives alone
  --serve-tokens MIN:MAX tokens each request generates, uniform in [MIN, MAX] (default 64:256)
  --serve-prompt MIN:MAX random prompt tokens after the start token, uniform (default 0:0)
  --pool-pages N         the pool's budget in pages (default: every stream at the longest request)
  --page-tokens N        tokens per page, a power of two (default 16)
  --threads N            threads for the products and the attention (default 1)
  --prefill-chunk N      as above; prompt tokens one stream feeds per step (default 16 here)
  Without --quiet each finished request prints its tokens; the summary goes to stderr.
Output:
  --quiet                do not print the generated tokens
  --show-ends N          print only the first N and the last N generated tokens
  --progress-every SEC   seconds between progress lines on stderr (default 1; 0 = none); on a
                         terminal the line is rewritten in place while no text is printed
)";

struct Options {
  std::string checkpoint;
  std::string tokenizer;
  std::string save_checkpoint;
  std::uint64_t model_seed = 1;
  toy::ModelConfig shape;  // the random model's
  bool shape_given = false;
  std::optional<std::string> prompt;
  std::string prompt_tokens;  // a token file
  toy::TokenFormat prompt_format = toy::TokenFormat::kBinary;
  long long random_prompt = 0;
  int prefill_chunk = 256;
  std::optional<std::string> head_policies;  // text of the mixed policy
  bool policy_given = false;
  long long tokens = 256;
  int start_token = 1;
  bool start_token_given = false;
  float temperature = 1.0f;
  float top_p = 0.9f;
  std::uint64_t seed = 1;
  toy::Policy policy = toy::Policy::kSink;
  int sinks = 4;
  int window = 252;
  bool sinks_given = false;
  bool quiet = false;
  long long show_ends = -1;  // -1: every token
  double progress_every = 1.0;
  // Serving (--serve).
  int serve = 0;  // streams; 0: generate one stream
  int requests = 0;  // 0: 4 x streams
  int serve_min_tokens = 64, serve_max_tokens = 256;
  int serve_min_prompt = 0, serve_max_prompt = 0;
  long long pool_pages = 0;
  int page_tokens = 16;
  int threads = 1;
  bool prefill_chunk_given = false;
  bool tokens_given = false;
  bool window_given = false;
  std::string serve_flag;  // the last serving option given (they need --serve)
};

/// MIN:MAX of `flag`, each in [low, high], MIN <= MAX.
void parse_min_max(const std::string& flag, const std::string& value, int low, int high, int* min, int* max) {
  const std::size_t colon = value.find(':');
  TOY_CHECK(colon != std::string::npos, flag << ": '" << value << "' is not MIN:MAX");
  *min = static_cast<int>(toy::parse_integer(flag + " MIN", value.substr(0, colon), low, high));
  *max = static_cast<int>(toy::parse_integer(flag + " MAX", value.substr(colon + 1), *min, high));
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

Options parse(int argc, char** argv) {
  Options o;
  o.shape = default_config();
  const auto shape_flag = [&](const std::string& flag, const std::string& value, int* field, int max) {
    *field = static_cast<int>(toy::parse_integer(flag, value, 1, max));
    o.shape_given = true;
  };
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
    } else if (flag == "--dim") {
      shape_flag(flag, value, &o.shape.dim, toy::ModelConfig::kMaxDim);
    } else if (flag == "--hidden-dim") {
      shape_flag(flag, value, &o.shape.hidden_dim, toy::ModelConfig::kMaxHidden);
    } else if (flag == "--layers") {
      shape_flag(flag, value, &o.shape.num_layers, toy::ModelConfig::kMaxLayers);
    } else if (flag == "--heads") {
      shape_flag(flag, value, &o.shape.num_heads, toy::ModelConfig::kMaxDim);
    } else if (flag == "--kv-heads") {
      shape_flag(flag, value, &o.shape.num_kv_heads, toy::ModelConfig::kMaxDim);
    } else if (flag == "--vocab-size") {
      shape_flag(flag, value, &o.shape.vocab_size, toy::ModelConfig::kMaxVocab);
    } else if (flag == "--context") {
      shape_flag(flag, value, &o.shape.seq_len, toy::ModelConfig::kMaxSeqLen);
    } else if (flag == "--prompt") {
      o.prompt = value;
    } else if (flag == "--prompt-tokens") {
      o.prompt_tokens = value;
    } else if (flag == "--prompt-format") {
      o.prompt_format = toy::parse_token_format(value);
    } else if (flag == "--random-prompt") {
      o.random_prompt = toy::parse_integer(flag, value, 1, 1 << 28);
    } else if (flag == "--prefill-chunk") {
      o.prefill_chunk = static_cast<int>(toy::parse_integer(flag, value, 1, sinkkv::CacheConfig::kMaxChunk));
      o.prefill_chunk_given = true;
    } else if (flag == "--head-policies") {
      TOY_CHECK(!o.head_policies, "give --head-policies or --head-policies-file once");
      o.head_policies = value;
    } else if (flag == "--head-policies-file") {
      TOY_CHECK(!o.head_policies, "give --head-policies or --head-policies-file once");
      o.head_policies = toy::read_head_policy_file(value);
    } else if (flag == "--tokens") {
      o.tokens = toy::parse_integer(flag, value, 1, 1LL << 40);
      o.tokens_given = true;
    } else if (flag == "--start-token") {
      o.start_token = static_cast<int>(toy::parse_integer(flag, value, 0, toy::ModelConfig::kMaxVocab - 1));
      o.start_token_given = true;
    } else if (flag == "--temperature") {
      o.temperature = static_cast<float>(toy::parse_real(flag, value, 0, 100));
    } else if (flag == "--top-p") {
      o.top_p = static_cast<float>(toy::parse_real(flag, value, 1e-6, 1));
    } else if (flag == "--seed") {
      o.seed = static_cast<std::uint64_t>(toy::parse_integer(flag, value, 0, (1LL << 62)));
    } else if (flag == "--policy") {
      o.policy = toy::parse_policy(value);
      o.policy_given = true;
    } else if (flag == "--sinks") {
      o.sinks = static_cast<int>(toy::parse_integer(flag, value, 0, 1 << 20));
      o.sinks_given = true;
    } else if (flag == "--window") {
      o.window = static_cast<int>(toy::parse_integer(flag, value, 1, 1 << 28));
      o.window_given = true;
    } else if (flag == "--show-ends") {
      o.show_ends = toy::parse_integer(flag, value, 0, 1LL << 40);
    } else if (flag == "--progress-every") {
      o.progress_every = toy::parse_real(flag, value, 0, 1e6);
    } else if (flag == "--serve") {
      o.serve = static_cast<int>(toy::parse_integer(flag, value, 1, 1 << 16));
    } else if (flag == "--requests") {
      o.serve_flag = flag;
      o.requests = static_cast<int>(toy::parse_integer(flag, value, 1, 1 << 24));
    } else if (flag == "--serve-tokens") {
      o.serve_flag = flag;
      parse_min_max(flag, value, 1, 1 << 24, &o.serve_min_tokens, &o.serve_max_tokens);
    } else if (flag == "--serve-prompt") {
      o.serve_flag = flag;
      parse_min_max(flag, value, 0, 1 << 24, &o.serve_min_prompt, &o.serve_max_prompt);
    } else if (flag == "--pool-pages") {
      o.serve_flag = flag;
      o.pool_pages = toy::parse_integer(flag, value, 1, (1LL << 31) - 1);
    } else if (flag == "--page-tokens") {
      o.serve_flag = flag;
      o.page_tokens = static_cast<int>(toy::parse_integer(flag, value, 1, 1 << 20));
      TOY_CHECK((o.page_tokens & (o.page_tokens - 1)) == 0, "--page-tokens " << o.page_tokens
                                                                              << " is not a power of two");
    } else if (flag == "--threads") {
      o.serve_flag = flag;
      o.threads = static_cast<int>(toy::parse_integer(flag, value, 1, 1024));
    } else {
      TOY_FAIL("unknown option '" << flag << "' (see --help)");
    }
  }
  TOY_CHECK(!o.shape_given || o.checkpoint.empty(),
            "the shape flags (--dim, --layers, ...) make a random model; a --checkpoint has its own shape");
  if (o.shape_given) o.shape.validate();
  const int prompts = (o.prompt ? 1 : 0) + (o.prompt_tokens.empty() ? 0 : 1) + (o.random_prompt > 0 ? 1 : 0);
  TOY_CHECK(prompts <= 1, "give at most one of --prompt, --prompt-tokens and --random-prompt");
  if (o.head_policies) {
    TOY_CHECK(!o.policy_given || o.policy == toy::Policy::kMixed,
              "--head-policies makes the policy mixed, but --policy " << toy::policy_name(o.policy) << " was given");
    o.policy = toy::Policy::kMixed;
  }
  TOY_CHECK(o.policy != toy::Policy::kMixed || o.head_policies,
            "--policy mixed needs --head-policies TEXT or --head-policies-file PATH");
  TOY_CHECK(o.policy != toy::Policy::kMixed || !o.sinks_given,
            "--sinks is for uniform policies; each rule of --head-policies gives its own sinks");
  if (o.serve > 0) {
    TOY_CHECK(prompts == 0 && !o.tokens_given && o.show_ends < 0,
              "--serve makes its own requests: use --serve-prompt and --serve-tokens instead of --prompt, "
              "--prompt-tokens, --random-prompt, --tokens and --show-ends");
    if (!o.prefill_chunk_given) o.prefill_chunk = 16;
  } else {
    TOY_CHECK(o.serve_flag.empty(), o.serve_flag << " is an option of --serve N");
  }
  return o;
}

/// The cache the options ask for; dense holds the whole stream (`inputs`
/// fed tokens, then the generated ones).
toy::PolicySpec policy_spec(const Options& o, const toy::ModelConfig& model, std::size_t inputs) {
  toy::PolicySpec spec;
  spec.policy = o.policy;
  const bool sinks_allowed = o.policy == toy::Policy::kSink || o.policy == toy::Policy::kSinkStream;
  TOY_CHECK(sinks_allowed || !o.sinks_given || o.sinks == 0,
            "--sinks " << o.sinks << " given, but policy " << toy::policy_name(o.policy) << " keeps no sinks");
  spec.num_sinks = sinks_allowed ? o.sinks : 0;
  spec.window = o.window;
  if (o.policy == toy::Policy::kMixed) {
    spec.head_policies = toy::parse_head_policies(*o.head_policies, model.num_layers, model.num_kv_heads);
  }
  if (o.policy == toy::Policy::kDense) {
    const long long needed = o.tokens + static_cast<long long>(inputs);
    const double bytes = static_cast<double>(needed) * model.num_layers * 2.0 * model.kv_dim() * sizeof(float);
    TOY_CHECK(needed <= (1 << 28) && bytes <= 8.0 * (1ull << 30),
              "--policy dense for --tokens " << o.tokens << " needs a " << toy::mib(static_cast<std::uint64_t>(bytes))
                                             << " MiB cache; use a sink policy for long streams");
    spec.window = static_cast<int>(needed);
  }
  return spec;
}

/// How ids become text: a BPE vocab.json (which also encodes prompts) or a
/// llama2.c tokenizer.bin (decodes only).
struct TextCodec {
  std::optional<toy::BytePairEncoder> bpe;
  std::optional<toy::Tokenizer> pieces;

  static TextCodec load(const std::string& path, int vocab_size) {
    TextCodec codec;
    const bool json = path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
    if (json) {
      codec.bpe = toy::load_bpe_vocab(path);
      TOY_CHECK(codec.bpe->vocab_size() == vocab_size,
                path << ": the tokenizer has " << codec.bpe->vocab_size() << " ids, the model " << vocab_size
                     << ": not this model's tokenizer");
    } else {
      codec.pieces = toy::load_tokenizer(path, vocab_size);
    }
    return codec;
  }
  std::string decode(int token) const { return bpe ? bpe->piece(token) : pieces->decode(token); }
};

/// The flag the prompt came from, or nullptr without one.
const char* prompt_flag(const Options& o) {
  if (o.prompt) return "--prompt";
  if (!o.prompt_tokens.empty()) return "--prompt-tokens";
  if (o.random_prompt > 0) return "--random-prompt";
  return nullptr;
}

/// The ids fed before generation: --start-token (unless only a prompt is
/// given), then the prompt's. Errors name what is missing or too long.
std::vector<std::int32_t> input_tokens(const Options& o, const std::optional<TextCodec>& codec,
                                       const toy::PolicySpec& spec, int vocab_size) {
  TOY_CHECK(o.start_token < vocab_size,
            "--start-token " << o.start_token << " outside the vocabulary [0, " << vocab_size << ")");
  const char* flag = prompt_flag(o);
  std::vector<std::int32_t> inputs;
  if (flag == nullptr || o.start_token_given) inputs.push_back(o.start_token);
  if (flag == nullptr) return inputs;
  std::vector<std::int32_t> prompt;
  if (o.prompt) {
    TOY_CHECK(codec,
              "--prompt needs the model's tokenizer to encode it: add --tokenizer with the vocab.json "
              "beside the checkpoint (models/<name>/vocab.json)");
    TOY_CHECK(codec->bpe,
              "--prompt: a llama2.c tokenizer.bin only decodes; pass the model's vocab.json (its BPE "
              "merges) as --tokenizer");
    prompt = codec->bpe->encode(*o.prompt);
  } else if (!o.prompt_tokens.empty()) {
    prompt = toy::read_tokens(o.prompt_tokens, o.prompt_format, vocab_size);
  } else {
    toy::Rng rng(o.seed);
    prompt.resize(static_cast<std::size_t>(o.random_prompt));
    for (std::int32_t& id : prompt) id = static_cast<std::int32_t>(rng.next() % static_cast<std::uint64_t>(vocab_size));
  }
  inputs.insert(inputs.end(), prompt.begin(), prompt.end());
  TOY_CHECK(!inputs.empty(), flag << " is empty and no --start-token is given: nothing to start from");
  if (spec.policy != toy::Policy::kDense) {
    std::ostringstream cache;
    if (spec.policy == toy::Policy::kMixed) {
      cache << "longest heads' " << spec.capacity() << "-token cache";
    } else {
      cache << spec.capacity() << "-token cache (" << spec.num_sinks << (spec.num_sinks == 1 ? " sink + " : " sinks + ")
            << spec.window << " window)";
    }
    TOY_CHECK(inputs.size() <= static_cast<std::size_t>(spec.capacity()),
              flag << " is " << prompt.size() << " tokens" << (o.start_token_given ? " after --start-token" : "")
                   << ", more than the " << cache.str() << ": the cache would evict part of it before "
                   << "the first token is generated; shorten the prompt or raise --window");
  }
  return inputs;
}

/// The progress line on stderr: rewritten in place on a terminal (while no
/// text is being printed to it), one line per report elsewhere.
class ProgressLine {
 public:
  ProgressLine(double every, bool text_on_terminal)
      : every_(every), next_(every), in_place_(::isatty(STDERR_FILENO) == 1), text_on_terminal_(text_on_terminal) {}

  /// Reports if `every` seconds have passed, unless `text_shown`: the
  /// token's text was printed and the progress would cut into it (both on a
  /// terminal, where the text is the progress, or `brief`: only a few
  /// tokens are shown at each end, where the line waits for the middle).
  template <class Line>
  void maybe_report(const toy::Stopwatch& clock, bool text_shown, bool brief, Line&& line) {
    if (every_ <= 0 || clock.seconds() < next_) return;
    next_ = clock.seconds() + every_;
    if (text_shown && (brief || (text_on_terminal_ && in_place_))) return;
    std::fflush(stdout);
    if (in_place_) {
      std::fprintf(stderr, "\r%s\033[K", line().c_str());
      open_ = true;
    } else {
      std::fprintf(stderr, "%s\n", line().c_str());
    }
  }
  /// Erases an in-place line, before text goes to the terminal again.
  void clear() {
    if (open_) std::fputs("\r\033[K", stderr);
    open_ = false;
  }
  /// The last report, as a finished line.
  template <class Line>
  void finish(Line&& line) {
    clear();
    if (every_ > 0) std::fprintf(stderr, "%s\n", line().c_str());
  }

 private:
  double every_;
  double next_;
  bool in_place_;
  bool text_on_terminal_;
  bool open_ = false;
};

/// Bytes of K/V the policy keeps (without the rows a chunked prefill adds).
std::size_t kept_bytes(const toy::PolicySpec& spec, const toy::ModelConfig& model) {
  const std::size_t per_slot = 2 * static_cast<std::size_t>(model.head_dim()) * sizeof(float);
  if (spec.policy == toy::Policy::kMixed)
    return static_cast<std::size_t>(toy::total_slots(spec.head_policies)) * per_slot;
  return static_cast<std::size_t>(spec.capacity()) * static_cast<std::size_t>(model.num_layers) *
         static_cast<std::size_t>(model.num_kv_heads) * per_slot;
}

/// Prints each finished request's tokens (text with a tokenizer) on stdout.
class RequestPrinter final : public toy::ServeObserver {
 public:
  RequestPrinter(const std::vector<toy::ServeRequest>& requests, const std::optional<TextCodec>& codec)
      : codec_(codec), tokens_(requests.size()) {
    // Room for every token up front: the serving loop stays free of allocations.
    for (const toy::ServeRequest& r : requests) tokens_[static_cast<std::size_t>(r.index)].reserve(r.tokens);
  }
  void on_token(const toy::ServeRequest& request, int, int token, const float*) override {
    tokens_[static_cast<std::size_t>(request.index)].push_back(token);
  }
  void on_finish(const toy::ServeRequest& request) override {
    std::vector<int>& tokens = tokens_[static_cast<std::size_t>(request.index)];
    std::fprintf(stdout, "[request %d: %d prompt + %d tokens] ", request.index, request.prompt_tokens(),
                 request.tokens);
    for (const int token : tokens) {
      if (codec_) {
        const std::string piece = codec_->decode(token);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
      } else {
        std::fprintf(stdout, "%d ", token);
      }
    }
    std::fputc('\n', stdout);
    std::vector<int>().swap(tokens);
  }

 private:
  const std::optional<TextCodec>& codec_;
  std::vector<std::vector<int>> tokens_;  // [requests] each request's tokens so far
};

/// --serve N: the serving simulation (toy/serve.hpp), its progress and summary on stderr.
int serve(const Options& o, const toy::ModelWeights& weights, const std::optional<TextCodec>& codec) {
  const toy::ModelConfig& model = weights.config;
  toy::ServeConfig config;
  config.spec.policy = o.policy;
  const bool sinks_allowed = o.policy == toy::Policy::kSink;
  TOY_CHECK(sinks_allowed || !o.sinks_given || o.sinks == 0,
            "--sinks " << o.sinks << " given, but policy " << toy::policy_name(o.policy) << " keeps no sinks");
  config.spec.num_sinks = sinks_allowed ? o.sinks : 0;
  config.spec.window = o.window;
  if (o.policy == toy::Policy::kMixed) {
    config.spec.head_policies = toy::parse_head_policies(*o.head_policies, model.num_layers, model.num_kv_heads);
  }
  TOY_CHECK(o.policy != toy::Policy::kDense || !o.window_given,
            "--window given, but policy dense keeps each request whole");
  config.streams = o.serve;
  config.total = o.requests > 0 ? o.requests : 4 * o.serve;
  config.min_tokens = o.serve_min_tokens;
  config.max_tokens = o.serve_max_tokens;
  config.min_prompt = o.serve_min_prompt;
  config.max_prompt = o.serve_max_prompt;
  config.start_token = o.start_token;
  config.temperature = o.temperature;
  config.top_p = o.top_p;
  config.seed = o.seed;
  config.prefill_chunk = o.prefill_chunk;
  config.page_tokens = o.page_tokens;
  config.max_pages = o.pool_pages;
  TOY_CHECK(o.start_token < model.vocab_size,
            "--start-token " << o.start_token << " outside the vocabulary [0, " << model.vocab_size << ")");

  std::unique_ptr<sinkkv::ThreadPool> threads;
  if (o.threads > 1) threads = std::make_unique<sinkkv::ThreadPool>(o.threads - 1);
  const std::uint64_t rss_before = toy::resident_bytes();
  toy::Server server(weights, config, toy::make_requests(config, model.vocab_size), threads.get());
  const toy::ServeConfig& used = server.config();
  const sinkkv::SequencePool<float>& pool = server.pool();
  const double page_kib = static_cast<double>(pool.page_bytes()) / 1024.0;
  std::cerr << "model: "
            << (o.checkpoint.empty() ? "random weights (seed " + std::to_string(o.model_seed) + ")" : o.checkpoint)
            << ", " << model << "\n";
  char text[512];
  std::snprintf(text, sizeof text,
                "serving: %d requests (%d:%d tokens, %d:%d prompt tokens), %d streams at most, %s cache; "
                "batches of up to %d tokens (prompt chunks of %d); %d thread%s\n"
                "pool: %lld pages of %d tokens (%.1f KiB each, %.1f MiB), the longest request holds %lld\n",
                used.total, used.min_tokens, used.max_tokens, used.min_prompt, used.max_prompt, used.streams,
                toy::policy_name(used.spec.policy), used.batch_tokens, pool.config().max_chunk, o.threads,
                o.threads == 1 ? "" : "s", static_cast<long long>(pool.max_pages()), used.page_tokens, page_kib,
                toy::mib(pool.page_bytes() * static_cast<std::uint64_t>(pool.max_pages())),
                static_cast<long long>(server.longest_request_pages()));
  std::cerr << text;

  std::optional<RequestPrinter> printer;
  if (!o.quiet) printer.emplace(server.requests(), codec);
  ProgressLine progress(o.progress_every, false);
  const toy::Stopwatch clock;
  const auto line = [&] {
    const toy::ServeStats& s = server.stats();
    char text[256];
    std::snprintf(text, sizeof text,
                  "[serve] %lld tokens | %.0f tok/s | %d in flight, %d queued, %d/%d done | pool %lld/%lld pages | "
                  "RSS %.1f MiB",
                  static_cast<long long>(s.generated_tokens), static_cast<double>(s.generated_tokens) / clock.seconds(),
                  s.in_flight, s.queued, s.completed, used.total, static_cast<long long>(pool.pages_in_use()),
                  static_cast<long long>(pool.max_pages()), toy::mib(toy::resident_bytes()));
    return std::string(text);
  };
  while (server.step(printer ? &*printer : nullptr)) progress.maybe_report(clock, false, false, line);
  const double seconds = clock.seconds();
  const std::uint64_t rss_after = toy::resident_bytes();
  std::fflush(stdout);
  progress.finish(line);
  const toy::ServeStats& s = server.stats();
  std::snprintf(text, sizeof text,
                "served %d requests in %.2f s: %lld tokens generated, %.0f tokens/s in all (%.1f per stream in "
                "flight); %lld prompt tokens fed\n"
                "sequences in flight: %.1f on average over %lld steps, %d at most (of %d streams); largest batch "
                "%lld tokens\n"
                "pool pages in use: %lld at most of %lld (%.1f MiB of %.1f MiB), %lld at the end\n"
                "resident memory (/proc/self/statm): %.1f MiB before the server, %.1f MiB after serving\n",
                s.completed, seconds, static_cast<long long>(s.generated_tokens),
                static_cast<double>(s.generated_tokens) / seconds,
                static_cast<double>(s.generated_tokens) / seconds /
                    (static_cast<double>(s.batched_sequences) / static_cast<double>(s.steps)),
                static_cast<long long>(s.prompt_tokens),
                static_cast<double>(s.batched_sequences) / static_cast<double>(s.steps),
                static_cast<long long>(s.steps), s.most_in_flight, used.streams, static_cast<long long>(s.most_rows),
                static_cast<long long>(s.most_pages_in_use), static_cast<long long>(pool.max_pages()),
                toy::mib(pool.page_bytes() * static_cast<std::uint64_t>(s.most_pages_in_use)),
                toy::mib(pool.page_bytes() * static_cast<std::uint64_t>(pool.max_pages())),
                static_cast<long long>(pool.pages_in_use()), toy::mib(rss_before), toy::mib(rss_after));
  std::cerr << text;
  return 0;
}

int run(const Options& o) {
  const toy::ModelWeights weights =
      o.checkpoint.empty() ? toy::random_weights(o.shape, o.model_seed) : toy::load_checkpoint(o.checkpoint);
  const toy::ModelConfig& config = weights.config;
  if (!o.save_checkpoint.empty()) {
    toy::save_checkpoint(weights, o.save_checkpoint);
    std::cerr << "wrote " << o.save_checkpoint << " (" << config << ")\n";
    return 0;
  }
  std::optional<TextCodec> codec;
  if (!o.tokenizer.empty()) codec = TextCodec::load(o.tokenizer, config.vocab_size);
  if (o.serve > 0) return serve(o, weights, codec);
  const std::vector<std::int32_t> inputs = input_tokens(o, codec, policy_spec(o, config, 1), config.vocab_size);

  const toy::PolicySpec spec = policy_spec(o, config, inputs.size());
  // Chunks no longer than the prompt: the cache keeps chunk - 1 extra rows per head for them.
  const int chunk = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(o.prefill_chunk), inputs.size()));
  toy::Decoder decoder(weights, spec, chunk);
  toy::Sampler sampler(config.vocab_size, o.temperature, o.top_p, o.seed);
  std::cerr << "model: "
            << (o.checkpoint.empty() ? "random weights (seed " + std::to_string(o.model_seed) + ")" : o.checkpoint)
            << ", " << config << "\n";
  if (spec.policy == toy::Policy::kMixed) {
    std::cerr << "cache: mixed, per layer and KV head " << toy::head_policy_summary(spec.head_policies) << " = "
              << toy::total_slots(spec.head_policies) << " token slots, " << toy::mib(kept_bytes(spec, config))
              << " MiB\n";
  } else {
    std::cerr << "cache: " << toy::policy_name(spec.policy) << ", " << spec.num_sinks
              << (spec.num_sinks == 1 ? " sink + " : " sinks + ") << spec.window << " window = " << spec.capacity()
              << " tokens, " << toy::mib(kept_bytes(spec, config)) << " MiB\n";
  }

  const toy::Stopwatch prefill_clock;
  const float* logits = decoder.prefill(inputs.data(), inputs.size());
  const double prefill_seconds = prefill_clock.seconds();
  if (prompt_flag(o) != nullptr) {
    const std::size_t prompt_tokens = inputs.size() - (o.start_token_given ? 1 : 0);
    std::cerr << "prompt: " << prompt_tokens;
    if (o.random_prompt > 0) std::cerr << " random";
    std::cerr << " tokens";
    if (!o.prompt_tokens.empty()) std::cerr << " from " << o.prompt_tokens;
    if (o.start_token_given) std::cerr << " after --start-token " << o.start_token;
    const std::size_t chunks = (inputs.size() + static_cast<std::size_t>(chunk) - 1) / static_cast<std::size_t>(chunk);
    char text[256];
    std::snprintf(text, sizeof text, ", prefilled in %.1f ms (%.0f tokens/s; %zu chunk%s of up to %d tokens",
                  1e3 * prefill_seconds, static_cast<double>(inputs.size()) / prefill_seconds, chunks,
                  chunks == 1 ? "" : "s", chunk);
    std::cerr << text;
    const std::size_t room = decoder.cache_bytes() - std::min(decoder.cache_bytes(), kept_bytes(spec, config));
    if (room > 0 && spec.policy != toy::Policy::kRecompute) {
      std::snprintf(text, sizeof text, ", for which the cache holds %.2f MiB more", toy::mib(room));
      std::cerr << text;
    }
    std::cerr << ")\n";
  }

  const bool print_text = !o.quiet;
  const bool elide = o.show_ends >= 0 && o.tokens > 2 * o.show_ends;
  const auto shown = [&](long long n) { return !elide || n <= o.show_ends || n > o.tokens - o.show_ends; };
  ProgressLine progress(o.progress_every, print_text && ::isatty(STDOUT_FILENO) == 1);
  const std::uint64_t rss_before = toy::resident_bytes();
  const toy::Stopwatch clock;
  long long done = 0;
  const auto line = [&] {
    char text[256];
    std::snprintf(text, sizeof text, "[%s] %lld/%lld tokens | %.0f tok/s | cache %d/%d | RSS %.1f MiB",
                  toy::policy_name(spec.policy), done, o.tokens, static_cast<double>(done) / clock.seconds(),
                  decoder.cache_size(), decoder.cache_capacity(), toy::mib(toy::resident_bytes()));
    return std::string(text);
  };

  if (print_text && codec && o.prompt) std::fwrite(o.prompt->data(), 1, o.prompt->size(), stdout);
  for (long long n = 1; n <= o.tokens; ++n) {
    const int token = sampler.sample(logits);
    done = n;
    if (print_text && elide && n == o.show_ends + 1) {  // the middle: only the progress line
      std::fputc('\n', stdout);
      std::fflush(stdout);
    }
    if (print_text && shown(n)) {
      if (elide && n == o.tokens - o.show_ends + 1) {
        progress.clear();
        std::fprintf(stdout, "[... %lld tokens not shown ...]\n", o.tokens - 2 * o.show_ends);
      }
      if (codec) {
        const std::string piece = codec->decode(token);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
      } else {
        std::fprintf(stdout, "%d%c", token, n % 20 == 0 ? '\n' : ' ');
      }
    }
    if (n < o.tokens) logits = decoder.step(token);
    progress.maybe_report(clock, print_text && shown(n), elide, line);
  }
  const double seconds = clock.seconds();
  const std::uint64_t rss_after = toy::resident_bytes();
  if (print_text && elide && o.show_ends == 0) std::fprintf(stdout, "[... %lld tokens not shown ...]", o.tokens);
  if (print_text) std::fputc('\n', stdout);
  std::fflush(stdout);
  progress.finish(line);
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
