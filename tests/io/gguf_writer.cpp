// GGUF writer: the exact bytes of a small file, round trips through GgufReader (every value
// type, tensors of several ggml types and shapes, custom alignment), idempotence, the real model
// written back, atomic writes, and every bad input refused with a format_error that says why.
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <sstream>

#include <loaq/io/gguf.hpp>
#include <loaq/io/gguf_writer.hpp>

#include "../llm/real_model.hpp"
#include "../temp_dir.hpp"

using loaq::io::format_error;
using loaq::io::GgufReader;
using loaq::io::GgufValue;
using loaq::io::GgufValueType;
using loaq::io::GgufWriter;
namespace ggml_type = loaq::io::ggml_type;
using Bytes = std::vector<std::uint8_t>;

namespace {

namespace fs = std::filesystem;

// Temporary folders: tests/temp_dir.hpp.
struct TempDir : loaq_test::TempDir {
  TempDir() : loaq_test::TempDir("loaq_gguf_writer_test") {}
};

Bytes get_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}
void put_file(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// Little-endian encoders for the hand-built expected bytes (independent of the writer).
void le(Bytes& b, std::uint64_t x, int width) {
  for (int k = 0; k < width; ++k) b.push_back(std::uint8_t(x >> (8 * k)));
}
void le_str(Bytes& b, const std::string& s) {
  le(b, s.size(), 8);
  b.insert(b.end(), s.begin(), s.end());
}

// The byte size ggml gives a tensor of this type and shape.
std::size_t tensor_bytes(std::uint32_t type, const std::vector<std::uint64_t>& dims) {
  const loaq::io::GgmlTypeInfo* ti = loaq::io::ggml_type_info(type);
  std::uint64_t n = 1;
  for (auto d : dims) n *= d;
  return std::size_t(n / ti->block * ti->bytes);
}
Bytes random_bytes(std::mt19937& rng, std::size_t n) {
  Bytes b(n);
  for (auto& x : b) x = std::uint8_t(rng());
  return b;
}

// A value spelled out exactly: type, element type, integers in full, floats as their bits,
// strings with their length. Equal descriptions mean equal values.
std::string describe(const GgufValue& v) {
  std::ostringstream s;
  s << loaq::io::gguf_type_name(v.type()) << ':';
  switch (v.type()) {
    case GgufValueType::STRING:
      s << v.as_string().size() << '"' << v.as_string() << '"';
      break;
    case GgufValueType::ARRAY:
      s << loaq::io::gguf_type_name(v.element_type()) << '[' << v.size() << "]{";
      for (std::size_t i = 0; i < v.size(); ++i)
        s << (v.element_type() == GgufValueType::STRING ? "STRING:" + v.as_strings()[i]
                                                         : describe(v.element(i)))
          << ',';
      s << '}';
      break;
    case GgufValueType::FLOAT32: {
      const float f = float(v.as_double());
      std::uint32_t bits;
      std::memcpy(&bits, &f, 4);
      s << std::hex << bits;
      break;
    }
    case GgufValueType::FLOAT64: {
      const double d = v.as_double();
      std::uint64_t bits;
      std::memcpy(&bits, &d, 8);
      s << std::hex << bits;
      break;
    }
    case GgufValueType::INT8: case GgufValueType::INT16: case GgufValueType::INT32:
    case GgufValueType::INT64:
      s << v.as_int();
      break;
    default:
      s << v.as_uint();
  }
  return s.str();
}

std::vector<GgufValue> u16s(std::initializer_list<std::uint16_t> xs) {
  std::vector<GgufValue> v;
  for (auto x : xs) v.push_back(GgufValue::scalar_value(GgufValueType::UINT16, x));
  return v;
}

// Metadata of every value type, as (key, value) in insertion order.
std::vector<std::pair<std::string, GgufValue>> every_value_type() {
  using T = GgufValueType;
  const GgufValue inner = GgufValue::array_of(T::UINT16, u16s({1, 2}));
  const GgufValue empty_inner = GgufValue::array_of(T::UINT16, {});
  const GgufValue level4 = GgufValue::array_of(
      T::ARRAY, {GgufValue::array_of(T::ARRAY, {GgufValue::array_of(T::ARRAY, {inner})})});
  return {
      {"general.architecture", GgufValue::string("llama")},
      {"u8", GgufValue::scalar_value(T::UINT8, 200)},
      {"i8", GgufValue::scalar_value(T::INT8, 0xFE)},  // -2
      {"u16", GgufValue::scalar_value(T::UINT16, 60000)},
      {"i16", GgufValue::scalar_value(T::INT16, 0x8000)},  // -32768
      {"u32", GgufValue::uint32(4000000000u)},
      {"i32", GgufValue::int32(-7)},
      {"u64", GgufValue::uint64(~0ull)},
      {"i64", GgufValue::int64(std::numeric_limits<std::int64_t>::min())},
      {"f32", GgufValue::float32(1.1f)},
      {"f32.negative_zero", GgufValue::float32(-0.0f)},
      {"f64", GgufValue::float64(-0.1)},
      {"yes", GgufValue::boolean(true)},
      {"no", GgufValue::boolean(false)},
      {"name", GgufValue::string(std::string("SmolLM2 \xe2\x80\x94 a\0b", 15))},  // UTF-8, a NUL
      {"empty", GgufValue::string("")},
      {"i32s", GgufValue::array_of(T::INT32, {GgufValue::int32(1), GgufValue::int32(-3),
                                              GgufValue::int32(7)})},
      {"f32s", GgufValue::array_of(T::FLOAT32, {GgufValue::float32(0.5f), GgufValue::float32(-1e-8f)})},
      {"f64s", GgufValue::array_of(T::FLOAT64, {GgufValue::float64(3.25)})},
      {"u8s", GgufValue::array_of(T::UINT8, {GgufValue::scalar_value(T::UINT8, 0),
                                             GgufValue::scalar_value(T::UINT8, 255)})},
      {"i64s", GgufValue::array_of(T::INT64, {GgufValue::int64(-1), GgufValue::int64(1ll << 40)})},
      {"bools", GgufValue::array_of(T::BOOL, {GgufValue::boolean(true), GgufValue::boolean(false),
                                              GgufValue::boolean(true)})},
      {"no_u16s", GgufValue::array_of(T::UINT16, {})},
      {"tokens", GgufValue::string_array({"<s>", "", "\xc4\xa0the"})},
      {"no_tokens", GgufValue::string_array({})},
      {"nested", GgufValue::array_of(T::ARRAY, {inner, empty_inner})},
      {"nested.strings", GgufValue::array_of(T::ARRAY, {GgufValue::string_array({"a", "bc"})})},
      {"nested.four_levels", level4},
  };
}

struct TensorSpec {
  std::string name;
  std::vector<std::uint64_t> dims;
  std::uint32_t type;
};
// Several types and shapes: 2-D, 1-D, 3-D, 4-D, an odd byte count (F16 {5}: 10 bytes, so the
// next offset needs padding), an empty tensor, and a type the reader cannot dequantize.
const std::vector<TensorSpec>& tensor_specs() {
  static const std::vector<TensorSpec> specs = {
      {"token_embd.weight", {8, 3}, ggml_type::F32},  {"f16.1d", {5}, ggml_type::F16},
      {"q4_0.2d", {64, 2}, ggml_type::Q4_0},          {"q4_1.1d", {32}, ggml_type::Q4_1},
      {"q8_0.3d", {32, 3, 2}, ggml_type::Q8_0},       {"q4_0.4d", {32, 1, 2, 2}, ggml_type::Q4_0},
      {"empty", {0, 4}, ggml_type::F32},              {"q6_k", {256}, 14},
      {"q8_0.2d", {96, 5}, ggml_type::Q8_0},
  };
  return specs;
}

// A writer holding every value type and every tensor of tensor_specs() (random bytes); with
// `alignment` > 0 it also sets general.alignment, among the other keys.
GgufWriter filled_writer(std::uint32_t alignment, std::vector<Bytes>* data = nullptr) {
  GgufWriter w;
  const auto kvs = every_value_type();
  for (std::size_t i = 0; i < kvs.size(); ++i) {
    w.set(kvs[i].first, kvs[i].second);
    if (i == 3 && alignment) w.set("general.alignment", GgufValue::uint32(alignment));
  }
  std::mt19937 rng(42);
  for (const TensorSpec& s : tensor_specs()) {
    Bytes b = random_bytes(rng, tensor_bytes(s.type, s.dims));
    if (data) data->push_back(b);
    w.add_tensor(s.name, s.dims, s.type, std::move(b));
  }
  return w;
}

// A writer filled from `r`: every key/value and every tensor's raw bytes, in file order.
GgufWriter copy_of(const GgufReader& r) {
  GgufWriter w;
  w.copy_metadata(r);
  for (const auto& t : r.tensors())
    w.add_tensor(t.name, t.dims, t.type, Bytes(r.raw(t), r.raw(t) + t.n_bytes));
  return w;
}

// Same keys in the same order with the same types and values.
void check_same_metadata(const GgufReader& a, const GgufReader& b) {
  REQUIRE(a.metadata().size() == b.metadata().size());
  for (std::size_t i = 0; i < a.metadata().size(); ++i) {
    CAPTURE(a.metadata()[i].first);
    CHECK(a.metadata()[i].first == b.metadata()[i].first);
    CHECK(describe(a.metadata()[i].second) == describe(b.metadata()[i].second));
  }
}

// Bytes of the data section that no tensor covers (the padding) are all zero.
void check_zero_padding(const GgufReader& r, const Bytes& file) {
  std::vector<bool> covered(file.size(), false);
  for (const auto& t : r.tensors())
    std::fill_n(covered.begin() + std::ptrdiff_t(r.data_offset() + t.offset), t.n_bytes, true);
  std::size_t nonzero = 0;
  for (std::size_t i = r.data_offset(); i < file.size(); ++i) nonzero += !covered[i] && file[i];
  CHECK(nonzero == 0);
}

}  // namespace

