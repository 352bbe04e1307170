// GGUF reader. Layout (ggml/docs/gguf.md), all little-endian:
//   magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//   kv_count x { string key | u32 value_type | value }
//   tensor_count x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to general.alignment | tensor data (each offset relative to here, aligned)
// A string is u64 length + bytes (no terminator); an array is u32 element type + u64 count +
// elements. ne[0] is the contiguous dimension, so the PyTorch-order shape is ne reversed.
//
// Every count and length is checked against the bytes that remain before anything is allocated,
// so a corrupt or hostile file gives an error, never a crash or a huge allocation.
#include "formats/gguf.h"

#include <fmt/format.h>

#include <cstring>
#include <limits>

namespace sputnik {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxArrayDepth = 8;          // nested arrays deeper than this are rejected
constexpr uint64_t kMaxKeyLength = 65535;  // the spec's limit on key length

std::string_view value_type_name(uint32_t type) {
  switch (static_cast<GgufValueType>(type)) {
    case GgufValueType::UInt8: return "uint8";
    case GgufValueType::Int8: return "int8";
    case GgufValueType::UInt16: return "uint16";
    case GgufValueType::Int16: return "int16";
    case GgufValueType::UInt32: return "uint32";
    case GgufValueType::Int32: return "int32";
    case GgufValueType::Float32: return "float32";
    case GgufValueType::Bool: return "bool";
    case GgufValueType::String: return "string";
    case GgufValueType::Array: return "array";
    case GgufValueType::UInt64: return "uint64";
    case GgufValueType::Int64: return "int64";
    case GgufValueType::Float64: return "float64";
  }
  return "unknown";
}

bool is_unsigned(GgufValueType t) {
  return t == GgufValueType::UInt8 || t == GgufValueType::UInt16 || t == GgufValueType::UInt32 ||
         t == GgufValueType::UInt64;
}
bool is_signed(GgufValueType t) {
  return t == GgufValueType::Int8 || t == GgufValueType::Int16 || t == GgufValueType::Int32 ||
         t == GgufValueType::Int64;
}
bool is_integer(GgufValueType t) { return is_unsigned(t) || is_signed(t); }
bool is_float(GgufValueType t) {
  return t == GgufValueType::Float32 || t == GgufValueType::Float64;
}

// Smallest number of bytes one element of `type` takes on disk: bounds array counts before any
// allocation. (A string is at least its u64 length; an array its u32 type and u64 count.)
uint64_t min_value_bytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::UInt8:
    case GgufValueType::Int8:
    case GgufValueType::Bool: return 1;
    case GgufValueType::UInt16:
    case GgufValueType::Int16: return 2;
    case GgufValueType::UInt32:
    case GgufValueType::Int32:
    case GgufValueType::Float32: return 4;
    case GgufValueType::UInt64:
    case GgufValueType::Int64:
    case GgufValueType::Float64: return 8;
    case GgufValueType::String: return 8;
    case GgufValueType::Array: return 12;
  }
  return 1;
}

std::string type_description(const GgufValue& v) {
  if (v.type == GgufValueType::Array) {
    return fmt::format("array of {}", value_type_name(static_cast<uint32_t>(v.element_type)));
  }
  return std::string(value_type_name(static_cast<uint32_t>(v.type)));
}

// Integer value of a scalar of any integer type; nullopt if it does not fit int64.
std::optional<int64_t> as_int64(const GgufValue& v) {
  if (const auto* u = std::get_if<uint64_t>(&v.value)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&v.value)) return *i;
  return std::nullopt;
}

double as_double(const GgufValue& v) {
  if (const auto* d = std::get_if<double>(&v.value)) return *d;
  if (const auto* u = std::get_if<uint64_t>(&v.value)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&v.value)) return static_cast<double>(*i);
  return 0.0;
}

}  // namespace

// Reads the header, metadata and tensor infos of one file into a GgufFile. Holds a cursor into
// the map; every read checks the bytes that remain first.
class GgufParser {
 public:
  explicit GgufParser(std::shared_ptr<MappedFile> file)
      : file_(std::move(file)), data_(file_->data()), size_(file_->size()) {}

