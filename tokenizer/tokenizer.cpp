// Byte-level BPE with HF `tokenizers` semantics. The encode pipeline, as in HF
// TokenizerImpl::encode_single_sequence:
//   1. added tokens are split out of the raw text (added_vocabulary.rs: first the tokens with
//      normalized=false on the raw text, then those with normalized=true on what is left;
//      leftmost-longest, like its Aho-Corasick automaton);
//   2. each remaining segment is pre-tokenized into pieces (pretokenizer.h);
//   3. each piece is mapped byte -> char (GPT-2 bytes_to_unicode) and merged by BPE rank
//      (models/bpe/word.rs: lowest rank first, leftmost on ties).
// Normalizers: none (DeepSeek: empty Sequence; SmolLM2, Llama-3: null) or NFC (Qwen2), run on
// the text between non-normalized added tokens, as HF does. GGUF files name no normalizer; we run
// NFC for the Qwen2 pre-tokenizer names, as its tokenizer.json does (llama.cpp runs none).
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "formats/gguf.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/token_tables.h"

namespace sputnik {

namespace {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;     // HF `special` / GGUF control: skipped when parse_special is false
  bool normalized = false;  // matched after normalization (second pass) rather than on raw text
  bool lstrip = false, rstrip = false, single_word = false;
};

// A run of text or an already-decided token.
struct Fragment {
  int32_t id;  // -1: text
  std::string_view text;
};

// Rust char::is_whitespace (the White_Space property), which HF's lstrip/rstrip use.
bool is_whitespace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// Start of the UTF-8 char that ends at `end` (end > 0).
size_t previous_char(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && end - start < 4 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) {
    --start;
  }
  return start;
}

// HF single_word: a token only matches when the chars around it are not word chars (Rust
// regex \w: alphabetic, marks, decimal digits, connector punctuation).
bool is_word_char_at(std::string_view text, size_t pos) {
  static const tok::Regex kWord = tok::Regex::compile(R"([\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}])").value();
  uint32_t cp;
  size_t length = tok::utf8_decode(text, pos, &cp);
  std::vector<std::pair<size_t, size_t>> matches;
  kWord.find_all(text.substr(pos, length), matches);
  return !matches.empty();
}

}  // namespace

struct Tokenizer::Impl {
  // BPE model, in byte-level text (each byte shown as its bytes_to_unicode char).
  tok::StringIdMap vocab;
  tok::MergeMap merges;  // (left, right) -> (rank, merged id)
  std::array<int32_t, 256> byte_ids{};  // id of each single-byte token, -1 if absent
  bool ignore_merges = false;
  bool nfc = false;  // normalizer: NFC
  tok::PreTokenizer pre_tokenizer;

  std::vector<AddedToken> added;
  // A byte trie of the added tokens, per pass (0: normalized=false, 1: normalized=true), for
  // the longest match at a position.
  struct TrieNode {
    std::vector<std::pair<uint8_t, int32_t>> children;  // byte -> node
    int32_t token = -1;                                 // index into `added` ending here
  };
  std::array<std::vector<TrieNode>, 2> tries;
  std::unordered_map<std::string, int32_t> added_ids;

  // Piece -> ids cache (HF BPE keeps one too): text repeats the same words.
  static constexpr size_t kCacheEntries = 1 << 16, kCachePieceBytes = 64;
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  tok::StringList token_text;  // decoded bytes of each id
  std::vector<uint8_t> special_flags;   // 1 for special / control tokens
  int32_t bos = -1, eos = -1, eot = -1, eom = -1;
  bool add_bos = false;
  std::unordered_set<int32_t> end_of_generation;

