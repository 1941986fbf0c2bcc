// GGUF reader: metadata of every value type, tensor table and alignment, dequantization of every
// supported type, and every malformed file (truncated, corrupted, inconsistent) is a format_error.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <loaq/io/gguf.hpp>
#include <random>

using loaq::io::format_error;
using loaq::io::GgufReader;
using loaq::io::GgufValueType;
using Bytes = std::vector<std::uint8_t>;

namespace {

// Minimal GGUF writer for tests: values are appended already encoded, tensors get offsets in
// insertion order with the file's alignment.
class GgufWriter {
 public:
  explicit GgufWriter(std::uint32_t version = 3) : version_(version) {}

  // Encoders for one value (without the type tag).
  static void put(Bytes& b, std::uint64_t x, std::size_t w) {
    for (std::size_t k = 0; k < w; ++k) b.push_back(std::uint8_t(x >> (8 * k)));
  }
  static void put_str(Bytes& b, const std::string& s) {
    put(b, s.size(), 8);
    b.insert(b.end(), s.begin(), s.end());
  }
  static std::uint32_t f32_bits(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
  }
  static std::uint64_t f64_bits(double f) {
    std::uint64_t u;
    std::memcpy(&u, &f, 8);
    return u;
  }

  void kv_raw(const std::string& key, GgufValueType t, const Bytes& value) {
    put_str(kv_, key);
    put(kv_, std::uint32_t(t), 4);
    kv_.insert(kv_.end(), value.begin(), value.end());
    ++n_kv_;
  }
  void kv_uint(const std::string& key, GgufValueType t, std::uint64_t x) {
    Bytes b;
    put(b, x, loaq::io::gguf_scalar_size(t));
    kv_raw(key, t, b);
  }
  void kv_string(const std::string& key, const std::string& s) {
    Bytes b;
    put_str(b, s);
    kv_raw(key, GgufValueType::STRING, b);
  }
  void kv_strings(const std::string& key, const std::vector<std::string>& v) {
    Bytes b;
    put(b, std::uint32_t(GgufValueType::STRING), 4);
    put(b, v.size(), 8);
    for (const auto& s : v) put_str(b, s);
    kv_raw(key, GgufValueType::ARRAY, b);
  }
  void kv_int32s(const std::string& key, const std::vector<std::int32_t>& v) {
    Bytes b;
    put(b, std::uint32_t(GgufValueType::INT32), 4);
    put(b, v.size(), 8);
    for (auto x : v) put(b, std::uint32_t(x), 4);
    kv_raw(key, GgufValueType::ARRAY, b);
  }
  void alignment(std::uint32_t a) {
    align_ = a;
    kv_uint("general.alignment", GgufValueType::UINT32, a);
  }

  void tensor(const std::string& name, std::vector<std::uint64_t> dims, std::uint32_t type,
              const Bytes& data) {
    while (data_.size() % align_) data_.push_back(0);
    put_str(ti_, name);
    put(ti_, dims.size(), 4);
    for (auto d : dims) put(ti_, d, 8);
    put(ti_, type, 4);
    put(ti_, data_.size(), 8);
    data_.insert(data_.end(), data.begin(), data.end());
    ++n_tensors_;
  }

  Bytes bytes() const {
    Bytes b = {'G', 'G', 'U', 'F'};
    put(b, version_, 4);
    put(b, n_tensors_, 8);
    put(b, n_kv_, 8);
    b.insert(b.end(), kv_.begin(), kv_.end());
    b.insert(b.end(), ti_.begin(), ti_.end());
    while (b.size() % align_) b.push_back(0);
    b.insert(b.end(), data_.begin(), data_.end());
    return b;
  }

 private:
  std::uint32_t version_;
  std::uint64_t n_kv_ = 0, n_tensors_ = 0;
  std::size_t align_ = 32;
  Bytes kv_, ti_, data_;
};

Bytes f32_data(const std::vector<float>& v) {
  Bytes b;
  for (float x : v) GgufWriter::put(b, GgufWriter::f32_bits(x), 4);
  return b;
}
std::uint16_t half_bits(float x) { return Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(x)); }

