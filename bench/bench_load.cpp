// Load figures (issue 8, items 8 and 10), each beside a floor from the same run:
//   1. workers held: addprocs(64) + a pmap over them + rmprocs on this machine, against 64
//      fork+exec of /bin/true
//   2. Futures held: master memory per outstanding Future (10^6 of them), against a bare
//      std::shared_ptr<int64_t> per element held the same way
//   3. recovery after a SIGKILL: kill -> the worker is gone from workers() -> a replacement
//      answers, against fork+exec+wait of /bin/true
// Usage: bench_load [--quick]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <dj/dj.hpp>
#include <fstream>
#include <memory>
#include <thread>

#include "bench_support.hpp"

namespace {

using namespace dj::bench;

int64_t rss_bytes() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

// Seconds to fork+exec+reap /bin/true `n` times, all started before any is reaped.
double spawn_true(int n) {
  auto t0 = Clock::now();
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    pid_t p = ::fork();
    if (p == 0) {
      ::execl("/bin/true", "true", nullptr);
      ::_exit(127);
    }
    pids.push_back(p);
  }
  for (pid_t p : pids) ::waitpid(p, nullptr, 0);
  return seconds_since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int runs = quick ? 2 : 5;
  dj::Plugin plugin = dj::everywhere(lib_dir() + "/libparallel_kernels.so");
  auto noop = plugin.kernel<int64_t(int64_t)>("noop");
  dj::PmapOptions quiet;
  quiet.progress = false;

  // 1. 64 workers: start, use, stop.
  {
    const int n = 64;
    std::vector<double> cycle, floor;
    std::vector<int64_t> xs(6400);
    for (size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<int64_t>(i);
    for (int r = 0; r < runs; ++r) {
      floor.push_back(spawn_true(n));
      auto t0 = Clock::now();
      auto pids = dj::addprocs(n);
      auto ys = dj::pmap(noop, xs, quiet);
      if (ys != xs) std::printf("WRONG pmap result over %d workers\n", n);
      dj::rmprocs(pids);
      cycle.push_back(seconds_since(t0));
    }
    result("workers held", "fork+exec /bin/true x64 (floor)", "time", median(floor), "s");
    result("workers held", "dj addprocs(64)+pmap+rmprocs", "time", median(cycle), "s");
    result("workers held", "dj addprocs(64)+pmap+rmprocs", "workers", n, "workers");
    result("workers held", "dj addprocs(64)+pmap+rmprocs", "dj/floor",
           median(cycle) / median(floor), "x");
  }

  // 2. Futures held on the master.
  {
    const int64_t n = quick ? 200'000 : 1'000'000;
    std::vector<int> two = dj::addprocs(2);
    int64_t before = rss_bytes();
    std::vector<std::shared_ptr<int64_t>> bare;
    bare.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) bare.push_back(std::make_shared<int64_t>(i));
    double floor_bytes = static_cast<double>(rss_bytes() - before) / static_cast<double>(n);
    bare = {};
    before = rss_bytes();
    auto t0 = Clock::now();
    std::vector<dj::Future<int64_t>> held;
    held.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      held.push_back(dj::remotecall(noop, two[static_cast<size_t>(i % 2)], i));
    }
    for (auto& f : held) dj::wait(f);
    double secs = seconds_since(t0);
    double bytes = static_cast<double>(rss_bytes() - before) / static_cast<double>(n);
    uint64_t remote =
        dj::worker_stats(two[0]).stored_values + dj::worker_stats(two[1]).stored_values;
    held = {};
    result("futures held", "bare shared_ptr<int64_t> (floor)", "bytes per handle", floor_bytes,
           "B");
    result("futures held", "dj remotecall Futures, 2 workers", "futures held",
           static_cast<double>(n), "futures");
    result("futures held", "dj remotecall Futures, 2 workers", "values held on workers",
           static_cast<double>(remote), "values");
    result("futures held", "dj remotecall Futures, 2 workers", "bytes per future", bytes, "B");
    result("futures held", "dj remotecall Futures, 2 workers", "dj/floor", bytes / floor_bytes,
           "x");
    result("futures held", "dj remotecall Futures, 2 workers", "issue+wait rate",
           static_cast<double>(n) / secs, "futures/s");
    dj::rmprocs(dj::workers());
  }

  // 3. Recovery after a SIGKILL of a worker with a call pending.
  {
    dj::addprocs(4);
    std::vector<double> detect, recover, floor;
    for (int r = 0; r < runs; ++r) {
      floor.push_back(spawn_true(1));
      int victim = dj::workers().front();
      dj::remotecall_fetch(noop, victim, int64_t{1});
      auto t0 = Clock::now();
      ::kill(static_cast<pid_t>(dj::worker_info(victim).os_pid), SIGKILL);
      while (dj::workers().front() == victim) {
        std::this_thread::sleep_for(std::chrono::microseconds(50));  // polling, not pacing
      }
      detect.push_back(seconds_since(t0));
      int fresh = dj::addprocs(1).front();
      dj::remotecall_fetch(noop, fresh, int64_t{3});
      recover.push_back(seconds_since(t0));
    }
    result("recovery after SIGKILL", "fork+exec+wait /bin/true (floor)", "time",
           median(floor) * 1e3, "ms");
    result("recovery after SIGKILL", "dj worker lost -> gone from workers()", "time",
           median(detect) * 1e3, "ms");
    result("recovery after SIGKILL", "dj kill -> replacement answers", "time",
           median(recover) * 1e3, "ms");
    result("recovery after SIGKILL", "dj kill -> replacement answers", "dj/floor",
           median(recover) / median(floor), "x");
    dj::rmprocs(dj::workers());
  }
  std::printf("runs per figure: %d (medians)\n", runs);
  return 0;
}