  Result<GgufFile> parse() {
    GgufFile out;
    out.file_ = file_;

    uint32_t magic = 0;
    if (size_ < 4) {
      return make_error("{}: not a GGUF file: {} bytes, too short for the magic 'GGUF'", path(),
                        size_);
    }
    std::memcpy(&magic, data_, 4);
    if (magic != kGgufMagic) {
      return make_error("{}: not a GGUF file: magic is {}, expected 'GGUF' (47 47 55 46)", path(),
                        printable_magic());
    }
    pos_ = 4;
    SPUTNIK_ASSIGN_OR_RETURN(out.version_, read_u32("version"));
    if (out.version_ == 1) {
      return make_error(
          "{}: GGUF version 1 is not supported (expected 2 or 3); hint: convert the "
          "file again with a recent llama.cpp",
          path());
    }
    if (out.version_ != 2 && out.version_ != 3) {
      return make_error("{}: unsupported GGUF version {} (expected 2 or 3){}", path(), out.version_,
                        (out.version_ & 0xffff) == 0 ? "; the file may be big-endian, which "
                                                       "sputnik does not read"
                                                     : "");
    }
    SPUTNIK_ASSIGN_OR_RETURN(const uint64_t tensor_count, read_u64("tensor count"));
    SPUTNIK_ASSIGN_OR_RETURN(const uint64_t kv_count, read_u64("metadata count"));

    // A key-value pair takes at least 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes.
    if (kv_count > remaining() / 14) {
      return make_error("{}: metadata count {} cannot fit in the {} bytes that remain of the file",
                        path(), kv_count, remaining());
    }
    for (uint64_t i = 0; i < kv_count; ++i) {
      SPUTNIK_ASSIGN_OR_RETURN(std::string key, read_string(fmt::format("metadata key #{}", i)));
      if (key.empty()) return make_error("{}: metadata key #{} is empty", path(), i);
      if (key.size() > kMaxKeyLength) {
        return make_error("{}: metadata key #{} is {} bytes long (at most {})", path(), i,
                          key.size(), kMaxKeyLength);
      }
      if (out.metadata_.count(key)) {
        return make_error("{}: metadata key '{}' appears twice", path(), key);
      }
      SPUTNIK_ASSIGN_OR_RETURN(const uint32_t type, read_u32(fmt::format("type of '{}'", key)));
      SPUTNIK_ASSIGN_OR_RETURN(GgufValue value, read_value(key, type, 0));
      out.metadata_.emplace(std::move(key), std::move(value));
    }

    uint64_t alignment = kDefaultAlignment;
    if (auto it = out.metadata_.find("general.alignment"); it != out.metadata_.end()) {
      const std::optional<int64_t> a =
          is_integer(it->second.type) ? as_int64(it->second) : std::nullopt;
      if (!a) {
        return make_error(
            "{}: metadata key 'general.alignment': expected an unsigned integer, "
            "got {}",
            path(), type_description(it->second));
      }
      if (*a <= 0 || (*a & (*a - 1)) != 0 || *a > (1 << 30)) {
        return make_error(
            "{}: metadata key 'general.alignment': {} is not a power of two in "
            "[1, 2^30]",
            path(), *a);
      }
      alignment = static_cast<uint64_t>(*a);
    }

    // A tensor info takes at least 8 (name length) + 1 + 4 (n_dims) + 8 (one ne) + 4 + 8 bytes.
    if (tensor_count > remaining() / 33) {
      return make_error("{}: tensor count {} cannot fit in the {} bytes that remain of the file",
                        path(), tensor_count, remaining());
    }
    out.tensors_.reserve(static_cast<size_t>(tensor_count));
    for (uint64_t i = 0; i < tensor_count; ++i) {
      SPUTNIK_ASSIGN_OR_RETURN(GgufTensorInfo info, read_tensor_info(i, alignment));
      if (out.tensor_index_.count(info.name)) {
        return make_error("{}: tensor '{}' appears twice", path(), info.name);
      }
      out.tensor_index_.emplace(info.name, out.tensors_.size());
      out.tensors_.push_back(std::move(info));
    }

    // The data section starts at the next multiple of the alignment after the tensor infos.
    const uint64_t padding = (alignment - pos_ % alignment) % alignment;
    if (padding > remaining() && tensor_count > 0) {
      return make_error(
          "{}: truncated: file ends at {} inside the padding before the tensor "
          "data (which starts at {})",
          path(), size_, pos_ + padding);
    }
    const uint64_t data_start = pos_ + padding;
    out.alignment_ = alignment;
    out.data_offset_ = data_start;
    const uint64_t data_size = data_start <= size_ ? size_ - data_start : 0;
    for (GgufTensorInfo& info : out.tensors_) {
      const uint64_t bytes = info.view.bytes();
      if (info.offset > data_size || bytes > data_size - info.offset) {
        return make_error(
            "{}: tensor '{}': data [offset {}, {} bytes] runs past end of file "
            "(data section {} bytes from {}, file size {})",
            path(), info.name, info.offset, bytes, data_size, data_start, size_);
      }
      info.view.data = data_ + data_start + info.offset;
    }
    return out;
  }

