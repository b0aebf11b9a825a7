// sinkkv: cache configuration.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "error.hpp"

namespace sinkkv {

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

/// Shape and policy of one sequence's cache (all layers).
/// Capacity = num_sinks + window tokens per layer.
struct CacheConfig {
  int num_layers = 1;
  int num_query_heads = 0;  ///< 0 means num_kv_heads (no grouping)
  int num_kv_heads = 1;
  int head_dim = 64;
  int num_sinks = 4;  ///< the first tokens of the stream, never evicted
  int window = 1020;  ///< the most recent tokens kept besides the sinks
  PositionEncoding encoding = PositionEncoding::rotary();

  int query_heads() const { return num_query_heads == 0 ? num_kv_heads : num_query_heads; }
  int capacity() const { return num_sinks + window; }
  int rotary_dim() const {
    return encoding.rope.rotary_dim == 0 ? head_dim : encoding.rope.rotary_dim;
  }

  /// Throws sinkkv::Error naming the first bad field.
  void validate() const {
    SINKKV_CHECK(num_layers >= 1, "num_layers " << num_layers << " must be >= 1");
    SINKKV_CHECK(num_kv_heads >= 1, "num_kv_heads " << num_kv_heads << " must be >= 1");
    SINKKV_CHECK(num_query_heads >= 0, "num_query_heads " << num_query_heads << " must be >= 0");
    SINKKV_CHECK(query_heads() % num_kv_heads == 0,
                 "num_query_heads " << query_heads() << " is not a multiple of num_kv_heads "
                                    << num_kv_heads);
    SINKKV_CHECK(head_dim >= 1, "head_dim " << head_dim << " must be >= 1");
    SINKKV_CHECK(num_sinks >= 0, "num_sinks " << num_sinks << " must be >= 0");
    SINKKV_CHECK(window >= 1, "window " << window << " must be >= 1");
    SINKKV_CHECK(static_cast<std::int64_t>(num_sinks) + window <= (std::int64_t{1} << 30),
                 "capacity num_sinks + window = " << static_cast<std::int64_t>(num_sinks) + window
                                                  << " exceeds 2^30 tokens");
    if (encoding.kind == PositionEncoding::Kind::kRope) {
      const RopeConfig& rope = encoding.rope;
      SINKKV_CHECK(rope.theta > 1.0, "rope theta " << rope.theta << " must be > 1");
      SINKKV_CHECK(rope.rotary_dim >= 0 && rope.rotary_dim <= head_dim,
                   "rope rotary_dim " << rope.rotary_dim << " outside [0, head_dim " << head_dim
                                      << "]");
      SINKKV_CHECK(rotary_dim() % 2 == 0,
                   (rope.rotary_dim == 0 ? "head_dim " : "rope rotary_dim ")
                       << rotary_dim() << " is odd; RoPE rotates pairs and needs an even size");
    }
    if (encoding.kind == PositionEncoding::Kind::kAlibi && !encoding.alibi.slopes.empty()) {
      SINKKV_CHECK(static_cast<int>(encoding.alibi.slopes.size()) == query_heads(),
                   "alibi slopes has " << encoding.alibi.slopes.size() << " entries, expected one per query head ("
                                       << query_heads() << ")");
    }
  }
};

}  // namespace sinkkv
