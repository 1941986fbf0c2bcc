// safetensors reader/writer: round trip, conversions, and every malformed file is an error.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "../support.hpp"
#include "../temp_dir.hpp"

using loaq::io::DType;
using loaq::io::SafetensorsReader;
using loaq::io::SafetensorsWriter;

TEST_CASE("safetensors round trip with dtype conversion") {
  Eigen::MatrixXf M(2, 3);
  M << 1, -2.5, 3.25, 0.5, 1e-3f, -7;
  SafetensorsWriter w;
  w.add_matrix("f32", M, DType::F32);
  w.add_matrix("f16", M, DType::F16);
  w.add_matrix("bf16", M, DType::BF16);
  w.add_vector("idx", Eigen::VectorXi::LinSpaced(3, 0, 2), DType::I32);
  w.set_metadata("method", "gptq");
  const SafetensorsReader r(w.bytes(), "mem");
  CHECK((r.matrix<float>("f32", 2, 3) == M));
  CHECK(r.matrix<float>("f16").isApprox(M, 1e-3f));
  CHECK(r.matrix<double>("bf16").cast<float>().isApprox(M, 1e-2f));
  CHECK(r.info("idx").dtype == DType::I32);
  CHECK(r.metadata().at("method") == "gptq");
  CHECK_THROWS_WITH_AS(r.matrix<float>("missing"), doctest::Contains("missing"), loaq::io::format_error);
  CHECK_THROWS_WITH_AS(r.matrix<float>("f32", 3, 3), doctest::Contains("expected 3"), loaq::io::format_error);
  CHECK_THROWS_WITH_AS(r.floats<float>("idx"), doctest::Contains("dtype I32"), loaq::io::format_error);
}

TEST_CASE("every truncation and header corruption of a safetensors file is a format_error") {
  SafetensorsWriter w;
  w.add_matrix("weight", Eigen::MatrixXf::Random(3, 4), DType::F32);
  w.add_matrix("hessian", Eigen::MatrixXf::Random(4, 4), DType::F16);
  const std::vector<char> good = w.bytes();
  for (std::size_t len = 0; len < good.size(); ++len) {
    std::vector<char> cut(good.begin(), good.begin() + std::ptrdiff_t(len));
    CHECK_THROWS_AS(SafetensorsReader(cut, "cut"), loaq::io::format_error);
  }
  // Flip every header byte to a few values: either still valid or a clean error, never a crash.
  std::size_t errors = 0;
  for (std::size_t i = 0; i < good.size() - 3 * 4 * 4; ++i) {
    for (char v : {'\0', '9', '"', '}', char(0xff)}) {
      std::vector<char> bad = good;
      bad[i] = v;
      try {
        SafetensorsReader r(bad, "bad");
        if (r.contains("weight")) (void)r.floats<float>("weight");
      } catch (const loaq::io::format_error&) {
        ++errors;
      }
    }
  }
  CHECK(errors > 0);
}

namespace {

namespace fs = std::filesystem;

// Temporary folders: tests/temp_dir.hpp.
struct TempDir : loaq_test::TempDir {
  TempDir() : loaq_test::TempDir("loaq_io_test") {}
};

void put_file(const std::string& path, const std::vector<char>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(b.data(), std::streamsize(b.size()));
}
std::vector<char> get_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}
std::vector<char> header_only(std::uint64_t n, const std::string& json) {
  std::vector<char> b(8 + json.size());
  for (int i = 0; i < 8; ++i) b[std::size_t(i)] = char((n >> (8 * i)) & 0xff);
  std::copy(json.begin(), json.end(), b.begin() + 8);
  return b;
}

// Reads `bytes` through a FIFO (a stream without a size): a writer thread feeds it and closes.
template <class F>
void through_fifo(const TempDir& dir, const std::vector<char>& bytes, F&& read) {
  const std::string fifo = dir / "pipe";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::signal(SIGPIPE, SIG_IGN);  // the reader may stop early; the writer then just gets EPIPE
  std::thread writer([&] {
    const int fd = ::open(fifo.c_str(), O_WRONLY);
    if (fd < 0) return;
    for (std::size_t off = 0; off < bytes.size();) {
      const ::ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
      if (n <= 0) break;
      off += std::size_t(n);
    }
    ::close(fd);
  });
  try {
    read(fifo);
  } catch (...) {
    writer.join();
    fs::remove(fifo);
    throw;
  }
  writer.join();
  fs::remove(fifo);
}

}  // namespace

