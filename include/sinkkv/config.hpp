// sinkkv: cache configuration.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "detail/abi_namespace.hpp"
#include "detail/tagged_vector.hpp"
#include "error.hpp"
#include "rope_scaling.hpp"

namespace sinkkv {
inline namespace SINKKV_ABI_NAMESPACE {

/// Which coordinates RoPE rotates together.
enum class RopeLayout {
  /// (2i, 2i+1): Meta's Llama reference code, llama2.c, GGML's "normal" mode.
  kAdjacentPairs,
  /// (i, i + rotary_dim/2): GPT-NeoX, Hugging Face transformers.
  kSplitHalves,
};

/// Rotary position embedding. Dimension i of the rotated part turns by
/// position * theta^(-2i / rotary_dim).
struct RopeConfig {
  double theta = 10000.0;
  /// Leading dimensions that are rotated; 0 means all of head_dim. Must be
  /// even; the rest of each head passes through unchanged (partial rotary).
  int rotary_dim = 0;
  RopeLayout layout = RopeLayout::kAdjacentPairs;
  /// The variant: per-pair inverse frequencies and attention factor
  /// (RopeScaling::llama3(), yarn(), ...); plain theta by default.
  RopeScaling scaling = RopeScaling::none();
};

/// ALiBi: score bias -slope_h * (query position - key position), measured in
/// cache positions. Empty `slopes` means the standard geometric slopes for
/// the number of query heads (Press et al.), else one slope per query head.
struct AlibiConfig {
  std::vector<double> slopes;
};

/// The position encoding the cache must keep consistent with cache-relative
/// positions.
struct PositionEncoding {
  enum class Kind { kNone, kRope, kAlibi };
  Kind kind = Kind::kRope;
  RopeConfig rope;
  AlibiConfig alibi;

  static PositionEncoding none() { return PositionEncoding{Kind::kNone, {}, {}}; }
  static PositionEncoding rotary(RopeConfig config = {}) {
    return PositionEncoding{Kind::kRope, config, {}};
  }
  static PositionEncoding alibi_bias(AlibiConfig config = {}) {
    return PositionEncoding{Kind::kAlibi, {}, std::move(config)};
  }
};

/// How the engine hands over keys and queries.
enum class InputRotation {
  /// Not rotated: the cache applies RoPE (keys once, at their stream index).
  kUnrotated,
  /// Already rotated by the engine's own RoPE at each token's stream index
  /// (what llama.cpp, vLLM and llama2.c compute): the cache stores keys as
  /// given and turns only the sink-frame query, by (cache position - stream
  /// index). The engine's angle precision then bounds long streams.
  kStreamRotated,
};

/// Which tokens one KV head keeps: the first `num_sinks` tokens of the
/// stream (the attention sinks, never evicted) plus the `window` most recent.
struct RetentionPolicy {
  int num_sinks = 4;
  int window = 1020;

  int capacity() const { return num_sinks + window; }
  friend bool operator==(const RetentionPolicy& a, const RetentionPolicy& b) {
    return a.num_sinks == b.num_sinks && a.window == b.window;
  }
  friend bool operator!=(const RetentionPolicy& a, const RetentionPolicy& b) { return !(a == b); }
};

/// Shape and policy of one sequence's cache (all layers).
///
/// Uniform by default: every KV head of every layer keeps num_sinks +
/// window tokens. set_layer_policy() and set_head_policy() give a layer, or
/// one KV head of a layer (its query heads follow it), a policy of its own
/// (gpt-oss's alternating sliding layers, DuoAttention's streaming heads);
/// heads sharing a policy share position bookkeeping and storage is packed
/// per head, so memory is the sum of the heads' rows: each head's
/// capacity() plus max_chunk - 1 rows of chunk room (slots_of()).
struct CacheConfig {
  /// Bounds that keep every index and product the kernels form in an int.
  static constexpr std::int64_t kMaxSlots = std::int64_t{1} << 30;        ///< sinks + window + chunk room
  static constexpr std::int64_t kMaxHeadElements = std::int64_t{1} << 24;  ///< query_heads * head_dim
  static constexpr int kMaxChunk = 1 << 16;
  static constexpr int kMaxLayers = 1 << 16;
  static constexpr std::int64_t kMaxHeads = std::int64_t{1} << 20;  ///< num_layers * num_kv_heads
  /// Per-sequence scratch bounds: query rows of a chunk (max_chunk *
  /// query_heads * head_dim, two frames) and rotation tables (max_chunk *
  /// (policy groups + 1) * rotary pairs).
  static constexpr std::int64_t kMaxChunkElements = std::int64_t{1} << 26;
  static constexpr std::int64_t kMaxRotationEntries = std::int64_t{1} << 24;

  int num_layers = 1;
  int num_query_heads = 0;  ///< 0 means num_kv_heads (no grouping)
  int num_kv_heads = 1;
  int head_dim = 64;
  int num_sinks = 4;  ///< the first tokens of the stream, never evicted
  int window = 1020;  ///< the most recent tokens kept besides the sinks
  /// Empty (every head keeps {num_sinks, window}) or one policy per (layer,
  /// KV head), layer-major: [num_layers * num_kv_heads]. Prefer the setters.
  std::vector<RetentionPolicy> head_policies;
  /// Most tokens one append may carry (chunked prefill). Each ring gets
  /// max_chunk - 1 extra slots, so that every query of a chunk still finds
  /// its whole window.
  int max_chunk = 1;
  PositionEncoding encoding = PositionEncoding::rotary();
  InputRotation input_rotation = InputRotation::kUnrotated;

  int query_heads() const { return num_query_heads == 0 ? num_kv_heads : num_query_heads; }
  int group_size() const { return query_heads() / num_kv_heads; }
  int rotary_dim() const {
    return encoding.rope.rotary_dim == 0 ? head_dim : encoding.rope.rotary_dim;
  }
  RetentionPolicy uniform_policy() const { return RetentionPolicy{num_sinks, window}; }
  /// Largest capacity (num_sinks + window) of any head.
  int capacity() const {
    int largest = uniform_policy().capacity();
    if (!head_policies.empty()) {
      largest = 0;
      for (const RetentionPolicy& p : head_policies) largest = std::max(largest, p.capacity());
    }
    return largest;
  }

  /// The policy of one KV head of one layer. @pre indices in range
  RetentionPolicy policy(int layer, int kv_head) const {
    if (head_policies.empty()) return uniform_policy();
    return head_policies[static_cast<std::size_t>(layer) * static_cast<std::size_t>(num_kv_heads) +
                         static_cast<std::size_t>(kv_head)];
  }
  /// True when every head keeps the same tokens.
  bool is_uniform() const {
    for (const RetentionPolicy& p : head_policies) {
      if (p != head_policies.front()) return false;
    }
    return true;
  }

  /// Gives every KV head of `layer` its own policy. Call after num_layers,
  /// num_kv_heads, num_sinks and window are set (the other heads keep
  /// {num_sinks, window}).
  CacheConfig& set_layer_policy(int layer, RetentionPolicy policy) {
    check_head_index(layer, 0, "set_layer_policy");
    for (int head = 0; head < num_kv_heads; ++head) set_head_policy(layer, head, policy);
    return *this;
  }
  /// Gives one KV head of `layer` (and its query heads) its own policy.
  CacheConfig& set_head_policy(int layer, int kv_head, RetentionPolicy policy) {
    check_head_index(layer, kv_head, "set_head_policy");
    const std::size_t heads = static_cast<std::size_t>(num_layers) * static_cast<std::size_t>(num_kv_heads);
    if (head_policies.size() != heads) head_policies.assign(heads, uniform_policy());
    head_policies[static_cast<std::size_t>(layer) * static_cast<std::size_t>(num_kv_heads) +
                  static_cast<std::size_t>(kv_head)] = policy;
    return *this;
  }

  /// Throws sinkkv::Error naming the first bad field. Checks every size and
  /// product the cache will form, so that nothing is allocated for a
  /// configuration that cannot exist.
  void validate() const {
    SINKKV_CHECK(num_layers >= 1 && num_layers <= kMaxLayers,
                 "num_layers " << num_layers << " outside [1, " << kMaxLayers << "]");
    SINKKV_CHECK(num_kv_heads >= 1, "num_kv_heads " << num_kv_heads << " must be >= 1");
    SINKKV_CHECK(num_query_heads >= 0, "num_query_heads " << num_query_heads << " must be >= 0");
    SINKKV_CHECK(query_heads() % num_kv_heads == 0,
                 "num_query_heads " << query_heads() << " is not a multiple of num_kv_heads " << num_kv_heads);
    SINKKV_CHECK(head_dim >= 1, "head_dim " << head_dim << " must be >= 1");
    SINKKV_CHECK(static_cast<std::int64_t>(query_heads()) * head_dim <= kMaxHeadElements,
                 "num_query_heads " << query_heads() << " x head_dim " << head_dim << " = "
                                    << static_cast<std::int64_t>(query_heads()) * head_dim << " exceeds "
                                    << kMaxHeadElements);
    SINKKV_CHECK(static_cast<std::int64_t>(num_layers) * num_kv_heads <= kMaxHeads,
                 "num_layers " << num_layers << " x num_kv_heads " << num_kv_heads << " exceeds " << kMaxHeads);
    SINKKV_CHECK(max_chunk >= 1 && max_chunk <= kMaxChunk,
                 "max_chunk " << max_chunk << " outside [1, " << kMaxChunk << "]");
    SINKKV_CHECK(static_cast<std::int64_t>(max_chunk) * query_heads() * head_dim <= kMaxChunkElements,
                 "max_chunk " << max_chunk << " x num_query_heads " << query_heads() << " x head_dim " << head_dim
                              << " exceeds " << kMaxChunkElements << " query elements per chunk");
    validate_policy(uniform_policy(), "");
    if (!head_policies.empty()) {
      const std::int64_t heads = static_cast<std::int64_t>(num_layers) * num_kv_heads;
      SINKKV_CHECK(static_cast<std::int64_t>(head_policies.size()) == heads,
                   "head_policies has " << head_policies.size() << " entries, expected num_layers x num_kv_heads = "
                                        << heads);
      for (int layer = 0; layer < num_layers; ++layer) {
        for (int head = 0; head < num_kv_heads; ++head) {
          std::ostringstream where;
          where << "layer " << layer << " KV head " << head << ": ";
          validate_policy(policy(layer, head), where.str());
        }
      }
    }
    validate_encoding();
    if (encoding.kind == PositionEncoding::Kind::kRope) {
      const std::int64_t entries = static_cast<std::int64_t>(max_chunk) * (num_policies() + 1) * (rotary_dim() / 2);
      SINKKV_CHECK(entries <= kMaxRotationEntries,
                   "max_chunk " << max_chunk << " x (" << num_policies() << " distinct policies + 1) x "
                                << rotary_dim() / 2 << " rotary pairs = " << entries << " rotation entries exceeds "
                                << kMaxRotationEntries);
    }
  }

  /// Distinct retention policies among the heads. O(heads log heads).
  std::int64_t num_policies() const {
    if (head_policies.empty()) return 1;
    detail::Vector<std::pair<int, int>> distinct;
    distinct.reserve(head_policies.size());
    for (const RetentionPolicy& p : head_policies) distinct.emplace_back(p.num_sinks, p.window);
    std::sort(distinct.begin(), distinct.end());
    return static_cast<std::int64_t>(std::unique(distinct.begin(), distinct.end()) - distinct.begin());
  }

  /// Elements of K and V storage over all heads (each head: 2 x slots x
  /// head_dim), or throws if that overflows. @pre validate() passed
  std::uint64_t storage_elements() const {
    constexpr std::uint64_t kLimit = std::uint64_t{1} << 62;
    const std::uint64_t per_slot = 2 * static_cast<std::uint64_t>(head_dim);  // < 2^25
    if (head_policies.empty()) {
      // < 2^25 * 2^30 * 2^30: no overflow before the check
      const std::uint64_t per_layer =
          per_slot * static_cast<std::uint64_t>(slots_of(uniform_policy())) * static_cast<std::uint64_t>(num_kv_heads);
      SINKKV_CHECK(per_layer <= kLimit / static_cast<std::uint64_t>(num_layers),
                   "cache storage of " << num_layers << " layers x " << per_layer << " elements exceeds 2^62");
      return per_layer * static_cast<std::uint64_t>(num_layers);
    }
    std::uint64_t total = 0;
    for (const RetentionPolicy& p : head_policies) {
      total += per_slot * static_cast<std::uint64_t>(slots_of(p));  // each term < 2^55
      SINKKV_CHECK(total <= kLimit, "cache storage exceeds 2^62 elements");
    }
    return total;
  }

  /// Storage slots of a head with this policy: sinks + window + chunk room.
  int slots_of(const RetentionPolicy& p) const { return p.num_sinks + p.window + max_chunk - 1; }

 private:
  void check_head_index(int layer, int kv_head, const char* what) const {
    SINKKV_CHECK(layer >= 0 && layer < num_layers,
                 what << ": layer " << layer << " outside [0, num_layers " << num_layers << ")");
    SINKKV_CHECK(kv_head >= 0 && kv_head < num_kv_heads,
                 what << ": KV head " << kv_head << " outside [0, num_kv_heads " << num_kv_heads << ")");
  }

  void validate_policy(const RetentionPolicy& p, const std::string& where) const {
    SINKKV_CHECK(p.num_sinks >= 0, where << "num_sinks " << p.num_sinks << " must be >= 0");
    SINKKV_CHECK(p.window >= 1, where << "window " << p.window << " must be >= 1");
    const std::int64_t slots = static_cast<std::int64_t>(p.num_sinks) + p.window + max_chunk - 1;
    SINKKV_CHECK(slots <= kMaxSlots, where << "num_sinks " << p.num_sinks << " + window " << p.window
                                           << " + chunk room " << max_chunk - 1 << " = " << slots
                                           << " slots exceeds 2^30");
  }

  void validate_encoding() const {
    switch (encoding.kind) {
      case PositionEncoding::Kind::kNone:
        break;
      case PositionEncoding::Kind::kRope: {
        const RopeConfig& rope = encoding.rope;
        SINKKV_CHECK(rope.rotary_dim >= 0 && rope.rotary_dim <= head_dim,
                     "rope rotary_dim " << rope.rotary_dim << " outside [0, head_dim " << head_dim << "]");
        SINKKV_CHECK(rotary_dim() % 2 == 0,
                     (rope.rotary_dim == 0 ? "head_dim " : "rope rotary_dim ")
                         << rotary_dim() << " is odd; RoPE rotates pairs and needs an even size");
        SINKKV_CHECK(rope.layout == RopeLayout::kAdjacentPairs || rope.layout == RopeLayout::kSplitHalves,
                     "rope layout " << static_cast<int>(rope.layout) << " is not a RopeLayout");
        rope.scaling.validate(rope.theta, rotary_dim());  // theta, and the variant's parameters
        break;
      }
      case PositionEncoding::Kind::kAlibi: {
        const std::vector<double>& slopes = encoding.alibi.slopes;
        SINKKV_CHECK(slopes.empty() || static_cast<int>(slopes.size()) == query_heads(),
                     "alibi slopes has " << slopes.size() << " entries, expected one per query head ("
                                         << query_heads() << ")");
        for (std::size_t h = 0; h < slopes.size(); ++h) {
          SINKKV_CHECK(std::isfinite(slopes[h]), "alibi slope of query head " << h << " is " << slopes[h]
                                                                              << "; slopes must be finite");
        }
        break;
      }
      default:
        SINKKV_CHECK(false, "encoding kind " << static_cast<int>(encoding.kind) << " is not a PositionEncoding::Kind");
    }
    SINKKV_CHECK(input_rotation == InputRotation::kUnrotated || input_rotation == InputRotation::kStreamRotated,
                 "input_rotation " << static_cast<int>(input_rotation) << " is not an InputRotation");
    SINKKV_CHECK(input_rotation == InputRotation::kUnrotated || encoding.kind == PositionEncoding::Kind::kRope,
                 "input_rotation kStreamRotated needs a RoPE encoding (inputs are rotated by RoPE only)");
  }
};

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv
