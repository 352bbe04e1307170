// Tokenizer against Hugging Face `tokenizers`: tests/data/tokenizer/*.ids were written by
// tools/gen_tokenizer_goldens.py from HF's encoding of corpus.json; every string must agree.
// Needs SPUTNIK_DEEPSEEK_TOKENIZER (tools/fetch_tokenizers.sh deepseek) and SPUTNIK_DEMO_MODEL
// (tools/fetch_demo_model.sh); tools/test.sh sets both. Without them these tests fail.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "formats/gguf.h"
#include "formats/gguf_writer.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/token_tables.h"

namespace sputnik {
namespace {

const std::string kData = std::string(SPUTNIK_TEST_DATA) + "/tokenizer/";

// The compact vocabulary tables behave as the std::unordered_map they replace: lookups of
// present and absent keys across several growths, and the first insertion of a key wins.
TEST(TokenTables, StringIdMapFindsEveryKeyAcrossGrowth) {
  tok::StringIdMap map;
  constexpr int kKeys = 5000;  // grows from 1024 slots several times
  for (int i = 0; i < kKeys; ++i) EXPECT_TRUE(map.emplace("tok" + std::to_string(i), i * 3));
  EXPECT_FALSE(map.emplace("tok7", 99));  // already present: keeps 21
  EXPECT_TRUE(map.emplace("", 12345));    // the empty string is a key like any other
  EXPECT_EQ(map.size(), static_cast<size_t>(kKeys + 1));
  for (int i = 0; i < kKeys; ++i) ASSERT_EQ(map.find("tok" + std::to_string(i)), i * 3) << i;
  EXPECT_EQ(map.find(""), 12345);
  EXPECT_EQ(map.find("tok"), -1);
  EXPECT_EQ(map.find("tok5000"), -1);
  int visited = 0;
  map.for_each([&](std::string_view text, int32_t id) {
    EXPECT_EQ(map.find(text), id);
    ++visited;
  });
  EXPECT_EQ(visited, kKeys + 1);
}

TEST(TokenTables, MergeMapKeepsFirstMergeOfAPair) {
  tok::MergeMap merges;
  EXPECT_EQ(merges.find(1, 2).id, -1);  // empty map
  for (int32_t i = 0; i < 3000; ++i) merges.emplace(i, i + 1, {i, 100000 + i});
  merges.emplace(5, 6, {7777, 1});  // a repeated pair keeps its first rank and id
  for (int32_t i = 0; i < 3000; ++i) {
    const tok::MergeMap::Merge m = merges.find(i, i + 1);
    ASSERT_EQ(m.rank, i);
    ASSERT_EQ(m.id, 100000 + i);
  }
  EXPECT_EQ(merges.find(6, 5).id, -1);  // order matters
  EXPECT_EQ(merges.find(0, 0).id, -1);
}

TEST(TokenTables, StringListKeepsEmptyAndBinaryStrings) {
  tok::StringList list;
  list.push_back("a");
  list.push_back("");
  list.push_back(std::string_view("\0\xff", 2));
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0], "a");
  EXPECT_EQ(list[1], "");
  EXPECT_EQ(list[2], std::string_view("\0\xff", 2));
}

std::vector<std::string> load_corpus() {
  std::ifstream file(kData + "corpus.json");
  EXPECT_TRUE(file) << kData << "corpus.json";
  return nlohmann::json::parse(file).get<std::vector<std::string>>();
}

