#include "formats/gguf_writer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>

namespace sputnik {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF"
constexpr uint32_t kGgufVersion = 3;
constexpr uint32_t kDefaultAlignment = 32;

uint64_t align_up(uint64_t x, uint64_t alignment) {
  return (x + alignment - 1) / alignment * alignment;
}

// The variant alternative a value of `type` must hold, and the range an integer must fit.
Status check_value(const std::string& key, const GgufValue& v, GgufValueType type, int depth) {
  auto wrong = [&](std::string_view held) {
    return make_error("metadata key '{}': value of type {} holds {}", key,
                      static_cast<uint32_t>(type), held);
  };
  switch (type) {
    case GgufValueType::UInt8:
    case GgufValueType::UInt16:
    case GgufValueType::UInt32:
    case GgufValueType::UInt64: {
      const auto* u = std::get_if<uint64_t>(&v.value);
      if (!u) return wrong("something other than uint64");
      const uint64_t max = type == GgufValueType::UInt8    ? 0xff
                           : type == GgufValueType::UInt16 ? 0xffff
                           : type == GgufValueType::UInt32 ? 0xffffffffu
                                                           : std::numeric_limits<uint64_t>::max();
      if (*u > max) return make_error("metadata key '{}': {} does not fit the value type", key, *u);
      return ok_status();
    }
    case GgufValueType::Int8:
    case GgufValueType::Int16:
    case GgufValueType::Int32:
    case GgufValueType::Int64: {
      const auto* i = std::get_if<int64_t>(&v.value);
      if (!i) return wrong("something other than int64");
      const int bits = type == GgufValueType::Int8    ? 8
                       : type == GgufValueType::Int16 ? 16
                       : type == GgufValueType::Int32 ? 32
                                                      : 64;
      if (bits < 64) {
        const int64_t lo = -(int64_t{1} << (bits - 1)), hi = (int64_t{1} << (bits - 1)) - 1;
        if (*i < lo || *i > hi) {
          return make_error("metadata key '{}': {} does not fit int{}", key, *i, bits);
        }
      }
      return ok_status();
    }
    case GgufValueType::Float32:
    case GgufValueType::Float64:
      if (!std::holds_alternative<double>(v.value)) return wrong("something other than double");
      return ok_status();
    case GgufValueType::Bool:
      if (!std::holds_alternative<bool>(v.value)) return wrong("something other than bool");
      return ok_status();
    case GgufValueType::String:
      if (!std::holds_alternative<std::string>(v.value))
        return wrong("something other than string");
      return ok_status();
    case GgufValueType::Array: {
      const auto* a = std::get_if<std::shared_ptr<GgufArray>>(&v.value);
      if (!a || !*a) return wrong("no array");
      if (depth >= 8) return make_error("metadata key '{}': arrays nested deeper than 8", key);
      if (static_cast<uint32_t>(v.element_type) > static_cast<uint32_t>(GgufValueType::Float64)) {
        return make_error("metadata key '{}': unknown element type {}", key,
                          static_cast<uint32_t>(v.element_type));
      }
      for (const GgufValue& e : **a) {
        if (e.type != v.element_type) {
          return make_error("metadata key '{}': array element of type {} in an array of type {}",
                            key, static_cast<uint32_t>(e.type),
                            static_cast<uint32_t>(v.element_type));
        }
        SPUTNIK_CHECK_OK(check_value(key, e, v.element_type, depth + 1));
      }
      return ok_status();
    }
  }
  return make_error("metadata key '{}': unknown value type {}", key, static_cast<uint32_t>(type));
}

// Appends to a byte vector.
struct VectorSink {
  std::vector<uint8_t>* out;
  Status put(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out->insert(out->end(), b, b + n);
    return ok_status();
  }
};

// Writes to a FILE; the error names the path.
struct FileSink {
  std::FILE* f;
  const std::string* path;
  Status put(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f) != n) {
      return make_error("{}: write failed: {}", *path, std::strerror(errno));
    }
    return ok_status();
  }
};

template <typename Sink, typename T>
Status put_pod(Sink& sink, T v) {
  return sink.put(&v, sizeof(T));
}

