// Snapshots (snapshot.hpp): the format as specified in docs/design.md, read
// back by a parser written here; round trips at many points of streams of
// every element type, encoding, policy mix and step size, continued next to
// an uninterrupted clone with bit-identical results; every truncation and
// every single-bit flip rejected; wrong versions, element types,
// configurations and non-snapshots named; atomic files under injected
// failures and a crash during a save.
#include <sinkkv/snapshot.hpp>

#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sinkkv/sinkkv.hpp>

#include "fuzz/snapshot_seeds.hpp"
#include "support/streams.hpp"

namespace sinkkv::testing {
namespace {

// Tripwire: a field added to the configuration must be added to the
// snapshot format (detail::visit_config_fields) and the version bumped.
// Sizes of this platform's types (libstdc++, 64-bit).
#if defined(__GLIBCXX__) && defined(__x86_64__)
static_assert(sizeof(RetentionPolicy) == 8, "RetentionPolicy changed: update the snapshot format");
static_assert(sizeof(RopeScaling) == 120, "RopeScaling changed: update the snapshot format");
static_assert(sizeof(RopeConfig) == 136, "RopeConfig changed: update the snapshot format");
static_assert(sizeof(AlibiConfig) == 24, "AlibiConfig changed: update the snapshot format");
static_assert(sizeof(PositionEncoding) == 168, "PositionEncoding changed: update the snapshot format");
static_assert(sizeof(CacheConfig) == 232, "CacheConfig changed: update the snapshot format");
#endif

// ---- independent references ----------------------------------------------------

// CRC-32C one bit at a time, straight from the definition (reflected
// polynomial 0x82F63B78, initial and final inversion).
std::uint32_t crc32c_bitwise(const unsigned char* data, std::size_t size) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < size; ++i) {
    crc ^= data[i];
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

std::uint64_t read_le(const std::vector<std::uint8_t>& bytes, std::size_t offset, int width) {
  std::uint64_t value = 0;
  for (int b = 0; b < width; ++b) value |= std::uint64_t{bytes.at(offset + static_cast<std::size_t>(b))} << (8 * b);
  return value;
}
void write_le(std::vector<std::uint8_t>& bytes, std::size_t offset, std::uint64_t value, int width) {
  for (int b = 0; b < width; ++b) bytes.at(offset + static_cast<std::size_t>(b)) = static_cast<std::uint8_t>(value >> (8 * b));
}
double read_f64(const std::vector<std::uint8_t>& bytes, std::size_t offset) {
  const std::uint64_t bits = read_le(bytes, offset, 8);
  double value;
  std::memcpy(&value, &bits, 8);
  return value;
}

// Where the spec puts things: header bytes at 24, payload bytes at 32,
// header from 40, its CRC after it, the payload, the payload CRC last.
struct Layout {
  std::size_t header_bytes;
  std::size_t payload_bytes;
  std::size_t header_checksum_at() const { return 40 + header_bytes; }
  std::size_t payload_at() const { return 44 + header_bytes; }
  std::size_t payload_checksum_at() const { return payload_at() + payload_bytes; }
};
Layout layout_of(const std::vector<std::uint8_t>& bytes) {
  return Layout{static_cast<std::size_t>(read_le(bytes, 24, 8)), static_cast<std::size_t>(read_le(bytes, 32, 8))};
}
// Recomputes both checksums, so that a test can change a field and reach
// the field's own validation.
void reseal(std::vector<std::uint8_t>& bytes) {
  const Layout layout = layout_of(bytes);
  write_le(bytes, layout.header_checksum_at(), crc32c_bitwise(bytes.data(), layout.header_checksum_at()), 4);
  write_le(bytes, layout.payload_checksum_at(),
           crc32c_bitwise(bytes.data() + layout.payload_at(), layout.payload_bytes), 4);
}

// Everything a user can observe of a cache's state, through its public
// observers only.
struct Observed {
  std::uint64_t tokens_seen = 0;
  int step_length = 0;
  bool complete = false;
  std::vector<std::uint64_t> stream_indices;  // every layer, head, cache position
  std::vector<unsigned char> rows;            // their key and value bytes

  bool operator==(const Observed& o) const {
    return tokens_seen == o.tokens_seen && step_length == o.step_length && complete == o.complete &&
           stream_indices == o.stream_indices && rows == o.rows;
  }
};
template <class T>
Observed observe(const SinkKVCache<T>& cache) {
  Observed o;
  o.tokens_seen = cache.tokens_seen();
  o.step_length = cache.step_length();
  o.complete = cache.token_complete();
  if (cache.num_layers() == 0) return o;
  const CacheConfig& c = cache.config();
  for (int layer = 0; layer < c.num_layers; ++layer) {
    for (int head = 0; head < c.num_kv_heads; ++head) {
      const CachePositions& p = cache.positions(layer, head);
      o.stream_indices.push_back(static_cast<std::uint64_t>(p.size()));
      for (int i = 0; i < p.size(); ++i) {
        o.stream_indices.push_back(p.stream_index(i));
        const auto* k = reinterpret_cast<const unsigned char*>(cache.key_row(layer, head, i));
        const auto* v = reinterpret_cast<const unsigned char*>(cache.value_row(layer, head, i));
        o.rows.insert(o.rows.end(), k, k + c.head_dim * sizeof(T));
        o.rows.insert(o.rows.end(), v, v + c.head_dim * sizeof(T));
      }
    }
  }
  return o;
}

// Field-by-field equality of configurations, written out here (doubles by
// value; the fields the test configurations use are never NaN).
void expect_same_config(const CacheConfig& a, const CacheConfig& b) {
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.num_query_heads, b.num_query_heads);
  EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.num_sinks, b.num_sinks);
  EXPECT_EQ(a.window, b.window);
  EXPECT_EQ(a.max_chunk, b.max_chunk);
  EXPECT_EQ(a.input_rotation, b.input_rotation);
  ASSERT_EQ(a.head_policies.size(), b.head_policies.size());
  for (std::size_t i = 0; i < a.head_policies.size(); ++i) EXPECT_EQ(a.head_policies[i], b.head_policies[i]) << i;
  EXPECT_EQ(a.encoding.kind, b.encoding.kind);
  const RopeConfig& r = a.encoding.rope;
  const RopeConfig& s = b.encoding.rope;
  EXPECT_EQ(r.theta, s.theta);
  EXPECT_EQ(r.rotary_dim, s.rotary_dim);
  EXPECT_EQ(r.layout, s.layout);
  EXPECT_EQ(r.scaling.kind, s.scaling.kind);
  EXPECT_EQ(r.scaling.factor, s.scaling.factor);
  EXPECT_EQ(r.scaling.original_max_positions, s.scaling.original_max_positions);
  EXPECT_EQ(r.scaling.low_freq_factor, s.scaling.low_freq_factor);
  EXPECT_EQ(r.scaling.high_freq_factor, s.scaling.high_freq_factor);
  EXPECT_EQ(r.scaling.beta_fast, s.scaling.beta_fast);
  EXPECT_EQ(r.scaling.beta_slow, s.scaling.beta_slow);
  EXPECT_EQ(r.scaling.truncate, s.scaling.truncate);
  EXPECT_EQ(r.scaling.mscale, s.scaling.mscale);
  EXPECT_EQ(r.scaling.mscale_all_dim, s.scaling.mscale_all_dim);
  EXPECT_EQ(r.scaling.attention_factor, s.scaling.attention_factor);
  EXPECT_EQ(r.scaling.explicit_inv_frequencies, s.scaling.explicit_inv_frequencies);
  EXPECT_EQ(a.encoding.alibi.slopes, b.encoding.alibi.slopes);
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no sinkkv::Error)";
}

// ---- streams -------------------------------------------------------------------

