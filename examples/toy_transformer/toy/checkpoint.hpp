// toy: llama2.c checkpoints (legacy format, version 0) — read, write, and
// seeded random weights in the same layout.
//
// File layout, all little-endian:
//   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//     (vocab_size < 0: the classifier is a separate matrix at the end)
//   float32 token_embedding [vocab, dim]
//           rms_att [layers, dim]
//           wq [layers, dim, dim]   wk [layers, kv_dim, dim]   wv [layers, kv_dim, dim]
//           wo [layers, dim, dim]   rms_ffn [layers, dim]
//           w1 [layers, hidden, dim]  w2 [layers, dim, hidden]  w3 [layers, hidden, dim]
//           rms_final [dim]
//           freq_cis_real [seq_len, head_dim/2]  freq_cis_imag [seq_len, head_dim/2]
//           wcls [vocab, dim]       (only when vocab_size < 0)
// Matrices are row-major [out][in]; kv_dim = n_kv_heads * head_dim,
// head_dim = dim / n_heads. The two RoPE tables are legacy (RoPE is computed
// by sinkkv at any position); we write them and check them on load.
#pragma once

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "error.hpp"

namespace toy {

/// Shape of a llama2.c model.
struct ModelConfig {
  int dim = 0;
  int hidden_dim = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int vocab_size = 0;  ///< always positive here; see shared_classifier
  int seq_len = 0;     ///< training context; sizes the legacy RoPE tables only
  bool shared_classifier = true;

  int head_dim() const { return dim / num_heads; }
  int kv_dim() const { return num_kv_heads * head_dim(); }

  /// Upper bounds that reject absurd headers before anything is allocated.
  static constexpr int kMaxDim = 1 << 16;
  static constexpr int kMaxHidden = 1 << 20;
  static constexpr int kMaxLayers = 1 << 12;
  static constexpr int kMaxVocab = 1 << 24;
  static constexpr int kMaxSeqLen = 1 << 24;

  /// Throws toy::Error naming the first bad field.
  void validate() const {
    const auto in_range = [](const char* name, int value, int max) {
      TOY_CHECK(value >= 1 && value <= max, name << " = " << value << " outside [1, " << max << "]");
    };
    in_range("dim", dim, kMaxDim);
    in_range("hidden_dim", hidden_dim, kMaxHidden);
    in_range("n_layers", num_layers, kMaxLayers);
    in_range("n_heads", num_heads, dim);
    in_range("n_kv_heads", num_kv_heads, num_heads);
    in_range("vocab_size", vocab_size, kMaxVocab);
    in_range("seq_len", seq_len, kMaxSeqLen);
    TOY_CHECK(dim % num_heads == 0, "n_heads = " << num_heads << " does not divide dim = " << dim);
    TOY_CHECK(num_heads % num_kv_heads == 0,
              "n_kv_heads = " << num_kv_heads << " does not divide n_heads = " << num_heads);
    TOY_CHECK(head_dim() % 2 == 0, "head size dim / n_heads = " << head_dim() << " is odd; RoPE needs pairs");
  }

  /// Float32 values after the header. @pre validate() passed (no overflow:
  /// every factor is bounded above).
  std::int64_t num_floats() const {
    const std::int64_t d = dim, h = hidden_dim, l = num_layers, v = vocab_size, kv = kv_dim();
    const std::int64_t per_layer = 2 * d + 2 * d * d + 2 * kv * d + 3 * d * h;
    return v * d + l * per_layer + d + 2 * std::int64_t{seq_len} * (head_dim() / 2) +
           (shared_classifier ? 0 : v * d);
  }
  static constexpr std::int64_t kHeaderBytes = 7 * 4;
  std::int64_t file_bytes() const { return kHeaderBytes + 4 * num_floats(); }