// One block of 32 4-bit codes q[j] = j % 16 with f16 scale d (and offset m for Q4_1).
Bytes q4_block(float d, const float* m) {
  Bytes b;
  GgufWriter::put(b, half_bits(d), 2);
  if (m) GgufWriter::put(b, half_bits(*m), 2);
  for (int j = 0; j < 16; ++j) b.push_back(std::uint8_t((j % 16) | (((j + 16) % 16) << 4)));
  return b;
}

// A small but complete file: metadata of several types and a few tensors.
Bytes small_file() {
  GgufWriter w;
  w.kv_string("general.architecture", "llama");
  w.kv_uint("llama.block_count", GgufValueType::UINT32, 2);
  w.kv_strings("tokenizer.ggml.tokens", {"a", "b", "ab"});
  w.kv_int32s("tokenizer.ggml.token_type", {1, 1, 3});
  w.tensor("norm", {4}, loaq::io::ggml_type::F32, f32_data({1, 2, 3, 4}));
  w.tensor("w", {32, 2}, loaq::io::ggml_type::Q8_0, [] {
    Bytes b;
    for (int r = 0; r < 2; ++r) {
      GgufWriter::put(b, half_bits(0.5f), 2);
      for (int j = 0; j < 32; ++j) b.push_back(std::uint8_t(std::int8_t(j - 16)));
    }
    return b;
  }());
  return w.bytes();
}

// Parse and touch everything; only format_error may escape.
void read_everything(const Bytes& b) {
  GgufReader r(b, "fuzz");
  for (const auto& kv : r.metadata()) {
    const auto& v = kv.second;
    try {
      if (v.is_array()) {
        for (std::size_t i = 0; i < v.size(); ++i) (void)v.element(i);
      } else if (v.is_string()) {
        (void)v.as_string().size();
      } else {
        (void)v.as_double();
      }
    } catch (const format_error&) {
    }
  }
  for (const auto& t : r.tensors()) (void)r.dequantize(t);
}

}  // namespace

