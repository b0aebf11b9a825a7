// Fuzz target: the llama2.c checkpoint loader of the toy transformer,
// toy::load_checkpoint (examples/toy_transformer/toy/checkpoint.hpp), on
// arbitrary bytes.
//
// Contract checked, beyond "no crash, no sanitizer report": every input
// either loads or throws toy::Error (any other exception escapes and fails);
// and a checkpoint that loads is what its bytes say: the file is exactly the
// size its header implies, each weight array has the size its shape implies,
// every weight is finite, and writing the weights back reproduces the input
// byte for byte, except the legacy RoPE tables (regenerated on save; the
// loader accepts them within 1e-3).
//
// The loader takes a path, so each input goes through a temporary file, one
// per process, in $TMPDIR, else /dev/shm, else /tmp: memory-backed, the
// target runs ~15,000 inputs/s here, through /tmp on ext4 ~250/s.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

#include "toy/checkpoint.hpp"

namespace {

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "checkpoint fuzzer: %s\n", what.c_str());
  std::abort();
}

std::string temp_path(const char* tag) {
  const char* tmpdir = std::getenv("TMPDIR");
  const std::string dir = tmpdir && *tmpdir ? tmpdir : ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return dir + "/sinkkv_fuzz_checkpoint_" + tag + "_" + std::to_string(::getpid()) + ".bin";
}

void write_file(const std::string& path, const std::uint8_t* data, std::size_t size) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) fail("cannot create " + path);
  const bool written = size == 0 || std::fwrite(data, 1, size, file) == size;
  if (std::fclose(file) != 0 || !written) fail("cannot write " + path);
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::vector<std::uint8_t> bytes;
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) fail("cannot open " + path);
  std::uint8_t buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, file)) > 0;) bytes.insert(bytes.end(), buffer, buffer + n);
  std::fclose(file);
  return bytes;
}

struct TempFiles {
  std::string input = temp_path("input");
  std::string output = temp_path("output");
  ~TempFiles() {
    std::remove(input.c_str());
    std::remove(output.c_str());
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const TempFiles files;
  write_file(files.input, data, size);

  toy::ModelWeights weights;
  try {
    weights = toy::load_checkpoint(files.input);
  } catch (const toy::Error&) {
    return 0;  // rejected with a message: the expected outcome for most inputs
  }

  const toy::ModelConfig& c = weights.config;
  if (static_cast<std::int64_t>(size) != c.file_bytes()) {
    fail("loaded " + std::to_string(size) + " bytes, but the header implies " + std::to_string(c.file_bytes()));
  }
  toy::ModelWeights::for_each_array(weights, [&](const char* name, const std::vector<float>& a, std::size_t count) {
    if (a.size() != count) fail(std::string(name) + " has " + std::to_string(a.size()) + " floats, expected " +
                                std::to_string(count));
    for (float x : a) {
      if (!std::isfinite(x)) fail(std::string(name) + " holds a non-finite weight");
    }
  });

  toy::save_checkpoint(weights, files.output);
  const std::vector<std::uint8_t> written = read_file(files.output);
  if (written.size() != size) fail("saved " + std::to_string(written.size()) + " bytes of a " + std::to_string(size) +
                                   "-byte checkpoint");
  // [header | weights | RoPE tables | classifier (unshared only)]
  const std::int64_t pairs = c.head_dim() / 2;
  const std::int64_t classifier_bytes = c.shared_classifier ? 0 : std::int64_t{4} * c.vocab_size * c.dim;
  const std::int64_t tables_end = static_cast<std::int64_t>(size) - classifier_bytes;
  const std::int64_t tables_begin = tables_end - std::int64_t{2 * 4} * c.seq_len * pairs;
  if (std::memcmp(written.data(), data, static_cast<std::size_t>(tables_begin)) != 0) {
    fail("the header or the weights differ after a load and save");
  }
  if (std::memcmp(written.data() + tables_end, data + tables_end, static_cast<std::size_t>(classifier_bytes)) != 0) {
    fail("the classifier differs after a load and save");
  }
  return 0;
}
