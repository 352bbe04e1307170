// Safetensors reader. A file is: u64 little-endian header length N | N bytes of JSON |
// data area. The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets relative to the data area) plus an optional "__metadata__" of strings. A sharded
// checkpoint adds model.safetensors.index.json, whose "weight_map" names each tensor's shard.
// Spec: huggingface/safetensors README. Every offset and size is checked against the file.
#include "formats/safetensors.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

namespace sputnik {

namespace {

namespace fs = std::filesystem;

// The safetensors crate refuses headers above 100 MB; so do we (a corrupt length must not make
// us parse gigabytes).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr int64_t kScaleBlock = 128;  // DeepSeek-V3 FP8: one fp32 scale per 128x128 block

struct DtypeInfo {
  std::optional<DType> dtype;  // nullopt: known to safetensors, not read by sputnik
  uint64_t size;               // bytes per element
};

std::optional<DtypeInfo> lookup_dtype(const std::string& name) {
  if (name == "F32") return DtypeInfo{DType::F32, 4};
  if (name == "F16") return DtypeInfo{DType::F16, 2};
  if (name == "BF16") return DtypeInfo{DType::BF16, 2};
  if (name == "F8_E4M3") return DtypeInfo{DType::F8_E4M3, 1};
  if (name == "I8") return DtypeInfo{DType::I8, 1};
  if (name == "I32") return DtypeInfo{DType::I32, 4};
  if (name == "I64") return DtypeInfo{DType::I64, 8};
  if (name == "BOOL" || name == "U8" || name == "F8_E5M2" || name == "F8_E8M0") {
    return DtypeInfo{std::nullopt, 1};
  }
  if (name == "I16" || name == "U16") return DtypeInfo{std::nullopt, 2};
  if (name == "U32") return DtypeInfo{std::nullopt, 4};
  if (name == "F64" || name == "U64") return DtypeInfo{std::nullopt, 8};
  return std::nullopt;
}

// "line L, column C" of a 1-based byte position in `text`.
std::string line_column(std::string_view text, uint64_t byte) {
  uint64_t line = 1, column = 1;
  const uint64_t end = std::min<uint64_t>(byte > 0 ? byte - 1 : 0, text.size());
  for (uint64_t i = 0; i < end; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return fmt::format("line {}, column {}", line, column);
}

// Parses JSON text; the error names `label` and the 0-based file offset of the error (`base` is
// the text's position in its file), plus line and column within the text.
Result<nlohmann::json> parse_json(std::string_view text, const std::string& label, uint64_t base) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    return make_error("{}: JSON syntax error at byte {} ({}): {}", label,
                      base + (e.byte > 0 ? e.byte - 1 : 0), line_column(text, e.byte), e.what());
  } catch (const std::exception& e) {
    return make_error("{}: cannot parse JSON: {}", label, e.what());
  }
}

std::string shape_string(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += fmt::format("{}{}", i ? ", " : "", shape[i]);
  return s + "]";
}

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

}  // namespace

// Fills a SafetensorsCheckpoint from files; keeps the maps alive in files_.
class SafetensorsLoader {
 public:
  explicit SafetensorsLoader(SafetensorsCheckpoint& out) : out_(out) {}

