// sputnik run (one prompt, streamed) and sputnik chat (interactive, multi-turn).
#include <fmt/format.h>

#include <cstdio>
#include <iostream>

#include "cli/cli.h"
#include "runtime/generate.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

namespace sputnik::cli {

namespace {

constexpr const char* kDim = "\x1b[2m";
constexpr const char* kReset = "\x1b[0m";

// Writes the two channels to stdout: thinking dimmed on a TTY (between <think> tags otherwise,
// so piped output keeps the structure), a blank line, then the answer.
class ChannelPrinter {
 public:
  ChannelPrinter(bool hide_thinking, bool tty) : hide_thinking_(hide_thinking), tty_(tty) {}

  bool operator()(Channel channel, std::string_view text) {
    if (channel == Channel::Thinking) {
      if (hide_thinking_) return true;
      if (!in_thinking_) {
        std::fputs(tty_ ? kDim : "<think>\n", stdout);
        in_thinking_ = true;
      }
    } else if (in_thinking_) {
      close_thinking();
    }
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return true;
  }

  void finish() {
    if (in_thinking_) close_thinking();
    std::fflush(stdout);
  }

 private:
  void close_thinking() {
    std::fputs(tty_ ? kReset : "\n</think>", stdout);
    std::fputs("\n\n", stdout);
    in_thinking_ = false;
  }
  bool hide_thinking_;
  bool tty_;
  bool in_thinking_ = false;
};

void print_stats(const GenerationStats& s) {
  fmt::print(stderr,
             "\nprompt: {} tokens in {:.2f} s, {:.1f} tok/s | generation: {} tokens in {:.2f} s, "
             "{:.1f} tok/s | stop: {}\n",
             s.n_prompt, s.prompt_seconds, s.prompt_tokens_per_second(), s.n_generated,
             s.generation_seconds, s.generation_tokens_per_second(), s.stop_reason);
}

struct RunOptions {
  ModelOptions model;
  std::string prompt;
  std::string system;
  int n_predict = 256;
  int n_batch = 512;
  bool chat = false;
  bool hide_thinking = false;
  bool verbose_stats = true;
  std::vector<std::string> stop;
  SamplingParams sampling;
};

void add_generation_options(CLI::App& app, RunOptions& o) {
  add_model_options(app, o.model);
  add_sampling_options(app, o.sampling);
  app.add_option("-b,--batch", o.n_batch, "prompt tokens per forward pass")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--stop", o.stop, "stop string (repeatable); never printed");
  app.add_flag("--hide-thinking", o.hide_thinking, "do not print the <think> reasoning");
  app.add_option("--system", o.system, "system message (chat format)");
}

int run_generate(const RunOptions& o) {
  auto loaded = load(o.model);
  if (!loaded) return fail("run", loaded.message());
  Model& model = *loaded->model;
  const Tokenizer& tokenizer = *loaded->tokenizer;

  GenerateOptions g;
  g.n_predict = o.n_predict;
  g.n_batch = o.n_batch;
  g.sampling = o.sampling;
  g.stop = o.stop;
  std::string prompt = o.prompt;
  if (o.chat) {
    const ChatFormat format = detect_chat_format(model.info().chat_template, tokenizer);
    std::vector<ChatMessage> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", o.prompt});
    prompt = render_chat(format, messages, /*add_generation_prompt=*/true);
    g.starts_in_reasoning = starts_in_reasoning(format);
  }
  Session session(model, tokenizer, o.model.ctx);
  ChannelPrinter printer(o.hide_thinking, stdout_is_tty());
  auto stats = session.generate(prompt, g, std::ref(printer));
  printer.finish();
  if (!stats) return fail("run", stats.message());
  print_stats(*stats);
  return 0;
}

int run_chat(const RunOptions& o) {
  auto loaded = load(o.model);
  if (!loaded) return fail("chat", loaded.message());
  Model& model = *loaded->model;
  const Tokenizer& tokenizer = *loaded->tokenizer;
  const ChatFormat format = detect_chat_format(model.info().chat_template, tokenizer);
  const bool interactive = stdin_is_tty();
  if (interactive) {
    fmt::print(stderr, "{} ({} chat format). Type a message; /reset starts over, /exit quits.\n",
               model.info().name.empty() ? o.model.path : model.info().name,
               chat_format_name(format));
  }

  GenerateOptions g;
  g.n_predict = o.n_predict;
  g.n_batch = o.n_batch;
  g.sampling = o.sampling;
  g.stop = o.stop;
  g.starts_in_reasoning = starts_in_reasoning(format);
  Session session(model, tokenizer, o.model.ctx);
  std::vector<ChatMessage> messages;
  if (!o.system.empty()) messages.push_back({"system", o.system});
  const size_t n_fixed = messages.size();

  std::string line;
  while (true) {
    if (interactive) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      messages.resize(n_fixed);
      session.reset();
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({"user", line});
    const std::string prompt = render_chat(format, messages, /*add_generation_prompt=*/true);
    std::string answer;
    ChannelPrinter printer(o.hide_thinking, stdout_is_tty());
    auto stats = session.generate(prompt, g, [&](Channel channel, std::string_view text) {
      if (channel == Channel::Answer) answer += text;
      return printer(channel, text);
    });
    printer.finish();
    std::fputs("\n", stdout);
    std::fflush(stdout);
    if (!stats) {
      // A turn that no longer fits is reported; the conversation goes on without it.
      fail("chat", stats.message());
      messages.pop_back();
      continue;
    }
    // The history keeps the answer only: reasoning templates drop earlier thinking (R1).
    messages.push_back({"assistant", answer});
    if (interactive) {
      fmt::print(stderr, "[{} prompt tok at {:.1f} tok/s, {} generated at {:.1f} tok/s]\n",
                 stats->n_prompt, stats->prompt_tokens_per_second(), stats->n_generated,
                 stats->generation_tokens_per_second());
    }
  }
  return 0;
}

}  // namespace

Command register_run(CLI::App& app) {
  auto* sub = app.add_subcommand("run", "generate a continuation of a prompt, streamed to stdout");
  auto o = std::make_shared<RunOptions>();
  add_generation_options(*sub, *o);
  sub->add_option("-p,--prompt", o->prompt, "the prompt")->required();
  sub->add_option("-n,--n-predict", o->n_predict, "tokens to generate (-1: until end of text)")
      ->capture_default_str();
  sub->add_flag("--chat", o->chat, "wrap the prompt in the model's chat format");
  return {sub, [o] { return run_generate(*o); }};
}

Command register_chat(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "chat", "interactive multi-turn chat in the model's chat format (reads lines from stdin)");
  auto o = std::make_shared<RunOptions>();
  o->n_predict = -1;
  add_generation_options(*sub, *o);
  sub->add_option("-n,--n-predict", o->n_predict, "tokens per reply at most (-1: no limit)")
      ->capture_default_str();
  return {sub, [o] { return run_chat(*o); }};
}

}  // namespace sputnik::cli
