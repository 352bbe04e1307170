// Chat formats, each written to render exactly what the model's Jinja chat template renders
// (jinja2 as transformers' apply_chat_template runs it: trim_blocks, lstrip_blocks).
// tests/chat_test.cpp compares against tests/data/tokenizer/chat_goldens.json, made by
// tools/gen_tokenizer_goldens.py from the real templates.
#include "tokenizer/chat.h"

#include "tokenizer/tokenizer.h"

namespace sputnik {

namespace {

constexpr const char* kDeepSeekBos = "<｜begin▁of▁sentence｜>";
constexpr const char* kDeepSeekEos = "<｜end▁of▁sentence｜>";

bool contains(const std::string& text, const char* needle) {
  return text.find(needle) != std::string::npos;
}

// Jinja's `trim` filter (Python str.strip()), for ASCII whitespace.
std::string trim(const std::string& text) {
  const char* kSpace = " \t\n\r\f\v";
  size_t begin = text.find_first_not_of(kSpace);
  if (begin == std::string::npos) return {};
  size_t end = text.find_last_not_of(kSpace);
  return text.substr(begin, end - begin + 1);
}

// SmolLM2 / Qwen2 template:
//   {% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}
//   {{ '<|im_start|>system\n<default><|im_end|>\n' }}{% endif %}
//   {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}
//   {% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
std::string render_chatml(std::span<const ChatMessage> messages, bool add_generation_prompt,
                          const std::string& default_system) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i == 0 && messages[0].role != "system" && !default_system.empty()) {
      out += "<|im_start|>system\n" + default_system + "<|im_end|>\n";
    }
    out += "<|im_start|>" + messages[i].role + "\n" + messages[i].content + "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

// Meta-Llama-3-*-Instruct template: per message
// '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content | trim + '<|eot_id|>',
// the first one preceded by bos_token.
std::string render_llama3(std::span<const ChatMessage> messages, bool add_generation_prompt) {
  std::string out = messages.empty() ? "" : "<|begin_of_text|>";
  for (const ChatMessage& message : messages) {
    out += "<|start_header_id|>" + message.role + "<|end_header_id|>\n\n" + trim(message.content) +
           "<|eot_id|>";
  }
  if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// DeepSeek-V3 / R1 template (tokenizer_config.json chat_template), without tool calls: all
// system messages joined by "\n\n" right after BOS; users as <｜User｜>; assistants as
// <｜Assistant｜>...<｜end▁of▁sentence｜> (R1 keeps only what follows the last </think>);
// tool results between <｜tool▁outputs▁begin｜> and <｜tool▁outputs▁end｜>.
std::string render_deepseek(std::span<const ChatMessage> messages, bool add_generation_prompt,
                            bool r1) {
  std::string system;
  bool first_system = true;
  for (const ChatMessage& message : messages) {
    if (message.role != "system") continue;
    system += first_system ? message.content : "\n\n" + message.content;
    first_system = false;
  }
  std::string out = std::string(kDeepSeekBos) + system;
  bool in_tool = false, first_output = true;
  for (const ChatMessage& message : messages) {
    if (message.role == "user") {
      in_tool = false;
      out += "<｜User｜>" + message.content;
    } else if (message.role == "assistant") {
      std::string content = message.content;
      if (r1) {
        size_t think_end = content.rfind("</think>");
        if (think_end != std::string::npos) content = content.substr(think_end + 8);
      }
      if (in_tool) {
        out += "<｜tool▁outputs▁end｜>" + content + kDeepSeekEos;
        in_tool = false;
      } else {
        out += "<｜Assistant｜>" + content + kDeepSeekEos;
      }
    } else if (message.role == "tool") {
      in_tool = true;
      if (first_output) {
        out += "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>" + message.content +
               "<｜tool▁output▁end｜>";
        first_output = false;
      } else {
        out += "<｜tool▁output▁begin｜>" + message.content + "<｜tool▁output▁end｜>";
      }
    }
  }
  if (in_tool) out += "<｜tool▁outputs▁end｜>";
  if (add_generation_prompt && !in_tool) out += r1 ? "<｜Assistant｜><think>\n" : "<｜Assistant｜>";
  return out;
}

}  // namespace

ChatFormat detect_chat_format(const std::string& chat_template, const Tokenizer& tokenizer) {
  if (!chat_template.empty()) {
    if (contains(chat_template, "<｜Assistant｜>") || contains(chat_template, "<｜User｜>")) {
      // R1's template strips reasoning ('</think>') and opens the reply with <think>.
      return contains(chat_template, "think>") ? ChatFormat::DeepSeekR1 : ChatFormat::DeepSeekV3;
    }
    if (contains(chat_template, "<|start_header_id|>")) return ChatFormat::Llama3;
    if (contains(chat_template, "<|im_start|>")) return ChatFormat::ChatML;
  }
  if (tokenizer.token_id("<｜Assistant｜>") >= 0) return ChatFormat::DeepSeekV3;
  if (tokenizer.token_id("<|start_header_id|>") >= 0) return ChatFormat::Llama3;
  return ChatFormat::ChatML;
}

std::string chat_format_name(ChatFormat format) {
  switch (format) {
    case ChatFormat::ChatML:
      return "chatml";
    case ChatFormat::Llama3:
      return "llama3";
    case ChatFormat::DeepSeekV3:
      return "deepseek-v3";
    case ChatFormat::DeepSeekR1:
      return "deepseek-r1";
  }
  return "unknown";
}

std::string render_chat(ChatFormat format, std::span<const ChatMessage> messages,
                        bool add_generation_prompt, const std::string& default_system) {
  switch (format) {
    case ChatFormat::ChatML:
      return render_chatml(messages, add_generation_prompt, default_system);
    case ChatFormat::Llama3:
      return render_llama3(messages, add_generation_prompt);
    case ChatFormat::DeepSeekV3:
      return render_deepseek(messages, add_generation_prompt, false);
    case ChatFormat::DeepSeekR1:
      return render_deepseek(messages, add_generation_prompt, true);
  }
  return {};
}

std::string render_chat(ChatFormat format, std::span<const ChatMessage> messages,
                        bool add_generation_prompt) {
  return render_chat(format, messages, add_generation_prompt, std::string());
}

std::string chat_default_system(const std::string& chat_template) {
  // The newline after "system" is a real newline in some templates (SmolLM2) and the escape
  // "\n" inside a Jinja string literal in others (Qwen2).
  for (const char* opener : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
    std::string open(opener);
    for (size_t pos = chat_template.find(open); pos != std::string::npos;
         pos = chat_template.find(open, pos + 1)) {
      size_t begin = pos + open.size();
      size_t end = chat_template.find("<|im_end|>", begin);
      if (end == std::string::npos || end == begin) continue;
      std::string text = chat_template.substr(begin, end - begin);
      // A literal default, not a template expression (Qwen2.5 also writes "system\n' }}").
      if (text.find_first_of("'\"{}") != std::string::npos) continue;
      return text;
    }
  }
  return {};
}

bool starts_in_reasoning(ChatFormat format) { return format == ChatFormat::DeepSeekR1; }

}  // namespace sputnik
