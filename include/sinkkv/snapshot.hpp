// sinkkv: snapshots - a cache's whole state (configuration, positions, K/V
// rows) saved to bytes, a stream or a file, and restored after a restart.
//
//   save_snapshot_file(cache, "conversation-17.sinkkv");            // atomic
//   auto cache = load_snapshot_file<Eigen::half>("conversation-17.sinkkv");
//   restore_snapshot_file(cache, path);  // into an existing cache, same configuration
//
// A restored cache continues exactly as the saved one would have: the same
// rows, positions, step protocol and RoPE rotations, so every later append
// and attend gives bit-identical results. The format (docs/design.md,
// "Snapshots") is versioned, little-endian on every host, and checked by
// CRC-32C over the header and over the payload. Any bad input - truncated,
// corrupted, another version, element type or configuration, not a snapshot
// at all - throws sinkkv::Error naming what is wrong (offset, field,
// expected and found), and a cache given to restore_snapshot() is then left
// exactly as it was.
//
// Cost: saving reads each stored row once (CRC-32C) and copies it only into
// the destination; restoring allocates the new cache (as its constructor
// does) plus the header's size, and reads each row once into place. Thread
// safety: as for any use of a cache, one thread at a time per cache.
//
// Not included by sinkkv.hpp: it brings file I/O (and, on POSIX systems,
// <unistd.h>). The file functions exist where POSIX does (Linux, macOS, the
// BSDs); the byte and stream forms everywhere.
#pragma once

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <istream>
#include <limits>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "cache.hpp"
#include "config.hpp"
#include "detail/abi_namespace.hpp"
#include "detail/crc32c.hpp"
#include "detail/element.hpp"
#include "detail/snapshot_format.hpp"
#include "error.hpp"
#include "positions.hpp"

#if defined(__unix__) || defined(__unix) || defined(__APPLE__)
#include <fcntl.h>
#include <stdlib.h>  // mkstemp
#include <sys/stat.h>
#include <unistd.h>
#define SINKKV_SNAPSHOT_FILES 1
#else
#define SINKKV_SNAPSHOT_FILES 0
#endif

