// Shared helpers of the notebook demo's cells, and the cells that live in their own files.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

namespace notebook {

inline void cell(const char* code) { std::printf("\nIn: %s\n", code); }

// Minimum time of `runs` calls, as @btime reports it.
template <class F>
double best_ms(int runs, F&& f) {
  double best = 1e300;
  for (int i = 0; i < runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return best;
}

// "High-level tools: @distributed and pmap" and "@distributed vs pmap" (high_level.cpp).
void high_level_cells(const std::string& lib_dir);
// "High-level array abstractions: DistributedArrays.jl" (darray_cells.cpp).
void darray_cells(const std::string& lib_dir);

}  // namespace notebook
