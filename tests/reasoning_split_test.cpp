// ReasoningSplitter: <think>...</think> routing, tags split across pieces.
#include <gtest/gtest.h>

#include "runtime/generate.h"

namespace sputnik {
namespace {

// Feeds the pieces and returns "T:" / "A:" segments joined, merging neighbours of one channel.
std::string run(bool starts_in_reasoning, const std::vector<std::string>& pieces) {
  ReasoningSplitter splitter(starts_in_reasoning);
  std::vector<ReasoningSplitter::Piece> all;
  auto add = [&](const std::vector<ReasoningSplitter::Piece>& out) {
    for (const auto& p : out) {
      if (!all.empty() && all.back().channel == p.channel) {
        all.back().text += p.text;
      } else {
        all.push_back(p);
      }
    }
  };
  for (const auto& p : pieces) add(splitter.push(p));
  add(splitter.flush());
  std::string s;
  for (const auto& p : all) s += (p.channel == Channel::Thinking ? "[T:" : "[A:") + p.text + "]";
  return s;
}

TEST(ReasoningSplit, PlainTextIsAnswer) {
  EXPECT_EQ(run(false, {"Paris is ", "the capital."}), "[A:Paris is the capital.]");
}

TEST(ReasoningSplit, StartsInReasoningForR1) {
  EXPECT_EQ(run(true, {"Let me think.", "</think>\n\n", "42"}), "[T:Let me think.][A:42]");
}

TEST(ReasoningSplit, TagsSpanningPieces) {
  EXPECT_EQ(run(false, {"<th", "ink>hm", "m</t", "hink", ">\nok <b>"}), "[T:hmm][A:ok <b>]");
}

TEST(ReasoningSplit, UnfinishedTagIsReleasedAtTheEnd) {
  EXPECT_EQ(run(false, {"a <thi"}), "[A:a <thi]");
  EXPECT_EQ(run(true, {"x </th"}), "[T:x </th]");
}

}  // namespace
}  // namespace sputnik
