// The seed corpus of the checkpoint fuzz target (corpus/checkpoint/): tiny
// valid llama2.c checkpoints, so that mutations start deep inside the loader,
// and damaged copies of them, each stopping the loader at a different check.
//   fuzz_checkpoint_seeds write <folder>   writes the seeds
//   fuzz_checkpoint_seeds check <folder>   checks the committed ones: each
//     valid-* file loads, each bad-* file throws toy::Error, nothing else is
//     there (the test fuzz.checkpoint.seeds)
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

#include "toy/checkpoint.hpp"

namespace {

using Bytes = std::vector<char>;

toy::ModelConfig shape(int dim, int hidden, int layers, int heads, int kv_heads, int vocab, int seq_len, bool shared) {
  toy::ModelConfig c;
  c.dim = dim;
  c.hidden_dim = hidden;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.vocab_size = vocab;
  c.seq_len = seq_len;
  c.shared_classifier = shared;
  return c;
}

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

Bytes checkpoint_bytes(const toy::ModelConfig& config, const std::string& scratch) {
  toy::save_checkpoint(toy::random_weights(config, 7), scratch);
  Bytes bytes = read_bytes(scratch);
  std::remove(scratch.c_str());
  return bytes;
}

template <class T>
Bytes with(Bytes bytes, std::size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof value);
  return bytes;
}

std::vector<std::pair<std::string, Bytes>> seeds(const std::string& scratch) {
  // 180 bytes: 38 floats (shared classifier); 892 bytes: grouped-query heads, separate classifier.
  const Bytes tiny = checkpoint_bytes(shape(2, 1, 1, 1, 1, 3, 2, true), scratch);
  const Bytes gqa = checkpoint_bytes(shape(4, 3, 2, 2, 1, 3, 2, false), scratch);
  const std::size_t header = 28, first_table_float = tiny.size() - 2 * 2 * 4;
  std::vector<std::pair<std::string, Bytes>> out;
  out.emplace_back("valid-tiny.bin", tiny);
  out.emplace_back("valid-gqa-unshared.bin", gqa);
  out.emplace_back("bad-empty.bin", Bytes{});
  out.emplace_back("bad-short-header.bin", Bytes(tiny.begin(), tiny.begin() + 20));
  out.emplace_back("bad-header-only.bin", Bytes(tiny.begin(), tiny.begin() + header));
  out.emplace_back("bad-truncated.bin", Bytes(tiny.begin(), tiny.end() - 4));
  Bytes trailing = tiny;
  trailing.push_back('\0');
  out.emplace_back("bad-trailing-byte.bin", trailing);
  out.emplace_back("bad-nan-weight.bin", with(tiny, header, std::numeric_limits<float>::quiet_NaN()));
  out.emplace_back("bad-rope-table.bin", with(tiny, first_table_float, 0.5f));
  out.emplace_back("bad-version-1-magic.bin", with(tiny, 0, std::uint32_t{0x616b3432u}));
  out.emplace_back("bad-odd-head-size.bin", with(tiny, 3 * 4, std::int32_t{2}));  // n_heads 2: head size 1
  const std::int32_t absurd[7] = {1 << 16, 1 << 20, 1 << 12, 1 << 10, 1 << 10, 1 << 24, 1 << 24};
  Bytes absurd_bytes(tiny);
  std::memcpy(absurd_bytes.data(), absurd, sizeof absurd);
  out.emplace_back("bad-absurd-shape.bin", absurd_bytes);
  return out;
}

bool loads(const std::string& path, std::string& error) {
  try {
    toy::load_checkpoint(path);
    return true;
  } catch (const toy::Error& e) {
    error = e.what();
    return false;
  }
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  if (argc != 3 || (std::strcmp(argv[1], "write") != 0 && std::strcmp(argv[1], "check") != 0)) {
    std::fprintf(stderr, "usage: %s write|check <folder>\n", argv[0]);
    return 2;
  }
  const fs::path folder = argv[2];
  const std::string scratch = (fs::temp_directory_path() / ("sinkkv_checkpoint_seed_" + std::to_string(::getpid()))).string();
  if (std::strcmp(argv[1], "write") == 0) {
    fs::create_directories(folder);
    for (const auto& [name, bytes] : seeds(scratch)) {
      std::ofstream out(folder / name, std::ios::binary | std::ios::trunc);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      if (!out) {
        std::fprintf(stderr, "cannot write %s\n", (folder / name).c_str());
        return 1;
      }
    }
    return 0;
  }
  int failures = 0, valid = 0, bad = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(folder)) {
    const std::string name = entry.path().filename().string();
    std::string error;
    const bool loaded = loads(entry.path().string(), error);
    if (name.rfind("valid-", 0) == 0) {
      ++valid;
      if (!loaded) std::fprintf(stderr, "FAIL %s: a valid seed does not load: %s\n", name.c_str(), error.c_str());
      failures += !loaded;
    } else if (name.rfind("bad-", 0) == 0) {
      ++bad;
      if (loaded) std::fprintf(stderr, "FAIL %s: a damaged seed loads\n", name.c_str());
      failures += loaded;
    } else {
      std::fprintf(stderr, "FAIL %s: seed names start with valid- or bad-\n", name.c_str());
      ++failures;
    }
  }
  if (valid == 0) {
    std::fprintf(stderr, "FAIL: no valid seed in %s\n", folder.c_str());
    ++failures;
  }
  std::printf("%d valid and %d damaged seeds checked, %d failures\n", valid, bad, failures);
  return failures == 0 ? 0 : 1;
}