std::vector<int32_t> parse_ids(const std::string& line) {
  std::vector<int32_t> ids;
  std::istringstream in(line);
  for (int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

// One line of ids per corpus string.
std::vector<std::vector<int32_t>> load_ids(const std::string& name) {
  std::ifstream file(kData + name);
  EXPECT_TRUE(file) << kData << name;
  std::vector<std::vector<int32_t>> all;
  for (std::string line; std::getline(file, line);) all.push_back(parse_ids(line));
  return all;
}

// "index: ids" lines.
std::vector<std::pair<size_t, std::vector<int32_t>>> load_indexed_ids(const std::string& name) {
  std::ifstream file(kData + name);
  EXPECT_TRUE(file) << kData << name;
  std::vector<std::pair<size_t, std::vector<int32_t>>> all;
  for (std::string line; std::getline(file, line);) {
    size_t colon = line.find(':');
    all.emplace_back(std::stoul(line.substr(0, colon)), parse_ids(line.substr(colon + 1)));
  }
  return all;
}

std::string ids_text(const std::vector<int32_t>& ids) {
  std::string out;
  for (int32_t id : ids) out += std::to_string(id) + " ";
  return out;
}

// Compares every corpus string; prints the agreement count and the first disagreements.
void expect_agreement(const Tokenizer& tokenizer, const std::string& name) {
  auto corpus = load_corpus();
  auto expected = load_ids(name + ".ids");
  ASSERT_EQ(corpus.size(), expected.size()) << name;
  ASSERT_GE(corpus.size(), 2000u);
  size_t agree = 0, shown = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    auto ids = tokenizer.encode(corpus[i]);
    if (ids == expected[i]) {
      ++agree;
    } else if (shown++ < 10) {
      ADD_FAILURE() << name << " corpus[" << i << "] " << nlohmann::json(corpus[i]).dump()
                    << "\n  expected " << ids_text(expected[i]) << "\n  actual   " << ids_text(ids);
    }
  }
  std::printf("%s: %zu/%zu corpus strings agree with HF tokenizers\n", name.c_str(), agree,
              corpus.size());
  EXPECT_EQ(agree, corpus.size());

  size_t nospecial = 0;
  for (const auto& [index, ids] : load_indexed_ids(name + ".nospecial.ids")) {
    ASSERT_LT(index, corpus.size());
    EXPECT_EQ(tokenizer.encode(corpus[index], /*parse_special=*/false), ids)
        << name << " parse_special=false corpus[" << index << "] "
        << nlohmann::json(corpus[index]).dump();
    ++nospecial;
  }
  EXPECT_GT(nospecial, 0u);
}

// decode(encode(s)) == s wherever the vocabulary has every byte of s (SmolLM2's lacks a few,
// e.g. 0x04 and 0xF1, which HF drops too).
// nfc: the tokenizer normalizes (Qwen2), so ids decode to the NFC form of the text.
void expect_round_trip(const Tokenizer& tokenizer, bool nfc = false) {
  size_t checked = 0;
  for (const std::string& raw : load_corpus()) {
    const std::string text = nfc ? tok::nfc(raw) : raw;
    bool representable = true;
    for (char c : text) {
      representable &= tokenizer.token_id(tok::byte_to_unicode(static_cast<uint8_t>(c))) >= 0;
    }
    if (!representable) continue;
    ++checked;
    auto ids = tokenizer.encode(raw);
    EXPECT_EQ(tokenizer.decode(ids), text) << nlohmann::json(raw).dump();
    // Without special-token parsing the bytes must round-trip too.
    EXPECT_EQ(tokenizer.decode(tokenizer.encode(raw, false)), text);
  }
  EXPECT_GT(checked, 2000u);
}

std::string env_path(const char* name, const char* hint) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    ADD_FAILURE() << name << " is not set: run " << hint << " (tools/test.sh sets it)";
    return {};
  }
  return value;
}

class DeepSeekTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string path = env_path("SPUTNIK_DEEPSEEK_TOKENIZER", "tools/fetch_tokenizers.sh deepseek");
    if (path.empty()) return;
    auto loaded = Tokenizer::from_hf_json(path);
    if (!loaded.ok()) {
      load_error_ = loaded.message();
      return;
    }
    tokenizer_ = std::move(loaded).value().release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(tokenizer_, nullptr) << load_error_; }
  static inline Tokenizer* tokenizer_ = nullptr;
  static inline std::string load_error_ = "SPUTNIK_DEEPSEEK_TOKENIZER not set";
};

TEST_F(DeepSeekTokenizer, MatchesHuggingFaceOnCorpus) {
  expect_agreement(*tokenizer_, "deepseek-v3");
}

TEST_F(DeepSeekTokenizer, DecodeRoundTrips) { expect_round_trip(*tokenizer_); }

