// toy: streaming evaluation — per-token negative log-likelihood of a token
// stream under a cache policy, perplexity tables, CSV and SVG output, and
// the attention-mass report.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iomanip>
#include <limits>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint.hpp"
#include "error.hpp"
#include "model.hpp"

namespace toy {

/// -log softmax(logits)[target], in double.
inline double negative_log_likelihood(const float* logits, int vocab_size, int target) {
  const float max_logit = *std::max_element(logits, logits + vocab_size);
  double sum = 0;
  for (int i = 0; i < vocab_size; ++i) sum += std::exp(static_cast<double>(logits[i]) - max_logit);
  return std::log(sum) + max_logit - static_cast<double>(logits[target]);
}

/// Called every so often with (predictions done, predictions total, cache
/// size, cache capacity).
using ProgressFn = std::function<void(std::size_t, std::size_t, int, int)>;

/// Per-token NLL of `tokens` under a policy: element i is -log p(tokens[i+1]
/// | tokens[0..i]). At most `limit` predictions (the first ones). `probe`,
/// if given, sees the attention of query stream positions [probe_begin,
/// probe_end). With `chunk` > 1, policies that allow it (all but recompute)
/// score up to `chunk` tokens per forward pass (Decoder::step_chunk); chunks
/// are cut at probe_begin and probe_end. The NLLs equal chunk 1's up to float
/// rounding (tests: within 2e-5 nats on the committed models).
inline std::vector<double> stream_nll(const ModelWeights& weights, const PolicySpec& spec,
                                      const std::vector<std::int32_t>& tokens, std::size_t limit = SIZE_MAX,
                                      const ProgressFn& progress = {}, AttentionProbe* probe = nullptr,
                                      std::size_t probe_begin = 0, std::size_t probe_end = 0, int chunk = 1) {
  const std::size_t total = tokens.size() < 2 ? 0 : std::min(tokens.size() - 1, limit);
  if (spec.policy == Policy::kRecompute) chunk = 1;  // each prediction is its own pass (recompute_nll)
  chunk = static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(static_cast<std::size_t>(chunk), total)));
  Decoder decoder(weights, spec, chunk);
  std::vector<double> nll(total);
  const int vocab = weights.config.vocab_size;
  std::size_t reported = 0;
  for (std::size_t i = 0; i < total;) {
    const bool probed = probe != nullptr && i >= probe_begin && i < probe_end;
    decoder.state().set_probe(probed ? probe : nullptr);
    std::size_t count = 1;
    const float* logits = nullptr;
    if (chunk == 1) {
      logits = decoder.step(tokens[i]);
    } else {
      std::size_t end = std::min(total, i + static_cast<std::size_t>(chunk));
      if (probe != nullptr && i < probe_begin) end = std::min(end, probe_begin);  // a chunk is probed whole or not
      if (probe != nullptr && i < probe_end) end = std::min(end, probe_end);
      count = end - i;
      logits = decoder.step_chunk(tokens.data() + i, static_cast<int>(count));
    }
    for (std::size_t j = 0; j < count; ++j) {
      nll[i + j] = negative_log_likelihood(logits + j * static_cast<std::size_t>(vocab), vocab, tokens[i + j + 1]);
    }
    i += count;
    if (progress && (i / 64 > reported / 64 || i == total)) {
      reported = i;
      progress(i, total, decoder.cache_size(), decoder.cache_capacity());
    }
  }
  return nll;
}