TEST_CASE("gguf writer: the exact bytes of a small file") {
  GgufWriter w;
  w.set("k", GgufValue::uint32(7));
  Bytes data;
  le(data, 0x3f800000, 4);  // 1.0f
  le(data, 0xc0000000, 4);  // -2.0f
  w.add_tensor("t", {2}, ggml_type::F32, data);

  Bytes want = {'G', 'G', 'U', 'F'};
  le(want, 3, 4);  // version
  le(want, 1, 8);  // tensors
  le(want, 1, 8);  // key/values
  le_str(want, "k");
  le(want, 4, 4);  // UINT32
  le(want, 7, 4);
  le_str(want, "t");
  le(want, 1, 4);  // n_dims
  le(want, 2, 8);
  le(want, 0, 4);  // F32
  le(want, 0, 8);  // offset
  want.resize(96, 0);  // 74 header bytes padded to 32
  want.insert(want.end(), data.begin(), data.end());
  want.resize(128, 0);  // the tensor padded to 32
  CHECK(w.bytes() == want);

  // Nothing at all: the bare header, padded.
  Bytes empty = {'G', 'G', 'U', 'F'};
  le(empty, 3, 4);
  le(empty, 0, 8);
  le(empty, 0, 8);
  empty.resize(32, 0);
  CHECK(GgufWriter().bytes() == empty);
  CHECK(GgufWriter().tensor_count() == 0);
}

