// llama2.c checkpoint, tokenizer and token-file I/O: round trips on files
// the test writes, and damaged copies of them.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>

#include "reference_model.hpp"
#include "toy/checkpoint.hpp"
#include "toy/tokens.hpp"

namespace {

/// A file name unique to this test process, removed at the end of the test.
class TempFile {
 public:
  explicit TempFile(const std::string& tag)
      : path_(::testing::TempDir() + "toy_" + tag + "_" + std::to_string(::getpid()) + ".bin") {}
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <class T>
void put(std::vector<char>& bytes, std::size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof value);
}

/// The message of the toy::Error that `f` throws ("" if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const toy::Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR_MENTIONS(expression, text)                                      \
  do {                                                                               \
    const std::string message_ = error_of([&] { (void)(expression); });              \
    EXPECT_NE(message_.find(text), std::string::npos)                                \
        << "expected an error mentioning \"" << (text) << "\", got \"" << message_ << "\""; \
  } while (false)

// ---- round trips -------------------------------------------------------------

class RoundTrip : public ::testing::TestWithParam<toy::ModelConfig> {};

TEST_P(RoundTrip, WriteThenLoadIsBitExactAndSizedAsTheFormatSays) {
  const toy::ModelConfig config = GetParam();
  const toy::ModelWeights written = toy::random_weights(config, 99);
  TempFile file("roundtrip");
  toy::save_checkpoint(written, file.path());

  const std::vector<char> bytes = read_bytes(file.path());
  ASSERT_EQ(static_cast<std::int64_t>(bytes.size()), config.file_bytes());
  // Header, independently of the loader: 7 little-endian int32.
  std::int32_t header[7];
  std::memcpy(header, bytes.data(), sizeof header);
  EXPECT_EQ(header[0], config.dim);
  EXPECT_EQ(header[1], config.hidden_dim);
  EXPECT_EQ(header[2], config.num_layers);
  EXPECT_EQ(header[3], config.num_heads);
  EXPECT_EQ(header[4], config.num_kv_heads);
  EXPECT_EQ(header[5], config.shared_classifier ? config.vocab_size : -config.vocab_size);
  EXPECT_EQ(header[6], config.seq_len);
  // First float after the header is token_embedding[0][0].
  float first = 0;
  std::memcpy(&first, bytes.data() + 28, 4);
  EXPECT_EQ(first, written.token_embedding[0]);

  const toy::ModelWeights loaded = toy::load_checkpoint(file.path());
  EXPECT_EQ(loaded.config.dim, config.dim);
  EXPECT_EQ(loaded.config.shared_classifier, config.shared_classifier);
  toy::ModelWeights::for_each_array(loaded, [&](const char* name, const std::vector<float>& a, std::size_t count) {
    const std::vector<float>* original = nullptr;
    toy::ModelWeights::for_each_array(written, [&](const char* n, const std::vector<float>& b, std::size_t) {
      if (std::string(n) == name) original = &b;
    });
    ASSERT_NE(original, nullptr);
    EXPECT_EQ(a.size(), count) << name;
    EXPECT_TRUE(a == *original) << name << " differs after the round trip";
  });
}

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

INSTANTIATE_TEST_SUITE_P(Configs, RoundTrip,
                         ::testing::Values(shape(8, 12, 1, 1, 1, 5, 3, true), shape(24, 40, 2, 3, 1, 31, 17, true),
                                           shape(32, 64, 3, 4, 2, 50, 8, false), shape(48, 7, 1, 6, 6, 2, 1, false),
                                           shape(128, 352, 2, 4, 2, 768, 256, true)));

// ---- damaged copies ------------------------------------------------------------

class Damaged : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = shape(16, 24, 2, 4, 2, 11, 6, true);
    toy::save_checkpoint(toy::random_weights(config_, 3), good_.path());
    bytes_ = read_bytes(good_.path());
  }
  /// Loads `bytes` written to a file and returns the error message.
  std::string load(const std::vector<char>& bytes) {
    write_bytes(bad_.path(), bytes);
    return error_of([&] { toy::load_checkpoint(bad_.path()); });
  }
  std::vector<char> with_header_field(int field, std::int32_t value) {
    std::vector<char> b = bytes_;
    put(b, static_cast<std::size_t>(field) * 4, value);
    return b;
  }

  toy::ModelConfig config_;
  TempFile good_{"good"}, bad_{"bad"};
  std::vector<char> bytes_;
};

