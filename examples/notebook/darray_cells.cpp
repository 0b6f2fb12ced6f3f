// The notebook's "High-level array abstractions: DistributedArrays.jl" cells: distribute ten
// matrices, see which part each worker holds, and time map(svdvals, M) (the master alone) vs
// map(svdvals, D) (each worker on the matrices it holds: none moves) vs pmap(svdvals, M) (each
// matrix sent to a free worker).
#include <dj/dj.hpp>

#include <random>
#include <vector>

#include "cells.hpp"

namespace notebook {

void darray_cells(const std::string& lib) {
  cell("rmprocs(workers()); addprocs(4)  # clean reset");
  dj::rmprocs(dj::workers());
  dj::addprocs(4);
  std::printf("workers() = [");
  for (int p : dj::workers()) std::printf("%d%s", p, p == dj::workers().back() ? "]\n" : ", ");

  cell("@everywhere using DistributedArrays, LinearAlgebra");
  dj::Plugin plugin = dj::everywhere(lib + "/libparallel_kernels.so");
  auto svdvals = plugin.kernel<std::vector<double>(dj::Matrix<double>)>("svdvals");

  cell("M = Matrix{Float64}[rand(200,200) for i = 1:10];");
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<dj::Matrix<double>> M;
  for (int i = 0; i < 10; ++i) {
    dj::Matrix<double> m(200, 200);
    for (size_t j = 0; j < m.size(); ++j) m.data()[j] = u(rng);
    M.push_back(std::move(m));
  }

  cell("D = distribute(M)");
  dj::DArray<dj::Matrix<double>> D = dj::distribute(M);
  std::printf("10-element DArray{Matrix{Float64}} in %zu chunks on workers [", D.nchunks());
  for (size_t k = 0; k < D.procs().size(); ++k) {
    std::printf("%d%s", D.procs()[k], k + 1 < D.procs().size() ? ", " : "]\n");
  }

  cell("for p in workers() println(@fetchfrom p localindices(D)) end");
  for (int p : dj::workers()) {
    auto r = D.localindices(p);
    // Printed 1-based and inclusive, as Julia shows them.
    if (r.empty()) std::printf("worker %d: ()\n", p);
    else std::printf("worker %d: (%zu:%zu,)\n", p, r[0].first + 1, r[0].last);
  }

  cell("@btime map(svdvals, M); @btime map(svdvals, D); @btime pmap(svdvals, M)");
  dj::PmapOptions one_by_one;
  one_by_one.progress = false;
  one_by_one.batch_size = 1;
  double t_map = best_ms(5, [&] {
    for (const auto& m : M) dj::remotecall_fetch(svdvals, 1, m);  // the master alone
  });
  double t_dmap = best_ms(5, [&] { dj::map(svdvals, D); });
  double t_pmap = best_ms(5, [&] { dj::pmap(svdvals, M, one_by_one); });
  auto same = dj::map(svdvals, D).collect() == dj::pmap(svdvals, M, one_by_one);
  std::printf("map(svdvals, M):  %6.2f ms (the master alone)\n", t_map);
  std::printf("map(svdvals, D):  %6.2f ms (%.2fx; each worker on its own chunk, no matrix moves)\n",
              t_dmap, t_map / t_dmap);
  std::printf("pmap(svdvals, M): %6.2f ms (%.2fx; every matrix sent to a worker)\n", t_pmap,
              t_map / t_pmap);
  std::printf("same singular values: %s\n", same ? "true" : "false");
}

}  // namespace notebook
