// Fuzz target: the llama2.c tokenizer reader of the toy transformer,
// toy::load_tokenizer and Tokenizer::decode
// (examples/toy_transformer/toy/tokens.hpp). Input: one byte, the
// vocabulary size the caller expects (0-255), then the tokenizer.bin bytes
// (written to a temporary file: the reader takes a path).
//
// Contract checked, beyond "no crash, no sanitizer report": every input
// either loads or throws toy::Error; a tokenizer that loads has exactly the
// expected number of pieces, none longer than its max_token_length, and
// saving it reproduces the file byte for byte; decode(id) is the piece
// itself, except a piece of exactly the form "<0xHH>" (two hex digits),
// which is that one byte, as its documentation says; decode of an id outside
// the vocabulary throws toy::Error.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "temp_file.hpp"
#include "toy/tokens.hpp"

using sinkkv_fuzz::fail;

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/// decode() as documented, written independently: "<0xHH>" is byte 0xHH.
std::string expected_decode(const std::string& piece) {
  if (piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece[5] == '>') {
    const int high = hex_digit(piece[3]), low = hex_digit(piece[4]);
    if (high >= 0 && low >= 0) return std::string(1, static_cast<char>(high * 16 + low));
  }
  return piece;
}

std::string printable(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const sinkkv_fuzz::TempFile input("tokenizer_input"), output("tokenizer_output");
  if (size < 1) return 0;
  const int vocab_size = data[0];
  input.write(data + 1, size - 1);

  toy::Tokenizer tokenizer;
  try {
    tokenizer = toy::load_tokenizer(input.path(), vocab_size);
  } catch (const toy::Error&) {
    return 0;
  }

  if (tokenizer.vocab_size() != vocab_size || tokenizer.scores.size() != tokenizer.pieces.size()) {
    fail("loaded " + std::to_string(tokenizer.vocab_size()) + " pieces and " + std::to_string(tokenizer.scores.size()) +
         " scores for a vocabulary of " + std::to_string(vocab_size));
  }
  for (int id = 0; id < vocab_size; ++id) {
    const std::string& piece = tokenizer.pieces[static_cast<std::size_t>(id)];
    if (static_cast<int>(piece.size()) > tokenizer.max_token_length) {
      fail("piece " + std::to_string(id) + " is longer than max_token_length");
    }
    const std::string decoded = tokenizer.decode(id), expected = expected_decode(piece);
    if (decoded != expected) {
      fail("decode(" + std::to_string(id) + ") of the piece \"" + printable(piece) + "\" gave \"" + printable(decoded) +
           "\", expected \"" + printable(expected) + "\"");
    }
  }
  for (const int outside : {-1, vocab_size}) {
    bool threw = false;
    try {
      tokenizer.decode(outside);
    } catch (const toy::Error&) {
      threw = true;
    }
    if (!threw) fail("decode(" + std::to_string(outside) + ") outside the vocabulary did not throw");
  }

  toy::save_tokenizer(tokenizer, output.path());
  const std::vector<std::uint8_t> written = output.read();
  if (written.size() != size - 1 || (size > 1 && std::memcmp(written.data(), data + 1, size - 1) != 0)) {
    fail("saving the loaded tokenizer does not reproduce its file");
  }
  return 0;
}