 private:
  const std::string& path() const { return file_->path(); }
  uint64_t remaining() const { return size_ - pos_; }

  std::string printable_magic() const {
    std::string s;
    for (int i = 0; i < 4; ++i) s += fmt::format("{}{:02x}", i ? " " : "", data_[i]);
    return s;
  }

  Error truncated(const std::string& what, uint64_t need) const {
    return make_error(
        "{}: truncated: reading {} needs {} bytes at offset {}, but the file is {} "
        "bytes",
        path(), what, need, pos_, size_);
  }

  template <typename T>
  Result<T> read_pod(const std::string& what) {
    if (remaining() < sizeof(T)) return truncated(what, sizeof(T));
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  Result<uint32_t> read_u32(const std::string& what) { return read_pod<uint32_t>(what); }
  Result<uint64_t> read_u64(const std::string& what) { return read_pod<uint64_t>(what); }

  Result<std::string> read_string(const std::string& what) {
    SPUTNIK_ASSIGN_OR_RETURN(const uint64_t length, read_u64(what + " (length)"));
    if (length > remaining()) {
      return make_error("{}: {}: string of {} bytes at offset {} runs past end of file (size {})",
                        path(), what, length, pos_, size_);
    }
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(length));
    pos_ += length;
    return s;
  }

  Result<GgufValue> read_value(const std::string& key, uint32_t type, int depth) {
    GgufValue v;
    v.type = static_cast<GgufValueType>(type);
    switch (v.type) {
      case GgufValueType::UInt8: {
        SPUTNIK_ASSIGN_OR_RETURN(const uint8_t x, read_pod<uint8_t>(key));
        v.value = uint64_t{x};
        return v;
      }
      case GgufValueType::Int8: {
        SPUTNIK_ASSIGN_OR_RETURN(const int8_t x, read_pod<int8_t>(key));
        v.value = int64_t{x};
        return v;
      }
      case GgufValueType::UInt16: {
        SPUTNIK_ASSIGN_OR_RETURN(const uint16_t x, read_pod<uint16_t>(key));
        v.value = uint64_t{x};
        return v;
      }
      case GgufValueType::Int16: {
        SPUTNIK_ASSIGN_OR_RETURN(const int16_t x, read_pod<int16_t>(key));
        v.value = int64_t{x};
        return v;
      }
      case GgufValueType::UInt32: {
        SPUTNIK_ASSIGN_OR_RETURN(const uint32_t x, read_pod<uint32_t>(key));
        v.value = uint64_t{x};
        return v;
      }
      case GgufValueType::Int32: {
        SPUTNIK_ASSIGN_OR_RETURN(const int32_t x, read_pod<int32_t>(key));
        v.value = int64_t{x};
        return v;
      }
      case GgufValueType::UInt64: {
        SPUTNIK_ASSIGN_OR_RETURN(const uint64_t x, read_pod<uint64_t>(key));
        v.value = x;
        return v;
      }
      case GgufValueType::Int64: {
        SPUTNIK_ASSIGN_OR_RETURN(const int64_t x, read_pod<int64_t>(key));
        v.value = x;
        return v;
      }
      case GgufValueType::Float32: {
        SPUTNIK_ASSIGN_OR_RETURN(const float x, read_pod<float>(key));
        v.value = static_cast<double>(x);
        return v;
      }
      case GgufValueType::Float64: {
        SPUTNIK_ASSIGN_OR_RETURN(const double x, read_pod<double>(key));
        v.value = x;
        return v;
      }
      case GgufValueType::Bool: {
        const uint64_t at = pos_;
        SPUTNIK_ASSIGN_OR_RETURN(const uint8_t x, read_pod<uint8_t>(key));
        if (x > 1) {
          return make_error("{}: metadata key '{}': bool at offset {} is {}, expected 0 or 1",
                            path(), key, at, x);
        }
        v.value = x != 0;
        return v;
      }
      case GgufValueType::String: {
        SPUTNIK_ASSIGN_OR_RETURN(std::string s, read_string(fmt::format("metadata key '{}'", key)));
        v.value = std::move(s);
        return v;
      }
      case GgufValueType::Array: {
        if (depth >= kMaxArrayDepth) {
          return make_error("{}: metadata key '{}': arrays nested deeper than {} levels", path(),
                            key, kMaxArrayDepth);
        }
        SPUTNIK_ASSIGN_OR_RETURN(const uint32_t element_type,
                                 read_u32(fmt::format("element type of '{}'", key)));
        if (element_type > static_cast<uint32_t>(GgufValueType::Float64)) {
          return make_error("{}: metadata key '{}': unknown array element type {} (expected 0..12)",
                            path(), key, element_type);
        }
        v.element_type = static_cast<GgufValueType>(element_type);
        SPUTNIK_ASSIGN_OR_RETURN(const uint64_t count,
                                 read_u64(fmt::format("length of array '{}'", key)));
        const uint64_t min_bytes = min_value_bytes(v.element_type);
        if (count > remaining() / min_bytes) {
          return make_error(
              "{}: metadata key '{}': array of {} {} elements at offset {} cannot fit "
              "in the {} bytes that remain of the file",
              path(), key, count, value_type_name(element_type), pos_, remaining());
        }
        auto array = std::make_shared<GgufArray>();
        array->reserve(static_cast<size_t>(count));
        for (uint64_t i = 0; i < count; ++i) {
          SPUTNIK_ASSIGN_OR_RETURN(GgufValue e, read_value(key, element_type, depth + 1));
          array->push_back(std::move(e));
        }
        v.value = std::move(array);
        return v;
      }
    }
    return make_error("{}: metadata key '{}': unknown value type {} (expected 0..12)", path(), key,
                      type);
  }