TEST_CASE("gguf writer: every value type and tensor round trips through the reader") {
  for (const std::uint32_t alignment : {0u, 64u, 256u}) {
    CAPTURE(alignment);
    std::vector<Bytes> data;
    const GgufWriter w = filled_writer(alignment, &data);
    CHECK(w.tensor_count() == tensor_specs().size());
    const Bytes file = w.bytes();
    const GgufReader r(file, "mem");
    const std::size_t al = alignment ? alignment : 32;
    CHECK(r.version() == 3);
    CHECK(r.alignment() == al);
    CHECK(r.data_offset() % al == 0);
    CHECK(file.size() % al == 0);

    // Metadata: the same keys in the same order, each with its type and value.
    auto kvs = every_value_type();
    if (alignment)
      kvs.insert(kvs.begin() + 4, {"general.alignment", GgufValue::uint32(alignment)});
    REQUIRE(r.metadata().size() == kvs.size());
    for (std::size_t i = 0; i < kvs.size(); ++i) {
      CAPTURE(kvs[i].first);
      CHECK(r.metadata()[i].first == kvs[i].first);
      CHECK(r.metadata()[i].second.type() == kvs[i].second.type());
      CHECK(describe(r.metadata()[i].second) == describe(kvs[i].second));
    }
    // A few values against literals, so describe() is not the only judge.
    CHECK(r.get_int("i8") == -2);
    CHECK(r.get_int("i16") == -32768);
    CHECK(r.get_int("i64") == std::numeric_limits<std::int64_t>::min());
    CHECK(r.get_uint("u64") == ~0ull);
    CHECK(float(r.get_double("f32")) == 1.1f);
    CHECK(std::signbit(r.get_double("f32.negative_zero")));
    CHECK(r.get_string("name").size() == 15);
    CHECK(r.get_ints("i32s") == std::vector<std::int64_t>{1, -3, 7});
    CHECK(r.get("bools").element(1).as_bool() == false);
    CHECK(r.get_strings("tokens") == std::vector<std::string>{"<s>", "", "\xc4\xa0the"});
    CHECK(r.get("nested").element(0).as_ints() == std::vector<std::int64_t>{1, 2});
    CHECK(r.get("nested.four_levels").element(0).element(0).element(0).as_ints() ==
          std::vector<std::int64_t>{1, 2});

    // Tensors: insertion order, names, shapes, types and raw bytes; offsets aligned and packed.
    REQUIRE(r.tensors().size() == tensor_specs().size());
    std::uint64_t next = 0;
    for (std::size_t i = 0; i < tensor_specs().size(); ++i) {
      const TensorSpec& s = tensor_specs()[i];
      const auto& t = r.tensors()[i];
      CAPTURE(s.name);
      CHECK(t.name == s.name);
      CHECK(t.dims == s.dims);
      CHECK(t.type == s.type);
      CHECK(t.offset % al == 0);
      CHECK(t.offset == next);
      next = t.offset + (t.n_bytes + al - 1) / al * al;
      CHECK(Bytes(r.raw(t), r.raw(t) + t.n_bytes) == data[i]);
    }
    CHECK(r.data_offset() + next == file.size());
    check_zero_padding(r, file);
    CHECK(r.matrix("token_embd.weight", 3, 8).size() == 24);
    CHECK(r.dequantize("q8_0.3d").size() == 192);
  }
}