template <typename Sink>
Status put_string(Sink& sink, const std::string& s) {
  SPUTNIK_CHECK_OK(put_pod(sink, static_cast<uint64_t>(s.size())));
  return sink.put(s.data(), s.size());
}

// The value's bytes without its leading type (arrays carry their element type and count).
template <typename Sink>
Status put_payload(Sink& sink, const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::UInt8:
      return put_pod(sink, static_cast<uint8_t>(std::get<uint64_t>(v.value)));
    case GgufValueType::UInt16:
      return put_pod(sink, static_cast<uint16_t>(std::get<uint64_t>(v.value)));
    case GgufValueType::UInt32:
      return put_pod(sink, static_cast<uint32_t>(std::get<uint64_t>(v.value)));
    case GgufValueType::UInt64: return put_pod(sink, std::get<uint64_t>(v.value));
    case GgufValueType::Int8: return put_pod(sink, static_cast<int8_t>(std::get<int64_t>(v.value)));
    case GgufValueType::Int16:
      return put_pod(sink, static_cast<int16_t>(std::get<int64_t>(v.value)));
    case GgufValueType::Int32:
      return put_pod(sink, static_cast<int32_t>(std::get<int64_t>(v.value)));
    case GgufValueType::Int64: return put_pod(sink, std::get<int64_t>(v.value));
    case GgufValueType::Float32:
      return put_pod(sink, static_cast<float>(std::get<double>(v.value)));
    case GgufValueType::Float64: return put_pod(sink, std::get<double>(v.value));
    case GgufValueType::Bool: return put_pod(sink, static_cast<uint8_t>(std::get<bool>(v.value)));
    case GgufValueType::String: return put_string(sink, std::get<std::string>(v.value));
    case GgufValueType::Array: {
      const GgufArray& a = *std::get<std::shared_ptr<GgufArray>>(v.value);
      SPUTNIK_CHECK_OK(put_pod(sink, static_cast<uint32_t>(v.element_type)));
      SPUTNIK_CHECK_OK(put_pod(sink, static_cast<uint64_t>(a.size())));
      for (const GgufValue& e : a) SPUTNIK_CHECK_OK(put_payload(sink, e));
      return ok_status();
    }
  }
  return ok_status();  // unreachable: validate() checked the type
}

template <typename Sink>
Status put_zeros(Sink& sink, uint64_t n) {
  static const uint8_t kZeros[256] = {};
  while (n > 0) {
    const size_t k = n < sizeof(kZeros) ? static_cast<size_t>(n) : sizeof(kZeros);
    SPUTNIK_CHECK_OK(sink.put(kZeros, k));
    n -= k;
  }
  return ok_status();
}

GgufValue scalar(
    GgufValueType type,
    std::variant<uint64_t, int64_t, double, bool, std::string, std::shared_ptr<GgufArray>> value) {
  GgufValue v;
  v.type = type;
  v.value = std::move(value);
  return v;
}

}  // namespace

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment) {}

void GgufWriter::add(const std::string& key, GgufValue value) {
  metadata_.emplace_back(key, std::move(value));
}
void GgufWriter::add_uint8(const std::string& k, uint8_t v) {
  add(k, scalar(GgufValueType::UInt8, uint64_t{v}));
}
void GgufWriter::add_int8(const std::string& k, int8_t v) {
  add(k, scalar(GgufValueType::Int8, int64_t{v}));
}
void GgufWriter::add_uint16(const std::string& k, uint16_t v) {
  add(k, scalar(GgufValueType::UInt16, uint64_t{v}));
}
void GgufWriter::add_int16(const std::string& k, int16_t v) {
  add(k, scalar(GgufValueType::Int16, int64_t{v}));
}
void GgufWriter::add_uint32(const std::string& k, uint32_t v) {
  add(k, scalar(GgufValueType::UInt32, uint64_t{v}));
}
void GgufWriter::add_int32(const std::string& k, int32_t v) {
  add(k, scalar(GgufValueType::Int32, int64_t{v}));
}
void GgufWriter::add_uint64(const std::string& k, uint64_t v) {
  add(k, scalar(GgufValueType::UInt64, v));
}
void GgufWriter::add_int64(const std::string& k, int64_t v) {
  add(k, scalar(GgufValueType::Int64, v));
}
void GgufWriter::add_float32(const std::string& k, float v) {
  add(k, scalar(GgufValueType::Float32, double{v}));
}
void GgufWriter::add_float64(const std::string& k, double v) {
  add(k, scalar(GgufValueType::Float64, v));
}
void GgufWriter::add_bool(const std::string& k, bool v) { add(k, scalar(GgufValueType::Bool, v)); }
void GgufWriter::add_string(const std::string& k, const std::string& v) {
  add(k, scalar(GgufValueType::String, v));
}

