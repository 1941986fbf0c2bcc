// Byte-level BPE tokenizer (include/loaq/llm/tokenizer.hpp). The pre-tokenizer and BPE rules are
// tested on a toy vocabulary; the real SmolLM2 and Qwen2.5 vocabularies (ids from Hugging Face
// tokenizers, as scripts/check_tokenizer.py builds them) only when their GGUF files are present.
#include <doctest/doctest.h>

#include <loaq/llm/tokenizer.hpp>

#include "real_model.hpp"

using loaq::llm::Tokenizer;

namespace {

std::vector<std::string> toy_vocab() {
  return {"<|endoftext|>", "a", "b", "c", "\xc4\xa0", "ab", "\xc4\xa0" "ab", "abc"};
}

}  // namespace

TEST_CASE("smollm pre-tokenizer: digits isolated, then GPT-2's regex") {
  const Tokenizer t(toy_vocab(), {}, {}, "smollm");
  // Expected pieces from Hugging Face tokenizers (Digits + ByteLevel) on the same strings.
  CHECK(t.pre_tokenize("Hello world's 123  x\n\ny") ==
        std::vector<std::string>{"Hello", " world", "'s", " ", "1", "2", "3", " ", " x", "\n",
                                 "\n", "y"});
  CHECK(t.pre_tokenize("I'M they're  '' 'll\t\tz !!? \xc2\xbc \xd9\xa3x") ==
        std::vector<std::string>{"I", "'", "M", " they", "'re", " ", " ''", " '", "ll", "\t",
                                 "\t", "z", " !!?", " ", "\xc2\xbc", " ", "\xd9\xa3", "x"});
  const Tokenizer g(toy_vocab(), {}, {}, "gpt2");
  CHECK(g.pre_tokenize("in 2021, 3.5") ==
        std::vector<std::string>{"in", " 2021", ",", " 3", ".", "5"});
  CHECK(g.pre_tokenize("").empty());
  CHECK(g.pre_tokenize("   ") == std::vector<std::string>{"   "});
  CHECK_THROWS_AS(Tokenizer(toy_vocab(), {}, {}, "llama3"), std::invalid_argument);
}

TEST_CASE("qwen2 pre-tokenizer: every alternative of Qwen2's regex, as Hugging Face splits") {
  const Tokenizer t(toy_vocab(), {}, {}, "qwen2");
  // Expected pieces from Hugging Face tokenizers: Split(Regex(Qwen2's pattern), "isolated").
  // Contractions in any case (U+017F long s folds to 's'); a ' after a space goes with the
  // space, so " 'll" holds no contraction.
  CHECK(t.pre_tokenize("I'M they'RE 'll DON'T it'\xc5\xbfx") ==
        std::vector<std::string>{"I", "'M", " they", "'RE", " '", "ll", " DON", "'T", " it",
                                 "'\xc5\xbf", "x"});
  // One space, punctuation mark or tab joins the letters after it; a newline does not.
  CHECK(t.pre_tokenize("Hello,world (foo)\tbar\nbaz\t\tz") ==
        std::vector<std::string>{"Hello", ",world", " (", "foo", ")", "\tbar", "\n", "baz", "\t",
                                 "\tz"});
  CHECK(t.pre_tokenize("in 2021, 3.5%") ==
        std::vector<std::string>{"in", " ", "2", "0", "2", "1", ",", " ", "3", ".", "5", "%"});
  // Punctuation takes the line breaks after it; a whitespace run ends at its last line break.
  CHECK(t.pre_tokenize("Wow!!?\n\nNext !\r\n") ==
        std::vector<std::string>{"Wow", "!!?\n\n", "Next", " !\r\n"});
  CHECK(t.pre_tokenize("  \n \n  x \r\n y  ") ==
        std::vector<std::string>{"  \n \n", " ", " x", " \r\n", " y", "  "});
  // U+00BC and U+0663 are \p{N}; CJK and accented letters are \p{L}; U+00A0 joins like a space.
  CHECK(t.pre_tokenize("\xc2\xbc\xd9\xa3\xe4\xb8\xad\xe6\x96\x87 caf\xc3\xa9\xc2\xa0na\xc3\xafve") ==
        std::vector<std::string>{"\xc2\xbc", "\xd9\xa3", "\xe4\xb8\xad\xe6\x96\x87", " caf\xc3\xa9",
                                 "\xc2\xa0na\xc3\xafve"});
  CHECK(t.pre_tokenize("").empty());
  CHECK(t.pre_tokenizer() == "qwen2");
  CHECK_THROWS_AS(Tokenizer(toy_vocab(), {}, {}, "qwen"), std::invalid_argument);
}

