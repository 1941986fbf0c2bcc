// loaq-quantize: quantize one linear layer dumped from PyTorch (safetensors in, safetensors out).
#include <iostream>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "cli.hpp"

int main(int argc, char** argv) {
  loaq::pin_eigen_blocking();  // the same results on any CPU (loaq/config.hpp)
#if defined(__GLIBC__)
  // A solve allocates and frees matrices of hundreds of MiB. glibc maps each of them fresh and
  // unmaps it on free, so every one costs a page fault and a zeroed page per 4 KiB (about a
  // tenth of a 4096 × 4096 run); kept in the heap, freed memory is reused as it is.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);
#endif
  return loaq_cli::main(std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr);
}
