// Fuzz target: SinkKVCache driven by an arbitrary program against a small
// reference model of the cache and the double-precision oracle.
//
// The input picks a small configuration (element type, layers, grouped
// heads, head size, sinks, window, per-head policies, max_chunk, encoding
// incl. RoPE variants and ALiBi slopes, pre-rotated inputs), then a sequence
// of operations: begin_step, append (one token or a chunk, through every
// input form), attend (ReferenceKernel or CpuKernel, sink logits, scales),
// clone, swap, reset, move, snapshot round trips, and misuse of each (wrong
// layer, wrong counts, null pointers, bad strides and shapes, overlapping
// outputs, bad options, protocol errors, use of a moved-from cache).
//
// The model (written here, independent of the library) knows the protocol
// state, which stream tokens each KV head keeps, and every row appended.
// After every operation:
//  * a valid operation must succeed and a misuse must throw sinkkv::Error
//    (the model decides which, before the call), and a misuse must leave
//    every observable of the cache unchanged;
//  * tokens_seen, step_length, token_complete, each head's cached stream
//    indices and value rows must equal the model's;
//  * each attended query must match oracle_for_token (tests/support/
//    oracle.hpp: every key re-rotated to its cache position in double) within
//    the element type's tolerance, and be non-finite exactly when the oracle
//    is (NaN and infinity are injected into keys, values and queries).
// Any other exception escapes and fails; a violation aborts with a message.
#include <sinkkv/sinkkv.hpp>
#include <sinkkv/snapshot.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../support/oracle.hpp"
#include "../support/tolerance.hpp"

