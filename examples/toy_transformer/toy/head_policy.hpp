// toy: per-layer / per-KV-head cache policies from a small text format, and
// a suggested DuoAttention-style mix from the attention-distance report.
//
// The format: rules separated by ';' or new lines, '#' starts a comment.
// Each rule is `TARGET: SINKS+WINDOW`; later rules override earlier ones, and
// every KV head of every layer must end up with a policy.
//
//   all: 4+252                   every KV head of every layer
//   layers 0-3: 4+252            layers 0..3, all their KV heads
//   layer 5 heads 0,1: 0+4096    KV heads 0 and 1 of layer 5
//   heads 2: 1+63                KV head 2 of every layer
//   4+252                        (no target) the same as `all: 4+252`
//
// Lists are comma-separated numbers and ranges A-B; `layer`/`layers` and
// `head`/`heads` are synonyms. Heads are KV heads: their query heads follow
// them (grouped-query attention).
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <sinkkv/config.hpp>

#include "error.hpp"

namespace toy {

/// One policy per (layer, KV head), layer-major: [num_layers * num_kv_heads].
using HeadPolicies = std::vector<sinkkv::RetentionPolicy>;

namespace detail {

/// A cursor over one rule's text; every error names the rule.
class RuleReader {
 public:
  RuleReader(const std::string& text, const std::string& where) : text_(text), where_(where) {}

  void skip_spaces() {
    while (i_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[i_]))) ++i_;
  }
  bool at_end() {
    skip_spaces();
    return i_ >= text_.size();
  }
  bool peek_digit() {
    skip_spaces();
    return i_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[i_]));
  }
  bool take(char c) {
    skip_spaces();
    if (i_ < text_.size() && text_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  std::string word() {
    skip_spaces();
    const std::size_t begin = i_;
    while (i_ < text_.size() && std::isalpha(static_cast<unsigned char>(text_[i_]))) ++i_;
    return text_.substr(begin, i_ - begin);
  }
  int number(const char* what) {
    skip_spaces();
    const std::size_t begin = i_;
    while (i_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[i_]))) ++i_;
    TOY_CHECK(i_ > begin, where_ << ": expected " << what << " at '" << rest(begin) << "'");
    TOY_CHECK(i_ - begin <= 9, where_ << ": " << what << " " << text_.substr(begin, i_ - begin) << " is too large");
    return std::stoi(text_.substr(begin, i_ - begin));
  }
  /// "0,2,4-7" -> the numbers, each in [0, count).
  std::vector<int> list(const char* what, int count) {
    std::vector<int> items;
    do {
      const int first = number(what);
      int last = first;
      if (take('-')) last = number(what);
      TOY_CHECK(first <= last, where_ << ": " << what << " range " << first << "-" << last << " is empty");
      TOY_CHECK(last < count, where_ << ": " << what << " " << last << " outside [0, " << count << ")");
      for (int v = first; v <= last; ++v) items.push_back(v);
    } while (take(','));
    return items;
  }
  std::string rest(std::size_t from) const {
    return from >= text_.size() ? std::string("end of rule") : text_.substr(from);
  }
  std::string rest() const { return rest(i_); }
  const std::string& where() const { return where_; }

 private:
  const std::string& text_;
  const std::string& where_;
  std::size_t i_ = 0;
};

inline std::string trim(const std::string& s) {
  std::size_t begin = 0, end = s.size();
  while (begin < end && std::isspace(static_cast<unsigned char>(s[begin]))) ++begin;
  while (end > begin && std::isspace(static_cast<unsigned char>(s[end - 1]))) --end;
  return s.substr(begin, end - begin);
}

}  // namespace detail