  Result<GgufTensorInfo> read_tensor_info(uint64_t index, uint64_t alignment) {
    GgufTensorInfo info;
    SPUTNIK_ASSIGN_OR_RETURN(info.name, read_string(fmt::format("name of tensor #{}", index)));
    if (info.name.empty()) return make_error("{}: tensor #{} has an empty name", path(), index);
    const std::string& name = info.name;
    SPUTNIK_ASSIGN_OR_RETURN(const uint32_t n_dims,
                             read_u32(fmt::format("n_dims of tensor '{}'", name)));
    if (n_dims < 1 || n_dims > static_cast<uint32_t>(kMaxDims)) {
      return make_error("{}: tensor '{}': n_dims is {}, expected 1..{}", path(), name, n_dims,
                        kMaxDims);
    }
    uint64_t ne[kMaxDims] = {};
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      SPUTNIK_ASSIGN_OR_RETURN(ne[d], read_u64(fmt::format("ne[{}] of tensor '{}'", d, name)));
      if (ne[d] == 0) {
        return make_error("{}: tensor '{}': ne[{}] is 0, expected > 0", path(), name, d);
      }
      // Keep numel (and so every byte count derived from it) within int64.
      if (ne[d] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / numel) {
        return make_error("{}: tensor '{}': element count overflows (ne[{}] = {})", path(), name, d,
                          ne[d]);
      }
      numel *= ne[d];
    }
    SPUTNIK_ASSIGN_OR_RETURN(info.ggml_type, read_u32(fmt::format("type of tensor '{}'", name)));
    Result<DType> dtype = dtype_from_ggml(info.ggml_type);
    if (!dtype.ok()) {
      return make_error("{}: tensor '{}': {}", path(), name, dtype.message());
    }
    SPUTNIK_ASSIGN_OR_RETURN(info.offset, read_u64(fmt::format("offset of tensor '{}'", name)));

