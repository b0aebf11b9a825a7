// toy: a small strict JSON reader, enough for the tokenizer's vocab.json
// (an object of strings, integers and arrays of integer pairs). Not a
// general-purpose library: numbers are kept as doubles, objects as ordered
// (key, value) lists, and any syntax error throws toy::Error with the byte
// offset.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "error.hpp"

namespace toy {

struct JsonValue {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  double number = 0;
  std::string text;                                        // kString
  std::vector<JsonValue> items;                            // kArray
  std::vector<std::pair<std::string, JsonValue>> members;  // kObject, in file order

  /// The member named `key`, or nullptr (also when this is not an object).
  const JsonValue* find(std::string_view key) const {
    for (const auto& member : members) {
      if (member.first == key) return &member.second;
    }
    return nullptr;
  }
  /// An integer in [min, max]; `what` names the value in the error.
  long long integer(const std::string& what, long long min, long long max) const {
    TOY_CHECK(kind == Kind::kNumber && std::floor(number) == number && number >= static_cast<double>(min) &&
                  number <= static_cast<double>(max),
              what << " is not an integer in [" << min << ", " << max << "]");
    return static_cast<long long>(number);
  }
};

namespace detail {

class JsonParser {
 public:
  explicit JsonParser(std::string_view text) : text_(text) {}

  JsonValue document() {
    JsonValue value = parse_value(0);
    skip_space();
    TOY_CHECK(at_ == text_.size(), "unexpected '" << text_[at_] << "' after the JSON value at byte " << at_);
    return value;
  }

 private:
  static constexpr int kMaxDepth = 64;  // vocab.json nests 3 deep; bounds the recursion on hostile input

  void skip_space() {
    while (at_ < text_.size() &&
           (text_[at_] == ' ' || text_[at_] == '\t' || text_[at_] == '\n' || text_[at_] == '\r')) {
      ++at_;
    }
  }
  char peek() {
    skip_space();
    TOY_CHECK(at_ < text_.size(), "JSON ends early at byte " << at_);
    return text_[at_];
  }
  void expect(char c) {
    TOY_CHECK(peek() == c, "expected '" << c << "' at byte " << at_ << ", found '" << text_[at_] << "'");
    ++at_;
  }
  bool consume_word(std::string_view word) {
    if (text_.substr(at_, word.size()) != word) return false;
    at_ += word.size();
    return true;
  }

  JsonValue parse_value(int depth) {
    TOY_CHECK(depth < kMaxDepth, "JSON nested deeper than " << kMaxDepth << " at byte " << at_);
    JsonValue value;
    const char c = peek();
    if (c == '{') {
      value.kind = JsonValue::Kind::kObject;
      ++at_;
      if (peek() == '}') {
        ++at_;
        return value;
      }
      while (true) {
        TOY_CHECK(peek() == '"', "expected a member name at byte " << at_);
        std::string key = parse_string();
        expect(':');
        value.members.emplace_back(std::move(key), parse_value(depth + 1));
        if (peek() == '}') break;
        expect(',');
      }
      ++at_;
    } else if (c == '[') {
      value.kind = JsonValue::Kind::kArray;
      ++at_;
      if (peek() == ']') {
        ++at_;
        return value;
      }
      while (true) {
        value.items.push_back(parse_value(depth + 1));
        if (peek() == ']') break;
        expect(',');
      }
      ++at_;
    } else if (c == '"') {
      value.kind = JsonValue::Kind::kString;
      value.text = parse_string();
    } else if (consume_word("true")) {
      value.kind = JsonValue::Kind::kBool;
      value.boolean = true;
    } else if (consume_word("false")) {
      value.kind = JsonValue::Kind::kBool;
    } else if (consume_word("null")) {
      value.kind = JsonValue::Kind::kNull;
    } else {
      value.kind = JsonValue::Kind::kNumber;
      value.number = parse_number();
    }
    return value;
  }

  double parse_number() {
    const std::size_t begin = at_;
    if (at_ < text_.size() && text_[at_] == '-') ++at_;
    const auto digits = [&] {
      const std::size_t first = at_;
      while (at_ < text_.size() && text_[at_] >= '0' && text_[at_] <= '9') ++at_;
      return at_ > first;
    };
    TOY_CHECK(digits(), "expected a value at byte " << begin);
    if (at_ < text_.size() && text_[at_] == '.') {
      ++at_;
      TOY_CHECK(digits(), "expected digits after '.' at byte " << at_);
    }
    if (at_ < text_.size() && (text_[at_] == 'e' || text_[at_] == 'E')) {
      ++at_;
      if (at_ < text_.size() && (text_[at_] == '+' || text_[at_] == '-')) ++at_;
      TOY_CHECK(digits(), "expected an exponent at byte " << at_);
    }
    const std::string number(text_.substr(begin, at_ - begin));
    return std::strtod(number.c_str(), nullptr);
  }

  unsigned hex4() {
    TOY_CHECK(at_ + 4 <= text_.size(), "truncated \\u escape at byte " << at_);
    unsigned value = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = text_[at_++];
      value <<= 4;
      if (h >= '0' && h <= '9')
        value |= static_cast<unsigned>(h - '0');
      else if (h >= 'a' && h <= 'f')
        value |= static_cast<unsigned>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F')
        value |= static_cast<unsigned>(h - 'A' + 10);
      else
        TOY_FAIL("bad hex digit '" << h << "' in a \\u escape at byte " << at_ - 1);
    }
    return value;
  }

  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    while (true) {
      TOY_CHECK(at_ < text_.size(), "unterminated string at byte " << at_);
      const char c = text_[at_++];
      if (c == '"') return out;
      TOY_CHECK(static_cast<unsigned char>(c) >= 0x20, "raw control character in a string at byte " << at_ - 1);
      if (c != '\\') {
        out += c;
        continue;
      }
      TOY_CHECK(at_ < text_.size(), "unterminated escape at byte " << at_);
      const char e = text_[at_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && text_.substr(at_, 2) == "\\u") {  // a surrogate pair
            const std::size_t save = at_;
            at_ += 2;
            const unsigned low = hex4();
            if (low >= 0xDC00 && low < 0xE000) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else {
              at_ = save;
            }
          }
          append_utf8(out, cp);
          break;
        }
        default:
          TOY_FAIL("bad escape '\\" << e << "' at byte " << at_ - 1);
      }
    }
  }

  std::string_view text_;
  std::size_t at_ = 0;
};

}  // namespace detail

/// Parses one JSON document. Throws toy::Error naming the byte offset.
inline JsonValue parse_json(std::string_view text) { return detail::JsonParser(text).document(); }

}  // namespace toy