TEST_F(Damaged, TruncatedByOneByteNamesBothSizes) {
  std::vector<char> b = bytes_;
  b.pop_back();
  const std::string message = load(b);
  EXPECT_NE(message.find("truncated by 1 bytes"), std::string::npos) << message;
  EXPECT_NE(message.find(std::to_string(bytes_.size())), std::string::npos) << message;
}

TEST_F(Damaged, TruncatedToTheHeaderOrLess) {
  EXPECT_NE(load(std::vector<char>(bytes_.begin(), bytes_.begin() + 28)).find("truncated by"), std::string::npos);
  EXPECT_NE(load(std::vector<char>(bytes_.begin(), bytes_.begin() + 10)).find("shorter than the 28-byte"),
            std::string::npos);
  EXPECT_NE(load({}).find("file is 0 bytes"), std::string::npos);
}

TEST_F(Damaged, TrailingBytesAreAnError) {
  std::vector<char> b = bytes_;
  b.insert(b.end(), 8, '\0');
  EXPECT_NE(load(b).find("followed by 8 bytes"), std::string::npos) << load(b);
}

TEST_F(Damaged, BadHeaderFieldsAreNamed) {
  EXPECT_NE(load(with_header_field(0, 0)).find("dim = 0"), std::string::npos);
  EXPECT_NE(load(with_header_field(0, -16)).find("dim = -16"), std::string::npos);
  EXPECT_NE(load(with_header_field(1, 0)).find("hidden_dim = 0"), std::string::npos);
  EXPECT_NE(load(with_header_field(2, -1)).find("n_layers = -1"), std::string::npos);
  EXPECT_NE(load(with_header_field(3, 3)).find("n_heads = 3 does not divide dim = 16"), std::string::npos);
  EXPECT_NE(load(with_header_field(3, 0)).find("n_heads = 0"), std::string::npos);
  EXPECT_NE(load(with_header_field(4, 3)).find("n_kv_heads = 3 does not divide n_heads = 4"), std::string::npos);
  EXPECT_NE(load(with_header_field(4, 8)).find("n_kv_heads = 8"), std::string::npos);
  EXPECT_NE(load(with_header_field(5, 0)).find("vocab_size = 0"), std::string::npos);
  EXPECT_NE(load(with_header_field(5, std::numeric_limits<std::int32_t>::min())).find("vocab_size"),
            std::string::npos);
  EXPECT_NE(load(with_header_field(6, 0)).find("seq_len = 0"), std::string::npos);
  // dim 16 over 8 heads: head size 2 is fine; over 16 heads it is 1 (odd).
  std::vector<char> odd = with_header_field(3, 16);
  put(odd, 16, std::int32_t{16});
  EXPECT_NE(load(odd).find("head size dim / n_heads = 1 is odd"), std::string::npos) << load(odd);
}

TEST_F(Damaged, AbsurdButConsistentHeaderFailsOnSizeBeforeAllocating) {
  // 65536-wide, 4096 layers, 16M vocab: terabytes. Must fail on the size
  // check (the file is a few KB), not by trying to allocate.
  std::vector<char> b = bytes_;
  const std::int32_t header[7] = {65536, 1 << 20, 4096, 256, 256, 1 << 24, 1 << 24};
  std::memcpy(b.data(), header, sizeof header);
  const std::string message = load(b);
  EXPECT_NE(message.find("implies"), std::string::npos) << message;
  EXPECT_NE(message.find("dim=65536"), std::string::npos) << message;
  // Beyond the bounds: named as out of range.
  EXPECT_NE(load(with_header_field(0, 1 << 30)).find("dim = 1073741824 outside"), std::string::npos);
}

