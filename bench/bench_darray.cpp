// DArray benchmarks (issue "Distributed arrays"), 2 workers, each figure beside a floor from the
// same run:
//   1. map(svdvals, D) over a DArray of ten 200x200 matrices vs pmap(svdvals, M) of the same
//      matrices from the master (target: map at least as fast, since no matrix moves)
//   2. sum of a 256 MiB DArray of doubles vs a serial sum of the same 256 MiB on the master
//      (target >= 1.6x; memory-bound). Both sides sum with the same code (four lanes).
// Usage: bench_darray [--quick]
#include <cstring>
#include <dj/dj.hpp>
#include <random>

#include "bench_support.hpp"

namespace dj::detail {
double sum_f64(const unsigned char* data, size_t n);  // runtime/chunk_ops.hpp: the workers' sum
}

int main(int argc, char** argv) {
  using namespace dj::bench;
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int runs = quick ? 3 : 9;
  dj::addprocs(2);
  dj::Plugin plugin = dj::everywhere(lib_dir() + "/libparallel_kernels.so");
  auto svdvals = plugin.kernel<std::vector<double>(dj::Matrix<double>)>("svdvals");

  // 1. map over a DArray vs pmap.
  {
    std::mt19937_64 rng(1);
    std::uniform_real_distribution<double> u(0, 1);
    std::vector<dj::Matrix<double>> M;
    for (int i = 0; i < 10; ++i) {
      dj::Matrix<double> m(200, 200);
      for (size_t j = 0; j < m.size(); ++j) m.data()[j] = u(rng);
      M.push_back(std::move(m));
    }
    dj::DArray<dj::Matrix<double>> D = dj::distribute(M);
    dj::PmapOptions quiet;
    quiet.progress = false;
    std::vector<double> pmap_s, map_s, map_collect_s;
    for (int r = 0; r < runs; ++r) {
      auto t0 = Clock::now();
      auto p = dj::pmap(svdvals, M, quiet);
      pmap_s.push_back(seconds_since(t0));
      t0 = Clock::now();
      auto S = dj::map(svdvals, D);
      map_s.push_back(seconds_since(t0));
      t0 = Clock::now();
      auto s = dj::map(svdvals, D).collect();
      map_collect_s.push_back(seconds_since(t0));
      if (s != p) {
        std::fprintf(stderr, "bench_darray: map(svdvals, D) differs from pmap\n");
        return 1;
      }
    }
    result("darray map svdvals", "dj pmap(svdvals, M) 2 workers (floor)", "time",
           median(pmap_s), "s");
    result("darray map svdvals", "dj map(svdvals, D) 2 workers", "time", median(map_s), "s");
    result("darray map svdvals", "dj map(svdvals, D) + collect 2 workers", "time",
           median(map_collect_s), "s");
    double ratio = median(pmap_s) / median(map_s);
    result("darray map svdvals", "dj map(svdvals, D) 2 workers", "speed vs pmap", ratio, "x");
    std::printf("target map at least as fast as pmap (>= 1.0x): %s\n",
                ratio >= 1.0 ? "met" : "NOT met");
  }

  // 2. 256 MiB sum: DArray on 2 workers vs the master alone.
  {
    const size_t n = (size_t{256} << 20) / sizeof(double);
    std::vector<double> local(n);
    std::mt19937_64 rng(2);
    for (auto& x : local) x = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    dj::DArray<double> D = dj::distribute(local);
    std::vector<double> serial_s, dist_s;
    double serial_sum = 0, dist_sum = 0;
    for (int r = 0; r < runs; ++r) {
      auto t0 = Clock::now();
      serial_sum = dj::detail::sum_f64(reinterpret_cast<const unsigned char*>(local.data()), n);
      serial_s.push_back(seconds_since(t0));
      t0 = Clock::now();
      dist_sum = dj::sum(D);
      dist_s.push_back(seconds_since(t0));
    }
    if (std::abs(serial_sum - dist_sum) > 1e-6 * std::abs(serial_sum)) {
      std::fprintf(stderr, "bench_darray: sums differ: %.17g vs %.17g\n", serial_sum, dist_sum);
      return 1;
    }
    result("darray sum 256 MiB", "serial sum on the master (floor)", "time", median(serial_s), "s");
    result("darray sum 256 MiB", "dj sum(D) 2 workers", "time", median(dist_s), "s");
    double speedup = median(serial_s) / median(dist_s);
    result("darray sum 256 MiB", "dj sum(D) 2 workers", "speedup vs serial", speedup, "x");
    std::printf("target >= 1.6x: %s\n", speedup >= 1.6 ? "met" : "NOT met");
  }
  std::printf("runs: %d per figure (medians)\n", runs);
  dj::rmprocs(dj::workers());
  return 0;
}