/// The recompute policy's per-token NLL (as stream_nll with
/// Policy::kRecompute) for predictions [begin, end) only (end is clamped to
/// the stream): element j is the NLL of prediction begin + j. Computed by
/// `threads` threads: every prediction is a fresh pass over its own last
/// `window` tokens, so predictions are independent and a range late in the
/// stream costs no more than one at its start. Each thread owns a model and
/// a cache and takes blocks of predictions from a shared counter; the
/// arithmetic per token is the same as the sequential Decoder's, so the
/// result is identical for any thread count. With `chunk` > 1 each pass runs
/// its tokens in chunks of up to `chunk` (one chunked prefill of the window
/// when chunk >= window), equal to chunk 1 up to float rounding. `progress`
/// is called from the calling thread only.
inline std::vector<double> recompute_nll(const ModelWeights& weights, int window,
                                         const std::vector<std::int32_t>& tokens, std::size_t begin, std::size_t end,
                                         int threads, const ProgressFn& progress = {}, int chunk = 1) {
  TOY_CHECK(threads >= 1, "threads " << threads << " must be >= 1");
  TOY_CHECK(window >= 1, "recompute: window " << window << " must be >= 1");
  end = std::min(end, tokens.size() < 2 ? 0 : tokens.size() - 1);
  const std::size_t total = end > begin ? end - begin : 0;
  std::vector<double> nll(total);
  std::atomic<std::size_t> done{0};
  std::atomic<bool> failed{false};
  std::string failure;
  std::mutex failure_mutex;
  const PolicySpec spec{Policy::kRecompute, 0, window};
  std::vector<std::unique_ptr<Decoder>> decoders;  // one per thread
  for (int t = 0; t < threads; ++t) decoders.push_back(std::make_unique<Decoder>(weights, spec, chunk));
  std::atomic<std::size_t> next{0};  // predictions handed out in small blocks: balances short and long contexts
  constexpr std::size_t kBlock = 8;
  const auto work = [&](int t) {
    try {
      Decoder& decoder = *decoders[static_cast<std::size_t>(t)];
      for (std::size_t block = next.fetch_add(kBlock); block < total && !failed; block = next.fetch_add(kBlock)) {
        for (std::size_t j = block; j < std::min(block + kBlock, total); ++j) {
          // What Decoder::step does under recompute: the last `window` tokens, oldest first.
          const std::size_t i = begin + j;  // the prediction
          const std::size_t first =
              i + 1 > static_cast<std::size_t>(window) ? i + 1 - static_cast<std::size_t>(window) : 0;
          const float* logits = decoder.recompute(tokens.data() + first, i + 1 - first);
          nll[j] = negative_log_likelihood(logits, weights.config.vocab_size, tokens[i + 1]);
          ++done;
        }
      }
    } catch (const std::exception& e) {
      const std::lock_guard<std::mutex> lock(failure_mutex);
      failure = e.what();
      failed = true;
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
  std::size_t reported = 0;
  if (progress) {  // the calling thread only reports
    pool.emplace_back(work, 0);
    while (done < total && !failed) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      reported = done;
      progress(reported, total, window, window);
    }
  } else {
    work(0);
  }
  for (std::thread& thread : pool) thread.join();
  if (failed) throw Error(failure);
  if (progress && total > 0 && reported < total) progress(total, total, window, window);  // once at the end
  return nll;
}

/// Samples a stream of `count` tokens from the model itself, starting with
/// `start_token`, through a sink cache (spec).
template <class Sampler>
std::vector<std::int32_t> generate_stream(const ModelWeights& weights, const PolicySpec& spec, std::size_t count,
                                          int start_token, Sampler& sampler, const ProgressFn& progress = {}) {
  Decoder decoder(weights, spec);
  std::vector<std::int32_t> tokens;
  tokens.reserve(count);
  if (count == 0) return tokens;
  tokens.push_back(start_token);
  while (tokens.size() < count) {
    tokens.push_back(sampler.sample(decoder.step(tokens.back())));
    if (progress && tokens.size() % 64 == 0) {
      progress(tokens.size(), count, decoder.cache_size(), decoder.cache_capacity());
    }
  }
  return tokens;
}

/// Perplexity exp(mean NLL) over [begin, end) of `nll`, NaN when empty.
inline double perplexity(const std::vector<double>& nll, std::size_t begin, std::size_t end) {
  end = std::min(end, nll.size());
  if (begin >= end) return std::numeric_limits<double>::quiet_NaN();
  double sum = 0;
  for (std::size_t i = begin; i < end; ++i) sum += nll[i];
  return std::exp(sum / static_cast<double>(end - begin));
}

/// Trailing moving average over `width` values (fewer at the start).
inline std::vector<double> moving_average(const std::vector<double>& values, std::size_t width) {
  std::vector<double> out(values.size());
  double sum = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    sum += values[i];
    if (i >= width) sum -= values[i - width];
    out[i] = sum / static_cast<double>(std::min(i + 1, width));
  }
  return out;
}

