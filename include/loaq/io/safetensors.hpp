// safetensors reader and writer (optional: needs nlohmann-json; not included by loaq.hpp).
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape,
// data_offsets: [begin, end)}} (offsets relative to the byte after the header), then the data.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "error.hpp"
#include "../linalg/transpose.hpp"
#include "file.hpp"

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

// Reads the 8-byte header length, checks it against kMaxHeaderBytes and (for a regular file)
// the file size, then reads and validates the header. A regular file stays open and each tensor
// is read from it when asked for, so a program pays (in time and memory) only for the tensors it
// uses; a stream (a FIFO, standard input) is read up to the end of the data section the header
// declares. Nothing is allocated that the file has not backed with bytes: /dev/zero, a FIFO, a
// file with a lying header or a huge file with a small header are all handled. Every malformed,
// truncated or lying input is a format_error, and so is a file cut short after it was opened.
class SafetensorsReader {
 public:
  // The safetensors specification's limit on the JSON header (100 MB).
  static constexpr std::uint64_t kMaxHeaderBytes = 100000000;
  // JSON nesting a valid header never exceeds ({name: {shape: [..]}} is depth 3).
  static constexpr std::size_t kMaxHeaderDepth = 16;

  explicit SafetensorsReader(const std::string& path) : path_(path) {
    std::error_code ec;
    const auto st = std::filesystem::status(path, ec);
    if (ec) throw format_error(path + ": cannot open file (" + ec.message() + ")");
    if (std::filesystem::is_directory(st)) throw format_error(path + ": is a directory");
    const bool regular = std::filesystem::is_regular_file(st);
    std::uint64_t file_size = 0;
    if (regular) {
      file_size = std::filesystem::file_size(path, ec);
      if (ec) throw format_error(path + ": cannot determine the file size (" + ec.message() + ")");
    }
    std::ifstream f(path, std::ios::binary);
    if (!f) throw format_error(path + ": cannot open file (" + std::strerror(errno) + ")");
    if (read_bounded(f, 8, bytes_, path_) < 8)
      throw format_error(path_ + ": file too short for a safetensors header (" +
                         std::to_string(bytes_.size()) + " bytes)");
    const std::uint64_t n = header_length();
    if (regular && n > file_size - 8)
      throw format_error(path_ + ": header length " + std::to_string(n) +
                         " exceeds the file size " + std::to_string(file_size) +
                         " (truncated or not a safetensors file)");
    if (read_bounded(f, n, bytes_, path_) < n)
      throw format_error(path_ + ": file ends inside the " + std::to_string(n) +
                         "-byte header (truncated)");
    data_start_ = 8 + std::size_t(n);
    // A regular file's data section is the rest of the file; a stream's is what the header says.
    const std::uint64_t declared =
        parse_header(regular ? file_size - data_start_ : std::numeric_limits<std::uint64_t>::max());
    if (regular) {  // every tensor lies within the file (parse_header checked): read on demand
      file_ = std::make_shared<OpenFile>();
      file_->in = std::move(f);
      return;
    }
    if (read_bounded(f, declared, bytes_, path_) < declared)
      throw format_error(path_ + ": file ends inside the " + std::to_string(declared) +
                         "-byte data section the header declares (truncated)");
  }
  SafetensorsReader(std::vector<char> bytes, std::string name)
      : path_(std::move(name)), bytes_(std::move(bytes)) {
    if (bytes_.size() < 8) throw format_error(path_ + ": file too short for a safetensors header");
    const std::uint64_t n = header_length();
    if (n > bytes_.size() - 8)
      throw format_error(path_ + ": header length " + std::to_string(n) +
                         " exceeds the file size " + std::to_string(bytes_.size()) +
                         " (truncated or not a safetensors file)");
    data_start_ = 8 + std::size_t(n);
    parse_header(bytes_.size() - data_start_);
  }

