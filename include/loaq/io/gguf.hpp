// GGUF reader (optional: not included by loaq.hpp). Reads versions 2 and 3 of the llama.cpp
// model format: metadata key/values, the tensor table, and float dequantization of the tensor
// types LLaMA- and Qwen2-family files use (F32, F16, BF16, F64, I8..I64, Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0, Q4_K, Q5_K, Q6_K; blocks in ggml_dequant.hpp).
//
// Layout (all little-endian): "GGUF", u32 version, u64 tensor_count, u64 kv_count,
// kv_count × {string key, u32 value type, value}, tensor_count × {string name, u32 n_dims,
// u64 dims[n_dims], u32 ggml type, u64 offset}, padding to `general.alignment` (default 32),
// then the data section; tensor offsets are relative to its start. A string is u64 length +
// bytes; an array is u32 element type + u64 count + elements.
//
// The whole file is read into memory (regular files only, so /dev/zero or a FIFO is refused
// instead of read without end) and every count, offset and size is checked against the bytes
// actually present before anything is allocated or read, so a truncated, corrupt or lying file
// throws format_error (never bad_alloc or length_error) and never reads out of bounds. Values are assembled byte by byte: no unaligned loads.
//
// GgufWriter (gguf_writer.hpp) writes such files from GgufValues built with the builders below.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "error.hpp"
#include "ggml_dequant.hpp"

namespace loaq {
namespace io {

enum class GgufValueType : std::uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
  BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12
};

inline const char* gguf_type_name(GgufValueType t) {
  static const char* names[] = {"UINT8", "INT8",   "UINT16", "INT16", "UINT32",
                                "INT32", "FLOAT32", "BOOL",  "STRING", "ARRAY",
                                "UINT64", "INT64", "FLOAT64"};
  const auto i = std::uint32_t(t);
  return i < 13 ? names[i] : "?";
}

// Fixed byte size of a scalar value type; 0 for STRING and ARRAY (variable length).
inline std::size_t gguf_scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: return 1;
    case GgufValueType::UINT16: case GgufValueType::INT16: return 2;
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::FLOAT32: return 4;
    case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: return 8;
    default: return 0;
  }
}

// ggml tensor types: name, elements per block, bytes per block (ggml's type traits). Listing
// every type lets the reader validate the byte ranges of tensors it cannot dequantize.
struct GgmlTypeInfo {
  std::uint32_t id;
  const char* name;
  std::uint32_t block;
  std::uint32_t bytes;
};

inline const GgmlTypeInfo* ggml_type_info(std::uint32_t id) {
  static const GgmlTypeInfo table[] = {
      {0, "F32", 1, 4},         {1, "F16", 1, 2},          {2, "Q4_0", 32, 18},
      {3, "Q4_1", 32, 20},      {6, "Q5_0", 32, 22},       {7, "Q5_1", 32, 24},
      {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 40},       {10, "Q2_K", 256, 84},
      {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},    {13, "Q5_K", 256, 176},
      {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},    {16, "IQ2_XXS", 256, 66},
      {17, "IQ2_XS", 256, 74},  {18, "IQ3_XXS", 256, 98},  {19, "IQ1_S", 256, 50},
      {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},   {22, "IQ2_S", 256, 82},
      {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},          {25, "I16", 1, 2},
      {26, "I32", 1, 4},        {27, "I64", 1, 8},         {28, "F64", 1, 8},
      {29, "IQ1_M", 256, 56},   {30, "BF16", 1, 2},        {34, "TQ1_0", 256, 54},
      {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17}};
  for (const auto& t : table)
    if (t.id == id) return &t;
  return nullptr;
}

// One metadata value. Numeric arrays keep their raw little-endian element bytes (compact: a
// file of N bytes never turns into much more than N bytes of memory); string arrays and nested
// arrays are decoded.
class GgufValue {
 public:
  GgufValueType type() const { return type_; }
  bool is_array() const { return type_ == GgufValueType::ARRAY; }
  bool is_string() const { return type_ == GgufValueType::STRING; }
  bool is_integer() const { return is_integer_type(type_); }
  bool is_number() const { return is_number_type(type_); }

