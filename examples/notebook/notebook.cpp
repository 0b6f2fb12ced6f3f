// The workshop notebook's cells on adding and removing workers, @spawn/@fetch/@everywhere, data
// movement and array mutation (SharedArray), in dj. Run it as `dj-run -p 4 notebook` (or plain `notebook`, which adds
// workers itself). Each cell prints what the notebook shows.
#include <dj/dj.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <cstdio>
#include <string>
#include <vector>

#include "cells.hpp"

namespace {

std::string plugin_dir() {
  char exe[4096] = {};
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  std::string path = n > 0 ? std::string(exe, static_cast<size_t>(n)) : ".";
  return path.substr(0, path.rfind('/')) + "/../lib";
}

std::string list(const std::vector<int>& pids) {
  std::string s = "[";
  for (size_t i = 0; i < pids.size(); ++i) s += (i ? ", " : "") + std::to_string(pids[i]);
  return s + "]";
}

}  // namespace

using notebook::best_ms;
using notebook::cell;

int main() {
  const std::string lib = plugin_dir();
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  cell("nprocs()");
  std::printf("%d\n", dj::nprocs());
  cell("nworkers()  # the master is considered a worker as long as there are no other workers");
  std::printf("%d\n", dj::nworkers());
  if (dj::nworkers() > 1 || dj::workers().front() != 1) {
    cell("rmprocs(workers())  # started with dj-run -p N: begin from the master alone");
    dj::rmprocs(dj::workers());
    std::printf("nworkers() = %d\n", dj::nworkers());
  }

  cell("addprocs(4)");
  std::printf("%s\n", list(dj::addprocs(4)).c_str());
  cell("workers()");
  std::printf("%s\n", list(dj::workers()).c_str());
  cell("rmprocs(workers())");
  dj::rmprocs(dj::workers());
  cell("nworkers()  # only the master is left");
  std::printf("%d\n", dj::nworkers());
  cell("addprocs(4)");
  std::printf("%s\n", list(dj::addprocs(4)).c_str());
  cell("workers()");
  std::printf("%s\n", list(dj::workers()).c_str());

  cell("everywhere(\"libnotebook_kernels.so\")  # load the kernels on every process");
  dj::Plugin kernels = dj::everywhere(lib + "/libnotebook_kernels.so");
  std::printf("loaded %zu kernels on %d processes\n", kernels.kernel_names().size(), dj::nprocs());
  auto add = kernels.kernel<double(double, double)>("add");
  auto rand_matrix = kernels.kernel<dj::Matrix<double>(int64_t, int64_t)>("rand_matrix");
  auto print_myid_then_add = kernels.kernel<double(double, double)>("print_myid_then_add");

  cell("result = spawn(add, 3, 3)");
  dj::Future<double> result = dj::spawn(add, 3, 3);
  std::printf("Future(%d, ...)\n", result.where());
  cell("fetch(result)");
  std::printf("%g\n", dj::fetch(result));
  cell("remotecall_fetch(add, spawn target, 3, 3)  # @fetch 3+3");
  std::printf("%g\n", dj::fetch(dj::spawn(add, 3, 3)));
  cell("@fetch rand(3,3)");
  dj::Matrix<double> m = dj::fetch(dj::spawn(rand_matrix, 3, 3));
  std::printf("3x3 Matrix{Float64}:\n");
  for (size_t i = 0; i < 3; ++i) std::printf(" %.6f  %.6f  %.6f\n", m(i, 0), m(i, 1), m(i, 2));
  cell("@fetch begin println(myid()); 3+3 end  # which worker did the work?");
  std::printf("%g\n", dj::fetch(dj::spawn(print_myid_then_add, 3, 3)));

  cell("@fetch complicated_calculation()  # defined in a plugin not loaded yet");
  dj::Kernel<std::vector<double>()> complicated_calculation("complicated_calculation");
  try {
    dj::fetch(dj::spawn(complicated_calculation));
  } catch (const dj::Error& e) {
    std::printf("ERROR: %s: %s\n", dj::to_string(e.kind()), e.what());
  }
  std::printf("What happened? Every worker is a separate process; the kernel was never loaded.\n");
  cell("everywhere(\"libcomplicated_kernels.so\"); @fetch complicated_calculation()");
  dj::everywhere(lib + "/libcomplicated_kernels.so");
  std::vector<double> r = dj::fetch(dj::spawn(complicated_calculation));
  std::printf("5-element Vector{Float64}:\n");
  for (double x : r) std::printf(" %.6f\n", x);

  cell("method1(): A, B made on the master, sent to a worker; method2(): made on the worker");
  auto square_product =
      kernels.kernel<dj::Matrix<double>(dj::Matrix<double>, dj::Matrix<double>)>("square_product");
  auto random_square_product = kernels.kernel<dj::Matrix<double>(int64_t)>("random_square_product");
  auto local_rand = [&] { return dj::remotecall_fetch(rand_matrix, 1, 100, 100); };
  double t1 = best_ms(20, [&] {
    dj::Matrix<double> a = local_rand(), b = local_rand();
    dj::fetch(dj::spawn(square_product, a, b));
  });
  double t2 = best_ms(20, [&] { dj::fetch(dj::spawn(random_square_product, 100)); });
  std::printf("method1: %.3f ms (moves A and B: 2 x 78 KiB to the worker)\n", t1);
  std::printf("method2: %.3f ms (moves only the result)\n", t2);

  notebook::high_level_cells(lib);
  cell("a = SharedArray{Float64}(10, 10); @time square!(a); @time square_distributed!(a)");
  {
    // square!: the master alone, 1 ms of work per element. square_distributed!: every worker
    // squares its localindices(a) of the same shared memory, in place; nothing is copied.
    auto square_local_part = kernels.kernel<void(dj::SharedArray<double>)>("square_local_part");
    dj::SharedArray<double> a({10, 10});
    auto reset = [&] {
      for (size_t i = 0; i < a.length(); ++i) a[i] = static_cast<double>(i);
    };
    auto square = [&] {
      for (double& x : dj::sdata(a)) {
        x = x * x;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    };
    auto square_distributed = [&] {
      std::vector<dj::Future<void>> parts;
      for (int pid : dj::procs(a)) parts.push_back(dj::remotecall(square_local_part, pid, a));
      for (auto& part : parts) dj::wait(part);
    };
    auto squared = [&] {
      for (size_t i = 0; i < a.length(); ++i) {
        if (a[i] != static_cast<double>(i * i)) return false;
      }
      return true;
    };
    reset();
    double serial = best_ms(1, square);
    bool serial_ok = squared();
    reset();
    double distributed = best_ms(1, square_distributed);
    bool distributed_ok = squared();
    std::printf("square!(a):             %7.1f ms (the master alone)\n", serial);
    std::printf("square_distributed!(a): %7.1f ms (%zu workers on their localindices)\n",
                distributed, dj::procs(a).size());
    std::printf("speedup: %.1fx with nworkers() = %d; a == (0:99).^2: %s\n", serial / distributed,
                dj::nworkers(), serial_ok && distributed_ok ? "true" : "false");
  }

  notebook::darray_cells(lib);

  cell("rmprocs(workers())  # cleanup");
  dj::rmprocs(dj::workers());
  std::printf("nworkers() = %d\n", dj::nworkers());
  return 0;
}