/// One policy's result.
struct PolicyRun {
  std::string name;
  PolicySpec spec;
  std::vector<double> nll;  // [scored predictions]: nll[j] is prediction first + j (a range, for recompute)
  std::size_t first = 0;    // the first prediction scored
  double seconds = 0;       // wall clock
  double cpu_seconds = 0;   // CPU time of the process, all threads

  /// One past the last prediction scored.
  std::size_t end() const { return first + nll.size(); }
  /// Perplexity over the predictions of [begin, end_index) that were scored; NaN if none.
  double perplexity_within(std::size_t begin, std::size_t end_index) const {
    begin = std::max(begin, first);
    end_index = std::min(end_index, end());
    if (begin >= end_index) return std::numeric_limits<double>::quiet_NaN();
    return perplexity(nll, begin - first, end_index - first);
  }
};

/// nll.csv: prediction index i, the predicted token (stream position i+1),
/// one NLL column per policy (empty where a policy stopped early).
inline void write_nll_csv(const std::string& path, const std::vector<std::int32_t>& tokens,
                          const std::vector<PolicyRun>& runs) {
  std::ofstream out(path);
  TOY_CHECK(out, "cannot create '" << path << "'");
  out << "position,token";
  for (const PolicyRun& run : runs) out << ',' << run.name;
  out << '\n';
  char buffer[32];
  for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
    out << i + 1 << ',' << tokens[i + 1];
    for (const PolicyRun& run : runs) {
      out << ',';
      if (i >= run.first && i < run.end()) {
        std::snprintf(buffer, sizeof buffer, "%.6f", run.nll[i - run.first]);
        out << buffer;
      }
    }
    out << '\n';
  }
  out.close();
  TOY_CHECK(out, "writing '" << path << "' failed");
}

/// Perplexity per chunk of `chunk` predictions, as rows of text; also CSV.
inline std::string chunk_table(const std::vector<PolicyRun>& runs, std::size_t predictions, std::size_t chunk,
                               const std::string& csv_path = "") {
  std::ostringstream text;
  std::ofstream csv;
  if (!csv_path.empty()) {
    csv.open(csv_path);
    TOY_CHECK(csv, "cannot create '" << csv_path << "'");
    csv << "first,last";
    for (const PolicyRun& run : runs) csv << ',' << run.name;
    csv << '\n';
  }
  char cell[64];
  std::snprintf(cell, sizeof cell, "%-15s", "positions");
  text << cell;
  for (const PolicyRun& run : runs) {
    std::snprintf(cell, sizeof cell, " %13s", run.name.c_str());
    text << cell;
  }
  text << '\n';
  for (std::size_t begin = 0; begin < predictions; begin += chunk) {
    const std::size_t end = std::min(begin + chunk, predictions);
    std::snprintf(cell, sizeof cell, "%6zu-%-8zu", begin + 1, end);
    text << cell;
    if (csv.is_open()) csv << begin + 1 << ',' << end;
    for (const PolicyRun& run : runs) {
      const double ppl = run.perplexity_within(begin, end);
      std::snprintf(cell, sizeof cell, " %13.3f", ppl);
      text << (std::isnan(ppl) ? std::string(14 - 4, ' ') + " n/a" : std::string(cell));
      if (csv.is_open()) {
        csv << ',';
        if (!std::isnan(ppl)) {
          std::snprintf(cell, sizeof cell, "%.6f", ppl);
          csv << cell;
        }
      }
    }
    text << '\n';
    if (csv.is_open()) csv << '\n';
  }
  return text.str();
}

/// `text` with XML's special characters escaped.
inline std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