TEST_F(DeepSeekTokenizer, SpecialTokens) {
  const Tokenizer& t = *tokenizer_;
  EXPECT_EQ(t.bos_id(), 0);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_FALSE(t.add_bos());  // tokenizer_config.json: the chat template writes BOS itself
  EXPECT_TRUE(t.is_end_of_generation(1));
  EXPECT_FALSE(t.is_end_of_generation(0));
  EXPECT_TRUE(t.is_special(0));
  EXPECT_FALSE(t.is_special(128803));  // <｜User｜> is an added but not special token
  EXPECT_EQ(t.token_id("<｜User｜>"), 128803);
  EXPECT_EQ(t.token_id("<think>"), 128798);
  EXPECT_EQ(t.token_id("no such token"), -1);
  EXPECT_EQ(t.vocab_size(), 128815);

  // Special tokens inside text are matched; with parse_special=false only the special ones
  // (special: true) turn back into text, as HF's encode_special_tokens does.
  std::string text = "<｜begin▁of▁sentence｜>Hi<｜User｜>2+2?<｜Assistant｜><think>\n";
  auto ids = t.encode(text);
  ASSERT_GE(ids.size(), 5u);
  EXPECT_EQ(ids.front(), 0);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 128803), 1);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 128804), 1);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 128798), 1);
  auto raw = t.encode(text, false);
  EXPECT_NE(raw.front(), 0);
  EXPECT_EQ(std::count(raw.begin(), raw.end(), 128803), 1);
  EXPECT_EQ(t.decode(raw), text);
}

TEST_F(DeepSeekTokenizer, StreamDecoderNeverSplitsACharacter) {
  const Tokenizer& t = *tokenizer_;
  for (std::string text : {"한국어 텍스트 😀👨‍👩‍👧 中文分词 émoji ✨",
                           "🇫🇷🇯🇵🏳️‍🌈", "\xF0\x9F\x98\x80"}) {
    StreamDecoder decoder(t);
    std::string joined;
    for (int32_t id : t.encode(text)) {
      std::string piece = decoder.push(id);
      // Every emitted piece is whole UTF-8: it starts on a lead byte and ends a char.
      for (size_t pos = 0; pos < piece.size();) {
        uint32_t cp;
        size_t length = tok::utf8_decode(piece, pos, &cp);
        ASSERT_NE(cp, 0xFFFDu) << "half a character emitted at byte " << pos;
        pos += length;
      }
      joined += piece;
    }
    joined += decoder.flush();
    EXPECT_EQ(joined, text);
  }

  // Byte tokens one at a time: nothing until the 4th byte of U+1F600.
  StreamDecoder decoder(t);
  const std::string smile = "\xF0\x9F\x98\x80";
  for (size_t i = 0; i < smile.size(); ++i) {
    int32_t id = t.token_id(tok::byte_to_unicode(static_cast<uint8_t>(smile[i])));
    ASSERT_GE(id, 0);
    EXPECT_EQ(decoder.push(id), i + 1 < smile.size() ? "" : smile);
  }
  // A lead byte followed by ASCII can never complete: both come out as they are.
  decoder.push(t.token_id(tok::byte_to_unicode(0xE4)));
  EXPECT_EQ(decoder.push(t.token_id("a")),
            "\xE4"
            "a");
  // A trailing incomplete char is returned by flush.
  EXPECT_EQ(decoder.push(t.token_id(tok::byte_to_unicode(0xF0))), "");
  EXPECT_EQ(decoder.flush(), "\xF0");
  EXPECT_EQ(decoder.flush(), "");
}

TEST_F(DeepSeekTokenizer, ArbitraryBytesRoundTrip) {
  // Invalid UTF-8 cannot reach HF, but it can reach us: every byte string must survive
  // encode -> decode and StreamDecoder, and nothing may crash.
  std::mt19937 rng(7);
  const std::string alphabet = "a <|\xE4\xF0\x80\x9F\n\t1";  // half the strings draw from it
  for (int i = 0; i < 500; ++i) {
    std::string text(rng() % 64, '\0');
    for (char& c : text) {
      c = static_cast<char>(i % 2 ? rng() % 256 : alphabet[rng() % alphabet.size()]);
    }
    auto ids = tokenizer_->encode(text);
    ASSERT_EQ(tokenizer_->decode(ids), text);
    StreamDecoder decoder(*tokenizer_);
    std::string streamed;
    for (int32_t id : ids) streamed += decoder.push(id);
    streamed += decoder.flush();
    EXPECT_EQ(streamed, text);
  }
}

