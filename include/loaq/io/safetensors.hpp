// safetensors reader and writer (optional: needs nlohmann-json; not included by loaq.hpp).
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape,
// data_offsets: [begin, end)}} (offsets relative to the byte after the header), then the data.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "error.hpp"

namespace loaq {
namespace io {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

inline std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    default: return 1;
  }
}
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F64: return "F64";  case DType::F32: return "F32";
    case DType::F16: return "F16";  case DType::BF16: return "BF16";
    case DType::I64: return "I64";  case DType::I32: return "I32";
    case DType::I16: return "I16";  case DType::I8: return "I8";
    case DType::U8: return "U8";    case DType::BOOL: return "BOOL";
  }
  return "?";
}
inline bool parse_dtype(const std::string& s, DType& t) {
  static const std::map<std::string, DType> names = {
      {"F64", DType::F64}, {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I64", DType::I64}, {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},
      {"U8", DType::U8},   {"BOOL", DType::BOOL}};
  auto it = names.find(s);
  if (it == names.end()) return false;
  t = it->second;
  return true;
}

struct TensorInfo {
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::size_t begin = 0, end = 0;  // byte range in the data section
  std::size_t numel() const {
    std::size_t k = 1;
    for (auto d : shape) k *= std::size_t(d);
    return k;
  }
};

// Whole file read into memory; every offset validated on open.
class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path) : path_(path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw format_error(path + ": cannot open file");
    bytes_.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    parse();
  }
  SafetensorsReader(std::vector<char> bytes, std::string name)
      : path_(std::move(name)), bytes_(std::move(bytes)) {
    parse();
  }

  bool contains(const std::string& name) const { return tensors_.count(name) > 0; }
  const TensorInfo& info(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end())
      throw format_error(path_ + ": tensor '" + name + "' is missing (have: " + names() + ")");
    return it->second;
  }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::string names() const {
    std::string s;
    for (auto& kv : tensors_) s += (s.empty() ? "" : ", ") + kv.first;
    return s.empty() ? "none" : s;
  }

  // A 2-D floating tensor [rows, cols] (row-major in the file) as an Eigen matrix of the same
  // shape. F64/F32/F16/BF16 are converted; rows/cols < 0 accept any size.
  template <class Scalar = float>
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> matrix(const std::string& name,
                                                               std::int64_t rows = -1,
                                                               std::int64_t cols = -1) const {
    const TensorInfo& t = info(name);
    if (t.shape.size() != 2)
      throw format_error(path_ + ": tensor '" + name + "' must be 2-D, has " +
                         std::to_string(t.shape.size()) + " dimensions");
    check_dim(name, 0, t.shape[0], rows);
    check_dim(name, 1, t.shape[1], cols);
    std::vector<Scalar> v = floats<Scalar>(name);
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> M(t.shape[0], t.shape[1]);
    for (std::int64_t r = 0; r < t.shape[0]; ++r)
      for (std::int64_t c = 0; c < t.shape[1]; ++c) M(r, c) = v[std::size_t(r * t.shape[1] + c)];
    return M;
  }

  // A 1-D floating tensor.
  template <class Scalar = float>
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> vector(const std::string& name,
                                                  std::int64_t size = -1) const {
    const TensorInfo& t = info(name);
    if (t.shape.size() != 1)
      throw format_error(path_ + ": tensor '" + name + "' must be 1-D");
    check_dim(name, 0, t.shape[0], size);
    std::vector<Scalar> v = floats<Scalar>(name);
    return Eigen::Map<Eigen::Matrix<Scalar, Eigen::Dynamic, 1>>(v.data(), Index(v.size()));
  }

  // Any floating tensor flattened, converted to Scalar.
  template <class Scalar>
  std::vector<Scalar> floats(const std::string& name) const {
    const TensorInfo& t = info(name);
    const char* p = bytes_.data() + data_start_ + t.begin;
    const std::size_t k = t.numel();
    std::vector<Scalar> v(k);
    for (std::size_t i = 0; i < k; ++i) {
      switch (t.dtype) {
        case DType::F64: v[i] = Scalar(load<double>(p, i)); break;
        case DType::F32: v[i] = Scalar(load<float>(p, i)); break;
        case DType::F16:
          v[i] = Scalar(float(Eigen::numext::bit_cast<Eigen::half>(load<std::uint16_t>(p, i))));
          break;
        case DType::BF16:
          v[i] = Scalar(
              float(Eigen::numext::bit_cast<Eigen::bfloat16>(load<std::uint16_t>(p, i))));
          break;
        default:
          throw format_error(path_ + ": tensor '" + name + "' has dtype " +
                             dtype_name(t.dtype) + ", expected F64, F32, F16 or BF16");
      }
    }
    return v;
  }

 private:
  using Index = Eigen::Index;

  template <class T>
  static T load(const char* p, std::size_t i) {
    T x;
    std::memcpy(&x, p + i * sizeof(T), sizeof(T));
    return x;
  }
  void check_dim(const std::string& name, int axis, std::int64_t got, std::int64_t want) const {
    if (want >= 0 && got != want)
      throw format_error(path_ + ": tensor '" + name + "' has size " + std::to_string(got) +
                         " on axis " + std::to_string(axis) + ", expected " +
                         std::to_string(want));
  }

  void parse() {
    if (bytes_.size() < 8) throw format_error(path_ + ": file too short for a safetensors header");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | std::uint8_t(bytes_[std::size_t(i)]);
    if (n > bytes_.size() - 8)
      throw format_error(path_ + ": header length " + std::to_string(n) +
                         " exceeds the file size " + std::to_string(bytes_.size()) +
                         " (truncated or not a safetensors file)");
    data_start_ = 8 + std::size_t(n);
    const std::size_t data_size = bytes_.size() - data_start_;
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(bytes_.begin() + 8, bytes_.begin() + std::ptrdiff_t(data_start_));
    } catch (const nlohmann::json::exception& e) {
      throw format_error(path_ + ": header is not valid JSON (" + e.what() + ")");
    }
    if (!header.is_object()) throw format_error(path_ + ": header is not a JSON object");
    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& key = it.key();
      const auto& v = it.value();
      if (key == "__metadata__") {
        if (!v.is_object()) throw format_error(path_ + ": __metadata__ must be an object");
        for (auto m = v.begin(); m != v.end(); ++m)
          if (m.value().is_string()) metadata_[m.key()] = m.value().get<std::string>();
        continue;
      }
      if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
          !v.contains("data_offsets") || !v["dtype"].is_string() || !v["shape"].is_array() ||
          !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
        throw format_error(path_ + ": tensor '" + key +
                           "' needs dtype, shape and two data_offsets");
      TensorInfo t;
      if (!parse_dtype(v["dtype"].get<std::string>(), t.dtype))
        throw format_error(path_ + ": tensor '" + key + "' has unknown dtype " +
                           v["dtype"].get<std::string>());
      std::size_t numel = 1;
      for (const auto& d : v["shape"]) {
        if (!d.is_number_integer() || d.get<std::int64_t>() < 0)
          throw format_error(path_ + ": tensor '" + key + "' has a bad shape");
        const auto dim = std::uint64_t(d.get<std::int64_t>());
        if (dim != 0 && numel > std::numeric_limits<std::size_t>::max() / dim)
          throw format_error(path_ + ": tensor '" + key + "' shape overflows");
        numel *= std::size_t(dim);
        t.shape.push_back(std::int64_t(dim));
      }
      for (const auto& o : v["data_offsets"])
        if (!o.is_number_unsigned())
          throw format_error(path_ + ": tensor '" + key + "' has bad data_offsets");
      t.begin = v["data_offsets"][0].get<std::uint64_t>();
      t.end = v["data_offsets"][1].get<std::uint64_t>();
      if (t.begin > t.end || t.end > data_size)
        throw format_error(path_ + ": tensor '" + key + "' data [" + std::to_string(t.begin) +
                           ", " + std::to_string(t.end) + ") lies outside the " +
                           std::to_string(data_size) + "-byte data section (truncated file?)");
      if (numel > std::numeric_limits<std::size_t>::max() / dtype_size(t.dtype) ||
          t.end - t.begin != numel * dtype_size(t.dtype))
        throw format_error(path_ + ": tensor '" + key + "' byte size " +
                           std::to_string(t.end - t.begin) + " does not match its shape and dtype");
      tensors_[key] = t;
    }
  }

  std::string path_;
  std::vector<char> bytes_;
  std::size_t data_start_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Collects tensors, then writes them in one go (header padded to 8 bytes).