TEST_CASE("gguf writer: copying a written file reproduces its bytes exactly") {
  for (const std::uint32_t alignment : {0u, 64u}) {
    CAPTURE(alignment);
    const Bytes first = filled_writer(alignment).bytes();
    const GgufReader r(first, "first");
    const Bytes second = copy_of(r).bytes();
    CHECK(second == first);
    // And once more from the copy.
    CHECK(copy_of(GgufReader(second, "second")).bytes() == first);
  }
}

TEST_CASE("gguf writer: set, erase, find and copy_metadata keep keys in order") {
  GgufWriter w;
  CHECK(w.find("a") == nullptr);
  w.set("a", GgufValue::uint32(1));
  w.set("b", GgufValue::string("x"));
  w.set("a", GgufValue::int32(-1));  // replaced in place
  REQUIRE(w.find("a") != nullptr);
  CHECK(w.find("a")->type() == GgufValueType::INT32);
  CHECK(w.find("a")->as_int() == -1);
  {
    const GgufReader r(w.bytes(), "mem");
    REQUIRE(r.metadata().size() == 2);
    CHECK(r.metadata()[0].first == "a");
    CHECK(r.metadata()[1].first == "b");
    CHECK(r.get_int("a") == -1);
  }
  CHECK(w.erase("a"));
  CHECK_FALSE(w.erase("a"));
  CHECK(w.find("a") == nullptr);

  // copy_metadata: keys already set keep their place and take the source's value; the others
  // follow in the source's order.
  GgufWriter src;
  src.set("a", GgufValue::uint64(5));
  src.set("b", GgufValue::string("from source"));
  src.set("general.alignment", GgufValue::uint32(128));
  src.set("c", GgufValue::boolean(true));
  w.set("z", GgufValue::float32(2.5f));
  w.copy_metadata(GgufReader(src.bytes(), "src"));
  w.add_tensor("t", {3}, ggml_type::F32, Bytes(12, 0));
  const GgufReader r(w.bytes(), "mem");
  std::vector<std::string> keys;
  for (const auto& kv : r.metadata()) keys.push_back(kv.first);
  CHECK(keys == std::vector<std::string>{"b", "z", "a", "general.alignment", "c"});
  CHECK(r.get_string("b") == "from source");
  CHECK(r.get("a").type() == GgufValueType::UINT64);
  CHECK(r.alignment() == 128);  // copied with the metadata, and honoured
  CHECK(r.data_offset() % 128 == 0);
  CHECK(r.file_size() % 128 == 0);

  // Erasing general.alignment returns to the default of 32.
  CHECK(w.erase("general.alignment"));
  const GgufReader d(w.bytes(), "mem");
  CHECK(d.alignment() == 32);
  CHECK(d.file_size() % 32 == 0);
  CHECK(d.file_size() % 128 != 0);
}