/// An SVG line chart of moving-average NLL against stream position, one
/// polyline per policy, written by hand (no plotting dependency).
inline void write_svg_plot(const std::string& path, const std::vector<PolicyRun>& runs, std::size_t smooth,
                           int cache_size, const std::string& title) {
  constexpr double kWidth = 960, kHeight = 540, kLeft = 70, kRight = 170, kTop = 40, kBottom = 60;
  static const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
                                        "#e377c2", "#7f7f7f"};
  std::vector<std::vector<double>> curves;
  double y_min = std::numeric_limits<double>::infinity(), y_max = -y_min;
  std::size_t x_max = 1;
  for (const PolicyRun& run : runs) {
    curves.push_back(moving_average(run.nll, smooth));
    for (double y : curves.back()) {
      y_min = std::min(y_min, y);
      y_max = std::max(y_max, y);
    }
    x_max = std::max(x_max, run.end());
  }
  if (!(y_min <= y_max)) y_min = 0, y_max = 1;
  if (y_max - y_min < 1e-9) y_max = y_min + 1;
  const double pad = 0.05 * (y_max - y_min);
  y_min = std::max(0.0, y_min - pad);
  y_max += pad;
  const double plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  const auto px = [&](double x) { return kLeft + plot_w * x / static_cast<double>(x_max); };
  const auto py = [&](double y) { return kTop + plot_h * (1.0 - (y - y_min) / (y_max - y_min)); };

  std::ofstream out(path);
  TOY_CHECK(out, "cannot create '" << path << "'");
  char buf[256];
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kLeft << "\" y=\"24\" font-size=\"15\">" << xml_escape(title) << "</text>\n";
  std::snprintf(buf, sizeof buf, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"black\"/>\n",
                kLeft, kTop, plot_w, plot_h);
  out << buf;
  for (int i = 0; i <= 5; ++i) {  // ticks
    const double y = y_min + (y_max - y_min) * i / 5.0;
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n",
                  kLeft, kLeft + plot_w, py(y), py(y), kLeft - 6, py(y) + 4, y);
    out << buf;
    const double x = static_cast<double>(x_max) * i / 5.0;
    std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", px(x),
                  kTop + plot_h + 18, x);
    out << buf;
  }
  if (cache_size > 0 && static_cast<std::size_t>(cache_size) < x_max) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#888\" stroke-dasharray=\"4 4\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" fill=\"#666\">L = %d</text>\n",
                  px(cache_size), px(cache_size), kTop, kTop + plot_h, px(cache_size) + 4, kTop + 14, cache_size);
    out << buf;
  }
  std::snprintf(buf, sizeof buf,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">stream position</text>\n"
                "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">"
                "NLL (nats), mean of last %zu tokens</text>\n",
                kLeft + plot_w / 2, kHeight - 18, kTop + plot_h / 2, smooth);
  out << buf;
  for (std::size_t r = 0; r < runs.size(); ++r) {
    const char* color = kColors[r % (sizeof kColors / sizeof kColors[0])];
    // At most ~2 points per pixel column: keeps big streams small.
    const std::size_t stride = std::max<std::size_t>(1, curves[r].size() / static_cast<std::size_t>(2 * plot_w));
    out << "<polyline class=\"policy\" data-policy=\"" << xml_escape(runs[r].name) << "\" fill=\"none\" stroke=\"" << color
        << "\" stroke-width=\"1.5\" points=\"";
    for (std::size_t i = 0; i < curves[r].size(); i += stride) {
      std::snprintf(buf, sizeof buf, "%.1f,%.1f ", px(static_cast<double>(runs[r].first + i + 1)), py(curves[r][i]));
      out << buf;
    }
    out << "\"/>\n";
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"3\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                  kLeft + plot_w + 12, kLeft + plot_w + 36, kTop + 10 + 20.0 * r, kTop + 10 + 20.0 * r, color,
                  kLeft + plot_w + 42, kTop + 14 + 20.0 * r, runs[r].name.c_str());
    out << buf;
  }
  out << "</svg>\n";
  out.close();
  TOY_CHECK(out, "writing '" << path << "' failed");
}

