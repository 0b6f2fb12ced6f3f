// Kernels for the notebook's "High-level tools" cells: svdvals for pmap, coin flips and
// Monte Carlo pi for distributed reductions, and the square_broken lesson.
#include <dj/kernel.hpp>
#include <lapacke.h>

#include <cstdio>
#include <stdexcept>

namespace {

// xorshift64*: a fast per-chunk generator, seeded from the chunk so runs are reproducible.
struct XorShift {
  uint64_t s;
  explicit XorShift(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ull;
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

}  // namespace

// Singular values, largest first (LAPACK dgesdd, as Julia's svdvals).
std::vector<double> svdvals(const dj::Matrix<double>& m) {
  dj::Matrix<double> a = m;  // dgesdd overwrites its input
  auto rows = static_cast<lapack_int>(a.rows()), cols = static_cast<lapack_int>(a.cols());
  std::vector<double> s(static_cast<size_t>(std::min(rows, cols)));
  lapack_int info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'N', rows, cols, a.data(),
                                   std::max<lapack_int>(rows, 1), s.data(), nullptr, 1, nullptr, 1);
  if (info != 0) throw std::runtime_error("dgesdd failed: info " + std::to_string(info));
  return s;
}

// pmap(M) do m; println(myid()); svdvals(m); end
std::vector<double> svdvals_verbose(const dj::Matrix<double>& m) {
  std::printf("%d\n", dj::myid());
  return svdvals(m);
}

// Number of heads in coin flips first..last (one flip per index).
int64_t count_heads(int64_t first, int64_t last) {
  XorShift rng(static_cast<uint64_t>(first));
  int64_t heads = 0;
  for (int64_t i = first; i <= last; ++i) heads += static_cast<int64_t>(rng.next() >> 63);
  return heads;
}

// The verbose loop: prints every flip.
int64_t count_heads_verbose(int64_t first, int64_t last) {
  XorShift rng(static_cast<uint64_t>(first) + 7);
  int64_t heads = 0;
  for (int64_t i = first; i <= last; ++i) {
    int64_t x = static_cast<int64_t>(rng.next() >> 63);
    std::printf("%lld\n", static_cast<long long>(x));
    heads += x;
  }
  return heads;
}

// Points of first..last that fall inside the unit quarter circle (montecarlo_pi).
int64_t pi_hits(int64_t first, int64_t last) {
  XorShift rng(static_cast<uint64_t>(first) * 31 + 5);
  int64_t hits = 0;
  for (int64_t i = first; i <= last; ++i) {
    double x = rng.uniform(), y = rng.uniform();
    hits += x * x + y * y <= 1.0 ? 1 : 0;
  }
  return hits;
}

// square_broken: squares elements first..last of *its own copy* of A; the master's A is
// untouched, which is the lesson.
void square_copy(std::vector<int64_t> a, int64_t first, int64_t last) {
  for (int64_t i = first; i <= last; ++i) {
    auto& x = a.at(static_cast<size_t>(i - 1));
    x = x * x;
  }
}

int64_t noop(int64_t x) { return x; }

// The array there and back (bench_shm's bandwidth figures): into a fresh std::vector each way,
// and read in place each way (the argument from the master's shared memory, the result, on a
// same-host master, from the worker's).
std::vector<double> echo(std::vector<double> v) { return v; }  // moved, not copied
dj::ArrayView<double> echo_view(dj::ArrayView<double> v) { return v; }

DJ_PLUGIN("parallel_kernels", DJ_KERNEL(svdvals), DJ_KERNEL(svdvals_verbose),
          DJ_KERNEL(count_heads), DJ_KERNEL(count_heads_verbose), DJ_KERNEL(pi_hits),
          DJ_KERNEL(square_copy), DJ_KERNEL(noop), DJ_KERNEL(echo),
          DJ_KERNEL(echo_view))
