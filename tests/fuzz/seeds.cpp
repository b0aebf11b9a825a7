// Seed corpora of the toy transformer's fuzz targets (corpus/<target>/):
// small valid inputs, so that mutations start deep inside the reader, and
// damaged copies of them, each stopping the reader at a different check.
//   fuzz_seeds write <target> <folder>   writes the seeds
//   fuzz_seeds check <target> <folder>   checks the committed ones: each
//     valid-* file is accepted, each bad-* file throws toy::Error, nothing
//     else is there (the tests fuzz.<target>.seeds)
// Targets: checkpoint (a llama2.c checkpoint file), tokenizer (one byte of
// vocabulary size, then a llama2.c tokenizer.bin; see tokenizer_fuzzer.cpp).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "toy/checkpoint.hpp"
#include "toy/tokens.hpp"

namespace {

using Bytes = std::vector<char>;
using Seeds = std::vector<std::pair<std::string, Bytes>>;

std::string scratch_path() {
  return (std::filesystem::temp_directory_path() / ("sinkkv_fuzz_seed_" + std::to_string(::getpid()))).string();
}

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  TOY_CHECK(out, "cannot write " << path);
}

template <class T>
Bytes with(Bytes bytes, std::size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof value);
  return bytes;
}

Bytes truncated(const Bytes& bytes, std::size_t size) { return Bytes(bytes.begin(), bytes.begin() + size); }

Bytes appended(Bytes bytes, char byte) {
  bytes.push_back(byte);
  return bytes;
}

/// The message of the toy::Error that `f` throws; "" when it returns.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const toy::Error& e) {
    return e.what()[0] != '\0' ? e.what() : "(empty message)";
  }
  return "";
}

// ---- checkpoint: the file itself ---------------------------------------------

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

Bytes checkpoint_bytes(const toy::ModelConfig& config) {
  const std::string scratch = scratch_path();
  toy::save_checkpoint(toy::random_weights(config, 7), scratch);
  Bytes bytes = read_bytes(scratch);
  std::remove(scratch.c_str());
  return bytes;
}

Seeds checkpoint_seeds() {
  // 180 bytes: 38 floats, shared classifier; 892 bytes: grouped-query heads, separate classifier.
  const Bytes tiny = checkpoint_bytes(shape(2, 1, 1, 1, 1, 3, 2, true));
  const Bytes gqa = checkpoint_bytes(shape(4, 3, 2, 2, 1, 3, 2, false));
  const std::size_t header = 28, first_table_float = tiny.size() - 2 * 2 * 4;
  const std::int32_t absurd[7] = {1 << 16, 1 << 20, 1 << 12, 1 << 10, 1 << 10, 1 << 24, 1 << 24};
  Bytes absurd_shape = tiny;
  std::memcpy(absurd_shape.data(), absurd, sizeof absurd);
  return {{"valid-tiny.bin", tiny},
          {"valid-gqa-unshared.bin", gqa},
          {"bad-empty.bin", {}},
          {"bad-short-header.bin", truncated(tiny, 20)},
          {"bad-header-only.bin", truncated(tiny, header)},
          {"bad-truncated.bin", truncated(tiny, tiny.size() - 4)},
          {"bad-trailing-byte.bin", appended(tiny, '\0')},
          {"bad-nan-weight.bin", with(tiny, header, std::numeric_limits<float>::quiet_NaN())},
          {"bad-rope-table.bin", with(tiny, first_table_float, 0.5f)},
          {"bad-version-1-magic.bin", with(tiny, 0, std::uint32_t{0x616b3432u})},
          {"bad-odd-head-size.bin", with(tiny, 3 * 4, std::int32_t{2})},  // n_heads 2: head size 1
          {"bad-absurd-shape.bin", absurd_shape}};
}

std::string checkpoint_error(const std::string& path) {
  return error_of([&] { toy::load_checkpoint(path); });
}

// ---- tokenizer: [uint8 vocab_size][tokenizer.bin] ---------------------------------