TEST(SmolLM2Tokenizer, GgufMatchesHuggingFaceOnCorpus) {
  std::string path = env_path("SPUTNIK_DEMO_MODEL", "tools/fetch_demo_model.sh");
  ASSERT_FALSE(path.empty());
  auto gguf = GgufFile::open(path);
  ASSERT_TRUE(gguf.ok()) << gguf.message();
  auto tokenizer = Tokenizer::from_gguf(*gguf);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.message();
  const Tokenizer& t = **tokenizer;
  expect_agreement(t, "smollm2");
  expect_round_trip(t);

  EXPECT_EQ(t.vocab_size(), 49152);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_FALSE(t.add_bos());
  EXPECT_TRUE(t.is_end_of_generation(2));  // <|im_end|>
  EXPECT_TRUE(t.is_end_of_generation(0));  // <|endoftext|>
  EXPECT_TRUE(t.is_special(1));
  EXPECT_EQ(t.encode("<|im_start|>user\n"), (std::vector<int32_t>{1, 4093, 198}));
}

// DeepSeek LLM / V2: tokenizer.json of deepseek-tokenizer 0.1.0 (tools/fetch_tokenizers.sh
// deepseek-llm).
TEST(DeepSeekLlmTokenizer, MatchesHuggingFaceOnCorpus) {
  std::string path =
      env_path("SPUTNIK_DEEPSEEK_LLM_TOKENIZER", "tools/fetch_tokenizers.sh deepseek-llm");
  ASSERT_FALSE(path.empty());
  auto tokenizer = Tokenizer::from_hf_json(path);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.message();
  const Tokenizer& t = **tokenizer;
  expect_agreement(t, "deepseek-llm");
  expect_round_trip(t);
  EXPECT_EQ(t.bos_id(), 100000);
  EXPECT_EQ(t.eos_id(), 100001);
  EXPECT_TRUE(t.add_bos());
}

// The same vocabularies through GGUF: tokenizer.json written as the tokenizer.ggml.* keys
// convert_hf_to_gguf.py writes (added special tokens as control, other added tokens as
// user-defined), loaded by from_gguf with the named pre-tokenizer, against the same goldens.
// Writes the tokenizer.json `root` as a GGUF at `path`, with tokenizer.ggml.pre = pre.
void write_gguf_tokenizer(const nlohmann::json& root, const std::string& pre,
                          const std::string& path) {
  std::vector<std::string> tokens;
  std::vector<int64_t> types;
  auto put = [&](int64_t id, const std::string& text, int64_t type) {
    if (static_cast<size_t>(id) >= tokens.size()) {
      tokens.resize(id + 1);
      types.resize(id + 1, 1);
    }
    tokens[id] = text;
    types[id] = type;
  };
  for (const auto& [text, id] : root["model"]["vocab"].items()) put(id.get<int64_t>(), text, 1);
  for (const auto& token : root["added_tokens"]) {
    put(token["id"].get<int64_t>(), token["content"].get<std::string>(),
        token["special"].get<bool>() ? 3 : 4);
  }
  std::vector<std::string> merges;
  for (const auto& merge : root["model"]["merges"]) {
    merges.push_back(merge.is_string()
                         ? merge.get<std::string>()
                         : merge[0].get<std::string>() + " " + merge[1].get<std::string>());
  }
  GgufWriter writer;
  writer.add_string("tokenizer.ggml.model", "gpt2");
  writer.add_string("tokenizer.ggml.pre", pre);
  writer.add_string_array("tokenizer.ggml.tokens", tokens);
  writer.add_int_array("tokenizer.ggml.token_type", GgufValueType::Int32, types);
  writer.add_string_array("tokenizer.ggml.merges", merges);
  auto status = writer.write(path);
  ASSERT_TRUE(status.ok()) << status.message();
}

Result<std::unique_ptr<Tokenizer>> load_gguf_tokenizer(const std::string& path) {
  auto gguf = GgufFile::open(path);
  if (!gguf.ok()) return gguf.error();
  return Tokenizer::from_gguf(*gguf);
}