TEST_F(Damaged, NewerLlama2cFormatIsRecognised) {
  EXPECT_NE(load(with_header_field(0, 0x616b3432)).find("version-1/2"), std::string::npos);
}

TEST_F(Damaged, NonFiniteWeightIsNamed) {
  std::vector<char> b = bytes_;
  // wq starts after token_embedding [11, 16] and rms_att [2, 16].
  const std::size_t wq = 28 + 4 * (11 * 16 + 2 * 16);
  put(b, wq + 4 * 5, std::numeric_limits<float>::quiet_NaN());
  EXPECT_NE(load(b).find("wq[5] = nan is not finite"), std::string::npos) << load(b);
  b = bytes_;
  put(b, 28, std::numeric_limits<float>::infinity());
  EXPECT_NE(load(b).find("token_embedding[0] = inf"), std::string::npos) << load(b);
}

TEST_F(Damaged, CorruptRopeTableIsNamed) {
  std::vector<char> b = bytes_;
  const std::size_t tables = static_cast<std::size_t>(config_.file_bytes()) - 2 * 6 * 2 * 4;  // 2 tables [seq 6, pairs 2]
  put(b, tables + 4 * 3, 7.0f);  // freq_cis_real[pos 1][pair 1]
  EXPECT_NE(load(b).find("freq_cis_real[pos 1][pair 1] = 7"), std::string::npos) << load(b);
}

TEST_F(Damaged, MissingFileOrDirectoryIsNamed) {
  EXPECT_ERROR_MENTIONS(toy::load_checkpoint("/nonexistent/model.bin"),
                        "cannot open checkpoint '/nonexistent/model.bin'");
  EXPECT_ERROR_MENTIONS(toy::load_checkpoint(::testing::TempDir()), "not a regular file");
  EXPECT_ERROR_MENTIONS(toy::read_tokens(::testing::TempDir(), toy::TokenFormat::kBinary, 5),
                        "cannot open token file");
}

TEST(Save, RejectsWronglySizedArrays) {
  toy::ModelWeights w = toy::random_weights(shape(8, 12, 1, 2, 1, 5, 3, true), 1);
  w.wk.pop_back();
  TempFile file("wrong");
  EXPECT_ERROR_MENTIONS(toy::save_checkpoint(w, file.path()), "wk has");
}

// ---- tokenizer --------------------------------------------------------------------

toy::Tokenizer small_tokenizer() {
  toy::Tokenizer t;
  t.pieces = {"<unk>", "a", " the", "<0x0A>", "", "xyz"};
  t.scores = {0.0f, -1.0f, -2.5f, 0.0f, 0.0f, -7.0f};
  t.max_token_length = 6;
  return t;
}

TEST(Tokenizer, RoundTripAndDecode) {
  TempFile file("tok");
  toy::save_tokenizer(small_tokenizer(), file.path());
  const std::vector<char> bytes = read_bytes(file.path());
  EXPECT_EQ(bytes.size(), 4u + 6 * 8 + (5 + 1 + 4 + 6 + 0 + 3));
  const toy::Tokenizer t = toy::load_tokenizer(file.path(), 6);
  EXPECT_EQ(t.pieces, small_tokenizer().pieces);
  EXPECT_EQ(t.scores, small_tokenizer().scores);
  EXPECT_EQ(t.decode(2), " the");
  EXPECT_EQ(t.decode(3), "\n");
  EXPECT_EQ(t.decode(4), "");
  EXPECT_ERROR_MENTIONS(t.decode(6), "token 6 outside");
}