  // Tensor names in sorted order.
  std::vector<std::string> tensor_names() const {
    std::vector<std::string> v;
    for (auto& kv : tensors_) v.push_back(kv.first);
    return v;
  }
  // A tensor's bytes exactly as stored (any dtype).
  std::vector<char> raw(const std::string& name) const {
    const TensorInfo& t = info(name);
    if (!file_) {
      const char* p = bytes_.data() + data_start_ + t.begin;
      return std::vector<char>(p, p + (t.end - t.begin));
    }
    std::vector<char> v(t.end - t.begin);
    read_from_file(name, t.begin, v.data(), v.size());
    return v;
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
    check_floating(name, t);
    const Index r = Index(t.shape[0]), c = Index(t.shape[1]);
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> M(r, c);
    // An empty tensor may declare a huge other axis: no loop over it.
    if (t.numel() == 0) return M;
    std::vector<Scalar> converted;
    for_each_row_chunk(name, t, [&](const char* p, Index r0, Index rows) {
      Scalar* dst = M.data() + r0;
      // F32/F64 stored aligned (the usual case): one tiled transposing cast, no copy.
      if (t.dtype == DType::F32 && reinterpret_cast<std::uintptr_t>(p) % alignof(float) == 0)
        return copy_row_major_to_column_major(reinterpret_cast<const float*>(p), rows, c, c, dst,
                                              r);
      if (t.dtype == DType::F64 && reinterpret_cast<std::uintptr_t>(p) % alignof(double) == 0)
        return copy_row_major_to_column_major(reinterpret_cast<const double*>(p), rows, c, c, dst,
                                              r);
      converted.resize(std::size_t(rows * c));
      convert(p, t.dtype, converted.size(), converted.data());
      copy_row_major_to_column_major(converted.data(), rows, c, c, dst, r);
    });
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
    check_floating(name, t);
    std::vector<Scalar> v(t.numel());
    if (!file_) {
      convert(bytes_.data() + data_start_ + t.begin, t.dtype, v.size(), v.data());
    } else {
      const std::vector<char> bytes = raw(name);
      convert(bytes.data(), t.dtype, v.size(), v.data());
    }
    return v;
  }

 private:
  using Index = Eigen::Index;

  // A regular file, kept open so that tensors are read when asked for. The lock makes the
  // reader's const methods safe to call from several threads, as they were when every byte was
  // in memory; copies of the reader share the file.
  struct OpenFile {
    std::ifstream in;
    std::mutex lock;
  };

  // Bytes [begin, begin + size) of the data section, from the open file.
  void read_from_file(const std::string& name, std::uint64_t begin, char* dst,
                      std::size_t size) const {
    std::lock_guard<std::mutex> guard(file_->lock);
    file_->in.clear();
    file_->in.seekg(std::streamoff(data_start_ + begin));
    file_->in.read(dst, std::streamsize(size));
    if (std::size_t(file_->in.gcount()) != size)
      throw format_error(path_ + ": file ends inside tensor '" + name +
                         "' (it was truncated after it was opened)");
  }

  // Rows of a row-major tensor are read this many bytes at a time (whole rows, at least one):
  // the chunk stays in L2 for the transposing copy, and no buffer of the whole tensor is made.
  // (4 MiB cost a SmolLM2 layer's cold read 2–3 ms more, in page faults on the chunk itself.)
  static constexpr std::size_t kChunkBytes = std::size_t(512) << 10;

