// High-level parallelism benchmarks (issue "High-level parallelism"), 2 workers, each figure
// beside a floor from the same run:
//   1. pipelined remotecall of a no-op (target >= 300 000 calls/s)
//   2. pmap of a no-op over 10^6 elements, automatic batching (target >= 5 M elements/s)
//   3. coin flips 2*10^8: serial on the master vs distributed_reduce (target >= 1.9x)
//   4. pmap svdvals of ten 200x200 matrices: serial map vs pmap (target >= 1.3x)
// Usage: bench_parallel [--quick]
#include <cstring>
#include <dj/dj.hpp>
#include <random>

#include "bench_support.hpp"

int main(int argc, char** argv) {
  using namespace dj::bench;
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int runs = quick ? 2 : 5;
  dj::addprocs(2);
  dj::Plugin plugin = dj::everywhere(lib_dir() + "/libparallel_kernels.so");
  auto noop = plugin.kernel<int64_t(int64_t)>("noop");
  auto count_heads = plugin.kernel<int64_t(int64_t, int64_t)>("count_heads");
  auto svdvals = plugin.kernel<std::vector<double>(dj::Matrix<double>)>("svdvals");
  dj::PmapOptions quiet;
  quiet.progress = false;

  // 1. pipelined remotecall: issue all calls, then fetch all.
  {
    const int n = quick ? 20000 : 100000;
    std::vector<double> rates;
    for (int r = 0; r < runs; ++r) {
      auto t0 = Clock::now();
      std::vector<dj::Future<int64_t>> fs;
      fs.reserve(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) fs.push_back(dj::remotecall(noop, 2 + i % 2, int64_t{i}));
      for (auto& f : fs) dj::fetch(f);
      rates.push_back(n / seconds_since(t0));
    }
    result("tiny-task throughput", "dj pipelined remotecall+fetch, 2 workers", "no-op tasks",
           median(rates), "tasks/s");
    std::printf("target >= 300000 tasks/s: %s\n", median(rates) >= 300000 ? "met" : "NOT met");
  }

  // 2. pmap of a no-op, automatic batching.
  {
    std::vector<int64_t> xs(quick ? 200000 : 1000000);
    for (size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<int64_t>(i);
    std::vector<double> rates;
    for (int r = 0; r < runs; ++r) {
      auto t0 = Clock::now();
      auto ys = dj::pmap(noop, xs, quiet);
      rates.push_back(static_cast<double>(xs.size()) / seconds_since(t0));
    }
    result("tiny-task throughput", "dj pmap auto batch, 2 workers", "no-op elements",
           median(rates), "elements/s");
    std::printf("target >= 5e6 elements/s: %s\n", median(rates) >= 5e6 ? "met" : "NOT met");
  }

  // 3. coin flips: the same kernel serially on the master (floor) and over 2 workers.
  {
    const int64_t n = quick ? 50'000'000 : 200'000'000;
    std::vector<double> serial, dist;
    for (int r = 0; r < runs; ++r) {
      auto t0 = Clock::now();
      dj::remotecall_fetch(count_heads, 1, int64_t{1}, n);
      serial.push_back(seconds_since(t0));
      t0 = Clock::now();
      dj::distributed_reduce(count_heads, 1, n, std::plus<>());
      dist.push_back(seconds_since(t0));
    }
    result("reduce coin flips", "serial on the master (floor)", "time", median(serial), "s");
    result("reduce coin flips", "dj distributed_reduce 2 workers", "time", median(dist), "s");
    double speedup = median(serial) / median(dist);
    result("reduce coin flips", "dj distributed_reduce 2 workers", "speedup vs serial", speedup, "x");
    std::printf("target >= 1.9x: %s\n", speedup >= 1.9 ? "met" : "NOT met");
  }

  // 4. pmap svdvals of ten 200x200 matrices vs serial map on the master.
  {
    std::mt19937_64 rng(1);
    std::uniform_real_distribution<double> u(0, 1);
    std::vector<dj::Matrix<double>> M;
    for (int i = 0; i < 10; ++i) {
      dj::Matrix<double> m(200, 200);
      for (size_t j = 0; j < m.size(); ++j) m.data()[j] = u(rng);
      M.push_back(std::move(m));
    }
    std::vector<double> serial, dist;
    for (int r = 0; r < runs; ++r) {
      auto t0 = Clock::now();
      for (const auto& m : M) dj::remotecall_fetch(svdvals, 1, m);
      serial.push_back(seconds_since(t0));
      t0 = Clock::now();
      dj::pmap(svdvals, M, quiet);
      dist.push_back(seconds_since(t0));
    }
    result("pmap svdvals", "serial map on the master (floor)", "time", median(serial), "s");
    result("pmap svdvals", "dj pmap 2 workers", "time", median(dist), "s");
    double speedup = median(serial) / median(dist);
    result("pmap svdvals", "dj pmap 2 workers", "speedup vs serial", speedup, "x");
    std::printf("target >= 1.3x: %s\n", speedup >= 1.3 ? "met" : "NOT met");
  }
  std::printf("runs: %d per figure (medians)\n", runs);
  dj::rmprocs(dj::workers());
  return 0;
}