/// Parses the format above for a model with `num_layers` layers of
/// `num_kv_heads` KV heads. Throws toy::Error naming the rule and the bad
/// part (unknown word, index out of range, a head left without a policy).
inline HeadPolicies parse_head_policies(const std::string& text, int num_layers, int num_kv_heads) {
  TOY_CHECK(num_layers >= 1 && num_kv_heads >= 1,
            "head policies for " << num_layers << " layers x " << num_kv_heads << " KV heads");
  const std::size_t heads = static_cast<std::size_t>(num_layers) * static_cast<std::size_t>(num_kv_heads);
  std::vector<int> covered(heads, 0);
  HeadPolicies policies(heads);
  // Rules: split at ';' and new lines, comments dropped.
  std::vector<std::string> rules;
  std::string current;
  bool comment = false;
  for (char c : text + "\n") {
    if (c == '\n' || c == ';') {
      if (c == '\n') comment = false;
      if (!detail::trim(current).empty()) rules.push_back(detail::trim(current));
      current.clear();
    } else if (c == '#') {
      comment = true;
    } else if (!comment) {
      current += c;
    }
  }
  TOY_CHECK(!rules.empty(), "head policies: no rule in '" << text << "' (e.g. 'all: 4+252; layer 0 heads 1: 0+1024')");
  for (std::size_t r = 0; r < rules.size(); ++r) {
    const std::string where = "head policies, rule " + std::to_string(r + 1) + " '" + rules[r] + "'";
    const std::size_t colon = rules[r].find(':');
    TOY_CHECK(colon == std::string::npos || rules[r].find(':', colon + 1) == std::string::npos,
              where << ": more than one ':' (separate rules with ';' or new lines)");
    const std::string target = colon == std::string::npos ? "all" : rules[r].substr(0, colon);
    const std::string policy_text = colon == std::string::npos ? rules[r] : rules[r].substr(colon + 1);

    std::vector<int> layers(static_cast<std::size_t>(num_layers)), kv_heads(static_cast<std::size_t>(num_kv_heads));
    std::iota(layers.begin(), layers.end(), 0);
    std::iota(kv_heads.begin(), kv_heads.end(), 0);
    detail::RuleReader t(target, where);
    std::string word = t.word();
    TOY_CHECK(!word.empty(), where << ": expected 'all', 'layer' or 'heads' before ':', found '" << t.rest() << "'");
    if (word == "all") {
      TOY_CHECK(t.at_end(), where << ": unexpected '" << t.rest() << "' after 'all'");
    } else {
      if (word == "layer" || word == "layers") {
        layers = t.list("layer", num_layers);
        word = t.word();
      }
      if (word == "head" || word == "heads") {
        kv_heads = t.list("KV head", num_kv_heads);
        word.clear();
      }
      TOY_CHECK(word.empty() && t.at_end(), where << ": unexpected '" << (word.empty() ? t.rest() : word)
                                                  << "' (targets: all, layers LIST, "
                                                  << "layer LIST heads LIST, heads LIST)");
    }
    detail::RuleReader p(policy_text, where);
    TOY_CHECK(p.peek_digit(), where << ": expected SINKS+WINDOW after ':', e.g. 4+252, found '" << p.rest() << "'");
    sinkkv::RetentionPolicy policy;
    policy.num_sinks = p.number("sinks");
    TOY_CHECK(p.take('+'), where << ": expected '+' between sinks and window, found '" << p.rest() << "'");
    policy.window = p.number("window");
    TOY_CHECK(p.at_end(), where << ": unexpected '" << p.rest() << "' after the policy");
    TOY_CHECK(policy.window >= 1, where << ": window 0; every head keeps at least its newest token (window >= 1)");
    for (int layer : layers) {
      for (int head : kv_heads) {
        const std::size_t index =
            static_cast<std::size_t>(layer) * static_cast<std::size_t>(num_kv_heads) + static_cast<std::size_t>(head);
        policies[index] = policy;
        covered[index] = 1;
      }
    }
  }
  for (std::size_t i = 0; i < heads; ++i) {
    TOY_CHECK(covered[i], "head policies: layer " << i / static_cast<std::size_t>(num_kv_heads) << " KV head "
                                                  << i % static_cast<std::size_t>(num_kv_heads)
                                                  << " has no policy (start with a rule such as 'all: 4+252')");
  }
  return policies;
}