/// The attention-mass report: for the recorded queries, the mean softmax
/// weight each layer/head puts on cache positions 0..3, against the mean
/// weight of a cache position (1 / tokens attended). A head with attention
/// sinks puts far more than the average on position 0. Also how far each
/// head looks: its mean weight on tokens at least `far_distance` cache
/// positions behind the query, the first `num_sinks` positions (the watched
/// policy's sinks) left out; the per-head windows of a mixed policy can be
/// chosen from it (kv_head_far_mass, head_policy.hpp). Needs a uniform
/// policy (every kernel call holds all query heads of the layer).
class AttentionMass final : public AttentionProbe {
 public:
  static constexpr int kPositions = 4;

  AttentionMass(int num_layers, int num_heads, int num_sinks = 0, int far_distance = 32)
      : num_heads_(num_heads),
        num_sinks_(num_sinks),
        far_distance_(far_distance),
        mass_(static_cast<std::size_t>(num_layers) * static_cast<std::size_t>(num_heads) * kPositions, 0.0),
        far_(static_cast<std::size_t>(num_layers) * static_cast<std::size_t>(num_heads), 0.0),
        uniform_(static_cast<std::size_t>(num_layers), 0.0),
        queries_(static_cast<std::size_t>(num_layers), 0) {
    TOY_CHECK(num_sinks >= 0 && far_distance >= 1,
              "attention mass: sinks " << num_sinks << " and far distance " << far_distance);
  }

  /// Softmax weights recomputed in double from the kernel's arguments (the
  /// same scores the kernel sees). O(heads * tokens * head_dim); no allocation.
  void record(int layer, const sinkkv::AttentionArgs<float>& args) override {
    const int n = args.num_tokens();
    for (int q = 0; q < args.num_query_heads; ++q) {
      const int kv = args.kv_head_of(q);
      double max_score = -std::numeric_limits<double>::infinity();
      for_each_score(args, q, kv, [&](int, double s) { max_score = std::max(max_score, s); });
      double sum = 0;
      for_each_score(args, q, kv, [&](int, double s) { sum += std::exp(s - max_score); });
      const int query_position = args.num_tokens() - 1;
      double& far =
          far_[static_cast<std::size_t>(layer) * static_cast<std::size_t>(num_heads_) + static_cast<std::size_t>(q)];
      for_each_score(args, q, kv, [&](int position, double s) {
        const double weight = std::exp(s - max_score) / sum;
        if (position < kPositions) mass_[index(layer, q, position)] += weight;
        if (position >= num_sinks_ && query_position - position >= far_distance_) far += weight;
      });
    }
    uniform_[static_cast<std::size_t>(layer)] += 1.0 / n;
    ++queries_[static_cast<std::size_t>(layer)];
  }

  std::size_t queries(int layer) const { return queries_[static_cast<std::size_t>(layer)]; }
  /// Mean weight on cache position `position` (0..3).
  double mass(int layer, int head, int position) const {
    const std::size_t count = queries(layer);
    return count == 0 ? 0.0 : mass_[index(layer, head, position)] / static_cast<double>(count);
  }
  /// Mean weight on non-sink tokens at least far_distance() behind the query.
  double far_mass(int layer, int head) const {
    const std::size_t count = queries(layer);
    return count == 0 ? 0.0
                      : far_[static_cast<std::size_t>(layer) * static_cast<std::size_t>(num_heads_) +
                             static_cast<std::size_t>(head)] /
                            static_cast<double>(count);
  }
  int far_distance() const { return far_distance_; }
  /// far_mass per KV head, the mean over its query heads: [num_layers *
  /// num_kv_heads], layer-major (what choose_head_policies ranks).
  std::vector<double> kv_head_far_mass(int num_kv_heads) const {
    TOY_CHECK(num_kv_heads >= 1 && num_heads_ % num_kv_heads == 0,
              num_kv_heads << " KV heads do not divide " << num_heads_ << " heads");
    const int group = num_heads_ / num_kv_heads;
    const int num_layers = static_cast<int>(queries_.size());
    std::vector<double> scores(static_cast<std::size_t>(num_layers) * static_cast<std::size_t>(num_kv_heads), 0.0);
    for (int l = 0; l < num_layers; ++l) {
      for (int h = 0; h < num_heads_; ++h) {
        scores[static_cast<std::size_t>(l * num_kv_heads + h / group)] += far_mass(l, h) / group;
      }
    }
    return scores;
  }
  /// Mean weight of one cache position: mean over queries of 1 / tokens.
  double average_position(int layer) const {
    const std::size_t count = queries(layer);
    return count == 0 ? 0.0 : uniform_[static_cast<std::size_t>(layer)] / static_cast<double>(count);
  }

