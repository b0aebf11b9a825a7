// toy: the committed models' byte-level BPE (tools/train/corpus.py), so a
// prompt typed by a user becomes the ids the model was trained on.
//
// vocab.json: {"pretokenizer": the regex below, "vocab_size": V, "sink_id": V-1,
//              "merges": [[left, right], ...]} — id 256 + r is merge r.
// Ids 0-255 are the raw bytes, 256.. the merges in the order learned, and the
// last id is "<sink>", which no text encodes to.
//
// Encoding is corpus.BPE.encode, step for step:
//  1. Pre-tokenization, as Python's re.findall with the pattern
//       " ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"
//     on the text decoded as UTF-8. Python's \s is str.isspace() (Unicode
//     whitespace), the letter and digit classes are ASCII only. Bytes that
//     are not well-formed UTF-8 count as one "other" character each: Python's
//     "surrogateescape" decoding, which maps them to lone surrogates, matched
//     by [^\sA-Za-z0-9] (corpus.BPE.encode_bytes does the same).
//  2. Within each pre-token, its bytes; then, while some adjacent pair is a
//     merge, the pair of lowest rank is replaced everywhere, left to right.
// Every byte of the text lands in exactly one pre-token, so decoding the ids
// gives the text back, byte for byte, whatever the bytes.
#pragma once

#include <array>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "checkpoint.hpp"
#include "error.hpp"
#include "json.hpp"

namespace toy {

/// The pre-tokenizer regex the encoder implements; vocab.json must name it.
inline constexpr std::string_view kPretokenizerPattern = R"( ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+)";

namespace detail {

enum class CharClass : unsigned char { kLetter, kDigit, kWhitespace, kOther };

/// Python's str.isspace() (and re's \s) for a code point, Unicode 14 / Python 3.11.
constexpr bool is_python_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/// Length of the well-formed UTF-8 sequence at `p` (Unicode table 3-7: no
/// overlong forms, no surrogates, nothing past U+10FFFF), 0 if there is none;
/// its code point in `code`.
inline std::size_t utf8_sequence(const unsigned char* p, std::size_t available, char32_t& code) {
  const unsigned char b0 = p[0];
  if (b0 < 0x80) {
    code = b0;
    return 1;
  }
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    if (b0 == 0xE0) low = 0xA0;
    if (b0 == 0xED) high = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    if (b0 == 0xF0) low = 0x90;
    if (b0 == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  if (available < length || p[1] < low || p[1] > high) return 0;
  for (std::size_t i = 2; i < length; ++i) {
    if (p[i] < 0x80 || p[i] > 0xBF) return 0;
  }
  code = static_cast<char32_t>(b0 & (0xFF >> (length + 1)));
  for (std::size_t i = 1; i < length; ++i) code = (code << 6) | (p[i] & 0x3F);
  return length;
}

/// One character of the text as the pre-tokenizer sees it.
struct TextChar {
  std::size_t begin;  // byte offset
  CharClass kind;
  bool is_space;  // U+0020, the optional leading space of a word
};

inline std::vector<TextChar> split_characters(std::string_view text) {
  std::vector<TextChar> chars;
  chars.reserve(text.size());
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  for (std::size_t at = 0; at < text.size();) {
    char32_t code = 0;
    const std::size_t length = utf8_sequence(bytes + at, text.size() - at, code);
    CharClass kind = CharClass::kOther;  // also an ill-formed byte (a lone surrogate in Python)
    if (length > 0) {
      if ((code >= 'A' && code <= 'Z') || (code >= 'a' && code <= 'z')) {
        kind = CharClass::kLetter;
      } else if (code >= '0' && code <= '9') {
        kind = CharClass::kDigit;
      } else if (is_python_whitespace(code)) {
        kind = CharClass::kWhitespace;
      }
    }
    chars.push_back({at, kind, length > 0 && code == U' '});
    at += length > 0 ? length : 1;
  }
  return chars;
}

}  // namespace detail

/// The pre-tokens of `text`, in order; they partition it (see the file
/// comment for the rules). Allocates the result.
inline std::vector<std::string_view> pretokenize(std::string_view text) {
  using detail::CharClass;
  const std::vector<detail::TextChar> chars = detail::split_characters(text);
  const std::size_t n = chars.size();
  const auto byte_at = [&](std::size_t i) { return i < n ? chars[i].begin : text.size(); };
  std::vector<std::string_view> pieces;
  for (std::size_t i = 0; i < n;) {
    std::size_t end = i + 1;  // in characters
    const CharClass kind = chars[i].kind;
    if (kind != CharClass::kWhitespace ||
        (chars[i].is_space && i + 1 < n && chars[i + 1].kind != CharClass::kWhitespace)) {
      // " ?[A-Za-z]+", " ?[0-9]+" or " ?[^\sA-Za-z0-9]+": an optional space, then a run of one class.
      const CharClass run = kind == CharClass::kWhitespace ? chars[i + 1].kind : kind;
      while (end < n && chars[end].kind == run) ++end;
    } else {
      // "\s+(?!\S)": a whitespace run, less its last character when text follows
      // (that one starts the next pre-token); else "\s+" for a single one.
      while (end < n && chars[end].kind == CharClass::kWhitespace) ++end;
      if (end < n && end - i >= 2) --end;
    }
    pieces.push_back(text.substr(byte_at(i), byte_at(end) - byte_at(i)));
    i = end;
  }
  return pieces;
}

/// Byte-level BPE encoder and decoder (tools/train/corpus.py's BPE).
/// Immutable after construction; encode()/decode() allocate their results
/// and are safe to call from several threads.
class BytePairEncoder {
 public:
  /// `merges[r]` = (left id, right id) of id 256 + r; each id must exist
  /// before its merge. Throws toy::Error naming the bad merge.
  explicit BytePairEncoder(std::vector<std::array<int, 2>> merges) : merges_(std::move(merges)) {
    for (int b = 0; b < 256; ++b) pieces_.emplace_back(1, static_cast<char>(b));
    for (std::size_t r = 0; r < merges_.size(); ++r) {
      const int left = merges_[r][0], right = merges_[r][1];
      const int next = static_cast<int>(256 + r);
      TOY_CHECK(left >= 0 && left < next && right >= 0 && right < next,
                "merge " << r << " (" << left << ", " << right << ") uses an id outside [0, " << next << ")");
      const auto inserted = ranks_.emplace(pair_key(left, right), static_cast<int>(r));
      TOY_CHECK(inserted.second,
                "merge " << r << " (" << left << ", " << right << ") repeats merge " << inserted.first->second);
      pieces_.push_back(pieces_[static_cast<std::size_t>(left)] + pieces_[static_cast<std::size_t>(right)]);
    }
    pieces_.emplace_back(kSinkText);
  }

