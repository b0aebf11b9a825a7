// toy: llama2.c tokenizer.bin (for printing text) and token-stream files.
//
// tokenizer.bin: int32 max_token_length, then for each of vocab_size ids:
//   float32 score, int32 byte length, that many bytes.
// Token files: int32 little-endian ids back to back ("bin"), or ids as
// whitespace-separated decimal integers ("text").
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint.hpp"
#include "error.hpp"

namespace toy {

/// Pieces of a llama2.c vocabulary; decodes ids to bytes.
struct Tokenizer {
  int max_token_length = 0;
  std::vector<std::string> pieces;  // [vocab_size] raw bytes
  std::vector<float> scores;        // [vocab_size] merge priority (unused here)

  int vocab_size() const { return static_cast<int>(pieces.size()); }

  /// Bytes of `token`; sentencepiece byte pieces "<0xHH>" become that byte.
  std::string decode(int token) const {
    TOY_CHECK(token >= 0 && token < vocab_size(),
              "token " << token << " outside the tokenizer's vocabulary [0, " << vocab_size() << ")");
    const std::string& piece = pieces[static_cast<std::size_t>(token)];
    // Exactly "<0x", two hex digits, ">" (sscanf's %X would also take a
    // blank or a sign: "<0x A>" decoded to 0x0A).
    const auto hex = [](char c) {
      return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    };
    if (piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece[5] == '>' && hex(piece[3]) >= 0 &&
        hex(piece[4]) >= 0) {
      return std::string(1, static_cast<char>(hex(piece[3]) * 16 + hex(piece[4])));
    }
    return piece;
  }
};

/// Reads a llama2.c tokenizer.bin holding exactly `vocab_size` pieces.
/// Throws toy::Error naming the bad field, the piece, or a size mismatch.
inline Tokenizer load_tokenizer(const std::string& path, int vocab_size) {
  std::int64_t size = 0;
  std::ifstream in = detail::open_input(path, "tokenizer", size);
  Tokenizer t;
  std::int32_t max_length = 0;
  in.read(reinterpret_cast<char*>(&max_length), 4);
  TOY_CHECK(in, path << ": file is " << size << " bytes, too short for a tokenizer header");
  TOY_CHECK(max_length >= 1 && max_length <= (1 << 16),
            path << ": max_token_length = " << max_length << " outside [1, 65536]");
  t.max_token_length = max_length;
  // Every piece takes at least 8 bytes: reject a vocabulary the file cannot hold before reserving.
  TOY_CHECK(size - 4 >= std::int64_t{8} * vocab_size,
            path << ": file is " << size << " bytes, too small for " << vocab_size << " pieces");
  t.pieces.reserve(static_cast<std::size_t>(vocab_size));
  t.scores.reserve(static_cast<std::size_t>(vocab_size));
  for (int id = 0; id < vocab_size; ++id) {
    float score = 0;
    std::int32_t length = 0;
    in.read(reinterpret_cast<char*>(&score), 4);
    in.read(reinterpret_cast<char*>(&length), 4);
    TOY_CHECK(in, path << ": truncated at piece " << id << " of " << vocab_size);
    TOY_CHECK(length >= 0 && length <= max_length,
              path << ": piece " << id << " has length " << length << " outside [0, max_token_length "
                   << max_length << "]");
    std::string bytes(static_cast<std::size_t>(length), '\0');
    in.read(bytes.data(), length);
    TOY_CHECK(in, path << ": truncated in the bytes of piece " << id << " of " << vocab_size);
    t.pieces.push_back(std::move(bytes));
    t.scores.push_back(score);
  }
  const std::int64_t used = static_cast<std::int64_t>(in.tellg());
  TOY_CHECK(used == size, path << ": " << size - used << " bytes follow the " << vocab_size
                               << " pieces of the model's vocabulary: a tokenizer for another model?");
  return t;
}

/// Writes a llama2.c tokenizer.bin.
inline void save_tokenizer(const Tokenizer& t, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  TOY_CHECK(out, "cannot create tokenizer '" << path << "': " << std::strerror(errno));
  const std::int32_t max_length = t.max_token_length;
  out.write(reinterpret_cast<const char*>(&max_length), 4);
  for (std::size_t i = 0; i < t.pieces.size(); ++i) {
    const float score = t.scores[i];
    const std::int32_t length = static_cast<std::int32_t>(t.pieces[i].size());
    out.write(reinterpret_cast<const char*>(&score), 4);
    out.write(reinterpret_cast<const char*>(&length), 4);
    out.write(t.pieces[i].data(), length);
  }
  out.close();
  TOY_CHECK(out, "writing tokenizer '" << path << "' failed");
}

enum class TokenFormat { kBinary, kText };

inline TokenFormat parse_token_format(const std::string& name) {
  if (name == "bin") return TokenFormat::kBinary;
  if (name == "text") return TokenFormat::kText;
  TOY_FAIL("token format '" << name << "' is neither 'bin' (int32 little-endian) nor 'text'");
}

/// Reads a token stream; every id must lie in [0, vocab_size).
inline std::vector<std::int32_t> read_tokens(const std::string& path, TokenFormat format, int vocab_size) {
  std::int64_t size = 0;
  std::ifstream in = detail::open_input(path, "token file", size);
  std::vector<std::int32_t> tokens;
  if (format == TokenFormat::kBinary) {
    TOY_CHECK(size % 4 == 0, path << ": " << size << " bytes is not a whole number of int32 tokens"
                                  << " (a text file? use --format text)");
    tokens.resize(static_cast<std::size_t>(size / 4));
    in.read(reinterpret_cast<char*>(tokens.data()), static_cast<std::streamsize>(size));
    TOY_CHECK(in, path << ": read failed");
  } else {
    std::string word;
    while (in >> word) {
      std::size_t used = 0;
      long long value = 0;
      try {
        value = std::stoll(word, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      TOY_CHECK(used == word.size() && value >= std::numeric_limits<std::int32_t>::min() &&
                    value <= std::numeric_limits<std::int32_t>::max(),
                path << ": token " << tokens.size() << " '" << word << "' is not an int32");
      tokens.push_back(static_cast<std::int32_t>(value));
    }
  }
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    TOY_CHECK(tokens[i] >= 0 && tokens[i] < vocab_size,
              path << ": token " << i << " = " << tokens[i] << " outside the vocabulary [0, " << vocab_size << ")");
  }
  return tokens;
}

inline void write_tokens(const std::vector<std::int32_t>& tokens, const std::string& path, TokenFormat format) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  TOY_CHECK(out, "cannot create token file '" << path << "': " << std::strerror(errno));
  if (format == TokenFormat::kBinary) {
    out.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * 4));
  } else {
    for (std::size_t i = 0; i < tokens.size(); ++i) out << tokens[i] << ((i + 1) % 20 == 0 ? '\n' : ' ');
    out << '\n';
  }
  out.close();
  TOY_CHECK(out, "writing token file '" << path << "' failed");
}

}  // namespace toy