  // Calls f(bytes, first_row, rows) over consecutive runs of whole rows of the 2-D tensor t:
  // once with all of it when the data is in memory, else chunk by chunk from the file.
  template <class F>
  void for_each_row_chunk(const std::string& name, const TensorInfo& t, F&& f) const {
    const Index rows = Index(t.shape[0]);
    const std::size_t row_bytes = (t.end - t.begin) / std::size_t(rows);
    if (!file_) return f(bytes_.data() + data_start_ + t.begin, Index(0), rows);
    Index step = std::max<Index>(1, Index(kChunkBytes / row_bytes));
    if (step >= 8) step = step / 8 * 8;  // whole 8 × 8 tiles for the transposing copy
    step = std::min(step, rows);
    std::vector<char> chunk(std::size_t(step) * row_bytes);
    for (Index r0 = 0; r0 < rows; r0 += step) {
      const Index k = std::min(step, rows - r0);
      read_from_file(name, t.begin + std::uint64_t(r0) * row_bytes, chunk.data(),
                     std::size_t(k) * row_bytes);
      f(static_cast<const char*>(chunk.data()), r0, k);
    }
  }

  void check_floating(const std::string& name, const TensorInfo& t) const {
    if (t.dtype != DType::F64 && t.dtype != DType::F32 && t.dtype != DType::F16 &&
        t.dtype != DType::BF16)
      throw format_error(path_ + ": tensor '" + name + "' has dtype " + dtype_name(t.dtype) +
                         ", expected F64, F32, F16 or BF16");
  }

  // k floating values of a checked dtype from p (any alignment) to out.
  template <class Scalar>
  static void convert(const char* p, DType dtype, std::size_t k, Scalar* out) {
    for (std::size_t i = 0; i < k; ++i) {
      switch (dtype) {
        case DType::F64: out[i] = Scalar(load<double>(p, i)); break;
        case DType::F32: out[i] = Scalar(load<float>(p, i)); break;
        case DType::F16:
          out[i] = Scalar(float(Eigen::numext::bit_cast<Eigen::half>(load<std::uint16_t>(p, i))));
          break;
        default:  // BF16
          out[i] = Scalar(
              float(Eigen::numext::bit_cast<Eigen::bfloat16>(load<std::uint16_t>(p, i))));
      }
    }
  }

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

  // The u64 little-endian header length in bytes_[0..8), checked against kMaxHeaderBytes.
  std::uint64_t header_length() const {
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | std::uint8_t(bytes_[std::size_t(i)]);
    if (n < 2)
      throw format_error(path_ + ": header length " + std::to_string(n) +
                         " is too small for a JSON header (not a safetensors file)");
    if (n > kMaxHeaderBytes)
      throw format_error(path_ + ": header length " + std::to_string(n) + " exceeds the " +
                         std::to_string(kMaxHeaderBytes) +
                         "-byte limit (corrupt or not a safetensors file)");
    return n;
  }

  struct too_deep {};