  static constexpr const char* kSinkText = "<sink>";

  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  /// The "<sink>" id, the last one: no text encodes to it.
  int sink_id() const { return vocab_size() - 1; }

  /// Bytes of `token` ("<sink>" for the sink id).
  const std::string& piece(int token) const {
    TOY_CHECK(token >= 0 && token < vocab_size(),
              "token " << token << " outside the vocabulary [0, " << vocab_size() << ")");
    return pieces_[static_cast<std::size_t>(token)];
  }

  std::string decode(const std::vector<std::int32_t>& ids) const {
    std::string text;
    for (std::int32_t id : ids) text += piece(id);
    return text;
  }

  /// The ids of `text`, any bytes (see the file comment).
  std::vector<std::int32_t> encode(std::string_view text) const {
    std::vector<std::int32_t> ids;
    std::vector<std::int32_t> word, merged;  // scratch, reused across pre-tokens
    for (std::string_view pretoken : pretokenize(text)) {
      word.assign(pretoken.begin(), pretoken.end());
      for (std::int32_t& id : word) id &= 0xFF;  // the bytes as ids 0..255 (char may be signed)
      merge_word(word, merged);
      ids.insert(ids.end(), word.begin(), word.end());
    }
    return ids;
  }

 private:
  static std::uint64_t pair_key(std::int32_t left, std::int32_t right) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) | static_cast<std::uint32_t>(right);
  }

