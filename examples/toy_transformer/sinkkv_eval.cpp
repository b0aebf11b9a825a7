// sinkkv-eval: what a cache policy does to a model's quality over a long
// stream. Per-token negative log-likelihood under each policy, perplexity
// overall and per chunk, CSV, an SVG plot, and the attention-mass report.
//
//   sinkkv-eval --checkpoint model.bin --tokens stream.bin --cache-size 256 --out eval/
//   sinkkv-eval --checkpoint model.bin --generate 20000 --seed 1 --save-tokens stream.bin
//   sinkkv-eval --checkpoint model.bin --tokens stream.bin --ranges 1-256,257-8192,7937-8192
//               --recompute-range 7937-8192
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/stat.h>

#include "toy/checkpoint.hpp"
#include "toy/cli.hpp"
#include "toy/eval.hpp"
#include "toy/head_policy.hpp"
#include "toy/model.hpp"
#include "toy/sampler.hpp"
#include "toy/summary.hpp"
#include "toy/tokens.hpp"

namespace {

constexpr const char* kUsage = R"(usage: sinkkv-eval --checkpoint model.bin (--tokens FILE | --generate N) [options]

Stream:
  --tokens FILE         the token stream to score
  --format bin|text     FILE holds int32 little-endian ids (bin, default) or whitespace-separated ids
  --first N             use only the first N tokens of FILE
  --generate N          sample an N-token stream from the model itself instead
                        (through a sink cache of the same size; --seed, --temperature, --top-p, --start-token)
  --save-tokens FILE    save the generated stream (in --format)
Policies:
  --policies LIST       comma-separated, or 'all' (default; with --head-policies: all and mixed):
                        dense, window, sink, recompute, window-stream, sink-stream, mixed
  --cache-size L        tokens a bounded policy keeps (default 256; with --head-policies: the mixed
                        policy's token slots per KV head, so that every policy holds the same memory)
  --sinks S             sinks of the sink policies, out of L (default 4)
  --head-policies TEXT  the mixed policy: each layer / KV head its own SINKS+WINDOW, e.g.
                        "all: 1+31; layers 4-5 heads 0: 1+159" (later rules win)
  --head-policies-file PATH   the same, from a file (one rule per line, # comments)
  --limit N             score only the first N predictions under recompute (O(L^2) per token)
  --recompute-range A-B score recompute only on stream positions A..B (see --chunk for positions)
  --threads N           threads for recompute, whose tokens are independent (default 1)
  --prefill-chunk N     tokens per forward pass (default 256): each policy but recompute scores the
                        stream in chunks of N, and recompute runs each pass over its L tokens in
                        chunks of min(N, L); 1 = one token at a time (same numbers up to rounding)
Output:
  --out DIR             nll.csv, chunks.csv, plot.svg, attention_mass.csv (default sinkkv-eval-out)
  --chunk N             predictions per row of the perplexity table (default 1000)
  --ranges LIST         instead of the overall and per-chunk tables: one row per policy with the
                        perplexity over each range of positions (e.g. 1-256,257-8192), CPU time per
                        token, and what the numbers show
  --smooth N            moving-average width of the plot (default 100)
  --mass-range A:B      attention-mass report over query positions [A, B) (0-based stream indices)
  --mass-policy P       the policy the report watches (default sink; a uniform one)
  --mass-far D          the report's far column: weight on non-sink tokens >= D behind the query
                        (default 32)
  --suggest-mix K:FAR:NEAR   from the report, a mixed policy giving the K KV heads with the most far
                        weight FAR (e.g. 1+159) and the others NEAR (e.g. 1+31): written to
                        DIR/head_policies.txt, and the opposite choice (a control) to
                        DIR/head_policies_control.txt
  --progress-every SEC  seconds between progress lines on stderr (default 2; 0 = none)
)";

struct Options {
  std::string checkpoint;
  std::string tokens_path;
  long long first_tokens = -1;  // all
  toy::TokenFormat format = toy::TokenFormat::kBinary;
  long long generate = 0;
  std::uint64_t seed = 1;
  float temperature = 1.0f;
  float top_p = 1.0f;
  int start_token = 1;
  std::string save_tokens;
  std::vector<toy::Policy> policies = toy::all_policies();
  bool policies_given = false;
  int cache_size = 256;
  bool cache_size_given = false;
  std::optional<std::string> head_policies;  // the mixed policy's text
  int prefill_chunk = 256;
  int mass_far = 32;
  std::optional<std::string> suggest_mix;
  int sinks = 4;
  long long limit = -1;
  std::optional<toy::PositionRange> recompute_range;
  std::vector<toy::PositionRange> ranges;
  int threads = 1;
  std::string out_dir = "sinkkv-eval-out";
  long long chunk = 1000;
  long long smooth = 100;
  long long mass_begin = -1, mass_end = -1;
  toy::Policy mass_policy = toy::Policy::kSink;
  double progress_every = 2.0;
};

std::vector<toy::Policy> parse_policies(const std::string& list) {
  if (list == "all") return toy::all_policies();
  std::vector<toy::Policy> policies;
  std::size_t begin = 0;
  while (begin <= list.size()) {
    const std::size_t comma = std::min(list.find(',', begin), list.size());
    const toy::Policy p = toy::parse_policy(list.substr(begin, comma - begin));
    for (toy::Policy q : policies) TOY_CHECK(q != p, "--policies lists " << toy::policy_name(p) << " twice");
    policies.push_back(p);
    begin = comma + 1;
  }
  return policies;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      std::exit(0);
    }
    TOY_CHECK(i + 1 < argc, flag << " needs a value (see --help)");
    const std::string value = argv[++i];
    if (flag == "--checkpoint") {
      o.checkpoint = value;
    } else if (flag == "--tokens") {
      o.tokens_path = value;
    } else if (flag == "--first") {
      o.first_tokens = toy::parse_integer(flag, value, 2, 1LL << 40);
    } else if (flag == "--format") {
      o.format = toy::parse_token_format(value);
    } else if (flag == "--generate") {
      o.generate = toy::parse_integer(flag, value, 2, 1LL << 31);
    } else if (flag == "--seed") {
      o.seed = static_cast<std::uint64_t>(toy::parse_integer(flag, value, 0, 1LL << 62));
    } else if (flag == "--temperature") {
      o.temperature = static_cast<float>(toy::parse_real(flag, value, 0, 100));
    } else if (flag == "--top-p") {
      o.top_p = static_cast<float>(toy::parse_real(flag, value, 1e-6, 1));
    } else if (flag == "--start-token") {
      o.start_token = static_cast<int>(toy::parse_integer(flag, value, 0, toy::ModelConfig::kMaxVocab - 1));
    } else if (flag == "--save-tokens") {
      o.save_tokens = value;
    } else if (flag == "--policies") {
      o.policies = parse_policies(value);
      o.policies_given = true;
    } else if (flag == "--cache-size") {
      o.cache_size = static_cast<int>(toy::parse_integer(flag, value, 1, 1 << 24));
      o.cache_size_given = true;
    } else if (flag == "--head-policies") {
      TOY_CHECK(!o.head_policies, "give --head-policies or --head-policies-file once");
      o.head_policies = value;
    } else if (flag == "--head-policies-file") {
      TOY_CHECK(!o.head_policies, "give --head-policies or --head-policies-file once");
      o.head_policies = toy::read_head_policy_file(value);
    } else if (flag == "--prefill-chunk") {
      o.prefill_chunk = static_cast<int>(toy::parse_integer(flag, value, 1, sinkkv::CacheConfig::kMaxChunk));
    } else if (flag == "--mass-far") {
      o.mass_far = static_cast<int>(toy::parse_integer(flag, value, 1, 1 << 24));
    } else if (flag == "--suggest-mix") {
      o.suggest_mix = value;
    } else if (flag == "--sinks") {
      o.sinks = static_cast<int>(toy::parse_integer(flag, value, 0, 1 << 24));
    } else if (flag == "--limit") {
      o.limit = toy::parse_integer(flag, value, 1, 1LL << 40);
    } else if (flag == "--recompute-range") {
      const std::vector<toy::PositionRange> range = toy::parse_position_ranges(flag, value);
      TOY_CHECK(range.size() == 1, flag << ": '" << value << "' is not one range A-B");
      o.recompute_range = range[0];
    } else if (flag == "--ranges") {
      o.ranges = toy::parse_position_ranges(flag, value);
    } else if (flag == "--threads") {
      o.threads = static_cast<int>(toy::parse_integer(flag, value, 1, 1024));
    } else if (flag == "--out") {
      o.out_dir = value;
    } else if (flag == "--chunk") {
      o.chunk = toy::parse_integer(flag, value, 1, 1LL << 40);
    } else if (flag == "--smooth") {
      o.smooth = toy::parse_integer(flag, value, 1, 1LL << 40);
    } else if (flag == "--mass-range") {
      const std::size_t colon = value.find(':');
      TOY_CHECK(colon != std::string::npos, "--mass-range: '" << value << "' is not A:B");
      o.mass_begin = toy::parse_integer("--mass-range start", value.substr(0, colon), 0, 1LL << 40);
      o.mass_end = toy::parse_integer("--mass-range end", value.substr(colon + 1), o.mass_begin + 1, 1LL << 40);
    } else if (flag == "--mass-policy") {
      o.mass_policy = toy::parse_policy(value);
    } else if (flag == "--progress-every") {
      o.progress_every = toy::parse_real(flag, value, 0, 1e6);
    } else {
      TOY_FAIL("unknown option '" << flag << "' (see --help)");
    }
  }
  TOY_CHECK(!o.checkpoint.empty(), "--checkpoint is required (see --help)");
  const bool mixed_listed = std::find(o.policies.begin(), o.policies.end(), toy::Policy::kMixed) != o.policies.end();
  if (o.head_policies && !o.policies_given) o.policies.push_back(toy::Policy::kMixed);
  TOY_CHECK(!o.head_policies || !o.policies_given || mixed_listed,
            "--head-policies given, but 'mixed' is not among --policies");
  TOY_CHECK(o.head_policies || !mixed_listed, "policy mixed needs --head-policies TEXT or --head-policies-file PATH");
  TOY_CHECK(o.mass_policy != toy::Policy::kMixed,
            "--mass-policy mixed: the report needs a policy whose heads all keep the same tokens");
  TOY_CHECK(!o.suggest_mix || o.mass_begin >= 0, "--suggest-mix needs the attention-mass report (--mass-range A:B)");
  TOY_CHECK(o.tokens_path.empty() != (o.generate == 0), "give exactly one of --tokens FILE and --generate N");
  TOY_CHECK(o.limit < 0 || !o.recompute_range, "give at most one of --limit and --recompute-range");
  TOY_CHECK(o.first_tokens < 0 || !o.tokens_path.empty(), "--first applies to --tokens FILE only");
  return o;
}