void expect_gguf_agreement(const char* env, const char* hint, const std::string& pre,
                           const std::string& goldens) {
  std::string json_path = env_path(env, hint);
  ASSERT_FALSE(json_path.empty());
  std::ifstream file(json_path);
  auto gguf_path = (std::filesystem::temp_directory_path() /
                    ("sputnik_tok_" + std::to_string(::getpid()) + "_" + goldens + ".gguf"))
                       .string();
  write_gguf_tokenizer(nlohmann::json::parse(file), pre, gguf_path);
  auto tokenizer = load_gguf_tokenizer(gguf_path);
  std::filesystem::remove(gguf_path);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.message();
  expect_agreement(**tokenizer, goldens);
}

TEST(GgufTokenizer, DeepSeekV3PreTokenizerMatchesHuggingFace) {
  expect_gguf_agreement("SPUTNIK_DEEPSEEK_TOKENIZER", "tools/fetch_tokenizers.sh deepseek",
                        "deepseek-v3", "deepseek-v3");
}

TEST(GgufTokenizer, DeepSeekLlmPreTokenizerMatchesHuggingFace) {
  expect_gguf_agreement("SPUTNIK_DEEPSEEK_LLM_TOKENIZER", "tools/fetch_tokenizers.sh deepseek-llm",
                        "deepseek-llm", "deepseek-llm");
}

TEST(GgufTokenizer, Qwen2PreTokenizerMatchesHuggingFace) {
  expect_gguf_agreement("SPUTNIK_QWEN2_TOKENIZER", "tools/fetch_tokenizers.sh qwen2", "qwen2",
                        "qwen2");
}

// llama.cpp's converter omits tokenizer.ggml.merges for a vocabulary without merges (the
// DeepSeek fixture's byte-level tokenizer): such a file still loads, one token per byte.
TEST(GgufTokenizer, VocabularyWithoutMergesLoads) {
  const std::string path = std::string(SPUTNIK_TEST_DATA) + "/deepseek/v2_lite.gguf";
  auto gguf = GgufFile::open(path);
  ASSERT_TRUE(gguf.ok()) << gguf.message();
  ASSERT_FALSE(gguf->has("tokenizer.ggml.merges"));
  auto tok = Tokenizer::from_gguf(*gguf);
  ASSERT_TRUE(tok.ok()) << tok.message();
  const std::vector<int32_t> ids = (*tok)->encode("hello");
  EXPECT_EQ(ids.size(), 5u);
  EXPECT_EQ((*tok)->decode(ids), "hello");
}

TEST(GgufTokenizer, ErrorsNameTheKey) {
  auto load = [](GgufWriter& writer) -> std::string {
    auto path = std::filesystem::temp_directory_path() /
                ("sputnik_tok_bad_" + std::to_string(::getpid()) + ".gguf");
    EXPECT_TRUE(writer.write(path.string()).ok());
    auto gguf = GgufFile::open(path.string());
    EXPECT_TRUE(gguf.ok()) << gguf.message();
    auto tokenizer = Tokenizer::from_gguf(*gguf);
    std::filesystem::remove(path);
    return tokenizer.ok() ? std::string() : tokenizer.message();
  };
  {
    GgufWriter writer;
    writer.add_string("tokenizer.ggml.model", "llama");
    EXPECT_NE(load(writer).find("tokenizer.ggml.model"), std::string::npos);
  }
  {
    GgufWriter writer;
    writer.add_string("tokenizer.ggml.model", "gpt2");
    EXPECT_NE(load(writer).find("tokenizer.ggml.tokens"), std::string::npos);
  }
  auto base = [](GgufWriter& writer) {
    writer.add_string("tokenizer.ggml.model", "gpt2");
    writer.add_string_array("tokenizer.ggml.tokens", {"a", "b", "ab"});
  };
  {
    GgufWriter writer;
    base(writer);
    writer.add_string_array("tokenizer.ggml.merges", {"a b", "b"});
    EXPECT_NE(load(writer).find("tokenizer.ggml.merges[1]"), std::string::npos);
  }
  {
    GgufWriter writer;
    base(writer);
    writer.add_string_array("tokenizer.ggml.merges", {"a b"});
    writer.add_string("tokenizer.ggml.pre", "klingon");
    EXPECT_NE(load(writer).find("tokenizer.ggml.pre"), std::string::npos);
  }
  {
    GgufWriter writer;
    base(writer);
    writer.add_string_array("tokenizer.ggml.merges", {"a b"});
    writer.add_uint32("tokenizer.ggml.eos_token_id", 7);
    EXPECT_NE(load(writer).find("tokenizer.ggml.eos_token_id"), std::string::npos);
  }
  {
    GgufWriter writer;
    base(writer);
    writer.add_string_array("tokenizer.ggml.merges", {"a b"});
    writer.add_int_array("tokenizer.ggml.token_type", GgufValueType::Int32, {1, 1});
    EXPECT_NE(load(writer).find("tokenizer.ggml.token_type"), std::string::npos);
  }
}