void GgufWriter::add_string_array(const std::string& key, const std::vector<std::string>& v) {
  auto array = std::make_shared<GgufArray>();
  array->reserve(v.size());
  for (const std::string& s : v) array->push_back(scalar(GgufValueType::String, s));
  GgufValue value = scalar(GgufValueType::Array, std::move(array));
  value.element_type = GgufValueType::String;
  add(key, std::move(value));
}

void GgufWriter::add_int_array(const std::string& key, GgufValueType element_type,
                               const std::vector<int64_t>& v) {
  const bool is_unsigned =
      element_type == GgufValueType::UInt8 || element_type == GgufValueType::UInt16 ||
      element_type == GgufValueType::UInt32 || element_type == GgufValueType::UInt64;
  auto array = std::make_shared<GgufArray>();
  array->reserve(v.size());
  for (int64_t x : v) {
    // A negative value in an unsigned array becomes a huge uint64 that validate() rejects.
    array->push_back(is_unsigned ? scalar(element_type, static_cast<uint64_t>(x))
                                 : scalar(element_type, x));
  }
  GgufValue value = scalar(GgufValueType::Array, std::move(array));
  value.element_type = element_type;
  add(key, std::move(value));
}

void GgufWriter::add_float_array(const std::string& key, GgufValueType element_type,
                                 const std::vector<double>& v) {
  auto array = std::make_shared<GgufArray>();
  array->reserve(v.size());
  for (double x : v) array->push_back(scalar(element_type, x));
  GgufValue value = scalar(GgufValueType::Array, std::move(array));
  value.element_type = element_type;
  add(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                            const void* data, size_t bytes) {
  tensors_.push_back({name, dtype, shape, data, bytes, nullptr});
}

void GgufWriter::add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                            std::vector<uint8_t> bytes) {
  auto owned = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  tensors_.push_back({name, dtype, shape, owned->data(), owned->size(), owned});
}

Status GgufWriter::validate() const {
  if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0) {
    return make_error("alignment {} is not a power of two", alignment_);
  }
  std::set<std::string> keys;
  for (const auto& [key, value] : metadata_) {
    if (key.empty()) return make_error("empty metadata key");
    if (!keys.insert(key).second) return make_error("metadata key '{}' added twice", key);
    if (key == "general.alignment") {
      return make_error(
          "metadata key 'general.alignment': set the alignment through the "
          "GgufWriter constructor instead");
    }
    SPUTNIK_CHECK_OK(check_value(key, value, value.type, 0));
  }
  std::set<std::string> names;
  for (const Tensor& t : tensors_) {
    if (t.name.empty()) return make_error("tensor with an empty name");
    if (!names.insert(t.name).second) return make_error("tensor '{}' added twice", t.name);
    if (ggml_from_dtype(t.dtype) == kGgmlTypeNone) {
      return make_error("tensor '{}': dtype {} has no GGUF type", t.name, dtype_name(t.dtype));
    }
    if (t.shape.empty() || t.shape.size() > static_cast<size_t>(kMaxDims)) {
      return make_error("tensor '{}': {} dimensions, expected 1..{}", t.name, t.shape.size(),
                        kMaxDims);
    }
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d <= 0) return make_error("tensor '{}': dimension {} is not positive", t.name, d);
      if (d > std::numeric_limits<int64_t>::max() / numel) {
        return make_error("tensor '{}': element count overflows", t.name);
      }
      numel *= d;
    }
    const DTypeTraits traits = dtype_traits(t.dtype);
    if (t.shape.back() % traits.block_elements != 0) {
      return make_error("tensor '{}': last dimension {} is not a multiple of the {} block size {}",
                        t.name, t.shape.back(), traits.name, traits.block_elements);
    }
    const uint64_t expected = static_cast<uint64_t>(numel / traits.block_elements) *
                              static_cast<uint64_t>(traits.block_bytes);
    if (t.bytes != expected) {
      return make_error("tensor '{}': {} bytes supplied, expected {} for {} of shape {}", t.name,
                        t.bytes, expected, traits.name, fmt::join(t.shape, "x"));
    }
    if (t.data == nullptr && t.bytes != 0) return make_error("tensor '{}': no data", t.name);
  }
  return ok_status();
}

