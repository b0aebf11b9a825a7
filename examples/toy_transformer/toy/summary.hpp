// toy: the short report of a streaming evaluation — perplexity over a few
// ranges of stream positions, one row per policy, with the CPU time each
// policy spends per token, and a few sentences saying what the numbers show,
// each computed from them (sinkkv-eval --ranges, scripts/demo.sh).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cli.hpp"
#include "error.hpp"
#include "eval.hpp"
#include "head_policy.hpp"
#include "model.hpp"

namespace toy {

/// Stream positions [first, last] of predicted tokens, 1-based as in the
/// chunk table: position p is the stream's token p, predicted from tokens
/// 0..p-1 (prediction index p - 1).
struct PositionRange {
  std::size_t first = 1;
  std::size_t last = 1;

  std::size_t begin() const { return first - 1; }  // prediction indices [begin, end)
  std::size_t end() const { return last; }
  std::string label() const { return std::to_string(first) + "-" + std::to_string(last); }
};

/// "1-256,257-8192" -> ranges. Throws toy::Error naming `flag` and the bad item.
inline std::vector<PositionRange> parse_position_ranges(const std::string& flag, const std::string& list) {
  std::vector<PositionRange> ranges;
  std::size_t begin = 0;
  while (begin <= list.size()) {
    const std::size_t comma = std::min(list.find(',', begin), list.size());
    const std::string item = list.substr(begin, comma - begin);
    const std::size_t dash = item.find('-');
    TOY_CHECK(dash != std::string::npos && dash > 0, flag << ": '" << item << "' is not FIRST-LAST");
    PositionRange range;
    range.first = static_cast<std::size_t>(parse_integer(flag + " first", item.substr(0, dash), 1, 1LL << 40));
    range.last = static_cast<std::size_t>(
        parse_integer(flag + " last", item.substr(dash + 1), static_cast<long long>(range.first), 1LL << 40));
    ranges.push_back(range);
    begin = comma + 1;
  }
  return ranges;
}

/// What a policy keeps, in a few words: "all 8193", "1 + last 255", ...
inline std::string cache_description(const PolicySpec& spec) {
  const std::string window = "last " + std::to_string(spec.window);
  const std::string with_sinks = std::to_string(spec.num_sinks) + " + " + window;
  switch (spec.policy) {
    case Policy::kDense:
      return "all " + std::to_string(spec.window);
    case Policy::kWindow:
      return window;
    case Policy::kSink:
      return with_sinks;
    case Policy::kRecompute:
      return window + ", re-run";
    case Policy::kWindowStream:
      return window + ", stream pos.";
    case Policy::kSinkStream:
      return with_sinks + ", stream pos.";
    case Policy::kMixed: return head_policy_summary(spec.head_policies);
  }
  return "?";
}

/// Perplexity of `run` over `range`, NaN unless it scored every prediction there.
inline double range_perplexity(const PolicyRun& run, const PositionRange& range) {
  if (run.first > range.begin() || run.end() < range.end()) return std::numeric_limits<double>::quiet_NaN();
  return run.perplexity_within(range.begin(), range.end());
}

/// CPU milliseconds per scored token, all threads counted.
inline double cpu_ms_per_token(const PolicyRun& run) {
  return run.nll.empty() ? std::numeric_limits<double>::quiet_NaN()
                         : 1e3 * run.cpu_seconds / static_cast<double>(run.nll.size());
}

/// One row per run: policy, what its cache keeps, perplexity over each range
/// ("-" where the run did not score all of it), CPU ms per token.
inline std::string range_table(const std::vector<PolicyRun>& runs, const std::vector<PositionRange>& ranges) {
  std::size_t name_width = 6, cache_width = 5;
  for (const PolicyRun& run : runs) {
    name_width = std::max(name_width, run.name.size());
    cache_width = std::max(cache_width, cache_description(run.spec).size());
  }
  std::vector<int> widths;
  for (const PositionRange& range : ranges) widths.push_back(std::max(9, static_cast<int>(range.label().size())));
  int ranges_width = 0;
  for (int w : widths) ranges_width += 2 + w;

  char cell[128];
  std::string text;
  const auto pad = [](const std::string& s, std::size_t width) { return s + std::string(width - s.size(), ' '); };
  text += std::string(name_width + cache_width + 2, ' ');
  const std::string heading = "perplexity at stream positions";
  std::snprintf(cell, sizeof cell, "%*s%12s\n", ranges_width, heading.c_str(), "CPU ms");
  text += cell;
  text += pad("policy", name_width) + "  " + pad("cache", cache_width);
  for (std::size_t c = 0; c < ranges.size(); ++c) {
    std::snprintf(cell, sizeof cell, "  %*s", widths[c], ranges[c].label().c_str());
    text += cell;
  }
  text += "   per token\n";
  for (const PolicyRun& run : runs) {
    text += pad(run.name, name_width) + "  " + pad(cache_description(run.spec), cache_width);
    for (std::size_t c = 0; c < ranges.size(); ++c) {
      const double ppl = range_perplexity(run, ranges[c]);
      if (std::isnan(ppl)) {
        std::snprintf(cell, sizeof cell, "  %*s", widths[c], "-");
      } else {
        std::snprintf(cell, sizeof cell, "  %*.2f", widths[c], ppl);
      }
      text += cell;
    }
    std::snprintf(cell, sizeof cell, "  %10.2f\n", cpu_ms_per_token(run));
    text += cell;
  }
  return text;
}

/// What the table shows, in sentences computed from it: dense against sink
/// past the training length, window against sink, recompute against sink
/// (quality and cost). A sentence is left out when its runs or a range they
/// both scored are missing.
inline std::vector<std::string> range_reading(const std::vector<PolicyRun>& runs,
                                              const std::vector<PositionRange>& ranges, int training_length) {
  const auto find = [&](Policy policy) -> const PolicyRun* {
    for (const PolicyRun& run : runs) {
      if (run.spec.policy == policy) return &run;
    }
    return nullptr;
  };
  // The widest range scored by both, preferring ranges past the training length.
  const auto shared_range = [&](const PolicyRun& a, const PolicyRun& b, bool past_only) -> const PositionRange* {
    const PositionRange* best = nullptr;
    for (const PositionRange& range : ranges) {
      const bool past = range.first > static_cast<std::size_t>(training_length);
      if ((past_only && !past) || std::isnan(range_perplexity(a, range)) || std::isnan(range_perplexity(b, range))) {
        continue;
      }
      const bool best_past = best != nullptr && best->first > static_cast<std::size_t>(training_length);
      if (best == nullptr || (past && !best_past) ||
          (past == best_past && range.last - range.first > best->last - best->first)) {
        best = &range;
      }
    }
    return best;
  };
  std::vector<std::string> lines;
  char line[512];
  const PolicyRun* sink = find(Policy::kSink);
  if (sink == nullptr) return lines;

  const PolicyRun* dense = find(Policy::kDense);
  const PositionRange* past = dense != nullptr ? shared_range(*dense, *sink, true) : nullptr;
  if (past != nullptr) {
    const double d = range_perplexity(*dense, *past), s = range_perplexity(*sink, *past);
    if (d > 1.02 * s) {
      std::snprintf(line, sizeof line,
                    "Past the model's %d-token training length (positions %s), dense attention's perplexity is "
                    "%.2f, %.2fx the sink cache's %.2f: it attends across distances it never saw in training, "
                    "over a cache grown to %d tokens, while the sink cache holds %d.",
                    training_length, past->label().c_str(), d, d / s, s, static_cast<int>(dense->end()),
                    sink->spec.capacity());
    } else {
      std::snprintf(line, sizeof line,
                    "Past the model's %d-token training length (positions %s), dense attention's perplexity is "
                    "%.2f, no worse than the sink cache's %.2f: this model extrapolates.",
                    training_length, past->label().c_str(), d, s);
    }
    lines.push_back(line);
  }

  const PolicyRun* window = find(Policy::kWindow);
  const PositionRange* shared = window != nullptr ? shared_range(*window, *sink, false) : nullptr;
  if (shared != nullptr) {
    const double w = range_perplexity(*window, *shared), s = range_perplexity(*sink, *shared);
    const double change = 100.0 * (w / s - 1.0);
    if (std::abs(change) < 2.0) {
      std::snprintf(line, sizeof line,
                    "Window attention (no sinks) scores %.2f on positions %s, within %.1f%% of sink's %.2f: for "
                    "this model evicting the first tokens costs almost nothing, so window attention does not "
                    "collapse.",
                    w, shared->label().c_str(), std::abs(change), s);
    } else if (change > 0) {
      std::snprintf(line, sizeof line,
                    "Window attention (no sinks) scores %.2f on positions %s, %.0f%% worse than sink's %.2f: this "
                    "model needs its first tokens.",
                    w, shared->label().c_str(), change, s);
    } else {
      std::snprintf(line, sizeof line,
                    "Window attention (no sinks) scores %.2f on positions %s, %.1f%% better than sink's %.2f.", w,
                    shared->label().c_str(), -change, s);
    }
    lines.push_back(line);
  }

  const PolicyRun* mixed = find(Policy::kMixed);
  const PositionRange* mixed_range = mixed != nullptr ? shared_range(*mixed, *sink, false) : nullptr;
  if (mixed_range != nullptr) {
    const double m = range_perplexity(*mixed, *mixed_range), s = range_perplexity(*sink, *mixed_range);
    const double mixed_slots = static_cast<double>(total_slots(mixed->spec.head_policies));
    const double sink_slots = static_cast<double>(sink->spec.capacity()) * mixed->spec.head_policies.size();
    char memory[96];
    if (mixed_slots == sink_slots) {
      std::snprintf(memory, sizeof memory, "in the same memory");
    } else {
      std::snprintf(memory, sizeof memory, "with %.0f%% %s memory", 100.0 * std::abs(mixed_slots / sink_slots - 1.0),
                    mixed_slots > sink_slots ? "more" : "less");
    }
    std::snprintf(line, sizeof line,
                  "The mixed policy (%s per KV head) scores %.2f on positions %s against the uniform sink "
                  "cache's %.2f (%s on every head), %s: %s.",
                  head_policy_summary(mixed->spec.head_policies).c_str(), m, mixed_range->label().c_str(), s,
                  cache_description(sink->spec).c_str(), memory, m < s ? "better" : (m > s ? "worse" : "the same"));
    lines.push_back(line);
  }

  const PolicyRun* recompute = find(Policy::kRecompute);
  const PositionRange* both = recompute != nullptr ? shared_range(*recompute, *sink, false) : nullptr;
  if (both != nullptr) {
    const double r = range_perplexity(*recompute, *both), s = range_perplexity(*sink, *both);
    std::snprintf(line, sizeof line,
                  "Recompute (the last %d tokens re-run for every token) scores %.2f on positions %s against "
                  "sink's %.2f, at %.0fx sink's CPU time per token.",
                  recompute->spec.window, r, both->label().c_str(), s,
                  cpu_ms_per_token(*recompute) / cpu_ms_per_token(*sink));
    lines.push_back(line);
  }
  return lines;
}

/// `text` broken at spaces into lines of at most `width` characters (a longer
/// word keeps its own line), each but the first starting with `indent`.
inline std::string word_wrap(const std::string& text, std::size_t width, const std::string& indent) {
  std::string out, line;
  std::size_t begin = 0;
  while (begin < text.size()) {
    std::size_t end = text.find(' ', begin);
    if (end == std::string::npos) end = text.size();
    const std::string word = text.substr(begin, end - begin);
    if (!line.empty() && line != indent && line.size() + 1 + word.size() > width) {
      out += line + "\n";
      line = indent;
    }
    line += (line.empty() || line == indent ? "" : " ") + word;
    begin = end + 1;
  }
  return out + line;
}

}  // namespace toy