  // Scalars. Integer getters accept every integer type (and BOOL) whose value fits.
  std::uint64_t as_uint() const {
    if (!is_integer() || (is_signed(type_) && i_ < 0)) fail("a non-negative integer");
    return is_signed(type_) ? std::uint64_t(i_) : u_;
  }
  std::int64_t as_int() const {
    if (!is_integer()) fail("an integer");
    if (!is_signed(type_) && u_ > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
      fail("an integer below 2^63");
    return is_signed(type_) ? i_ : std::int64_t(u_);
  }
  double as_double() const {
    if (!is_number()) fail("a number");
    if (type_ == GgufValueType::FLOAT32 || type_ == GgufValueType::FLOAT64) return f_;
    return is_signed(type_) ? double(i_) : double(u_);
  }
  bool as_bool() const {
    if (type_ != GgufValueType::BOOL) fail("BOOL");
    return u_ != 0;
  }
  const std::string& as_string() const {
    if (!is_string()) fail("STRING");
    return str_;
  }

  // Arrays.
  GgufValueType element_type() const {
    if (!is_array()) fail("ARRAY");
    return elem_;
  }
  std::size_t size() const {
    if (!is_array()) fail("ARRAY");
    return count_;
  }
  const std::vector<std::string>& as_strings() const {
    if (!is_array() || elem_ != GgufValueType::STRING) fail("ARRAY of STRING");
    return strings_;
  }
  // Element i of an array of any numeric type (or BOOL) as a scalar value.
  GgufValue element(std::size_t i) const {
    if (!is_array()) fail("ARRAY");
    if (i >= count_) throw format_error("GGUF array index " + std::to_string(i) + " out of range");
    if (elem_ == GgufValueType::STRING) return string_value(strings_[i]);
    if (elem_ == GgufValueType::ARRAY) return arrays_[i];
    const std::size_t w = gguf_scalar_size(elem_);
    return scalar_value(elem_, read_le(raw_.data() + i * w, w));
  }
  std::vector<std::int64_t> as_ints() const {
    std::vector<std::int64_t> v(size());
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = element(i).as_int();
    return v;
  }
  std::vector<double> as_doubles() const {
    std::vector<double> v(size());
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = element(i).as_double();
    return v;
  }

  // Builders (used by the reader and by GgufWriter). `bits` are the value's little-endian
  // bytes as stored in a file; only the low bytes of the type's width count.
  static GgufValue scalar_value(GgufValueType t, std::uint64_t bits) {
    GgufValue v;
    v.type_ = t;
    const std::size_t w = gguf_scalar_size(t);
    if (t == GgufValueType::FLOAT32) {
      float f;
      const auto b32 = std::uint32_t(bits);
      std::memcpy(&f, &b32, 4);
      v.f_ = f;
      v.u_ = b32;  // the exact bits, so a writer reproduces them (a NaN payload included)
    } else if (t == GgufValueType::FLOAT64) {
      std::memcpy(&v.f_, &bits, 8);
      v.u_ = bits;
    } else if (is_signed(t)) {
      // Sign-extend from the stored width.
      const unsigned shift = unsigned(64 - 8 * w);
      v.i_ = std::int64_t(bits << shift) >> shift;
    } else {
      // Cut to the width, so the value is the one a file holds.
      v.u_ = w < 8 ? bits & ((std::uint64_t(1) << (8 * w)) - 1) : bits;
    }
    return v;
  }
  static GgufValue string_value(std::string s) {
    GgufValue v;
    v.type_ = GgufValueType::STRING;
    v.str_ = std::move(s);
    return v;
  }
  static GgufValue uint32(std::uint32_t x) { return scalar_value(GgufValueType::UINT32, x); }
  static GgufValue int32(std::int32_t x) {
    return scalar_value(GgufValueType::INT32, std::uint32_t(x));
  }
  static GgufValue uint64(std::uint64_t x) { return scalar_value(GgufValueType::UINT64, x); }
  static GgufValue int64(std::int64_t x) {
    return scalar_value(GgufValueType::INT64, std::uint64_t(x));
  }
  static GgufValue float32(float x) {
    std::uint32_t bits;
    std::memcpy(&bits, &x, 4);
    return scalar_value(GgufValueType::FLOAT32, bits);
  }
  static GgufValue float64(double x) {
    std::uint64_t bits;
    std::memcpy(&bits, &x, 8);
    return scalar_value(GgufValueType::FLOAT64, bits);
  }
  static GgufValue boolean(bool b) { return scalar_value(GgufValueType::BOOL, b ? 1 : 0); }
  static GgufValue string(std::string s) { return string_value(std::move(s)); }
  static GgufValue string_array(std::vector<std::string> strings) {
    GgufValue v;
    v.type_ = GgufValueType::ARRAY;
    v.elem_ = GgufValueType::STRING;
    v.count_ = strings.size();
    v.strings_ = std::move(strings);
    return v;
  }
  // An array whose elements all have type `elem`: numbers (or BOOL) built with the scalar
  // builders, strings, or arrays (nested no deeper than kMaxArrayDepth levels in all). Anything
  // else is a format_error, so every array value can be written and read back.
  static GgufValue array_of(GgufValueType elem, const std::vector<GgufValue>& elements) {
    if (std::uint32_t(elem) > std::uint32_t(GgufValueType::FLOAT64))
      throw format_error("GGUF array: unknown element type " + std::to_string(std::uint32_t(elem)));
    GgufValue v;
    v.type_ = GgufValueType::ARRAY;
    v.elem_ = elem;
    v.count_ = elements.size();
    const std::size_t w = gguf_scalar_size(elem);
    if (w) v.raw_.reserve(elements.size() * w);
    for (std::size_t i = 0; i < elements.size(); ++i) {
      const GgufValue& e = elements[i];
      if (e.type_ != elem)
        throw format_error(std::string("GGUF array of ") + gguf_type_name(elem) + ": element " +
                           std::to_string(i) + " has type " + gguf_type_name(e.type_));
      if (w) {
        // BOOL as 0/1, the only bytes a reader accepts.
        const std::uint64_t bits = elem == GgufValueType::BOOL ? std::uint64_t(e.u_ != 0)
                                                                 : e.scalar_bits();
        for (std::size_t k = 0; k < w; ++k) v.raw_.push_back(std::uint8_t(bits >> (8 * k)));
      } else if (elem == GgufValueType::STRING) {
        v.strings_.push_back(e.str_);
      } else {
        if (1 + e.array_levels() > kMaxArrayDepth)
          throw format_error("GGUF array: arrays nested deeper than " +
                             std::to_string(kMaxArrayDepth) + " levels");
        v.arrays_.push_back(e);
      }
    }
    return v;
  }

  static constexpr int kMaxArrayDepth = 4;  // nested arrays: allowed by the spec, rare

 private:
  friend class GgufReader;
  friend class GgufWriter;

  // A scalar's bytes as a file stores them (low gguf_scalar_size bytes).
  std::uint64_t scalar_bits() const {
    if (type_ == GgufValueType::FLOAT32 || type_ == GgufValueType::FLOAT64) return u_;
    return is_signed(type_) ? std::uint64_t(i_) : u_;
  }
  // 1 for an array of scalars or strings, 1 + the deepest element for an array of arrays.
  int array_levels() const {
    int deepest = 0;
    for (const GgufValue& a : arrays_) deepest = std::max(deepest, a.array_levels());
    return 1 + deepest;
  }

  static bool is_signed(GgufValueType t) {
    return t == GgufValueType::INT8 || t == GgufValueType::INT16 || t == GgufValueType::INT32 ||
           t == GgufValueType::INT64;
  }
  static bool is_integer_type(GgufValueType t) {
    return is_number_type(t) && t != GgufValueType::FLOAT32 && t != GgufValueType::FLOAT64;
  }
  static bool is_number_type(GgufValueType t) { return gguf_scalar_size(t) != 0; }
  static std::uint64_t read_le(const std::uint8_t* p, std::size_t w) {
    std::uint64_t x = 0;
    for (std::size_t k = w; k-- > 0;) x = (x << 8) | p[k];
    return x;
  }
  [[noreturn]] void fail(const char* want) const {
    throw format_error(std::string("GGUF value has type ") + gguf_type_name(type_) +
                       (is_array() ? std::string(" of ") + gguf_type_name(elem_) : "") +
                       ", expected " + want);
  }

  GgufValueType type_ = GgufValueType::UINT8;
  std::uint64_t u_ = 0;
  std::int64_t i_ = 0;
  double f_ = 0;
  std::string str_;
  // Arrays.
  GgufValueType elem_ = GgufValueType::UINT8;
  std::size_t count_ = 0;
  std::vector<std::uint8_t> raw_;
  std::vector<std::string> strings_;
  std::vector<GgufValue> arrays_;
};

struct GgufTensor {
  std::string name;
  std::vector<std::uint64_t> dims;  // ggml order: dims[0] is the contiguous (innermost) axis
  std::uint32_t type = 0;           // ggml type id, see ggml_type_info
  std::uint64_t offset = 0;         // from the start of the data section
  std::uint64_t n_elements = 0;
  std::uint64_t n_bytes = 0;
  const char* type_name() const {
    const GgmlTypeInfo* t = ggml_type_info(type);
    return t ? t->name : "?";
  }
};

class GgufReader {
 public:
  explicit GgufReader(const std::string& path) : name_(path) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec))
      throw format_error(path + ": not a regular file (or cannot be accessed)");
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f) throw format_error(path + ": cannot open file");
    const std::streamoff n = f.tellg();
    if (n < 0 || std::uint64_t(n) > std::uint64_t(bytes_.max_size()))
      throw format_error(path + ": cannot determine the file size");
    try {
      bytes_.resize(std::size_t(n));
    } catch (const std::bad_alloc&) {
      throw format_error(path + ": out of memory: reading the file needs " + std::to_string(n) +
                         " bytes");
    }
    f.seekg(0);
    if (n > 0 && !f.read(reinterpret_cast<char*>(bytes_.data()), std::streamsize(n)))
      throw format_error(path + ": read failed");
    parse();
  }
  // From bytes in memory; `name` only labels error messages.
  GgufReader(std::vector<std::uint8_t> bytes, std::string name)
      : name_(std::move(name)), bytes_(std::move(bytes)) {
    parse();
  }

  std::uint32_t version() const { return version_; }
  std::size_t alignment() const { return alignment_; }
  std::size_t data_offset() const { return data_start_; }
  std::size_t file_size() const { return bytes_.size(); }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(const std::string& key) const {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
  }
  bool has(const std::string& key) const { return find(key) != nullptr; }
  const GgufValue& get(const std::string& key) const {
    const GgufValue* v = find(key);
    if (!v) throw format_error(name_ + ": metadata key '" + key + "' is missing");
    return *v;
  }
  // Typed getters; the message names the key when the type is wrong.
  std::uint64_t get_uint(const std::string& key) const {
    return with_key(key, [&] { return get(key).as_uint(); });
  }
  std::int64_t get_int(const std::string& key) const {
    return with_key(key, [&] { return get(key).as_int(); });
  }
  double get_double(const std::string& key) const {
    return with_key(key, [&] { return get(key).as_double(); });
  }
  bool get_bool(const std::string& key) const {
    return with_key(key, [&] { return get(key).as_bool(); });
  }
  const std::string& get_string(const std::string& key) const {
    return with_key(key, [&]() -> const std::string& { return get(key).as_string(); });
  }
  const std::vector<std::string>& get_strings(const std::string& key) const {
    return with_key(key,
                    [&]() -> const std::vector<std::string>& { return get(key).as_strings(); });
  }
  std::vector<std::int64_t> get_ints(const std::string& key) const {
    return with_key(key, [&] { return get(key).as_ints(); });
  }
  // Same, with a default for a missing key (a present key of the wrong type still throws).
  std::uint64_t get_uint(const std::string& key, std::uint64_t def) const {
    return has(key) ? get_uint(key) : def;
  }
  double get_double(const std::string& key, double def) const {
    return has(key) ? get_double(key) : def;
  }
  bool get_bool(const std::string& key, bool def) const { return has(key) ? get_bool(key) : def; }
  std::string get_string(const std::string& key, const std::string& def) const {
    return has(key) ? get_string(key) : def;
  }

  // Tensors in file order.
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(const std::string& name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }
  const GgufTensor& tensor(const std::string& name) const {
    const GgufTensor* t = find_tensor(name);
    if (!t) throw format_error(name_ + ": tensor '" + name + "' is missing");
    return *t;
  }
  // The tensor's n_bytes bytes, already validated to lie inside the file (null when empty).
  const std::uint8_t* raw(const GgufTensor& t) const {
    return t.n_bytes ? bytes_.data() + data_start_ + std::size_t(t.offset) : nullptr;
  }

  static bool can_dequantize(std::uint32_t type) {
    using namespace ggml_type;
    for (std::uint32_t s : {F32, F16, BF16, F64, I8, I16, I32, I64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
                            Q4_K, Q5_K, Q6_K})
      if (type == s) return true;
    return false;
  }

  // All elements in ggml order (dims[0] fastest), as float.
  std::vector<float> dequantize(const GgufTensor& t) const {
    check_dequantizable(t);
    std::vector<float> out(std::size_t(t.n_elements));
    dequantize_into(t, out.data());
    return out;
  }
  std::vector<float> dequantize(const std::string& name) const { return dequantize(tensor(name)); }

  // A 2-D tensor as a matrix in PyTorch layout: rows = dims[1], cols = dims[0] (a ggml row is
  // contiguous in the file). Trailing dims of size 1 are allowed. rows/cols < 0 accept any size.
  Eigen::MatrixXf matrix(const std::string& name, std::int64_t rows = -1,
                         std::int64_t cols = -1) const {
    const GgufTensor& t = tensor(name);
    for (std::size_t k = 2; k < t.dims.size(); ++k)
      if (t.dims[k] != 1) throw format_error(name_ + ": tensor '" + name + "' is not 2-D");
    const std::uint64_t c = t.dims.empty() ? 1 : t.dims[0];
    const std::uint64_t r = t.dims.size() < 2 ? 1 : t.dims[1];
    check_size(name, "rows", r, rows);
    check_size(name, "columns", c, cols);
    check_dequantizable(t);
    // An empty tensor may declare a huge other axis: no copy loop over it.
    if (t.n_elements == 0)
      return Eigen::MatrixXf(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c));
    using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    RowMajor m(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c));
    dequantize_into(t, m.data());
    return m;
  }
  // A tensor with one non-trivial dimension as a vector.
  Eigen::VectorXf vector(const std::string& name, std::int64_t size = -1) const {
    const GgufTensor& t = tensor(name);
    for (std::size_t k = 1; k < t.dims.size(); ++k)
      if (t.dims[k] != 1) throw format_error(name_ + ": tensor '" + name + "' is not 1-D");
    check_size(name, "elements", t.n_elements, size);
    check_dequantizable(t);
    Eigen::VectorXf v(static_cast<Eigen::Index>(t.n_elements));
    dequantize_into(t, v.data());
    return v;
  }

 private:
  static constexpr std::size_t kMaxDims = 4;     // GGML_MAX_DIMS
  static constexpr int kMaxArrayDepth = GgufValue::kMaxArrayDepth;
  static constexpr std::size_t kDefaultAlignment = 32;

  // Bounds-checked little-endian cursor over the header.
  struct Cursor {
    const std::vector<std::uint8_t>& b;
    const std::string& file;
    std::size_t pos = 0;

    std::size_t left() const { return b.size() - pos; }
    void need(std::size_t n, const std::string& what) const {
      if (n > left())
        throw format_error(file + ": truncated while reading " + what + " at byte " +
                           std::to_string(pos) + " (needs " + std::to_string(n) +
                           " bytes, file has " + std::to_string(b.size()) + ")");
    }
    std::uint64_t uint(std::size_t w, const std::string& what) {
      need(w, what);
      const std::uint64_t x = GgufValue::read_le(b.data() + pos, w);
      pos += w;
      return x;
    }
    std::uint32_t u32(const std::string& what) { return std::uint32_t(uint(4, what)); }
    std::uint64_t u64(const std::string& what) { return uint(8, what); }
    std::string str(const std::string& what) {
      const std::uint64_t n = u64(what + " length");
      if (n > left())
        throw format_error(file + ": " + what + " at byte " + std::to_string(pos - 8) +
                           " claims " + std::to_string(n) + " bytes, only " +
                           std::to_string(left()) + " remain (truncated or corrupt)");
      std::string s(reinterpret_cast<const char*>(b.data() + pos), std::size_t(n));
      pos += std::size_t(n);
      return s;
    }
    // Guards allocations: `count` items of at least `min_size` bytes must fit in what is left.
    void check_count(std::uint64_t count, std::size_t min_size, const std::string& what) const {
      if (min_size != 0 && count > left() / min_size)
        throw format_error(file + ": " + what + " " + std::to_string(count) + " at byte " +
                           std::to_string(pos) + " cannot fit in the " + std::to_string(left()) +
                           " remaining bytes (truncated or corrupt)");
    }
  };

  static bool valid_value_type(std::uint32_t t) { return t <= 12; }

  GgufValue read_value(Cursor& c, GgufValueType t, const std::string& what, int depth) {
    if (t == GgufValueType::STRING) return GgufValue::string_value(c.str(what));
    if (t != GgufValueType::ARRAY) {
      GgufValue v = GgufValue::scalar_value(t, c.uint(gguf_scalar_size(t), what));
      if (t == GgufValueType::BOOL && v.u_ > 1)
        throw format_error(name_ + ": " + what + " is a BOOL with value " + std::to_string(v.u_));
      return v;
    }
    if (depth >= kMaxArrayDepth)
      throw format_error(name_ + ": " + what + " nests arrays deeper than " +
                         std::to_string(kMaxArrayDepth));
    const std::uint32_t et = c.u32(what + " element type");
    if (!valid_value_type(et))
      throw format_error(name_ + ": " + what + " has unknown element type " + std::to_string(et));
    const std::uint64_t n = c.u64(what + " element count");
    GgufValue v;
    v.type_ = GgufValueType::ARRAY;
    v.elem_ = GgufValueType(et);
    const std::size_t w = gguf_scalar_size(v.elem_);
    // Smallest encoding of one element: a scalar's width, a string's length, an array's header.
    const std::size_t min_size = w ? w : (v.elem_ == GgufValueType::STRING ? 8 : 12);
    c.check_count(n, min_size, what + " element count");
    v.count_ = std::size_t(n);
    if (w) {
      v.raw_.assign(c.b.begin() + std::ptrdiff_t(c.pos),
                    c.b.begin() + std::ptrdiff_t(c.pos + v.count_ * w));
      c.pos += v.count_ * w;
      if (v.elem_ == GgufValueType::BOOL)
        for (std::uint8_t x : v.raw_)
          if (x > 1) throw format_error(name_ + ": " + what + " holds a BOOL that is not 0 or 1");
    } else if (v.elem_ == GgufValueType::STRING) {
      v.strings_.reserve(v.count_);
      for (std::size_t i = 0; i < v.count_; ++i) v.strings_.push_back(c.str(what + " element"));
    } else {
      v.arrays_.reserve(v.count_);
      for (std::size_t i = 0; i < v.count_; ++i)
        v.arrays_.push_back(read_value(c, GgufValueType::ARRAY, what + " element", depth + 1));
    }
    return v;
  }

  void parse() {
    Cursor c{bytes_, name_};
    c.need(4, "the magic");
    if (std::memcmp(bytes_.data(), "GGUF", 4) != 0)
      throw format_error(name_ + ": not a GGUF file (bad magic)");
    c.pos = 4;
    version_ = c.u32("the version");
    if (version_ == 1)
      throw format_error(name_ + ": GGUF version 1 is not supported (32-bit counts)");
    if (version_ != 2 && version_ != 3) {
      // A big-endian file shows its small version number byte-swapped.
      const bool swapped = (version_ & 0xffffu) == 0 && (version_ >> 16) != 0;
      throw format_error(name_ + ": unsupported GGUF version " + std::to_string(version_) +
                         (swapped ? " (big-endian file? only little-endian is supported)" : ""));
    }
    const std::uint64_t n_tensors = c.u64("the tensor count");
    const std::uint64_t n_kv = c.u64("the metadata count");
    // A key/value needs at least 8 (key length) + 4 (type) + 1 (smallest value) bytes, a tensor
    // record 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
    c.check_count(n_kv, 13, "metadata count");

    kv_.reserve(std::size_t(n_kv));
    for (std::uint64_t k = 0; k < n_kv; ++k) {
      const std::string what = "metadata entry " + std::to_string(k);
      std::string key = c.str(what + " key");
      const std::uint32_t t = c.u32(what + " ('" + key + "') type");
      if (!valid_value_type(t))
        throw format_error(name_ + ": metadata '" + key + "' has unknown value type " +
                           std::to_string(t));
      GgufValue v = read_value(c, GgufValueType(t), "metadata '" + key + "'", 0);
      if (!kv_index_.emplace(key, kv_.size()).second)
        throw format_error(name_ + ": duplicate metadata key '" + key + "'");
      kv_.emplace_back(std::move(key), std::move(v));
    }

    if (const GgufValue* a = find("general.alignment")) {
      if (a->type() != GgufValueType::UINT32)
        throw format_error(name_ + ": general.alignment must be UINT32, is " +
                           gguf_type_name(a->type()));
      const std::uint64_t al = a->as_uint();
      if (al == 0 || (al & (al - 1)) != 0)
        throw format_error(name_ + ": general.alignment " + std::to_string(al) +
                           " is not a power of two");
      alignment_ = std::size_t(al);
    }

    c.check_count(n_tensors, 24, "tensor count");
    tensors_.reserve(std::size_t(n_tensors));
    for (std::uint64_t k = 0; k < n_tensors; ++k) {
      GgufTensor t;
      t.name = c.str("tensor " + std::to_string(k) + " name");
      const std::string what = "tensor '" + t.name + "'";
      const std::uint32_t nd = c.u32(what + " n_dims");
      if (nd > kMaxDims)
        throw format_error(name_ + ": " + what + " has " + std::to_string(nd) +
                           " dimensions, at most 4 are allowed");
      t.n_elements = 1;
      for (std::uint32_t d = 0; d < nd; ++d) {
        const std::uint64_t x = c.u64(what + " dimension");
        // ggml stores int64: anything above 2^63 - 1 is negative and invalid.
        if (x > std::uint64_t(std::numeric_limits<std::int64_t>::max()) ||
            (x != 0 && t.n_elements > std::uint64_t(std::numeric_limits<std::int64_t>::max()) / x))
          throw format_error(name_ + ": " + what + " has an invalid or overflowing shape");
        t.dims.push_back(x);
        t.n_elements *= x;
      }
      t.type = c.u32(what + " type");
      const GgmlTypeInfo* ti = ggml_type_info(t.type);
      if (!ti)
        throw format_error(name_ + ": " + what + " has unknown ggml type " +
                           std::to_string(t.type));
      t.offset = c.u64(what + " offset");
      const std::uint64_t row = t.dims.empty() ? 1 : t.dims[0];
      if (row % ti->block != 0)
        throw format_error(name_ + ": " + what + " row length " + std::to_string(row) +
                           " is not a multiple of the " + ti->name + " block size " +
                           std::to_string(ti->block));
      // blocks * bytes can exceed 2^64 (2^62 F32 elements wrap to 0 bytes): a size that no
      // file can hold is rejected before it is multiplied.
      const std::uint64_t blocks = t.n_elements / ti->block;
      if (blocks > std::uint64_t(bytes_.size()) / ti->bytes)
        throw format_error(name_ + ": " + what + " has " + std::to_string(t.n_elements) + " " +
                           ti->name + " elements, more than the " +
                           std::to_string(bytes_.size()) + "-byte file can hold");
      t.n_bytes = blocks * ti->bytes;
      if (t.offset % alignment_ != 0)
        throw format_error(name_ + ": " + what + " offset " + std::to_string(t.offset) +
                           " is not a multiple of the alignment " + std::to_string(alignment_));
      if (!tensor_index_.emplace(t.name, tensors_.size()).second)
        throw format_error(name_ + ": duplicate tensor name '" + t.name + "'");
      tensors_.push_back(std::move(t));
    }

    // The data section starts at the next multiple of the alignment.
    const std::size_t pad = (alignment_ - c.pos % alignment_) % alignment_;
    data_start_ = c.pos + pad;  // c.pos <= file size, so no overflow
    const std::uint64_t data_size = data_start_ <= bytes_.size() ? bytes_.size() - data_start_ : 0;
    for (const GgufTensor& t : tensors_)
      if (t.offset > data_size || t.n_bytes > data_size - t.offset)
        throw format_error(name_ + ": tensor '" + t.name + "' data [" + std::to_string(t.offset) +
                           ", +" + std::to_string(t.n_bytes) + ") lies outside the " +
                           std::to_string(data_size) + "-byte data section (truncated file?)");
    // Overlapping tensors mean a corrupt table.
    std::vector<const GgufTensor*> by_offset;
    for (const GgufTensor& t : tensors_)
      if (t.n_bytes) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
    for (std::size_t i = 1; i < by_offset.size(); ++i)
      if (by_offset[i - 1]->offset + by_offset[i - 1]->n_bytes > by_offset[i]->offset)
        throw format_error(name_ + ": tensors '" + by_offset[i - 1]->name + "' and '" +
                           by_offset[i]->name + "' overlap");
  }

  void check_size(const std::string& tensor, const char* what, std::uint64_t got,
                  std::int64_t want) const {
    if (want >= 0 && got != std::uint64_t(want))
      throw format_error(name_ + ": tensor '" + tensor + "' has " + std::to_string(got) + " " +
                         what + ", expected " + std::to_string(want));
  }

  template <class F>
  auto with_key(const std::string& key, F&& f) const -> decltype(f()) {
    try {
      return f();
    } catch (const format_error& e) {
      if (!has(key)) throw;
      throw format_error(name_ + ": metadata '" + key + "': " + e.what());
    }
  }

  void dequantize_into(const GgufTensor& t, float* out) const {
    const std::uint8_t* p = raw(t);
    const std::size_t n = std::size_t(t.n_elements);
    auto le = [](const std::uint8_t* q, std::size_t w) { return GgufValue::read_le(q, w); };
    switch (t.type) {
      case ggml_type::F32:
        for (std::size_t i = 0; i < n; ++i) {
          const auto bits = std::uint32_t(le(p + 4 * i, 4));
          std::memcpy(out + i, &bits, 4);
        }
        return;
      case ggml_type::F64:
        for (std::size_t i = 0; i < n; ++i) {
          const std::uint64_t bits = le(p + 8 * i, 8);
          double d;
          std::memcpy(&d, &bits, 8);
          out[i] = float(d);
        }
        return;
      case ggml_type::F16:
        for (std::size_t i = 0; i < n; ++i) out[i] = ggml::half_at(p + 2 * i);
        return;
      case ggml_type::BF16:
        for (std::size_t i = 0; i < n; ++i)
          out[i] = float(Eigen::numext::bit_cast<Eigen::bfloat16>(std::uint16_t(le(p + 2 * i, 2))));
        return;
      case ggml_type::I8: case ggml_type::I16: case ggml_type::I32: case ggml_type::I64: {
        const std::size_t w = ggml_type_info(t.type)->bytes;
        const unsigned shift = unsigned(64 - 8 * w);
        for (std::size_t i = 0; i < n; ++i)
          out[i] = float(std::int64_t(le(p + w * i, w) << shift) >> shift);
        return;
      }
      default:  // block formats
        check_dequantizable(t);
        ggml::dequantize_blocks(t.type, p, n / ggml_type_info(t.type)->block, out);
    }
  }

  // Checked before allocating the output, so an unsupported type costs no memory.
  void check_dequantizable(const GgufTensor& t) const {
    if (!can_dequantize(t.type))
      throw format_error(name_ + ": tensor '" + t.name + "' has type " + t.type_name() +
                         ", which this reader cannot dequantize (supported: F32, F16, BF16, "
                         "F64, I8-I64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)");
  }

  std::string name_;
  std::vector<std::uint8_t> bytes_;
  std::uint32_t version_ = 0;
  std::size_t alignment_ = kDefaultAlignment;
  std::size_t data_start_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, std::size_t> kv_index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, std::size_t> tensor_index_;
};

}  // namespace io
}  // namespace loaq
