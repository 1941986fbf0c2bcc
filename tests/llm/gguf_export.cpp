// GGUF export (llm/gguf_export.hpp): a model quantized on a llama.cpp block grid is written with
// its linears in that format and everything else as in the source, reloads to the same weights
// and logits bit for bit, records how it was made, and a model or packing that llama.cpp could
// not reproduce is refused with the target file untouched.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <loaq/io/ggml_blocks.hpp>
#include <loaq/io/gguf_writer.hpp>
#include <loaq/llm/gguf_export.hpp>
#include <loaq/llm/methods.hpp>
#include <loaq/llm/sequential.hpp>

#include "real_model.hpp"
#include "tiny_model.hpp"
#include "../temp_dir.hpp"

namespace llm = loaq::llm;
using loaq::io::GgufReader;
using loaq::io::GgufValue;
using loaq::io::GgufValueType;

namespace {

bool bit_equal(const Eigen::MatrixXf& a, const Eigen::MatrixXf& b) {
  // An empty matrix (a missing bias) has no data pointer, which memcmp must not be given.
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         (a.size() == 0 || std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.size())) == 0);
}

std::vector<std::uint8_t> f32(const Eigen::MatrixXf& M) {  // row-major, as a ggml tensor
  llm::detail::RowMajorXf R = M;
  std::vector<std::uint8_t> b(std::size_t(R.size()) * 4);
  std::memcpy(b.data(), R.data(), b.size());
  return b;
}

// How tiny_source writes the file: llama.cpp's "llama" (q/k rows interleaved per head) or
// "qwen2" (Hugging Face order) conversion, optionally with Qwen2's q/k/v biases and own head.
struct TinySource {
  std::string arch = "llama";
  bool biases = false;
  bool separate_head = false;
};