TEST_CASE("byte-level BPE on a toy vocabulary: merges by rank, special tokens, decode") {
  const Tokenizer t(toy_vocab(), {"a b", "\xc4\xa0 ab", "ab c"}, {3, 1, 1, 1, 1, 1, 1, 1}, "smollm");
  // "ab" -> ab; " abc" -> Ġ a b c -> Ġ ab c -> Ġab c (rank 1 beats rank 2).
  CHECK(t.encode("ab abc<|endoftext|>c") == std::vector<int>{5, 6, 3, 0, 3});
  CHECK(t.encode("ab abc<|endoftext|>c", false) != std::vector<int>{5, 6, 3, 0, 3});
  CHECK(t.decode({5, 6, 3, 0, 3}) == "ab abc<|endoftext|>c");
  CHECK(t.encode("d") == std::vector<int>{0});  // not in the vocabulary: unknown id
  CHECK(t.encode("").empty());
  CHECK_THROWS_AS(t.decode({8}), std::out_of_range);
  CHECK_THROWS_AS(t.decode({-1}), std::out_of_range);
  CHECK_THROWS_AS(Tokenizer(toy_vocab(), {"ab"}, {}, "gpt2"), std::invalid_argument);
  CHECK_THROWS_AS(Tokenizer(toy_vocab(), {}, {1, 1}, "gpt2"), std::invalid_argument);
}

TEST_CASE("real SmolLM2: GGUF contents and tokenizer ids match Hugging Face tokenizers") {
  if (loaq_test::skip_without_model()) return;
  const loaq_test::Loaded& m = *loaq_test::real_model();
  CHECK(m.gguf.version() == 3);
  CHECK(m.gguf.tensors().size() == 272);
  CHECK(m.gguf.get_string("tokenizer.ggml.pre") == "smollm");
  // GGUF metadata read by the decoder.
  loaq_test::check_config(m.model.config, {30, 576, 1536, 9, 3, 64, 49152, 100000.f});

  // Ids from `tokenizers` built by scripts/check_tokenizer.py.
  const std::vector<std::pair<std::string, std::vector<int>>> cases = {
      {"Hello world's 2021  x\n\ny", {19556, 905, 506, 216, 34, 32, 34, 33, 216, 1792, 198, 198, 105}},
      {"<|im_start|>user\nWhat's 12+7?<|im_end|>", {1, 4093, 198, 1780, 506, 216, 33, 34, 27, 39, 47, 2}},
      {"Mr. Speaker, Mr. President, distinguished Members",
       {14086, 30, 32436, 28, 4994, 30, 4267, 28, 12931, 16647}},
      {"caf\xc3\xa9 \xe2\x80\x94 na\xc3\xafve \xe2\x80\x9cquotes\xe2\x80\x9d \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80",
       {83, 1939, 2756, 1841, 15486, 46494, 619, 385, 2346, 573, 216, 28589, 29184, 40303, 218}},
  };
  for (const auto& tc : cases) {
    CHECK(m.tok.encode(tc.first) == tc.second);
    CHECK(m.tok.decode(tc.second) == tc.first);
  }
  // Invalid UTF-8 never throws. Bytes that form no valid UTF-8 (0xC0, 0xC1, 0xF5..0xFF) have no
  // token in this vocabulary and become the unknown id; the others round-trip.
  const std::string junk = "a\xc3(\xe2\x82 z\x80";
  CHECK(m.tok.decode(m.tok.encode(junk)) == junk);
  CHECK(m.tok.encode("a\xff") == std::vector<int>{81, m.tok.unknown_id()});
}

TEST_CASE("real Qwen2.5: tokenizer ids match Hugging Face tokenizers") {
  if (loaq_test::skip_without_qwen()) return;
  const Tokenizer& t = *loaq_test::qwen_tokenizer();
  CHECK(t.pre_tokenizer() == "qwen2");
  CHECK(t.vocab_size() == 151936);
  CHECK(t.eos_id() == 151645);  // <|im_end|>

  // Ids from `tokenizers` built by scripts/check_tokenizer.py (NFC normalizer, Qwen2's Split,
  // ByteLevel); all strings are NFC, so the normalizer changes nothing.
  const std::vector<std::pair<std::string, std::vector<int>>> cases = {
      {"<|im_start|>user\nWhat's 12+7? I'M sure they'RE right.<|im_end|>\n<|endoftext|>",
       {151644, 872, 198, 3838, 594, 220, 16, 17, 10, 22, 30, 358, 27603, 2704, 807, 94153, 1290,
        13, 151645, 198, 151643}},
      {"Hello world's 2021  x\n\ny", {9707, 1879, 594, 220, 17, 15, 17, 16, 220, 856, 271, 88}},
      {"def f(x):\n    return x  # \xe4\xb8\xad\xe6\x96\x87\n\n\n",
       {750, 282, 2075, 982, 262, 470, 856, 220, 671, 72858, 16744, 1406}},
      {"caf\xc3\xa9 \xe2\x80\x94 na\xc3\xafve \xe2\x80\x9cquotes\xe2\x80\x9d "
       "\xd9\xa3\xc2\xbc \xf0\x9f\x98\x80",
       {924, 58858, 1959, 94880, 586, 1036, 53282, 854, 220, 149, 96, 41873, 90316}},
      {"Mr. Speaker, Mr. President, distinguished Members",
       {12275, 13, 29073, 11, 4392, 13, 4795, 11, 38475, 16954}},
  };
  for (const auto& tc : cases) {
    CHECK(t.encode(tc.first) == tc.second);
    CHECK(t.decode(tc.second) == tc.first);
  }
}
