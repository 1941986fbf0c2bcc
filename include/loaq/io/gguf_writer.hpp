// GGUF writer (optional: not included by loaq.hpp). Builds a version 3 file from metadata
// values (GgufValue) and tensors given as raw bytes in any ggml type, e.g. to write back a model
// read with GgufReader after replacing some of its tensors.
//
// Layout (all little-endian, see gguf.hpp): header, key/values in insertion order, tensor infos
// in insertion order, zero padding to the alignment, then each tensor's bytes at an offset that
// is a multiple of the alignment, each followed by zero padding to the alignment (as llama.cpp
// writes it). The alignment is `general.alignment` when set, otherwise 32.
//
// Everything is checked when it is added (tensor shape, type and byte count, the alignment
// value), so bytes() never produces a file that GgufReader would reject. write() is atomic.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "error.hpp"
#include "file.hpp"
#include "gguf.hpp"

namespace loaq {
namespace io {

class GgufWriter {
 public:
  GgufWriter() = default;

  // Every key/value of `source` in its file order; a key already set keeps its place and takes
  // the source's value.
  void copy_metadata(const GgufReader& source) {
    for (const auto& kv : source.metadata()) set(kv.first, kv.second);
  }

  // Replaces the value in place when `key` is present, else appends it. "general.alignment"
  // must be a UINT32 power of two: it decides the file layout, and readers refuse anything else.
  void set(const std::string& key, GgufValue value) {
    if (key == kAlignmentKey) alignment_ = checked_alignment(value);
    for (auto& kv : kv_)
      if (kv.first == key) {
        kv.second = std::move(value);
        return;
      }
    kv_.emplace_back(key, std::move(value));
  }

  // True when `key` was present.
  bool erase(const std::string& key) {
    for (auto it = kv_.begin(); it != kv_.end(); ++it)
      if (it->first == key) {
        kv_.erase(it);
        if (key == kAlignmentKey) alignment_ = kDefaultAlignment;
        return true;
      }
    return false;
  }

  const GgufValue* find(const std::string& key) const {
    for (const auto& kv : kv_)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }

  // `dims` in ggml order (dims[0] is the contiguous axis), `type` a ggml type id (ggml_type_info),
  // `bytes` exactly the tensor's size in that type. The checks are the reader's (plus ggml's
  // name limit), so a tensor that could not be read back is refused here, with its name in the
  // message.
  void add_tensor(const std::string& name, std::vector<std::uint64_t> dims, std::uint32_t type,
                  std::vector<std::uint8_t> bytes) {
    const std::string what = "gguf: tensor '" + name + "'";
    // llama.cpp's loader refuses a name that does not fit GGML_MAX_NAME (64) with its NUL.
    if (name.size() >= kMaxNameBytes)
      throw format_error(what + " has a " + std::to_string(name.size()) +
                         "-byte name, ggml allows at most " + std::to_string(kMaxNameBytes - 1));
    const GgmlTypeInfo* ti = ggml_type_info(type);
    if (!ti) throw format_error(what + " has unknown ggml type " + std::to_string(type));
    if (dims.empty() || dims.size() > kMaxDims)
      throw format_error(what + " has " + std::to_string(dims.size()) +
                         " dimensions, 1 to 4 are allowed");
    std::uint64_t n_elements = 1;
    for (std::uint64_t d : dims) {
      // ggml stores int64: anything above 2^63 - 1 would read back as negative.
      if (d > kMaxInt64 || (d != 0 && n_elements > kMaxInt64 / d))
        throw format_error(what + " has an invalid or overflowing shape");
      n_elements *= d;
    }
    if (dims[0] % ti->block != 0)
      throw format_error(what + " row length " + std::to_string(dims[0]) +
                         " is not a multiple of the " + ti->name + " block size " +
                         std::to_string(ti->block));
    const std::uint64_t blocks = n_elements / ti->block;
    if (blocks > std::numeric_limits<std::uint64_t>::max() / ti->bytes ||
        bytes.size() != blocks * ti->bytes)
      throw format_error(what + " has " + std::to_string(bytes.size()) + " bytes, its shape and " +
                         ti->name + " type need " +
                         (blocks > std::numeric_limits<std::uint64_t>::max() / ti->bytes
                              ? std::string("more than 2^64")
                              : std::to_string(blocks * ti->bytes)));
    if (!names_.insert(name).second) throw format_error("gguf: duplicate tensor name '" + name + "'");
    tensors_.push_back(Tensor{name, std::move(dims), type, std::move(bytes)});
  }

  std::size_t tensor_count() const { return tensors_.size(); }