// The tiny model with blocks of 32 everywhere (d_ff 64), its embedding stored as Q8_0, written
// as a GGUF the way llama.cpp's converter writes one.
std::vector<std::uint8_t> tiny_source(const TinySource& how = {}) {
  llm::Model m = loaq_test::tiny_model(3);
  std::mt19937 rng(4);
  std::normal_distribution<float> g(0.f, 0.15f);
  m.config.d_ff = 64;
  m.config.rope_rows_permuted = how.arch == "llama";
  for (auto& L : m.layers) {
    L.gate = Eigen::MatrixXf::NullaryExpr(64, 32, [&] { return g(rng); });
    L.up = Eigen::MatrixXf::NullaryExpr(64, 32, [&] { return g(rng); });
    L.down = Eigen::MatrixXf::NullaryExpr(32, 64, [&] { return g(rng); });
    if (how.biases)
      for (auto k : {llm::Linear::q, llm::Linear::k, llm::Linear::v})
        L.bias[int(k)] = Eigen::VectorXf::NullaryExpr(L.weight(k).rows(), [&] { return g(rng); });
  }
  const llm::Config& c = m.config;
  const std::string& a = how.arch;
  loaq::io::GgufWriter w;
  auto u32 = [](std::uint64_t v) { return GgufValue::scalar_value(GgufValueType::UINT32, v); };
  auto f = [](float v) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    return GgufValue::scalar_value(GgufValueType::FLOAT32, bits);
  };
  w.set("general.architecture", GgufValue::string_value(a));
  w.set("general.name", GgufValue::string_value("tiny"));
  w.set(a + ".block_count", u32(std::uint64_t(c.n_layers)));
  w.set(a + ".context_length", u32(std::uint64_t(c.context_length)));
  w.set(a + ".embedding_length", u32(std::uint64_t(c.d_model)));
  w.set(a + ".feed_forward_length", u32(std::uint64_t(c.d_ff)));
  w.set(a + ".attention.head_count", u32(std::uint64_t(c.n_heads)));
  w.set(a + ".attention.head_count_kv", u32(std::uint64_t(c.n_kv_heads)));
  w.set(a + ".rope.freq_base", f(10000.f));
  w.set(a + ".attention.layer_norm_rms_epsilon", f(1e-5f));
  auto dims = [](const Eigen::MatrixXf& M) {
    return std::vector<std::uint64_t>{std::uint64_t(M.cols()), std::uint64_t(M.rows())};
  };
  loaq::QuantizedWeight<float> e;
  REQUIRE(loaq::rtn(m.embedding, loaq::GgmlQ8_0Grid<float>(), 32, {}, e).ok());
  w.add_tensor("token_embd.weight", dims(m.embedding), loaq::io::ggml_type::Q8_0,
               loaq::io::pack_ggml_blocks(loaq::GgmlQ8_0Grid<float>(), e));
  w.add_tensor("output_norm.weight", {32}, loaq::io::ggml_type::F32, f32(m.output_norm.transpose()));
  if (how.separate_head)
    w.add_tensor("output.weight", dims(m.embedding), loaq::io::ggml_type::F32, f32(-0.5f * m.embedding));
  for (int l = 0; l < c.n_layers; ++l) {
    const llm::DecoderLayer& L = m.layers[std::size_t(l)];
    const std::string p = "blk." + std::to_string(l) + ".";
    w.add_tensor(p + "attn_norm.weight", {32}, loaq::io::ggml_type::F32, f32(L.attn_norm.transpose()));
    w.add_tensor(p + "ffn_norm.weight", {32}, loaq::io::ggml_type::F32, f32(L.ffn_norm.transpose()));
    for (int k = 0; k < 7; ++k) {
      const auto order = llm::file_row_order(c, llm::Linear(k));
      const Eigen::MatrixXf& W = L.weight(llm::Linear(k));
      const Eigen::MatrixXf file = order.empty() ? W : Eigen::MatrixXf(W(order, Eigen::all));
      w.add_tensor(p + llm::gguf_linear_name(llm::Linear(k)) + ".weight", dims(W),
                   loaq::io::ggml_type::F32, f32(file));
      const Eigen::VectorXf& b = L.bias[k];
      if (b.size())
        w.add_tensor(p + llm::gguf_linear_name(llm::Linear(k)) + ".bias", {std::uint64_t(b.size())},
                     loaq::io::ggml_type::F32,
                     f32(order.empty() ? Eigen::MatrixXf(b.transpose()) : Eigen::MatrixXf(b(order).transpose())));
    }
  }
  return w.bytes();
}

// One temporary file in its own folder (tests/temp_dir.hpp), removed at scope exit.
struct TempFile {
  loaq_test::TempDir dir{"loaq_export_test"};
  std::string path;
  explicit TempFile(const std::string& name) : path(dir / name) {}
  std::vector<char> bytes() const { return loaq_test::file_bytes(path); }
};

// Every linear and bias, norm, the embedding and the head of `a` and `b` bit for bit.
void check_same_weights(const llm::Model& a, const llm::Model& b) {
  REQUIRE(a.layers.size() == b.layers.size());
  CHECK(bit_equal(a.embedding, b.embedding));
  CHECK(bit_equal(a.output, b.output));
  CHECK(bit_equal(a.output_norm, b.output_norm));
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    for (int k = 0; k < 7; ++k) {
      CAPTURE(l);
      CAPTURE(k);
      CHECK(bit_equal(a.layers[l].weight(llm::Linear(k)), b.layers[l].weight(llm::Linear(k))));
      CHECK(bit_equal(a.layers[l].bias[k], b.layers[l].bias[k]));
    }
    CHECK(bit_equal(a.layers[l].attn_norm, b.layers[l].attn_norm));
    CHECK(bit_equal(a.layers[l].ffn_norm, b.layers[l].ffn_norm));
  }
}