  // Called once vocab, merges (as strings resolved by the loader) and added tokens are in.
  void finish() {
    int64_t size = 0;
    vocab.for_each([&](std::string_view, int32_t id) { size = std::max<int64_t>(size, id + 1); });
    for (const AddedToken& token : added) size = std::max<int64_t>(size, token.id + 1);
    std::vector<std::string> texts(static_cast<size_t>(size));
    special_flags.assign(size, 0);
    vocab.for_each(
        [&](std::string_view text, int32_t id) { texts[id] = decode_byte_level(std::string(text)); });
    for (const AddedToken& token : added) texts[token.id] = token.content;  // stored as plain text
    for (const std::string& text : texts) token_text.push_back(text);
    token_text.shrink_to_fit();
    vocab.shrink_to_fit();
    for (size_t i = 0; i < added.size(); ++i) {
      const AddedToken& token = added[i];
      special_flags[token.id] = token.special ? 1 : 0;
      added_ids.emplace(token.content, token.id);
      if (token.content.empty()) continue;
      std::vector<TrieNode>& trie = tries[token.normalized ? 1 : 0];
      if (trie.empty()) trie.emplace_back();
      int32_t node = 0;
      for (char c : token.content) {
        auto byte = static_cast<uint8_t>(c);
        int32_t child = -1;
        for (auto [b, next] : trie[node].children) {
          if (b == byte) child = next;
        }
        if (child < 0) {
          child = static_cast<int32_t>(trie.size());
          trie[node].children.emplace_back(byte, child);
          trie.emplace_back();
        }
        node = child;
      }
      if (trie[node].token < 0) trie[node].token = static_cast<int32_t>(i);  // first one wins
    }
    for (int b = 0; b < 256; ++b) {
      byte_ids[b] = vocab.find(tok::byte_to_unicode(static_cast<uint8_t>(b)));
    }
    // End of generation: the declared ids, plus the turn-ending tokens llama.cpp also stops on.
    for (int32_t id : {eos, eot, eom}) {
      if (id >= 0) end_of_generation.insert(id);
    }
    for (const char* text : {"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|endoftext|>", "<|end|>",
                             "<end_of_turn>", "<|EOT|>", "<｜end▁of▁sentence｜>"}) {
      auto it = added_ids.find(text);
      if (it != added_ids.end() && special_flags[it->second]) end_of_generation.insert(it->second);
    }
  }