/// "3:1+159:1+31" -> (3, {1, 159}, {1, 31}).
struct MixSuggestion {
  int count = 0;
  sinkkv::RetentionPolicy far, near;
};

MixSuggestion parse_mix_suggestion(const std::string& text, int num_heads) {
  const std::size_t first = text.find(':'), second = first == std::string::npos ? first : text.find(':', first + 1);
  TOY_CHECK(second != std::string::npos, "--suggest-mix: '" << text << "' is not K:FAR:NEAR, e.g. 3:1+159:1+31");
  MixSuggestion mix;
  mix.count = static_cast<int>(toy::parse_integer("--suggest-mix K", text.substr(0, first), 0, num_heads));
  // A policy is parsed as a one-rule configuration of one head.
  mix.far = toy::parse_head_policies(text.substr(first + 1, second - first - 1), 1, 1)[0];
  mix.near = toy::parse_head_policies(text.substr(second + 1), 1, 1)[0];
  return mix;
}

toy::PolicySpec spec_for(toy::Policy policy, const Options& o, std::size_t stream_length,
                         const toy::HeadPolicies& head_policies) {
  toy::PolicySpec spec;
  spec.policy = policy;
  if (policy == toy::Policy::kMixed) {
    spec.num_sinks = 0;
    spec.window = 0;
    spec.head_policies = head_policies;
    return spec;
  }
  const bool sinks = policy == toy::Policy::kSink || policy == toy::Policy::kSinkStream;
  spec.num_sinks = sinks ? o.sinks : 0;
  spec.window = o.cache_size - spec.num_sinks;
  if (policy == toy::Policy::kDense) {
    TOY_CHECK(stream_length <= (1u << 28), "dense: a stream of " << stream_length << " tokens is too long");
    spec.window = static_cast<int>(std::max<std::size_t>(stream_length, 1));
  }
  return spec;
}