    const DTypeTraits traits = dtype_traits(*dtype);
    if (ne[0] % static_cast<uint64_t>(traits.block_elements) != 0) {
      return make_error(
          "{}: tensor '{}': row length ne[0] = {} is not a multiple of the {} block "
          "size {}",
          path(), name, ne[0], traits.name, traits.block_elements);
    }
    // bytes = numel / block_elements * block_bytes must not overflow either.
    const uint64_t blocks = numel / static_cast<uint64_t>(traits.block_elements);
    if (blocks > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) /
                     static_cast<uint64_t>(traits.block_bytes)) {
      return make_error("{}: tensor '{}': byte size overflows ({} blocks of {} bytes)", path(),
                        name, blocks, traits.block_bytes);
    }
    if (info.offset % alignment != 0) {
      return make_error("{}: tensor '{}': offset {} is not a multiple of the alignment {}", path(),
                        name, info.offset, alignment);
    }
    info.view.dtype = *dtype;
    info.view.n_dims = static_cast<int>(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      info.view.shape[d] = static_cast<int64_t>(ne[n_dims - 1 - d]);
    }
    info.view.name = info.name;
    return info;
  }

  std::shared_ptr<MappedFile> file_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

Result<GgufFile> GgufFile::open(const std::string& path) {
  SPUTNIK_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  return GgufParser(std::move(file)).parse();
}

const std::string& GgufFile::path() const {
  static const std::string kEmpty;
  return file_ ? file_->path() : kEmpty;
}

namespace {

Error missing_key(const std::string& path, const std::string& key) {
  return make_error("{}: metadata key '{}' not found", path, key);
}
Error wrong_type(const std::string& path, const std::string& key, std::string_view expected,
                 const GgufValue& v) {
  return make_error("{}: metadata key '{}': expected {}, got {}", path, key, expected,
                    type_description(v));
}

}  // namespace

Result<std::string> GgufFile::get_string(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return missing_key(path(), key);
  if (it->second.type != GgufValueType::String)
    return wrong_type(path(), key, "string", it->second);
  return std::get<std::string>(it->second.value);
}

Result<int64_t> GgufFile::get_int(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return missing_key(path(), key);
  if (!is_integer(it->second.type)) return wrong_type(path(), key, "an integer", it->second);
  const std::optional<int64_t> v = as_int64(it->second);
  if (!v) {
    return make_error("{}: metadata key '{}': {} does not fit in int64", path(), key,
                      std::get<uint64_t>(it->second.value));
  }
  return *v;
}

Result<double> GgufFile::get_float(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return missing_key(path(), key);
  if (!is_float(it->second.type) && !is_integer(it->second.type)) {
    return wrong_type(path(), key, "a number", it->second);
  }
  return as_double(it->second);
}

Result<bool> GgufFile::get_bool(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return missing_key(path(), key);
  if (it->second.type != GgufValueType::Bool) return wrong_type(path(), key, "bool", it->second);
  return std::get<bool>(it->second.value);
}

Result<std::vector<std::string>> GgufFile::get_string_array(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return missing_key(path(), key);
  const GgufValue& v = it->second;
  if (v.type != GgufValueType::Array || v.element_type != GgufValueType::String) {
    return wrong_type(path(), key, "array of string", v);
  }
  const GgufArray& array = *std::get<std::shared_ptr<GgufArray>>(v.value);
  std::vector<std::string> out;
  out.reserve(array.size());
  for (const GgufValue& e : array) out.push_back(std::get<std::string>(e.value));
  return out;
}

