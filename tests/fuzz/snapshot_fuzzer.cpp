// Fuzz target: the snapshot reader (snapshot.hpp) on arbitrary bytes.
//
// Input: one mode byte, then the snapshot. Mode bit 0: recompute both
// CRC-32C checksums first (where the sizes in the preamble allow), so that
// mutations reach the field parser and validation instead of stopping at a
// checksum; bits 1-2: the element type to restore as (float, double, half,
// bfloat16).
//
// Contract checked, beyond "no crash, no sanitizer report":
//  * every input loads or throws sinkkv::Error (anything else escapes);
//  * the stream reader and read_snapshot_info agree with the buffer reader;
//  * restore_snapshot into a cache leaves it unchanged when it throws;
//  * a snapshot that loads is canonical: saving the loaded cache gives the
//    input back byte for byte; a cache restored into an existing one has the
//    same observable state; and the loaded cache takes one more step (every
//    layer appends and attends) without error.
// Restores are capped at 16 MiB (SnapshotReadOptions::max_memory_bytes).
#include <sinkkv/snapshot.hpp>
#include <sinkkv/sinkkv.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace sinkkv;

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "snapshot_fuzzer: %s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

std::uint64_t read_le(const std::vector<std::uint8_t>& bytes, std::size_t offset, int width) {
  std::uint64_t value = 0;
  for (int b = 0; b < width; ++b) value |= std::uint64_t{bytes[offset + static_cast<std::size_t>(b)]} << (8 * b);
  return value;
}
void write_le(std::vector<std::uint8_t>& bytes, std::size_t offset, std::uint32_t value) {
  for (int b = 0; b < 4; ++b) bytes[offset + static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(value >> (8 * b));
}

// Recomputes the header and payload checksums at the places the preamble's
// sizes give, when they lie inside the input.
void reseal(std::vector<std::uint8_t>& bytes) {
  if (bytes.size() < 40) return;
  const std::uint64_t header = read_le(bytes, 24, 8);
  const std::uint64_t payload = read_le(bytes, 32, 8);
  if (header > bytes.size() || 44 + header > bytes.size()) return;
  const std::size_t header_end = 40 + static_cast<std::size_t>(header);
  write_le(bytes, header_end, detail::crc32c(bytes.data(), header_end));
  if (payload > bytes.size() || header_end + 8 + payload > bytes.size()) return;
  const std::size_t payload_start = header_end + 4;
  write_le(bytes, payload_start + static_cast<std::size_t>(payload),
           detail::crc32c(bytes.data() + payload_start, static_cast<std::size_t>(payload)));
}

template <class T>
std::vector<unsigned char> fingerprint(const SinkKVCache<T>& cache) {
  std::ostringstream out;
  out << cache.tokens_seen() << " " << cache.step_length() << " " << cache.token_complete() << " "
      << cache.num_layers() << "|";
  std::string text = out.str();
  std::vector<unsigned char> bytes(text.begin(), text.end());
  if (cache.num_layers() == 0) return bytes;
  const CacheConfig& c = cache.config();
  for (int layer = 0; layer < c.num_layers; ++layer) {
    for (int head = 0; head < c.num_kv_heads; ++head) {
      const CachePositions& positions = cache.positions(layer, head);
      for (int i = 0; i < positions.size(); ++i) {
        const std::uint64_t t = positions.stream_index(i);
        const auto* k = reinterpret_cast<const unsigned char*>(cache.key_row(layer, head, i));
        const auto* v = reinterpret_cast<const unsigned char*>(cache.value_row(layer, head, i));
        bytes.insert(bytes.end(), reinterpret_cast<const unsigned char*>(&t), reinterpret_cast<const unsigned char*>(&t) + 8);
        bytes.insert(bytes.end(), k, k + sizeof(T) * static_cast<std::size_t>(c.head_dim));
        bytes.insert(bytes.end(), v, v + sizeof(T) * static_cast<std::size_t>(c.head_dim));
      }
    }
  }
  return bytes;
}

// One more step on every layer; the rows loaded may hold anything, so the
// outputs are not checked, only that the step runs.
template <class T>
void take_a_step(SinkKVCache<T>& cache) {
  using C = compute_t<T>;
  const CacheConfig& c = cache.config();
  if (cache.tokens_seen() > 0) {
    SnapshotInfo info;  // begin explicitly when the sequence does
    const std::vector<std::uint8_t> bytes = save_snapshot(cache);
    info = read_snapshot_info(bytes.data(), bytes.size());
    if (info.explicit_steps) cache.begin_step(cache.tokens_seen(), 1);
  }
  const std::vector<float> k(static_cast<std::size_t>(c.num_kv_heads * c.head_dim), 0.25f);
  const std::vector<float> q(static_cast<std::size_t>(c.query_heads() * c.head_dim), 0.5f);
  std::vector<C> out(q.size());
  for (int layer = 0; layer < c.num_layers; ++layer) {
    cache.append(layer, heads_view(k.data(), c.num_kv_heads, c.head_dim), heads_view(k.data(), c.num_kv_heads, c.head_dim));
    cache.attend(layer, heads_view(q.data(), c.query_heads(), c.head_dim), output_view(out.data(), c.query_heads(), c.head_dim),
                 ReferenceKernel{});
  }
}

template <class T>
void check(const std::vector<std::uint8_t>& bytes) {
  SnapshotReadOptions options;
  options.max_memory_bytes = std::uint64_t{16} << 20;

  std::optional<SinkKVCache<T>> loaded;
  std::string error;
  try {
    loaded.emplace(load_snapshot<T>(bytes.data(), bytes.size(), options));
  } catch (const Error& e) {
    error = e.what();
  }

  // The stream reader reads the same snapshot (it leaves any bytes after it).
  std::istringstream stream(std::string(bytes.begin(), bytes.end()));
  std::optional<SinkKVCache<T>> streamed;
  try {
    streamed.emplace(load_snapshot<T>(stream, options));
  } catch (const Error&) {
  }
  if (loaded && !streamed) fail("the buffer reader accepts what the stream reader rejects");
  if (streamed && !loaded && error.find("follow the snapshot's end") == std::string::npos) {
    fail("the stream reader accepts what the buffer reader rejects: " + error);
  }

  // A target of another configuration stays as it was.
  CacheConfig other;
  other.num_layers = 1;
  other.num_kv_heads = 1;
  other.head_dim = 2;
  other.num_sinks = 1;
  other.window = 2;
  SinkKVCache<T> target(other);
  const std::vector<float> row{0.5f, -0.5f};
  target.append(0, heads_view(row.data(), 1, 2), heads_view(row.data(), 1, 2));
  const std::vector<unsigned char> before = fingerprint(target);
  SnapshotReadOptions any_configuration = options;
  try {
    if (loaded) any_configuration.expected_config = loaded->config();
    restore_snapshot(target, bytes.data(), bytes.size(), any_configuration);
  } catch (const Error&) {
    if (fingerprint(target) != before) fail("a failed restore_snapshot changed its target");
  }

  if (!loaded) return;
  if (fingerprint(target) != fingerprint(*loaded)) fail("restore_snapshot and load_snapshot disagree");
  if (fingerprint(*streamed) != fingerprint(*loaded)) fail("the stream and buffer readers disagree");
  const SnapshotInfo info = read_snapshot_info(bytes.data(), bytes.size());
  if (info.tokens_seen != loaded->tokens_seen() || info.step_length != loaded->step_length() ||
      info.total_bytes != bytes.size()) {
    fail("read_snapshot_info disagrees with the loaded cache");
  }
  if (save_snapshot(*loaded) != bytes) fail("saving a loaded snapshot does not reproduce its bytes");
  take_a_step(*loaded);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t mode = data[0];
  std::vector<std::uint8_t> bytes(data + 1, data + size);
  if ((mode & 1) != 0) reseal(bytes);
  switch ((mode >> 1) & 3) {
    case 0: check<float>(bytes); break;
    case 1: check<double>(bytes); break;
    case 2: check<Eigen::half>(bytes); break;
    default: check<Eigen::bfloat16>(bytes); break;
  }
  return 0;
}
