// A quantized Model as a GGUF file that llama.cpp runs: the source file's metadata (architecture,
// tokenizer, hyper-parameters) plus a record of how it was quantized, every decoder linear that
// was solved on one of llama.cpp's block grids (grid/ggml.hpp) in that block format, and every
// other tensor as in the source (its bytes, when the model still holds exactly those values) or
// as F32 (when the model changed it, or when asked for an all-F32 file).
//
// Before anything is written, the file is read back from memory and every tensor the model knows
// is dequantized and compared with the model bit for bit: a file that would not reproduce the
// solver's weights exactly is never written. Writing is atomic (io::write_file_atomic).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../io/ggml_blocks.hpp"
#include "../io/gguf.hpp"
#include "../io/gguf_writer.hpp"
#include "decoder.hpp"

namespace loaq {
namespace llm {

// One linear in its file form: a ggml type id and the tensor's bytes, rows in the file's order.
struct PackedWeight {
  std::uint32_t type = 0;
  std::vector<std::uint8_t> bytes;
  bool empty() const { return bytes.empty(); }
};
// Per decoder layer, per Linear: what the export writes instead of the source's tensor.
using PackedLinears = std::vector<std::array<PackedWeight, 7>>;

struct GgufExportOptions {
  // general.file_type (llama.cpp's llama_ftype): 0 all F32, 2 mostly Q4_0, 3 mostly Q4_1,
  // 7 mostly Q8_0.
  std::uint32_t file_type = 0;
  // Every tensor that is not packed as F32, even where the source's bytes would do: the FP model
  // as input to another quantizer (llama.cpp's llama_model_quantize).
  bool all_f32 = false;
  // Added after the source's metadata (e.g. "loaq.method"); replaces keys of the same name.
  std::vector<std::pair<std::string, io::GgufValue>> metadata;
};

// GGUF tensor names of the seven linears (llama.cpp's LLM_TENSOR names).
inline const char* gguf_linear_name(Linear k) {
  static const char* names[] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                "ffn_gate", "ffn_up", "ffn_down"};
  return names[int(k)];
}

// For q and k of a "llama" file: file row r holds the model's (Hugging Face order) row
// order[r], the converter's permutation that Model::load undoes. Empty for every other linear.
inline std::vector<Index> file_row_order(const Config& c, Linear k) {
  if (!c.rope_rows_permuted || (k != Linear::q && k != Linear::k)) return {};
  const int heads = k == Linear::q ? c.n_heads : c.n_kv_heads, hd = c.head_dim, half = hd / 2;
  std::vector<Index> order(std::size_t(heads * hd));
  for (int h = 0; h < heads; ++h)
    for (int j = 0; j < half; ++j)
      for (int a = 0; a < 2; ++a) order[std::size_t(h * hd + 2 * j + a)] = h * hd + a * half + j;
  return order;
}

// One solved linear (layer `layer`'s `k`, on a ggml block grid) in its file form.
template <class Grid>
PackedWeight pack_linear(const Config& c, Linear k, const Grid& grid, const QuantizedWeight<float>& q) {
  return {Grid::ggml_type, io::pack_ggml_blocks(grid, q, file_row_order(c, k))};
}

namespace detail {

using RowMajorXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// The model's value of GGUF tensor `name`, in the file's element order; false if the model has
// no such tensor (it is then copied from the source unchanged).
inline bool model_tensor(const Model& m, const std::string& name, RowMajorXf& out) {
  auto vec = [&](const Eigen::VectorXf& v) {
    if (!v.size()) return false;
    out = v.transpose();
    return true;
  };
  auto mat = [&](const Eigen::MatrixXf& W, const std::vector<Index>& order) {
    if (!W.size()) return false;
    out = order.empty() ? RowMajorXf(W) : RowMajorXf(W(order, Eigen::all));
    return true;
  };
  if (name == "token_embd.weight") return mat(m.embedding, {});
  if (name == "output.weight") return mat(m.output, {});
  if (name == "output_norm.weight") return vec(m.output_norm);
  if (name.compare(0, 4, "blk.") != 0) return false;
  const std::size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return false;
  int l = -1;
  try {
    std::size_t used = 0;
    l = std::stoi(name.substr(4, dot - 4), &used);
    if (used != dot - 4) return false;
  } catch (const std::exception&) {
    return false;
  }
  if (l < 0 || l >= int(m.layers.size())) return false;
  const DecoderLayer& L = m.layers[std::size_t(l)];
  const std::string rest = name.substr(dot + 1);
  if (rest == "attn_norm.weight") return vec(L.attn_norm);
  if (rest == "ffn_norm.weight") return vec(L.ffn_norm);
  for (int k = 0; k < 7; ++k) {
    const std::string base = gguf_linear_name(Linear(k));
    const std::vector<Index> order = file_row_order(m.config, Linear(k));
    if (rest == base + ".weight") return mat(L.weight(Linear(k)), order);
    if (rest == base + ".bias") {
      if (!L.bias[k].size()) return false;
      out = order.empty() ? RowMajorXf(L.bias[k].transpose()) : RowMajorXf(L.bias[k](order).transpose());
      return true;
    }
  }
  return false;
}

inline std::vector<std::uint8_t> f32_bytes(const RowMajorXf& v) {
  std::vector<std::uint8_t> b(std::size_t(v.size()) * 4);
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());  // ggml files are little-endian, as is x86/ARM
  return b;
}

inline bool same_bits(const float* a, const float* b, std::size_t n) {
  return n == 0 || std::memcmp(a, b, n * sizeof(float)) == 0;
}

}  // namespace detail

