// Helpers shared by the benchmark programs.
#include "bench_support.hpp"

#include <unistd.h>

namespace dj::bench {

std::string lib_dir() {
  char exe[4096] = {};
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  std::string path = n > 0 ? std::string(exe, static_cast<size_t>(n)) : ".";
  return path.substr(0, path.rfind('/')) + "/../lib";
}

}  // namespace dj::bench