// One step of a deterministic stream: every layer appends `count` tokens
// from `first`, then attends them; returns every output, layer-major.
template <class T, class Kernel>
std::vector<compute_t<T>> run_step(SinkKVCache<T>& cache, std::uint64_t first, int count, bool explicit_steps,
                                   bool sink_logits, Kernel& kernel, std::uint64_t seed) {
  using C = compute_t<T>;
  const CacheConfig& c = cache.config();
  const int kv = c.num_kv_heads * c.head_dim;
  const int q = c.query_heads() * c.head_dim;
  if (explicit_steps) cache.begin_step(first, count);
  std::vector<C> logits(static_cast<std::size_t>(c.query_heads()));
  for (int h = 0; h < c.query_heads(); ++h) logits[static_cast<std::size_t>(h)] = static_cast<C>(0.25 * (h % 5) - 0.5);
  typename SinkKVCache<T>::Options options;
  if (sink_logits) {
    options.sink_logits = logits.data();
    options.num_sink_logits = c.query_heads();
  }
  std::vector<C> outputs;
  for (int layer = 0; layer < c.num_layers; ++layer) {
    std::vector<float> k, v, queries;
    for (int i = 0; i < count; ++i) {
      const std::uint64_t t = first + static_cast<std::uint64_t>(i);
      for (float x : token_rows(seed, t, 3 * layer, kv)) k.push_back(x);
      for (float x : token_rows(seed, t, 3 * layer + 1, kv)) v.push_back(x);
      for (float x : token_rows(seed, t, 3 * layer + 2, q)) queries.push_back(x);
    }
    cache.append(layer, tokens_view(k.data(), count, c.num_kv_heads, c.head_dim),
                 tokens_view(v.data(), count, c.num_kv_heads, c.head_dim));
    std::vector<C> out(static_cast<std::size_t>(count * q));
    cache.attend(layer, tokens_view(queries.data(), count, c.query_heads(), c.head_dim),
                 tokens_output_view(out.data(), count, c.query_heads(), c.head_dim), kernel, options);
    outputs.insert(outputs.end(), out.begin(), out.end());
  }
  return outputs;
}

// Attends the cache's current step again (a new query per token) on every layer.
template <class T, class Kernel>
std::vector<compute_t<T>> attend_current_step(SinkKVCache<T>& cache, Kernel& kernel, std::uint64_t seed) {
  using C = compute_t<T>;
  const CacheConfig& c = cache.config();
  const int n = cache.step_length();
  const int q = c.query_heads() * c.head_dim;
  std::vector<C> outputs;
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const std::vector<float> queries = token_rows(seed ^ 0x5EED, cache.tokens_seen(), layer, n * q);
    std::vector<C> out(static_cast<std::size_t>(n * q));
    cache.attend(layer, tokens_view(queries.data(), n, c.query_heads(), c.head_dim),
                 tokens_output_view(out.data(), n, c.query_heads(), c.head_dim), kernel);
    outputs.insert(outputs.end(), out.begin(), out.end());
  }
  return outputs;
}

template <class C>
bool same_bits(const std::vector<C>& a, const std::vector<C>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(C)) == 0);
}

// Step sizes of a stream: random in [1, max_chunk], max_chunk every fourth.
int step_size(std::uint64_t step, int max_chunk) {
  const std::vector<float> r = token_rows(77, step, 0, 1);
  const int n = 1 + static_cast<int>((r[0] + 1.0f) * 0.5f * static_cast<float>(max_chunk));
  return step % 4 == 3 ? max_chunk : std::min(std::max(n, 1), max_chunk);
}

// ---- round trips -------------------------------------------------------------------

enum class Element { kFloat, kDouble, kHalf, kBfloat16 };

struct RoundTripCase {
  std::string name;
  CacheConfig config;
  bool explicit_steps = false;
  bool sink_logits = false;
  bool cpu_kernel = true;
};

CacheConfig base_config() {
  CacheConfig c;
  c.num_layers = 2;
  c.num_kv_heads = 2;
  c.num_query_heads = 4;
  c.head_dim = 8;
  c.num_sinks = 3;
  c.window = 5;
  return c;
}

std::vector<RoundTripCase> round_trip_cases() {
  std::vector<RoundTripCase> cases;
  {
    RoundTripCase c{"ropeAdjacentOneToken", base_config()};
    cases.push_back(c);
  }
  {
    RoundTripCase c{"ropeSplitPartialChunks5", base_config()};
    c.config.encoding = PositionEncoding::rotary({10000.0, 4, RopeLayout::kSplitHalves});
    c.config.max_chunk = 5;
    c.sink_logits = true;
    cases.push_back(c);
  }
  {
    RoundTripCase c{"perHeadPoliciesYarnChunks3", base_config()};
    c.config.encoding = PositionEncoding::rotary({10000.0, 0, RopeLayout::kSplitHalves, RopeScaling::yarn(4.0, 16.0)});
    c.config.max_chunk = 3;
    c.config.set_head_policy(0, 1, {0, 4});
    c.config.set_head_policy(1, 0, {1, 7});
    c.config.set_layer_policy(1, {2, 2});
    c.config.set_head_policy(1, 1, {0, 1});
    cases.push_back(c);
  }
  {
    RoundTripCase c{"alibiSlopesChunks4ReferenceKernel", base_config()};
    c.config.encoding = PositionEncoding::alibi_bias({{0.5, 0.25, 0.125, 0.0625}});
    c.config.max_chunk = 4;
    c.cpu_kernel = false;
    cases.push_back(c);
  }
  {
    RoundTripCase c{"noEncodingNoSinks", base_config()};
    c.config.encoding = PositionEncoding::none();
    c.config.num_sinks = 0;
    c.config.max_chunk = 2;
    cases.push_back(c);
  }
  {
    RoundTripCase c{"llama3ExplicitStepsChunks2", base_config()};
    c.config.encoding = PositionEncoding::rotary({500000.0, 0, RopeLayout::kAdjacentPairs, RopeScaling::llama3(8.0, 1.0, 4.0, 32.0)});
    c.config.max_chunk = 2;
    c.explicit_steps = true;
    cases.push_back(c);
  }
  {
    RoundTripCase c{"streamRotatedExplicitFrequencies", base_config()};
    c.config.encoding = PositionEncoding::rotary(
        {10000.0, 0, RopeLayout::kAdjacentPairs, RopeScaling::explicit_frequencies({1.0, 0.3, 0.01, 0.001}, 1.25)});
    c.config.input_rotation = InputRotation::kStreamRotated;
    c.config.max_chunk = 3;
    cases.push_back(c);
  }
  {
    RoundTripCase c{"windowOneLongChunksNtk", base_config()};
    c.config.encoding = PositionEncoding::rotary({10000.0, 0, RopeLayout::kAdjacentPairs, RopeScaling::ntk_aware(2.0)});
    c.config.window = 1;
    c.config.num_sinks = 1;
    c.config.max_chunk = 6;
    c.explicit_steps = true;
    cases.push_back(c);
  }
  return cases;
}

struct RoundTripParam {
  RoundTripCase c;
  Element element;
};
void PrintTo(const RoundTripParam& p, std::ostream* out) { *out << p.c.name << " element " << static_cast<int>(p.element); }

class SnapshotRoundTrip : public ::testing::TestWithParam<RoundTripParam> {};

// After every step of a stream (and before the first): save, load, and
// check the restored cache against a clone of the uninterrupted one - the
// same observable state, the current step attended bit-identically, the
// same bytes when saved again, and then ring_slots + 2 more steps of
// identical outputs.
template <class T, class Kernel>
void round_trip_everywhere(const RoundTripCase& c, Kernel kernel) {
  const std::uint64_t seed = 1234;
  SinkKVCache<T> cache(c.config);
  const int capacity = c.config.capacity();
  const std::uint64_t total = static_cast<std::uint64_t>(std::max(3 * (capacity + c.config.max_chunk) + 5, 40));
  std::uint64_t t = 0;
  int points = 0;
  for (std::uint64_t step = 0;; ++step) {
    const std::vector<std::uint8_t> bytes = save_snapshot(cache);
    SinkKVCache<T> restored = load_snapshot<T>(bytes.data(), bytes.size());
    SinkKVCache<T> uninterrupted = cache.clone();
    ++points;
    ASSERT_TRUE(observe(restored) == observe(uninterrupted)) << "after " << t << " tokens";
    expect_same_config(restored.config(), c.config);
    ASSERT_EQ(save_snapshot(restored), bytes) << "saving the restored cache at " << t << " tokens";
    if (t > 0) {
      ASSERT_TRUE(same_bits(attend_current_step(restored, kernel, seed), attend_current_step(uninterrupted, kernel, seed)))
          << "the last step attended again after " << t << " tokens";
    }
    std::uint64_t u = t;
    for (std::uint64_t more = 0; more < static_cast<std::uint64_t>(capacity + c.config.max_chunk + 2); ++more) {
      const int n = step_size(step + 1000 + more, c.config.max_chunk);
      const auto a = run_step(restored, u, n, c.explicit_steps, c.sink_logits, kernel, seed);
      const auto b = run_step(uninterrupted, u, n, c.explicit_steps, c.sink_logits, kernel, seed);
      ASSERT_TRUE(same_bits(a, b)) << "snapshot after " << t << " tokens, continued to tokens " << u << ".."
                                   << u + static_cast<std::uint64_t>(n) - 1;
      u += static_cast<std::uint64_t>(n);
    }
    ASSERT_TRUE(observe(restored) == observe(uninterrupted)) << "snapshot after " << t << " tokens, at " << u;
    if (t >= total) break;
    const int n = step_size(step, c.config.max_chunk);
    run_step(cache, t, n, c.explicit_steps, c.sink_logits, kernel, seed);
    t += static_cast<std::uint64_t>(n);
  }
  EXPECT_GT(points, 10);
}

template <class T>
void round_trip_with_kernel(const RoundTripCase& c) {
  if (c.cpu_kernel) {
    round_trip_everywhere<T>(c, CpuKernel{});
  } else {
    round_trip_everywhere<T>(c, ReferenceKernel{});
  }
}

TEST_P(SnapshotRoundTrip, RestoredCacheContinuesBitIdenticallyToAnUninterruptedClone) {
  const RoundTripParam& p = GetParam();
  switch (p.element) {
    case Element::kFloat: round_trip_with_kernel<float>(p.c); break;
    case Element::kDouble: round_trip_with_kernel<double>(p.c); break;
    case Element::kHalf: round_trip_with_kernel<Eigen::half>(p.c); break;
    case Element::kBfloat16: round_trip_with_kernel<Eigen::bfloat16>(p.c); break;
  }
}

std::vector<RoundTripParam> round_trip_params() {
  std::vector<RoundTripParam> params;
  for (const RoundTripCase& c : round_trip_cases()) {
    for (Element e : {Element::kFloat, Element::kDouble, Element::kHalf, Element::kBfloat16}) params.push_back({c, e});
  }
  return params;
}

std::string round_trip_name(const ::testing::TestParamInfo<RoundTripParam>& info) {
  static const char* names[] = {"float", "double", "half", "bfloat16"};
  return info.param.c.name + "_" + names[static_cast<int>(info.param.element)];
}

INSTANTIATE_TEST_SUITE_P(Streams, SnapshotRoundTrip, ::testing::ValuesIn(round_trip_params()), round_trip_name);

// ---- the format, read by the spec ------------------------------------------------------

TEST(SnapshotFormat, Crc32cMatchesRfc3720VectorsAndTheBitwiseDefinition) {
  const auto crc = [](const std::vector<unsigned char>& bytes) { return detail::crc32c(bytes.data(), bytes.size()); };
  std::vector<unsigned char> zeros(32, 0x00), ones(32, 0xFF), up(32), down(32);
  for (int i = 0; i < 32; ++i) {
    up[static_cast<std::size_t>(i)] = static_cast<unsigned char>(i);
    down[static_cast<std::size_t>(i)] = static_cast<unsigned char>(31 - i);
  }
  EXPECT_EQ(crc(zeros), 0x8A9136AAu);  // RFC 3720, B.4
  EXPECT_EQ(crc(ones), 0x62A8AB43u);
  EXPECT_EQ(crc(up), 0x46DD794Eu);
  EXPECT_EQ(crc(down), 0x113FDB5Cu);
  const std::string check = "123456789";
  EXPECT_EQ(detail::crc32c(check.data(), check.size()), 0xE3069283u);  // the catalogue's check value
  std::mt19937 random(5);
  for (int length : {0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 1000, 4099}) {
    std::vector<unsigned char> bytes(static_cast<std::size_t>(length));
    for (auto& b : bytes) b = static_cast<unsigned char>(random());
    ASSERT_EQ(crc(bytes), crc32c_bitwise(bytes.data(), bytes.size())) << length << " bytes";
    // Any split into updates gives the same value.
    detail::Crc32c pieces;
    std::size_t at = 0;
    while (at < bytes.size()) {
      const std::size_t n = std::min<std::size_t>(bytes.size() - at, 1 + random() % 13);
      pieces.update(bytes.data() + at, n);
      at += n;
    }
    EXPECT_EQ(pieces.value(), crc(bytes)) << length << " bytes in pieces";
  }
}

TEST(SnapshotFormat, PortableElementCodingIsLittleEndianOnEveryType) {
  // float 1.5 = 0x3FC00000, double -2 = 0xC000000000000000, half 1 = 0x3C00, bfloat16 1 = 0x3F80
  const float f = 1.5f;
  unsigned char out[8] = {};
  detail::encode_elements_portable(&f, 1, out);
  EXPECT_EQ(std::vector<unsigned char>(out, out + 4), (std::vector<unsigned char>{0x00, 0x00, 0xC0, 0x3F}));
  const double d = -2.0;
  detail::encode_elements_portable(&d, 1, out);
  EXPECT_EQ(std::vector<unsigned char>(out, out + 8), (std::vector<unsigned char>{0, 0, 0, 0, 0, 0, 0, 0xC0}));
  const Eigen::half h(1.0f);
  detail::encode_elements_portable(&h, 1, out);
  EXPECT_EQ(std::vector<unsigned char>(out, out + 2), (std::vector<unsigned char>{0x00, 0x3C}));
  const Eigen::bfloat16 b(1.0f);
  detail::encode_elements_portable(&b, 1, out);
  EXPECT_EQ(std::vector<unsigned char>(out, out + 2), (std::vector<unsigned char>{0x80, 0x3F}));
  // Decoding little-endian bytes in place gives the values back.
  float g;
  const unsigned char g_bytes[4] = {0x00, 0x00, 0xC0, 0x3F};
  std::memcpy(&g, g_bytes, 4);
  detail::decode_elements_portable(&g, 1);
  EXPECT_EQ(g, 1.5f);
  Eigen::bfloat16 c;
  const unsigned char c_bytes[2] = {0x80, 0x3F};
  std::memcpy(static_cast<void*>(&c), c_bytes, 2);
  detail::decode_elements_portable(&c, 1);
  EXPECT_EQ(static_cast<float>(c), 1.0f);
}

// A tiny cache without position encoding stores its keys as given, so the
// payload can be checked value by value: the layout of docs/design.md, read
// here field by field.
TEST(SnapshotFormat, BytesFollowTheSpecifiedLayout) {
  CacheConfig config;
  config.num_layers = 1;
  config.num_kv_heads = 1;
  config.head_dim = 2;
  config.num_sinks = 1;
  config.window = 2;
  config.encoding = PositionEncoding::none();
  SinkKVCache<float> cache(config);
  for (int t = 0; t < 5; ++t) {
    const float k[2] = {static_cast<float>(t), 0.5f};
    const float v[2] = {-static_cast<float>(t), 0.25f};
    cache.append(0, heads_view(k, 1, 2), heads_view(v, 1, 2));
  }
  const std::vector<std::uint8_t> bytes = save_snapshot(cache);
  const std::vector<std::uint8_t> magic{0x89, 'S', 'I', 'N', 'K', 'K', 'V', 0x0A};
  EXPECT_EQ(std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + 8), magic);
  EXPECT_EQ(read_le(bytes, 8, 4), 1u);   // version
  EXPECT_EQ(read_le(bytes, 12, 4), 1u);  // float32
  EXPECT_EQ(read_le(bytes, 16, 4), 4u);  // element bytes
  EXPECT_EQ(read_le(bytes, 20, 4), 0u);  // flags
  const Layout layout = layout_of(bytes);
  // Stored: sink token 0, window tokens 3 and 4; keys then values; 2 dims.
  EXPECT_EQ(layout.payload_bytes, 2u * 3 * 2 * 4);
  ASSERT_EQ(bytes.size(), 48 + layout.header_bytes + layout.payload_bytes);
  std::size_t at = 40;
  const auto i32 = [&] { return static_cast<std::int32_t>(static_cast<std::uint32_t>(read_le(bytes, (at += 4) - 4, 4))); };
  const auto u64 = [&] { return read_le(bytes, (at += 8) - 8, 8); };
  const auto f64 = [&] { return read_f64(bytes, (at += 8) - 8); };
  const auto u8 = [&] { return read_le(bytes, (at += 1) - 1, 1); };
  EXPECT_EQ(i32(), 1);     // num_layers
  EXPECT_EQ(i32(), 0);     // num_query_heads (as configured)
  EXPECT_EQ(i32(), 1);     // num_kv_heads
  EXPECT_EQ(i32(), 2);     // head_dim
  EXPECT_EQ(i32(), 1);     // num_sinks
  EXPECT_EQ(i32(), 2);     // window
  EXPECT_EQ(i32(), 1);     // max_chunk
  EXPECT_EQ(i32(), 0);     // input_rotation: unrotated
  EXPECT_EQ(u64(), 0u);    // head policies
  EXPECT_EQ(i32(), 0);     // encoding: none
  EXPECT_EQ(f64(), 10000.0);  // rope.theta (stored whatever the kind)
  EXPECT_EQ(i32(), 0);     // rotary_dim
  EXPECT_EQ(i32(), 0);     // layout: adjacent pairs
  EXPECT_EQ(i32(), 0);     // scaling kind: none
  EXPECT_EQ(f64(), 1.0);   // factor
  EXPECT_EQ(f64(), 0.0);   // original_max_positions
  EXPECT_EQ(f64(), 1.0);   // low_freq_factor
  EXPECT_EQ(f64(), 4.0);   // high_freq_factor
  EXPECT_EQ(f64(), 32.0);  // beta_fast
  EXPECT_EQ(f64(), 1.0);   // beta_slow
  EXPECT_EQ(u8(), 1u);     // truncate
  EXPECT_EQ(f64(), 0.0);   // mscale
  EXPECT_EQ(f64(), 0.0);   // mscale_all_dim
  EXPECT_EQ(u8(), 0u);     // attention_factor: unset
  EXPECT_EQ(u64(), 0u);    // explicit frequencies
  EXPECT_EQ(u64(), 0u);    // alibi slopes
  EXPECT_EQ(u64(), 5u);    // tokens_seen
  EXPECT_EQ(i32(), 1);     // step_length
  EXPECT_EQ(u8(), 0u);     // explicit_steps
  EXPECT_EQ(at, layout.header_checksum_at());
  EXPECT_EQ(read_le(bytes, at, 4), crc32c_bitwise(bytes.data(), at));
  std::vector<float> payload(layout.payload_bytes / 4);
  for (std::size_t i = 0; i < payload.size(); ++i) {
    const std::uint32_t bits = static_cast<std::uint32_t>(read_le(bytes, layout.payload_at() + 4 * i, 4));
    std::memcpy(&payload[i], &bits, 4);
  }
  EXPECT_EQ(payload, (std::vector<float>{0, 0.5f, 3, 0.5f, 4, 0.5f, -0.0f, 0.25f, -3, 0.25f, -4, 0.25f}));
  EXPECT_EQ(read_le(bytes, layout.payload_checksum_at(), 4),
            crc32c_bitwise(bytes.data() + layout.payload_at(), layout.payload_bytes));
}

// After a chunk of n tokens the stored window reaches n - 1 tokens further
// back than the logical window (the chunk's first query still sees them).
TEST(SnapshotFormat, AChunkStepStoresTheWindowOfItsFirstQuery) {
  CacheConfig config = base_config();
  config.max_chunk = 4;
  SinkKVCache<float> cache(config);
  ReferenceKernel kernel;
  run_step(cache, 0, 4, false, false, kernel, 1);
  run_step(cache, 4, 4, false, false, kernel, 1);
  run_step(cache, 8, 4, false, false, kernel, 1);  // 12 tokens, last step 8..11
  const Layout layout = layout_of(save_snapshot(cache));
  // sinks 0..2, window of token 8: 4..8, plus 9..11: 3 + 8 tokens per head.
  EXPECT_EQ(layout.payload_bytes, static_cast<std::size_t>(2 * 2 * 2 * (3 + 8) * 8 * 4));
  run_step(cache, 12, 1, false, false, kernel, 1);  // a one-token step: just the window 8..12
  EXPECT_EQ(layout_of(save_snapshot(cache)).payload_bytes, static_cast<std::size_t>(2 * 2 * 2 * (3 + 5) * 8 * 4));
}

TEST(SnapshotFormat, EveryConfigurationFieldRoundTrips) {
  CacheConfig config;
  config.num_layers = 3;
  config.num_kv_heads = 2;
  config.num_query_heads = 6;
  config.head_dim = 8;
  config.num_sinks = 2;
  config.window = 9;
  config.max_chunk = 7;
  config.set_head_policy(2, 1, {0, 3});
  config.encoding = PositionEncoding::rotary({123456.5, 6, RopeLayout::kSplitHalves, RopeScaling::yarn(8.0, 4096.0, 30.0, 2.0)});
  config.encoding.rope.scaling.truncate = false;
  config.encoding.rope.scaling.mscale = 0.75;
  config.encoding.rope.scaling.mscale_all_dim = 0.5;
  config.encoding.rope.scaling.attention_factor = 1.0625;
  config.encoding.rope.scaling.low_freq_factor = 1.5;
  config.encoding.rope.scaling.high_freq_factor = 5.5;
  config.encoding.rope.scaling.explicit_inv_frequencies = {0.5, 0.25, 0.125};  // unused by yarn: stored all the same
  config.encoding.alibi.slopes = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6};               // unused by rope
  config.input_rotation = InputRotation::kStreamRotated;
  SinkKVCache<double> cache(config);
  const std::vector<std::uint8_t> bytes = save_snapshot(cache);
  expect_same_config(load_snapshot<double>(bytes.data(), bytes.size()).config(), config);
  const SnapshotInfo info = read_snapshot_info(bytes.data(), bytes.size());
  expect_same_config(info.config, config);
  EXPECT_EQ(info.element_type, "double");
  EXPECT_EQ(info.element_bytes, 8u);
  EXPECT_EQ(info.format_version, 1u);
  EXPECT_EQ(info.tokens_seen, 0u);
  EXPECT_EQ(info.total_bytes, bytes.size());
}