TEST_CASE("gguf writer: the real model written back reads identically") {
  if (loaq_test::skip_without_model()) return;
  const GgufReader& src = loaq_test::real_model()->gguf;
  const Bytes out = copy_of(src).bytes();
  const GgufReader r(out, "rewritten");
  CHECK(r.alignment() == src.alignment());
  check_same_metadata(src, r);
  REQUIRE(r.tensors().size() == src.tensors().size());
  std::size_t dequantized = 0;
  for (std::size_t i = 0; i < src.tensors().size(); ++i) {
    const auto& a = src.tensors()[i];
    const auto& b = r.tensors()[i];
    CAPTURE(a.name);
    CHECK(b.name == a.name);
    CHECK(b.dims == a.dims);
    CHECK(b.type == a.type);
    REQUIRE(b.n_bytes == a.n_bytes);
    CHECK(std::equal(src.raw(a), src.raw(a) + a.n_bytes, r.raw(b)));
    if (GgufReader::can_dequantize(a.type)) {
      CHECK(r.dequantize(b) == src.dequantize(a));
      ++dequantized;
    }
  }
  CHECK(dequantized == src.tensors().size());  // SmolLM2 Q4_1: only types the reader knows
  // llama.cpp wrote that file with the same layout (key and tensor order, alignment, padding
  // after every tensor), so the copy is the very same bytes.
  CHECK(out == get_file(loaq_examples::default_model_path()));
  // The rewritten file reloads as a model that gives the same logits.
  const loaq::llm::Model m = loaq::llm::Model::load(r);
  const std::vector<int> ids = {1, 2, 3, 4, 5, 6, 7, 8};
  CHECK((m.forward(ids) == loaq_test::real_model()->model.forward(ids)));
}