  // Parses one .safetensors file's header and adds its tensors.
  Status add_file(const std::string& path) {
    SPUTNIK_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
    out_.files_.push_back(file);
    const uint64_t size = file->size();
    const uint8_t* data = file->data();
    if (size < 8) {
      return make_error("{}: truncated: {} bytes, too short for the 8-byte header length", path,
                        size);
    }
    uint64_t header_len = 0;
    std::memcpy(&header_len, data, 8);
    if (header_len > size - 8) {
      return make_error(
          "{}: header length {} runs past end of file (size {}, so at most {}); the "
          "file is truncated or not safetensors",
          path, header_len, size, size - 8);
    }
    if (header_len > kMaxHeaderBytes) {
      return make_error("{}: header length {} exceeds the {} byte limit", path, header_len,
                        kMaxHeaderBytes);
    }
    const std::string_view text(reinterpret_cast<const char*>(data + 8),
                                static_cast<size_t>(header_len));
    SPUTNIK_ASSIGN_OR_RETURN(nlohmann::json header, parse_json(text, path + ": header", 8));
    if (!header.is_object()) {
      return make_error("{}: header is a JSON {}, expected an object", path, header.type_name());
    }
    const uint64_t data_start = 8 + header_len;
    const uint64_t data_size = size - data_start;
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") continue;  // free-form strings (format, ...): not needed
      SPUTNIK_CHECK_OK(add_tensor(path, name, entry, data + data_start, data_size));
    }
    return ok_status();
  }

  // Attaches `<name>_scale_inv` to each F8_E4M3 weight, checking its dtype and shape.
  Status attach_scales() {
    for (auto& [name, view] : out_.tensors_) {
      if (view.dtype != DType::F8_E4M3) continue;
      const std::string scale_name = name + "_scale_inv";
      if (auto it = out_.unsupported_.find(scale_name); it != out_.unsupported_.end()) {
        return make_error("{} (the block scales of '{}')", it->second, name);
      }
      auto it = out_.tensors_.find(scale_name);
      if (it == out_.tensors_.end()) continue;
      const TensorView& scale = it->second;
      const std::string& where = source_.at(scale_name);
      if (scale.dtype != DType::F32) {
        return make_error("{}: tensor '{}': dtype {}, expected F32 for the block scales of '{}'",
                          where, scale_name, dtype_name(scale.dtype), name);
      }
      const int64_t rows = (view.rows() + kScaleBlock - 1) / kScaleBlock;
      const int64_t cols = (view.cols() + kScaleBlock - 1) / kScaleBlock;
      if (scale.n_dims != 2 || scale.shape[0] != rows || scale.shape[1] != cols) {
        return make_error(
            "{}: tensor '{}': shape {}, expected [{}, {}] (= ceil({} rows / 128), "
            "ceil({} cols / 128)) for the block scales of '{}' {}",
            where, scale_name, scale.shape_string(), rows, cols, view.rows(), view.cols(), name,
            view.shape_string());
      }
      view.scale = static_cast<const float*>(scale.data);
      view.scale_block = static_cast<int>(kScaleBlock);
    }
    return ok_status();
  }

  const std::map<std::string, std::string>& source() const { return source_; }

 private:
  Status add_tensor(const std::string& path, const std::string& name, const nlohmann::json& entry,
                    const uint8_t* data, uint64_t data_size) {
    if (out_.tensors_.count(name) || out_.unsupported_.count(name)) {
      return make_error("{}: tensor '{}' also appears in {}", path, name, source_.at(name));
    }
    if (!entry.is_object()) {
      return make_error("{}: tensor '{}': header entry is a JSON {}, expected an object", path,
                        name, entry.type_name());
    }
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) {
      return make_error("{}: tensor '{}': missing or non-string \"dtype\"", path, name);
    }
    if (shape_it == entry.end() || !shape_it->is_array()) {
      return make_error("{}: tensor '{}': missing or non-array \"shape\"", path, name);
    }
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
      return make_error(
          "{}: tensor '{}': \"data_offsets\" must be [begin, end] with two "
          "non-negative integers",
          path, name);
    }
    const std::string dtype_str = dtype_it->get<std::string>();
    const std::optional<DtypeInfo> dtype = lookup_dtype(dtype_str);
    if (!dtype) {
      return make_error("{}: tensor '{}': unknown dtype '{}'", path, name, dtype_str);
    }
    std::vector<uint64_t> shape;
    uint64_t numel = 1;
    for (const nlohmann::json& d : *shape_it) {
      if (!d.is_number_unsigned()) {
        return make_error("{}: tensor '{}': shape entry {} is not a non-negative integer", path,
                          name, d.dump());
      }
      const uint64_t n = d.get<uint64_t>();
      if (n != 0 && numel > std::numeric_limits<uint64_t>::max() / dtype->size / n) {
        return make_error("{}: tensor '{}': element count of shape {} overflows", path, name,
                          shape_it->dump());
      }
      numel *= n;
      shape.push_back(n);
    }
    const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
    const uint64_t end = (*offsets_it)[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return make_error(
          "{}: tensor '{}': data_offsets [{}, {}] out of range: the data area "
          "holds {} bytes",
          path, name, begin, end, data_size);
    }
    const uint64_t bytes = numel * dtype->size;
    if (end - begin != bytes) {
      return make_error(
          "{}: tensor '{}': data_offsets [{}, {}] hold {} bytes, expected {} for {} "
          "of shape {}",
          path, name, begin, end, end - begin, bytes, dtype_str, shape_string(shape));
    }
    source_[name] = path;
    // Valid layout; now what sputnik itself can hold.
    if (!dtype->dtype) {
      out_.unsupported_[name] = fmt::format(
          "{}: tensor '{}': dtype {} is not supported (sputnik "
          "reads F32, F16, BF16, F8_E4M3, I8, I32, I64)",
          path, name, dtype_str);
      return ok_status();
    }
    if (shape.size() > static_cast<size_t>(kMaxDims)) {
      out_.unsupported_[name] = fmt::format(
          "{}: tensor '{}': {} dimensions {}, sputnik reads at "
          "most {}",
          path, name, shape.size(), shape_string(shape), kMaxDims);
      return ok_status();
    }
    if (numel == 0 || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      out_.unsupported_[name] = fmt::format(
          "{}: tensor '{}': shape {} is empty, which sputnik "
          "does not read",
          path, name, shape_string(shape));
      return ok_status();
    }
    TensorView view;
    view.dtype = *dtype->dtype;
    view.n_dims = static_cast<int>(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) view.shape[i] = static_cast<int64_t>(shape[i]);
    view.data = data + begin;
    view.name = name;
    out_.tensors_.emplace(name, std::move(view));
    return ok_status();
  }

  SafetensorsCheckpoint& out_;
  std::map<std::string, std::string> source_;  // tensor name -> file it came from
};