// RTN (or GPTQ) on a block grid, with every solved linear packed for the file.
template <class Grid>
llm::Model quantize_packed(const llm::Model& fp, const Grid& grid, bool gptq, llm::PackedLinears& packed) {
  packed.assign(fp.layers.size(), {});
  auto keep = [&](int l, llm::Linear k, const loaq::QuantizedWeight<float>& q) {
    packed[std::size_t(l)][std::size_t(k)] = llm::pack_linear(fp.config, k, grid, q);
  };
  if (!gptq) return llm::quantize_rtn(fp, grid, 32, {}, {}, keep);
  llm::SequentialOptions so;
  so.solver.group_size = 32;
  so.threads = 2;
  so.on_solved = keep;
  return llm::quantize_sequential(fp, loaq_test::random_token_windows(4, 16, 9), llm::Gptq{}, grid, so);
}

}  // namespace

TEST_CASE("gguf export: block-quantized linears reload bit for bit, the rest as in the source") {
  const GgufReader src(tiny_source(), "tiny.gguf");
  const llm::Model fp = llm::Model::load(src);
  const auto window = loaq_test::random_token_windows(1, 12, 5)[0];
  auto run = [&](const auto& grid, bool gptq, std::uint32_t file_type, const char* name) {
    CAPTURE(name);
    CAPTURE(gptq);
    using Grid = std::decay_t<decltype(grid)>;
    llm::PackedLinears packed;
    const llm::Model q = quantize_packed(fp, grid, gptq, packed);
    TempFile out("loaq_export_test.gguf");
    llm::GgufExportOptions opt;
    opt.file_type = file_type;
    opt.metadata = {{"loaq.quantization.method", GgufValue::string_value(gptq ? "gptq" : "rtn")}};
    llm::export_gguf(src, q, packed, opt, out.path);

    const GgufReader r(out.path);
    CHECK(r.get_uint("general.file_type") == file_type);
    CHECK(r.get_string("loaq.quantization.method") == (gptq ? "gptq" : "rtn"));
    CHECK(r.get_string("general.name") == "tiny");  // the source's metadata
    CHECK(r.tensor("token_embd.weight").type == loaq::io::ggml_type::Q8_0);  // unchanged: copied
    CHECK(std::memcmp(r.raw(r.tensor("token_embd.weight")), src.raw(src.tensor("token_embd.weight")),
                      src.tensor("token_embd.weight").n_bytes) == 0);
    CHECK(r.tensor("blk.1.attn_norm.weight").type == loaq::io::ggml_type::F32);
    for (int k = 0; k < 7; ++k)
      CHECK(r.tensor("blk.0." + std::string(llm::gguf_linear_name(llm::Linear(k))) + ".weight").type ==
            Grid::ggml_type);
    const llm::Model back = llm::Model::load(r);
    check_same_weights(q, back);
    CHECK(bit_equal(q.forward(window), back.forward(window)));
    // The quantization changed the model (the file is not the source's linears).
    CHECK_FALSE(bit_equal(fp.layers[0].q, back.layers[0].q));
  };
  run(loaq::GgmlQ4_0Grid<float>(), false, 2, "Q4_0");
  run(loaq::GgmlQ4_0Grid<float>(), true, 2, "Q4_0");
  run(loaq::GgmlQ4_1Grid<float>(), true, 3, "Q4_1");
  run(loaq::GgmlQ8_0Grid<float>(), true, 7, "Q8_0");
}