TEST_CASE("gguf writer: write replaces the file whole or not at all") {
  TempDir dir;
  GgufWriter small;
  small.set("general.name", GgufValue::string("small"));
  small.add_tensor("t", {4}, ggml_type::F32, Bytes(16, 1));
  GgufWriter big;
  big.set("general.name", GgufValue::string("big"));
  big.add_tensor("w", {256, 64}, ggml_type::F32, Bytes(256 * 64 * 4, 7));

  // Over an existing file: replaced whole, readable, no temporary left behind.
  const std::string out = dir / "model.gguf";
  const Bytes old_content = {'o', 'l', 'd'};
  put_file(out, old_content);
  small.write(out);
  CHECK(get_file(out) == small.bytes());
  CHECK(GgufReader(out).get_string("general.name") == "small");
  CHECK(dir.names() == std::vector<std::string>{"model.gguf"});

  // A folder that does not exist: format_error naming the reason, nothing created.
  CHECK_THROWS_WITH_AS(small.write(dir / "no/such/folder/model.gguf"),
                       doctest::Contains("No such file or directory"), format_error);
  CHECK(dir.names() == std::vector<std::string>{"model.gguf"});

  // The write itself fails half way (the file size limit is below the new file's size): the old
  // file is untouched and the temporary removed.
  {
    struct rlimit saved {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of a signal
    struct rlimit low = saved;
    low.rlim_cur = 4096;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &low) == 0);
    bool threw = false;
    try {
      big.write(out);
    } catch (const format_error& e) {
      threw = std::string(e.what()).find("write failed") != std::string::npos;
    }
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, old_handler);
    CHECK(threw);
    CHECK(get_file(out) == small.bytes());
    CHECK(dir.names() == std::vector<std::string>{"model.gguf"});
  }

  // The rename fails (the target is a non-empty folder): format_error, folder kept, no temporary.
  fs::create_directories(dir.path / "taken" / "child");
  CHECK_THROWS_WITH_AS(small.write(dir / "taken"), doctest::Contains("rename"), format_error);
  CHECK(dir.names() == std::vector<std::string>{"model.gguf", "taken"});

  // Writing over the file a reader was built from: the reader holds its own bytes.
  const GgufReader in(out);
  GgufWriter again = copy_of(in);
  again.set("general.name", GgufValue::string("again"));
  again.write(out);
  const GgufReader back(out);
  CHECK(back.get_string("general.name") == "again");
  CHECK(Bytes(back.raw(back.tensor("t")), back.raw(back.tensor("t")) + 16) == Bytes(16, 1));
  CHECK(dir.names() == std::vector<std::string>{"model.gguf", "taken"});
}

