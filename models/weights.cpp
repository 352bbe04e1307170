#include "models/weights.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

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

void WeightSource::FreeBuffer::operator()(uint8_t* p) const { std::free(p); }

namespace {

bool repack_enabled() {
  const char* env = std::getenv("SPUTNIK_REPACK");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

// Drops the pages wholly inside [data, data + bytes) from this process (file-backed, read-only
// map: they are read back from the file if ever touched again).
void release_mapped_pages(const void* data, size_t bytes) {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const auto end = (reinterpret_cast<uintptr_t>(data) + bytes) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

// Transparent huge pages (x86-64: 2 MiB) for a repacked matrix. Decode streams every weight byte
// once per token: on 4 KiB pages that is a TLB miss and page walk every 4 KiB (250,000 per GB), and
// the hardware prefetcher stops at each 4 KiB boundary. Matrices of at least one huge page start on
// a huge-page boundary and ask for huge pages over their whole 2 MiB spans (the tail stays on small
// pages, so resident memory does not grow); smaller ones are allocated as before.
constexpr size_t kHugePageBytes = size_t{2} << 20;

uint8_t* allocate_weight_buffer(size_t bytes) {
  const size_t alignment = bytes >= kHugePageBytes ? kHugePageBytes : 64;
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(alignment, (bytes + 63) / 64 * 64));
  if (p != nullptr && alignment == kHugePageBytes) {
    ::madvise(p, bytes / kHugePageBytes * kHugePageBytes, MADV_HUGEPAGE);  // a hint: failure is harmless
  }
  return p;
}

}  // namespace

Result<TensorView> WeightSource::get_matrix(const std::string& name,
                                            std::initializer_list<int64_t> shape) const {
  SPUTNIK_ASSIGN_OR_RETURN(TensorView view, get(name, shape));
  const DType to = preferred_weight_type(view.dtype);
  const int64_t matrix_rows = view.n_dims >= 2 ? view.shape[view.n_dims - 2] : 0;
  if (to == view.dtype || !gguf_ || !repack_enabled() || matrix_rows % dtype_row_group(to) != 0 ||
      view.cols() % dtype_traits(view.dtype).block_elements != 0) {
    return view;
  }
  std::lock_guard<std::mutex> lock(repacked_mutex_);
  if (auto it = repacked_.find(name); it != repacked_.end()) return it->second.first;
  const size_t bytes = static_cast<size_t>(view.rows()) * dtype_row_bytes(to, view.cols());
  std::unique_ptr<uint8_t, FreeBuffer> buffer(allocate_weight_buffer(bytes));
  if (!buffer) return make_error("{}: out of memory repacking tensor '{}' ({} bytes)", path_, name, bytes);
  ThreadPool pool(hardware_threads());
  const TensorView repacked = repack_weight(view, to, buffer.get(), pool);
  release_mapped_pages(view.data, view.bytes());
  repacked_.emplace(name, std::make_pair(repacked, std::move(buffer)));
  return repacked;
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