  // Parses and validates the JSON header in bytes_[8, data_start_); every tensor must lie
  // within `data_size` bytes after the header. Returns the data section size the tensors
  // declare (the largest end offset).
  std::uint64_t parse_header(std::uint64_t data_size) {
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(
          bytes_.begin() + 8, bytes_.begin() + std::ptrdiff_t(data_start_),
          [](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
            if (std::size_t(depth) > kMaxHeaderDepth) throw too_deep{};
            return true;
          });
    } catch (const nlohmann::json::exception& e) {
      throw format_error(path_ + ": header is not valid JSON (" + e.what() + ")");
    } catch (const too_deep&) {
      throw format_error(path_ + ": header nests deeper than " + std::to_string(kMaxHeaderDepth) +
                         " levels (not a safetensors header)");
    } catch (const std::bad_alloc&) {
      throw format_error(path_ + ": out of memory parsing the " +
                         std::to_string(data_start_ - 8) + "-byte header");
    }
    try {
      return interpret_header(header, data_size);
    } catch (const nlohmann::json::exception& e) {
      throw format_error(path_ + ": malformed header (" + e.what() + ")");
    }
  }

  std::uint64_t interpret_header(const nlohmann::json& header, std::uint64_t data_size) {
    if (!header.is_object()) throw format_error(path_ + ": header is not a JSON object");
    std::uint64_t declared = 0;
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
      declared = std::max<std::uint64_t>(declared, t.end);
      tensors_[key] = t;
    }
    return declared;
  }

  std::string path_;
  std::vector<char> bytes_;  // the header, and the data section unless it is read from file_
  std::shared_ptr<OpenFile> file_;
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
    // The common dtypes in one vectorized transposing cast; the rest value by value.
    if (dtype == DType::F32) bytes = row_major_bytes<float>(M);
    else if (dtype == DType::F64) bytes = row_major_bytes<double>(M);
    else if (dtype == DType::U8) bytes = row_major_bytes<std::uint8_t>(M);
    else
      for (Eigen::Index r = 0; r < M.rows(); ++r)
        for (Eigen::Index c = 0; c < M.cols(); ++c) append(bytes, double(M(r, c)), dtype);
    add_raw(name, dtype, {std::int64_t(M.rows()), std::int64_t(M.cols())}, std::move(bytes));
  }
  // As add_matrix for a column-major matrix, without the converted copy: M's rows are turned into
  // bytes a few at a time while write() or bytes() runs, so M must stay alive and unchanged until
  // then. For an output as large as the solve's weight this saves the whole row-major copy (and
  // the fresh memory it would touch). F32, F64 and U8; other dtypes are converted now, as by
  // add_matrix.
  template <class S>
  void add_matrix_view(const std::string& name,
                       const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>& M, DType dtype) {
    if (dtype == DType::F32) add_view<float>(name, M, dtype);
    else if (dtype == DType::F64) add_view<double>(name, M, dtype);
    else if (dtype == DType::U8) add_view<std::uint8_t>(name, M, dtype);
    else add_matrix(name, M, dtype);
  }
  template <class S>
  void add_matrix_view(const std::string&, const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>&&,
                       DType) = delete;  // a temporary would be gone by write()

  template <class Derived>
  void add_vector(const std::string& name, const Eigen::MatrixBase<Derived>& v, DType dtype) {
    std::vector<char> bytes;
    for (Eigen::Index i = 0; i < v.size(); ++i) append(bytes, double(v(i)), dtype);
    add_raw(name, dtype, {std::int64_t(v.size())}, std::move(bytes));
  }
  // The bytes must match the shape and dtype (a file the reader would reject is never written).
  void add_raw(const std::string& name, DType dtype, std::vector<std::int64_t> shape,
               std::vector<char> bytes) {
    check_name(name);
    std::size_t numel = 1;
    for (std::int64_t d : shape) {
      if (d < 0 || (d != 0 && numel > std::numeric_limits<std::size_t>::max() / std::uint64_t(d)))
        throw format_error("safetensors: tensor '" + name + "' has a bad shape");
      numel *= std::size_t(d);
    }
    if (numel > std::numeric_limits<std::size_t>::max() / dtype_size(dtype) ||
        bytes.size() != numel * dtype_size(dtype))
      throw format_error("safetensors: tensor '" + name + "' has " +
                         std::to_string(bytes.size()) + " bytes, its shape and dtype need " +
                         std::to_string(numel * dtype_size(dtype)));
    const std::size_t size = bytes.size();
    entries_[name] = Entry{dtype, std::move(shape), std::move(bytes), size, {}, 1};
  }
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  // The whole file in memory.
  std::vector<char> bytes() const {
    const std::vector<char> head = header();
    const std::vector<ByteSpan> parts = pieces(head);
    std::size_t size = 0;
    for (const ByteSpan& part : parts) size += part.size;
    std::vector<char> out(size);
    std::size_t at = 0;
    send_pieces(parts, [&](const char* p, std::size_t n) {
      std::memcpy(out.data() + at, p, n);
      at += n;
    });
    return out;
  }
  // Atomic: written to a temporary file in the same folder, flushed, then renamed over `path`
  // (write_file_atomic), so `path` is never half written and may be the file being read. The
  // tensors go out from where they lie (views a few rows at a time), never gathered into one
  // buffer first.
  void write(const std::string& path) const {
    const std::vector<char> head = header();
    write_file_atomic(path, pieces(head));
  }

 private:
  struct Entry {
    DType dtype;
    std::vector<std::int64_t> shape;
    std::vector<char> bytes;  // converted already, or empty for a view
    std::size_t size;         // bytes in the file
    std::function<void(char*, std::size_t, std::size_t)> fill;  // a view's bytes, made on demand
    std::size_t granule;      // a view's bytes per chunk step (whole rows)
  };
  static void check_name(const std::string& name) {
    if (name == "__metadata__")
      throw format_error("safetensors: '__metadata__' cannot be a tensor name");
  }
  std::vector<ByteSpan> pieces(const std::vector<char>& head) const {
    std::vector<ByteSpan> parts{{head.data(), head.size()}};
    for (auto& kv : entries_) {
      const Entry& e = kv.second;
      if (e.fill) parts.push_back({nullptr, e.size, e.fill, e.granule});
      else parts.push_back({e.bytes.data(), e.size});
    }
    return parts;
  }
  template <class T, class S>
  void add_view(const std::string& name, const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>& M,
                DType dtype) {
    check_name(name);
    const S* data = M.data();
    const Eigen::Index m = M.rows(), n = M.cols();
    const std::size_t row_bytes = std::size_t(n) * sizeof(T);
    // Rows [first / row_bytes, …) of M as T, row by row: the transposing copy of those rows.
    auto fill = [data, m, n, row_bytes](char* out, std::size_t first, std::size_t count) {
      const Eigen::Index r0 = Eigen::Index(first / row_bytes), rows = Eigen::Index(count / row_bytes);
      copy_row_major_to_column_major(data + r0, n, rows, m, reinterpret_cast<T*>(out), n);
    };
    // Eight rows at a time where they fit in a chunk: whole 8 × 8 tiles, no ragged edge.
    const std::size_t granule =
        row_bytes == 0 ? 1 : 8 * row_bytes <= kWriteChunk ? 8 * row_bytes : row_bytes;
    entries_[name] = Entry{dtype, {std::int64_t(m), std::int64_t(n)}, {},
                           std::size_t(m) * row_bytes, fill, granule};
  }
  // The 8-byte header length and the JSON header, padded to 8 bytes.
  std::vector<char> header() const {
    nlohmann::json json = nlohmann::json::object();
    if (!metadata_.empty()) json["__metadata__"] = metadata_;
    std::size_t offset = 0;
    for (auto& kv : entries_) {
      json[kv.first] = {{"dtype", dtype_name(kv.second.dtype)},
                        {"shape", kv.second.shape},
                        {"data_offsets", {offset, offset + kv.second.size}}};
      offset += kv.second.size;
    }
    std::string h;
    try {
      h = json.dump();
    } catch (const nlohmann::json::exception& e) {
      // Names and metadata must be valid UTF-8 (JSON).
      throw format_error(std::string("safetensors: cannot encode the header (") + e.what() + ")");
    }
    while (h.size() % 8) h.push_back(' ');
    std::vector<char> out(8 + h.size());
    const std::uint64_t n = h.size();
    for (int i = 0; i < 8; ++i) out[std::size_t(i)] = char((n >> (8 * i)) & 0xff);
    std::memcpy(out.data() + 8, h.data(), h.size());
    return out;
  }
  // M's entries row by row as T: a column-major m × n matrix read row by row is its n × m
  // transpose, so one tiled transposing cast writes the bytes.
  template <class T, class Derived>
  static std::vector<char> row_major_bytes(const Eigen::MatrixBase<Derived>& M) {
    using S = typename Derived::Scalar;
    const Eigen::Ref<const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>> cm(M.derived());
    std::vector<char> b(std::size_t(M.size()) * sizeof(T));
    if (!b.empty())
      copy_row_major_to_column_major(cm.data(), cm.cols(), cm.rows(), cm.outerStride(),
                                     reinterpret_cast<T*>(b.data()), cm.cols());
    return b;
  }
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