namespace {

// Reads a sharded checkpoint's index: shard file name -> the tensors it should hold.
Result<std::map<std::string, std::vector<std::string>>> read_index(const std::string& index_path) {
  SPUTNIK_ASSIGN_OR_RETURN(nlohmann::json index, read_json_file(index_path));
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return make_error("{}: expected an object with a \"weight_map\" object", index_path);
  }
  std::map<std::string, std::vector<std::string>> shards;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) {
      return make_error("{}: weight_map entry for '{}' is a JSON {}, expected a file name",
                        index_path, name, shard.type_name());
    }
    const std::string file = shard.get<std::string>();
    const fs::path p(file);
    bool escapes = file.empty() || p.is_absolute();
    for (const fs::path& part : p) escapes = escapes || part == "..";
    if (escapes) {
      return make_error(
          "{}: weight_map entry for '{}': shard '{}' must be a relative path "
          "inside the checkpoint directory",
          index_path, name, file);
    }
    shards[file].push_back(name);
  }
  if (shards.empty()) return make_error("{}: weight_map is empty", index_path);
  return shards;
}

}  // namespace

Result<SafetensorsCheckpoint> SafetensorsCheckpoint::open(const std::string& path) {
  SafetensorsCheckpoint out;
  SafetensorsLoader loader(out);
  std::error_code ec;
  const fs::path p(path);
  const bool is_dir = fs::is_directory(p, ec);
  if (!is_dir && !path_exists(p)) return make_error("{}: no such file or directory", path);
  const fs::path dir = is_dir ? p : (p.has_parent_path() ? p.parent_path() : fs::path("."));
  out.directory_ = dir.string();

  // Which files: an explicit file, the index, model.safetensors, or every *.safetensors.
  std::optional<std::string> index_path;
  std::vector<std::string> files;
  if (!is_dir) {
    if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) {
      index_path = path;
    } else {
      files.push_back(path);
    }
  } else if (path_exists(dir / "model.safetensors.index.json")) {
    index_path = (dir / "model.safetensors.index.json").string();
  } else if (path_exists(dir / "model.safetensors")) {
    files.push_back((dir / "model.safetensors").string());
  } else {
    for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
      if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) {
      return make_error(
          "{}: no model.safetensors.index.json, model.safetensors or *.safetensors "
          "in this directory",
          path);
    }
  }

  if (index_path) {
    SPUTNIK_ASSIGN_OR_RETURN(auto shards, read_index(*index_path));
    for (const auto& [shard, names] : shards) {
      const std::string shard_path = (dir / shard).string();
      if (!path_exists(shard_path)) {
        return make_error(
            "{}: shard '{}' (holding '{}' and {} other tensors) is missing: {} not "
            "found",
            *index_path, shard, names.front(), names.size() - 1, shard_path);
      }
      SPUTNIK_CHECK_OK(loader.add_file(shard_path));
      for (const std::string& name : names) {
        auto it = loader.source().find(name);
        if (it == loader.source().end() || it->second != shard_path) {
          return make_error("{}: weight_map puts tensor '{}' in shard '{}', but {}", *index_path,
                            name, shard,
                            it == loader.source().end() ? std::string("no shard holds it")
                                                        : "it is in " + it->second);
        }
      }
    }
  } else {
    for (const std::string& file : files) SPUTNIK_CHECK_OK(loader.add_file(file));
  }
  SPUTNIK_CHECK_OK(loader.attach_scales());

  const fs::path config = dir / "config.json";
  if (path_exists(config)) {
    SPUTNIK_ASSIGN_OR_RETURN(out.config_, read_json_file(config.string()));
    if (!out.config_.is_object()) {
      return make_error("{}: expected a JSON object, got {}", config.string(),
                        out.config_.type_name());
    }
  }
  return out;
}

std::vector<std::string> SafetensorsCheckpoint::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) names.push_back(name);
  return names;
}

Result<TensorView> SafetensorsCheckpoint::tensor(const std::string& name) const {
  if (auto it = tensors_.find(name); it != tensors_.end()) return it->second;
  if (auto it = unsupported_.find(name); it != unsupported_.end()) return Error{it->second};
  return make_error("{}: tensor '{}' not found in the checkpoint ({} tensors)", directory_, name,
                    tensors_.size());
}

Result<nlohmann::json> read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error("{}: cannot open: {}", path, std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return make_error("{}: read failed", path);
  const std::string text = buffer.str();
  return parse_json(text, path, 0);
}

}  // namespace sputnik