TEST_CASE("gguf metadata: every value type, arrays and typed getters") {
  GgufWriter w;
  w.kv_uint("u8", GgufValueType::UINT8, 200);
  w.kv_uint("i8", GgufValueType::INT8, 0xFE);  // -2
  w.kv_uint("u16", GgufValueType::UINT16, 60000);
  w.kv_uint("i16", GgufValueType::INT16, 0x8000);  // -32768
  w.kv_uint("u32", GgufValueType::UINT32, 4000000000u);
  w.kv_uint("i32", GgufValueType::INT32, 0xFFFFFFFFu);  // -1
  w.kv_uint("u64", GgufValueType::UINT64, ~0ull);
  w.kv_uint("i64", GgufValueType::INT64, std::uint64_t(-5));
  w.kv_uint("f32", GgufValueType::FLOAT32, GgufWriter::f32_bits(1.5f));
  w.kv_uint("f64", GgufValueType::FLOAT64, GgufWriter::f64_bits(-0.25));
  w.kv_uint("yes", GgufValueType::BOOL, 1);
  w.kv_string("name", "SmolLM2 \xe2\x80\x94 test");
  w.kv_strings("tokens", {"<s>", "", "\xc4\xa0the"});
  w.kv_int32s("types", {1, -3, 7});
  {  // array of arrays of u16: [[1, 2], []]
    Bytes b;
    GgufWriter::put(b, std::uint32_t(GgufValueType::ARRAY), 4);
    GgufWriter::put(b, 2, 8);
    GgufWriter::put(b, std::uint32_t(GgufValueType::UINT16), 4);
    GgufWriter::put(b, 2, 8);
    GgufWriter::put(b, 1, 2);
    GgufWriter::put(b, 2, 2);
    GgufWriter::put(b, std::uint32_t(GgufValueType::UINT16), 4);
    GgufWriter::put(b, 0, 8);
    w.kv_raw("nested", GgufValueType::ARRAY, b);
  }
  const GgufReader r(w.bytes(), "mem");
  CHECK(r.version() == 3);
  CHECK(r.metadata().size() == 15);
  CHECK(r.metadata()[0].first == "u8");
  CHECK(r.get_uint("u8") == 200);
  CHECK(r.get_int("i8") == -2);
  CHECK(r.get_uint("u16") == 60000);
  CHECK(r.get_int("i16") == -32768);
  CHECK(r.get_uint("u32") == 4000000000u);
  CHECK(r.get_int("i32") == -1);
  CHECK(r.get_uint("u64") == ~0ull);
  CHECK(r.get_int("i64") == -5);
  CHECK(r.get_double("f32") == 1.5);
  CHECK(r.get_double("f64") == -0.25);
  CHECK(r.get_double("u8") == 200.0);
  CHECK(r.get_bool("yes"));
  CHECK(r.get_string("name") == "SmolLM2 \xe2\x80\x94 test");
  CHECK(r.get_strings("tokens") == std::vector<std::string>{"<s>", "", "\xc4\xa0the"});
  CHECK(r.get_ints("types") == std::vector<std::int64_t>{1, -3, 7});
  const auto& nested = r.get("nested");
  REQUIRE(nested.size() == 2);
  CHECK(nested.element(0).as_ints() == std::vector<std::int64_t>{1, 2});
  CHECK(nested.element(1).size() == 0);
  // Defaults only for missing keys; wrong types and out-of-range values name the key.
  CHECK(r.get_uint("missing", 7) == 7);
  CHECK(r.get_string("missing", "x") == "x");
  CHECK_THROWS_WITH_AS(r.get_uint("missing"), doctest::Contains("'missing' is missing"), format_error);
  CHECK_THROWS_WITH_AS(r.get_uint("name"), doctest::Contains("metadata 'name'"), format_error);
  CHECK_THROWS_WITH_AS(r.get_uint("i8"), doctest::Contains("non-negative"), format_error);
  CHECK_THROWS_WITH_AS(r.get_int("u64"), doctest::Contains("below 2^63"), format_error);
  CHECK_THROWS_AS(r.get_uint("f32", 1), format_error);
  CHECK_THROWS_AS(r.get_strings("types"), format_error);
  CHECK_THROWS_AS(r.get("types").element(3), format_error);
  CHECK(r.tensors().empty());
}

