#include "models/weights.h"

#include <sys/stat.h>

#include "kernels/kernels.h"

namespace sputnik {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string shape_text(std::initializer_list<int64_t> shape) {
  std::string s = "[";
  bool first = true;
  for (int64_t d : shape) {
    s += (first ? "" : ", ") + std::to_string(d);
    first = false;
  }
  return s + "]";
}

}  // namespace

Result<std::shared_ptr<WeightSource>> WeightSource::open(const std::string& path) {
  auto source = std::make_shared<WeightSource>();
  source->path_ = path;
  struct stat st {};
  const bool is_dir = ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  if (!is_dir && ends_with(path, ".gguf")) {
    SPUTNIK_ASSIGN_OR_RETURN(GgufFile file, GgufFile::open(path));
    source->gguf_ = std::make_unique<GgufFile>(std::move(file));
  } else {
    SPUTNIK_ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::open(path));
    source->safetensors_ = std::make_unique<SafetensorsCheckpoint>(std::move(ckpt));
  }
  return source;
}

bool WeightSource::has(const std::string& name) const {
  return gguf_ ? gguf_->find_tensor(name) != nullptr : safetensors_->has(name);
}

Result<TensorView> WeightSource::get(const std::string& name,
                                     std::initializer_list<int64_t> shape) const {
  SPUTNIK_ASSIGN_OR_RETURN(TensorView view, gguf_ ? gguf_->tensor(name) : safetensors_->tensor(name));
  bool match = view.n_dims == static_cast<int>(shape.size());
  int i = 0;
  for (int64_t d : shape) match = match && view.shape[i++] == d;
  if (!match) {
    return make_error("{}: tensor '{}' has shape {}, expected {}", path_, name, view.shape_string(),
                      shape_text(shape));
  }
  return view;
}

Result<std::vector<float>> WeightSource::get_f32(const std::string& name,
                                                 std::initializer_list<int64_t> shape) const {
  SPUTNIK_ASSIGN_OR_RETURN(TensorView view, get(name, shape));
  std::vector<float> out(static_cast<size_t>(view.numel()));
  for (int64_t r = 0; r < view.rows(); ++r) dequantize_weight_row(view, r, out.data() + r * view.cols());
  return out;
}

size_t WeightSource::total_bytes() const {
  size_t total = 0;
  if (gguf_) {
    for (const auto& t : gguf_->tensors()) total += t.view.bytes();
  } else {
    for (const auto& name : safetensors_->tensor_names()) {
      auto view = safetensors_->tensor(name);
      if (view.ok()) total += view->bytes();
    }
  }
  return total;
}

}  // namespace sputnik