namespace sinkkv {
inline namespace SINKKV_ABI_NAMESPACE {

/// The snapshot format version this build writes and reads.
inline constexpr std::uint32_t kSnapshotVersion = detail::kSnapshotFormatVersion;

/// What a reader accepts besides a well-formed snapshot.
struct SnapshotReadOptions {
  /// Restore only a snapshot whose configuration equals this one, every
  /// field (doubles to the bit); otherwise sinkkv::Error names the first
  /// field that differs. restore_snapshot() expects the target's own
  /// configuration when this is unset.
  std::optional<CacheConfig> expected_config;
  /// Refuse, before allocating anything, a snapshot whose cache would take
  /// more than this many bytes (K/V storage plus per-step scratch, bounded
  /// from above). For snapshots from sources you do not fully trust.
  std::uint64_t max_memory_bytes = std::numeric_limits<std::uint64_t>::max();
};

/// A snapshot's header: enough to pick the element type and check the
/// configuration before restoring. read_snapshot_info() checks the header's
/// checksum but does not read the payload.
struct SnapshotInfo {
  std::uint32_t format_version = 0;
  /// "float", "double", "half" or "bfloat16": restore as SinkKVCache<float>,
  /// <double>, <Eigen::half>, <Eigen::bfloat16>.
  std::string element_type;
  std::size_t element_bytes = 0;
  CacheConfig config;
  std::uint64_t tokens_seen = 0;
  /// Tokens of the last step (0 for an empty cache) and whether the
  /// sequence begins its steps explicitly (SinkKVCache::begin_step).
  int step_length = 0;
  bool explicit_steps = false;
  std::uint64_t payload_bytes = 0;
  /// Size of the whole snapshot.
  std::uint64_t total_bytes = 0;
};

}  // namespace SINKKV_ABI_NAMESPACE
namespace detail {
inline namespace SINKKV_ABI_NAMESPACE {

/// The friend of SinkKVCache through which snapshots read and rebuild a
/// cache's state.
struct SnapshotAccess {
  template <class T>
  static auto& state(SinkKVCache<T>& cache) {
    return cache.state_;
  }
  template <class T>
  static const auto& state(const SinkKVCache<T>& cache) {
    return cache.state_;
  }
};

/// The stream tokens whose rows a snapshot stores for one policy: the cached
/// sinks, and the window tokens the current step's queries can still see -
/// the window of a one-token step, reaching step_length - 1 tokens further
/// back after a chunk (so that the chunk can still be attended after a
/// restore). Ring slots beyond that are never read again and are not stored.
struct StoredTokens {
  int sinks = 0;
  std::uint64_t window_first = 0;  // [window_first, window_last), all >= num_sinks
  std::uint64_t window_last = 0;

  std::uint64_t count() const { return static_cast<std::uint64_t>(sinks) + (window_last - window_first); }
};

inline StoredTokens stored_tokens(const RetentionPolicy& policy, std::uint64_t tokens_seen, int step_length) {
  StoredTokens stored;
  const std::uint64_t sinks = static_cast<std::uint64_t>(policy.num_sinks);
  stored.sinks = static_cast<int>(std::min(tokens_seen, sinks));
  stored.window_first = stored.window_last = tokens_seen;
  if (tokens_seen <= sinks) return stored;
  const std::uint64_t reach = static_cast<std::uint64_t>(step_length) + static_cast<std::uint64_t>(policy.window);
  const std::uint64_t first = tokens_seen + 1 > reach ? tokens_seen + 1 - reach : 0;
  stored.window_first = std::max(first, sinks);
  return stored;
}

/// Payload bytes of a snapshot of this configuration and state (saturating).
inline std::uint64_t snapshot_payload_bytes(const CacheConfig& config, std::uint64_t tokens_seen, int step_length,
                                            std::size_t element_bytes) {
  const std::uint64_t row_bytes = 2 * static_cast<std::uint64_t>(config.head_dim) * element_bytes;  // K and V
  std::uint64_t total = 0;
  for (int layer = 0; layer < config.num_layers; ++layer) {
    for (int head = 0; head < config.num_kv_heads; ++head) {
      const StoredTokens stored = stored_tokens(config.policy(layer, head), tokens_seen, step_length);
      total = saturating_add(total, saturating_multiply(stored.count(), row_bytes));
    }
  }
  return total;
}

/// Where in the payload a read or write was: for messages.
struct PayloadPart {
  int layer = 0;
  int kv_head = 0;
  int kind = 0;  // 0 keys, 1 values
};
inline std::ostream& operator<<(std::ostream& out, const PayloadPart& part) {
  return out << "the payload (layer " << part.layer << " KV head " << part.kv_head << (part.kind == 0 ? " keys" : " values")
             << ")";
}

/// Calls visit(rows, elements, part) for every run of stored rows of a
/// cache state, in payload order: per layer, per KV head, keys then values,
/// each as the sinks and then the window tokens in stream order (at most
/// three runs of consecutive slots). `State` is the cache's state, const
/// for writing.
template <class State, class Visit>
void for_each_stored_run(State& state, std::uint64_t tokens_seen, int step_length, Visit&& visit) {
  const CacheConfig& config = state.model->config;
  const PolicyGroups& groups = state.model->groups;
  const std::size_t head_dim = static_cast<std::size_t>(config.head_dim);
  for (int layer = 0; layer < config.num_layers; ++layer) {
    for (int head = 0; head < config.num_kv_heads; ++head) {
      const int group = groups.group_of(layer, head);
      const int member = groups.member_of(layer, head);
      const CachePositions& positions = state.sequence.positions(group);
      const StoredTokens stored = stored_tokens(groups.policy(group), tokens_seen, step_length);
      std::array<CachePositions::WindowRun, 2> runs;
      const int num_runs = positions.window_runs(stored.window_first, stored.window_last, runs);
      for (int kind = 0; kind < 2; ++kind) {
        const PayloadPart part{layer, head, kind};
        if (stored.sinks > 0) visit(state.store.row(group, member, kind, 0), stored.sinks * head_dim, part);
        for (int r = 0; r < num_runs; ++r) {
          visit(state.store.row(group, member, kind, runs[static_cast<std::size_t>(r)].first_slot),
                static_cast<std::size_t>(runs[static_cast<std::size_t>(r)].length) * head_dim, part);
        }
      }
    }
  }
}

// ---- writing ---------------------------------------------------------------

/// Writes one snapshot of `cache` to `sink` (sink.write(const void*,
/// size_t), which throws on failure). Throws sinkkv::Error for a moved-from
/// cache or one in the middle of a step.
template <class T, class Sink>
void write_snapshot(const SinkKVCache<T>& cache, Sink& sink) {
  const auto& state_pointer = SnapshotAccess::state(cache);
  SINKKV_CHECK(state_pointer != nullptr, "save_snapshot of a moved-from SinkKVCache (it holds no state)");
  const auto& state = *state_pointer;
  const StepProtocol& protocol = state.sequence.protocol();
  const std::uint64_t tokens_seen = protocol.tokens_seen();
  const int step_length = protocol.step_length();
  SINKKV_CHECK(protocol.step_complete(),
               "save_snapshot in the middle of a step: not every layer has appended the step of stream indices "
                   << protocol.step_first_index() << ".." << tokens_seen - 1
                   << " (snapshots are taken at step boundaries)");
  const CacheConfig& config = state.model->config;

  std::vector<unsigned char> fields;
  FieldWriter field_writer(fields);
  visit_config_fields(config, field_writer);
  field_writer.u64(tokens_seen);
  field_writer.u32(static_cast<std::uint32_t>(step_length));
  field_writer.u8(protocol.explicit_steps() ? 1 : 0);

  const std::uint64_t payload_bytes = snapshot_payload_bytes(config, tokens_seen, step_length, sizeof(T));
  std::vector<unsigned char> head(std::begin(kSnapshotMagic), std::end(kSnapshotMagic));
  head.reserve(kSnapshotPreambleBytes + fields.size() + kSnapshotChecksumBytes);
  FieldWriter preamble(head);
  preamble.u32(kSnapshotFormatVersion);
  preamble.u32(SnapshotElement<T>::kCode);
  preamble.u32(static_cast<std::uint32_t>(sizeof(T)));
  preamble.u32(0);  // flags
  preamble.u64(fields.size());
  preamble.u64(payload_bytes);
  head.insert(head.end(), fields.begin(), fields.end());
  preamble.u32(crc32c(head.data(), head.size()));
  sink.write(head.data(), head.size());

  Crc32c checksum;
  const bool little_endian = host_is_little_endian();
  std::vector<unsigned char> encoded;
  for_each_stored_run(state, tokens_seen, step_length, [&](const T* rows, std::size_t elements, const PayloadPart&) {
    const std::size_t bytes = elements * sizeof(T);
    if (little_endian) {
      checksum.update(rows, bytes);
      sink.write(rows, bytes);
    } else {
      encoded.resize(bytes);
      encode_elements_portable(rows, elements, encoded.data());
      checksum.update(encoded.data(), bytes);
      sink.write(encoded.data(), bytes);
    }
  });
  std::vector<unsigned char> tail;
  FieldWriter(tail).u32(checksum.value());
  sink.write(tail.data(), tail.size());
}

struct VectorSink {
  std::vector<std::uint8_t>* out;
  void write(const void* data, std::size_t size) {
    const auto* bytes = static_cast<const std::uint8_t*>(data);
    out->insert(out->end(), bytes, bytes + size);
  }
};

struct StreamSink {
  std::ostream* out;
  std::uint64_t written = 0;
  void write(const void* data, std::size_t size) {
    const char* bytes = static_cast<const char*>(data);
    while (size > 0) {
      const std::size_t piece = std::min<std::size_t>(size, std::size_t{1} << 30);
      out->write(bytes, static_cast<std::streamsize>(piece));
      SINKKV_CHECK(out->good(), "save_snapshot: writing to the stream failed at byte " << written);
      written += piece;
      bytes += piece;
      size -= piece;
    }
  }
};

// ---- reading ---------------------------------------------------------------

/// Snapshot bytes from a buffer. Every shortfall throws, naming the offset.
class BufferSource {
 public:
  BufferSource(const void* data, std::size_t size, std::string origin)
      : data_(static_cast<const unsigned char*>(data)), size_(size), origin_(std::move(origin)) {
    SINKKV_CHECK(data_ != nullptr || size_ == 0, origin_ << ": the data pointer is null");
  }
  const std::string& origin() const { return origin_; }
  std::uint64_t offset() const { return position_; }

  std::size_t read_some(void* out, std::size_t size) {
    const std::size_t n = std::min(size, size_ - position_);
    if (n > 0) std::memcpy(out, data_ + position_, n);
    position_ += n;
    return n;
  }
  template <class What>
  void read(void* out, std::uint64_t size, const What& what) {
    check_available(size, what);
    read_some(out, static_cast<std::size_t>(size));
  }
  template <class What>
  void read_into(std::vector<unsigned char>& out, std::uint64_t size, const What& what) {
    check_available(size, what);  // before allocating
    out.resize(static_cast<std::size_t>(size));
    read_some(out.data(), out.size());
  }
  /// Throws unless every byte was read.
  void check_end() const {
    SINKKV_CHECK(position_ == size_, origin_ << ": " << size_ - position_ << " bytes follow the snapshot's end at offset "
                                             << position_ << " (the buffer holds " << size_ << ")");
  }

 private:
  template <class What>
  void check_available(std::uint64_t size, const What& what) const {
    SINKKV_CHECK(size <= size_ - position_, origin_ << ": truncated: " << what << " needs bytes [" << position_ << ", "
                                                    << position_ + size << "), but the snapshot ends at byte " << size_);
  }

  const unsigned char* data_;
  std::size_t size_;
  std::size_t position_ = 0;
  std::string origin_;
};

/// Snapshot bytes from a stream, read in pieces (a corrupt size cannot make
/// the reader allocate more than the stream holds).
class StreamSource {
 public:
  StreamSource(std::istream& in, std::string origin) : in_(&in), origin_(std::move(origin)) {}
  const std::string& origin() const { return origin_; }
  std::uint64_t offset() const { return position_; }

  std::size_t read_some(void* out, std::size_t size) {
    std::size_t total = 0;
    char* bytes = static_cast<char*>(out);
    while (total < size && *in_) {
      const std::size_t piece = std::min<std::size_t>(size - total, std::size_t{1} << 30);
      in_->read(bytes + total, static_cast<std::streamsize>(piece));
      total += static_cast<std::size_t>(in_->gcount());
      if (static_cast<std::size_t>(in_->gcount()) < piece) break;
    }
    position_ += total;
    return total;
  }
  template <class What>
  void read(void* out, std::uint64_t size, const What& what) {
    const std::uint64_t start = position_;
    SINKKV_CHECK(size <= std::numeric_limits<std::size_t>::max(), origin_ << ": " << what << " of " << size << " bytes");
    const std::size_t got = read_some(out, static_cast<std::size_t>(size));
    SINKKV_CHECK(got == size, origin_ << ": truncated: " << what << " needs bytes [" << start << ", " << start + size
                                      << "), but the stream ends at byte " << start + got);
  }
  template <class What>
  void read_into(std::vector<unsigned char>& out, std::uint64_t size, const What& what) {
    const std::uint64_t start = position_;
    out.clear();
    constexpr std::uint64_t kPiece = std::uint64_t{1} << 20;
    while (out.size() < size) {
      const std::size_t before = out.size();
      const std::size_t piece = static_cast<std::size_t>(std::min<std::uint64_t>(kPiece, size - before));
      out.resize(before + piece);
      const std::size_t got = read_some(out.data() + before, piece);
      SINKKV_CHECK(got == piece, origin_ << ": truncated: " << what << " needs bytes [" << start << ", " << start + size
                                         << "), but the stream ends at byte " << before + got + start);
    }
  }
  /// Throws unless the stream is at its end (for files).
  void check_end() {
    SINKKV_CHECK(in_->peek() == std::char_traits<char>::eof(),
                 origin_ << ": bytes follow the snapshot's end at offset " << position_);
  }

 private:
  std::istream* in_;
  std::uint64_t position_ = 0;
  std::string origin_;
};

inline std::string hex_bytes(const unsigned char* bytes, std::size_t count) {
  std::ostringstream text;
  text << std::hex << std::uppercase << std::setfill('0');
  for (std::size_t i = 0; i < count; ++i) text << (i > 0 ? " " : "") << std::setw(2) << int{bytes[i]};
  return text.str();
}

/// A snapshot's header, read and checked (checksum, codes, configuration,
/// state); the source is left at the payload.
struct SnapshotHeader {
  std::uint32_t element_code = 0;
  CacheConfig config;
  std::uint64_t tokens_seen = 0;
  int step_length = 0;
  bool explicit_steps = false;
  std::uint64_t header_bytes = 0;
  std::uint64_t payload_bytes = 0;
};

template <class Source>
SnapshotHeader read_snapshot_header(Source& source) {
  const std::string& origin = source.origin();
  unsigned char preamble[kSnapshotPreambleBytes] = {};
  const std::size_t got = source.read_some(preamble, sizeof kSnapshotMagic);
  if (got < sizeof kSnapshotMagic || std::memcmp(preamble, kSnapshotMagic, sizeof kSnapshotMagic) != 0) {
    const bool prefix = std::memcmp(preamble, kSnapshotMagic, got) == 0;
    SINKKV_CHECK(!(prefix && got > 0), origin << ": truncated: " << got << " bytes, fewer than the 8 of the magic");
    SINKKV_CHECK(false, origin << ": not a sinkkv snapshot: it starts with "
                               << (got == 0 ? std::string("nothing (no bytes)") : hex_bytes(preamble, got))
                               << ", a snapshot with " << hex_bytes(kSnapshotMagic, sizeof kSnapshotMagic));
  }
  source.read(preamble + 8, 4, "the format version");
  FieldReader version_field(preamble + 8, 4, 8, origin);
  const std::uint32_t version = version_field.u32(FieldName{"version"});
  SINKKV_CHECK(version == kSnapshotFormatVersion, origin << ": format version " << version
                                                         << " (offset 8) is not supported; this build of sinkkv reads "
                                                            "version "
                                                         << kSnapshotFormatVersion);
  source.read(preamble + 12, kSnapshotPreambleBytes - 12, "the preamble");
  FieldReader fields(preamble + 12, kSnapshotPreambleBytes - 12, 12, origin);
  SnapshotHeader header;
  header.element_code = fields.u32(FieldName{"element type"});
  const std::uint32_t element_bytes = fields.u32(FieldName{"element bytes"});
  const std::uint32_t flags = fields.u32(FieldName{"flags"});
  header.header_bytes = fields.u64(FieldName{"header bytes"});
  header.payload_bytes = fields.u64(FieldName{"payload bytes"});

  std::vector<unsigned char> bytes;
  source.read_into(bytes, header.header_bytes, "the header");
  unsigned char stored[4];
  source.read(stored, 4, "the header checksum");
  Crc32c checksum;
  checksum.update(preamble, sizeof preamble);
  checksum.update(bytes.data(), bytes.size());
  const std::uint32_t expected = FieldReader(stored, 4, 0, origin).u32(FieldName{"header checksum"});
  SINKKV_CHECK(checksum.value() == expected,
               origin << ": header checksum mismatch: CRC-32C of bytes [0, " << kSnapshotPreambleBytes + bytes.size()
                      << ") is 0x" << std::hex << checksum.value() << ", the snapshot stores 0x" << expected << std::dec
                      << " at offset " << kSnapshotPreambleBytes + bytes.size() << " (the header is corrupted)");

  SINKKV_CHECK(snapshot_element_bytes(header.element_code) != 0,
               origin << ": element type code " << header.element_code
                      << " (offset 12) is none of 1 float, 2 double, 3 half, 4 bfloat16");
  SINKKV_CHECK(element_bytes == snapshot_element_bytes(header.element_code),
               origin << ": element size " << element_bytes << " (offset 16) does not match element type "
                      << snapshot_element_name(header.element_code) << " ("
                      << snapshot_element_bytes(header.element_code) << " bytes)");
  SINKKV_CHECK(flags == 0, origin << ": flags 0x" << std::hex << flags << std::dec
                                  << " (offset 20) are unknown to this build (expected 0)");

  FieldReader reader(bytes.data(), bytes.size(), kSnapshotPreambleBytes, origin);
  visit_config_fields(header.config, reader);
  const std::uint64_t tokens_offset = reader.offset();
  header.tokens_seen = reader.u64(FieldName{"tokens_seen"});
  const std::uint64_t step_offset = reader.offset();
  reader.i32(FieldName{"step_length"}, header.step_length);
  reader.boolean(FieldName{"explicit_steps"}, header.explicit_steps);
  SINKKV_CHECK(reader.remaining() == 0, origin << ": the header has " << reader.remaining()
                                               << " bytes after its last field (offset " << reader.offset() << ")");
  try {
    header.config.validate();
    (void)header.config.storage_elements();  // throws when it overflows
  } catch (const Error& error) {
    const std::string message = error.what();
    const std::string prefix = "sinkkv: ";
    SINKKV_CHECK(false, origin << ": the configuration in the header (bytes [" << kSnapshotPreambleBytes << ", "
                               << kSnapshotPreambleBytes + bytes.size() << ")) is invalid: "
                               << (message.compare(0, prefix.size(), prefix) == 0 ? message.substr(prefix.size())
                                                                                    : message));
  }
  SINKKV_CHECK(header.tokens_seen < kSnapshotMaxTokensSeen,
               origin << ": tokens_seen " << header.tokens_seen << " (offset " << tokens_offset << ") exceeds 2^62");
  SINKKV_CHECK(header.step_length >= 0 && header.step_length <= header.config.max_chunk,
               origin << ": step_length " << header.step_length << " (offset " << step_offset
                      << ") outside [0, max_chunk " << header.config.max_chunk << "]");
  SINKKV_CHECK((header.step_length == 0) == (header.tokens_seen == 0) &&
                   static_cast<std::uint64_t>(header.step_length) <= header.tokens_seen,
               origin << ": step_length " << header.step_length << " (offset " << step_offset
                      << ") does not fit tokens_seen " << header.tokens_seen
                      << " (a step has 1 to tokens_seen tokens; none before the first)");
  SINKKV_CHECK(!header.explicit_steps || header.tokens_seen > 0,
               origin << ": explicit_steps is set (offset " << step_offset + 4 << ") on an empty sequence");
  return header;
}

template <class T, class Source>
SinkKVCache<T> read_snapshot(Source& source, const CacheConfig* expected_config, std::uint64_t max_memory_bytes,
                             bool require_end) {
  const std::string& origin = source.origin();
  const SnapshotHeader header = read_snapshot_header(source);
  SINKKV_CHECK(header.element_code == SnapshotElement<T>::kCode,
               origin << ": holds " << snapshot_element_name(header.element_code)
                      << " elements (code " << header.element_code << " at offset 12): restore it as SinkKVCache<"
                      << snapshot_element_type(header.element_code) << ">, not SinkKVCache<"
                      << snapshot_element_type(SnapshotElement<T>::kCode) << ">");
  if (expected_config != nullptr) {
    const std::string difference = first_config_difference(header.config, *expected_config);
    SINKKV_CHECK(difference.empty(), origin << ": the configuration is not the expected one: " << difference);
  }
  const std::uint64_t memory = cache_memory_bound(header.config, sizeof(T), sizeof(compute_t<T>));
  SINKKV_CHECK(memory <= max_memory_bytes, origin << ": restoring would allocate up to " << memory
                                                  << " bytes, above max_memory_bytes " << max_memory_bytes);
  const std::uint64_t payload_bytes =
      snapshot_payload_bytes(header.config, header.tokens_seen, header.step_length, sizeof(T));
  SINKKV_CHECK(header.payload_bytes == payload_bytes,
               origin << ": payload bytes " << header.payload_bytes << " (offset 32) do not match the configuration "
                      << "and tokens_seen " << header.tokens_seen << ", which store " << payload_bytes);

  SinkKVCache<T> cache(header.config);
  auto& state = *SnapshotAccess::state(cache);
  // Positions, protocol, and the last step's RoPE rotations (so that it can
  // still be attended), as the saved cache had them.
  state.sequence.restore(header.tokens_seen, header.step_length, header.explicit_steps);
  Crc32c checksum;
  const std::uint64_t payload_start = source.offset();
  const bool little_endian = host_is_little_endian();
  for_each_stored_run(state, header.tokens_seen, header.step_length,
                      [&](T* rows, std::size_t elements, const PayloadPart& part) {
                        source.read(rows, elements * sizeof(T), part);
                        checksum.update(rows, elements * sizeof(T));
                        if (!little_endian) decode_elements_portable(rows, elements);
                      });
  unsigned char stored[4];
  source.read(stored, 4, "the payload checksum");
  const std::uint32_t expected = FieldReader(stored, 4, 0, origin).u32(FieldName{"payload checksum"});
  SINKKV_CHECK(checksum.value() == expected,
               origin << ": payload checksum mismatch: CRC-32C of bytes [" << payload_start << ", "
                      << payload_start + payload_bytes << ") is 0x" << std::hex << checksum.value()
                      << ", the snapshot stores 0x" << expected << std::dec << " at offset "
                      << payload_start + payload_bytes << " (the K/V rows are corrupted)");
  if (require_end) source.check_end();
  return cache;
}

inline SnapshotInfo info_of(const SnapshotHeader& header) {
  SnapshotInfo info;
  info.format_version = kSnapshotFormatVersion;
  info.element_type = snapshot_element_name(header.element_code);
  info.element_bytes = snapshot_element_bytes(header.element_code);
  info.config = header.config;
  info.tokens_seen = header.tokens_seen;
  info.step_length = header.step_length;
  info.explicit_steps = header.explicit_steps;
  info.payload_bytes = header.payload_bytes;
  info.total_bytes = kSnapshotPreambleBytes + header.header_bytes + 2 * kSnapshotChecksumBytes + header.payload_bytes;
  return info;
}

template <class T>
const CacheConfig* expected_config_for(const SinkKVCache<T>& target, const SnapshotReadOptions& options) {
  if (options.expected_config) return &*options.expected_config;
  return SnapshotAccess::state(target) != nullptr ? &target.config() : nullptr;
}

#if SINKKV_SNAPSHOT_FILES

inline std::string errno_text(int error) { return std::generic_category().message(error); }

/// Writes to a file descriptor, in pieces of at most 1 GiB, retrying
/// interrupted and partial writes.
struct FileSink {
  int fd = -1;
  const std::string* path = nullptr;
  std::uint64_t written = 0;
  void write(const void* data, std::size_t size) {
    const char* bytes = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd, bytes, std::min<std::size_t>(size, std::size_t{1} << 30));
      if (n < 0 && errno == EINTR) continue;
      SINKKV_CHECK(n > 0, "save_snapshot_file: writing '" << *path << "' failed at byte " << written << ": "
                                                           << errno_text(n < 0 ? errno : EIO));
      written += static_cast<std::uint64_t>(n);
      bytes += n;
      size -= static_cast<std::size_t>(n);
    }
  }
};

/// Replaces `path` atomically with what `write_contents(FileSink&)` writes:
/// a new file in the same directory, written, flushed to the device
/// (fsync), renamed over `path`, and the directory synced, so that a crash
/// at any point leaves either the old file or the complete new one. On an
/// error the temporary file is removed and `path` is untouched. (A crash
/// can leave a `<path>.tmp-XXXXXX` file behind; it is never read.)
template <class WriteContents>
void replace_file_atomically(const std::string& path, WriteContents&& write_contents) {
  SINKKV_CHECK(!path.empty(), "save_snapshot_file: empty path");
  std::vector<char> temporary(path.begin(), path.end());
  const char suffix[] = ".tmp-XXXXXX";
  temporary.insert(temporary.end(), suffix, suffix + sizeof suffix);  // with the terminating 0
  const int fd = ::mkstemp(temporary.data());  // created 0600: a snapshot holds a conversation
  SINKKV_CHECK(fd >= 0, "save_snapshot_file: cannot create a temporary file next to '" << path << "': "
                                                                                       << errno_text(errno));
  const std::string temporary_path(temporary.data());
  try {
    FileSink sink{fd, &temporary_path, 0};
    write_contents(sink);
    while (::fsync(fd) != 0) {
      SINKKV_CHECK(errno == EINTR, "save_snapshot_file: flushing '" << temporary_path << "' to its device failed: "
                                                                   << errno_text(errno));
    }
  } catch (...) {
    ::close(fd);
    ::unlink(temporary_path.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int error = errno;
    ::unlink(temporary_path.c_str());
    SINKKV_CHECK(false, "save_snapshot_file: closing '" << temporary_path << "' failed: " << errno_text(error));
  }
  if (::rename(temporary_path.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(temporary_path.c_str());
    SINKKV_CHECK(false, "save_snapshot_file: cannot rename '" << temporary_path << "' to '" << path
                                                              << "': " << errno_text(error) << " ('" << path
                                                              << "' is unchanged)");
  }
  // The rename is durable once the directory entry is.
  const std::size_t slash = path.find_last_of('/');
  const std::string directory = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const int directory_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  SINKKV_CHECK(directory_fd >= 0, "save_snapshot_file: '" << path << "' was written, but its directory '" << directory
                                                          << "' cannot be opened to sync it: " << errno_text(errno)
                                                          << " (the new file may not survive a power failure)");
  int sync_error = 0;
  while (::fsync(directory_fd) != 0) {
    if (errno == EINTR) continue;
    // Some file systems cannot sync a directory; there is nothing more to do.
    if (errno != EINVAL && errno != EROFS) sync_error = errno;
    break;
  }
  ::close(directory_fd);
  SINKKV_CHECK(sync_error == 0, "save_snapshot_file: '" << path << "' was written, but syncing its directory '"
                                                        << directory << "' failed: " << errno_text(sync_error)
                                                        << " (the new file may not survive a power failure)");
}

#endif  // SINKKV_SNAPSHOT_FILES

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace detail
inline namespace SINKKV_ABI_NAMESPACE {

// ---- saving ----------------------------------------------------------------

/// Writes a snapshot of `cache` to `out`. The cache must be at a step
/// boundary (every layer appended the current step) and not moved-from;
/// otherwise sinkkv::Error, with nothing written. Throws sinkkv::Error if
/// the stream fails (what was written before stays written: use
/// save_snapshot_file for an atomic replacement). Cost: one pass over the
/// cached rows (CRC-32C), no copy of them on little-endian hosts.
template <class T>
void save_snapshot(const SinkKVCache<T>& cache, std::ostream& out) {
  detail::StreamSink sink{&out};
  detail::write_snapshot(cache, sink);
}

/// The snapshot of `cache` as bytes (allocates the snapshot's size once).
template <class T>
std::vector<std::uint8_t> save_snapshot(const SinkKVCache<T>& cache) {
  std::vector<std::uint8_t> bytes;
  if (detail::SnapshotAccess::state(cache) != nullptr && cache.token_complete()) {
    const CacheConfig& config = cache.config();
    bytes.reserve(static_cast<std::size_t>(
        1024 + 8 * (config.head_policies.size() + config.encoding.alibi.slopes.size() +
                    config.encoding.rope.scaling.explicit_inv_frequencies.size()) +
        detail::snapshot_payload_bytes(config, cache.tokens_seen(), cache.step_length(), sizeof(T))));
  }
  detail::VectorSink sink{&bytes};
  detail::write_snapshot(cache, sink);
  return bytes;
}

#if SINKKV_SNAPSHOT_FILES
/// Saves a snapshot of `cache` to `path`, atomically: written to a new file
/// next to it, synced to the device, renamed over `path`, and the directory
/// synced. A failure or a crash at any point leaves the previous file at
/// `path` (if any) intact; on a failure sinkkv::Error names the path and
/// the system's reason, and the temporary file is removed. The new file is
/// readable by its owner only (0600). POSIX systems only.
template <class T>
void save_snapshot_file(const SinkKVCache<T>& cache, const std::string& path) {
  detail::replace_file_atomically(path, [&](detail::FileSink& sink) { detail::write_snapshot(cache, sink); });
}
#endif

// ---- loading ---------------------------------------------------------------

/// A new cache restored from the snapshot in bytes [data, data + size),
/// which must hold exactly one snapshot of SinkKVCache<T>. Throws
/// sinkkv::Error naming what is wrong (see the file comment) and allocates
/// only what the restored cache needs (after the header is checked).
template <class T>
SinkKVCache<T> load_snapshot(const void* data, std::size_t size, const SnapshotReadOptions& options = {}) {
  detail::BufferSource source(data, size, "snapshot");
  return detail::read_snapshot<T>(source, options.expected_config ? &*options.expected_config : nullptr,
                                  options.max_memory_bytes, true);
}

/// A new cache restored from the next snapshot in `in`; the stream is left
/// after it (further data may follow), at an unspecified place on error.
template <class T>
SinkKVCache<T> load_snapshot(std::istream& in, const SnapshotReadOptions& options = {}) {
  detail::StreamSource source(in, "snapshot stream");
  return detail::read_snapshot<T>(source, options.expected_config ? &*options.expected_config : nullptr,
                                  options.max_memory_bytes, false);
}

/// Restores the snapshot in [data, data + size) into `target`, whose
/// configuration the snapshot must have (options.expected_config instead,
/// when set; any, when `target` is moved-from). On any error `target` is
/// left exactly as it was: the new state is built in full first, then moved
/// in (so, for a moment, both exist).
template <class T>
void restore_snapshot(SinkKVCache<T>& target, const void* data, std::size_t size,
                      const SnapshotReadOptions& options = {}) {
  detail::BufferSource source(data, size, "snapshot");
  target = detail::read_snapshot<T>(source, detail::expected_config_for(target, options), options.max_memory_bytes,
                                    true);
}

/// restore_snapshot from the next snapshot in `in`.
template <class T>
void restore_snapshot(SinkKVCache<T>& target, std::istream& in, const SnapshotReadOptions& options = {}) {
  detail::StreamSource source(in, "snapshot stream");
  target = detail::read_snapshot<T>(source, detail::expected_config_for(target, options), options.max_memory_bytes,
                                    false);
}

/// The header of the snapshot in [data, data + size), checked (checksum,
/// fields, configuration), without reading the payload.
inline SnapshotInfo read_snapshot_info(const void* data, std::size_t size) {
  detail::BufferSource source(data, size, "snapshot");
  return detail::info_of(detail::read_snapshot_header(source));
}

#if SINKKV_SNAPSHOT_FILES
}  // namespace SINKKV_ABI_NAMESPACE
namespace detail {
inline namespace SINKKV_ABI_NAMESPACE {
inline std::ifstream open_snapshot_file(const std::string& path) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  SINKKV_CHECK(in.is_open(), "snapshot file '" << path << "' cannot be opened: " << errno_text(errno != 0 ? errno : ENOENT));
  return in;
}
}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace detail
inline namespace SINKKV_ABI_NAMESPACE {

/// load_snapshot from a file, which must hold exactly one snapshot.
template <class T>
SinkKVCache<T> load_snapshot_file(const std::string& path, const SnapshotReadOptions& options = {}) {
  std::ifstream in = detail::open_snapshot_file(path);
  detail::StreamSource source(in, "snapshot file '" + path + "'");
  return detail::read_snapshot<T>(source, options.expected_config ? &*options.expected_config : nullptr,
                                  options.max_memory_bytes, true);
}

/// restore_snapshot from a file, which must hold exactly one snapshot.
template <class T>
void restore_snapshot_file(SinkKVCache<T>& target, const std::string& path, const SnapshotReadOptions& options = {}) {
  std::ifstream in = detail::open_snapshot_file(path);
  detail::StreamSource source(in, "snapshot file '" + path + "'");
  target = detail::read_snapshot<T>(source, detail::expected_config_for(target, options), options.max_memory_bytes,
                                    true);
}

/// read_snapshot_info of a file's snapshot (reads the header only).
inline SnapshotInfo read_snapshot_info_file(const std::string& path) {
  std::ifstream in = detail::open_snapshot_file(path);
  detail::StreamSource source(in, "snapshot file '" + path + "'");
  return detail::info_of(detail::read_snapshot_header(source));
}
#endif

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv
