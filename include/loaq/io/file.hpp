// File helpers shared by loaq's optional readers and writers: bounded reads from a stream and
// atomic replacement of an output file. Every failure is a format_error naming the path and
// the system's reason.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <istream>
#include <memory>
#include <new>
#include <string>
#include <vector>

#if defined(_WIN32)
#include <filesystem>
#include <fstream>
#else
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include "error.hpp"

namespace loaq {
namespace io {

// Appends up to `want` bytes from `in` to `out` and returns how many were appended (fewer only
// at end of stream). Memory grows with the bytes that actually arrive (1 MiB at a time), never
// with what a header merely claims; running out of memory is a format_error that says how much
// the request needed.
inline std::uint64_t read_bounded(std::istream& in, std::uint64_t want, std::vector<char>& out,
                                  const std::string& path) {
  constexpr std::uint64_t kChunk = std::uint64_t(1) << 20;
  std::uint64_t got = 0;
  while (got < want && in) {
    const std::uint64_t step = want - got < kChunk ? want - got : kChunk;
    const std::size_t old = out.size();
    try {
      out.resize(old + std::size_t(step));
    } catch (const std::bad_alloc&) {
      throw format_error(path + ": out of memory reading " + std::to_string(want) +
                         " bytes (the file asks for " + std::to_string(old + want - got) +
                         " bytes of memory in all)");
    }
    in.read(out.data() + old, std::streamsize(step));
    const auto n = std::uint64_t(in.gcount());
    out.resize(old + std::size_t(n));
    got += n;
    if (n < step) break;
  }
  if (in.bad()) throw format_error(path + ": read failed (" + std::strerror(errno) + ")");
  return got;
}

// One contiguous piece of a file being written: `size` bytes that lie at `data`, or (data null)
// bytes made while they are written: fill(out, first, count) puts the piece's bytes [first,
// first + count) at out, `count` a multiple of `granule` except at the piece's end. A made piece
// goes out through one small buffer (kWriteChunk), so a writer that converts a tensor (a
// transposing copy) never holds the whole converted tensor in memory.
struct ByteSpan {
  const void* data;
  std::size_t size;
  std::function<void(char* out, std::size_t first, std::size_t count)> fill = {};
  std::size_t granule = 1;
};

// Bytes per chunk of a made piece: the chunk stays in L2 between its fill and its write.
constexpr std::size_t kWriteChunk = std::size_t(512) << 10;

// Sends every piece to `put(data, size)`, making the made ones chunk by chunk in one buffer.
template <class Put>
void send_pieces(const std::vector<ByteSpan>& pieces, Put&& put) {
  std::unique_ptr<char[]> buffer;
  std::size_t capacity = 0;
  for (const ByteSpan& piece : pieces) {
    if (piece.data || !piece.fill) {
      if (piece.size) put(static_cast<const char*>(piece.data), piece.size);
      continue;
    }
    const std::size_t granule = piece.granule ? piece.granule : 1;
    const std::size_t chunk = std::max(granule, kWriteChunk / granule * granule);
    if (chunk > capacity) {
      buffer.reset(new char[chunk]);
      capacity = chunk;
    }
    for (std::size_t first = 0; first < piece.size; first += chunk) {
      const std::size_t count = std::min(chunk, piece.size - first);
      piece.fill(buffer.get(), first, count);
      put(buffer.get(), count);
    }
  }
}

// Writes the pieces, one after the other, to `path` atomically: into a new temporary file in the
// same folder (path + ".tmp.<pid>.<n>"), flushed to disk, then renamed over `path`. A reader that
// has the old file open keeps seeing the old contents, `path` is never left half written, and on
// any failure (a piece's fill that throws included) the temporary is removed and `path` is
// untouched. An existing file's permission bits are kept; a new file gets 0666 minus the umask.
// If `path` is a symbolic link, the link itself is replaced by the new file. Pieces let a writer
// send a header and tensors from where they already lie, with no copy into one buffer.
inline void write_file_atomic(const std::string& path, const std::vector<ByteSpan>& pieces) {
  static std::atomic<unsigned long> counter{0};
#if defined(_WIN32)
  const std::string tmp = path + ".tmp." + std::to_string(counter++);
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw format_error(path + ": cannot open for writing (temporary file " + tmp + ")");
    try {
      send_pieces(pieces, [&](const char* p, std::size_t n) {
        f.write(p, std::streamsize(n));
      });
    } catch (...) {
      f.close();
      std::remove(tmp.c_str());
      throw;
    }
    f.close();
    if (!f) {
      std::remove(tmp.c_str());
      throw format_error(path + ": write to " + tmp + " failed");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw format_error(path + ": cannot replace with " + tmp + " (" + ec.message() + ")");
  }
#else
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    tmp = path + ".tmp." + std::to_string(long(::getpid())) + "." + std::to_string(counter++);
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && (errno != EEXIST || attempt >= 100))
      throw format_error(path + ": cannot open for writing (temporary file " + tmp + ": " +
                         std::strerror(errno) + ")");
  }
  auto fail = [&](const char* what) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    fd = -1;
    ::unlink(tmp.c_str());
    throw format_error(path + ": " + what + " (" + std::strerror(err) + "); nothing was changed");
  };
  struct stat old {};
  if (::stat(path.c_str(), &old) == 0 && S_ISREG(old.st_mode) &&
      ::fchmod(fd, old.st_mode & 07777) != 0)
    fail("cannot copy the permissions of the existing file");
  try {
    send_pieces(pieces, [&](const char* p, std::size_t left) {
      while (left > 0) {
        const ::ssize_t n = ::write(fd, p, left);
        if (n < 0) {
          if (errno == EINTR) continue;
          fail("write failed");
        }
        p += n;
        left -= std::size_t(n);
      }
    });
  } catch (...) {  // a fill that threw (fail() has already closed and removed the temporary)
    if (fd >= 0) {
      ::close(fd);
      ::unlink(tmp.c_str());
    }
    throw;
  }
  if (::fsync(fd) != 0) fail("fsync failed");
  const int rc = ::close(fd);
  fd = -1;
  if (rc != 0) fail("close failed");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename the temporary file over it");
  // Make the rename itself durable; best effort (some file systems refuse fsync on a folder).
  const std::string::size_type slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
#endif
}

// The same for one buffer of `size` bytes.
inline void write_file_atomic(const std::string& path, const void* data, std::size_t size) {
  write_file_atomic(path, std::vector<ByteSpan>{{data, size}});
}

}  // namespace io
}  // namespace loaq