TEST_CASE("safetensors files are read only as far as the header declares, never unboundedly") {
  // /dev/zero declares a 0-byte header: a clear error at once, not gigabytes read.
  if (fs::exists("/dev/zero"))
    CHECK_THROWS_WITH_AS(SafetensorsReader("/dev/zero"), doctest::Contains("header length 0"),
                         loaq::io::format_error);
  CHECK_THROWS_WITH_AS(SafetensorsReader("/"), doctest::Contains("is a directory"), loaq::io::format_error);
  CHECK_THROWS_WITH_AS(SafetensorsReader("/nonexistent/x.safetensors"), doctest::Contains("cannot open"),
                       loaq::io::format_error);

  TempDir dir;
  SafetensorsWriter w;
  Eigen::MatrixXf M(2, 3);
  M << 1, 2, 3, 4, 5, 6;
  w.add_matrix("weight", M, DType::F32);
  const std::vector<char> good = w.bytes();

  // Header lengths: 2^60 and just over the 100 MB cap, in a small file.
  put_file(dir / "huge_header", header_only(1ull << 60, "{}"));
  CHECK_THROWS_WITH_AS(SafetensorsReader(dir / "huge_header"), doctest::Contains("exceeds"), loaq::io::format_error);
  put_file(dir / "cap", header_only(100000001, "{}"));
  CHECK_THROWS_WITH_AS(SafetensorsReader(dir / "cap"), doctest::Contains("100000000-byte limit"),
                       loaq::io::format_error);

  // A huge file with a small header: only the declared bytes are kept.
  std::vector<char> padded = good;
  padded.resize(good.size() + (4 << 20), 'x');
  put_file(dir / "padded", padded);
  CHECK((SafetensorsReader(dir / "padded").matrix<float>("weight") == M));

  // Streams: a valid file through a FIFO, a 2^60-byte header and a 2^40-byte data section
  // declared on a stream that ends after a few bytes.
  through_fifo(dir, good, [&](const std::string& p) {
    CHECK((SafetensorsReader{p}.matrix<float>("weight") == M));
  });
  through_fifo(dir, header_only(1ull << 60, "{}"), [&](const std::string& p) {
    CHECK_THROWS_WITH_AS(SafetensorsReader{p}, doctest::Contains("limit"), loaq::io::format_error);
  });
  const std::string lying =
      R"({"w":{"dtype":"U8","shape":[1099511627776],"data_offsets":[0,1099511627776]}})";
  through_fifo(dir, header_only(lying.size(), lying + "0123"), [&](const std::string& p) {
    CHECK_THROWS_WITH_AS(SafetensorsReader{p}, doctest::Contains("truncated"), loaq::io::format_error);
  });
  // The same lie in a regular file is caught from the file size before reading.
  put_file(dir / "lying", header_only(lying.size(), lying + "0123"));
  CHECK_THROWS_WITH_AS(SafetensorsReader(dir / "lying"), doctest::Contains("outside"), loaq::io::format_error);
}

TEST_CASE("safetensors headers that would only exhaust memory or time are format_errors") {
  // Deep JSON nesting.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  CHECK_THROWS_WITH_AS(SafetensorsReader(header_only(deep.size(), deep), "m"),
                       doctest::Contains("nests deeper"), loaq::io::format_error);
  // An empty tensor with a huge other axis: readable at once (no loop over 2^62 rows).
  const std::string empty =
      R"({"e":{"dtype":"F32","shape":[4611686018427387904,0],"data_offsets":[0,0]},)"
      R"("i":{"dtype":"I32","shape":[0],"data_offsets":[0,0]}})";
  const SafetensorsReader r(header_only(empty.size(), empty), "m");
  CHECK(r.matrix<float>("e").rows() == Eigen::Index(1ll << 62));
  CHECK(r.matrix<float>("e").cols() == 0);
  // The dtype is checked even when there is nothing to convert.
  CHECK_THROWS_WITH_AS(r.floats<float>("i"), doctest::Contains("dtype I32"), loaq::io::format_error);
  // nlohmann's own exceptions never escape (numbers too large, wrong types).
  for (const std::string h : {R"({"w":{"dtype":"F32","shape":[1e999],"data_offsets":[0,0]}})",
                              R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})",
                              R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}})",
                              R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}})",
                              R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})",
                              R"({"__metadata__":[1]})", R"([])", R"("x")"})
    CHECK_THROWS_AS(SafetensorsReader(header_only(h.size(), h + "0000"), "m"), loaq::io::format_error);
}

