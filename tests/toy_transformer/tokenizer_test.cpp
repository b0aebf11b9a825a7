// The byte-level BPE encoder (toy/tokenizer.hpp) against the Python
// tokenizer that made the committed models' data: the held-out ids it wrote,
// a committed sample of its ids (tools/train/make_tokenizer_sample.py), and
// byte-for-byte round trips on any input.
#include "toy/tokenizer.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "toy/tokens.hpp"

namespace {

std::string model_path(const std::string& model, const std::string& file) {
  return std::string(SINKKV_MODELS_DIR) + "/" + model + "/" + file;
}

const toy::BytePairEncoder& committed_bpe() {
  static const toy::BytePairEncoder bpe = toy::load_bpe_vocab(model_path("vanilla", "vocab.json"));
  return bpe;
}

std::string printable(const std::string& bytes) {
  std::string out;
  char hex[8];
  for (unsigned char c : bytes) {
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

std::string heldout_text(const std::string& model) {
  const std::vector<std::int32_t> ids =
      toy::read_tokens(model_path(model, "heldout.i32"), toy::TokenFormat::kBinary, committed_bpe().vocab_size());
  std::string text;
  for (std::int32_t id : ids) {
    if (id != committed_bpe().sink_id()) text += committed_bpe().piece(id);
  }
  return text;
}

TEST(BytePairEncoder, LoadsTheCommittedVocabularies) {
  for (const char* model : {"vanilla", "sink_token"}) {
    const toy::BytePairEncoder bpe = toy::load_bpe_vocab(model_path(model, "vocab.json"));
    EXPECT_EQ(bpe.vocab_size(), 768) << model;
    EXPECT_EQ(bpe.sink_id(), 767) << model;
    EXPECT_EQ(bpe.piece(256), "th") << model;  // models/README.md: 256 = "th", 257 = " th", 258 = " the"
    EXPECT_EQ(bpe.piece(258), " the") << model;
    EXPECT_EQ(bpe.piece(767), "<sink>") << model;
    // The decoding table agrees with the llama2.c tokenizer.bin beside it.
    const toy::Tokenizer tokenizer = toy::load_tokenizer(model_path(model, "tokenizer.bin"), 768);
    for (int id = 0; id < 768; ++id) ASSERT_EQ(bpe.piece(id), tokenizer.pieces[static_cast<std::size_t>(id)]) << id;
  }
}

// heldout.i32 was written by corpus.BPE.encode on the held-out split; the
// split is exactly what its ids decode to.
TEST(BytePairEncoder, EncodesTheHeldOutSplitToTheCommittedIds) {
  const std::vector<std::int32_t> ids =
      toy::read_tokens(model_path("vanilla", "heldout.i32"), toy::TokenFormat::kBinary, 768);
  const std::string text = committed_bpe().decode(ids);
  ASSERT_EQ(text.size(), 211615u);  // models/README.md
  EXPECT_TRUE(committed_bpe().encode(text) == ids);
}

std::vector<std::int32_t> parse_ids(const std::string& field) {
  std::vector<std::int32_t> ids;
  std::istringstream in(field);
  for (long long id = 0; in >> id;) ids.push_back(static_cast<std::int32_t>(id));
  return ids;
}

std::string parse_hex(const std::string& field) {
  std::string bytes;
  for (std::size_t i = 0; i + 1 < field.size(); i += 2) {
    bytes += static_cast<char>(std::stoi(field.substr(i, 2), nullptr, 16));
  }
  return bytes;
}

// Ids and pre-token boundaries: with this vocabulary (merges of ASCII letters
// and digits only) the ids alone cannot tell whether, say, U+00A0 counts as
// whitespace; the boundaries can.
TEST(BytePairEncoder, MatchesThePythonTokenizerOnTheCommittedSample) {
  std::ifstream in(std::string(SINKKV_TOY_TEST_DATA) + "/bpe_sample.tsv");
  ASSERT_TRUE(in) << "cannot open bpe_sample.tsv";
  std::string line;
  int samples = 0, with_invalid_utf8 = 0, with_nul = 0;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '#') continue;
    // hex bytes <TAB> ids <TAB> byte lengths of the pre-tokens
    const std::size_t tab = line.find('\t'), tab2 = line.find('\t', tab + 1);
    ASSERT_TRUE(tab != std::string::npos && tab2 != std::string::npos) << line;
    const std::string text = parse_hex(line.substr(0, tab));
    const std::vector<std::int32_t> want = parse_ids(line.substr(tab + 1, tab2 - tab - 1));
    EXPECT_EQ(committed_bpe().encode(text), want) << "text '" << printable(text) << "'";
    std::vector<std::int32_t> lengths;
    for (std::string_view pretoken : toy::pretokenize(text))
      lengths.push_back(static_cast<std::int32_t>(pretoken.size()));
    EXPECT_EQ(lengths, parse_ids(line.substr(tab2 + 1))) << "pre-tokens of '" << printable(text) << "'";
    ++samples;
    with_nul += text.find('\0') != std::string::npos;
    for (unsigned char c : text) with_invalid_utf8 += c >= 0xF5 || c == 0xC0 || c == 0xC1;
  }
  EXPECT_GE(samples, 500);
  EXPECT_GE(with_nul, 5) << "the sample must exercise NUL bytes";
  EXPECT_GE(with_invalid_utf8, 5) << "the sample must exercise bytes that are never UTF-8";
}

// The pre-tokenizer rules, spelled out (Python's re.findall gives these).
TEST(Pretokenize, FollowsTheGpt2StylePattern) {
  using Pieces = std::vector<std::string_view>;
  EXPECT_EQ(toy::pretokenize("Hello  world\n\n2 It"), (Pieces{"Hello", " ", " world", "\n", "\n", "2", " It"}));
  EXPECT_EQ(toy::pretokenize("a \xc2\xa0"
                             "b\tc  "),
            (Pieces{"a", " ", "\xc2\xa0", "b", "\t", "c", "  "}));
  EXPECT_EQ(toy::pretokenize(" ...x--y 12ab"), (Pieces{" ...", "x", "--", "y", " 12", "ab"}));
  EXPECT_EQ(toy::pretokenize("caf\xc3\xa9 \xff\xfe"), (Pieces{"caf", "\xc3\xa9", " \xff\xfe"}));
  EXPECT_EQ(toy::pretokenize(""), Pieces{});
}

TEST(BytePairEncoder, RoundTripsHeldOutLines) {
  const std::string text = heldout_text("sink_token");
  std::size_t lines = 0;
  for (std::size_t begin = 0; begin < text.size();) {
    const std::size_t end = std::min(text.find('\n', begin), text.size() - 1) + 1;
    const std::string line = text.substr(begin, end - begin);
    ASSERT_EQ(committed_bpe().decode(committed_bpe().encode(line)), line) << "line " << lines;
    begin = end;
    ++lines;
  }
  EXPECT_GT(lines, 1500u);
}

// Any bytes: NUL, control characters, truncated and overlong UTF-8 sequences,
// surrogates, bytes that never occur in UTF-8.
TEST(BytePairEncoder, RoundTripsArbitraryBytes) {
  const toy::BytePairEncoder& bpe = committed_bpe();
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      const std::string text{static_cast<char>(a), static_cast<char>(b)};
      ASSERT_EQ(bpe.decode(bpe.encode(text)), text) << printable(text);
    }
  }
  std::mt19937 rng(15);
  const std::string common = " eteeeaoinsthrdlu\n.,:";
  for (int trial = 0; trial < 3000; ++trial) {
    std::string text(rng() % 200, '\0');
    for (char& c : text) {  // half plain text, half arbitrary bytes
      c = rng() % 2 ? common[rng() % common.size()] : static_cast<char>(rng() % 256);
    }
    const std::vector<std::int32_t> ids = bpe.encode(text);
    for (std::int32_t id : ids) ASSERT_TRUE(id >= 0 && id < bpe.sink_id()) << id;
    ASSERT_EQ(bpe.decode(ids), text) << "trial " << trial << ": '" << printable(text) << "'";
  }
}