// Writes `m` to `path` as GGUF, with `source` (the file `m` was loaded from) for metadata and for
// every tensor the model leaves unchanged. `packed` (empty, or one entry per layer) replaces
// linears by their block form. Throws std::invalid_argument for a model llama.cpp cannot run
// (quantized activations, online rotations) or a packed linear that does not reproduce the
// model's weight, io::format_error for file problems; `path` is untouched on any failure.
inline void export_gguf(const io::GgufReader& source, const Model& m, const PackedLinears& packed,
                        const GgufExportOptions& opt, const std::string& path) {
  if (m.config.act.enabled() || m.config.down_rotation)
    throw std::invalid_argument(
        "export_gguf: the model quantizes activations or rotates online, which llama.cpp does not "
        "do; export weight-only models");
  if (!packed.empty() && packed.size() != m.layers.size())
    throw std::invalid_argument("export_gguf: packed linears for " + std::to_string(packed.size()) +
                                " layers, the model has " + std::to_string(m.layers.size()));
  io::GgufWriter w;
  w.copy_metadata(source);
  w.set("general.file_type", io::GgufValue::scalar_value(io::GgufValueType::UINT32, opt.file_type));
  for (const auto& [key, value] : opt.metadata) w.set(key, value);

  auto packed_for = [&](const std::string& name) -> const PackedWeight* {
    if (packed.empty()) return nullptr;
    for (std::size_t l = 0; l < packed.size(); ++l)
      for (int k = 0; k < 7; ++k)
        if (!packed[l][std::size_t(k)].empty() &&
            name == "blk." + std::to_string(l) + "." + gguf_linear_name(Linear(k)) + ".weight")
          return &packed[l][std::size_t(k)];
    return nullptr;
  };
  std::vector<std::string> names;
  detail::RowMajorXf value;
  for (const io::GgufTensor& t : source.tensors()) {
    names.push_back(t.name);
    const std::uint8_t* raw = source.raw(t);
    std::vector<std::uint8_t> source_bytes(raw, raw + t.n_bytes);
    if (const PackedWeight* p = packed_for(t.name)) {
      w.add_tensor(t.name, t.dims, p->type, p->bytes);
    } else if (!detail::model_tensor(m, t.name, value)) {
      w.add_tensor(t.name, t.dims, t.type, std::move(source_bytes));  // not the model's business
    } else if (!opt.all_f32 && io::GgufReader::can_dequantize(t.type) &&
               std::uint64_t(value.size()) == t.n_elements &&
               detail::same_bits(source.dequantize(t).data(), value.data(), std::size_t(value.size()))) {
      w.add_tensor(t.name, t.dims, t.type, std::move(source_bytes));  // unchanged: keep its format
    } else {
      w.add_tensor(t.name, t.dims, io::ggml_type::F32, detail::f32_bytes(value));
    }
  }
  // A tensor the model has but the source lacks (an untied LM head).
  if (m.output.size() && !source.find_tensor("output.weight")) {
    detail::model_tensor(m, "output.weight", value);
    w.add_tensor("output.weight", {std::uint64_t(value.cols()), std::uint64_t(value.rows())},
                 io::ggml_type::F32, detail::f32_bytes(value));
    names.push_back("output.weight");
  }

  std::vector<std::uint8_t> file = w.bytes();
  {  // Read it back: every tensor the model knows must dequantize to the model's values exactly.
    const io::GgufReader check(file, path + " (before writing)");
    for (const std::string& name : names) {
      if (!detail::model_tensor(m, name, value)) continue;
      const io::GgufTensor& t = check.tensor(name);
      if (std::uint64_t(value.size()) != t.n_elements ||
          !detail::same_bits(check.dequantize(t).data(), value.data(), std::size_t(value.size())))
        throw std::invalid_argument("export_gguf: tensor '" + name + "' (" + t.type_name() +
                                    ") does not dequantize to the model's values; was it solved on "
                                    "that ggml block grid?");
    }
  }
  io::write_file_atomic(path, file.data(), file.size());
}

}  // namespace llm
}  // namespace loaq
