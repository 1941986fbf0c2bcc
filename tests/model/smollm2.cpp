// SmolLM2 tokenizer and float model (examples/smollm2). The pre-tokenizer and BPE rules are
// tested on a toy vocabulary; the tests on the real model run only when its GGUF file is
// present ($LOAQ_MODEL or the cache of scripts/fetch_model.sh) and report a skip otherwise.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <memory>

#include "smollm2/model.hpp"
#include "smollm2/paths.hpp"
#include "smollm2/tokenizer.hpp"

using smollm2::Tokenizer;

namespace {

std::vector<std::string> toy_vocab() {
  return {"<|endoftext|>", "a", "b", "c", "\xc4\xa0", "ab", "\xc4\xa0" "ab", "abc"};
}

// The model is loaded once for all test cases; null when the file is absent.
struct Loaded {
  loaq::io::GgufReader gguf;
  Tokenizer tok;
  smollm2::Model model;
  explicit Loaded(const std::string& path)
      : gguf(path), tok(Tokenizer::from_gguf(gguf)), model(smollm2::Model::load(gguf)) {}
};
const Loaded* real_model() {
  static const std::unique_ptr<Loaded> m = [] {
    const std::string path = smollm2::default_model_path();
    if (!smollm2::file_exists(path)) return std::unique_ptr<Loaded>();
    return std::make_unique<Loaded>(path);
  }();
  return m.get();
}
bool skip_without_model() {
  if (real_model()) return false;
  MESSAGE("skipped: SmolLM2 GGUF not found at " << smollm2::default_model_path()
                                                << " (run scripts/fetch_model.sh or set LOAQ_MODEL)");
  return true;
}

std::string eval_text() {
  std::ifstream f(std::string(LOAQ_SOURCE_DIR) + "/data/sotu/eval_1982_2021.txt", std::ios::binary);
  REQUIRE(f.good());
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
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

TEST_CASE("perplexity windows follow the GPTQ reference") {
  std::vector<int> ids(10);
  for (int i = 0; i < 10; ++i) ids[std::size_t(i)] = i;
  const auto w = smollm2::windows(ids, 4);
  REQUIRE(w.size() == 2);  // the 2-token tail is dropped
  CHECK(w[1] == std::vector<int>{4, 5, 6, 7});
  CHECK(smollm2::windows(ids, 4, 1).size() == 1);
  const auto p = smollm2::perplexity(w, [](const std::vector<int>& x) { return x[0] == 0 ? 1.0 : 3.0; });
  CHECK(p.mean_nll == doctest::Approx(2.0));
  CHECK(p.ppl == doctest::Approx(std::exp(2.0)));
  CHECK(smollm2::windows(ids, 11).empty());
  CHECK_THROWS_AS(smollm2::windows(ids, 1), std::invalid_argument);
  CHECK_THROWS_AS(smollm2::perplexity({}, [](const std::vector<int>&) { return 0.0; }),
                  std::invalid_argument);
}

TEST_CASE("real SmolLM2: GGUF contents and tokenizer ids match Hugging Face tokenizers") {
  if (skip_without_model()) return;
  const Loaded& m = *real_model();
  CHECK(m.gguf.version() == 3);
  CHECK(m.gguf.tensors().size() == 272);
  CHECK(m.gguf.get_string("tokenizer.ggml.pre") == "smollm");
  const smollm2::Config& c = m.model.config;
  CHECK(c.n_layers == 30);
  CHECK(c.d_model == 576);
  CHECK(c.n_heads == 9);
  CHECK(c.n_kv_heads == 3);
  CHECK(c.head_dim == 64);
  CHECK(c.d_ff == 1536);
  CHECK(c.vocab_size == 49152);
  CHECK(c.rope_theta == 100000.f);

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

TEST_CASE("real SmolLM2: forward matches the numpy reference; sub-block captures are consistent") {
  if (skip_without_model()) return;
  const Loaded& m = *real_model();
  const smollm2::Config& c = m.model.config;
  std::vector<int> ids = m.tok.encode(eval_text().substr(0, 4000));
  REQUIRE(ids.size() >= 64);
  ids.resize(64);
  // scripts/check_forward.py: float64 numpy forward over the gguf package gives 3.844394.
  CHECK(m.model.nll(ids) == doctest::Approx(3.844394).epsilon(2e-5));

  // Run the layers by hand with captures; the result must be the plain forward.
  const std::vector<int> w(ids.begin(), ids.begin() + 16);
  Eigen::MatrixXf h = m.model.embed(w);
  for (std::size_t i = 0; i < m.model.layers.size(); ++i) {
    const smollm2::DecoderLayer& L = m.model.layers[i];
    smollm2::AttnCapture ac;
    smollm2::MlpCapture mc;
    const Eigen::MatrixXf mid = smollm2::attention_block(c, L, h, &ac);
    const Eigen::MatrixXf out = smollm2::mlp_block(c, L, mid, &mc);
    if (i == 0 || i + 1 == m.model.layers.size()) {
      CHECK(ac.x_qkv.isApprox(smollm2::rms_norm(h, L.attn_norm, c.rms_eps)));
      CHECK((mid - h).isApprox(L.o * ac.x_o, 1e-4f));
      CHECK(mc.x_gate_up.isApprox(smollm2::rms_norm(mid, L.ffn_norm, c.rms_eps)));
      CHECK((out - mid).isApprox(L.down * mc.x_down, 1e-4f));
      CHECK(ac.x_o.rows() == 576);
      CHECK(mc.x_down.rows() == 1536);
      CHECK(ac.x_qkv.cols() == 16);
    }
    h = out;
  }
  CHECK(m.model.nll_from_hidden(h, w) == doctest::Approx(m.model.nll(w)).epsilon(1e-6));

  // Replacing a weight changes exactly that linear: with down_proj = 0 the MLP is the identity.
  smollm2::DecoderLayer L = m.model.layers[3];
  L.weight(smollm2::Linear::down).setZero();
  const Eigen::MatrixXf h0 = m.model.embed(w);
  CHECK(smollm2::mlp_block(c, L, h0) == h0);
  CHECK(&L.weight(smollm2::Linear::gate) == &L.gate);
  CHECK(std::string(smollm2::linear_name(smollm2::Linear::o)) == "o_proj");

  CHECK_THROWS_AS(m.model.embed({0, 49152}), std::out_of_range);
  CHECK_THROWS_AS(m.model.nll({5}), std::invalid_argument);
}
