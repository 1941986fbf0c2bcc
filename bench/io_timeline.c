/* Where a loaq-quantize run spends its wall time outside the solve: an LD_PRELOAD shim that
 * timestamps the program's large reads, its writes, fsync and rename (milliseconds since the
 * program was loaded, and each call's own duration), and prints them to stderr at exit.
 *
 *   cc -shared -fPIC -O2 -o io_timeline.so bench/io_timeline.c -ldl
 *   LD_PRELOAD=$PWD/io_timeline.so loaq-quantize --in LAYER --out OUT ...
 *
 * The gap between the last read and the first write is the solve (the CLI also prints it).
 * IO_TIMELINE_NO_FSYNC=1 makes fsync a no-op, to see what the sync itself costs (a measurement
 * only: the output is then not durable). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double start_ms;
static char lines[1 << 16];
static int used;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static void note(const char* what, long bytes, double begin, double end) {
  if (used < (int)sizeof lines - 128)
    used += snprintf(lines + used, sizeof lines - (size_t)used, "%9.3f ms  %7.3f ms  %s %ld\n",
                     begin - start_ms, end - begin, what, bytes);
}

__attribute__((constructor(101))) static void loaded(void) { start_ms = now_ms(); }

__attribute__((destructor)) static void finished(void) {
  const double t = now_ms();
  note("exit", 0, t, t);
  ssize_t (*real_write)(int, const void*, size_t) = dlsym(RTLD_NEXT, "write");
  if (real_write) (void)real_write(2, lines, (size_t)used);
}

ssize_t read(int fd, void* data, size_t size) {
  static ssize_t (*real)(int, void*, size_t);
  if (!real) real = dlsym(RTLD_NEXT, "read");
  const double begin = now_ms();
  const ssize_t got = real(fd, data, size);
  if (size >= 65536) note("read", (long)got, begin, now_ms());  /* not the loader's small reads */
  return got;
}

ssize_t write(int fd, const void* data, size_t size) {
  static ssize_t (*real)(int, const void*, size_t);
  if (!real) real = dlsym(RTLD_NEXT, "write");
  const double begin = now_ms();
  const ssize_t put = real(fd, data, size);
  if (fd > 2) note("write", (long)put, begin, now_ms());
  return put;
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = dlsym(RTLD_NEXT, "fsync");
  const char* skip = getenv("IO_TIMELINE_NO_FSYNC");
  const double begin = now_ms();
  const int rc = skip && skip[0] == '1' ? 0 : real(fd);
  note("fsync", fd, begin, now_ms());
  return rc;
}

int rename(const char* from, const char* to) {
  static int (*real)(const char*, const char*);
  if (!real) real = dlsym(RTLD_NEXT, "rename");
  const double begin = now_ms();
  const int rc = real(from, to);
  note("rename", 0, begin, now_ms());
  return rc;
}