  friend std::ostream& operator<<(std::ostream& os, const ModelConfig& c) {
    return os << "dim=" << c.dim << " hidden_dim=" << c.hidden_dim << " n_layers=" << c.num_layers
              << " n_heads=" << c.num_heads << " n_kv_heads=" << c.num_kv_heads << " vocab_size=" << c.vocab_size
              << (c.shared_classifier ? "" : " (unshared classifier)") << " seq_len=" << c.seq_len;
  }
};

/// All weights of a model, float32, each matrix row-major [out][in].
struct ModelWeights {
  ModelConfig config;
  std::vector<float> token_embedding;  // [vocab_size, dim]
  std::vector<float> rms_att;          // [num_layers, dim]
  std::vector<float> wq;               // [num_layers, dim, dim]
  std::vector<float> wk;               // [num_layers, kv_dim, dim]
  std::vector<float> wv;               // [num_layers, kv_dim, dim]
  std::vector<float> wo;               // [num_layers, dim, dim]
  std::vector<float> rms_ffn;          // [num_layers, dim]
  std::vector<float> w1;               // [num_layers, hidden_dim, dim]
  std::vector<float> w2;               // [num_layers, dim, hidden_dim]
  std::vector<float> w3;               // [num_layers, hidden_dim, dim]
  std::vector<float> rms_final;        // [dim]
  std::vector<float> classifier;       // [vocab_size, dim]; empty when shared with token_embedding

  /// [vocab_size, dim]
  const float* classifier_data() const {
    return config.shared_classifier ? token_embedding.data() : classifier.data();
  }

