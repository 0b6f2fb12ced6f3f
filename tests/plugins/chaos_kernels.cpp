// Kernels for the fault, limit and load tests (issue 8): results that identify their element,
// work long enough to be killed in the middle, and allocation until a memory limit is hit.
#include <dj/kernel.hpp>

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

// The identity of element x as the chaos soak expects it back: a mix no other x maps to.
int64_t element_mark(int64_t x) { return x * 1000003 + 17; }

// Spins for 300 µs (killable at any point), then returns {mark of x, the pid that ran it}.
std::pair<int64_t, int32_t> mark_after(int64_t x) {
  auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(300);
  while (std::chrono::steady_clock::now() < end) {
  }
  return {element_mark(x), dj::myid()};
}

// Busy for ms milliseconds (a worker doing heavy work when its master dies).
int64_t spin_ms(int64_t ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  int64_t n = 0;
  while (std::chrono::steady_clock::now() < end) ++n;
  return n;
}

// Allocates and touches 1 MiB blocks until `mib` MiB are held (or the allocation fails: the
// exception is the kernel's error). Returns the MiB held.
int64_t hog_mib(int64_t mib) {
  std::vector<std::unique_ptr<char[]>> blocks;
  for (int64_t i = 0; i < mib; ++i) {
    blocks.emplace_back(new char[1 << 20]);
    std::memset(blocks.back().get(), 1, 1 << 20);
  }
  return static_cast<int64_t>(blocks.size());
}

// The sum of a vector's bytes (a large argument that must arrive whole).
int64_t byte_sum(const std::vector<uint8_t>& v) {
  int64_t s = 0;
  for (uint8_t b : v) s += b;
  return s;
}

int64_t tiny(int64_t x) { return x; }

DJ_PLUGIN("chaos_kernels", DJ_KERNEL(mark_after), DJ_KERNEL(spin_ms), DJ_KERNEL(hog_mib),
          DJ_KERNEL(byte_sum), DJ_KERNEL(tiny), DJ_KERNEL(element_mark))