  /// corpus.BPE._encode_word: the lowest-rank pair, replaced everywhere, until
  /// none is a merge. A merge only creates pairs of higher rank, so this runs
  /// at most once per merge: O(merges x length).
  void merge_word(std::vector<std::int32_t>& word, std::vector<std::int32_t>& merged) const {
    while (word.size() > 1) {
      int best = -1;
      for (std::size_t i = 0; i + 1 < word.size(); ++i) {
        const auto found = ranks_.find(pair_key(word[i], word[i + 1]));
        if (found != ranks_.end() && (best < 0 || found->second < best)) best = found->second;
      }
      if (best < 0) return;
      const std::int32_t left = merges_[static_cast<std::size_t>(best)][0];
      const std::int32_t right = merges_[static_cast<std::size_t>(best)][1];
      merged.clear();
      for (std::size_t i = 0; i < word.size(); ++i) {
        if (i + 1 < word.size() && word[i] == left && word[i + 1] == right) {
          merged.push_back(256 + best);
          ++i;
        } else {
          merged.push_back(word[i]);
        }
      }
      word.swap(merged);
    }
  }

  std::vector<std::array<int, 2>> merges_;        // [merges] (left, right) of id 256 + rank
  std::unordered_map<std::uint64_t, int> ranks_;  // (left, right) -> rank
  std::vector<std::string> pieces_;               // [vocab_size] bytes of each id
};

/// Reads a vocab.json written by corpus.BPE.save_json. Throws toy::Error
/// naming the file and what is wrong: bad JSON, another pre-tokenizer, sizes
/// that disagree, a bad merge.
inline BytePairEncoder load_bpe_vocab(const std::string& path) {
  std::int64_t size = 0;
  std::ifstream in = detail::open_input(path, "BPE vocabulary", size);
  TOY_CHECK(size <= (std::int64_t{1} << 28), path << ": " << size << " bytes is too large for a vocab.json");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    const JsonValue doc = parse_json(text);
    TOY_CHECK(doc.kind == JsonValue::Kind::kObject, "not a JSON object");
    const JsonValue* pattern = doc.find("pretokenizer");
    TOY_CHECK(pattern != nullptr && pattern->kind == JsonValue::Kind::kString, "no \"pretokenizer\" string");
    TOY_CHECK(pattern->text == kPretokenizerPattern, "pre-tokenizer '" << pattern->text
                                                                       << "' is not the one this encoder implements ('"
                                                                       << kPretokenizerPattern << "')");
    const JsonValue* merges = doc.find("merges");
    TOY_CHECK(merges != nullptr && merges->kind == JsonValue::Kind::kArray, "no \"merges\" array");
    std::vector<std::array<int, 2>> pairs;
    pairs.reserve(merges->items.size());
    for (std::size_t r = 0; r < merges->items.size(); ++r) {
      const JsonValue& m = merges->items[r];
      TOY_CHECK(m.kind == JsonValue::Kind::kArray && m.items.size() == 2, "merge " << r << " is not a pair of ids");
      const std::string what = "merge " + std::to_string(r);
      pairs.push_back({static_cast<int>(m.items[0].integer(what, 0, 1 << 24)),
                       static_cast<int>(m.items[1].integer(what, 0, 1 << 24))});
    }
    BytePairEncoder bpe(std::move(pairs));
    const JsonValue* vocab_size = doc.find("vocab_size");
    const JsonValue* sink_id = doc.find("sink_id");
    TOY_CHECK(vocab_size != nullptr && sink_id != nullptr, "no \"vocab_size\" or \"sink_id\"");
    TOY_CHECK(vocab_size->integer("vocab_size", 0, 1 << 24) == bpe.vocab_size(),
              "vocab_size " << vocab_size->number << " but 256 bytes + " << merges->items.size()
                            << " merges + <sink> = " << bpe.vocab_size() << " ids");
    TOY_CHECK(sink_id->integer("sink_id", 0, 1 << 24) == bpe.sink_id(),
              "sink_id " << sink_id->number << " is not the last id " << bpe.sink_id());
    return bpe;
  } catch (const Error& e) {
    TOY_FAIL(path << ": " << e.what());
  }
}

}  // namespace toy