  // HF ByteLevel decoder: a token whose chars all map back to bytes becomes those bytes; any
  // other token is kept as its UTF-8 text.
  static std::string decode_byte_level(const std::string& text) {
    std::string bytes;
    bytes.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
      uint32_t cp;
      pos += tok::utf8_decode(text, pos, &cp);
      int byte = tok::unicode_to_byte(cp);
      if (byte < 0) return text;
      bytes += static_cast<char>(byte);
    }
    return bytes;
  }

  // The longest added token of `trie` that text[pos...] starts with, or null.
  const AddedToken* longest_added(const std::vector<TrieNode>& trie, std::string_view text,
                                  size_t pos) const {
    if (trie.empty()) return nullptr;
    const AddedToken* match = nullptr;
    int32_t node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      auto byte = static_cast<uint8_t>(text[i]);
      int32_t child = -1;
      for (auto [b, next] : trie[node].children) {
        if (b == byte) {
          child = next;
          break;
        }
      }
      if (child < 0) break;
      node = child;
      if (trie[node].token >= 0) match = &added[trie[node].token];
    }
    return match;
  }

  // Splits added tokens out of each text fragment, for one pass.
  void split_added(std::vector<Fragment>& fragments, int pass, bool parse_special) const {
    std::vector<Fragment> out;
    for (const Fragment& fragment : fragments) {
      if (fragment.id >= 0) {
        out.push_back(fragment);
        continue;
      }
      std::string_view text = fragment.text;
      size_t emitted = 0;  // text before this offset is already in `out`
      size_t pos = 0;
      while (pos < text.size()) {
        const AddedToken* match = longest_added(tries[pass], text, pos);
        if (match == nullptr) {
          ++pos;
          continue;
        }
        size_t start = pos, stop = pos + match->content.size();
        pos = stop;  // the automaton resumes after the match even when the match is skipped
        if (match->special && !parse_special) continue;
        if (match->single_word) {
          bool word_before = start > 0 && is_word_char_at(text, previous_char(text, start));
          bool word_after = stop < text.size() && is_word_char_at(text, stop);
          if (word_before || word_after) continue;
        }
        if (match->lstrip) {  // swallow the whitespace before, back to the previous match
          while (start > emitted) {
            size_t previous = std::max(previous_char(text, start), emitted);
            uint32_t cp;
            tok::utf8_decode(text, previous, &cp);
            if (!is_whitespace(cp)) break;
            start = previous;
          }
        }
        if (match->rstrip) {  // and after
          while (stop < text.size()) {
            uint32_t cp;
            size_t length = tok::utf8_decode(text, stop, &cp);
            if (!is_whitespace(cp)) break;
            stop += length;
          }
        }
        if (start > emitted) out.push_back({-1, text.substr(emitted, start - emitted)});
        out.push_back({match->id, text.substr(start, stop - start)});
        emitted = stop;
        pos = std::max(pos, stop);
      }
      if (emitted < text.size()) out.push_back({-1, text.substr(emitted)});
    }
    fragments.swap(out);
  }

  // BPE over one pre-tokenized piece, through the cache.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
    if (piece.size() > kCachePieceBytes) {
      bpe(piece, out);
      return;
    }
    std::string key(piece);
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      auto it = cache.find(key);
      if (it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    size_t first = out.size();
    bpe(piece, out);
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() >= kCacheEntries) cache.clear();
    cache.emplace(std::move(key), std::vector<int32_t>(out.begin() + first, out.end()));
  }

  // BPE over one pre-tokenized piece (HF models/bpe/model.rs tokenize_with_cache + word.rs).
  void bpe(std::string_view piece, std::vector<int32_t>& out) const {
    if (ignore_merges) {
      std::string mapped;
      for (char c : piece) mapped += tok::byte_to_unicode(static_cast<uint8_t>(c));
      if (const int32_t id = vocab.find(mapped); id >= 0) {
        out.push_back(id);
        return;
      }
    }
    struct Symbol {
      int32_t id;
      int32_t prev, next;  // -1 at the ends
    };
    std::vector<Symbol> symbols;
    symbols.reserve(piece.size());
    for (char c : piece) {
      int32_t id = byte_ids[static_cast<uint8_t>(c)];
      if (id < 0) continue;  // no unk token in byte-level vocabularies: HF drops the char too
      int32_t index = static_cast<int32_t>(symbols.size());
      symbols.push_back({id, index - 1, index + 1});
    }
    if (symbols.empty()) return;
    symbols.back().next = -1;

    struct Candidate {
      int32_t rank, pos, merged;
      bool operator>(const Candidate& other) const {
        return rank != other.rank ? rank > other.rank : pos > other.pos;
      }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
    auto push_pair = [&](int32_t pos) {
      if (pos < 0 || symbols[pos].next < 0) return;
      const tok::MergeMap::Merge merge = merges.find(symbols[pos].id, symbols[symbols[pos].next].id);
      if (merge.id >= 0) queue.push({merge.rank, pos, merge.id});
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);
    while (!queue.empty()) {
      Candidate top = queue.top();
      queue.pop();
      Symbol& left = symbols[top.pos];
      if (left.id < 0 || left.next < 0) continue;  // removed, or now last
      if (merges.find(left.id, symbols[left.next].id).id != top.merged) continue;  // stale
      Symbol& right = symbols[left.next];
      left.id = top.merged;
      right.id = -1;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = top.pos;
      push_pair(left.prev);
      push_pair(top.pos);
    }
    for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
  }

  Status add_merge(const std::string& left, const std::string& right, int32_t rank,
                   const std::string& where) {
    const int32_t l = vocab.find(left), r = vocab.find(right), m = vocab.find(left + right);
    if (l < 0 || r < 0 || m < 0) {
      return make_error("{}: merge {} \"{} {}\": {} is not in the vocabulary", where, rank, left,
                        right,
                        l < 0   ? left
                        : r < 0 ? right
                                : left + right);
    }
    merges.emplace(l, r, {rank, m});
    return ok_status();
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<Fragment> fragments{{-1, text}};
  impl_->split_added(fragments, 0, parse_special);
  std::deque<std::string> normalized;  // owns the normalized fragments' text
  if (impl_->nfc) {
    for (Fragment& fragment : fragments) {
      if (fragment.id >= 0) continue;
      normalized.push_back(tok::nfc(fragment.text));
      fragment.text = normalized.back();
    }
  }
  impl_->split_added(fragments, 1, parse_special);
  std::vector<int32_t> ids;
  std::vector<std::string_view> pieces;
  std::deque<std::string> storage;
  for (const Fragment& fragment : fragments) {
    if (fragment.id >= 0) {
      ids.push_back(fragment.id);
      continue;
    }
    impl_->pre_tokenizer.split(fragment.text, pieces, storage);
    for (std::string_view piece : pieces) impl_->encode_piece(piece, ids);
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  for (int32_t id : ids) {
    if (id >= 0 && id < static_cast<int32_t>(impl_->token_text.size())) {
      text += impl_->token_text[static_cast<size_t>(id)];
    }
  }
  return text;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(impl_->token_text.size())) return {};
  return std::string(impl_->token_text[static_cast<size_t>(id)]);
}

int32_t Tokenizer::token_id(std::string_view token_text) const {
  std::string key(token_text);
  if (auto it = impl_->added_ids.find(key); it != impl_->added_ids.end()) return it->second;
  return impl_->vocab.find(key);
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->token_text.size()); }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }
bool Tokenizer::is_end_of_generation(int32_t id) const {
  return impl_->end_of_generation.count(id) != 0;
}
bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < static_cast<int32_t>(impl_->special_flags.size()) &&
         impl_->special_flags[id] != 0;
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json

