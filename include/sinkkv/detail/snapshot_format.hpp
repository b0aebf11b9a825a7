// sinkkv::detail: the snapshot format's building blocks - little-endian
// fields, the configuration's field list (one list drives writing, reading
// and comparing, so the three cannot drift apart), element encodings, and
// the bounds a reader checks before allocating. The format itself is
// specified in docs/design.md ("Snapshots").
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "../config.hpp"
#include "../error.hpp"
#include "abi_namespace.hpp"
#include "element.hpp"
#include "tagged_vector.hpp"

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {

static_assert(std::numeric_limits<float>::is_iec559 && std::numeric_limits<double>::is_iec559,
              "sinkkv snapshots store IEEE-754 binary32/binary64 elements");

// ---- layout constants (docs/design.md, "Snapshots") ------------------------

inline constexpr unsigned char kSnapshotMagic[8] = {0x89, 'S', 'I', 'N', 'K', 'K', 'V', 0x0A};
inline constexpr std::uint32_t kSnapshotFormatVersion = 1;
/// magic, version, element code, element bytes, flags, header bytes, payload bytes.
inline constexpr std::size_t kSnapshotPreambleBytes = 40;
inline constexpr std::size_t kSnapshotChecksumBytes = 4;
/// Stream indices stay far from 2^64, so that later steps cannot overflow.
inline constexpr std::uint64_t kSnapshotMaxTokensSeen = std::uint64_t{1} << 62;

// ---- element types ---------------------------------------------------------

/// Element code in the preamble: 1 float32, 2 float64, 3 IEEE binary16,
/// 4 bfloat16. Codes are the format's, not an enum's order.
template <class T>
struct SnapshotElement;
template <>
struct SnapshotElement<float> {
  static constexpr std::uint32_t kCode = 1;
  using Bits = std::uint32_t;
};
template <>
struct SnapshotElement<double> {
  static constexpr std::uint32_t kCode = 2;
  using Bits = std::uint64_t;
};
template <>
struct SnapshotElement<Eigen::half> {
  static constexpr std::uint32_t kCode = 3;
  using Bits = std::uint16_t;
};
template <>
struct SnapshotElement<Eigen::bfloat16> {
  static constexpr std::uint32_t kCode = 4;
  using Bits = std::uint16_t;
};

/// Name and size of an element code; name "unknown" (size 0) for others.
inline const char* snapshot_element_name(std::uint32_t code) {
  switch (code) {
    case 1: return "float";
    case 2: return "double";
    case 3: return "half";
    case 4: return "bfloat16";
    default: return "unknown";
  }
}
inline std::uint32_t snapshot_element_bytes(std::uint32_t code) {
  switch (code) {
    case 1: return 4;
    case 2: return 8;
    case 3: return 2;
    case 4: return 2;
    default: return 0;
  }
}
/// The C++ spelling of an element code, for "load it as ..." hints.
inline const char* snapshot_element_type(std::uint32_t code) {
  switch (code) {
    case 1: return "float";
    case 2: return "double";
    case 3: return "Eigen::half";
    case 4: return "Eigen::bfloat16";
    default: return "?";
  }
}

inline bool host_is_little_endian() {
  const std::uint32_t one = 1;
  unsigned char first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

/// Writes `count` elements as little-endian bytes, whatever the host's byte
/// order (the portable path; on little-endian hosts it equals memcpy).
template <class T>
void encode_elements_portable(const T* elements, std::size_t count, unsigned char* out) {
  using Bits = typename SnapshotElement<T>::Bits;
  for (std::size_t i = 0; i < count; ++i) {
    Bits bits;
    std::memcpy(&bits, elements + i, sizeof(Bits));
    for (std::size_t b = 0; b < sizeof(Bits); ++b) out[i * sizeof(Bits) + b] = static_cast<unsigned char>(bits >> (8 * b));
  }
}

/// Turns `count` elements whose bytes were read little-endian into host
/// order, in place (the identity on little-endian hosts).
template <class T>
void decode_elements_portable(T* elements, std::size_t count) {
  using Bits = typename SnapshotElement<T>::Bits;
  unsigned char* bytes = reinterpret_cast<unsigned char*>(elements);
  for (std::size_t i = 0; i < count; ++i) {
    Bits bits = 0;
    for (std::size_t b = 0; b < sizeof(Bits); ++b) bits |= static_cast<Bits>(Bits{bytes[i * sizeof(Bits) + b]} << (8 * b));
    std::memcpy(static_cast<void*>(elements + i), &bits, sizeof(Bits));
  }
}

// ---- names and values in messages ------------------------------------------

/// A field's name, built only when a message needs it: base, or
/// base[index].member.
struct FieldName {
  const char* base = "";
  std::int64_t index = -1;
  const char* member = nullptr;
};
inline std::ostream& operator<<(std::ostream& out, const FieldName& name) {
  out << name.base;
  if (name.index >= 0) out << "[" << name.index << "]";
  if (name.member != nullptr) out << "." << name.member;
  return out;
}

/// A double as text that tells every two doubles apart (17 digits).
inline std::string exact_text(double value) {
  std::ostringstream text;
  text << std::setprecision(17) << value;
  return text.str();
}

/// One enum's codes in the format: code i stands for values[i], named names[i].
template <class Enum, std::size_t N>
struct EnumCodes {
  const char* type;
  Enum values[N];
  const char* names[N];
};

inline constexpr EnumCodes<InputRotation, 2> kInputRotationCodes{
    "InputRotation", {InputRotation::kUnrotated, InputRotation::kStreamRotated}, {"unrotated", "stream-rotated"}};
inline constexpr EnumCodes<PositionEncoding::Kind, 3> kEncodingCodes{
    "PositionEncoding::Kind",
    {PositionEncoding::Kind::kNone, PositionEncoding::Kind::kRope, PositionEncoding::Kind::kAlibi},
    {"none", "rope", "alibi"}};
inline constexpr EnumCodes<RopeLayout, 2> kRopeLayoutCodes{
    "RopeLayout", {RopeLayout::kAdjacentPairs, RopeLayout::kSplitHalves}, {"adjacent pairs", "split halves"}};
inline constexpr EnumCodes<RopeScaling::Kind, 6> kRopeScalingCodes{
    "RopeScaling::Kind",
    {RopeScaling::Kind::kNone, RopeScaling::Kind::kLinear, RopeScaling::Kind::kNtkAware, RopeScaling::Kind::kLlama3,
     RopeScaling::Kind::kYarn, RopeScaling::Kind::kExplicit},
    {"none", "linear", "ntk_aware", "llama3", "yarn", "explicit"}};

/// Every field of a CacheConfig, in format order, handed to `v` (a writer,
/// a reader or a describer). `Config` is CacheConfig or const CacheConfig.
/// Adding a field to CacheConfig means adding it here and bumping
/// kSnapshotFormatVersion (tests/snapshot_test.cpp guards the sizes).
template <class Config, class Visitor>
void visit_config_fields(Config& c, Visitor& v) {
  v.i32(FieldName{"num_layers"}, c.num_layers);
  v.i32(FieldName{"num_query_heads"}, c.num_query_heads);
  v.i32(FieldName{"num_kv_heads"}, c.num_kv_heads);
  v.i32(FieldName{"head_dim"}, c.head_dim);
  v.i32(FieldName{"num_sinks"}, c.num_sinks);
  v.i32(FieldName{"window"}, c.window);
  v.i32(FieldName{"max_chunk"}, c.max_chunk);
  v.code(FieldName{"input_rotation"}, c.input_rotation, kInputRotationCodes);
  const std::size_t policies = v.count(FieldName{"head_policies"}, c.head_policies, 8);
  for (std::size_t i = 0; i < policies; ++i) {
    auto& policy = c.head_policies[i];
    v.i32(FieldName{"head_policies", static_cast<std::int64_t>(i), "num_sinks"}, policy.num_sinks);
    v.i32(FieldName{"head_policies", static_cast<std::int64_t>(i), "window"}, policy.window);
  }
  v.code(FieldName{"encoding.kind"}, c.encoding.kind, kEncodingCodes);
  auto& rope = c.encoding.rope;
  v.f64(FieldName{"encoding.rope.theta"}, rope.theta);
  v.i32(FieldName{"encoding.rope.rotary_dim"}, rope.rotary_dim);
  v.code(FieldName{"encoding.rope.layout"}, rope.layout, kRopeLayoutCodes);
  auto& scaling = rope.scaling;
  v.code(FieldName{"encoding.rope.scaling.kind"}, scaling.kind, kRopeScalingCodes);
  v.f64(FieldName{"encoding.rope.scaling.factor"}, scaling.factor);
  v.f64(FieldName{"encoding.rope.scaling.original_max_positions"}, scaling.original_max_positions);
  v.f64(FieldName{"encoding.rope.scaling.low_freq_factor"}, scaling.low_freq_factor);
  v.f64(FieldName{"encoding.rope.scaling.high_freq_factor"}, scaling.high_freq_factor);
  v.f64(FieldName{"encoding.rope.scaling.beta_fast"}, scaling.beta_fast);
  v.f64(FieldName{"encoding.rope.scaling.beta_slow"}, scaling.beta_slow);
  v.boolean(FieldName{"encoding.rope.scaling.truncate"}, scaling.truncate);
  v.f64(FieldName{"encoding.rope.scaling.mscale"}, scaling.mscale);
  v.f64(FieldName{"encoding.rope.scaling.mscale_all_dim"}, scaling.mscale_all_dim);
  v.optional_f64(FieldName{"encoding.rope.scaling.attention_factor"}, scaling.attention_factor);
  const std::size_t frequencies =
      v.count(FieldName{"encoding.rope.scaling.explicit_inv_frequencies"}, scaling.explicit_inv_frequencies, 8);
  for (std::size_t i = 0; i < frequencies; ++i) {
    v.f64(FieldName{"encoding.rope.scaling.explicit_inv_frequencies", static_cast<std::int64_t>(i)},
          scaling.explicit_inv_frequencies[i]);
  }
  const std::size_t slopes = v.count(FieldName{"encoding.alibi.slopes"}, c.encoding.alibi.slopes, 8);
  for (std::size_t i = 0; i < slopes; ++i) {
    v.f64(FieldName{"encoding.alibi.slopes", static_cast<std::int64_t>(i)}, c.encoding.alibi.slopes[i]);
  }
}

// ---- writing ---------------------------------------------------------------

/// Appends little-endian fields to a byte vector.
class FieldWriter {
 public:
  explicit FieldWriter(std::vector<unsigned char>& out) : out_(&out) {}

  void u8(std::uint8_t value) { out_->push_back(value); }
  void u32(std::uint32_t value) {
    for (int b = 0; b < 4; ++b) out_->push_back(static_cast<unsigned char>(value >> (8 * b)));
  }
  void u64(std::uint64_t value) {
    for (int b = 0; b < 8; ++b) out_->push_back(static_cast<unsigned char>(value >> (8 * b)));
  }

  // The visitor interface of visit_config_fields.
  void i32(const FieldName&, int value) { u32(static_cast<std::uint32_t>(value)); }
  void f64(const FieldName&, double value) {
    std::uint64_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    u64(bits);
  }
  void boolean(const FieldName&, bool value) { u8(value ? 1 : 0); }
  template <class Enum, std::size_t N>
  void code(const FieldName& name, Enum value, const EnumCodes<Enum, N>& codes) {
    for (std::size_t i = 0; i < N; ++i) {
      if (codes.values[i] == value) {
        u32(static_cast<std::uint32_t>(i));
        return;
      }
    }
    SINKKV_CHECK(false, "snapshot: " << name << " holds " << static_cast<long long>(value) << ", which is not a "
                                     << codes.type << "; the configuration cannot be saved");
  }
  void optional_f64(const FieldName& name, const std::optional<double>& value) {
    u8(value ? 1 : 0);
    if (value) f64(name, *value);
  }
  template <class Element>
  std::size_t count(const FieldName&, const std::vector<Element>& values, std::size_t) {
    u64(values.size());
    return values.size();
  }

 private:
  std::vector<unsigned char>* out_;
};

// ---- reading ---------------------------------------------------------------

/// Reads little-endian fields from a byte range that starts at `base` in the
/// snapshot; every error names the field, its offset and what was found.
class FieldReader {
 public:
  FieldReader(const unsigned char* data, std::size_t size, std::uint64_t base, std::string origin)
      : data_(data), size_(size), base_(base), origin_(std::move(origin)) {}

  std::uint64_t offset() const { return base_ + position_; }
  std::size_t remaining() const { return size_ - position_; }
  const std::string& origin() const { return origin_; }

  std::uint8_t u8(const FieldName& name) { return static_cast<std::uint8_t>(take(name, 1)); }
  std::uint32_t u32(const FieldName& name) { return static_cast<std::uint32_t>(take(name, 4)); }
  std::uint64_t u64(const FieldName& name) { return take(name, 8); }

  // The visitor interface of visit_config_fields.
  void i32(const FieldName& name, int& value) {
    const std::uint32_t bits = u32(name);
    value = bits <= 0x7FFFFFFFu ? static_cast<int>(bits) : static_cast<int>(static_cast<std::int64_t>(bits) - (std::int64_t{1} << 32));
  }
  void f64(const FieldName& name, double& value) {
    const std::uint64_t bits = u64(name);
    std::memcpy(&value, &bits, sizeof value);
  }
  void boolean(const FieldName& name, bool& value) {
    const std::uint64_t at = offset();
    const std::uint8_t byte = u8(name);
    SINKKV_CHECK(byte <= 1, origin_ << ": field " << name << " at offset " << at << " is " << int{byte}
                                    << ", expected 0 or 1");
    value = byte == 1;
  }
  template <class Enum, std::size_t N>
  void code(const FieldName& name, Enum& value, const EnumCodes<Enum, N>& codes) {
    const std::uint64_t at = offset();
    const std::uint32_t found = u32(name);
    if (found < N) {
      value = codes.values[found];
      return;
    }
    std::ostringstream known;
    for (std::size_t i = 0; i < N; ++i) known << (i > 0 ? ", " : "") << i << " " << codes.names[i];
    SINKKV_CHECK(false, origin_ << ": field " << name << " at offset " << at << " is " << found
                                << ", which is not a " << codes.type << " code (" << known.str() << ")");
  }
  void optional_f64(const FieldName& name, std::optional<double>& value) {
    bool present = false;
    boolean(name, present);
    if (!present) {
      value.reset();
      return;
    }
    double given = 0;
    f64(name, given);
    value = given;
  }
  /// Reads a count and sizes `values` to it, after checking that the header
  /// holds count x `element_bytes` more bytes (so a corrupt count cannot
  /// make the reader allocate more than the header's own size).
  template <class Element>
  std::size_t count(const FieldName& name, std::vector<Element>& values, std::size_t element_bytes) {
    const std::uint64_t at = offset();
    const std::uint64_t n = u64(name);
    SINKKV_CHECK(n <= remaining() / element_bytes,
                 origin_ << ": field " << name << " at offset " << at << " counts " << n << " entries of "
                         << element_bytes << " bytes, but only " << remaining() << " header bytes follow");
    values.assign(static_cast<std::size_t>(n), Element{});
    return static_cast<std::size_t>(n);
  }

 private:
  std::uint64_t take(const FieldName& name, std::size_t bytes) {
    SINKKV_CHECK(bytes <= remaining(), origin_ << ": the header ends at offset " << base_ + size_ << " inside field "
                                               << name << " (offset " << offset() << ", " << bytes << " bytes)");
    std::uint64_t value = 0;
    for (std::size_t b = 0; b < bytes; ++b) value |= std::uint64_t{data_[position_ + b]} << (8 * b);
    position_ += bytes;
    return value;
  }

  const unsigned char* data_;
  std::size_t size_;
  std::size_t position_ = 0;
  std::uint64_t base_;
  std::string origin_;
};

// ---- comparing -------------------------------------------------------------

/// Lists every field of a configuration as (name, value text), in format
/// order; two configurations are equal when their lists are (doubles to
/// the bit, except that every NaN equals every NaN).
class FieldDescriber {
 public:
  struct Entry {
    std::string name;
    std::string value;
  };
  std::vector<Entry> entries;

  void i32(const FieldName& name, int value) { add(name, std::to_string(value)); }
  void f64(const FieldName& name, double value) { add(name, std::isnan(value) ? std::string("nan") : exact_text(value)); }
  void boolean(const FieldName& name, bool value) { add(name, value ? "true" : "false"); }
  template <class Enum, std::size_t N>
  void code(const FieldName& name, Enum value, const EnumCodes<Enum, N>& codes) {
    for (std::size_t i = 0; i < N; ++i) {
      if (codes.values[i] == value) {
        add(name, codes.names[i]);
        return;
      }
    }
    add(name, std::to_string(static_cast<long long>(value)) + " (not a " + codes.type + ")");
  }
  void optional_f64(const FieldName& name, const std::optional<double>& value) {
    if (value) {
      f64(name, *value);
    } else {
      add(name, "unset");
    }
  }
  template <class Element>
  std::size_t count(const FieldName& name, const std::vector<Element>& values, std::size_t) {
    add(name, std::to_string(values.size()) + " entries");
    return values.size();
  }

 private:
  void add(const FieldName& name, std::string value) {
    std::ostringstream text;
    text << name;
    entries.push_back(Entry{text.str(), std::move(value)});
  }
};

/// The first field in which `found` differs from `expected`, as
/// "window is 1020 in the snapshot, expected 508"; empty when they are equal.
inline std::string first_config_difference(const CacheConfig& found, const CacheConfig& expected) {
  FieldDescriber a;
  FieldDescriber b;
  visit_config_fields(found, a);
  visit_config_fields(expected, b);
  const std::size_t n = std::min(a.entries.size(), b.entries.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (a.entries[i].name != b.entries[i].name || a.entries[i].value != b.entries[i].value) {
      return a.entries[i].name + " is " + a.entries[i].value + " in the snapshot, expected " + b.entries[i].value;
    }
  }
  return a.entries.size() == b.entries.size() ? std::string() : std::string("the field lists differ in length");
}

// ---- bounds checked before allocating -----------------------------------------

inline std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) {
  return a > std::numeric_limits<std::uint64_t>::max() - b ? std::numeric_limits<std::uint64_t>::max() : a + b;
}
inline std::uint64_t saturating_multiply(std::uint64_t a, std::uint64_t b) {
  return b != 0 && a > std::numeric_limits<std::uint64_t>::max() / b ? std::numeric_limits<std::uint64_t>::max()
                                                                      : a * b;
}

/// Bytes a SinkKVCache of this (validated) configuration allocates, from
/// above: K/V storage, the per-step query scratch and log-sum-exps, and the
/// RoPE rotations of a step (one per chunk token for the stream frame and
/// per policy group for the sink frame). Saturates instead of overflowing.
inline std::uint64_t cache_memory_bound(const CacheConfig& config, std::size_t element_bytes,
                                        std::size_t compute_bytes) {
  const std::uint64_t chunk = static_cast<std::uint64_t>(config.max_chunk);
  const std::uint64_t head_elements = static_cast<std::uint64_t>(config.query_heads()) *
                                      static_cast<std::uint64_t>(config.head_dim);
  std::uint64_t groups = 1;
  if (!config.head_policies.empty()) {
    Vector<std::pair<int, int>> policies;
    policies.reserve(config.head_policies.size());
    for (const RetentionPolicy& p : config.head_policies) policies.emplace_back(p.num_sinks, p.window);
    std::sort(policies.begin(), policies.end());
    groups = static_cast<std::uint64_t>(std::unique(policies.begin(), policies.end()) - policies.begin());
  }
  const std::uint64_t heads = static_cast<std::uint64_t>(config.num_layers) *
                              static_cast<std::uint64_t>(config.num_kv_heads);
  std::uint64_t bytes = saturating_multiply(config.storage_elements(), element_bytes);
  // stream_rows + sink_rows + log-sum-exps
  bytes = saturating_add(bytes, saturating_multiply(chunk * (2 * head_elements + static_cast<std::uint64_t>(
                                                                                      config.query_heads())),
                                                    compute_bytes));
  if (config.encoding.kind == PositionEncoding::Kind::kRope) {
    const std::uint64_t pairs = static_cast<std::uint64_t>(config.rotary_dim() / 2);
    const std::uint64_t rotations = saturating_multiply(chunk, saturating_add(groups, 1));
    bytes = saturating_add(bytes, saturating_multiply(rotations, saturating_add(2 * 8 * pairs, 64)));
    bytes = saturating_add(bytes, 8 * pairs);  // the inverse frequencies
  }
  if (config.encoding.kind == PositionEncoding::Kind::kAlibi) {  // slopes, in double and in compute type
    bytes = saturating_add(bytes, static_cast<std::uint64_t>(config.query_heads()) * (8 + compute_bytes));
  }
  // per-query offsets; policy groups, positions, segments: a few words per head and group
  bytes = saturating_add(bytes, saturating_add(chunk * 16, saturating_multiply(heads + groups, 64)));
  return bytes;
}

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail
