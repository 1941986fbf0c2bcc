// loaq-quantize: quantize one linear layer dumped from PyTorch (safetensors in, safetensors out).
#include <iostream>

#include "cli.hpp"

int main(int argc, char** argv) {
  return loaq_cli::main(std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr);
}