toy::ProgressFn progress_printer(const std::string& what, double every) {
  if (every <= 0) return {};
  auto clock = std::make_shared<toy::Stopwatch>();
  auto next = std::make_shared<double>(every);
  const bool in_place = ::isatty(STDERR_FILENO) == 1;  // a terminal: one line per policy, rewritten
  return [=](std::size_t done, std::size_t total, int cache_size, int cache_capacity) {
    const double seconds = clock->seconds();
    if (seconds < *next && done != total) return;
    *next = seconds + every;
    const double rate = static_cast<double>(done) / seconds;
    std::fprintf(stderr, "%s[%s] %zu/%zu tokens | %.0f tok/s | cache %d/%d | RSS %.1f MiB | ETA %.1f min%s",
                 in_place ? "\r" : "", what.c_str(), done, total, rate, cache_size, cache_capacity,
                 toy::mib(toy::resident_bytes()), static_cast<double>(total - done) / rate / 60.0,
                 !in_place || done == total ? "\n" : "\033[K");
  };
}

/// --suggest-mix: ranks the KV heads by their far weight (the mean over
/// their query heads), writes the mix and its control, prints both. Returns
/// ", <paths>" for the closing line.
std::string suggest_mix(const Options& o, const toy::AttentionMass& mass, const toy::ModelConfig& config) {
  const MixSuggestion mix = parse_mix_suggestion(*o.suggest_mix, config.num_layers * config.num_kv_heads);
  const std::vector<double> far = mass.kv_head_far_mass(config.num_kv_heads);
  const toy::HeadPolicies chosen = toy::choose_head_policies(far, mix.count, mix.far, mix.near);
  const toy::HeadPolicies control = toy::choose_head_policies(far, mix.count, mix.far, mix.near, true);
  std::string ranking;
  char line[128];
  for (int l = 0; l < config.num_layers; ++l) {
    for (int h = 0; h < config.num_kv_heads; ++h) {
      std::snprintf(line, sizeof line, "#   layer %d KV head %d: %.4f\n", l, h,
                    far[static_cast<std::size_t>(l * config.num_kv_heads + h)]);
      ranking += line;
    }
  }
  std::snprintf(line, sizeof line, "%.0f", static_cast<double>(toy::total_slots(chosen)));
  const std::string header = std::string("# sinkkv-eval --suggest-mix ") + *o.suggest_mix + ": " + line +
                             " token slots; far weight (>= " + std::to_string(mass.far_distance()) +
                             " tokens back, sinks excluded) per KV head, queries [" + std::to_string(o.mass_begin) +
                             ", " + std::to_string(o.mass_end) + ") of " + o.checkpoint + ":\n" + ranking;
  const auto write = [&](const std::string& path, const std::string& what, const toy::HeadPolicies& policies) {
    const std::string text = toy::format_head_policies(policies, config.num_layers, config.num_kv_heads);
    std::ofstream out(path);
    TOY_CHECK(out, "cannot create '" << path << "'");
    out << header << "# " << what << "\n" << text;
    out.close();
    TOY_CHECK(out, "writing '" << path << "' failed");
    std::printf("\n%s (%s):\n%s", what.c_str(), path.c_str(), text.c_str());
  };
  const std::string chosen_path = o.out_dir + "/head_policies.txt";
  const std::string control_path = o.out_dir + "/head_policies_control.txt";
  write(chosen_path,
        "the " + std::to_string(mix.count) + " KV heads with the most far weight keep " + toy::policy_text(mix.far) +
            ", the others " + toy::policy_text(mix.near),
        chosen);
  write(control_path,
        "control: the " + std::to_string(mix.count) + " KV heads with the least far weight keep " +
            toy::policy_text(mix.far) + ", the others " + toy::policy_text(mix.near),
        control);
  return ", " + chosen_path + ", " + control_path;
}