TEST(SnapshotFormat, InfoReportsTheStateWithoutThePayload) {
  CacheConfig config = base_config();
  config.max_chunk = 3;
  SinkKVCache<Eigen::bfloat16> cache(config);
  ReferenceKernel kernel;
  run_step(cache, 0, 2, true, false, kernel, 3);
  run_step(cache, 2, 3, true, false, kernel, 3);
  std::vector<std::uint8_t> bytes = save_snapshot(cache);
  const Layout layout = layout_of(bytes);
  bytes.resize(layout.payload_at());  // header only
  const SnapshotInfo info = read_snapshot_info(bytes.data(), bytes.size());
  EXPECT_EQ(info.element_type, "bfloat16");
  EXPECT_EQ(info.tokens_seen, 5u);
  EXPECT_EQ(info.step_length, 3);
  EXPECT_TRUE(info.explicit_steps);
  EXPECT_EQ(info.payload_bytes, layout.payload_bytes);
}

// The snapshot fuzz target's seeds are committed version-1 snapshots: this
// build must write exactly those bytes (and read them, by the fuzz replay).
TEST(SnapshotFormat, CommittedSeedsAreExactlyWhatThisBuildWrites) {
  const std::string folder = std::string(SINKKV_TESTS_DIR) + "/fuzz/corpus/snapshot/";
  const bool write = std::getenv("SINKKV_WRITE_SNAPSHOT_SEEDS") != nullptr;
  const std::vector<SnapshotSeed> seeds = snapshot_seeds();
  EXPECT_GE(seeds.size(), 10u);
  for (const SnapshotSeed& seed : seeds) {
    const std::string path = folder + seed.name + ".bin";
    if (write) {
      std::ofstream(path, std::ios::binary)
          .write(reinterpret_cast<const char*>(seed.bytes.data()), static_cast<std::streamsize>(seed.bytes.size()));
    }
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(in) << path << " is missing (SINKKV_WRITE_SNAPSHOT_SEEDS=1 writes the seeds)";
    const std::vector<std::uint8_t> committed{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    EXPECT_EQ(committed, seed.bytes) << path << ": the bytes of format version 1 changed";
  }
}

// ---- what a restored cache remembers ----------------------------------------------------

TEST(SnapshotState, ExplicitStepsStayExplicitAfterARestore) {
  SinkKVCache<float> cache(base_config());
  ReferenceKernel kernel;
  run_step(cache, 0, 1, true, false, kernel, 1);
  const std::vector<std::uint8_t> bytes = save_snapshot(cache);
  SinkKVCache<float> restored = load_snapshot<float>(bytes.data(), bytes.size());
  const std::vector<float> k(16, 0.5f);
  // An append without begin_step is caught, as it is on the original.
  const std::string error = error_of([&] { restored.append(0, heads_view(k.data(), 2, 8), heads_view(k.data(), 2, 8)); });
  EXPECT_NE(error.find("begin_step"), std::string::npos) << error;
  EXPECT_THROW(restored.begin_step(0), Error);  // the next stream index is 1
  restored.begin_step(1);
}

TEST(SnapshotState, AnEmptyCacheRoundTrips) {
  SinkKVCache<Eigen::half> cache(base_config());
  const std::vector<std::uint8_t> bytes = save_snapshot(cache);
  SinkKVCache<Eigen::half> restored = load_snapshot<Eigen::half>(bytes.data(), bytes.size());
  EXPECT_EQ(restored.tokens_seen(), 0u);
  EXPECT_EQ(restored.step_length(), 0);
  EXPECT_EQ(layout_of(bytes).payload_bytes, 0u);
}

TEST(SnapshotState, SavingInTheMiddleOfAStepIsRefused) {
  SinkKVCache<float> cache(base_config());
  const std::vector<float> k(16, 0.5f);
  cache.append(0, heads_view(k.data(), 2, 8), heads_view(k.data(), 2, 8));  // layer 1 has not appended
  const std::string error = error_of([&] { save_snapshot(cache); });
  EXPECT_NE(error.find("middle of a step"), std::string::npos) << error;
  std::ostringstream out;
  EXPECT_THROW(save_snapshot(cache, out), Error);
  EXPECT_TRUE(out.str().empty()) << "nothing is written";
}

TEST(SnapshotState, SavingAMovedFromCacheIsRefused) {
  SinkKVCache<float> cache(base_config());
  SinkKVCache<float> other = std::move(cache);
  const std::string error = error_of([&] { save_snapshot(cache); });  // NOLINT(bugprone-use-after-move)
  EXPECT_NE(error.find("moved-from"), std::string::npos) << error;
}

// ---- rejected inputs ----------------------------------------------------------------------

// A small snapshot with everything in it: two layers, per-head policies, a
// chunk step, ALiBi slopes.
std::vector<std::uint8_t> small_snapshot(CacheConfig* config_out = nullptr) {
  CacheConfig config;
  config.num_layers = 2;
  config.num_kv_heads = 2;
  config.num_query_heads = 2;
  config.head_dim = 4;
  config.num_sinks = 1;
  config.window = 3;
  config.max_chunk = 2;
  config.set_head_policy(1, 0, {0, 2});
  config.encoding = PositionEncoding::alibi_bias({{0.5, 0.25}});
  SinkKVCache<float> cache(config);
  ReferenceKernel kernel;
  std::uint64_t t = 0;
  for (int n : {1, 2, 2, 1, 2}) {
    run_step(cache, t, n, false, false, kernel, 9);
    t += static_cast<std::uint64_t>(n);
  }
  if (config_out != nullptr) *config_out = config;
  return save_snapshot(cache);
}

TEST(SnapshotRejects, EveryTruncation) {
  const std::vector<std::uint8_t> bytes = small_snapshot();
  for (std::size_t length = 0; length < bytes.size(); ++length) {
    EXPECT_THROW(load_snapshot<float>(bytes.data(), length), Error) << length << " of " << bytes.size() << " bytes";
    std::istringstream in(std::string(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(length)));
    EXPECT_THROW(load_snapshot<float>(in), Error) << length << " of " << bytes.size() << " bytes from a stream";
  }
  EXPECT_NO_THROW(load_snapshot<float>(bytes.data(), bytes.size()));
}

TEST(SnapshotRejects, TruncationsNameTheOffset) {
  const std::vector<std::uint8_t> bytes = small_snapshot();
  const Layout layout = layout_of(bytes);
  const std::string in_payload = error_of([&] { load_snapshot<float>(bytes.data(), layout.payload_at() + 10); });
  EXPECT_NE(in_payload.find("truncated"), std::string::npos) << in_payload;
  EXPECT_NE(in_payload.find("layer 0 KV head 0 keys"), std::string::npos) << in_payload;
  EXPECT_NE(in_payload.find("ends at byte " + std::to_string(layout.payload_at() + 10)), std::string::npos)
      << in_payload;
  const std::string in_magic = error_of([&] { load_snapshot<float>(bytes.data(), 3); });
  EXPECT_NE(in_magic.find("truncated: 3 bytes"), std::string::npos) << in_magic;
}

TEST(SnapshotRejects, EverySingleBitFlip) {
  const std::vector<std::uint8_t> bytes = small_snapshot();
  std::vector<std::uint8_t> flipped = bytes;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      flipped[i] = static_cast<std::uint8_t>(bytes[i] ^ (1u << bit));
      EXPECT_THROW(load_snapshot<float>(flipped.data(), flipped.size()), Error) << "byte " << i << " bit " << bit;
      flipped[i] = bytes[i];
    }
  }
}

