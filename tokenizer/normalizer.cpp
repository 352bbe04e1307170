#include "tokenizer/normalizer.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "tokenizer/pretokenizer.h"

namespace sputnik::tok {

namespace {

struct CombiningClassRange {
  uint32_t first, last;
  uint8_t combining_class;
};
struct Decomposition {
  uint32_t code_point;
  uint32_t chars[4];  // zero-padded
};
struct Composition {
  uint32_t first, second, composite;
};

#include "tokenizer/unicode_nfc_tables.inc"

// Hangul syllables decompose and compose algorithmically (Unicode 3.12).
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount;
constexpr uint32_t kSCount = kLCount * kNCount;

// A decoded char: code point, or a raw invalid byte kept as it is (kInvalid | byte).
constexpr uint32_t kInvalid = 0x80000000u;

uint8_t combining_class(uint32_t cp) {
  if (cp < 0x300 || (cp & kInvalid)) return 0;
  auto it = std::upper_bound(std::begin(kCombiningClass), std::end(kCombiningClass), cp,
                             [](uint32_t c, const CombiningClassRange& r) { return c < r.first; });
  if (it == std::begin(kCombiningClass)) return 0;
  --it;
  return cp <= it->last ? it->combining_class : 0;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (cp >= 0xC0 && !(cp & kInvalid)) {
    auto it = std::lower_bound(std::begin(kDecomposition), std::end(kDecomposition), cp,
                               [](const Decomposition& d, uint32_t c) { return d.code_point < c; });
    if (it != std::end(kDecomposition) && it->code_point == cp) {
      for (uint32_t c : it->chars) {
        if (c != 0) out.push_back(c);
      }
      return;
    }
  }
  out.push_back(cp);
}

// The primary composite of (first, second), or 0.
uint32_t compose(uint32_t first, uint32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase &&
      second < kVBase + kVCount) {
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  }
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 &&
      second > kTBase && second < kTBase + kTCount) {
    return first + (second - kTBase);
  }
  auto it = std::lower_bound(
      std::begin(kComposition), std::end(kComposition), std::make_pair(first, second),
      [](const Composition& c, const std::pair<uint32_t, uint32_t>& key) {
        return c.first != key.first ? c.first < key.first : c.second < key.second;
      });
  if (it != std::end(kComposition) && it->first == first && it->second == second) {
    return it->composite;
  }
  return 0;
}


}  // namespace

std::string nfc(std::string_view text) {
  // Fast path: text below U+0300 is already NFC (nothing there decomposes into, or composes
  // with, anything but a later mark). That is every byte below 0xCC.
  if (std::all_of(text.begin(), text.end(),
                  [](char c) { return static_cast<uint8_t>(c) < 0xCC; })) {
    return std::string(text);
  }
  // 1. Canonical decomposition.
  std::vector<uint32_t> chars;
  chars.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    uint32_t cp;
    size_t length = utf8_decode(text, pos, &cp);
    if (cp == 0xFFFD && !(length == 3 && text.substr(pos, 3) == "\xEF\xBF\xBD")) {
      cp = kInvalid | static_cast<uint8_t>(text[pos]);
    }
    decompose(cp, chars);
    pos += length;
  }
  // 2. Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < chars.size();) {
    if (combining_class(chars[i]) == 0) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < chars.size() && combining_class(chars[end]) != 0) ++end;
    std::stable_sort(chars.begin() + i, chars.begin() + end, [](uint32_t a, uint32_t b) {
      return combining_class(a) < combining_class(b);
    });
    i = end;
  }
  // 3. Canonical composition: each char joins the last starter unless blocked by a char of the
  // same or higher class in between.
  std::vector<uint32_t> composed;
  composed.reserve(chars.size());
  size_t starter = SIZE_MAX;
  int last_class = -1;
  for (uint32_t c : chars) {
    int cc = combining_class(c);
    if (starter != SIZE_MAX &&
        (last_class < cc || (last_class == 0 && composed.size() == starter + 1))) {
      if (uint32_t composite = compose(composed[starter], c); composite != 0) {
        composed[starter] = composite;
        continue;
      }
    }
    if (cc == 0) {
      starter = composed.size();
      last_class = 0;
    } else {
      last_class = cc;
    }
    composed.push_back(c);
  }
  std::string out;
  out.reserve(text.size());
  for (uint32_t c : composed) {
    if (c & kInvalid) out += static_cast<char>(c & 0xFF);  // an invalid byte passes through
    else append_utf8(out, c);
  }
  return out;
}

const char* nfc_unicode_version() { return kUnicodeVersion; }

}  // namespace sputnik::tok