namespace {

using nlohmann::json;

// Reads an optional boolean field; a present field of another type is an error.
// `where` is "<file>: field '<path>" without the closing quote, so the key can be appended.
Result<bool> json_bool(const json& object, const char* key, bool fallback,
                       const std::string& where) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return make_error("{}.{}': expected a boolean, got {}", where, key, it->type_name());
  }
  return it->get<bool>();
}

Result<tok::SplitBehavior> parse_behavior(const json& step, const std::string& where) {
  auto it = step.find("behavior");
  std::string name = it != step.end() && it->is_string() ? it->get<std::string>() : "";
  if (name == "Isolated") return tok::SplitBehavior::Isolated;
  if (name == "Removed") return tok::SplitBehavior::Removed;
  if (name == "MergedWithPrevious") return tok::SplitBehavior::MergedWithPrevious;
  if (name == "MergedWithNext") return tok::SplitBehavior::MergedWithNext;
  if (name == "Contiguous") return tok::SplitBehavior::Contiguous;
  return make_error(
      "{}.behavior': expected Isolated, Removed, MergedWithPrevious, "
      "MergedWithNext or Contiguous, got '{}'",
      where, name);
}

Status parse_pre_tokenizer(const json& node, const std::string& where, tok::PreTokenizer& out) {
  if (node.is_null()) return ok_status();
  if (!node.is_object() || !node.contains("type") || !node["type"].is_string()) {
    return make_error("{}': expected an object with a string 'type'", where);
  }
  std::string type = node["type"].get<std::string>();
  auto add = [&out](Result<tok::PreTokenizerStep> step) -> Status {
    if (!step.ok()) return step.error();
    out.add(std::move(step).value());
    return ok_status();
  };
  if (type == "Sequence") {
    auto it = node.find("pretokenizers");
    if (it == node.end() || !it->is_array()) {
      return make_error("{}.pretokenizers': expected an array", where);
    }
    for (size_t i = 0; i < it->size(); ++i) {
      SPUTNIK_CHECK_OK(
          parse_pre_tokenizer((*it)[i], fmt::format("{}.pretokenizers[{}]", where, i), out));
    }
    return ok_status();
  }
  if (type == "Split") {
    auto pattern = node.find("pattern");
    bool literal;
    std::string text;
    if (pattern != node.end() && pattern->is_object() && pattern->contains("Regex") &&
        (*pattern)["Regex"].is_string()) {
      literal = false;
      text = (*pattern)["Regex"].get<std::string>();
    } else if (pattern != node.end() && pattern->is_object() && pattern->contains("String") &&
               (*pattern)["String"].is_string()) {
      literal = true;
      text = (*pattern)["String"].get<std::string>();
    } else {
      return make_error("{}.pattern': expected {{\"Regex\": ...}} or {{\"String\": ...}}", where);
    }
    SPUTNIK_ASSIGN_OR_RETURN(tok::SplitBehavior behavior, parse_behavior(node, where));
    SPUTNIK_ASSIGN_OR_RETURN(bool invert, json_bool(node, "invert", false, where));
    auto step = tok::make_split_step(text, behavior, invert, literal);
    if (!step.ok()) return make_error("{}.pattern': {}", where, step.message());
    return add(std::move(step));
  }
  if (type == "ByteLevel") {
    SPUTNIK_ASSIGN_OR_RETURN(bool prefix, json_bool(node, "add_prefix_space", false, where));
    SPUTNIK_ASSIGN_OR_RETURN(bool use_regex, json_bool(node, "use_regex", true, where));
    return add(tok::make_byte_level_step(prefix, use_regex));
  }
  if (type == "Digits") {
    SPUTNIK_ASSIGN_OR_RETURN(bool individual, json_bool(node, "individual_digits", false, where));
    return add(tok::make_digits_step(individual));
  }
  return make_error(
      "{}.type': unsupported pre-tokenizer '{}' (supported: Sequence, Split, "
      "ByteLevel, Digits)",
      where, type);
}