  // The whole file in memory.
  std::vector<std::uint8_t> bytes() const {
    std::vector<std::uint8_t> out = {'G', 'G', 'U', 'F'};
    put(out, kVersion, 4);
    put(out, tensors_.size(), 8);
    put(out, kv_.size(), 8);
    for (const auto& kv : kv_) {
      put_string(out, kv.first);
      put(out, std::uint32_t(kv.second.type()), 4);
      put_value(out, kv.second);
    }
    std::uint64_t offset = 0;  // from the start of the data section
    for (const Tensor& t : tensors_) {
      put_string(out, t.name);
      put(out, t.dims.size(), 4);
      for (std::uint64_t d : t.dims) put(out, d, 8);
      put(out, t.type, 4);
      put(out, offset, 8);
      offset += padded(t.bytes.size());
    }
    // The data section, sized once: the zeros of the padding come from the resize.
    const std::size_t data_start = padded(out.size());
    out.resize(data_start + std::size_t(offset), 0);
    std::size_t at = data_start;
    for (const Tensor& t : tensors_) {
      if (!t.bytes.empty()) std::memcpy(out.data() + at, t.bytes.data(), t.bytes.size());
      at += padded(t.bytes.size());
    }
    return out;
  }

  // Atomic (write_file_atomic): `path` is either replaced whole or left untouched, and may be
  // the file a GgufReader was built from (the reader holds its own copy of the bytes).
  void write(const std::string& path) const {
    const std::vector<std::uint8_t> b = bytes();
    write_file_atomic(path, b.data(), b.size());
  }

 private:
  static constexpr std::uint32_t kVersion = 3;
  static constexpr std::size_t kDefaultAlignment = 32;
  static constexpr std::size_t kMaxDims = 4;         // GGML_MAX_DIMS
  static constexpr std::size_t kMaxNameBytes = 64;   // GGML_MAX_NAME, the NUL included
  static constexpr std::uint64_t kMaxInt64 = std::uint64_t(std::numeric_limits<std::int64_t>::max());
  static constexpr const char* kAlignmentKey = "general.alignment";

  struct Tensor {
    std::string name;
    std::vector<std::uint64_t> dims;
    std::uint32_t type;
    std::vector<std::uint8_t> bytes;
  };

  static std::size_t checked_alignment(const GgufValue& v) {
    if (v.type() != GgufValueType::UINT32)
      throw format_error(std::string("gguf: general.alignment must be UINT32, is ") +
                         gguf_type_name(v.type()));
    const std::uint64_t a = v.as_uint();
    if (a == 0 || (a & (a - 1)) != 0)
      throw format_error("gguf: general.alignment " + std::to_string(a) +
                         " is not a power of two");
    return std::size_t(a);
  }

  std::size_t padded(std::size_t n) const { return (n + alignment_ - 1) / alignment_ * alignment_; }

  static void put(std::vector<std::uint8_t>& out, std::uint64_t x, std::size_t width) {
    for (std::size_t k = 0; k < width; ++k) out.push_back(std::uint8_t(x >> (8 * k)));
  }
  static void put_string(std::vector<std::uint8_t>& out, const std::string& s) {
    put(out, s.size(), 8);
    out.insert(out.end(), s.begin(), s.end());
  }
  // A value without its type tag, in its own stored type. An array element of type ARRAY is
  // written the same way (element type, count, elements), which is how GGUF nests arrays.
  static void put_value(std::vector<std::uint8_t>& out, const GgufValue& v) {
    switch (v.type_) {
      case GgufValueType::STRING:
        put_string(out, v.str_);
        return;
      case GgufValueType::ARRAY:
        put(out, std::uint32_t(v.elem_), 4);
        put(out, v.count_, 8);
        if (v.elem_ == GgufValueType::STRING) {
          for (const std::string& s : v.strings_) put_string(out, s);
        } else if (v.elem_ == GgufValueType::ARRAY) {
          for (const GgufValue& a : v.arrays_) put_value(out, a);
        } else {
          out.insert(out.end(), v.raw_.begin(), v.raw_.end());  // already little-endian
        }
        return;
      case GgufValueType::BOOL:
        put(out, v.u_ != 0, 1);  // 0 or 1, the only bytes a reader accepts
        return;
      default:
        put(out, v.scalar_bits(), gguf_scalar_size(v.type_));
    }
  }

  std::size_t alignment_ = kDefaultAlignment;
  std::vector<std::pair<std::string, GgufValue>> kv_;  // few keys: a linear search is enough
  std::vector<Tensor> tensors_;
  std::set<std::string> names_;
};

}  // namespace io
}  // namespace loaq