// ---- bad vocabulary files ----------------------------------------------------
class BadVocabulary : public ::testing::Test {
 protected:
  std::string write(const std::string& text) {
    std::ofstream(path_) << text;
    return path_;
  }
  void TearDown() override { std::remove(path_.c_str()); }
  std::string error_of(const std::string& text) {
    try {
      toy::load_bpe_vocab(write(text));
    } catch (const toy::Error& e) {
      return e.what();
    }
    return "no error";
  }
  std::string path_ = ::testing::TempDir() + "toy_vocab_" + std::to_string(::getpid()) + ".json";
};

std::string vocab_json(const std::string& pattern, int vocab_size, int sink_id, const std::string& merges) {
  std::string escaped;
  for (char c : pattern) escaped += c == '\\' ? std::string("\\\\") : std::string(1, c);
  return "{\"pretokenizer\": \"" + escaped + "\", \"vocab_size\": " + std::to_string(vocab_size) +
         ", \"sink_id\": " + std::to_string(sink_id) + ", \"merges\": " + merges + "}";
}

TEST_F(BadVocabulary, AWellFormedOneLoads) {
  const toy::BytePairEncoder bpe = toy::load_bpe_vocab(
      write(vocab_json(std::string(toy::kPretokenizerPattern), 259, 258, "[[116, 104], [32, 256]]")));
  EXPECT_EQ(bpe.encode(" the"), (std::vector<std::int32_t>{257, 101}));
}

