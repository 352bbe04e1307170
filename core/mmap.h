// Read-only memory map of a whole file. Weights are used in place from the map.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/result.h"

namespace sputnik {

// Drops this process's page-table entries for the pages overlapping [data, data + bytes) of a
// file mapping (MADV_DONTNEED); they fault back in from the page cache when read again. For a
// table read a few rows at a time (token embeddings): each read fault maps 64 KiB around the row
// (the kernel's fault-around, which MADV_RANDOM does not turn off), so random tokens would keep
// most of a 100+ MiB table resident. Never on anonymous memory, which this would zero.
void release_file_pages(const void* data, size_t bytes);

class MappedFile {
 public:
  static Result<std::shared_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Drops this process's page-table entries for the whole map (MADV_DONTNEED): the pages stay in
  // the page cache, and those still in use fault back in on their next read. Called once a model
  // is loaded, for the pages the loader read and no longer needs (metadata, tensors it repacked
  // or converted into memory of its own, and their neighbours mapped in by fault-around).
  void release_resident_pages() const;
  // True when [offset, offset + length) lies inside the file (overflow-safe).
  bool contains(uint64_t offset, uint64_t length) const {
    return offset <= size_ && length <= size_ - offset;
  }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace sputnik