/// The text of a policy file, '#' comments kept for parse_head_policies.
inline std::string read_head_policy_file(const std::string& path) {
  std::ifstream in(path);
  TOY_CHECK(in, "cannot open head policy file '" << path << "'");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

inline std::string policy_text(const sinkkv::RetentionPolicy& p) {
  return std::to_string(p.num_sinks) + "+" + std::to_string(p.window);
}

/// Token slots kept over every head: the sum of sinks + window.
inline std::int64_t total_slots(const HeadPolicies& policies) {
  std::int64_t total = 0;
  for (const sinkkv::RetentionPolicy& p : policies) total += p.capacity();
  return total;
}

/// The policies grouped, most heads first: "9x 1+31, 3x 1+159".
inline std::string head_policy_summary(const HeadPolicies& policies) {
  std::map<std::pair<int, int>, int> counts;
  for (const sinkkv::RetentionPolicy& p : policies) ++counts[{p.num_sinks, p.window}];
  std::vector<std::pair<int, std::pair<int, int>>> sorted;
  for (const auto& [policy, count] : counts) sorted.push_back({count, policy});
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::string text;
  for (const auto& [count, policy] : sorted) {
    if (!text.empty()) text += ", ";
    text += std::to_string(count) + "x " + std::to_string(policy.first) + "+" + std::to_string(policy.second);
  }
  return text;
}

/// A text that parses back to `policies`: `all: P` with the most common
/// policy, then one rule per layer and policy that differs from it.
inline std::string format_head_policies(const HeadPolicies& policies, int num_layers, int num_kv_heads) {
  std::map<std::pair<int, int>, int> counts;
  for (const sinkkv::RetentionPolicy& p : policies) ++counts[{p.num_sinks, p.window}];
  std::pair<int, int> common{0, 0};
  int best = -1;
  for (const auto& [policy, count] : counts) {
    if (count > best) best = count, common = policy;
  }
  std::string text = "all: " + std::to_string(common.first) + "+" + std::to_string(common.second) + "\n";
  for (int layer = 0; layer < num_layers; ++layer) {
    std::map<std::pair<int, int>, std::string> heads_of;  // policy -> "0,2"
    for (int head = 0; head < num_kv_heads; ++head) {
      const sinkkv::RetentionPolicy& p =
          policies[static_cast<std::size_t>(layer) * static_cast<std::size_t>(num_kv_heads) +
                   static_cast<std::size_t>(head)];
      if (std::make_pair(p.num_sinks, p.window) == common) continue;
      std::string& list = heads_of[{p.num_sinks, p.window}];
      list += (list.empty() ? "" : ",") + std::to_string(head);
    }
    for (const auto& [policy, list] : heads_of) {
      text += "layer " + std::to_string(layer) + " heads " + list + ": " + std::to_string(policy.first) + "+" +
              std::to_string(policy.second) + "\n";
    }
  }
  return text;
}

/// A DuoAttention-style mix chosen from a per-KV-head score (how much
/// attention each head pays to distant tokens, [num_layers * num_kv_heads]):
/// the `count` highest-scoring heads get `far`, the others `near`; ties go
/// to the lower index. With `reverse`, the lowest-scoring heads get `far`
/// instead (a control: does the choice matter?).
inline HeadPolicies choose_head_policies(const std::vector<double>& far_score, int count,
                                         const sinkkv::RetentionPolicy& far, const sinkkv::RetentionPolicy& near,
                                         bool reverse = false) {
  TOY_CHECK(count >= 0 && static_cast<std::size_t>(count) <= far_score.size(),
            "a mix of " << count << " long heads out of " << far_score.size());
  std::vector<std::size_t> order(far_score.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return reverse ? far_score[a] < far_score[b] : far_score[a] > far_score[b];
  });
  HeadPolicies policies(far_score.size(), near);
  for (int i = 0; i < count; ++i) policies[order[static_cast<std::size_t>(i)]] = far;
  return policies;
}

}  // namespace toy
