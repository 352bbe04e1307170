// Chat formats recognised from a model's metadata. A general Jinja renderer is a later issue;
// these are the formats of the models sputnik targets.
#pragma once

#include <span>
#include <string>

namespace sputnik {

class Tokenizer;

enum class ChatFormat {
  ChatML,      // <|im_start|>role\n...<|im_end|>\n (SmolLM2, Qwen2)
  Llama3,      // <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
  DeepSeekV3,  // <｜begin▁of▁sentence｜>system<｜User｜>...<｜Assistant｜>...<｜end▁of▁sentence｜>
  DeepSeekR1,  // DeepSeekV3, with the generation prompt ending in "<think>\n"
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// Picks the format from the checkpoint's chat template (tokenizer.chat_template / tokenizer_config)
// and, when there is none, from the tokenizer's special tokens.
ChatFormat detect_chat_format(const std::string& chat_template, const Tokenizer& tokenizer);
std::string chat_format_name(ChatFormat format);

// Renders the conversation as the prompt text; add_generation_prompt opens the assistant turn.
// Includes BOS text where the format does (DeepSeek); special tokens are then parsed by encode().
std::string render_chat(ChatFormat format, std::span<const ChatMessage> messages,
                        bool add_generation_prompt);
// As above, for templates that open with a default system turn when the conversation has none
// (ChatML: SmolLM2's "You are a helpful AI assistant named SmolLM, ...", Qwen2's "You are a
// helpful assistant."). Empty default_system renders no such turn. Other formats ignore it.
std::string render_chat(ChatFormat format, std::span<const ChatMessage> messages,
                        bool add_generation_prompt, const std::string& default_system);
// The default system prompt written into a ChatML template (the text between a literal
// "<|im_start|>system\n" and "<|im_end|>"), or "" when there is none.
std::string chat_default_system(const std::string& chat_template);

// Whether the format's reply opens inside a reasoning block (R1: generation prompt ends in <think>).
bool starts_in_reasoning(ChatFormat format);

}  // namespace sputnik