namespace {

using namespace sinkkv;
using sinkkv::testing::HeadRows;

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "cache_fuzzer: %s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

/// The program's bytes; reading past the end gives zeros.
class Program {
 public:
  Program(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  bool done() const { return position_ >= size_; }
  std::uint8_t byte() { return position_ < size_ ? data_[position_++] : 0; }
  int pick(int count) { return count <= 1 ? 0 : byte() % count; }
  bool chance(int one_in) { return pick(one_in) == 0; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t position_ = 0;
};

/// Values: multiples of 1/32 in [-1, 1] (exact in every element type), with
/// rare NaN and infinity.
class Values {
 public:
  explicit Values(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  /// Infinities only where `infinities` (values: a key's infinity scores
  /// +inf or -inf or NaN depending on the rotation angles, which legitimately
  /// differ between the cache's frames and the oracle's).
  double value(bool specials, bool infinities) {
    const std::uint64_t r = next();
    if (specials && r % 997 == 0) return std::numeric_limits<double>::quiet_NaN();
    if (specials && infinities && r % 1999 == 1) return (r >> 20) % 2 == 0 ? INFINITY : -INFINITY;
    return static_cast<double>(static_cast<int>((r >> 11) % 65) - 32) / 32.0;
  }

 private:
  std::uint64_t state_;
};

// ---- configurations -----------------------------------------------------------

struct Setup {
  CacheConfig config;
  bool valid = true;  // the model's verdict, before the constructor runs
  int element = 0;    // 0 float, 1 double, 2 half, 3 bfloat16
  bool specials = false;
};

Setup make_setup(Program& p) {
  Setup s;
  CacheConfig& c = s.config;
  s.element = p.pick(4);
  // SINKKV_FUZZ_FINITE=1 keeps NaN and infinity out (to explore past a known
  // non-finite finding); the program's bytes are read the same either way.
  static const bool finite_only = std::getenv("SINKKV_FUZZ_FINITE") != nullptr;
  s.specials = p.chance(4) && !finite_only;
  c.num_layers = 1 + p.pick(3);
  c.num_kv_heads = 1 + p.pick(3);
  c.num_query_heads = c.num_kv_heads * (1 + p.pick(3));
  c.head_dim = 2 * (1 + p.pick(4));
  c.num_sinks = p.pick(5);
  c.window = 1 + p.pick(8);
  c.max_chunk = 1 + p.pick(4);
  if (p.chance(3)) {
    for (int layer = 0; layer < c.num_layers; ++layer) {
      for (int head = 0; head < c.num_kv_heads; ++head) {
        if (p.chance(2)) c.set_head_policy(layer, head, {p.pick(4), 1 + p.pick(6)});
      }
    }
  }
  const double thetas[] = {10000.0, 2.0, 500000.0};
  const double theta = thetas[p.pick(3)];
  const int rotary = c.head_dim >= 4 && p.chance(3) ? (c.head_dim / 2) & ~1 : 0;
  const RopeLayout layout = p.chance(2) ? RopeLayout::kAdjacentPairs : RopeLayout::kSplitHalves;
  switch (p.pick(10)) {
    case 0: c.encoding = PositionEncoding::none(); break;
    case 1: c.encoding = PositionEncoding::alibi_bias(); break;
    case 2: {
      AlibiConfig alibi;
      for (int h = 0; h < c.query_heads(); ++h) alibi.slopes.push_back((p.byte() % 64) / 32.0);
      c.encoding = PositionEncoding::alibi_bias(alibi);
      break;
    }
    case 3: c.encoding = PositionEncoding::rotary({theta, rotary, layout, RopeScaling::yarn(4.0, 16.0)}); break;
    case 4: c.encoding = PositionEncoding::rotary({theta, rotary, layout, RopeScaling::llama3(8.0, 1.0, 4.0, 32.0)}); break;
    case 5: c.encoding = PositionEncoding::rotary({theta, rotary, layout, RopeScaling::linear(2.0)}); break;
    case 6: c.encoding = PositionEncoding::rotary({theta, rotary, layout, RopeScaling::ntk_aware(3.0)}); break;
    case 7: {
      std::vector<double> frequencies;
      const int pairs = (rotary == 0 ? c.head_dim : rotary) / 2;
      for (int i = 0; i < pairs; ++i) frequencies.push_back(1.0 / (1 + p.pick(200)));
      c.encoding = PositionEncoding::rotary({theta, rotary, layout, RopeScaling::explicit_frequencies(frequencies, 1.25)});
      break;
    }
    default: c.encoding = PositionEncoding::rotary({theta, rotary, layout}); break;
  }
  if (c.encoding.kind == PositionEncoding::Kind::kRope && p.chance(4)) {
    c.input_rotation = InputRotation::kStreamRotated;
  }
  if (p.chance(16)) {  // one field that no cache can have
    s.valid = false;
    switch (p.pick(10)) {
      case 0: c.window = 0; break;
      case 1: c.num_sinks = -1; break;
      case 2: c.max_chunk = 0; break;
      case 3: c.num_query_heads = c.num_kv_heads == 1 ? -1 : c.num_kv_heads + 1; break;  // negative, or not a multiple
      case 4: c.head_dim = 0; break;
      case 5: c.num_layers = 0; break;
      case 6:
        c.encoding = PositionEncoding::rotary({std::numeric_limits<double>::quiet_NaN()});
        break;
      case 7: c.encoding = PositionEncoding::alibi_bias({std::vector<double>(static_cast<std::size_t>(c.query_heads()) + 1, 0.5)}); break;
      case 8: c.encoding = PositionEncoding::rotary({10000.0, 3}); break;  // odd rotary dimension
      default: c.head_policies.assign(3 * static_cast<std::size_t>(c.num_layers * c.num_kv_heads) + 1, RetentionPolicy{1, 1}); break;
    }
  }
  return s;
}

// ---- the reference model --------------------------------------------------------------

struct Model {
  CacheConfig config;
  bool moved_from = false;
  std::uint64_t tokens_seen = 0;
  int step_length = 0;
  bool explicit_steps = false;
  std::vector<bool> appended;             // [layer]: has appended the current step
  std::vector<std::vector<HeadRows>> keys;    // [layer][token][kv head][dim], un-rotated, as stored (exact values)
  std::vector<std::vector<HeadRows>> values;  // same

  explicit Model(const CacheConfig& c)
      : config(c), appended(static_cast<std::size_t>(c.num_layers), false),
        keys(static_cast<std::size_t>(c.num_layers)), values(static_cast<std::size_t>(c.num_layers)) {}

  bool step_complete() const {
    if (step_length == 0) return true;
    for (bool a : appended) {
      if (!a) return false;
    }
    return true;
  }
  void reset() {
    tokens_seen = 0;
    step_length = 0;
    explicit_steps = false;
    appended.assign(appended.size(), false);
    for (auto& k : keys) k.clear();
    for (auto& v : values) v.clear();
  }
  void start_step(int n) {
    tokens_seen += static_cast<std::uint64_t>(n);
    step_length = n;
    appended.assign(appended.size(), false);
  }
  RetentionPolicy policy(int layer, int head) const {
    if (config.head_policies.empty()) return RetentionPolicy{config.num_sinks, config.window};
    return config.head_policies[static_cast<std::size_t>(layer * config.num_kv_heads + head)];
  }
};

/// Every observable of a cache, through public observers: compared around
/// each misuse (which must change none of it).
template <class T>
std::vector<unsigned char> fingerprint(const SinkKVCache<T>& cache) {
  std::vector<unsigned char> out;
  const auto put = [&](const void* data, std::size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    out.insert(out.end(), bytes, bytes + size);
  };
  const std::uint64_t seen = cache.tokens_seen();
  const int step = cache.step_length();
  const bool complete = cache.token_complete();
  const int layers = cache.num_layers();
  put(&seen, sizeof seen);
  put(&step, sizeof step);
  put(&complete, sizeof complete);
  put(&layers, sizeof layers);
  if (layers == 0) return out;
  const CacheConfig& c = cache.config();
  for (int layer = 0; layer < c.num_layers; ++layer) {
    for (int head = 0; head < c.num_kv_heads; ++head) {
      const CachePositions& positions = cache.positions(layer, head);
      for (int i = 0; i < positions.size(); ++i) {
        const std::uint64_t t = positions.stream_index(i);
        put(&t, sizeof t);
        put(cache.key_row(layer, head, i), sizeof(T) * static_cast<std::size_t>(c.head_dim));
        put(cache.value_row(layer, head, i), sizeof(T) * static_cast<std::size_t>(c.head_dim));
      }
    }
  }
  return out;
}

std::string describe(const CacheConfig& c) {
  std::ostringstream text;
  text << "layers " << c.num_layers << " kv " << c.num_kv_heads << " q " << c.num_query_heads << " dim " << c.head_dim
       << " sinks " << c.num_sinks << " window " << c.window << " chunk " << c.max_chunk << " policies "
       << c.head_policies.size() << " encoding " << static_cast<int>(c.encoding.kind) << " scaling "
       << static_cast<int>(c.encoding.rope.scaling.kind) << " rotary " << c.encoding.rope.rotary_dim << " rotated "
       << static_cast<int>(c.input_rotation);
  return text.str();
}

/// Runs `call`, which the model says is valid or a misuse; checks the
/// outcome (and, for a misuse, that nothing observable changed).
template <class T, class Call>
bool expect(SinkKVCache<T>& cache, bool valid, const char* what, std::size_t op, Call&& call) {
  const std::vector<unsigned char> before = valid ? std::vector<unsigned char>() : fingerprint(cache);
  try {
    call();
  } catch (const Error& error) {
    if (valid) fail(std::string("op ") + std::to_string(op) + " " + what + ": valid per the model, but threw: " + error.what());
    if (fingerprint(cache) != before) fail(std::string("op ") + std::to_string(op) + " " + what + ": the misuse threw (" + error.what() + ") but changed the cache");
    return false;
  }
  if (!valid) fail(std::string("op ") + std::to_string(op) + " " + what + ": a misuse per the model, but it did not throw");
  return true;
}

// ---- the driver ----------------------------------------------------------------

template <class T>
class Driver {
 public:
  using C = compute_t<T>;

  Driver(const CacheConfig& config, Program& program, bool specials)
      : program_(program), values_(0x5151 + program.byte()), specials_(specials), config_(config),
        cache_(config), model_(config) {
    slopes_ = config.encoding.kind != PositionEncoding::Kind::kAlibi ? std::vector<double>()
              : config.encoding.alibi.slopes.empty() ? alibi_slopes(config.query_heads())
                                                     : config.encoding.alibi.slopes;
  }

  void run() {
    static const bool trace = std::getenv("SINKKV_FUZZ_TRACE") != nullptr;  // prints each operation
    if (trace) std::fprintf(stderr, "config: %s\n", describe(c()).c_str());
    for (op_ = 0; op_ < 400 && !program_.done(); ++op_) {
      const int operation = program_.pick(16);
      if (trace) {
        static const char* names[] = {"append", "append", "append", "append", "append", "attend", "attend",
                                      "attend", "attend", "begin_step", "clone/swap", "reset", "move",
                                      "snapshot", "observers", "complete_step"};
        std::fprintf(stderr, "op %zu: %s (tokens %llu, step %d, explicit %d, moved-from %d)\n", op_,
                     names[operation], static_cast<unsigned long long>(model_.tokens_seen), model_.step_length,
                     int{model_.explicit_steps}, int{model_.moved_from});
      }
      switch (operation) {
        case 0: case 1: case 2: case 3: case 4: append(); break;
        case 5: case 6: case 7: case 8: attend(); break;
        case 9: begin_step(); break;
        case 10: clone_or_swap(); break;
        case 11: reset(); break;
        case 12: move(); break;
        case 13: snapshot(); break;
        case 14: observers(); break;
        default: complete_step(); break;
      }
      check_state();
    }
  }

 private:
  const CacheConfig& c() const { return config_; }
  int kv_elements() const { return c().num_kv_heads * c().head_dim; }
  int q_elements() const { return c().query_heads() * c().head_dim; }
  int next_layer() const {
    for (int layer = 0; layer < c().num_layers; ++layer) {
      if (!model_.appended[static_cast<std::size_t>(layer)]) return layer;
    }
    return 0;
  }

  // Rows as the engine hands them over: rotated by the stream index when
  // the configuration says the inputs are.
  std::vector<float> engine_rows(const HeadRows& rows, std::uint64_t t) const {
    std::vector<float> flat;
    for (const auto& row : rows) {
      const std::vector<double> given =
          c().input_rotation == InputRotation::kStreamRotated
              ? sinkkv::testing::oracle_rotate(row, static_cast<double>(t), c().encoding.rope)
              : row;
      for (double x : given) flat.push_back(static_cast<float>(x));
    }
    return flat;
  }
  HeadRows random_rows(int heads, bool infinities = false) {
    HeadRows rows(static_cast<std::size_t>(heads), std::vector<double>(static_cast<std::size_t>(c().head_dim)));
    for (auto& row : rows) {
      for (double& x : row) x = values_.value(specials_, infinities);
    }
    return rows;
  }

  // The step's rows of one layer: the model's (exact) and the engine's.
  struct StepRows {
    std::vector<HeadRows> keys, values;
    std::vector<float> k, v;
  };
  StepRows step_rows(int n, std::uint64_t first) {
    StepRows rows;
    for (int i = 0; i < n; ++i) {
      rows.keys.push_back(random_rows(c().num_kv_heads));
      rows.values.push_back(random_rows(c().num_kv_heads, true));
      for (float x : engine_rows(rows.keys.back(), first + static_cast<std::uint64_t>(i))) rows.k.push_back(x);
      for (const auto& row : rows.values.back()) {
        for (double x : row) rows.v.push_back(static_cast<float>(x));
      }
    }
    return rows;
  }
  void record(int layer, int n, const StepRows& rows) {
    model_.appended[static_cast<std::size_t>(layer)] = true;
    for (int i = 0; i < n; ++i) {
      model_.keys[static_cast<std::size_t>(layer)].push_back(rows.keys[static_cast<std::size_t>(i)]);
      model_.values[static_cast<std::size_t>(layer)].push_back(rows.values[static_cast<std::size_t>(i)]);
    }
  }

  void append() {
    const bool misuse = program_.chance(5);
    int layer = program_.chance(4) ? program_.pick(c().num_layers) : next_layer();
    int n = model_.step_complete() ? 1 + program_.pick(c().max_chunk) : model_.step_length;
    int kind = 0;  // 0 none, 1 layer, 2 count, 3 null, 4 heads, 5 dim, 6 head stride, 7 element stride, 8 value tokens, 9 token stride
    if (misuse) {
      kind = 1 + program_.pick(9);
      if (kind == 1) layer = program_.chance(2) ? -1 : c().num_layers;
      if (kind == 2) n = program_.chance(2) ? 0 : (model_.step_complete() ? c().max_chunk + 1 : model_.step_length + 1);
      if (kind == 9 && n < 2) kind = 3;
    }
    const bool layer_ok = layer >= 0 && layer < c().num_layers;
    bool valid = !model_.moved_from && layer_ok && (kind == 0 || kind == 2);
    if (valid) {
      if (model_.step_complete()) {
        valid = !model_.explicit_steps && n >= 1 && n <= c().max_chunk;
      } else {
        valid = !model_.appended[static_cast<std::size_t>(layer)] && n == model_.step_length;
      }
    }
    const int tokens = std::max(n, 1);
    const std::uint64_t first = model_.step_complete() ? model_.tokens_seen
                                                       : model_.tokens_seen - static_cast<std::uint64_t>(model_.step_length);
    StepRows rows = step_rows(tokens, first);
    std::vector<float>& k = rows.k;
    std::vector<float>& v = rows.v;
    k.resize(k.size() + 64, 0.0f);  // room for the misuse shapes
    v.resize(v.size() + 64, 0.0f);
    const int heads = kind == 4 ? c().num_kv_heads + 1 : c().num_kv_heads;
    const int dim = kind == 5 ? c().head_dim + 1 : c().head_dim;
    const float* k_data = kind == 3 ? nullptr : k.data();
    const std::ptrdiff_t head_stride = kind == 6 ? -1 : c().head_dim;
    const std::ptrdiff_t element_stride = kind == 7 ? 0 : 1;
    const int form = program_.pick(3);
    if (std::getenv("SINKKV_FUZZ_TRACE") != nullptr) {
      std::fprintf(stderr, "  append layer %d, %d tokens, misuse kind %d, form %d: %s\n", layer, n, kind, form,
                   valid ? "valid" : "misuse");
    }
    const bool done = expect(cache_, valid, "append", op_, [&] {
      if (n == 1 && kind != 8 && kind != 9 && form == 0) {
        cache_.append(layer, heads_view(k_data, heads, dim, head_stride, element_stride),
                      heads_view(v.data(), heads, dim, head_stride, element_stride));
      } else if (n == 1 && kind == 0 && form == 1) {
        using Rows = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
        const Eigen::Map<const Rows> km(k.data(), c().num_kv_heads, c().head_dim);
        const Eigen::Map<const Rows> vm(v.data(), c().num_kv_heads, c().head_dim);
        cache_.append(layer, km, vm);
      } else {
        const std::ptrdiff_t token_stride = kind == 9 ? -1 : static_cast<std::ptrdiff_t>(c().num_kv_heads) * c().head_dim;
        cache_.append(layer, tokens_view(k_data, n, heads, dim, token_stride, head_stride, element_stride),
                      tokens_view(v.data(), kind == 8 ? n + 1 : n, heads, dim, token_stride, head_stride, element_stride));
      }
    });
    if (!done) return;
    if (model_.step_complete()) model_.start_step(n);
    record(layer, n, rows);
  }

  // Appends every layer that has not appended the current step, or a new
  // step on every layer (begun explicitly when the sequence does so).
  void complete_step() {
    if (model_.moved_from) return;
    int n = model_.step_length;
    if (model_.step_complete()) {
      n = 1 + program_.pick(c().max_chunk);
      if (model_.explicit_steps) begin_step_valid(n);
    }
    const std::uint64_t first = model_.step_complete() ? model_.tokens_seen
                                                       : model_.tokens_seen - static_cast<std::uint64_t>(model_.step_length);
    const std::vector<bool> done =
        model_.step_complete() ? std::vector<bool>(static_cast<std::size_t>(c().num_layers), false) : model_.appended;
    for (int layer = 0; layer < c().num_layers; ++layer) {
      if (done[static_cast<std::size_t>(layer)]) continue;
      const StepRows rows = step_rows(n, first);
      expect(cache_, true, "append (completing the step)", op_, [&] {
        cache_.append(layer, tokens_view(rows.k.data(), n, c().num_kv_heads, c().head_dim),
                      tokens_view(rows.v.data(), n, c().num_kv_heads, c().head_dim));
      });
      if (model_.step_complete()) model_.start_step(n);
      record(layer, n, rows);
    }
  }

  void begin_step_valid(int n) {
    expect(cache_, true, "begin_step", op_, [&] { cache_.begin_step(model_.tokens_seen, n); });
    model_.start_step(n);
    model_.explicit_steps = true;
  }

  void begin_step() {
    std::uint64_t index = model_.tokens_seen;
    int n = 1 + program_.pick(c().max_chunk);
    switch (program_.pick(6)) {
      case 0: index += 1; break;
      case 1: index = index > 0 ? index - 1 : 7; break;
      case 2: n = program_.chance(2) ? 0 : c().max_chunk + 1; break;
      default: break;
    }
    const bool valid = !model_.moved_from && model_.step_complete() && index == model_.tokens_seen && n >= 1 &&
                       n <= c().max_chunk;
    if (expect(cache_, valid, "begin_step", op_, [&] { cache_.begin_step(index, n); })) {
      model_.start_step(n);
      model_.explicit_steps = true;
    }
  }

  void attend() {
    const bool misuse = program_.chance(5);
    int layer = program_.chance(5) ? program_.pick(c().num_layers) : std::max(0, next_layer() - 1);
    if (model_.step_complete() && model_.step_length > 0 && !program_.chance(5)) layer = program_.pick(c().num_layers);
    int n = std::max(model_.step_length, 1);
    // 0 none, 1 layer, 2 count, 3 null query, 4 null output, 5 heads, 6 dim,
    // 7 overlapping output, 8 sink logit count, 9 NaN/+inf sink logit, 10 NaN scale, 11 logits count without pointer
    int kind = misuse ? 1 + program_.pick(11) : 0;
    if (kind == 1) layer = program_.chance(2) ? -1 : c().num_layers;
    if (kind == 2) n = program_.chance(2) ? n + 1 : n - 1;
    if (kind == 7 && c().query_heads() == 1 && n == 1) kind = 4;
    const bool use_logits = kind == 8 || kind == 9 || program_.chance(4);
    const bool layer_ok = layer >= 0 && layer < c().num_layers;
    const bool valid = !model_.moved_from && kind == 0 && layer_ok && model_.tokens_seen > 0 &&
                       model_.appended[static_cast<std::size_t>(layer)] && n == model_.step_length;
    const int tokens = std::max(n, 1);
    const std::uint64_t first = model_.tokens_seen - static_cast<std::uint64_t>(std::min<std::uint64_t>(
                                                         model_.tokens_seen, static_cast<std::uint64_t>(model_.step_length)));
    std::vector<HeadRows> q_rows;
    std::vector<float> q;
    for (int i = 0; i < tokens; ++i) {
      q_rows.push_back(random_rows(c().query_heads()));
      for (float x : engine_rows(q_rows.back(), first + static_cast<std::uint64_t>(i))) q.push_back(x);
    }
    q.resize(q.size() + 64, 0.0f);
    std::vector<C> out(static_cast<std::size_t>(tokens * q_elements() + 64), C(-7));
    std::vector<C> logits;
    std::vector<double> logits_double;
    for (int h = 0; h < c().query_heads() + 1; ++h) {
      const double logit = program_.chance(8) ? -INFINITY : (program_.byte() % 64) / 16.0 - 2.0;
      logits.push_back(static_cast<C>(logit));
      logits_double.push_back(static_cast<double>(static_cast<C>(logit)));
    }
    if (kind == 9) logits[static_cast<std::size_t>(program_.pick(c().query_heads()))] =
        program_.chance(2) ? std::numeric_limits<C>::quiet_NaN() : std::numeric_limits<C>::infinity();
    typename SinkKVCache<T>::Options options;
    const int scale_choice = program_.pick(4);
    options.scale = scale_choice == 0 ? C(0.25) : C(0);
    if (kind == 10) options.scale = program_.chance(2) ? std::numeric_limits<C>::quiet_NaN() : std::numeric_limits<C>::infinity();
    if (use_logits) {
      options.sink_logits = logits.data();
      options.num_sink_logits = kind == 8 ? c().query_heads() + 1 : c().query_heads();
    }
    if (kind == 11) {
      options.sink_logits = nullptr;
      options.num_sink_logits = c().query_heads();
    }
    const int heads = kind == 5 ? c().query_heads() + 1 : c().query_heads();
    const int dim = kind == 6 ? c().head_dim + 1 : c().head_dim;
    const float* q_data = kind == 3 ? nullptr : q.data();
    C* out_data = kind == 4 ? nullptr : out.data();
    const bool reference = program_.chance(2);
    const int form = program_.pick(3);
    const auto call = [&](auto&& kernel) {
      if (n == 1 && form != 0) {
        const std::ptrdiff_t out_head_stride = kind == 7 ? 0 : c().head_dim;
        cache_.attend(layer, heads_view(q_data, heads, dim), output_view(out_data, heads, dim, out_head_stride), kernel,
                      options);
      } else {
        const std::ptrdiff_t token_stride = kind == 7 ? 0 : static_cast<std::ptrdiff_t>(q_elements());
        const std::ptrdiff_t head_stride = kind == 7 && n == 1 ? 0 : c().head_dim;
        cache_.attend(layer, tokens_view(q_data, n, heads, dim),
                      tokens_output_view(out_data, n, heads, dim, token_stride, head_stride), kernel, options);
      }
    };
    const bool done = expect(cache_, valid, "attend", op_, [&] {
      if (reference) {
        call(ReferenceKernel{});
      } else {
        call(CpuKernel{});
      }
    });
    if (!done) return;
    check_outputs(layer, n, first, q_rows, out, options.scale, use_logits ? logits_double.data() : nullptr,
                  reference ? "ReferenceKernel" : "CpuKernel");
  }

  void check_outputs(int layer, int n, std::uint64_t first, const std::vector<HeadRows>& q_rows, const std::vector<C>& out,
                     C scale, const double* logits, const char* kernel) {
    const double resolved = scale != C(0) ? static_cast<double>(scale) : 1.0 / std::sqrt(static_cast<double>(c().head_dim));
    const bool rotated = c().input_rotation == InputRotation::kStreamRotated;
    const double absolute = std::max(sinkkv::testing::Tolerance<T>::kAbsolute, rotated ? sinkkv::testing::Tolerance<float>::kAbsolute : 0.0);
    const double relative = std::max(sinkkv::testing::Tolerance<T>::kRelative, rotated ? sinkkv::testing::Tolerance<float>::kRelative : 0.0);
    for (int i = 0; i < n; ++i) {
      const std::uint64_t t = first + static_cast<std::uint64_t>(i);
      const sinkkv::testing::OracleResult expected = sinkkv::testing::oracle_for_token(
          c(), layer, t, q_rows[static_cast<std::size_t>(i)], model_.keys[static_cast<std::size_t>(layer)],
          model_.values[static_cast<std::size_t>(layer)], slopes_, resolved, logits);
      for (int h = 0; h < c().query_heads(); ++h) {
        for (int d = 0; d < c().head_dim; ++d) {
          const double want = expected.output[static_cast<std::size_t>(h)][static_cast<std::size_t>(d)];
          const double got = static_cast<double>(out[static_cast<std::size_t>((i * c().query_heads() + h) * c().head_dim + d)]);
          const bool ok = std::isfinite(want) ? std::abs(got - want) <= absolute + relative * std::abs(want)
                                              : !std::isfinite(got);
          if (!ok) {
            std::ostringstream message;
            message << "op " << op_ << " attend (" << kernel << ", " << describe(c()) << ") layer " << layer
                    << " query " << i << " (token " << t << ") head " << h << " dim " << d << ": got " << got
                    << ", oracle " << want;
            fail(message.str());
          }
        }
        const double want_lse = expected.log_sum_exp[static_cast<std::size_t>(h)];
        const double lse = static_cast<double>(cache_.log_sum_exp(i, h));
        if (std::isfinite(want_lse) && std::abs(lse - want_lse) > 10 * (absolute + relative * std::abs(want_lse))) {
          std::ostringstream message;
          message << "op " << op_ << " log_sum_exp(" << i << ", " << h << ") on layer " << layer << " is " << lse
                  << ", oracle " << want_lse;
          fail(message.str());
        }
      }
    }
  }

  void clone_or_swap() {
    if (program_.chance(2) || !other_) {
      other_.emplace(cache_.clone());
      other_model_.emplace(model_);
    } else {
      std::swap(cache_, *other_);
      std::swap(model_, *other_model_);
    }
  }

  void reset() {
    cache_.reset();
    if (!model_.moved_from) model_.reset();
  }

  void move() {
    if (!model_.moved_from) {
      other_.emplace(std::move(cache_));
      other_model_.emplace(model_);
      model_.moved_from = true;
      return;
    }
    if (other_ && !other_model_->moved_from && program_.chance(2)) {
      cache_ = std::move(*other_);
      model_ = *other_model_;
      other_model_->moved_from = true;
    } else {
      cache_ = SinkKVCache<T>(config_);
      model_ = Model(config_);
    }
  }

  void snapshot() {
    const bool valid = !model_.moved_from && model_.step_complete();
    std::vector<std::uint8_t> bytes;
    if (!expect(cache_, valid, "save_snapshot", op_, [&] { bytes = save_snapshot(cache_); })) return;
    const std::vector<unsigned char> before = fingerprint(cache_);
    if (program_.chance(3) && !bytes.empty()) {  // damaged: refused, and a target stays as it was
      bytes[program_.byte() % bytes.size()] ^= static_cast<std::uint8_t>(1u << program_.pick(8));
      expect(cache_, false, "restore_snapshot of a damaged snapshot", op_,
             [&] { restore_snapshot(cache_, bytes.data(), bytes.size()); });
      return;
    }
    SinkKVCache<T> restored = load_snapshot<T>(bytes.data(), bytes.size());
    if (fingerprint(restored) != before) fail("op " + std::to_string(op_) + ": a restored snapshot differs from its cache");
    cache_ = std::move(restored);  // and the stream goes on from the restored cache
  }

  void observers() {
    const int layer = program_.pick(c().num_layers + 1) - (program_.chance(2) ? 1 : 0);
    const int head = program_.pick(c().num_kv_heads + 1);
    const int position = program_.pick(c().capacity() + 2) - 1;
    const bool layer_ok = layer >= 0 && layer < c().num_layers && head < c().num_kv_heads;
    int size = 0;
    if (layer_ok && !model_.moved_from) {
      const RetentionPolicy p = model_.policy(layer, head);
      size = static_cast<int>(sinkkv::testing::expected_cached_tokens(p.num_sinks, p.window, model_.tokens_seen).size());
    }
    const bool valid = !model_.moved_from && layer_ok && position >= 0 && position < size;
    expect(cache_, valid, "key_row", op_, [&] { (void)cache_.key_row(layer, head, position); });
    expect(cache_, valid, "value_row", op_, [&] { (void)cache_.value_row(layer, head, position); });
    bool uniform = true;
    for (const RetentionPolicy& p : c().head_policies) uniform = uniform && p == c().head_policies.front();
    expect(cache_, !model_.moved_from && uniform, "positions()", op_, [&] { (void)cache_.positions(); });
  }

  void check_state() {
    if (model_.moved_from) {
      if (cache_.tokens_seen() != 0 || cache_.num_layers() != 0 || cache_.storage_bytes() != 0 || cache_.size() != 0 ||
          !cache_.token_complete()) {
        fail("op " + std::to_string(op_) + ": a moved-from cache is not empty");
      }
      expect(cache_, false, "config() of a moved-from cache", op_, [&] { (void)cache_.config(); });
      return;
    }
    if (cache_.tokens_seen() != model_.tokens_seen || cache_.step_length() != model_.step_length ||
        cache_.token_complete() != model_.step_complete()) {
      std::ostringstream message;
      message << "op " << op_ << ": cache tokens_seen " << cache_.tokens_seen() << " step " << cache_.step_length()
              << " complete " << cache_.token_complete() << ", model " << model_.tokens_seen << " "
              << model_.step_length << " " << model_.step_complete();
      fail(message.str());
    }
    for (int layer = 0; layer < c().num_layers; ++layer) {
      // Rows are checked for layers that hold the current step.
      const bool current = model_.keys[static_cast<std::size_t>(layer)].size() == model_.tokens_seen;
      for (int head = 0; head < c().num_kv_heads; ++head) {
        const RetentionPolicy p = model_.policy(layer, head);
        const std::vector<std::uint64_t> kept =
            sinkkv::testing::expected_cached_tokens(p.num_sinks, p.window, model_.tokens_seen);
        const CachePositions& positions = cache_.positions(layer, head);
        if (positions.size() != static_cast<int>(kept.size())) {
          fail("op " + std::to_string(op_) + ": layer " + std::to_string(layer) + " head " + std::to_string(head) +
               " keeps " + std::to_string(positions.size()) + " tokens, model " + std::to_string(kept.size()));
        }
        for (int i = 0; i < positions.size(); ++i) {
          if (positions.stream_index(i) != kept[static_cast<std::size_t>(i)]) {
            fail("op " + std::to_string(op_) + ": cache position " + std::to_string(i) + " holds stream token " +
                 std::to_string(positions.stream_index(i)) + ", model " + std::to_string(kept[static_cast<std::size_t>(i)]));
          }
          if (!current) continue;
          const T* row = cache_.value_row(layer, head, i);
          const std::vector<double>& want =
              model_.values[static_cast<std::size_t>(layer)][static_cast<std::size_t>(kept[static_cast<std::size_t>(i)])]
                           [static_cast<std::size_t>(head)];
          for (int d = 0; d < c().head_dim; ++d) {
            const double got = sinkkv::detail::to_double(row[d]);
            const double expected = sinkkv::detail::to_double(sinkkv::detail::from_double<T>(want[static_cast<std::size_t>(d)]));
            if (!(got == expected || (std::isnan(got) && std::isnan(expected)))) {
              fail("op " + std::to_string(op_) + ": value row of stream token " +
                   std::to_string(kept[static_cast<std::size_t>(i)]) + " layer " + std::to_string(layer) + " head " +
                   std::to_string(head) + " differs from what was appended");
            }
          }
        }
      }
    }
  }

  Program& program_;
  Values values_;
  bool specials_;
  CacheConfig config_;
  std::vector<double> slopes_;
  SinkKVCache<T> cache_;
  Model model_;
  std::optional<SinkKVCache<T>> other_;
  std::optional<Model> other_model_;
  std::size_t op_ = 0;
};

template <class T>
void run(const Setup& setup, Program& program) {
  if (!setup.valid) {
    try {
      SinkKVCache<T> cache(setup.config);
    } catch (const Error&) {
      return;
    }
    fail("an invalid configuration was accepted: " + describe(setup.config));
  }
  Driver<T> driver(setup.config, program, setup.specials);
  driver.run();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Program program(data, size);
  const Setup setup = make_setup(program);
  switch (setup.element) {
    case 0: run<float>(setup, program); break;
    case 1: run<double>(setup, program); break;
    case 2: run<Eigen::half>(setup, program); break;
    default: run<Eigen::bfloat16>(setup, program); break;
  }
  return 0;
}