TEST_CASE("gguf writer: bad tensors and values are format_errors that say why") {
  GgufWriter w;
  auto add = [&](const std::string& name, std::vector<std::uint64_t> dims, std::uint32_t type,
                 std::size_t n) { w.add_tensor(name, std::move(dims), type, Bytes(n, 0)); };
  CHECK_THROWS_WITH_AS(add("short", {2, 2}, ggml_type::F32, 15),
                       doctest::Contains("'short' has 15 bytes, its shape and F32 type need 16"),
                       format_error);
  CHECK_THROWS_WITH_AS(add("long", {32}, ggml_type::Q8_0, 35),
                       doctest::Contains("'long' has 35 bytes, its shape and Q8_0 type need 34"),
                       format_error);
  CHECK_THROWS_WITH_AS(add("ragged", {16, 2}, ggml_type::Q4_0, 18),
                       doctest::Contains("'ragged' row length 16 is not a multiple of the Q4_0 block size 32"),
                       format_error);
  CHECK_THROWS_WITH_AS(add("q4_2", {32}, 4, 18),
                       doctest::Contains("'q4_2' has unknown ggml type 4"), format_error);
  CHECK_THROWS_WITH_AS(add("scalar", {}, ggml_type::F32, 4),
                       doctest::Contains("'scalar' has 0 dimensions, 1 to 4 are allowed"), format_error);
  CHECK_THROWS_WITH_AS(add("five", {1, 1, 1, 1, 1}, ggml_type::F32, 4),
                       doctest::Contains("'five' has 5 dimensions, 1 to 4 are allowed"), format_error);
  CHECK_THROWS_WITH_AS(add("huge", {1ull << 40, 1ull << 40}, ggml_type::F32, 0),
                       doctest::Contains("'huge' has an invalid or overflowing shape"), format_error);
  CHECK_THROWS_WITH_AS(add("negative", {1ull << 63}, ggml_type::F32, 0),
                       doctest::Contains("'negative' has an invalid"), format_error);
  CHECK_THROWS_WITH_AS(add("too_many_bytes", {1ull << 62}, ggml_type::F32, 0),
                       doctest::Contains("need more than 2^64"), format_error);
  CHECK_THROWS_WITH_AS(add(std::string(64, 'n'), {1}, ggml_type::F32, 4),
                       doctest::Contains("64-byte name, ggml allows at most 63"), format_error);
  add(std::string(63, 'n'), {1}, ggml_type::F32, 4);
  add("w", {32, 2}, ggml_type::Q4_1, 40);
  CHECK_THROWS_WITH_AS(add("w", {4}, ggml_type::F32, 16),
                       doctest::Contains("duplicate tensor name 'w'"), format_error);
  CHECK(w.tensor_count() == 2);  // the refused tensors left nothing behind

  // general.alignment: a UINT32 power of two, else refused and the old value kept.
  w.set("general.alignment", GgufValue::uint32(64));
  CHECK_THROWS_WITH_AS(w.set("general.alignment", GgufValue::int32(64)),
                       doctest::Contains("general.alignment must be UINT32, is INT32"), format_error);
  CHECK_THROWS_WITH_AS(w.set("general.alignment", GgufValue::uint64(64)),
                       doctest::Contains("must be UINT32, is UINT64"), format_error);
  CHECK_THROWS_WITH_AS(w.set("general.alignment", GgufValue::uint32(48)),
                       doctest::Contains("general.alignment 48 is not a power of two"), format_error);
  CHECK_THROWS_WITH_AS(w.set("general.alignment", GgufValue::uint32(0)),
                       doctest::Contains("general.alignment 0 is not a power of two"), format_error);
  CHECK(w.find("general.alignment")->as_uint() == 64);
  CHECK(GgufReader(w.bytes(), "mem").alignment() == 64);

  // Arrays: every element of the declared type, nesting no deeper than the reader accepts.
  using T = GgufValueType;
  CHECK_THROWS_WITH_AS(GgufValue::array_of(T::INT32, {GgufValue::int32(1), GgufValue::uint32(2)}),
                       doctest::Contains("array of INT32: element 1 has type UINT32"), format_error);
  CHECK_THROWS_WITH_AS(GgufValue::array_of(T::STRING, {GgufValue::int32(1)}),
                       doctest::Contains("element 0 has type INT32"), format_error);
  CHECK_THROWS_WITH_AS(GgufValue::array_of(GgufValueType(13), {}),
                       doctest::Contains("unknown element type 13"), format_error);
  GgufValue deep = GgufValue::array_of(T::UINT8, {});
  for (int level = 2; level <= 4; ++level) deep = GgufValue::array_of(T::ARRAY, {deep});
  CHECK(GgufReader([&] {
          GgufWriter d;
          d.set("deep", deep);
          return d.bytes();
        }(), "mem").get("deep").size() == 1);
  CHECK_THROWS_WITH_AS(GgufValue::array_of(T::ARRAY, {deep}),
                       doctest::Contains("nested deeper than 4 levels"), format_error);
}

TEST_CASE("gguf writer: out-of-range scalar builders store what a file can hold") {
  // scalar_value keeps only the type's width, and a BOOL is written as 0 or 1, so every value
  // reads back as it was built.
  GgufWriter w;
  w.set("u8", GgufValue::scalar_value(GgufValueType::UINT8, 0x1234));
  w.set("b", GgufValue::scalar_value(GgufValueType::BOOL, 5));
  CHECK(w.find("u8")->as_uint() == 0x34);
  const GgufReader r(w.bytes(), "mem");
  CHECK(r.get_uint("u8") == 0x34);
  CHECK(r.get_bool("b"));
}