  /// A table (text) and, if a path is given, CSV.
  std::string report(const std::string& csv_path = "") const {
    std::ofstream csv;
    if (!csv_path.empty()) {
      csv.open(csv_path);
      TOY_CHECK(csv, "cannot create '" << csv_path << "'");
      csv << "layer,head,queries,pos0,pos1,pos2,pos3,pos0_3,average_position,pos0_over_average,far_distance,"
             "far_mass\n";
    }
    std::ostringstream text;
    char far_heading[32];
    std::snprintf(far_heading, sizeof far_heading, "far>=%d", far_distance_);
    text << "layer head    pos 0    pos 1    pos 2    pos 3   pos 0-3  average  pos0/avg " << std::setw(9)
         << far_heading << "\n";
    char line[256];
    const int num_layers = static_cast<int>(queries_.size());
    for (int l = 0; l < num_layers; ++l) {
      for (int h = 0; h < num_heads_; ++h) {
        double total = 0;
        for (int p = 0; p < kPositions; ++p) total += mass(l, h, p);
        const double avg = average_position(l);
        std::snprintf(line, sizeof line, "%5d %4d %8.4f %8.4f %8.4f %8.4f %9.4f %8.4f %9.1f %9.4f\n", l, h,
                      mass(l, h, 0), mass(l, h, 1), mass(l, h, 2), mass(l, h, 3), total, avg,
                      avg > 0 ? mass(l, h, 0) / avg : 0.0, far_mass(l, h));
        text << line;
        if (csv.is_open()) {
          std::snprintf(line, sizeof line, "%d,%d,%zu,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%d,%.6g\n", l, h, queries(l),
                        mass(l, h, 0), mass(l, h, 1), mass(l, h, 2), mass(l, h, 3), total, avg,
                        avg > 0 ? mass(l, h, 0) / avg : 0.0, far_distance_, far_mass(l, h));
          csv << line;
        }
      }
    }
    return text.str();
  }

 private:
  std::size_t index(int layer, int head, int position) const {
    return (static_cast<std::size_t>(layer) * static_cast<std::size_t>(num_heads_) + static_cast<std::size_t>(head)) *
               kPositions +
           static_cast<std::size_t>(position);
  }

  /// visit(cache position, score) for every cached token. A segment's token
  /// j sits at cache position (query position - query_distance + j), and the
  /// query is the newest token: position num_tokens - 1.
  template <class Visit>
  static void for_each_score(const sinkkv::AttentionArgs<float>& args, int q, int kv, Visit&& visit) {
    const int query_position = args.num_tokens() - 1;
    for (int s = 0; s < args.num_segments; ++s) {
      const sinkkv::KVSegment<float>& seg = args.segments[s];
      const float* query = seg.query + q * args.head_dim;
      for (int j = 0; j < seg.length; ++j) {
        const float* key = seg.keys + kv * seg.head_stride + j * seg.token_stride;
        double dot = 0;
        for (int d = 0; d < args.head_dim; ++d) dot += static_cast<double>(query[d]) * key[d];
        visit(query_position - seg.query_distance + j, static_cast<double>(args.scale) * dot);
      }
    }
  }

  int num_heads_;
  int num_sinks_;
  int far_distance_;
  std::vector<double> mass_;             // [num_layers, num_heads, 4] summed weights
  std::vector<double> far_;              // [num_layers, num_heads] summed weights at distance >= far_distance_
  std::vector<double> uniform_;          // [num_layers] summed 1 / tokens
  std::vector<std::size_t> queries_;     // [num_layers] queries recorded
};

}  // namespace toy