TEST(SnapshotRejects, CorruptionsNameTheChecksum) {
  std::vector<std::uint8_t> bytes = small_snapshot();
  const Layout layout = layout_of(bytes);
  bytes[60] ^= 0x10;
  const std::string header = error_of([&] { load_snapshot<float>(bytes.data(), bytes.size()); });
  EXPECT_NE(header.find("header checksum mismatch"), std::string::npos) << header;
  bytes[60] ^= 0x10;
  bytes[layout.payload_at() + 5] ^= 0x01;
  const std::string payload = error_of([&] { load_snapshot<float>(bytes.data(), bytes.size()); });
  EXPECT_NE(payload.find("payload checksum mismatch"), std::string::npos) << payload;
}

TEST(SnapshotRejects, AnotherFormatVersion) {
  std::vector<std::uint8_t> bytes = small_snapshot();
  write_le(bytes, 8, 2, 4);
  reseal(bytes);
  const std::string error = error_of([&] { load_snapshot<float>(bytes.data(), bytes.size()); });
  EXPECT_NE(error.find("format version 2 (offset 8) is not supported"), std::string::npos) << error;
  EXPECT_NE(error.find("reads version 1"), std::string::npos) << error;
}

TEST(SnapshotRejects, AnotherElementType) {
  const std::vector<std::uint8_t> bytes = small_snapshot();
  const std::string error = error_of([&] { load_snapshot<Eigen::half>(bytes.data(), bytes.size()); });
  EXPECT_NE(error.find("holds float elements"), std::string::npos) << error;
  EXPECT_NE(error.find("SinkKVCache<float>, not SinkKVCache<Eigen::half>"), std::string::npos) << error;
  EXPECT_THROW(load_snapshot<double>(bytes.data(), bytes.size()), Error);
  EXPECT_THROW(load_snapshot<Eigen::bfloat16>(bytes.data(), bytes.size()), Error);
}

TEST(SnapshotRejects, UnknownCodesAndSizesInAValidlySealedHeader) {
  const std::vector<std::uint8_t> good = small_snapshot();
  const auto with = [&](std::size_t offset, std::uint64_t value, int width) {
    std::vector<std::uint8_t> bytes = good;
    write_le(bytes, offset, value, width);
    reseal(bytes);
    return error_of([&] { load_snapshot<float>(bytes.data(), bytes.size()); });
  };
  EXPECT_NE(with(12, 9, 4).find("element type code 9"), std::string::npos);
  EXPECT_NE(with(16, 2, 4).find("element size 2 (offset 16)"), std::string::npos);
  EXPECT_NE(with(20, 1, 4).find("flags 0x1 (offset 20)"), std::string::npos);
  EXPECT_NE(with(40 + 5 * 4, 0, 4).find("window 0 must be >= 1"), std::string::npos);  // window
  EXPECT_NE(with(40 + 7 * 4, 5, 4).find("input_rotation at offset 68 is 5"), std::string::npos);
  // A count larger than the header: refused before allocating.
  EXPECT_NE(with(40 + 8 * 4, std::uint64_t{1} << 60, 8).find("only"), std::string::npos);
  // The payload size field disagreeing with the configuration.
  const Layout layout = layout_of(good);
  std::vector<std::uint8_t> bytes = good;
  write_le(bytes, 32, layout.payload_bytes + 4, 8);
  bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(layout.payload_checksum_at()), 4, 0);
  reseal(bytes);
  const std::string error = error_of([&] { load_snapshot<float>(bytes.data(), bytes.size()); });
  EXPECT_NE(error.find("do not match the configuration"), std::string::npos) << error;
}

TEST(SnapshotRejects, StatesThatNoCacheCanBeIn) {
  const std::vector<std::uint8_t> good = small_snapshot();
  const Layout layout = layout_of(good);
  const std::size_t tokens_at = layout.header_checksum_at() - 13;  // tokens_seen u64, step_length i32, explicit u8
  const auto with = [&](std::size_t offset, std::uint64_t value, int width) {
    std::vector<std::uint8_t> bytes = good;
    write_le(bytes, offset, value, width);
    reseal(bytes);
    return error_of([&] { load_snapshot<float>(bytes.data(), bytes.size()); });
  };
  EXPECT_NE(with(tokens_at + 8, 3, 4).find("step_length 3"), std::string::npos);    // > max_chunk 2
  EXPECT_NE(with(tokens_at + 8, 0, 4).find("does not fit tokens_seen"), std::string::npos);
  EXPECT_NE(with(tokens_at + 12, 2, 1).find("expected 0 or 1"), std::string::npos);
  EXPECT_NE(with(tokens_at, std::uint64_t{1} << 63, 8).find("exceeds 2^62"), std::string::npos);
}

