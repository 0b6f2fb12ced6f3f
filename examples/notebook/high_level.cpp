// The notebook's "High-level tools" cells: map vs pmap of svdvals, which worker handled each,
// the coin-flip reduction serial vs distributed, the verbose distributed loop, the
// square_broken lesson, and montecarlo_pi.
#include <dj/dj.hpp>

#include <random>
#include <vector>

#include "cells.hpp"

namespace notebook {

void high_level_cells(const std::string& lib) {
  dj::Plugin plugin = dj::everywhere(lib + "/libparallel_kernels.so");
  auto svdvals = plugin.kernel<std::vector<double>(dj::Matrix<double>)>("svdvals");
  auto svdvals_verbose = plugin.kernel<std::vector<double>(dj::Matrix<double>)>("svdvals_verbose");
  auto count_heads = plugin.kernel<int64_t(int64_t, int64_t)>("count_heads");
  auto count_heads_verbose = plugin.kernel<int64_t(int64_t, int64_t)>("count_heads_verbose");
  auto pi_hits = plugin.kernel<int64_t(int64_t, int64_t)>("pi_hits");
  auto square_copy = plugin.kernel<void(std::vector<int64_t>, int64_t, int64_t)>("square_copy");
  dj::PmapOptions quiet;
  quiet.progress = false;

  cell("map(x->x^2, 1:10)");
  for (int x = 1; x <= 10; ++x) std::printf("%d%s", x * x, x < 10 ? ", " : "\n");

  cell("M = Matrix{Float64}[rand(200,200) for i = 1:10]; map(svdvals, M)  # first value of each");
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<dj::Matrix<double>> M;
  for (int i = 0; i < 10; ++i) {
    dj::Matrix<double> m(200, 200);
    for (size_t j = 0; j < m.size(); ++j) m.data()[j] = u(rng);
    M.push_back(std::move(m));
  }
  auto serial_map = [&] {
    std::vector<std::vector<double>> out;
    for (const auto& m : M) out.push_back(dj::remotecall_fetch(svdvals, 1, m));  // on the master
    return out;
  };
  for (const auto& s : serial_map()) std::printf("%.4f ", s.front());
  std::printf("\n");

  cell("pmap(svdvals, M)  # the same values");
  for (const auto& s : dj::pmap(svdvals, M, quiet)) std::printf("%.4f ", s.front());
  std::printf("\n");

  cell("pmap(M) do m; println(myid()); svdvals(m); end  # which worker handled each");
  dj::PmapOptions one_by_one = quiet;
  one_by_one.batch_size = 1;
  dj::pmap(svdvals_verbose, M, one_by_one);

  cell("@btime map(svdvals, M); @btime pmap(svdvals, M)");
  double t_map = best_ms(5, serial_map);
  double t_pmap = best_ms(5, [&] { dj::pmap(svdvals, M, one_by_one); });
  std::printf("map:  %.2f ms\npmap: %.2f ms  (%.2fx on %d workers)\n", t_map, t_pmap,
              t_map / t_pmap, dj::nworkers());

  const int64_t N = 200'000'000;
  cell("count_heads_loop(N) vs @distributed (+) for i in 1:N rand((0,1)) end, N = 2*10^8");
  int64_t heads_serial = 0, heads_dist = 0;
  double t_serial = best_ms(1, [&] { heads_serial = dj::remotecall_fetch(count_heads, 1, int64_t{1}, N); });
  double t_dist = best_ms(1, [&] { heads_dist = dj::distributed_reduce(count_heads, 1, N, std::plus<>()); });
  std::printf("serial:      %lld heads in %.0f ms\n", static_cast<long long>(heads_serial), t_serial);
  std::printf("distributed: %lld heads in %.0f ms (%.2fx on %d workers)\n",
              static_cast<long long>(heads_dist), t_dist, t_serial / t_dist, dj::nworkers());

  cell("count_heads_distributed_verbose(8)  # each worker prints its flips");
  std::printf("%lld\n", static_cast<long long>(
                            dj::distributed_reduce(count_heads_verbose, 1, 8, std::plus<>())));

  cell("square_broken(): @sync @distributed for i in eachindex(A) A[i] = A[i]^2 end");
  std::vector<int64_t> A{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  auto square_all = [&](int64_t first, int64_t last) {
    return dj::spawn(square_copy, A, first, last);
  };
  std::vector<dj::Future<void>> parts;
  for (auto [first, last] : dj::detail::split_range(1, 10, static_cast<size_t>(dj::nworkers()))) {
    parts.push_back(square_all(first, last));
  }
  dj::sync(dj::Task(parts));
  std::printf("A = [");
  for (size_t i = 0; i < A.size(); ++i) std::printf("%lld%s", static_cast<long long>(A[i]), i + 1 < A.size() ? ", " : "]\n");
  std::printf("Unchanged: each worker squared its own copy of A (use a SharedArray instead).\n");

  cell("montecarlo_pi: 4 * (@distributed (+) for i in 1:n; rand()^2 + rand()^2 <= 1; end) / n");
  const int64_t n = 100'000'000;
  int64_t hits = dj::distributed_reduce(pi_hits, 1, n, std::plus<>());
  std::printf("pi ~ %.6f with n = %lld\n", 4.0 * static_cast<double>(hits) / static_cast<double>(n),
              static_cast<long long>(n));
}

}  // namespace notebook