// Sets *nfc for an NFC normalizer; other normalizers are not supported.
Status parse_normalizer(const json& node, const std::string& where, bool* nfc) {
  if (node.is_null()) return ok_status();
  std::string type = node.is_object() && node.contains("type") && node["type"].is_string()
                         ? node["type"].get<std::string>()
                         : "";
  if (type == "NFC") {
    *nfc = true;
    return ok_status();
  }
  if (type == "Sequence" && node.contains("normalizers") && node["normalizers"].is_array()) {
    for (size_t i = 0; i < node["normalizers"].size(); ++i) {
      SPUTNIK_CHECK_OK(parse_normalizer(node["normalizers"][i],
                                        fmt::format("{}.normalizers[{}]", where, i), nfc));
    }
    return ok_status();
  }
  return make_error("{}': normalizer '{}' is not supported (only none, NFC or a Sequence of them)",
                    where, type);
}

// bos/eos/add_bos live in tokenizer_config.json beside tokenizer.json, not in tokenizer.json.
std::string config_token(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return {};
}

// The special token a TemplateProcessing post-processor puts first in a single sequence (the
// BOS HF's encode(add_special_tokens=True) adds, e.g. Llama-3's <|begin_of_text|>), or "".
std::string template_first_special(const json& node) {
  if (!node.is_object() || !node.contains("type") || !node["type"].is_string()) return {};
  const std::string type = node["type"].get<std::string>();
  if (type == "Sequence" && node.contains("processors") && node["processors"].is_array()) {
    for (const json& processor : node["processors"]) {
      std::string token = template_first_special(processor);
      if (!token.empty()) return token;
    }
    return {};
  }
  if (type != "TemplateProcessing" || !node.contains("single") || !node["single"].is_array() ||
      node["single"].empty()) {
    return {};
  }
  const json& first = node["single"][0];
  if (first.is_object() && first.contains("SpecialToken") && first["SpecialToken"].is_object() &&
      first["SpecialToken"].contains("id") && first["SpecialToken"]["id"].is_string()) {
    return first["SpecialToken"]["id"].get<std::string>();
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_hf_json(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return make_error("{}: cannot open tokenizer.json", path);
  json root = json::parse(file, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return make_error("{}: not valid JSON (expected a Hugging Face tokenizer.json object)", path);
  }
  auto impl = std::make_unique<Impl>();

  // model
  if (!root.contains("model") || !root["model"].is_object()) {
    return make_error("{}: field 'model': expected an object", path);
  }
  const json& model = root["model"];
  std::string model_type = model.contains("type") && model["type"].is_string()
                               ? model["type"].get<std::string>()
                               : "BPE";  // older files omit it
  if (model_type != "BPE") {
    return make_error("{}: field 'model.type': expected \"BPE\", got \"{}\"", path, model_type);
  }
  SPUTNIK_ASSIGN_OR_RETURN(bool byte_fallback,
                           json_bool(model, "byte_fallback", false, path + ": field 'model"));
  if (byte_fallback) {
    return make_error(
        "{}: field 'model.byte_fallback': true is not supported (sentencepiece-style "
        "BPE); only byte-level BPE is",
        path);
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && it->is_string() && !it->get<std::string>().empty()) {
      return make_error("{}: field 'model.{}': \"{}\" is not supported (byte-level BPE has none)",
                        path, key, it->get<std::string>());
    }
  }
  SPUTNIK_ASSIGN_OR_RETURN(impl->ignore_merges,
                           json_bool(model, "ignore_merges", false, path + ": field 'model"));
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return make_error("{}: field 'model.vocab': expected an object of token -> id", path);
  }
  for (const auto& [text, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
      return make_error("{}: field 'model.vocab[\"{}\"]': expected an id >= 0, got {}", path, text,
                        id.dump());
    }
    impl->vocab.emplace(text, id.get<int32_t>());
  }
  if (!model.contains("merges") || !model["merges"].is_array()) {
    return make_error("{}: field 'model.merges': expected an array", path);
  }
  const json& merges = model["merges"];
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& merge = merges[i];
    std::string left, right;
    if (merge.is_string()) {
      const std::string& text = merge.get_ref<const std::string&>();
      size_t space = text.find(' ', 1);
      if (space == std::string::npos) {
        return make_error("{}: field 'model.merges[{}]': expected \"left right\", got \"{}\"", path,
                          i, text);
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      return make_error(
          "{}: field 'model.merges[{}]': expected \"left right\" or [left, right], "
          "got {}",
          path, i, merge.dump());
    }
    SPUTNIK_CHECK_OK(impl->add_merge(left, right, static_cast<int32_t>(i),
                                     fmt::format("{}: field 'model.merges[{}]'", path, i)));
  }

  // added_tokens
  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    const json& added = root["added_tokens"];
    if (!added.is_array()) return make_error("{}: field 'added_tokens': expected an array", path);
    std::unordered_map<std::string, int32_t> added_ids;
    int64_t max_added_id = -1;
    for (size_t i = 0; i < added.size(); ++i) {
      const json& entry = added[i];
      std::string where = fmt::format("{}: field 'added_tokens[{}]", path, i);
      if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_number_integer() ||
          entry["id"].get<int64_t>() < 0 || !entry.contains("content") ||
          !entry["content"].is_string()) {
        return make_error("{}': expected {{\"id\": int >= 0, \"content\": string, ...}}", where);
      }
      AddedToken token;
      token.content = entry["content"].get<std::string>();
      // HF (added_vocabulary.rs add_tokens) takes the id from the vocabulary when the content
      // is already there, else the next id after the vocabulary and the added tokens so far;
      // the file's "id" is only checked (with a warning). For consistent files they agree.
      if (added_ids.count(token.content)) continue;  // a repeated token is added once
      if (const int32_t known = impl->vocab.find(token.content); known >= 0) {
        token.id = known;
      } else {
        int64_t model_size = static_cast<int64_t>(impl->vocab.size());
        token.id = static_cast<int32_t>(max_added_id < 0 ? model_size
                                        : (max_added_id >= model_size || model_size == 0)
                                            ? max_added_id + 1
                                            : model_size);
      }
      max_added_id = std::max<int64_t>(max_added_id, token.id);
      added_ids.emplace(token.content, token.id);
      SPUTNIK_ASSIGN_OR_RETURN(token.special, json_bool(entry, "special", false, where));
      SPUTNIK_ASSIGN_OR_RETURN(token.normalized, json_bool(entry, "normalized", true, where));
      SPUTNIK_ASSIGN_OR_RETURN(token.lstrip, json_bool(entry, "lstrip", false, where));
      SPUTNIK_ASSIGN_OR_RETURN(token.rstrip, json_bool(entry, "rstrip", false, where));
      SPUTNIK_ASSIGN_OR_RETURN(token.single_word, json_bool(entry, "single_word", false, where));
      impl->added.push_back(std::move(token));
    }
  }

  SPUTNIK_CHECK_OK(
      parse_normalizer(root.value("normalizer", json()), path + ": field 'normalizer", &impl->nfc));
  SPUTNIK_CHECK_OK(parse_pre_tokenizer(root.value("pre_tokenizer", json()),
                                       path + ": field 'pre_tokenizer", impl->pre_tokenizer));

  // Special ids from tokenizer_config.json when it sits beside the file; else BOS from the
  // post-processor template.
  std::string template_bos = template_first_special(root.value("post_processor", json()));
  std::string bos_text = template_bos, eos_text;
  impl->add_bos = !template_bos.empty();
  std::filesystem::path config_path =
      std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::ifstream config_file(config_path);
  if (config_file) {
    json config = json::parse(config_file, nullptr, false);
    if (!config.is_discarded() && config.is_object()) {
      if (std::string text = config_token(config, "bos_token"); !text.empty()) bos_text = text;
      eos_text = config_token(config, "eos_token");
      SPUTNIK_ASSIGN_OR_RETURN(impl->add_bos,
                               json_bool(config, "add_bos_token", impl->add_bos,
                                         config_path.string() + ": field 'tokenizer_config"));
    }
  }
  impl->finish();
  auto lookup = [&impl](const std::string& text) -> int32_t {
    if (text.empty()) return -1;
    if (auto it = impl->added_ids.find(text); it != impl->added_ids.end()) return it->second;
    return impl->vocab.find(text);
  };
  auto first_present = [&](std::initializer_list<const char*> names) -> int32_t {
    for (const char* name : names) {
      if (int32_t id = lookup(name); id >= 0) return id;
    }
    return -1;
  };
  impl->bos = bos_text.empty() ? first_present({"<｜begin▁of▁sentence｜>", "<|begin_of_text|>"})
                               : lookup(bos_text);
  impl->eos = eos_text.empty() ? first_present({"<｜end▁of▁sentence｜>", "<|end_of_text|>",
                                                "<|im_end|>", "<|endoftext|>"})
                               : lookup(eos_text);
  if (impl->eos >= 0) impl->end_of_generation.insert(impl->eos);
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