  /// Calls f(name, vector, expected element count) for every weight array in
  /// file order (without the RoPE tables, which sit before the classifier).
  template <class Self, class F>
  static void for_each_array(Self& self, F&& f) {
    const ModelConfig& c = self.config;
    const std::size_t d = static_cast<std::size_t>(c.dim), h = static_cast<std::size_t>(c.hidden_dim),
                      l = static_cast<std::size_t>(c.num_layers), v = static_cast<std::size_t>(c.vocab_size),
                      kv = static_cast<std::size_t>(c.kv_dim());
    f("token_embedding", self.token_embedding, v * d);
    f("rms_att", self.rms_att, l * d);
    f("wq", self.wq, l * d * d);
    f("wk", self.wk, l * kv * d);
    f("wv", self.wv, l * kv * d);
    f("wo", self.wo, l * d * d);
    f("rms_ffn", self.rms_ffn, l * d);
    f("w1", self.w1, l * h * d);
    f("w2", self.w2, l * d * h);
    f("w3", self.w3, l * h * d);
    f("rms_final", self.rms_final, d);
    if (!c.shared_classifier) f("wcls", self.classifier, v * d);
  }
};

namespace detail {

inline bool little_endian_host() {
  const std::uint32_t one = 1;
  unsigned char first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

/// Legacy table value: cos (real) or sin (imag) of pos * 10000^(-2i/head_dim).
inline double legacy_rope(int position, int pair, int head_dim, bool imag) {
  const double angle =
      position * std::pow(10000.0, -2.0 * static_cast<double>(pair) / static_cast<double>(head_dim));
  return imag ? std::sin(angle) : std::cos(angle);
}

/// Opens a regular file for binary reading; `size` receives its length.
/// Throws toy::Error naming `what` and the path otherwise.
inline std::ifstream open_input(const std::string& path, const char* what, std::int64_t& size) {
  std::error_code error;
  const bool regular = std::filesystem::is_regular_file(path, error);
  TOY_CHECK(regular, "cannot open " << what << " '" << path << "': "
                                    << (error ? error.message() : std::string("not a regular file")));
  size = static_cast<std::int64_t>(std::filesystem::file_size(path, error));
  TOY_CHECK(!error, "cannot open " << what << " '" << path << "': " << error.message());
  std::ifstream in(path, std::ios::binary);
  TOY_CHECK(in, "cannot open " << what << " '" << path << "': " << std::strerror(errno));
  return in;
}

}  // namespace detail

/// The 7-int32 header of a version-0 file. Throws toy::Error naming what is
/// wrong (llama2.c version-1/2 magic, bad or absurd fields).
inline ModelConfig parse_header(const std::int32_t (&h)[7], const std::string& path) {
  TOY_CHECK(static_cast<std::uint32_t>(h[0]) != 0x616b3432u,
            path << ": this is a llama2.c version-1/2 export (magic \"ak42\"); only the legacy version-0 "
                    "format (export.py --version 0) is supported");
  ModelConfig config;
  config.dim = h[0];
  config.hidden_dim = h[1];
  config.num_layers = h[2];
  config.num_heads = h[3];
  config.num_kv_heads = h[4];
  config.shared_classifier = h[5] > 0;
  TOY_CHECK(h[5] != std::numeric_limits<std::int32_t>::min(), path << ": header vocab_size = " << h[5]);
  config.vocab_size = h[5] < 0 ? -h[5] : h[5];
  config.seq_len = h[6];
  try {
    config.validate();
  } catch (const Error& e) {
    TOY_FAIL(path << ": bad checkpoint header: " << e.what());
  }
  return config;
}

/// Reads a llama2.c version-0 checkpoint. The header is validated and the
/// file size compared with the size it implies before any weight memory is
/// allocated; non-finite weights and RoPE tables that are not theta-10000
/// adjacent-pair tables are rejected. Throws toy::Error naming the problem.
inline ModelWeights load_checkpoint(const std::string& path) {
  TOY_CHECK(detail::little_endian_host(), "llama2.c checkpoints are little-endian; this host is not");
  std::int64_t size = 0;
  std::ifstream in = detail::open_input(path, "checkpoint", size);
  TOY_CHECK(size >= ModelConfig::kHeaderBytes,
            path << ": file is " << size << " bytes, shorter than the 28-byte llama2.c header");
  std::int32_t header[7];
  in.read(reinterpret_cast<char*>(header), sizeof header);
  TOY_CHECK(in, path << ": cannot read the header");

  ModelWeights weights;
  weights.config = parse_header(header, path);
  const ModelConfig& c = weights.config;
  const std::int64_t expected = c.file_bytes();
  TOY_CHECK(size == expected, path << ": file is " << size << " bytes but its header (" << c << ") implies "
                                   << expected << " bytes ("
                                   << (size < expected ? "truncated by " : "followed by ")
                                   << (size < expected ? expected - size : size - expected) << " bytes)");

  const auto read_floats = [&](const char* name, std::vector<float>& out, std::size_t count) {
    out.resize(count);
    in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(count * sizeof(float)));
    TOY_CHECK(in, path << ": read failed in " << name);
    for (std::size_t i = 0; i < count; ++i) {
      TOY_CHECK(std::isfinite(out[i]), path << ": " << name << "[" << i << "] = " << out[i] << " is not finite");
    }
  };
  ModelWeights::for_each_array(weights, [&](const char* name, std::vector<float>& out, std::size_t count) {
    if (std::strcmp(name, "wcls") == 0) return;  // after the RoPE tables
    read_floats(name, out, count);
  });
  const int pairs = c.head_dim() / 2;
  std::vector<float> table;
  for (int imag = 0; imag < 2; ++imag) {
    const char* name = imag ? "freq_cis_imag" : "freq_cis_real";
    read_floats(name, table, static_cast<std::size_t>(c.seq_len) * static_cast<std::size_t>(pairs));
    for (int pos = 0; pos < c.seq_len; ++pos) {
      for (int i = 0; i < pairs; ++i) {
        const double want = detail::legacy_rope(pos, i, c.head_dim(), imag != 0);
        const float got = table[static_cast<std::size_t>(pos) * static_cast<std::size_t>(pairs) +
                                static_cast<std::size_t>(i)];
        TOY_CHECK(std::abs(got - want) <= 1e-3,  // float32 tables of float32 angles are off by ~1e-4

                  path << ": " << name << "[pos " << pos << "][pair " << i << "] = " << got << ", expected " << want
                       << " (adjacent-pair RoPE, theta 10000): corrupt file or a different RoPE");
      }
    }
  }
  if (!c.shared_classifier) read_floats("wcls", weights.classifier, static_cast<std::size_t>(c.vocab_size) * c.dim);
  return weights;
}

/// Writes `weights` as a llama2.c version-0 checkpoint (with the legacy RoPE
/// tables). Throws toy::Error on a bad config, wrongly sized arrays or an I/O
/// failure.
inline void save_checkpoint(const ModelWeights& weights, const std::string& path) {
  const ModelConfig& c = weights.config;
  c.validate();
  ModelWeights::for_each_array(weights, [&](const char* name, const std::vector<float>& a, std::size_t count) {
    TOY_CHECK(a.size() == count, "save_checkpoint: " << name << " has " << a.size() << " floats, expected " << count);
  });
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  TOY_CHECK(out, "cannot create checkpoint '" << path << "': " << std::strerror(errno));
  const std::int32_t header[7] = {c.dim,         c.hidden_dim,
                                  c.num_layers,  c.num_heads,
                                  c.num_kv_heads, c.shared_classifier ? c.vocab_size : -c.vocab_size,
                                  c.seq_len};
  out.write(reinterpret_cast<const char*>(header), sizeof header);
  const auto write = [&](const std::vector<float>& a) {
    out.write(reinterpret_cast<const char*>(a.data()), static_cast<std::streamsize>(a.size() * sizeof(float)));
  };
  ModelWeights::for_each_array(weights, [&](const char* name, const std::vector<float>& a, std::size_t) {
    if (std::strcmp(name, "wcls") != 0) write(a);
  });
  const int pairs = c.head_dim() / 2;
  std::vector<float> table(static_cast<std::size_t>(c.seq_len) * static_cast<std::size_t>(pairs));
  for (int imag = 0; imag < 2; ++imag) {
    for (int pos = 0; pos < c.seq_len; ++pos) {
      for (int i = 0; i < pairs; ++i) {
        table[static_cast<std::size_t>(pos) * static_cast<std::size_t>(pairs) + static_cast<std::size_t>(i)] =
            static_cast<float>(detail::legacy_rope(pos, i, c.head_dim(), imag != 0));
      }
    }
    write(table);
  }
  if (!c.shared_classifier) write(weights.classifier);
  out.close();
  TOY_CHECK(out, "writing checkpoint '" << path << "' failed");
}

/// splitmix64: a tiny deterministic generator, identical on every platform
/// (std:: distributions are not).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1), 24 random bits.
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }
  /// Uniform in [-a, a).
  float symmetric(float a) { return a * (2.0f * uniform() - 1.0f); }

 private:
  std::uint64_t state_;
};

/// Seeded random weights: linear layers uniform in +-1/sqrt(fan_in)
/// (outputs of unit scale), embeddings in +-0.25 (logits of order 1, so that
/// sampling is not near-deterministic), norm gains near 1.
inline ModelWeights random_weights(const ModelConfig& config, std::uint64_t seed) {
  config.validate();
  ModelWeights w;
  w.config = config;
  Rng rng(seed);
  const auto fan_in = [&](const char* name) -> int {
    if (std::strcmp(name, "w2") == 0) return config.hidden_dim;
    return config.dim;
  };
  ModelWeights::for_each_array(w, [&](const char* name, std::vector<float>& a, std::size_t count) {
    a.resize(count);
    const bool norm = std::strncmp(name, "rms", 3) == 0;
    const bool embedding = std::strcmp(name, "token_embedding") == 0;
    const float scale = embedding ? 0.25f : 1.0f / std::sqrt(static_cast<float>(fan_in(name)));
    for (float& x : a) x = norm ? 1.0f + rng.symmetric(0.1f) : rng.symmetric(scale);
  });
  return w;
}

}  // namespace toy