Result<std::vector<int64_t>> GgufFile::get_int_array(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return missing_key(path(), key);
  const GgufValue& v = it->second;
  if (v.type != GgufValueType::Array || !is_integer(v.element_type)) {
    return wrong_type(path(), key, "array of integers", v);
  }
  const GgufArray& array = *std::get<std::shared_ptr<GgufArray>>(v.value);
  std::vector<int64_t> out;
  out.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i) {
    const std::optional<int64_t> x = as_int64(array[i]);
    if (!x) {
      return make_error("{}: metadata key '{}': element {} ({}) does not fit in int64", path(), key,
                        i, std::get<uint64_t>(array[i].value));
    }
    out.push_back(*x);
  }
  return out;
}

Result<std::vector<double>> GgufFile::get_float_array(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return missing_key(path(), key);
  const GgufValue& v = it->second;
  if (v.type != GgufValueType::Array ||
      (!is_float(v.element_type) && !is_integer(v.element_type))) {
    return wrong_type(path(), key, "array of numbers", v);
  }
  const GgufArray& array = *std::get<std::shared_ptr<GgufArray>>(v.value);
  std::vector<double> out;
  out.reserve(array.size());
  for (const GgufValue& e : array) out.push_back(as_double(e));
  return out;
}

Result<int64_t> GgufFile::get_int_or(const std::string& key, int64_t fallback) const {
  if (!has(key)) return fallback;
  return get_int(key);
}

Result<double> GgufFile::get_float_or(const std::string& key, double fallback) const {
  if (!has(key)) return fallback;
  return get_float(key);
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Result<TensorView> GgufFile::tensor(const std::string& name) const {
  const GgufTensorInfo* info = find_tensor(name);
  if (!info)
    return make_error("{}: tensor '{}' not found ({} tensors in file)", path(), name,
                      tensors_.size());
  return info->view;
}

Result<DType> dtype_from_ggml(uint32_t ggml_type) {
  switch (ggml_type) {
    case 0: return DType::F32;
    case 1: return DType::F16;
    case 2: return DType::Q4_0;
    case 3: return DType::Q4_1;
    case 6: return DType::Q5_0;
    case 7: return DType::Q5_1;
    case 8: return DType::Q8_0;
    case 12: return DType::Q4_K;
    case 13: return DType::Q5_K;
    case 14: return DType::Q6_K;
    case 15: return DType::Q8_K;
    case 24: return DType::I8;
    case 26: return DType::I32;
    case 27: return DType::I64;
    case 30: return DType::BF16;
    default: break;
  }
  std::string_view known;
  switch (ggml_type) {
    case 4:
    case 5: known = " (Q4_2/Q4_3, removed from ggml)"; break;
    case 9: known = " (Q8_1)"; break;
    case 10: known = " (Q2_K)"; break;
    case 11: known = " (Q3_K)"; break;
    case 16:
    case 17:
    case 18:
    case 19:
    case 20:
    case 21:
    case 22:
    case 23:
    case 29: known = " (an IQ type)"; break;
    case 25: known = " (I16)"; break;
    case 28: known = " (F64)"; break;
    default: break;
  }
  return make_error(
      "unsupported ggml type {}{}; sputnik reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, "
      "Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q8_K, I8, I32, I64",
      ggml_type, known);
}

uint32_t ggml_from_dtype(DType dtype) {
  switch (dtype) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q4_1: return 3;
    case DType::Q5_0: return 6;
    case DType::Q5_1: return 7;
    case DType::Q8_0: return 8;
    case DType::Q4_K: return 12;
    case DType::Q5_K: return 13;
    case DType::Q6_K: return 14;
    case DType::Q8_K: return 15;
    case DType::I8: return 24;
    case DType::I32: return 26;
    case DType::I64: return 27;
    case DType::BF16: return 30;
    case DType::F8_E4M3:
    case DType::Q8_0x16:  // repacked in memory only (kernels.h repack_weight)
    case DType::Q4_0x16:
    case DType::Q4_Kx16:
    case DType::Q5_0x16:
    case DType::Q4_1x16:
    case DType::Count: break;
  }
  return kGgmlTypeNone;
}

}  // namespace sputnik