TEST_CASE("gguf tensors: dequantization of every supported type and PyTorch matrix layout") {
  GgufWriter w(2);  // version 2 has the same layout as 3
  w.tensor("f32", {3, 2}, loaq::io::ggml_type::F32, f32_data({1, 2, 3, 4, 5, 6}));
  {
    Bytes b;
    for (float x : {0.5f, -2.f, 65504.f}) GgufWriter::put(b, half_bits(x), 2);
    w.tensor("f16", {3}, loaq::io::ggml_type::F16, b);
  }
  {
    Bytes b;
    for (float x : {1.f, -0.375f}) GgufWriter::put(b, Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(x)), 2);
    w.tensor("bf16", {2}, loaq::io::ggml_type::BF16, b);
  }
  {
    Bytes b;
    GgufWriter::put(b, GgufWriter::f64_bits(2.5), 8);
    w.tensor("f64", {1}, loaq::io::ggml_type::F64, b);
  }
  w.tensor("i8", {2}, loaq::io::ggml_type::I8, Bytes{0x80, 0x7f});
  w.tensor("i16", {1}, loaq::io::ggml_type::I16, Bytes{0xff, 0xff});
  w.tensor("i32", {1}, loaq::io::ggml_type::I32, Bytes{0x00, 0x00, 0x01, 0x00});
  w.tensor("q4_0", {32}, loaq::io::ggml_type::Q4_0, q4_block(0.25f, nullptr));
  const float m = -1.5f;
  w.tensor("q4_1", {32}, loaq::io::ggml_type::Q4_1, q4_block(0.5f, &m));
  {
    Bytes b;
    GgufWriter::put(b, half_bits(0.125f), 2);
    for (int j = 0; j < 32; ++j) b.push_back(std::uint8_t(std::int8_t(j * 8 - 128)));
    w.tensor("q8_0", {32}, loaq::io::ggml_type::Q8_0, b);
  }
  w.tensor("q2_k", {256}, 10, Bytes(84, 0));  // valid table entry, no dequantizer
  const GgufReader r(w.bytes(), "mem");
  CHECK(r.version() == 2);
  CHECK(r.data_offset() % 32 == 0);

  // ggml dims {3, 2}: 2 rows of 3 contiguous values.
  Eigen::MatrixXf M = r.matrix("f32", 2, 3);
  Eigen::MatrixXf want(2, 3);
  want << 1, 2, 3, 4, 5, 6;
  CHECK(M == want);
  CHECK_THROWS_WITH_AS(r.matrix("f32", 3, 2), doctest::Contains("expected 3"), format_error);
  CHECK_THROWS_AS(r.vector("f32"), format_error);

  CHECK(r.dequantize("f16") == std::vector<float>{0.5f, -2.f, 65504.f});
  CHECK(r.dequantize("bf16") == std::vector<float>{1.f, -0.375f});
  CHECK(r.dequantize("f64") == std::vector<float>{2.5f});
  CHECK(r.dequantize("i8") == std::vector<float>{-128.f, 127.f});
  CHECK(r.dequantize("i16") == std::vector<float>{-1.f});
  CHECK(r.dequantize("i32") == std::vector<float>{65536.f});
  const auto q40 = r.dequantize("q4_0"), q41 = r.dequantize("q4_1"), q80 = r.dequantize("q8_0");
  for (int j = 0; j < 32; ++j) {
    // Low nibbles hold elements 0..15, high nibbles 16..31.
    const int code = j < 16 ? j % 16 : (j - 16 + 16) % 16;
    CHECK(q40[std::size_t(j)] == 0.25f * float(code - 8));
    CHECK(q41[std::size_t(j)] == 0.5f * float(code) + m);
    CHECK(q80[std::size_t(j)] == 0.125f * float(j * 8 - 128));
  }
  CHECK(r.tensor("q2_k").n_bytes == 84);
  CHECK_THROWS_WITH_AS(r.dequantize("q2_k"), doctest::Contains("Q2_K"), format_error);
  CHECK_THROWS_WITH_AS(r.tensor("nope"), doctest::Contains("'nope' is missing"), format_error);
}

