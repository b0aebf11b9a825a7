// Fuzz target: the llama2.c checkpoint loader of the toy transformer,
// toy::load_checkpoint (examples/toy_transformer/toy/checkpoint.hpp), on
// arbitrary bytes (written to a temporary file: the loader takes a path).
//
// Contract checked, beyond "no crash, no sanitizer report": every input
// either loads or throws toy::Error (any other exception escapes and fails);
// and a checkpoint that loads is what its bytes say: the file is exactly the
// size its header implies, each weight array has the size its shape implies,
// every weight is finite, and writing the weights back reproduces the input
// byte for byte, except the legacy RoPE tables (regenerated on save; the
// loader accepts them within 1e-3).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "temp_file.hpp"
#include "toy/checkpoint.hpp"

using sinkkv_fuzz::fail;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const sinkkv_fuzz::TempFile input("checkpoint_input"), output("checkpoint_output");
  input.write(data, size);

  toy::ModelWeights weights;
  try {
    weights = toy::load_checkpoint(input.path());
  } catch (const toy::Error&) {
    return 0;  // rejected with a message: the expected outcome for most inputs
  }

  const toy::ModelConfig& c = weights.config;
  if (static_cast<std::int64_t>(size) != c.file_bytes()) {
    fail("loaded " + std::to_string(size) + " bytes, but the header implies " + std::to_string(c.file_bytes()));
  }
  toy::ModelWeights::for_each_array(weights, [&](const char* name, const std::vector<float>& a, std::size_t count) {
    if (a.size() != count) {
      fail(std::string(name) + " has " + std::to_string(a.size()) + " floats, expected " + std::to_string(count));
    }
    for (float x : a) {
      if (!std::isfinite(x)) fail(std::string(name) + " holds a non-finite weight");
    }
  });

  toy::save_checkpoint(weights, output.path());
  const std::vector<std::uint8_t> written = output.read();
  if (written.size() != size) {
    fail("saved " + std::to_string(written.size()) + " bytes of a " + std::to_string(size) + "-byte checkpoint");
  }
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
