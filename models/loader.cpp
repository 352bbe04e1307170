// load_model: opens the weights, reads the architecture name, and hands over to the family's
// loader through kFamilies; loads the tokenizer and the chat template from the same source.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string_view>

#include "formats/gguf.h"
#include "models/deepseek.h"
#include "models/llama.h"
#include "models/model.h"
#include "models/weights.h"
#include "tokenizer/tokenizer.h"

namespace sputnik {

namespace {

// --- Architecture table --------------------------------------------------------------------------
// One row per architecture name: GGUF general.architecture or HF config.json architectures[0].
// DeepSeek: add rows for "deepseek2", "DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM" pointing
// at the loader declared in models/deepseek.h (and include it above).
struct FamilyEntry {
  std::string_view architecture;
  FamilyLoader load;
};

constexpr FamilyEntry kFamilies[] = {
    {"llama", load_llama},             // GGUF
    {"qwen2", load_llama},             // GGUF
    {"LlamaForCausalLM", load_llama},  // HF safetensors
    {"Qwen2ForCausalLM", load_llama},  // HF safetensors
    {"deepseek2", load_deepseek},              // GGUF (V2, V2-Lite, V3, R1)
    {"DeepseekV2ForCausalLM", load_deepseek},  // HF safetensors
    {"DeepseekV3ForCausalLM", load_deepseek},  // HF safetensors (bf16 or FP8)
};

std::string supported_architectures() {
  std::string s;
  for (const FamilyEntry& e : kFamilies) s += (s.empty() ? "" : ", ") + std::string(e.architecture);
  return s;
}

void print_progress(int64_t done, int64_t total) {
  std::fprintf(stderr, "\rloading: layer %lld/%lld", static_cast<long long>(done),
               static_cast<long long>(total));
  if (done == total) std::fputc('\n', stderr);
  std::fflush(stderr);
}

bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

Result<std::string> read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error("{}: cannot open", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The HF chat template: tokenizer_config.json "chat_template" (a string, or a list of named
// templates of which "default" is used), else chat_template.jinja (transformers >= 4.43).
Result<std::string> hf_chat_template(const std::string& dir) {
  const std::string config_path = dir + "/tokenizer_config.json";
  if (file_exists(config_path)) {
    SPUTNIK_ASSIGN_OR_RETURN(nlohmann::json config, read_json_file(config_path));
    if (config.contains("chat_template")) {
      const nlohmann::json& t = config["chat_template"];
      if (t.is_string()) return t.get<std::string>();
      if (t.is_array()) {
        for (const auto& entry : t) {
          if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
              entry["template"].is_string()) {
            return entry["template"].get<std::string>();
          }
        }
      }
    }
  }
  const std::string jinja_path = dir + "/chat_template.jinja";
  if (file_exists(jinja_path)) return read_text_file(jinja_path);
  return std::string();
}

// Once the tokenizer is built it holds its own vocabulary: the parsed arrays go before the weights
// load (the memory they free is reused by repacked weights), and so do the metadata pages read.
void release_tokenizer_metadata(GgufFile& g) {
  for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                          "tokenizer.ggml.token_type", "tokenizer.ggml.scores"}) {
    g.erase_metadata(key);
  }
  g.mapping()->release_resident_pages();
}

}  // namespace

Result<LoadedModel> load_model(const std::string& path, const LoadOptions& options) {
  ModelSource source;
  SPUTNIK_ASSIGN_OR_RETURN(source.weights, WeightSource::open(path));
  source.options = options;
  const WeightSource& w = *source.weights;
  LoadedModel loaded;

  if (const GgufFile* g = w.gguf()) {
    SPUTNIK_ASSIGN_OR_RETURN(source.architecture, g->get_string("general.architecture"));
    if (g->has("general.name")) {
      SPUTNIK_ASSIGN_OR_RETURN(source.info.name, g->get_string("general.name"));
    }
    if (g->has("tokenizer.chat_template")) {
      SPUTNIK_ASSIGN_OR_RETURN(source.info.chat_template, g->get_string("tokenizer.chat_template"));
    }
    SPUTNIK_ASSIGN_OR_RETURN(loaded.tokenizer, Tokenizer::from_gguf(*g));
    release_tokenizer_metadata(*source.weights->gguf());
  } else {
    const SafetensorsCheckpoint& st = *w.safetensors();
    const std::string config_path = st.directory() + "/config.json";
    const nlohmann::json& config = st.config();
    if (!st.has_config()) {
      return make_error("{}: config.json is missing; a safetensors checkpoint needs it to name "
                        "its architecture", config_path);
    }
    if (!config.contains("architectures") || !config["architectures"].is_array() ||
        config["architectures"].empty() || !config["architectures"][0].is_string()) {
      return make_error("{}: field 'architectures' should be a non-empty list of names", config_path);
    }
    source.architecture = config["architectures"][0].get<std::string>();
    if (config.contains("_name_or_path") && config["_name_or_path"].is_string()) {
      source.info.name = config["_name_or_path"].get<std::string>();
    }
    SPUTNIK_ASSIGN_OR_RETURN(source.info.chat_template, hf_chat_template(st.directory()));
    // Without tokenizer.json the model loads with a null tokenizer (tiny test checkpoints).
    const std::string tokenizer_path = st.directory() + "/tokenizer.json";
    if (file_exists(tokenizer_path)) {
      SPUTNIK_ASSIGN_OR_RETURN(loaded.tokenizer, Tokenizer::from_hf_json(tokenizer_path));
    }
  }
  source.info.weight_bytes = w.total_bytes();
  if (options.show_progress && ::isatty(STDERR_FILENO)) source.progress = print_progress;

  const FamilyEntry* family = nullptr;
  for (const FamilyEntry& e : kFamilies) {
    if (e.architecture == source.architecture) family = &e;
  }
  if (!family) {
    return make_error("{}: architecture '{}' is not supported (supported: {})", path,
                      source.architecture, supported_architectures());
  }
  SPUTNIK_ASSIGN_OR_RETURN(loaded.model, family->load(source));
  // The file pages the family loader read and no longer needs (tensors it repacked or converted
  // to f32, their neighbours mapped by fault-around) leave the resident set; weights used in
  // place fault back in from the page cache when the model first reads them.
  if (const GgufFile* g = w.gguf()) g->mapping()->release_resident_pages();
  if (loaded.tokenizer && loaded.tokenizer->vocab_size() > loaded.model->info().vocab_size) {
    return make_error("{}: the tokenizer has {} tokens but the model's vocabulary only {}", path,
                      loaded.tokenizer->vocab_size(), loaded.model->info().vocab_size);
  }
  return loaded;
}

}  // namespace sputnik