TEST_CASE("gguf block formats equal the gguf PyPI package's dequantization") {
  // tests/data/ggml_blocks.gguf (scripts/gen_ggml_vectors.py, written by gguf-py's GGUFWriter):
  // random blocks of each type beside gguf.quants.dequantize of the same bytes.
  const GgufReader r(std::string(LOAQ_SOURCE_DIR) + "/tests/data/ggml_blocks.gguf");
  for (const std::string type : {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"}) {
    CAPTURE(type);
    REQUIRE(std::string(r.tensor(type).type_name()) == type);
    const Eigen::MatrixXf got = r.matrix(type, 2, 512);
    const Eigen::MatrixXf want = r.matrix(type + ".expected", 2, 512);
    // A contracted d·q − m (fused multiply-add) may round differently from numpy's two steps:
    // allow a few float ulps of the largest value among the 16 elements sharing a scale. A
    // wrong bit anywhere in a code or scale is off by at least one quantization step. Zeros
    // must carry the reference's sign (exports are checked bit for bit).
    Eigen::Index exact = 0;
    for (Eigen::Index i = 0; i < got.rows(); ++i)
      for (Eigen::Index j = 0; j < got.cols(); j += 16) {
        const float tol = 4 * std::numeric_limits<float>::epsilon() *
                          want.row(i).segment(j, 16).cwiseAbs().maxCoeff();
        for (Eigen::Index k = j; k < j + 16; ++k) {
          CAPTURE(i);
          CAPTURE(k);
          if (got(i, k) == want(i, k))
            REQUIRE(std::signbit(got(i, k)) == std::signbit(want(i, k)));
          else
            REQUIRE(std::abs(got(i, k) - want(i, k)) <= tol);
          exact += got(i, k) == want(i, k);
        }
      }
    MESSAGE(type << ": " << exact << " of " << got.size() << " values bit-identical");
  }
}

TEST_CASE("gguf alignment: custom alignment honoured, bad values rejected") {
  GgufWriter w;
  w.alignment(64);
  w.tensor("a", {3}, loaq::io::ggml_type::F32, f32_data({1, 2, 3}));
  w.tensor("b", {2}, loaq::io::ggml_type::F32, f32_data({4, 5}));
  const GgufReader r(w.bytes(), "mem");
  CHECK(r.alignment() == 64);
  CHECK(r.data_offset() % 64 == 0);
  CHECK(r.tensor("b").offset == 64);
  CHECK(r.dequantize("b") == std::vector<float>{4, 5});

  GgufWriter bad;
  bad.alignment(48);
  CHECK_THROWS_WITH_AS(GgufReader(bad.bytes(), "m"), doctest::Contains("power of two"), format_error);
  GgufWriter wrong_type;
  wrong_type.kv_uint("general.alignment", GgufValueType::UINT64, 32);
  CHECK_THROWS_WITH_AS(GgufReader(wrong_type.bytes(), "m"), doctest::Contains("UINT32"), format_error);
}

TEST_CASE("gguf inconsistent headers are format_errors with a reason") {
  auto expect = [](const Bytes& b, const char* why) {
    CHECK_THROWS_WITH_AS(GgufReader(b, "m"), doctest::Contains(why), format_error);
  };
  CHECK_THROWS_WITH_AS(GgufReader("/"), doctest::Contains("not a regular file"), format_error);
  CHECK_THROWS_AS(GgufReader("/nonexistent/model.gguf"), format_error);
  expect(Bytes{}, "magic");
  expect(Bytes{'G', 'G', 'U', 'X', 3, 0, 0, 0}, "bad magic");
  expect(GgufWriter(1).bytes(), "version 1");
  expect(GgufWriter(0x03000000).bytes(), "big-endian");
  expect(GgufWriter(4).bytes(), "version 4");

  Bytes huge = GgufWriter().bytes();
  huge[8] = 0xff;  // tensor count ~ 2^8 with no bytes behind it
  expect(huge, "tensor count");
  Bytes kv_bomb = GgufWriter().bytes();
  for (int k = 16; k < 24; ++k) kv_bomb[std::size_t(k)] = 0xff;  // 2^64 - 1 metadata entries
  expect(kv_bomb, "metadata count");

  GgufWriter dup;
  dup.kv_uint("k", GgufValueType::UINT8, 1);
  dup.kv_uint("k", GgufValueType::UINT8, 2);
  expect(dup.bytes(), "duplicate metadata key");
  GgufWriter badtype;
  badtype.kv_raw("k", GgufValueType(13), Bytes{0});
  expect(badtype.bytes(), "unknown value type 13");
  GgufWriter badbool;
  badbool.kv_uint("k", GgufValueType::BOOL, 2);
  expect(badbool.bytes(), "BOOL");
  GgufWriter longstr;
  {
    Bytes b;
    GgufWriter::put(b, 1000, 8);
    longstr.kv_raw("k", GgufValueType::STRING, b);
  }
  expect(longstr.bytes(), "claims 1000 bytes");
  GgufWriter deep;
  {
    Bytes b;
    for (int d = 0; d < 6; ++d) {
      GgufWriter::put(b, std::uint32_t(GgufValueType::ARRAY), 4);
      GgufWriter::put(b, 1, 8);
    }
    deep.kv_raw("k", GgufValueType::ARRAY, b);
  }
  expect(deep.bytes(), "deeper");

  GgufWriter dims5;
  dims5.tensor("t", {1, 1, 1, 1, 1}, 0, f32_data({1}));
  expect(dims5.bytes(), "at most 4");
  GgufWriter unknown;
  unknown.tensor("t", {1}, 4, f32_data({1}));  // ids 4 and 5 (Q4_2, Q4_3) were removed
  expect(unknown.bytes(), "unknown ggml type 4");
  GgufWriter block;
  block.tensor("t", {16}, loaq::io::ggml_type::Q8_0, Bytes(34, 0));
  expect(block.bytes(), "not a multiple of the Q8_0 block size");
  GgufWriter overflow;
  overflow.tensor("t", {1ull << 40, 1ull << 40}, 0, f32_data({1}));
  expect(overflow.bytes(), "overflowing shape");
  GgufWriter outside;
  outside.tensor("t", {9}, 0, f32_data({1, 2}));  // claims 36 bytes, has 8
  expect(outside.bytes(), "outside");
  GgufWriter twice;
  twice.tensor("t", {1}, 0, f32_data({1}));
  twice.tensor("t", {1}, 0, f32_data({1}));
  expect(twice.bytes(), "duplicate tensor name");

  // Hand-edited offsets: misaligned, and two tensors sharing bytes.
  {
    GgufWriter two;
    two.tensor("a", {8}, 0, f32_data(std::vector<float>(8, 1.f)));
    two.tensor("b", {8}, 0, f32_data(std::vector<float>(8, 2.f)));
    Bytes b = two.bytes();
    // Header: 24 bytes, then per tensor: name (8 + 1), n_dims (4), one dim (8), type (4),
    // offset (8). Tensor "b"'s offset field follows tensor "a"'s 33-byte record.
    const std::size_t pos = 24 + 33 + 9 + 4 + 8 + 4;
    CHECK(b[pos] == 32);
    b[pos] = 4;
    expect(b, "not a multiple of the alignment");
    b[pos] = 0;
    expect(b, "overlap");
  }
}

TEST_CASE("gguf: every truncation of a small file is a format_error") {
  const Bytes good = small_file();
  REQUIRE_NOTHROW(read_everything(good));
  const GgufReader r(good, "good");
  CHECK(r.get_strings("tokenizer.ggml.tokens").size() == 3);
  CHECK(r.matrix("w", 2, 32)(1, 31) == 0.5f * 15);
  for (std::size_t len = 0; len < good.size(); ++len) {
    const Bytes cut(good.begin(), good.begin() + std::ptrdiff_t(len));
    CHECK_THROWS_AS(GgufReader(cut, "cut"), format_error);
  }
}

TEST_CASE("gguf: corrupted header bytes give a clean result or a format_error, never a crash") {
  const Bytes good = small_file();
  const std::size_t header = GgufReader(good, "good").data_offset();
  std::size_t errors = 0, accepted = 0;
  auto attempt = [&](const Bytes& b) {
    try {
      read_everything(b);
      ++accepted;
    } catch (const format_error&) {
      ++errors;
    }
  };
  // Every header byte set to a few telling values.
  for (std::size_t i = 0; i < header; ++i)
    for (int v : {0x00, 0x01, 0x07, 0x20, 0x7f, 0x80, 0xff, good[i] ^ 0x01, good[i] ^ 0x80}) {
      Bytes bad = good;
      bad[i] = std::uint8_t(v);
      attempt(bad);
    }
  // Random multi-byte damage, fixed seed.
  std::mt19937 rng(2024);
  std::uniform_int_distribution<std::size_t> pos(0, header - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int trial = 0; trial < 3000; ++trial) {
    Bytes bad = good;
    for (int k = 0; k < 1 + trial % 4; ++k) bad[pos(rng)] = std::uint8_t(byte(rng));
    attempt(bad);
  }
  CHECK(errors > 0);
  CHECK(accepted > 0);  // e.g. changes inside string contents keep the file valid
}

TEST_CASE("gguf: sizes a file cannot back are format_errors before any allocation") {
  auto expect = [](const Bytes& b, const char* why) {
    CHECK_THROWS_WITH_AS(GgufReader(b, "m"), doctest::Contains(why), format_error);
  };
  // Not regular files: refused instead of read without bound.
  if (std::filesystem::exists("/dev/zero"))
    CHECK_THROWS_WITH_AS(GgufReader("/dev/zero"), doctest::Contains("not a regular file"), format_error);
  // A 2^40-element array and a 2^63-byte string in a tiny file.
  GgufWriter array;
  {
    Bytes b;
    GgufWriter::put(b, std::uint32_t(GgufValueType::UINT32), 4);
    GgufWriter::put(b, 1ull << 40, 8);
    array.kv_raw("k", GgufValueType::ARRAY, b);
  }
  expect(array.bytes(), "element count 1099511627776");
  GgufWriter strings;
  {
    Bytes b;
    GgufWriter::put(b, std::uint32_t(GgufValueType::STRING), 4);
    GgufWriter::put(b, 1ull << 40, 8);
    strings.kv_raw("k", GgufValueType::ARRAY, b);
  }
  expect(strings.bytes(), "cannot fit");
  GgufWriter str;
  {
    Bytes b;
    GgufWriter::put(b, 1ull << 63, 8);
    str.kv_raw("k", GgufValueType::STRING, b);
  }
  expect(str.bytes(), "claims 9223372036854775808 bytes");
  GgufWriter name;
  {
    Bytes b = {'G', 'G', 'U', 'F'};
    GgufWriter::put(b, 3, 4);
    GgufWriter::put(b, 1, 8);   // one tensor
    GgufWriter::put(b, 0, 8);   // no metadata
    GgufWriter::put(b, ~0ull, 8);  // its name claims 2^64 - 1 bytes
    b.resize(64, 0);
    expect(b, "claims 18446744073709551615 bytes");
  }
}

// Fuzzer finding (gguf_fuzz, regress-tensor-bytes-overflow.gguf): 2^62 F32 elements are 2^64
// bytes, which wrapped to 0, passed the bounds check and made dequantize() throw length_error.
TEST_CASE("gguf: a tensor whose byte size overflows 64 bits is a format_error") {
  GgufWriter w;
  w.tensor("t", {1ull << 31, 1ull << 31}, loaq::io::ggml_type::F32, Bytes{});
  CHECK_THROWS_WITH_AS(GgufReader(w.bytes(), "m"), doctest::Contains("more than the"), format_error);
  GgufWriter q;
  q.tensor("t", {1ull << 62}, loaq::io::ggml_type::Q8_0, Bytes{});
  CHECK_THROWS_WITH_AS(GgufReader(q.bytes(), "m"), doctest::Contains("can hold"), format_error);
}

// Fuzzer finding (gguf_fuzz, regress-empty-tensor-huge-dim.gguf): an empty tensor [2^62, 0] made
// matrix() loop 2^62 times copying nothing (a hang).
TEST_CASE("gguf: an empty tensor with a huge other axis reads at once") {
  GgufWriter w;
  w.tensor("t", {1ull << 62, 0}, loaq::io::ggml_type::F32, Bytes{});
  w.tensor("u", {0, 1ull << 62}, loaq::io::ggml_type::F32, Bytes{});
  const GgufReader r(w.bytes(), "m");
  CHECK(r.matrix("t").rows() == 0);
  CHECK(r.matrix("t").cols() == Eigen::Index(1ull << 62));
  CHECK(r.matrix("u").rows() == Eigen::Index(1ull << 62));
  CHECK(r.dequantize("u").empty());
}

// The fuzzer's seeds (tests/fuzz/corpus/gguf_fuzz) are valid files, and the regression inputs
// found by fuzzing read cleanly or throw format_error.
TEST_CASE("gguf: fuzz seed corpus") {
  const std::filesystem::path dir = std::filesystem::path(LOAQ_SOURCE_DIR) / "tests/fuzz/corpus/gguf_fuzz";
  REQUIRE(std::filesystem::is_directory(dir));
  std::size_t seeds = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::ifstream f(e.path(), std::ios::binary);
    const Bytes b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    CAPTURE(e.path().string());
    if (e.path().filename().string().rfind("regress-", 0) == 0) {
      try {
        read_everything(b);
      } catch (const format_error&) {
      }
      continue;
    }
    ++seeds;
    for (const GgufReader& r : {GgufReader(b, "seed"), GgufReader(e.path().string())}) {
      CHECK(r.file_size() == b.size());
      for (const auto& t : r.tensors())
        if (GgufReader::can_dequantize(t.type)) CHECK(r.dequantize(t).size() == t.n_elements);
    }
  }
  CHECK(seeds >= 5);
}