// ---------------------------------------------------------------------------------------------
// GGUF tokenizer.ggml.* (llama.cpp convert_hf_to_gguf.py writes them from tokenizer.json).

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_gguf(const GgufFile& gguf) {
  const std::string& path = gguf.path();
  SPUTNIK_ASSIGN_OR_RETURN(std::string model, gguf.get_string("tokenizer.ggml.model"));
  if (model != "gpt2") {
    return make_error("{}: tokenizer.ggml.model: expected \"gpt2\" (byte-level BPE), got \"{}\"",
                      path, model);
  }
  auto impl = std::make_unique<Impl>();
  SPUTNIK_ASSIGN_OR_RETURN(std::vector<std::string> tokens,
                           gguf.get_string_array("tokenizer.ggml.tokens"));
  std::vector<int64_t> types;
  if (gguf.has("tokenizer.ggml.token_type")) {
    SPUTNIK_ASSIGN_OR_RETURN(types, gguf.get_int_array("tokenizer.ggml.token_type"));
    if (types.size() != tokens.size()) {
      return make_error(
          "{}: tokenizer.ggml.token_type: expected {} entries (one per token), got {}", path,
          tokens.size(), types.size());
    }
  }
  // llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
  constexpr int64_t kControl = 3, kUserDefined = 4;
  for (size_t i = 0; i < tokens.size(); ++i) {
    impl->vocab.emplace(tokens[i], static_cast<int32_t>(i));
    int64_t type = types.empty() ? 1 : types[i];
    if (type == kControl || type == kUserDefined) {
      AddedToken token;
      token.id = static_cast<int32_t>(i);
      token.content = tokens[i];
      token.special = type == kControl;
      token.normalized = false;  // converted tokens are stored as the text to match
      impl->added.push_back(std::move(token));
    }
  }
  // A byte-level vocabulary may have no merges (llama.cpp's converter then omits the key).
  std::vector<std::string> merges;
  if (gguf.has("tokenizer.ggml.merges")) {
    SPUTNIK_ASSIGN_OR_RETURN(merges, gguf.get_string_array("tokenizer.ggml.merges"));
  }
  for (size_t i = 0; i < merges.size(); ++i) {
    size_t space = merges[i].find(' ', 1);
    if (space == std::string::npos) {
      return make_error("{}: tokenizer.ggml.merges[{}]: expected \"left right\", got \"{}\"", path,
                        i, merges[i]);
    }
    SPUTNIK_CHECK_OK(impl->add_merge(merges[i].substr(0, space), merges[i].substr(space + 1),
                                     static_cast<int32_t>(i),
                                     fmt::format("{}: tokenizer.ggml.merges[{}]", path, i)));
  }
  std::string pre = "default";
  if (gguf.has("tokenizer.ggml.pre")) {
    SPUTNIK_ASSIGN_OR_RETURN(pre, gguf.get_string("tokenizer.ggml.pre"));
  }
  auto pre_tokenizer = tok::pre_tokenizer_by_name(pre, &impl->ignore_merges, &impl->nfc);
  if (!pre_tokenizer.ok()) return make_error("{}: {}", path, pre_tokenizer.message());
  impl->pre_tokenizer = std::move(pre_tokenizer).value();

  auto read_id = [&](const char* key, int32_t* id) -> Status {
    SPUTNIK_ASSIGN_OR_RETURN(int64_t value, gguf.get_int_or(key, -1));
    if (value >= static_cast<int64_t>(tokens.size())) {
      return make_error("{}: {}: id {} is outside the vocabulary of {} tokens", path, key, value,
                        tokens.size());
    }
    *id = static_cast<int32_t>(value);
    return ok_status();
  };
  SPUTNIK_CHECK_OK(read_id("tokenizer.ggml.bos_token_id", &impl->bos));
  SPUTNIK_CHECK_OK(read_id("tokenizer.ggml.eos_token_id", &impl->eos));
  SPUTNIK_CHECK_OK(read_id("tokenizer.ggml.eot_token_id", &impl->eot));
  SPUTNIK_CHECK_OK(read_id("tokenizer.ggml.eom_token_id", &impl->eom));
  if (gguf.has("tokenizer.ggml.add_bos_token")) {
    SPUTNIK_ASSIGN_OR_RETURN(impl->add_bos, gguf.get_bool("tokenizer.ggml.add_bos_token"));
  }
  impl->finish();
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

// ---------------------------------------------------------------------------------------------
// StreamDecoder

std::string StreamDecoder::push(int32_t id) {
  pending_ += tokenizer_.token_bytes(id);
  // Hold back a trailing lead byte (and its continuation bytes) whose char is not complete yet.
  size_t n = pending_.size();
  size_t complete = n;
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    auto byte = static_cast<uint8_t>(pending_[n - back]);
    if ((byte & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    size_t need = byte >= 0xF0 && byte < 0xF8   ? 4
                  : byte >= 0xE0 && byte < 0xF0 ? 3
                  : byte >= 0xC0 && byte < 0xE0 ? 2
                                                : 1;
    if (need > back) complete = n - back;
    break;
  }
  std::string out = pending_.substr(0, complete);
  pending_.erase(0, complete);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace sputnik