// Qwen2: tokenizer.json with an NFC normalizer and the Qwen split regex (tools/fetch_tokenizers.sh
// qwen2 rebuilds it from Qwen2's BPE ranks).
TEST(Qwen2Tokenizer, MatchesHuggingFaceOnCorpus) {
  std::string path = env_path("SPUTNIK_QWEN2_TOKENIZER", "tools/fetch_tokenizers.sh qwen2");
  ASSERT_FALSE(path.empty());
  auto tokenizer = Tokenizer::from_hf_json(path);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.message();
  const Tokenizer& t = **tokenizer;
  expect_agreement(t, "qwen2");
  expect_round_trip(t, /*nfc=*/true);
  EXPECT_EQ(t.encode("Hello world"), (std::vector<int32_t>{9707, 1879}));
  EXPECT_TRUE(t.is_end_of_generation(t.token_id("<|im_end|>")));
  EXPECT_TRUE(t.is_end_of_generation(t.token_id("<|endoftext|>")));
}

TEST(Normalizer, Nfc) {
  EXPECT_EQ(tok::nfc("cafe\u0301"), "caf\u00e9");
  EXPECT_EQ(tok::nfc("caf\u00e9"), "caf\u00e9");
  EXPECT_EQ(tok::nfc("\u0301a"), "\u0301a");             // lone mark stays
  EXPECT_EQ(tok::nfc("a\u0323\u0308"), "\u1EA1\u0308");  // reordered, then composed
  EXPECT_EQ(tok::nfc("a\u0308\u0323"), "\u1EA1\u0308");
  EXPECT_EQ(tok::nfc("\u1100\u1161\u11A8"), "\uAC01");  // Hangul L V T -> syllable
  EXPECT_EQ(tok::nfc("\u212B"), "\u00C5");              // singleton: Angstrom sign
  EXPECT_EQ(tok::nfc("\u0344"), "\u0308\u0301");        // excluded from composition
  EXPECT_EQ(tok::nfc("a\xFF\u0301"), "a\xFF\u0301");    // invalid byte passes through
}

// ---------------------------------------------------------------------------------------------
// Errors: a bad tokenizer.json gives a message naming the file and the field.