TEST_CASE("qwen2 file: Hugging Face row order, q/k/v biases and its own head load as the llama conversion") {
  // The same model written both ways: the loader must undo the llama file's q/k permutation and
  // take the qwen2 file as it is, so both load to identical weights, biases and logits.
  const GgufReader as_llama(tiny_source({"llama", true, true}), "tiny-llama.gguf");
  const GgufReader as_qwen2(tiny_source({"qwen2", true, true}), "tiny-qwen2.gguf");
  const auto& q_llama = as_llama.tensor("blk.0.attn_q.weight");
  CHECK(std::memcmp(as_llama.raw(q_llama), as_qwen2.raw(as_qwen2.tensor("blk.0.attn_q.weight")),
                    q_llama.n_bytes) != 0);
  const llm::Model a = llm::Model::load(as_llama), b = llm::Model::load(as_qwen2);
  CHECK(a.config.rope_rows_permuted);
  CHECK_FALSE(b.config.rope_rows_permuted);
  CHECK(b.config.architecture == "qwen2");
  check_same_weights(a, b);
  CHECK(b.layers[1].bias_of(llm::Linear::k).size() == 16);
  CHECK(b.layers[1].bias_of(llm::Linear::o).size() == 0);
  CHECK(bit_equal(b.lm_head(), as_qwen2.matrix("output.weight")));  // its own head, not the embedding
  CHECK_FALSE(bit_equal(b.lm_head(), b.embedding));
  const auto window = loaq_test::random_token_windows(1, 12, 5)[0];
  CHECK(bit_equal(a.forward(window), b.forward(window)));

  // Exported in Q4_0 and read back: the qwen2 file keeps its row order and its biases.
  llm::PackedLinears packed;
  const llm::Model q = quantize_packed(b, loaq::GgmlQ4_0Grid<float>(), true, packed);
  TempFile out("loaq_export_qwen2.gguf");
  llm::export_gguf(as_qwen2, q, packed, {}, out.path);
  const GgufReader r(out.path);
  CHECK(r.get_string("general.architecture") == "qwen2");
  check_same_weights(q, llm::Model::load(r));

  // A lying block scale decodes to Inf or NaN: the load names the tensor instead of running it.
  auto bad = tiny_source({"qwen2", true, true});
  const GgufReader clean(bad, "clean.gguf");
  const auto& e = clean.tensor("token_embd.weight");  // Q8_0: fp16 d first in each block
  const std::size_t d_byte = std::size_t(clean.data_offset() + e.offset) + 34 * 5;  // block 5's scale
  bad[d_byte] = 0x00;
  bad[d_byte + 1] = 0x7e;  // fp16 NaN
  CHECK_THROWS_WITH_AS(llm::Model::load(GgufReader(bad, "nan.gguf")),
                       doctest::Contains("'token_embd.weight' holds NaN or Inf"), loaq::io::format_error);

  // Another architecture is refused with the supported names.
  auto other = tiny_source({"qwen2", false, false});
  const std::string from = "qwen2", to = "gemma";
  const auto it = std::search(other.begin(), other.end(), from.begin(), from.end());
  std::copy(to.begin(), to.end(), it);  // same length: only general.architecture's value changes
  CHECK_THROWS_WITH_AS(llm::Model::load(GgufReader(other, "gemma.gguf")),
                       doctest::Contains("not supported (llama, qwen2)"), loaq::io::format_error);
}

TEST_CASE("gguf export: all-F32 writes every tensor as F32 with the same values") {
  const GgufReader src(tiny_source(), "tiny.gguf");
  const llm::Model fp = llm::Model::load(src);
  TempFile out("loaq_export_f32.gguf");
  llm::GgufExportOptions opt;
  opt.all_f32 = true;
  llm::export_gguf(src, fp, {}, opt, out.path);
  const GgufReader r(out.path);
  for (const auto& t : r.tensors()) CHECK(t.type == loaq::io::ggml_type::F32);
  CHECK(r.get_uint("general.file_type") == 0);
  check_same_weights(fp, llm::Model::load(r));
}