TEST_CASE("safetensors writes are atomic: temporary file, then rename") {
  TempDir dir;
  SafetensorsWriter big, small;
  big.add_matrix("weight", Eigen::MatrixXf::Constant(64, 64, 1.f), DType::F32);
  small.add_vector("v", Eigen::VectorXf::Constant(3, 2.f), DType::F32);

  // Missing folder: an error naming the path and the reason, and nothing created.
  const std::string missing = dir / "no/such/folder/out.safetensors";
  CHECK_THROWS_WITH_AS(small.write(missing), doctest::Contains("No such file or directory"),
                       loaq::io::format_error);
  CHECK(dir.names().empty());

  // Over an existing file: replaced whole, permissions kept, no temporary left behind; a reader
  // that has the old file open still sees the old contents.
  const std::string out = dir / "out.safetensors";
  big.write(out);
  fs::permissions(out, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
  std::ifstream old(out, std::ios::binary);
  small.write(out);
  CHECK(get_file(out) == small.bytes());
  CHECK(fs::status(out).permissions() == (fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read));
  CHECK(dir.names() == std::vector<std::string>{"out.safetensors"});
  const std::vector<char> old_bytes((std::istreambuf_iterator<char>(old)), std::istreambuf_iterator<char>());
  CHECK(old_bytes == big.bytes());

  // --out equal to --in: the reader keeps the file it opened (the atomic write replaces the
  // name, not the contents), so writing over its file is safe.
  const SafetensorsReader in(out);
  SafetensorsWriter again;
  again.add_vector("v", in.vector<float>("v") * 2.f, DType::F32);
  again.write(out);
  CHECK(SafetensorsReader(out).vector<float>("v") == Eigen::VectorXf::Constant(3, 4.f));

  // The rename fails (the target is a non-empty folder): the temporary is removed, the folder kept.
  fs::create_directories(dir.path / "taken" / "child");
  CHECK_THROWS_WITH_AS(small.write(dir / "taken"), doctest::Contains("rename"), loaq::io::format_error);
  CHECK(dir.names() == std::vector<std::string>{"out.safetensors", "taken"});
}

// A view is converted a chunk at a time while the file is written: the bytes must be exactly
// add_matrix's, whatever the chunking (several chunks of whole 8-row steps, a ragged last chunk,
// rows wider than a chunk, empty shapes) and the dtype.
TEST_CASE("safetensors matrix views write the same bytes as copies, chunk by chunk") {
  const Eigen::MatrixXf tall = Eigen::MatrixXf::Random(301, 1000);  // 1.2 MB: three chunks
  const Eigen::MatrixXd wide = Eigen::MatrixXd::Random(3, 70000);    // a row is over a chunk
  const loaq::CodeMatrix codes = (Eigen::MatrixXf::Random(1029, 777).array().abs() * 255)
                                     .cast<std::uint8_t>().matrix();
  const Eigen::MatrixXf empty(0, 5), thin(4, 0), small = Eigen::MatrixXf::Random(5, 3);
  SafetensorsWriter copies, views;
  copies.add_matrix("tall", tall, DType::F32);
  views.add_matrix_view("tall", tall, DType::F32);
  copies.add_matrix("tall_as_f64", tall, DType::F64);
  views.add_matrix_view("tall_as_f64", tall, DType::F64);
  copies.add_matrix("wide", wide, DType::F64);
  views.add_matrix_view("wide", wide, DType::F64);
  copies.add_matrix("wide_as_f32", wide, DType::F32);
  views.add_matrix_view("wide_as_f32", wide, DType::F32);
  copies.add_matrix("codes", codes, DType::U8);
  views.add_matrix_view("codes", codes, DType::U8);
  copies.add_matrix("small_f16", small, DType::F16);  // not a view dtype: converted at once
  views.add_matrix_view("small_f16", small, DType::F16);
  copies.add_matrix("empty", empty, DType::F32);
  views.add_matrix_view("empty", empty, DType::F32);
  copies.add_matrix("thin", thin, DType::F32);
  views.add_matrix_view("thin", thin, DType::F32);
  const std::vector<char> expected = copies.bytes();
  CHECK(views.bytes() == expected);

  TempDir dir;
  const std::string out = dir / "views.safetensors";
  views.write(out);
  CHECK(get_file(out) == expected);
  const SafetensorsReader r(out);
  CHECK((r.matrix<float>("tall") == tall));
  CHECK((r.matrix<double>("wide") == wide));
  CHECK(r.info("codes").dtype == DType::U8);
  CHECK_THROWS_WITH_AS(views.add_matrix_view("__metadata__", tall, DType::F32),
                       doctest::Contains("__metadata__"), loaq::io::format_error);
}

// A piece made while it is written may fail: the temporary goes, the old file stays.
TEST_CASE("an atomic write whose made piece throws leaves the old file and no temporary") {
  TempDir dir;
  const std::string out = dir / "out.bin";
  const std::string old = "old contents";
  loaq::io::write_file_atomic(out, old.data(), old.size());
  std::size_t calls = 0;
  const std::string head = "head";
  std::vector<loaq::io::ByteSpan> pieces{{head.data(), head.size()}};
  pieces.push_back({nullptr, std::size_t(3) << 20,
                    [&](char* to, std::size_t, std::size_t count) {
                      if (++calls == 3) throw std::runtime_error("conversion failed");
                      std::fill(to, to + count, 'x');
                    },
                    1});
  CHECK_THROWS_WITH_AS(loaq::io::write_file_atomic(out, pieces), "conversion failed",
                       std::runtime_error);
  CHECK(calls == 3);  // two chunks written before the failure
  CHECK(dir.names() == std::vector<std::string>{"out.bin"});
  const std::vector<char> kept = get_file(out);
  CHECK(std::string(kept.begin(), kept.end()) == old);

  // The same pieces without the failure: every byte in order, in chunks of the writer's size.
  calls = 0;
  pieces.back().fill = [&](char* to, std::size_t first, std::size_t count) {
    ++calls;
    for (std::size_t i = 0; i < count; ++i) to[i] = char((first + i) % 251);
  };
  loaq::io::write_file_atomic(out, pieces);
  const std::vector<char> got = get_file(out);
  REQUIRE(got.size() == head.size() + (std::size_t(3) << 20));
  CHECK(std::string(got.begin(), got.begin() + 4) == head);
  bool in_order = true;
  for (std::size_t i = 0; i < (std::size_t(3) << 20); ++i)
    in_order = in_order && got[head.size() + i] == char(i % 251);
  CHECK(in_order);
  CHECK(calls == (std::size_t(3) << 20) / loaq::io::kWriteChunk);
}

// A regular file stays open and each tensor is read from it when asked for, in chunks of whole
// rows; what comes back is exactly what the in-memory reader of the same bytes gives.
TEST_CASE("safetensors files are read tensor by tensor, in row chunks, from the open file") {
  TempDir dir;
  // 1031 × 1021 F32 is over the reader's 512 KiB chunk (128 rows each): the last chunk's 7 rows
  // end mid-tile. F64 rows of 160 kB come 3 to a chunk, rows of 1.6 MB one at a time.
  const Eigen::MatrixXf big = Eigen::MatrixXf::Random(1031, 1021);
  const Eigen::MatrixXd mid = Eigen::MatrixXd::Random(10, 20000);
  const Eigen::MatrixXd wide = Eigen::MatrixXd::Random(3, 200000);
  SafetensorsWriter w;
  w.add_matrix("f32", big, DType::F32);
  w.add_matrix("f16", big, DType::F16);
  w.add_matrix("bf16", big.topRows(7), DType::BF16);
  w.add_matrix("f64", wide, DType::F64);
  w.add_matrix("f64_mid", mid, DType::F64);
  w.add_vector("v", Eigen::VectorXf::LinSpaced(5, -1, 1), DType::F32);
  const std::string path = dir / "layer.safetensors";
  w.write(path);
  const SafetensorsReader file(path), mem(w.bytes(), "mem");
  CHECK((file.matrix<float>("f32") == big));
  CHECK((file.matrix<double>("f32") == big.cast<double>()));
  CHECK((file.matrix<float>("f16") == mem.matrix<float>("f16")));
  CHECK((file.matrix<float>("bf16") == mem.matrix<float>("bf16")));
  CHECK((file.matrix<double>("f64") == wide));
  CHECK((file.matrix<double>("f64_mid") == mid));
  CHECK((file.matrix<float>("f64_mid") == mid.cast<float>()));
  CHECK((file.vector<float>("v") == mem.vector<float>("v")));
  for (const auto& n : file.tensor_names()) CHECK(file.raw(n) == mem.raw(n));

  // Copies share the open file, and several threads may read through it at once.
  const SafetensorsReader copy = file;
  Eigen::MatrixXf a, b;
  std::thread t1([&] { a = copy.matrix<float>("f32"); });
  std::thread t2([&] { b = file.matrix<float>("f16"); });
  t1.join();
  t2.join();
  CHECK((a == big));
  CHECK((b == mem.matrix<float>("f16")));

  // The file replaced (as the atomic writer does): the reader keeps the contents it opened.
  SafetensorsWriter other;
  other.add_vector("v", Eigen::VectorXf::Zero(5), DType::F32);
  other.write(path);
  CHECK((file.matrix<float>("f32") == big));

  // A file cut short after it was opened (in the middle of "f32"; tensors lie in name order):
  // what lies past the cut is a format_error, what lies before it still reads.
  const std::string cut = dir / "cut.safetensors";
  w.write(cut);
  const SafetensorsReader shrunk(cut);
  fs::resize_file(cut, fs::file_size(cut) / 3);
  CHECK((shrunk.matrix<float>("f16") == mem.matrix<float>("f16")));
  CHECK_THROWS_WITH_AS(shrunk.matrix<float>("f32"), doctest::Contains("truncated after it was opened"),
                       loaq::io::format_error);
  CHECK_THROWS_WITH_AS(shrunk.raw("v"), doctest::Contains("file ends inside tensor 'v'"),
                       loaq::io::format_error);
}

// The fuzzer's seeds (tests/fuzz/corpus/safetensors_fuzz) are valid files; regression inputs
// found by fuzzing read cleanly or throw format_error.
TEST_CASE("safetensors fuzz seed corpus") {
  const fs::path corpus = fs::path(LOAQ_TEST_DATA_DIR) / "../fuzz/corpus/safetensors_fuzz";
  REQUIRE(fs::is_directory(corpus));
  std::size_t seeds = 0;
  for (const auto& e : fs::directory_iterator(corpus)) {
    CAPTURE(e.path().string());
    if (e.path().filename().string().rfind("regress-", 0) == 0) {
      try {
        const SafetensorsReader r(e.path().string());
        for (const auto& n : r.tensor_names()) (void)r.raw(n);
      } catch (const loaq::io::format_error&) {
      }
      continue;
    }
    ++seeds;
    const SafetensorsReader r(e.path().string());
    const SafetensorsReader m(get_file(e.path().string()), "mem");
    CHECK(r.tensor_names() == m.tensor_names());
    for (const auto& n : r.tensor_names()) CHECK(r.raw(n) == m.raw(n));
  }
  CHECK(seeds >= 5);
}

TEST_CASE("safetensors writer refuses what the reader would reject, with format_error") {
  SafetensorsWriter w;
  CHECK_THROWS_WITH_AS(w.add_raw("t", DType::F32, {2, 2}, std::vector<char>(15)), doctest::Contains("need 16"),
                       loaq::io::format_error);
  CHECK_THROWS_AS(w.add_raw("t", DType::F32, {-1}, {}), loaq::io::format_error);
  CHECK_THROWS_AS(w.add_raw("__metadata__", DType::U8, {1}, std::vector<char>(1)), loaq::io::format_error);
  w.add_raw("t", DType::U8, {1}, std::vector<char>(1));
  w.set_metadata("bad", std::string("\xff\xfe"));  // not UTF-8: JSON cannot carry it
  CHECK_THROWS_WITH_AS(w.bytes(), doctest::Contains("encode"), loaq::io::format_error);
}
