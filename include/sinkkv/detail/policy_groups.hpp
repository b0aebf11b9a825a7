// sinkkv::detail: the KV heads that share a retention policy.
#pragma once

#include <algorithm>
#include <cstddef>
#include <map>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "abi_namespace.hpp"
#include "tagged_vector.hpp"

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {

/// Groups the (layer, KV head) pairs of a configuration by retention
/// policy. Heads of one group keep the same stream tokens at the same
/// slots, so they share one CachePositions; each head is a *member* of its
/// group, numbered layer-major. A layer's heads form *runs*: maximal ranges
/// of consecutive KV heads of one group, which a kernel can take in one call.
/// A uniform configuration has one group and one run per layer.
/// Built once (allocates; O(heads log groups)); every query is O(1).
class PolicyGroups {
 public:
  struct HeadRun {
    int first_kv_head = 0;
    int num_kv_heads = 0;
    int group = 0;
    int first_member = 0;  ///< member index of first_kv_head in its group
  };

  explicit PolicyGroups(const CacheConfig& config) : num_kv_heads_(config.num_kv_heads) {
    const std::size_t heads = static_cast<std::size_t>(config.num_layers) * static_cast<std::size_t>(num_kv_heads_);
    group_of_.resize(heads);
    member_of_.resize(heads);
    run_begin_.assign(static_cast<std::size_t>(config.num_layers) + 1, 0);
    std::map<std::pair<int, int>, int> group_index;  // (num_sinks, window) -> group, in order of first use
    for (int layer = 0; layer < config.num_layers; ++layer) {
      run_begin_[static_cast<std::size_t>(layer)] = static_cast<int>(runs_.size());
      for (int head = 0; head < num_kv_heads_; ++head) {
        const RetentionPolicy policy = config.policy(layer, head);
        const auto [found, added] = group_index.emplace(std::make_pair(policy.num_sinks, policy.window), num_groups());
        const int group = found->second;
        if (added) {
          policies_.push_back(policy);
          members_.push_back(0);
        }
        const std::size_t index = static_cast<std::size_t>(layer) * static_cast<std::size_t>(num_kv_heads_) +
                                  static_cast<std::size_t>(head);
        group_of_[index] = group;
        member_of_[index] = members_[static_cast<std::size_t>(group)]++;
        if (head > 0 && runs_.back().group == group) {
          ++runs_.back().num_kv_heads;
        } else {
          runs_.push_back(HeadRun{head, 1, group, member_of_[index]});
        }
      }
    }
    run_begin_.back() = static_cast<int>(runs_.size());
  }

  int num_groups() const { return static_cast<int>(policies_.size()); }
  const RetentionPolicy& policy(int group) const { return policies_[static_cast<std::size_t>(group)]; }
  /// Heads in a group (over all layers).
  int num_members(int group) const { return members_[static_cast<std::size_t>(group)]; }
  int group_of(int layer, int kv_head) const { return group_of_[index(layer, kv_head)]; }
  int member_of(int layer, int kv_head) const { return member_of_[index(layer, kv_head)]; }

  /// The runs of one layer, in head order: runs(layer)[0 .. num_runs(layer)).
  const HeadRun* runs(int layer) const { return runs_.data() + run_begin_[static_cast<std::size_t>(layer)]; }
  int num_runs(int layer) const {
    return run_begin_[static_cast<std::size_t>(layer) + 1] - run_begin_[static_cast<std::size_t>(layer)];
  }
  /// The most runs any layer has.
  int max_runs() const {
    int most = 0;
    for (std::size_t l = 0; l + 1 < run_begin_.size(); ++l) most = std::max(most, run_begin_[l + 1] - run_begin_[l]);
    return most;
  }

 private:
  std::size_t index(int layer, int kv_head) const {
    return static_cast<std::size_t>(layer) * static_cast<std::size_t>(num_kv_heads_) + static_cast<std::size_t>(kv_head);
  }

  int num_kv_heads_;
  Vector<RetentionPolicy> policies_;  // [groups]
  Vector<int> members_;               // [groups] heads per group
  Vector<int> group_of_;              // [layers * kv_heads]
  Vector<int> member_of_;             // [layers * kv_heads] index within its group
  Vector<HeadRun> runs_;              // every layer's runs, layer-major
  Vector<int> run_begin_;             // [layers + 1] first run of each layer
};

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail
