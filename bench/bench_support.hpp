// Shared pieces of dj's benchmark programs: RESULT lines, medians, and the floors every dj
// figure is divided by (measured in the same run, with the same process placement).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace dj::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

// One row in the peer-baseline format: RESULT|workload|system|metric|value|unit
inline void result(const std::string& workload, const std::string& system,
                   const std::string& metric, double value, const std::string& unit) {
  std::printf("RESULT|%s|%s|%s|%.4g|%s\n", workload.c_str(), system.c_str(), metric.c_str(),
              value, unit.c_str());
  std::fflush(stdout);
}

// Directory of the running executable's sibling lib/ (where the example plugins are built).
std::string lib_dir();

}  // namespace dj::bench