TEST(SnapshotRejects, BytesThatAreNotASnapshot) {
  const std::string text = "hello, this is not a snapshot";
  const std::string e1 = error_of([&] { load_snapshot<float>(text.data(), text.size()); });
  EXPECT_NE(e1.find("not a sinkkv snapshot: it starts with 68 65 6C 6C 6F 2C 20 74"), std::string::npos) << e1;
  const std::string e2 = error_of([&] { load_snapshot<float>(nullptr, 0); });
  EXPECT_NE(e2.find("nothing (no bytes)"), std::string::npos) << e2;
  const unsigned char png[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  EXPECT_THROW(load_snapshot<float>(png, sizeof png), Error);
  std::vector<std::uint8_t> trailing = small_snapshot();
  trailing.push_back(0);
  const std::string e3 = error_of([&] { load_snapshot<float>(trailing.data(), trailing.size()); });
  EXPECT_NE(e3.find("1 bytes follow the snapshot's end"), std::string::npos) << e3;
}

// ---- configurations -----------------------------------------------------------------------

TEST(SnapshotConfig, AnExpectedConfigurationThatDiffersInAnyFieldIsNamed) {
  CacheConfig config;
  const std::vector<std::uint8_t> bytes = small_snapshot(&config);
  SnapshotReadOptions same;
  same.expected_config = config;
  EXPECT_NO_THROW(load_snapshot<float>(bytes.data(), bytes.size(), same));
  struct Change {
    const char* field;
    std::function<void(CacheConfig&)> apply;
  };
  const std::vector<Change> changes = {
      {"num_layers is 2 in the snapshot, expected 3", [](CacheConfig& c) { c.num_layers = 3; }},
      {"num_query_heads is 2 in the snapshot, expected 4", [](CacheConfig& c) { c.num_query_heads = 4; }},
      {"num_kv_heads", [](CacheConfig& c) { c.num_kv_heads = 1; }},
      {"head_dim", [](CacheConfig& c) { c.head_dim = 8; }},
      {"num_sinks", [](CacheConfig& c) { c.num_sinks = 4; }},
      {"window is 3 in the snapshot, expected 1020", [](CacheConfig& c) { c.window = 1020; }},
      {"max_chunk", [](CacheConfig& c) { c.max_chunk = 1; }},
      {"input_rotation", [](CacheConfig& c) { c.input_rotation = InputRotation::kStreamRotated; }},
      {"head_policies is 4 entries in the snapshot, expected 0 entries", [](CacheConfig& c) { c.head_policies.clear(); }},
      {"head_policies[2].window is 2 in the snapshot, expected 5", [](CacheConfig& c) { c.head_policies[2].window = 5; }},
      {"head_policies[2].num_sinks", [](CacheConfig& c) { c.head_policies[2].num_sinks = 1; }},
      {"encoding.kind is alibi in the snapshot, expected rope", [](CacheConfig& c) { c.encoding.kind = PositionEncoding::Kind::kRope; }},
      {"encoding.rope.theta is 10000 in the snapshot, expected 10000.000000000002",
       [](CacheConfig& c) { c.encoding.rope.theta = std::nextafter(10000.0, 2e4); }},
      {"encoding.rope.rotary_dim", [](CacheConfig& c) { c.encoding.rope.rotary_dim = 2; }},
      {"encoding.rope.layout", [](CacheConfig& c) { c.encoding.rope.layout = RopeLayout::kSplitHalves; }},
      {"encoding.rope.scaling.kind", [](CacheConfig& c) { c.encoding.rope.scaling.kind = RopeScaling::Kind::kLinear; }},
      {"encoding.rope.scaling.factor", [](CacheConfig& c) { c.encoding.rope.scaling.factor = 2; }},
      {"encoding.rope.scaling.original_max_positions",
       [](CacheConfig& c) { c.encoding.rope.scaling.original_max_positions = 8; }},
      {"encoding.rope.scaling.low_freq_factor", [](CacheConfig& c) { c.encoding.rope.scaling.low_freq_factor = 2; }},
      {"encoding.rope.scaling.high_freq_factor", [](CacheConfig& c) { c.encoding.rope.scaling.high_freq_factor = 2; }},
      {"encoding.rope.scaling.beta_fast", [](CacheConfig& c) { c.encoding.rope.scaling.beta_fast = 2; }},
      {"encoding.rope.scaling.beta_slow", [](CacheConfig& c) { c.encoding.rope.scaling.beta_slow = 2; }},
      {"encoding.rope.scaling.truncate", [](CacheConfig& c) { c.encoding.rope.scaling.truncate = false; }},
      {"encoding.rope.scaling.mscale is 0", [](CacheConfig& c) { c.encoding.rope.scaling.mscale = 1; }},
      {"encoding.rope.scaling.mscale_all_dim", [](CacheConfig& c) { c.encoding.rope.scaling.mscale_all_dim = 1; }},
      {"encoding.rope.scaling.attention_factor is unset in the snapshot, expected 1",
       [](CacheConfig& c) { c.encoding.rope.scaling.attention_factor = 1.0; }},
      {"encoding.rope.scaling.explicit_inv_frequencies",
       [](CacheConfig& c) { c.encoding.rope.scaling.explicit_inv_frequencies = {1.0}; }},
      {"encoding.alibi.slopes[1] is 0.25 in the snapshot, expected 0.5",
       [](CacheConfig& c) { c.encoding.alibi.slopes[1] = 0.5; }},
  };
  for (const Change& change : changes) {
    SnapshotReadOptions options;
    options.expected_config = config;
    change.apply(*options.expected_config);
    const std::string error = error_of([&] { load_snapshot<float>(bytes.data(), bytes.size(), options); });
    EXPECT_NE(error.find("not the expected one"), std::string::npos) << error;
    EXPECT_NE(error.find(change.field), std::string::npos) << "want '" << change.field << "' in: " << error;
  }
}

TEST(SnapshotConfig, MaxMemoryRefusesALargeCacheBeforeAllocating) {
  CacheConfig config = base_config();
  config.window = 100000;
  SinkKVCache<float> cache(config);
  const std::vector<std::uint8_t> bytes = save_snapshot(cache);  // empty: a small snapshot of a large cache
  SnapshotReadOptions options;
  options.max_memory_bytes = 1 << 20;
  const std::string error = error_of([&] { load_snapshot<float>(bytes.data(), bytes.size(), options); });
  EXPECT_NE(error.find("above max_memory_bytes 1048576"), std::string::npos) << error;
  options.max_memory_bytes = cache.storage_bytes() * 2;
  EXPECT_NO_THROW(load_snapshot<float>(bytes.data(), bytes.size(), options));
}

// ---- restoring into a cache -------------------------------------------------------------

TEST(SnapshotRestoreInto, ReplacesTheStateOfACacheOfTheSameConfiguration) {
  CacheConfig config;
  const std::vector<std::uint8_t> bytes = small_snapshot(&config);
  SinkKVCache<float> target(config);
  ReferenceKernel kernel;
  run_step(target, 0, 2, false, false, kernel, 55);
  restore_snapshot(target, bytes.data(), bytes.size());
  EXPECT_TRUE(observe(target) == observe(load_snapshot<float>(bytes.data(), bytes.size())));
  EXPECT_EQ(target.tokens_seen(), 8u);
}

TEST(SnapshotRestoreInto, LeavesTheTargetUnchangedOnEveryError) {
  CacheConfig config;
  const std::vector<std::uint8_t> good = small_snapshot(&config);
  SinkKVCache<float> target(config);
  ReferenceKernel kernel;
  run_step(target, 0, 1, false, false, kernel, 56);
  run_step(target, 1, 2, false, false, kernel, 56);
  const Observed before = observe(target);
  // Truncations, flips in the header and in the payload, another configuration.
  for (std::size_t length : {std::size_t{0}, std::size_t{30}, std::size_t{200}, good.size() - 1}) {
    EXPECT_THROW(restore_snapshot(target, good.data(), length), Error);
    ASSERT_TRUE(observe(target) == before) << "after a truncation to " << length;
  }
  for (std::size_t i = 0; i < good.size(); i += 7) {
    std::vector<std::uint8_t> bytes = good;
    bytes[i] ^= 0x20;
    EXPECT_THROW(restore_snapshot(target, bytes.data(), bytes.size()), Error);
    ASSERT_TRUE(observe(target) == before) << "after a flip at byte " << i;
  }
  CacheConfig other = config;
  other.window = 4;
  other.head_policies.clear();
  SinkKVCache<float> differently_configured(other);
  const std::vector<std::uint8_t> foreign = save_snapshot(differently_configured);
  const std::string error = error_of([&] { restore_snapshot(target, foreign.data(), foreign.size()); });
  EXPECT_NE(error.find("not the expected one"), std::string::npos) << error;
  ASSERT_TRUE(observe(target) == before);
  std::istringstream truncated(std::string(good.begin(), good.end() - 9));
  EXPECT_THROW(restore_snapshot(target, truncated), Error);
  ASSERT_TRUE(observe(target) == before);
  // The target still works as before.
  run_step(target, 3, 1, false, false, kernel, 56);
}

TEST(SnapshotRestoreInto, AcceptsAnotherConfigurationOnlyWhenAskedTo) {
  CacheConfig config;
  const std::vector<std::uint8_t> bytes = small_snapshot(&config);
  SinkKVCache<float> target(base_config());
  EXPECT_THROW(restore_snapshot(target, bytes.data(), bytes.size()), Error);
  SnapshotReadOptions options;
  options.expected_config = config;
  restore_snapshot(target, bytes.data(), bytes.size(), options);
  expect_same_config(target.config(), config);
  SinkKVCache<float> moved_from(base_config());
  SinkKVCache<float> keeper = std::move(moved_from);
  restore_snapshot(moved_from, bytes.data(), bytes.size());  // a moved-from cache has no configuration to keep
  EXPECT_EQ(moved_from.tokens_seen(), 8u);
}

// ---- streams ------------------------------------------------------------------------------

TEST(SnapshotStreams, SnapshotsFollowOneAnotherInAStream) {
  SinkKVCache<double> cache(base_config());
  ReferenceKernel kernel;
  std::stringstream stream;
  run_step(cache, 0, 1, false, false, kernel, 4);
  save_snapshot(cache, stream);
  run_step(cache, 1, 1, false, false, kernel, 4);
  save_snapshot(cache, stream);
  EXPECT_EQ(load_snapshot<double>(stream).tokens_seen(), 1u);
  EXPECT_TRUE(observe(load_snapshot<double>(stream)) == observe(cache));
}

// A stream buffer that accepts `limit` bytes, then fails.
class FailingBuffer : public std::streambuf {
 public:
  explicit FailingBuffer(std::size_t limit) : limit_(limit) {}
  std::size_t accepted = 0;

 protected:
  int_type overflow(int_type c) override {
    if (accepted >= limit_) return traits_type::eof();
    ++accepted;
    return traits_type::not_eof(c);
  }
  std::streamsize xsputn(const char*, std::streamsize n) override {
    const std::streamsize room = static_cast<std::streamsize>(limit_ - accepted);
    const std::streamsize taken = std::min(n, room);
    accepted += static_cast<std::size_t>(taken);
    return taken;
  }

 private:
  std::size_t limit_;
};

TEST(SnapshotStreams, AFailingStreamIsReported) {
  SinkKVCache<float> cache(base_config());
  ReferenceKernel kernel;
  run_step(cache, 0, 1, false, false, kernel, 4);
  const std::size_t size = save_snapshot(cache).size();
  for (std::size_t limit : {std::size_t{0}, std::size_t{10}, std::size_t{300}, size - 1}) {
    FailingBuffer buffer(limit);
    std::ostream out(&buffer);
    const std::string error = error_of([&] { save_snapshot(cache, out); });
    EXPECT_NE(error.find("writing to the stream failed"), std::string::npos) << limit << ": " << error;
  }
  FailingBuffer enough(size);
  std::ostream out(&enough);
  EXPECT_NO_THROW(save_snapshot(cache, out));
}

// ---- files --------------------------------------------------------------------------------

class SnapshotFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/sinkkv_snapshot_test_XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    directory_ = pattern;
    path_ = directory_ + "/conversation.sinkkv";
  }
  void TearDown() override { std::filesystem::remove_all(directory_); }

  std::vector<std::uint8_t> file_bytes() const {
    std::ifstream in(path_, std::ios::binary);
    return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::vector<std::string> directory_entries() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(directory_)) names.push_back(entry.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }
  // A cache after `tokens` one-token steps.
  static SinkKVCache<Eigen::half> cache_after(int tokens) {
    CacheConfig config = base_config();
    config.window = 300;
    SinkKVCache<Eigen::half> cache(config);
    ReferenceKernel kernel;
    for (int t = 0; t < tokens; ++t) run_step(cache, static_cast<std::uint64_t>(t), 1, false, false, kernel, 8);
    return cache;
  }

  std::string directory_;
  std::string path_;
};