template <typename Sink>
Status GgufWriter::emit(Sink& sink) const {
  const bool custom_alignment = alignment_ != kDefaultAlignment;
  // The header and metadata are small; build them in memory to know where tensor data starts.
  std::vector<uint8_t> head;
  VectorSink hs{&head};
  SPUTNIK_CHECK_OK(put_pod(hs, kGgufMagic));
  SPUTNIK_CHECK_OK(put_pod(hs, kGgufVersion));
  SPUTNIK_CHECK_OK(put_pod(hs, static_cast<uint64_t>(tensors_.size())));
  SPUTNIK_CHECK_OK(
      put_pod(hs, static_cast<uint64_t>(metadata_.size() + (custom_alignment ? 1 : 0))));
  if (custom_alignment) {
    SPUTNIK_CHECK_OK(put_string(hs, std::string("general.alignment")));
    SPUTNIK_CHECK_OK(put_pod(hs, static_cast<uint32_t>(GgufValueType::UInt32)));
    SPUTNIK_CHECK_OK(put_pod(hs, alignment_));
  }
  for (const auto& [key, value] : metadata_) {
    SPUTNIK_CHECK_OK(put_string(hs, key));
    SPUTNIK_CHECK_OK(put_pod(hs, static_cast<uint32_t>(value.type)));
    SPUTNIK_CHECK_OK(put_payload(hs, value));
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    SPUTNIK_CHECK_OK(put_string(hs, t.name));
    SPUTNIK_CHECK_OK(put_pod(hs, static_cast<uint32_t>(t.shape.size())));
    for (size_t d = t.shape.size(); d-- > 0;) {  // ne[0] is the contiguous (last) dimension
      SPUTNIK_CHECK_OK(put_pod(hs, static_cast<uint64_t>(t.shape[d])));
    }
    SPUTNIK_CHECK_OK(put_pod(hs, ggml_from_dtype(t.dtype)));
    SPUTNIK_CHECK_OK(put_pod(hs, offset));
    offset = align_up(offset + t.bytes, alignment_);
  }
  SPUTNIK_CHECK_OK(put_zeros(hs, align_up(head.size(), alignment_) - head.size()));
  SPUTNIK_CHECK_OK(sink.put(head.data(), head.size()));
  for (const Tensor& t : tensors_) {
    SPUTNIK_CHECK_OK(sink.put(t.data, t.bytes));
    SPUTNIK_CHECK_OK(put_zeros(sink, align_up(t.bytes, alignment_) - t.bytes));
  }
  return ok_status();
}

Result<std::vector<uint8_t>> GgufWriter::to_bytes() const {
  SPUTNIK_CHECK_OK(validate());
  std::vector<uint8_t> out;
  VectorSink sink{&out};
  SPUTNIK_CHECK_OK(emit(sink));
  return out;
}

Status GgufWriter::write(const std::string& path) const {
  Status valid = validate();
  if (!valid.ok()) return make_error("{}: {}", path, valid.message());
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return make_error("{}: cannot create: {}", tmp, std::strerror(errno));
  FileSink sink{f, &tmp};
  Status status = emit(sink);
  if (std::fclose(f) != 0 && status.ok()) {
    status = make_error("{}: close failed: {}", tmp, std::strerror(errno));
  }
  if (status.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    status = make_error("{}: cannot rename {} to it: {}", path, tmp, std::strerror(errno));
  }
  if (!status.ok()) std::remove(tmp.c_str());
  return status;
}

}  // namespace sputnik
