// Compact tables for a BPE vocabulary: a vocabulary is 50k-150k short strings, and the node-based
// std::unordered_map<std::string, int32_t> / std::vector<std::string> took ~60 bytes per entry plus
// the text (15 MiB for Qwen2's 152k tokens and merges, resident beside the model). Here the text
// sits in one byte array and each entry costs its offset, its id and ~1.5 open-addressing slots.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace sputnik::tok {

// Strings indexed 0..size()-1, stored back to back (token id -> decoded bytes).
class StringList {
 public:
  void push_back(std::string_view text) {
    bytes_.append(text);
    ends_.push_back(static_cast<uint32_t>(bytes_.size()));
  }
  size_t size() const { return ends_.size(); }
  std::string_view operator[](size_t i) const {
    const uint32_t begin = i == 0 ? 0 : ends_[i - 1];
    return std::string_view(bytes_).substr(begin, ends_[i] - begin);
  }
  void shrink_to_fit() {
    bytes_.shrink_to_fit();
    ends_.shrink_to_fit();
  }

 private:
  std::string bytes_;
  std::vector<uint32_t> ends_;  // end offset of each string in bytes_
};

// A string -> int32 map (token text -> id). Open addressing with linear probing over slots that
// hold entry indices; the first insertion of a key wins, as std::unordered_map::emplace.
class StringIdMap {
 public:
  // Inserts (text, id) unless text is present; returns whether it was inserted.
  bool emplace(std::string_view text, int32_t id) {
    if ((keys_.size() + 1) * 4 > slots_.size() * 3) grow();
    size_t slot = find_slot(text);
    if (slots_[slot] >= 0) return false;
    slots_[slot] = static_cast<int32_t>(keys_.size());
    keys_.push_back(text);
    ids_.push_back(id);
    return true;
  }
  // The id of text, or -1.
  int32_t find(std::string_view text) const {
    if (slots_.empty()) return -1;
    const int32_t entry = slots_[find_slot(text)];
    return entry < 0 ? -1 : ids_[static_cast<size_t>(entry)];
  }
  size_t size() const { return keys_.size(); }
  // fn(text, id) for every entry, in insertion order.
  template <class Fn>
  void for_each(Fn&& fn) const {
    for (size_t i = 0; i < keys_.size(); ++i) fn(keys_[i], ids_[i]);
  }
  void shrink_to_fit() {
    keys_.shrink_to_fit();
    ids_.shrink_to_fit();
  }

 private:
  // The slot holding text, or the empty slot where it would go.
  size_t find_slot(std::string_view text) const {
    const size_t mask = slots_.size() - 1;
    for (size_t slot = std::hash<std::string_view>{}(text) & mask;; slot = (slot + 1) & mask) {
      const int32_t entry = slots_[slot];
      if (entry < 0 || keys_[static_cast<size_t>(entry)] == text) return slot;
    }
  }
  void grow() {
    slots_.assign(slots_.empty() ? 1024 : slots_.size() * 2, -1);
    for (size_t i = 0; i < keys_.size(); ++i) {
      slots_[find_slot(keys_[i])] = static_cast<int32_t>(i);
    }
  }

  StringList keys_;
  std::vector<int32_t> ids_;
  std::vector<int32_t> slots_;  // entry index, -1 empty; a power of two, at most 3/4 full
};

// A map from a pair of token ids to (rank, merged id): the BPE merges. Open addressing over
// 16-byte slots, at most 3/4 full; the first insertion of a pair wins.
class MergeMap {
 public:
  struct Merge {
    int32_t rank = -1;
    int32_t id = -1;  // the merged token; -1: no merge
  };
  void emplace(int32_t left, int32_t right, Merge merge) {
    if ((size_ + 1) * 4 > slots_.size() * 3) grow();
    Slot& slot = slots_[find_slot(key(left, right))];
    if (slot.merge.id >= 0) return;
    slot = {key(left, right), merge};
    ++size_;
  }
  // The merge of (left, right); id -1 when there is none.
  Merge find(int32_t left, int32_t right) const {
    if (slots_.empty()) return {};
    return slots_[find_slot(key(left, right))].merge;
  }

 private:
  struct Slot {
    uint64_t key = 0;
    Merge merge;
  };
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  size_t find_slot(uint64_t k) const {
    const size_t mask = slots_.size() - 1;
    // Fibonacci hashing spreads the (left, right) ids, whose low bits are close together.
    for (size_t slot = static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> 32) & mask;;
         slot = (slot + 1) & mask) {
      if (slots_[slot].merge.id < 0 || slots_[slot].key == k) return slot;
    }
  }
  void grow() {
    std::vector<Slot> old(slots_.empty() ? 1024 : slots_.size() * 2);
    old.swap(slots_);
    for (const Slot& s : old) {
      if (s.merge.id >= 0) slots_[find_slot(s.key)] = s;
    }
  }

  std::vector<Slot> slots_;
  size_t size_ = 0;
};

}  // namespace sputnik::tok
