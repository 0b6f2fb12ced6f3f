// Same-host transport benchmarks (issue "Same-host shared memory"), 1 local worker, each figure
// beside a floor from the same run:
//   1. round trip of remotecall_fetch(add, 3, 3) vs two processes ping-ponging a flag in shared
//      memory (spinning: the fastest any same-host transport can be; target <= 4x), for each
//      placement of the two processes by the VM seen during the run
//   2. an array of 64 MiB and of 256 MiB to a worker and back vs memcpy of the same size (target
//      >= 0.5x memcpy bandwidth: 2 x size moved in the time of 2 memcpys), as std::vector each way
//      (a fresh vector on each side) and as dj::ArrayView each way (read in place)
//   3. CPU used by idle workers over 1 s (target 0 %)
// Usage: bench_shm [--quick]
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <dj/dj.hpp>
#include <fstream>
#include <sstream>
#include <thread>

#include "bench_support.hpp"

namespace {

using namespace dj::bench;

// Two processes ping-pong a counter in a MAP_SHARED page, spinning on it. Seconds per round
// trip over `rounds`.
double shm_flag_round_trip(int rounds) {
  void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* flag = new (page) std::atomic<uint64_t>(0);
  pid_t child = ::fork();
  if (child == 0) {
    for (uint64_t expect = 1;; expect += 2) {
      while (flag->load(std::memory_order_acquire) != expect) __builtin_ia32_pause();
      flag->store(expect + 1, std::memory_order_release);
      if (expect + 1 >= 2 * static_cast<uint64_t>(rounds) + 2) ::_exit(0);
    }
  }
  auto ping = [&](uint64_t i) {
    flag->store(2 * i + 1, std::memory_order_release);
    while (flag->load(std::memory_order_acquire) != 2 * i + 2) __builtin_ia32_pause();
  };
  ping(0);  // warm up
  auto t0 = Clock::now();
  for (int i = 1; i <= rounds; ++i) ping(static_cast<uint64_t>(i));
  double s = seconds_since(t0) / rounds;
  ::waitpid(child, nullptr, 0);
  ::munmap(page, 4096);
  return s;
}

double cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(f, line);
  std::istringstream in(line.substr(line.rfind(')') + 2));
  std::string field;
  unsigned long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stoul(field);
    if (i == 15) stime = std::stoul(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int runs = quick ? 5 : 15;
  const int rounds = quick ? 2000 : 10000;
  dj::addprocs(1);
  const int w = dj::workers().front();
  dj::Plugin plugin = dj::everywhere(lib_dir() + "/libparallel_kernels.so");
  auto echo = plugin.kernel<std::vector<double>(std::vector<double>)>("echo");
  auto echo_view = plugin.kernel<dj::ArrayView<double>(dj::ArrayView<double>)>("echo_view");
  dj::Plugin notebook = dj::everywhere(lib_dir() + "/libnotebook_kernels.so");
  auto add = notebook.kernel<double(double, double)>("add");

  // 1. Round trip. This VM places the two processes either on nearby cores (flag floor about
  // 0.07 us) or on distant ones (about 0.45 us), and moves them between the two over minutes.
  // So each dj measurement is taken between two floor measurements, a trio whose floors differ
  // in placement (it straddled a move) is dropped, and the ratio is reported for each
  // placement seen (told apart by the floor: below 0.2 us is near): the target is met only if
  // it is met in each.
  struct Trio {
    double floor, dj;
  };
  std::vector<Trio> near, far;
  int dropped = 0;
  shm_flag_round_trip(rounds);  // warm-up, as for dj below
  for (int i = 0; i < rounds; ++i) dj::remotecall_fetch(add, w, 3.0, 3.0);
  double floor_before = shm_flag_round_trip(rounds);
  for (int r = 0; r < runs; ++r) {
    auto t0 = Clock::now();
    for (int i = 0; i < rounds; ++i) dj::remotecall_fetch(add, w, 3.0, 3.0);
    const double dj_rt = seconds_since(t0) / rounds;
    const double after = shm_flag_round_trip(rounds);
    constexpr double kNear = 0.2e-6;
    if ((floor_before < kNear) != (after < kNear)) {
      ++dropped;
    } else {
      const double floor = (floor_before + after) / 2;
      (floor < kNear ? near : far).push_back({floor, dj_rt});
    }
    floor_before = after;
  }
  bool rt_met = !near.empty() || !far.empty();
  for (const auto* trios : {&near, &far}) {
    if (trios->empty()) continue;
    const std::string placement = trios == &near ? "near placement" : "far placement";
    const std::string where = " [" + placement + "]";
    std::vector<double> floors, rts, ratios;
    for (const Trio& t : *trios) {
      floors.push_back(t.floor);
      rts.push_back(t.dj);
      ratios.push_back(t.dj / t.floor);
    }
    const double ratio = median(ratios);
    rt_met = rt_met && ratio <= 4;
    result("shm round trip", "shared-memory flag ping-pong (floor)" + where, "latency",
           median(floors) * 1e6, "us");
    result("shm round trip", "dj remotecall_fetch(add) same host" + where, "latency",
           median(rts) * 1e6, "us");
    result("shm round trip", "dj remotecall_fetch(add) same host" + where, "ratio to floor", ratio,
           "x");
    std::printf("%s: %zu of %d measurements, %.2fx the floor\n", placement.c_str(),
                trios->size(), runs, ratio);
  }
  if (dropped) std::printf("dropped %d of %d measurements: the placement moved\n", dropped, runs);
  std::printf("target <= 4x in each placement seen: %s\n", rt_met ? "met" : "NOT met");

  // 2. Arrays there and back.
  for (size_t mib : {64, 256}) {
    const size_t n = (mib << 20) / sizeof(double);
    std::vector<double> v(n, 1.5), copy(n);
    std::vector<double> t_memcpy, t_dj, t_view;
    const int array_runs = quick ? 2 : 5;
    for (int r = 0; r < array_runs; ++r) {
      auto t0 = Clock::now();
      std::memcpy(copy.data(), v.data(), n * sizeof(double));
      t_memcpy.push_back(seconds_since(t0));
      t0 = Clock::now();
      std::vector<double> back = dj::remotecall_fetch(echo, w, v);
      t_dj.push_back(seconds_since(t0));
      bool ok = back.size() == n && back[n - 1] == 1.5;
      t0 = Clock::now();
      {
        dj::ArrayView<double> seen = dj::remotecall_fetch(echo_view, w, v);
        t_view.push_back(seconds_since(t0));
        ok = ok && seen.size() == n && seen[n - 1] == 1.5;
      }
      if (!ok) {
        std::fprintf(stderr, "bench_shm: echo returned the wrong array\n");
        return 1;
      }
    }
    std::string name = "array " + std::to_string(mib) + " MiB there and back";
    double memcpy_bw = static_cast<double>(mib) / 1024 / median(t_memcpy);
    double dj_bw = 2.0 * static_cast<double>(mib) / 1024 / median(t_dj);
    double view_bw = 2.0 * static_cast<double>(mib) / 1024 / median(t_view);
    result(name, "memcpy (floor)", "bandwidth", memcpy_bw, "GiB/s");
    result(name, "dj remotecall_fetch(echo) std::vector", "bandwidth", dj_bw, "GiB/s");
    result(name, "dj remotecall_fetch(echo) std::vector", "ratio to memcpy", dj_bw / memcpy_bw, "x");
    result(name, "dj remotecall_fetch(echo_view) ArrayView", "bandwidth", view_bw, "GiB/s");
    result(name, "dj remotecall_fetch(echo_view) ArrayView", "ratio to memcpy", view_bw / memcpy_bw,
           "x");
    std::printf("target >= 0.5x (ArrayView, read in place both ways): %s\n",
                view_bw / memcpy_bw >= 0.5 ? "met" : "NOT met");
  }

  // 3. Idle CPU.
  dj::addprocs(3);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  double before = 0, after = 0;
  for (int p : dj::workers()) before += cpu_seconds(static_cast<pid_t>(dj::worker_info(p).os_pid));
  auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  for (int p : dj::workers()) after += cpu_seconds(static_cast<pid_t>(dj::worker_info(p).os_pid));
  double pct = 100.0 * (after - before) / seconds_since(t0) / dj::nworkers();
  result("idle workers", "dj 4 idle workers", "cpu per worker", pct, "%");
  std::printf("target 0 %%: %s\n", pct < 0.5 ? "met" : "NOT met");
  dj::rmprocs(dj::workers());
  return 0;
}
