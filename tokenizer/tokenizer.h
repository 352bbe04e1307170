// Byte-level BPE tokenizer, loaded from a Hugging Face tokenizer.json or from GGUF
// tokenizer.ggml.* metadata. Added/special tokens are matched before BPE; ids agree exactly
// with HF `tokenizers` (tests/tokenizer_test.cpp checks committed goldens).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace sputnik {

class GgufFile;

class Tokenizer {
 public:
  static Result<std::unique_ptr<Tokenizer>> from_hf_json(const std::string& path);
  static Result<std::unique_ptr<Tokenizer>> from_gguf(const GgufFile& gguf);
  ~Tokenizer();

  // parse_special: match added/special tokens in the text (what HF does by default); false
  // treats the special ones as plain text (HF encode_special_tokens). Never adds BOS: that is
  // HF's encode(add_special_tokens=False); prepend bos_id() when add_bos() and the prompt does
  // not already start with it (render_chat writes BOS text for DeepSeek and Llama-3).
  // Thread-safe.
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;
  // The exact bytes of the ids (special tokens included as their text).
  std::string decode(std::span<const int32_t> ids) const;
  // The bytes of one token.
  std::string token_bytes(int32_t id) const;
  // The id of a token given by its text (added tokens and vocab), or -1.
  int32_t token_id(std::string_view token_text) const;

  int64_t vocab_size() const;
  int32_t bos_id() const;  // -1 if none
  int32_t eos_id() const;  // -1 if none
  bool add_bos() const;    // whether prompts start with BOS (GGUF add_bos_token; tokenizer_config
                           // add_bos_token, else a BOS-first post-processor template)
  // True for every end-of-generation token (eos, eot, <|im_end|>, <｜end▁of▁sentence｜>, ...).
  bool is_end_of_generation(int32_t id) const;
  bool is_special(int32_t id) const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of ids into text without ever emitting half a UTF-8 character.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  // The complete UTF-8 text this token finishes (may be empty while a character is incomplete).
  std::string push(int32_t id);
  // Whatever is still pending (invalid trailing bytes are returned as they are).
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;
};

}  // namespace sputnik