class BadTokenizerJson : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("sputnik_tok_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `text` as tokenizer.json and returns the load error (empty if it loaded).
  std::string load(const std::string& text) {
    path_ = (dir_ / "tokenizer.json").string();
    std::ofstream(path_) << text;
    auto result = Tokenizer::from_hf_json(path_);
    return result.ok() ? std::string() : result.message();
  }
  static std::string valid_model(const std::string& merges) {
    return R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": )" + merges + "}";
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(BadTokenizerJson, MinimalFileLoadsAndMerges) {
  std::string json = R"({"model": )" + valid_model(R"(["a b"])") + "}";
  ASSERT_EQ(load(json), "");
  auto t = Tokenizer::from_hf_json(path_);
  EXPECT_EQ((*t)->encode("ab"), (std::vector<int32_t>{2}));
  json = R"({"model": )" + valid_model(R"([["a", "b"]])") + "}";  // pair form of merges
  ASSERT_EQ(load(json), "");
}

TEST_F(BadTokenizerJson, BosFromPostProcessorTemplate) {
  // Llama-3: post_processor Sequence[ByteLevel, TemplateProcessing] puts <|begin_of_text|> first.
  std::string json = R"({"model": )" + valid_model("[]") + R"(,
      "added_tokens": [{"id": 3, "content": "<|begin_of_text|>", "special": true}],
      "post_processor": {"type": "Sequence", "processors": [{"type": "ByteLevel"},
        {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>",
         "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]}]}})";
  ASSERT_EQ(load(json), "");
  auto t = Tokenizer::from_hf_json(path_);
  EXPECT_EQ((*t)->bos_id(), 3);
  EXPECT_TRUE((*t)->add_bos());
  // tokenizer_config.json beside it decides when present.
  std::ofstream(dir_ / "tokenizer_config.json") << R"({"add_bos_token": false})";
  t = Tokenizer::from_hf_json(path_);
  EXPECT_EQ((*t)->bos_id(), 3);
  EXPECT_FALSE((*t)->add_bos());
}

TEST_F(BadTokenizerJson, ErrorsNameFileAndField) {
  auto expect_error = [&](const std::string& json, const std::string& field) {
    std::string message = load(json);
    EXPECT_NE(message.find(path_), std::string::npos) << message;
    EXPECT_NE(message.find(field), std::string::npos) << "want '" << field << "' in: " << message;
  };
  expect_error("{not json", "not valid JSON");
  expect_error(R"({"added_tokens": []})", "'model'");
  expect_error(R"({"model": {"type": "Unigram", "vocab": []}})", "model.type");
  expect_error(R"({"model": {"type": "BPE", "merges": []}})", "model.vocab");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}}})", "model.merges");
  expect_error(R"({"model": )" + valid_model(R"(["a b", 7])") + "}", "model.merges[1]");
  expect_error(R"({"model": )" + valid_model(R"(["ab"])") + "}", "model.merges[0]");
  expect_error(R"({"model": )" + valid_model(R"(["a c"])") + "}", "not in the vocabulary");
  expect_error(R"({"model": )" + valid_model("[]") + R"(, "added_tokens": [{"content": "x"}]})",
               "added_tokens[0]");
  expect_error(R"({"model": )" + valid_model("[]") + R"(, "pre_tokenizer": {"type": "Metaspace"}})",
               "pre_tokenizer");
  expect_error(R"({"model": )" + valid_model("[]") +
                   R"(, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split",
                   "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"}]}})",
               "pre_tokenizer.pretokenizers[0].pattern");
  expect_error(R"({"model": )" + valid_model("[]") +
                   R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a"},
                   "behavior": "Sideways"}})",
               "behavior");
  expect_error(R"({"model": )" + valid_model("[]") + R"(, "normalizer": {"type": "NFKC"}})",
               "normalizer");

  auto missing = Tokenizer::from_hf_json((dir_ / "absent.json").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find("absent.json"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// One tokenizer.json feature at a time: synthetic_tokenizer.json patched (RFC 7386) as in
// synthetic.json, against HF's ids for each variant.

TEST(SyntheticTokenizer, EachFeatureMatchesHuggingFace) {
  std::ifstream base_file(kData + "synthetic_tokenizer.json");
  std::ifstream goldens_file(kData + "synthetic.json");
  ASSERT_TRUE(base_file && goldens_file);
  const auto base = nlohmann::json::parse(base_file);
  const auto goldens = nlohmann::json::parse(goldens_file);
  const auto strings = goldens["strings"].get<std::vector<std::string>>();
  auto dir = std::filesystem::temp_directory_path() /
             ("sputnik_tok_synthetic_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  size_t variants = 0;
  for (const auto& [name, variant] : goldens["variants"].items()) {
    auto spec = base;
    spec.merge_patch(variant["patch"]);
    std::string path = (dir / (name + ".json")).string();
    std::ofstream(path) << spec.dump();
    auto tokenizer = Tokenizer::from_hf_json(path);
    ASSERT_TRUE(tokenizer.ok()) << name << ": " << tokenizer.message();
    size_t agree = 0;
    for (size_t i = 0; i < strings.size(); ++i) {
      auto ids = (*tokenizer)->encode(strings[i]);
      auto expected = variant["ids"][i].get<std::vector<int32_t>>();
      EXPECT_EQ(ids, expected) << name << " " << nlohmann::json(strings[i]).dump();
      agree += ids == expected;
      if (variant.contains("nospecial_ids")) {
        EXPECT_EQ((*tokenizer)->encode(strings[i], false),
                  variant["nospecial_ids"][i].get<std::vector<int32_t>>())
            << name << " parse_special=false " << nlohmann::json(strings[i]).dump();
      }
    }
    std::printf("synthetic %s: %zu/%zu agree\n", name.c_str(), agree, strings.size());
    ++variants;

    // The GGUF pre-tokenizer names must build the same pipeline as these tokenizer.json files.
    const std::map<std::string, std::string> kGgufPre = {{"base", "gpt-2"},
                                                         {"llama3", "llama-bpe"}};
    if (auto it = kGgufPre.find(name); it != kGgufPre.end()) {
      std::string gguf_path = (dir / (name + ".gguf")).string();
      write_gguf_tokenizer(spec, it->second, gguf_path);
      auto from_gguf = load_gguf_tokenizer(gguf_path);
      ASSERT_TRUE(from_gguf.ok()) << from_gguf.message();
      for (size_t i = 0; i < strings.size(); ++i) {
        EXPECT_EQ((*from_gguf)->encode(strings[i]), variant["ids"][i].get<std::vector<int32_t>>())
            << "GGUF pre " << it->second << " " << nlohmann::json(strings[i]).dump();
      }
    }
  }
  std::filesystem::remove_all(dir);
  EXPECT_GE(variants, 10u);
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer semantics on their own.

TEST(PreTokenizer, SplitBehaviours) {
  auto pieces = [](tok::SplitBehavior behavior, bool invert = false) {
    tok::PreTokenizer pre;
    pre.add(tok::make_split_step("-", behavior, invert).value());
    return pre.split("a-b--c-");
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces(tok::SplitBehavior::Isolated), (V{"a", "-", "b", "-", "-", "c", "-"}));
  EXPECT_EQ(pieces(tok::SplitBehavior::Removed), (V{"a", "b", "c"}));
  EXPECT_EQ(pieces(tok::SplitBehavior::Contiguous), (V{"a", "-", "b", "--", "c", "-"}));
  EXPECT_EQ(pieces(tok::SplitBehavior::MergedWithPrevious), (V{"a-", "b-", "-", "c-"}));
  EXPECT_EQ(pieces(tok::SplitBehavior::MergedWithNext), (V{"a", "-b", "-", "-c", "-"}));
  // invert: the matches are kept and the text between them removed.
  EXPECT_EQ(pieces(tok::SplitBehavior::Removed, true), (V{"-", "-", "-", "-"}));
}

TEST(PreTokenizer, LookaheadSeesOnlyThePiece) {
  // `\s+(?!\S)` leaves the last space for the next word, but not at the end of a piece.
  tok::PreTokenizer pre;
  pre.add(tok::make_byte_level_step(false, true).value());
  using V = std::vector<std::string>;
  EXPECT_EQ(pre.split("a   b"), (V{"a", "  ", " b"}));
  EXPECT_EQ(pre.split("a   "), (V{"a", "   "}));
  EXPECT_EQ(pre.split("I'm 12"), (V{"I", "'m", " 12"}));
  // Invalid UTF-8 never matches, so it stays a piece of its own and still reaches BPE.
  EXPECT_EQ(pre.split("a\xFF b"), (V{"a", "\xFF", " b"}));
}

TEST(PreTokenizer, NamedPreTokenizers) {
  bool ignore_merges = false;
  auto v3 = tok::pre_tokenizer_by_name("deepseek-v3", &ignore_merges);
  ASSERT_TRUE(v3.ok()) << v3.message();
  using V = std::vector<std::string>;
  EXPECT_EQ(v3->split("12345 中文abc"), (V{"123", "45", " ", "中文", "abc"}));
  auto llama3 = tok::pre_tokenizer_by_name("llama-bpe", &ignore_merges);
  ASSERT_TRUE(llama3.ok());
  EXPECT_TRUE(ignore_merges);
  auto unknown = tok::pre_tokenizer_by_name("klingon", &ignore_merges);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.message().find("tokenizer.ggml.pre"), std::string::npos);
}

}  // namespace
}  // namespace sputnik