TEST_F(BadVocabulary, AnotherPretokenizerIsRejected) {
  EXPECT_NE(error_of(vocab_json("\\w+|\\s+", 257, 256, "[]")).find("pre-tokenizer '\\w+|\\s+' is not the one"),
            std::string::npos);
}

TEST_F(BadVocabulary, SizesThatDisagreeAreRejected) {
  const std::string pattern(toy::kPretokenizerPattern);
  EXPECT_NE(error_of(vocab_json(pattern, 768, 767, "[[116, 104]]")).find("vocab_size 768 but 256 bytes + 1 merges"),
            std::string::npos);
  EXPECT_NE(error_of(vocab_json(pattern, 258, 0, "[[116, 104]]")).find("sink_id 0 is not the last id 257"),
            std::string::npos);
}

TEST_F(BadVocabulary, BadMergesAreRejected) {
  const std::string pattern(toy::kPretokenizerPattern);
  EXPECT_NE(
      error_of(vocab_json(pattern, 258, 257, "[[116, 256]]")).find("merge 0 (116, 256) uses an id outside [0, 256)"),
      std::string::npos);
  EXPECT_NE(error_of(vocab_json(pattern, 259, 258, "[[116, 104], [116, 104]]")).find("repeats merge 0"),
            std::string::npos);
  EXPECT_NE(error_of(vocab_json(pattern, 258, 257, "[[116]]")).find("merge 0 is not a pair"), std::string::npos);
  EXPECT_NE(error_of(vocab_json(pattern, 258, 257, "[[116, -1]]")).find("merge 0 is not an integer"),
            std::string::npos);
}

TEST_F(BadVocabulary, MalformedJsonNamesTheFileAndOffset) {
  const std::string message = error_of("{\"merges\": [[1, 2], }");
  EXPECT_NE(message.find(path_ + ": "), std::string::npos) << message;
  EXPECT_NE(message.find("at byte 20"), std::string::npos) << message;
  EXPECT_NE(error_of("").find("JSON ends early at byte 0"), std::string::npos);
  EXPECT_NE(error_of("[1, 2]").find("not a JSON object"), std::string::npos);
}

}  // namespace
