// Unicode normalization for tokenizer.json normalizers (HF normalizers/unicode.rs). Only NFC:
// Qwen2's tokenizer.json runs it before pre-tokenization.
#pragma once

#include <string>
#include <string_view>

namespace sputnik::tok {

// NFC (UAX #15: canonical decomposition, canonical ordering, canonical composition) of UTF-8
// text. Invalid bytes are passed through unchanged and block composition across them.
// Tables: tokenizer/unicode_nfc_tables.inc (tools/gen_unicode_tables.py).
std::string nfc(std::string_view text);

// The Unicode version of the tables.
const char* nfc_unicode_version();

}  // namespace sputnik::tok