class SafetensorsWriter {
 public:
  template <class Derived>
  void add_matrix(const std::string& name, const Eigen::MatrixBase<Derived>& M, DType dtype) {
    std::vector<char> bytes;
    for (Eigen::Index r = 0; r < M.rows(); ++r)
      for (Eigen::Index c = 0; c < M.cols(); ++c) append(bytes, double(M(r, c)), dtype);
    add_raw(name, dtype, {std::int64_t(M.rows()), std::int64_t(M.cols())}, std::move(bytes));
  }
  template <class Derived>
  void add_vector(const std::string& name, const Eigen::MatrixBase<Derived>& v, DType dtype) {
    std::vector<char> bytes;
    for (Eigen::Index i = 0; i < v.size(); ++i) append(bytes, double(v(i)), dtype);
    add_raw(name, dtype, {std::int64_t(v.size())}, std::move(bytes));
  }
  void add_raw(const std::string& name, DType dtype, std::vector<std::int64_t> shape,
               std::vector<char> bytes) {
    entries_[name] = Entry{dtype, std::move(shape), std::move(bytes)};
  }
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  std::vector<char> bytes() const {
    nlohmann::json header = nlohmann::json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::size_t offset = 0;
    for (auto& kv : entries_) {
      header[kv.first] = {{"dtype", dtype_name(kv.second.dtype)},
                          {"shape", kv.second.shape},
                          {"data_offsets", {offset, offset + kv.second.bytes.size()}}};
      offset += kv.second.bytes.size();
    }
    std::string h = header.dump();
    while (h.size() % 8) h.push_back(' ');
    std::vector<char> out(8);
    std::uint64_t n = h.size();
    for (int i = 0; i < 8; ++i) out[std::size_t(i)] = char((n >> (8 * i)) & 0xff);
    out.insert(out.end(), h.begin(), h.end());
    for (auto& kv : entries_) out.insert(out.end(), kv.second.bytes.begin(), kv.second.bytes.end());
    return out;
  }
  void write(const std::string& path) const {
    std::ofstream f(path, std::ios::binary);
    if (!f) throw format_error(path + ": cannot open for writing");
    const std::vector<char> b = bytes();
    f.write(b.data(), std::streamsize(b.size()));
    if (!f) throw format_error(path + ": write failed");
  }

 private:
  struct Entry {
    DType dtype;
    std::vector<std::int64_t> shape;
    std::vector<char> bytes;
  };
  template <class T>
  static void put(std::vector<char>& b, T x) {
    char raw[sizeof(T)];
    std::memcpy(raw, &x, sizeof(T));
    b.insert(b.end(), raw, raw + sizeof(T));
  }
  static void append(std::vector<char>& b, double v, DType t) {
    switch (t) {
      case DType::F64: put(b, v); break;
      case DType::F32: put(b, float(v)); break;
      case DType::F16: put(b, Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(float(v)))); break;
      case DType::BF16:
        put(b, Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(float(v))));
        break;
      case DType::I64: put(b, std::int64_t(v)); break;
      case DType::I32: put(b, std::int32_t(v)); break;
      case DType::I16: put(b, std::int16_t(v)); break;
      case DType::I8: put(b, std::int8_t(v)); break;
      case DType::U8: case DType::BOOL: put(b, std::uint8_t(v)); break;
    }
  }
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace io
}  // namespace loaq