Bytes tokenizer_input(const toy::Tokenizer& tokenizer, int vocab_size) {
  const std::string scratch = scratch_path();
  toy::save_tokenizer(tokenizer, scratch);
  Bytes bytes = read_bytes(scratch);
  std::remove(scratch.c_str());
  bytes.insert(bytes.begin(), static_cast<char>(vocab_size));
  return bytes;
}

Seeds tokenizer_seeds() {
  toy::Tokenizer t;
  t.max_token_length = 6;
  t.pieces = {"<unk>", "<s>", "</s>", "<0x41>", "<0x0A>", "hello", " a", ""};
  t.scores = {0.0f, 0.0f, 0.0f, -1.0f, -2.0f, -3.5f, -4.0f, 0.25f};
  const Bytes valid = tokenizer_input(t, 8);
  const std::size_t header = 1 + 4;
  return {{"valid-eight-pieces.bin", valid},
          {"valid-empty-vocabulary.bin", with(truncated(valid, header), 0, std::uint8_t{0})},
          {"bad-empty.bin", {}},
          {"bad-short-header.bin", truncated(valid, 3)},
          {"bad-truncated-piece.bin", truncated(valid, valid.size() - 1)},
          {"bad-trailing-byte.bin", appended(valid, 'x')},
          {"bad-vocabulary-larger.bin", with(valid, 0, std::uint8_t{9})},
          {"bad-vocabulary-smaller.bin", with(valid, 0, std::uint8_t{7})},
          {"bad-max-length-zero.bin", with(valid, 1, std::int32_t{0})},
          {"bad-piece-too-long.bin", with(valid, 1, std::int32_t{4})},
          {"bad-negative-length.bin", with(valid, header + 4, std::int32_t{-1})}};
}

std::string tokenizer_error(const std::string& path) {
  const Bytes input = read_bytes(path);
  if (input.empty()) return "no vocabulary size byte";
  const std::string scratch = scratch_path();
  write_bytes(scratch, Bytes(input.begin() + 1, input.end()));
  const std::string error = error_of([&] { toy::load_tokenizer(scratch, static_cast<unsigned char>(input[0])); });
  std::remove(scratch.c_str());
  return error;
}

struct Target {
  const char* name;
  Seeds (*seeds)();
  std::string (*error)(const std::string& path);  // "" when the reader accepts the file
};
const Target kTargets[] = {{"checkpoint", checkpoint_seeds, checkpoint_error},
                           {"tokenizer", tokenizer_seeds, tokenizer_error}};

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const Target* target = nullptr;
  for (const Target& t : kTargets) {
    if (argc == 4 && std::strcmp(argv[2], t.name) == 0) target = &t;
  }
  if (target == nullptr || (std::strcmp(argv[1], "write") != 0 && std::strcmp(argv[1], "check") != 0)) {
    std::fprintf(stderr, "usage: %s write|check checkpoint|tokenizer <folder>\n", argv[0]);
    return 2;
  }
  const fs::path folder = argv[3];
  if (std::strcmp(argv[1], "write") == 0) {
    fs::create_directories(folder);
    for (const auto& [name, bytes] : target->seeds()) write_bytes((folder / name).string(), bytes);
    return 0;
  }
  int failures = 0, valid = 0, bad = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(folder)) {
    const std::string name = entry.path().filename().string();
    const std::string error = target->error(entry.path().string());
    if (name.rfind("valid-", 0) == 0) {
      ++valid;
      if (!error.empty()) std::fprintf(stderr, "FAIL %s: a valid seed is rejected: %s\n", name.c_str(), error.c_str());
      failures += !error.empty();
    } else if (name.rfind("bad-", 0) == 0) {
      ++bad;
      if (error.empty()) std::fprintf(stderr, "FAIL %s: a damaged seed is accepted\n", name.c_str());
      failures += error.empty();
    } else {
      std::fprintf(stderr, "FAIL %s: seed names start with valid- or bad-\n", name.c_str());
      ++failures;
    }
  }
  if (valid == 0) {
    std::fprintf(stderr, "FAIL: no valid seed in %s\n", folder.c_str());
    ++failures;
  }
  std::printf("%s: %d valid and %d damaged seeds checked, %d failures\n", target->name, valid, bad, failures);
  return failures == 0 ? 0 : 1;
}
