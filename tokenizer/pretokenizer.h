// Pre-tokenization: splitting text into the pieces BPE runs on, with the semantics of Hugging Face
// `tokenizers` (pre_tokenizers/{split,byte_level,digits,sequence}.rs and utils/pattern.rs).
// Regexes run on PCRE2 (UTF + UCP, JIT); HF runs Oniguruma, and the two agree on every pattern
// the supported tokenizers use (tests/tokenizer_test.cpp checks it over the golden corpus).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"

namespace sputnik::tok {

// Appends code point cp as UTF-8.
void append_utf8(std::string& out, uint32_t cp);

// A compiled pattern. Matches never cross the subject handed to find_all: HF runs each split on
// one piece at a time, so `\s+(?!\S)` sees the piece's end as the end of the text.
class Regex {
 public:
  // literal: the pattern is a plain string (HF `Split{pattern: {String: ...}}`).
  static Result<Regex> compile(const std::string& pattern, bool literal = false);
  // Byte ranges [begin, end) of the successive non-overlapping matches in subject.
  void find_all(std::string_view subject, std::vector<std::pair<size_t, size_t>>& matches) const;
  const std::string& pattern() const { return pattern_; }

 private:
  struct Code;
  std::shared_ptr<const Code> code_;
  std::string pattern_;
};

// HF SplitDelimiterBehavior.
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// One step of a pre-tokenizer Sequence. Digits and ByteLevel(use_regex) are expressed as splits.
struct PreTokenizerStep {
  Regex regex;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel: prepend ' ' to each piece not starting with one
  bool has_regex = true;          // false for ByteLevel{use_regex: false}
};

class PreTokenizer {
 public:
  void add(PreTokenizerStep step) { steps_.push_back(std::move(step)); }
  bool empty() const { return steps_.empty(); }
  // Splits one text segment (the text between added tokens) into pieces, in order. The pieces
  // view `text`, or `storage` where a step changed them (ByteLevel's prefix space).
  void split(std::string_view text, std::vector<std::string_view>& pieces,
             std::deque<std::string>& storage) const;
  std::vector<std::string> split(std::string_view text) const;  // copying form, for tests

 private:
  std::vector<PreTokenizerStep> steps_;
};

// GPT-2's split regex, used by ByteLevel{use_regex: true}.
inline constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

Result<PreTokenizerStep> make_split_step(const std::string& pattern, SplitBehavior behavior,
                                         bool invert = false, bool literal = false);
// ByteLevel: optional prefix space, then GPT-2 regex split when use_regex.
Result<PreTokenizerStep> make_byte_level_step(bool add_prefix_space, bool use_regex);
// Digits: every number char its own piece (individual) or runs of them (Contiguous).
Result<PreTokenizerStep> make_digits_step(bool individual_digits);

// The named pre-tokenizers of GGUF `tokenizer.ggml.pre` (llama.cpp's names), built as the
// Sequence the model's tokenizer.json has (which llama.cpp's regex lists only approximate for
// deepseek-llm). Sets *ignore_merges for the Llama-3 style and *nfc where tokenizer.json has an
// NFC normalizer (Qwen2).
Result<PreTokenizer> pre_tokenizer_by_name(const std::string& name, bool* ignore_merges,
                                           bool* nfc = nullptr);

// GPT-2 byte <-> unicode mapping (openai/gpt-2 encoder.py bytes_to_unicode): printable bytes map
// to themselves, the other 68 to U+0100 upwards, so every byte string is printable text.
const std::string& byte_to_unicode(uint8_t byte);  // UTF-8 of the mapped char
int unicode_to_byte(uint32_t codepoint);           // -1 when codepoint is not a mapped char

// Decodes one UTF-8 char at text[pos]; returns its length (1 for an invalid byte, with
// *codepoint = 0xFFFD).
size_t utf8_decode(std::string_view text, size_t pos, uint32_t* codepoint);

}  // namespace sputnik::tok