TEST_F(SnapshotFiles, SaveThenLoadAndRestore) {
  const SinkKVCache<Eigen::half> cache = cache_after(20);
  save_snapshot_file(cache, path_);
  EXPECT_EQ(file_bytes(), save_snapshot(cache));
  EXPECT_TRUE(observe(load_snapshot_file<Eigen::half>(path_)) == observe(cache));
  SinkKVCache<Eigen::half> target = cache_after(3);
  restore_snapshot_file(target, path_);
  EXPECT_TRUE(observe(target) == observe(cache));
  EXPECT_EQ(read_snapshot_info_file(path_).tokens_seen, 20u);
  EXPECT_EQ(directory_entries(), std::vector<std::string>{"conversation.sinkkv"}) << "no temporary file is left";
  struct stat status {};
  ASSERT_EQ(::stat(path_.c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0777, 0600u);
}

TEST_F(SnapshotFiles, SavingReplacesThePreviousSnapshot) {
  save_snapshot_file(cache_after(5), path_);
  const SinkKVCache<Eigen::half> later = cache_after(9);
  save_snapshot_file(later, path_);
  EXPECT_EQ(file_bytes(), save_snapshot(later));
  EXPECT_EQ(directory_entries(), std::vector<std::string>{"conversation.sinkkv"});
}

TEST_F(SnapshotFiles, AMissingOrBadFileIsNamed) {
  const std::string missing = error_of([&] { load_snapshot_file<float>(directory_ + "/nothing.sinkkv"); });
  EXPECT_NE(missing.find("nothing.sinkkv' cannot be opened: No such file or directory"), std::string::npos) << missing;
  save_snapshot_file(cache_after(4), path_);
  { std::ofstream(path_, std::ios::app | std::ios::binary) << "x"; }
  const std::string trailing = error_of([&] { load_snapshot_file<Eigen::half>(path_); });
  EXPECT_NE(trailing.find("snapshot file '" + path_ + "': bytes follow the snapshot's end"), std::string::npos)
      << trailing;
}

TEST_F(SnapshotFiles, AFailedSaveLeavesThePreviousFileAndNoTemporary) {
  const SinkKVCache<Eigen::half> first = cache_after(6);
  save_snapshot_file(first, path_);
  const std::vector<std::uint8_t> previous = file_bytes();
  const SinkKVCache<Eigen::half> second = cache_after(200);
  // The file system refuses writes past 1000 bytes (RLIMIT_FSIZE; SIGXFSZ
  // ignored, so write() fails with EFBIG).
  struct rlimit saved {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  void (*handler)(int) = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = saved;
  small.rlim_cur = 1000;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  const std::string error = error_of([&] { save_snapshot_file(second, path_); });
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, handler);
  EXPECT_NE(error.find("failed at byte 1000: File too large"), std::string::npos) << error;
  EXPECT_EQ(file_bytes(), previous);
  EXPECT_EQ(directory_entries(), std::vector<std::string>{"conversation.sinkkv"});
  EXPECT_TRUE(observe(load_snapshot_file<Eigen::half>(path_)) == observe(first));
}

TEST_F(SnapshotFiles, ACrashDuringASaveLeavesThePreviousFile) {
  const SinkKVCache<Eigen::half> first = cache_after(6);
  save_snapshot_file(first, path_);
  const std::vector<std::uint8_t> previous = file_bytes();
  const SinkKVCache<Eigen::half> second = cache_after(200);
  // A child process is killed by SIGXFSZ (default action) when its write
  // passes 3000 bytes, in the middle of saving.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::signal(SIGXFSZ, SIG_DFL);
    struct rlimit small {};
    ::getrlimit(RLIMIT_FSIZE, &small);
    small.rlim_cur = 3000;
    ::setrlimit(RLIMIT_FSIZE, &small);
    save_snapshot_file(second, path_);
    ::_exit(0);  // not reached
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the child was to die in the middle of the save";
  EXPECT_EQ(WTERMSIG(status), SIGXFSZ);
  EXPECT_EQ(file_bytes(), previous);
  EXPECT_TRUE(observe(load_snapshot_file<Eigen::half>(path_)) == observe(first));
  // The crash leaves its temporary file (never read); a later save still works.
  EXPECT_EQ(directory_entries().size(), 2u);
  save_snapshot_file(second, path_);
  EXPECT_TRUE(observe(load_snapshot_file<Eigen::half>(path_)) == observe(second));
}

TEST_F(SnapshotFiles, UnwritableDestinationsAreNamed) {
  const SinkKVCache<Eigen::half> cache = cache_after(2);
  const std::string no_directory = error_of([&] { save_snapshot_file(cache, directory_ + "/absent/x.sinkkv"); });
  EXPECT_NE(no_directory.find("cannot create a temporary file next to '" + directory_ + "/absent/x.sinkkv'"),
            std::string::npos)
      << no_directory;
  std::filesystem::create_directory(path_);  // the destination is a directory: the rename fails
  const std::string is_directory = error_of([&] { save_snapshot_file(cache, path_); });
  EXPECT_NE(is_directory.find("cannot rename"), std::string::npos) << is_directory;
  EXPECT_NE(is_directory.find("Is a directory"), std::string::npos) << is_directory;
  EXPECT_EQ(directory_entries(), std::vector<std::string>{"conversation.sinkkv"}) << "the temporary file is removed";
  EXPECT_TRUE(std::filesystem::is_directory(path_));
}

}  // namespace
}  // namespace sinkkv::testing