// Found by the tokenizer fuzz target (tests/fuzz/regressions/tokenizer/):
// decode parsed "<0xHH>" with sscanf("%02X"), which skips blanks and takes a
// sign, so "<0x A>" came out as the byte 0x0A.
TEST(Tokenizer, OnlyPiecesOfTwoHexDigitsDecodeToAByte) {
  toy::Tokenizer t;
  t.pieces = {"<0x A>", "<0x-1>", "<0x+F>", "<0xG0>", "<0x4A>", "<0xff>"};
  t.scores.assign(t.pieces.size(), 0.0f);
  t.max_token_length = 6;
  EXPECT_EQ(t.decode(0), "<0x A>");
  EXPECT_EQ(t.decode(1), "<0x-1>");
  EXPECT_EQ(t.decode(2), "<0x+F>");
  EXPECT_EQ(t.decode(3), "<0xG0>");
  EXPECT_EQ(t.decode(4), "J");
  EXPECT_EQ(t.decode(5), "\xff");
}

TEST(Tokenizer, DamagedFilesAreNamed) {
  TempFile good("tok_good"), bad("tok_bad");
  toy::save_tokenizer(small_tokenizer(), good.path());
  const std::vector<char> bytes = read_bytes(good.path());
  EXPECT_ERROR_MENTIONS(toy::load_tokenizer(good.path(), 5), "follow the 5 pieces");  // another model's
  EXPECT_ERROR_MENTIONS(toy::load_tokenizer(good.path(), 7), "truncated at piece 6 of 7");
  EXPECT_ERROR_MENTIONS(toy::load_tokenizer(good.path(), 1 << 24), "too small for 16777216 pieces");
  write_bytes(bad.path(), std::vector<char>(bytes.begin(), bytes.end() - 2));
  EXPECT_ERROR_MENTIONS(toy::load_tokenizer(bad.path(), 6), "truncated in the bytes of piece 5");
  std::vector<char> b = bytes;
  put(b, 4 + 4, std::int32_t{-3});  // length of piece 0
  write_bytes(bad.path(), b);
  EXPECT_ERROR_MENTIONS(toy::load_tokenizer(bad.path(), 6), "piece 0 has length -3");
  b = bytes;
  put(b, 0, std::int32_t{0});
  write_bytes(bad.path(), b);
  EXPECT_ERROR_MENTIONS(toy::load_tokenizer(bad.path(), 6), "max_token_length = 0");
  EXPECT_ERROR_MENTIONS(toy::load_tokenizer("/nonexistent/tokenizer.bin", 6), "cannot open tokenizer");
}

// ---- token files --------------------------------------------------------------------

TEST(TokenFiles, BinaryAndTextRoundTrip) {
  const std::vector<std::int32_t> tokens = {0, 5, 36, 1, 1, 2, 30};
  for (const toy::TokenFormat format : {toy::TokenFormat::kBinary, toy::TokenFormat::kText}) {
    TempFile file("tokens");
    toy::write_tokens(tokens, file.path(), format);
    EXPECT_EQ(toy::read_tokens(file.path(), format, 37), tokens);
  }
  TempFile file("tokens_bin");
  toy::write_tokens(tokens, file.path(), toy::TokenFormat::kBinary);
  EXPECT_EQ(read_bytes(file.path()).size(), 4 * tokens.size());
}

TEST(TokenFiles, BadContentIsNamed) {
  TempFile file("bad_tokens");
  write_bytes(file.path(), {'1', '2', ' ', '4', '0', '\n', '7'});
  EXPECT_ERROR_MENTIONS(toy::read_tokens(file.path(), toy::TokenFormat::kText, 37), "token 1 = 40 outside");
  write_bytes(file.path(), {'1', '2', ' ', 'x', '3'});
  EXPECT_ERROR_MENTIONS(toy::read_tokens(file.path(), toy::TokenFormat::kText, 37), "token 1 'x3' is not an int32");
  write_bytes(file.path(), {'-', '1'});
  EXPECT_ERROR_MENTIONS(toy::read_tokens(file.path(), toy::TokenFormat::kText, 37), "token 0 = -1 outside");
  write_bytes(file.path(), {1, 0, 0, 0, 2, 0});
  EXPECT_ERROR_MENTIONS(toy::read_tokens(file.path(), toy::TokenFormat::kBinary, 37), "6 bytes is not a whole number");
  EXPECT_ERROR_MENTIONS(toy::parse_token_format("int32"), "token format 'int32'");
}

}  // namespace