TEST_CASE("gguf export: what llama.cpp cannot reproduce is refused and the file stays untouched") {
  const GgufReader src(tiny_source(), "tiny.gguf");
  const llm::Model fp = llm::Model::load(src);
  TempFile out("loaq_export_refused.gguf");
  { std::ofstream(out.path) << "previous contents"; }
  const auto before = out.bytes();

  llm::PackedLinears packed;
  const llm::Model q = quantize_packed(fp, loaq::GgmlQ4_0Grid<float>(), false, packed);
  llm::Model changed = q;  // a weight that is not what its packed blocks hold
  changed.layers[1].down(3, 7) += 0.01f;
  CHECK_THROWS_WITH_AS(llm::export_gguf(src, changed, packed, {}, out.path),
                       doctest::Contains("blk.1.ffn_down.weight"), std::invalid_argument);
  llm::Model wa = q;  // activations quantized: not a llama.cpp model
  wa.config.act.bits = 4;
  CHECK_THROWS_WITH_AS(llm::export_gguf(src, wa, packed, {}, out.path), doctest::Contains("activations"),
                       std::invalid_argument);
  llm::PackedLinears short_list(packed.begin(), packed.begin() + 1);
  CHECK_THROWS_AS(llm::export_gguf(src, q, short_list, {}, out.path), std::invalid_argument);
  CHECK(out.bytes() == before);
  // A model changed without packing (e.g. scaled norms) is written as F32 where it differs.
  llm::Model scaled = fp;
  scaled.layers[0].attn_norm *= 2.f;
  scaled.embedding(0, 0) += 1.f;
  llm::export_gguf(src, scaled, {}, {}, out.path);
  const GgufReader r(out.path);
  CHECK(r.tensor("token_embd.weight").type == loaq::io::ggml_type::F32);
  CHECK(r.tensor("blk.0.attn_norm.weight").type == loaq::io::ggml_type::F32);
  check_same_weights(scaled, llm::Model::load(r));
}

TEST_CASE("gguf export: SmolLM2 in Q4_0 reloads to the solver's weights") {
  if (loaq_test::skip_without_model()) return;
  const GgufReader& src = loaq_test::real_model()->gguf;
  const llm::Model& fp = loaq_test::real_model()->model;
  llm::PackedLinears packed;
  const llm::Model q = quantize_packed(fp, loaq::GgmlQ4_0Grid<float>(), false, packed);
  TempFile out("loaq_export_smollm2.gguf");
  llm::GgufExportOptions opt;
  opt.file_type = 2;
  llm::export_gguf(src, q, packed, opt, out.path);
  const GgufReader r(out.path);
  check_same_weights(q, llm::Model::load(r));
  // Q4_0 blocks (18 bytes per 32 weights) replace the source's Q4_1 (20 bytes): smaller by that.
  std::uint64_t linear_elements = 0;
  for (const auto& L : q.layers)
    for (int k = 0; k < 7; ++k) linear_elements += std::uint64_t(L.weight(llm::Linear(k)).size());
  const auto size_of = [](const GgufReader& g) {
    std::uint64_t s = 0;
    for (const auto& t : g.tensors()) s += t.n_bytes;
    return s;
  };
  CHECK(size_of(src) - size_of(r) == linear_elements / 32 * 2);
}

TEST_CASE("gguf export: RTN in Q4_1 of SmolLM2 (a Q4_1 file made by llama.cpp) gives back its bytes") {
  // The source's linears are llama.cpp Q4_1 blocks, so the FP model holds exactly their values:
  // fitting d = fp16((max − min)/15), m = fp16(min) and rounding again must find the same blocks.
  if (loaq_test::skip_without_model()) return;
  const GgufReader& src = loaq_test::real_model()->gguf;
  llm::PackedLinears packed;
  const llm::Model q = quantize_packed(loaq_test::real_model()->model, loaq::GgmlQ4_1Grid<float>(), false, packed);
  TempFile out("loaq_export_smollm2_q4_1.gguf");
  llm::GgufExportOptions opt;
  opt.file_type = 3;
  llm::export_gguf(src, q, packed, opt, out.path);
  const GgufReader r(out.path);
  int identical = 0;
  for (const auto& t : src.tensors()) {
    const auto& u = r.tensor(t.name);
    identical += u.type == t.type && u.n_bytes == t.n_bytes && std::memcmp(r.raw(u), src.raw(t), t.n_bytes) == 0;
  }
  CHECK(identical == int(src.tensors().size()));
}
