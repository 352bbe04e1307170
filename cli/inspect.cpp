// sputnik inspect: metadata, tensors and KV-cache size of a checkpoint.
#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "cli/cli.h"
#include "models/weights.h"

namespace sputnik::cli {

namespace {

constexpr size_t kMaxArrayItems = 8;
constexpr size_t kMaxStringChars = 96;

std::string value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::UInt8: return "u8";
    case GgufValueType::Int8: return "i8";
    case GgufValueType::UInt16: return "u16";
    case GgufValueType::Int16: return "i16";
    case GgufValueType::UInt32: return "u32";
    case GgufValueType::Int32: return "i32";
    case GgufValueType::Float32: return "f32";
    case GgufValueType::Bool: return "bool";
    case GgufValueType::String: return "str";
    case GgufValueType::Array: return "arr";
    case GgufValueType::UInt64: return "u64";
    case GgufValueType::Int64: return "i64";
    case GgufValueType::Float64: return "f64";
  }
  return "?";
}

// A string on one line: newlines escaped, long ones cut with their length shown.
std::string short_string(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += c;
    }
    if (out.size() >= kMaxStringChars) {
      // Do not cut a UTF-8 character in half.
      while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) out.pop_back();
      if (!out.empty() && (static_cast<unsigned char>(out.back()) & 0x80)) out.pop_back();
      return fmt::format("\"{}...\" ({} bytes)", out, s.size());
    }
  }
  return fmt::format("\"{}\"", out);
}

std::string format_value(const GgufValue& v) {
  return std::visit(
      [&](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return short_string(x);
        } else if constexpr (std::is_same_v<T, std::shared_ptr<GgufArray>>) {
          std::string out = fmt::format("[{} x {}] [", x ? x->size() : 0,
                                        value_type_name(v.element_type));
          const size_t n = x ? std::min(x->size(), kMaxArrayItems) : 0;
          for (size_t i = 0; i < n; ++i) out += (i ? ", " : "") + format_value((*x)[i]);
          if (x && x->size() > n) out += ", ...";
          return out + "]";
        } else if constexpr (std::is_same_v<T, bool>) {
          return x ? "true" : "false";
        } else {
          return fmt::format("{}", x);
        }
      },
      v.value);
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.2f} {}", bytes, units[u]);
}

struct InspectOptions {
  std::string path;
  bool no_tensors = false;
  int64_t ctx = 4096;
};

int run_inspect(const InspectOptions& o) {
  auto source = WeightSource::open(o.path);
  if (!source) return fail("inspect", source.message());
  struct Row {
    std::string name, type, shape;
    size_t bytes;
  };
  std::vector<Row> rows;
  if (const GgufFile* g = (*source)->gguf()) {
    fmt::print("file: {}\nformat: GGUF v{}, {} metadata keys, {} tensors\n\nmetadata:\n", o.path,
               g->version(), g->metadata().size(), g->tensors().size());
    for (const auto& [key, value] : g->metadata()) {
      fmt::print("  {:<44} {:<4} {}\n", key, value_type_name(value.type), format_value(value));
    }
    for (const GgufTensorInfo& t : g->tensors()) {
      rows.push_back({t.name, std::string(dtype_name(t.view.dtype)), t.view.shape_string(),
                      t.view.bytes()});
    }
  } else {
    const SafetensorsCheckpoint& st = *(*source)->safetensors();
    fmt::print("checkpoint: {}\nformat: safetensors\n\nconfig.json:\n", st.directory());
    for (const auto& [key, value] : st.config().items()) {
      std::string text = value.dump();
      if (text.size() > kMaxStringChars) text = text.substr(0, kMaxStringChars) + "...";
      fmt::print("  {:<44} {}\n", key, text);
    }
    for (const std::string& name : st.tensor_names()) {
      auto t = st.tensor(name);
      if (!t) {
        rows.push_back({name, "unsupported", t.message(), 0});
        continue;
      }
      rows.push_back({name, std::string(dtype_name(t->dtype)), t->shape_string(), t->bytes()});
    }
  }

  size_t total = 0;
  std::map<std::string, size_t> bytes_by_type;
  for (const Row& r : rows) {
    total += r.bytes;
    bytes_by_type[r.type] += r.bytes;
  }
  if (!o.no_tensors) {
    fmt::print("\ntensors:\n");
    for (const Row& r : rows) {
      fmt::print("  {:<48} {:<8} {:<22} {:>12}\n", r.name, r.type, r.shape, human_bytes(r.bytes));
    }
  }
  fmt::print("\n{} tensors, {}", rows.size(), human_bytes(total));
  for (const auto& [type, bytes] : bytes_by_type) fmt::print(" | {} {}", type, human_bytes(bytes));
  fmt::print("\n");

  // The KV-cache size needs the architecture's view of the config: load the model.
  LoadOptions lo;
  lo.n_threads = 1;
  lo.n_ctx = 16;
  auto loaded = load_model(o.path, lo);
  if (!loaded) return fail("inspect", loaded.message());
  const ModelInfo& info = loaded->model->info();
  fmt::print("\nmodel: {} ({}), {} layers, hidden {}, vocab {}, trained context {}\n",
             info.name, info.architecture, info.n_layers, info.hidden_size, info.vocab_size,
             info.n_ctx_train);
  fmt::print("weights: {} in the file, {} read per generated token\n",
             human_bytes(static_cast<double>(info.weight_bytes)),
             human_bytes(static_cast<double>(info.active_weight_bytes_per_token)));
  fmt::print("KV cache: {} bytes per token ({} at a context of {})\n",
             info.kv_cache_bytes_per_token,
             human_bytes(static_cast<double>(info.kv_cache_bytes_per_token) * o.ctx), o.ctx);
  return 0;
}

}  // namespace

Command register_inspect(CLI::App& app) {
  auto* sub = app.add_subcommand("inspect", "list a checkpoint's metadata, tensors and KV-cache size");
  auto o = std::make_shared<InspectOptions>();
  sub->add_option("model", o->path, "GGUF file or safetensors checkpoint directory")->required();
  sub->add_flag("--no-tensors", o->no_tensors, "leave out the tensor list");
  sub->add_option("-c,--ctx", o->ctx, "context size for the KV-cache total")->capture_default_str();
  return {sub, [o] { return run_inspect(*o); }};
}

}  // namespace sputnik::cli