int run(Options o) {
  const toy::ModelWeights weights = toy::load_checkpoint(o.checkpoint);
  const toy::ModelConfig& config = weights.config;
  std::cerr << "model: " << o.checkpoint << " (" << config << ")\n";

  // The mixed policy and the uniform ones at equal memory: L = its token slots per KV head.
  toy::HeadPolicies head_policies;
  if (o.head_policies) {
    head_policies = toy::parse_head_policies(*o.head_policies, config.num_layers, config.num_kv_heads);
    const std::int64_t slots = toy::total_slots(head_policies);
    const std::int64_t heads = static_cast<std::int64_t>(head_policies.size());
    if (!o.cache_size_given) {
      TOY_CHECK(slots % heads == 0, "--head-policies keeps " << slots << " token slots over " << heads
                                                             << " KV heads, not a whole number per head; give "
                                                             << "--cache-size L to compare at unequal memory");
      o.cache_size = static_cast<int>(slots / heads);
    }
    std::cerr << "mixed: " << toy::head_policy_summary(head_policies) << " per KV head = " << slots << " token slots";
    if (slots == heads * o.cache_size) {
      std::cerr << " = " << heads << " KV heads x L (equal memory)\n";
    } else {
      std::cerr << "; the uniform policies keep " << heads << " x L = " << heads * o.cache_size
                << " (unequal memory)\n";
    }
  }
  TOY_CHECK(o.sinks < o.cache_size, "--sinks " << o.sinks << " leaves no window in --cache-size " << o.cache_size);
  std::vector<std::int32_t> tokens;
  if (o.generate > 0) {
    TOY_CHECK(o.start_token < config.vocab_size,
              "--start-token " << o.start_token << " outside the vocabulary [0, " << config.vocab_size << ")");
    toy::Sampler sampler(config.vocab_size, o.temperature, o.top_p, o.seed);
    toy::PolicySpec spec = spec_for(toy::Policy::kSink, o, 0, {});
    tokens = toy::generate_stream(weights, spec, static_cast<std::size_t>(o.generate), o.start_token, sampler,
                                  progress_printer("generate", o.progress_every));
    if (!o.save_tokens.empty()) toy::write_tokens(tokens, o.save_tokens, o.format);
  } else {
    tokens = toy::read_tokens(o.tokens_path, o.format, config.vocab_size);
    if (o.first_tokens > 0 && tokens.size() > static_cast<std::size_t>(o.first_tokens)) {
      tokens.resize(static_cast<std::size_t>(o.first_tokens));
    }
    TOY_CHECK(tokens.size() >= 2, o.tokens_path << " holds " << tokens.size() << " tokens; at least 2 are needed");
  }
  const std::size_t predictions = tokens.size() - 1;
  std::cerr << "stream: " << tokens.size() << " tokens; cache size L = " << o.cache_size << " (" << o.sinks
            << (o.sinks == 1 ? " sink" : " sinks") << " in the sink policies)\n";
  if (config.seq_len < o.cache_size) {
    std::cerr << "note: the model was trained on " << config.seq_len << "-token sequences, less than L\n";
  }

  ::mkdir(o.out_dir.c_str(), 0777);  // may exist; failures surface when writing
  const bool mass_sinks = o.mass_policy == toy::Policy::kSink || o.mass_policy == toy::Policy::kSinkStream;
  toy::AttentionMass mass(config.num_layers, config.num_heads, mass_sinks ? o.sinks : 0, o.mass_far);
  const bool want_mass = o.mass_begin >= 0;
  bool mass_recorded = false;
  std::vector<toy::PolicyRun> runs;
  for (toy::Policy policy : o.policies) {
    const toy::PolicySpec spec = spec_for(policy, o, tokens.size(), head_policies);
    // Recompute costs O(L^2) per token: --limit N scores its first N predictions, --recompute-range A-B
    // positions A..B only.
    std::size_t first = 0, limit = SIZE_MAX;
    if (policy == toy::Policy::kRecompute && o.limit > 0) limit = static_cast<std::size_t>(o.limit);
    if (policy == toy::Policy::kRecompute && o.recompute_range) {
      first = o.recompute_range->begin();
      limit = o.recompute_range->end() - first;
      TOY_CHECK(first < predictions, "--recompute-range " << o.recompute_range->label() << " starts past the "
                                                          << predictions << " predictions of the stream");
    }
    const bool probe = want_mass && policy == o.mass_policy;
    TOY_CHECK(!probe || first == 0, "--mass-policy recompute needs --recompute-range to start at 1");
    const toy::Stopwatch clock;
    const double cpu_start = toy::process_cpu_seconds();
    toy::PolicyRun run;
    run.name = toy::policy_name(policy);
    run.spec = spec;
    run.first = first;
    if (policy == toy::Policy::kRecompute && !probe) {
      run.nll = toy::recompute_nll(weights, spec.window, tokens, first, first + std::min(limit, predictions), o.threads,
                                   progress_printer(run.name, o.progress_every), o.prefill_chunk);
    } else {
      run.nll = toy::stream_nll(weights, spec, tokens, limit, progress_printer(run.name, o.progress_every),
                                probe ? &mass : nullptr, static_cast<std::size_t>(std::max(0LL, o.mass_begin)),
                                static_cast<std::size_t>(std::max(0LL, o.mass_end)), o.prefill_chunk);
    }
    run.seconds = clock.seconds();
    run.cpu_seconds = toy::process_cpu_seconds() - cpu_start;
    mass_recorded = mass_recorded || probe;
    runs.push_back(std::move(run));
  }

  const std::string nll_csv = o.out_dir + "/nll.csv", chunks_csv = o.out_dir + "/chunks.csv",
                    svg = o.out_dir + "/plot.svg";
  toy::write_nll_csv(nll_csv, tokens, runs);
  const std::string table = toy::chunk_table(runs, predictions, static_cast<std::size_t>(o.chunk), chunks_csv);
  toy::write_svg_plot(svg, runs, static_cast<std::size_t>(o.smooth), o.cache_size,
                      "moving-average NLL, L = " + std::to_string(o.cache_size) + ", " + std::to_string(o.sinks) +
                          " sinks: " + o.checkpoint);

  if (o.ranges.empty()) {
    std::printf("%-14s %10s %12s %10s %10s %9s\n", "policy", "tokens", "perplexity", "mean NLL", "seconds", "tok/s");
    for (const toy::PolicyRun& run : runs) {
      const double ppl = toy::perplexity(run.nll, 0, run.nll.size());
      std::printf("%-14s %10zu %12.4f %10.4f %10.2f %9.0f\n", run.name.c_str(), run.nll.size(), ppl, std::log(ppl),
                  run.seconds, static_cast<double>(run.nll.size()) / run.seconds);
    }
    std::printf("\nperplexity per chunk of %lld predictions (position = index of the predicted token):\n%s",
                o.chunk, table.c_str());
  } else {
    std::printf("%s", toy::range_table(runs, o.ranges).c_str());
    const std::vector<std::string> reading = toy::range_reading(runs, o.ranges, config.seq_len);
    if (!reading.empty()) std::printf("\n");
    for (const std::string& line : reading) std::printf("- %s\n", toy::word_wrap(line, 100, "  ").c_str());
  }
  std::string suggested;
  if (want_mass) {
    if (mass_recorded) {
      const std::string mass_csv = o.out_dir + "/attention_mass.csv";
      std::printf("\nattention mass (%s policy, queries at stream positions [%lld, %lld)):\n%s",
                  toy::policy_name(o.mass_policy), o.mass_begin, std::min<long long>(o.mass_end, predictions),
                  mass.report(mass_csv).c_str());
      if (o.suggest_mix) suggested = suggest_mix(o, mass, config);
    } else {
      std::fprintf(stderr, "note: --mass-policy %s is not among --policies; no attention-mass report\n",
                   toy::policy_name(o.mass_policy));
    }
  }
  std::printf("\nwrote %s, %s, %s%s%s\n", nll_csv.c_str(), chunks_csv.c_str(), svg.c_str(),
              want_mass && mass_recorded ? (", " + o.out_dir + "/attention_mass.csv").c_str() : "", suggested.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::cerr << "sinkkv-eval: error: " << e.what() << "\n";
    return 1;
  }
}
