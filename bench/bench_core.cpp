// Core benchmarks (issue "Core runtime"): each dj figure beside its floor from the same run.
//   1. round trip of remotecall_fetch(add, 3, 3) to a local worker vs a raw blocking TCP
//      ping-pong between two processes (target: <= 1.5x)
//   2. 4 workers started to first result vs fork+exec of 4 `true` (target: <= 30 ms)
//   3. idle worker RSS (target: <= 8 MiB)
// Usage: bench_core [--quick]
#include <arpa/inet.h>
#include <dirent.h>
#include <sched.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <dj/dj.hpp>

#include "bench_support.hpp"

namespace dj::bench {
namespace {

void read_exact(int fd, char* p, size_t n) {
  while (n) {
    ssize_t r = ::read(fd, p, n);
    if (r <= 0) ::_exit(1);
    p += r;
    n -= static_cast<size_t>(r);
  }
}

// Raw TCP ping-pong on loopback between this process and a forked echo process, blocking
// sockets with TCP_NODELAY: the same transport and blocking mode dj uses. Returns seconds per
// round trip over `rounds`.
struct TcpFloor {
  pid_t child = -1;
  int fd = -1;

  // unix_socket: the same ping-pong over a Unix socket pair (the transport dj uses for
  // same-host workers), printed for transparency next to the TCP floor the target names.
  explicit TcpFloor(bool unix_socket = false) {
    if (unix_socket) {
      int sv[2];
      ::socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
      child = ::fork();
      if (child == 0) {
        ::close(sv[0]);
        char buf[64];
        for (;;) {
          read_exact(sv[1], buf, 64);
          if (::write(sv[1], buf, 64) != 64) ::_exit(0);
        }
      }
      ::close(sv[1]);
      fd = sv[0];
      return;
    }
    int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
    ::listen(listener, 1);
    child = ::fork();
    if (child == 0) {
      int c = ::accept(listener, nullptr, nullptr);
      int one = 1;
      ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      char buf[64];
      for (;;) {
        read_exact(c, buf, 64);
        if (::write(c, buf, 64) != 64) ::_exit(0);
      }
    }
    ::close(listener);
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~TcpFloor() {
    ::close(fd);
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
  }
  double round_trip(int rounds) {
    char buf[64] = {};
    auto t0 = Clock::now();
    for (int i = 0; i < rounds; ++i) {
      if (::write(fd, buf, 64) != 64) return -1;
      read_exact(fd, buf, 64);
    }
    return seconds_since(t0) / rounds;
  }
};

// Pins every thread of process `pid` (or of this process when pid == 0) to one CPU.
void pin_process(pid_t pid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  std::string dir = "/proc/" + (pid ? std::to_string(pid) : std::string("self")) + "/task";
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ::sched_setaffinity(std::atoi(e->d_name), sizeof set, &set);
    }
    ::closedir(d);
  }
}

void unpin_process(pid_t pid) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c = 0; c < CPU_SETSIZE; ++c) CPU_SET(c, &set);
  std::string dir = "/proc/" + (pid ? std::to_string(pid) : std::string("self")) + "/task";
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ::sched_setaffinity(std::atoi(e->d_name), sizeof set, &set);
    }
    ::closedir(d);
  }
}

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
}  // namespace dj::bench

int main(int argc, char** argv) {
  using namespace dj::bench;
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int batches = quick ? 5 : 15;
  const int rounds = quick ? 500 : 2000;
  const std::string plugin = lib_dir() + "/libnotebook_kernels.so";

  // --- 2. startup: 4 workers to first result, vs fork+exec of 4 `true` -----------------------
  std::vector<double> start_dj, start_floor;
  for (int i = 0; i < (quick ? 3 : 7); ++i) {
    start_floor.push_back(spawn_true(4));
    auto t0 = Clock::now();
    auto pids = dj::addprocs(4);
    auto add = dj::everywhere(plugin).kernel<double(double, double)>("add");
    std::vector<dj::Future<double>> first;
    for (int pid : pids) first.push_back(dj::spawnat(pid, add, 3.0, 3.0));
    for (auto& f : first) dj::fetch(f);
    start_dj.push_back(seconds_since(t0));
    dj::rmprocs(pids);
  }
  double s_dj = median(start_dj) * 1e3, s_floor = median(start_floor) * 1e3;
  result("startup 4 workers", "fork+exec 4 true (floor)", "whole run", s_floor, "ms");
  result("startup 4 workers", "dj addprocs(4)+everywhere+first results", "ready", s_dj, "ms");
  result("startup 4 workers", "dj", "ratio to floor", s_dj / s_floor, "x");

  // --- 1. latency: remotecall_fetch(add, 3, 3) vs raw TCP ping-pong ---------------------------
  // Blocking round trips on 2 vCPUs are bimodal (cross-CPU wake-ups cost ~20 us each way), so
  // both are measured in the same three placements: unpinned, both processes on one CPU, and
  // master and worker (client and echo server) on different CPUs.
  int worker = dj::addprocs(1).front();
  auto add = dj::everywhere(plugin).kernel<double(double, double)>("add");
  pid_t worker_os = static_cast<pid_t>(dj::worker_info(worker).os_pid);
  struct Placement {
    const char* name;
    int master_cpu, worker_cpu;  // -1: unpinned
  };
  int ncpu = static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
  std::vector<Placement> placements{{"unpinned", -1, -1}, {"1 core pinned", 0, 0}};
  if (ncpu > 1) placements.push_back({"2 cores pinned", 0, 1});
  double worst_ratio = 0;
  for (const Placement& where : placements) {
    std::vector<double> rt_dj, rt_floor, rt_unix;
    TcpFloor floor;
    TcpFloor unix_floor(true);
    auto place = [&](pid_t a, pid_t b) {
      if (where.master_cpu < 0) {
        unpin_process(0);
        unpin_process(a);
        unpin_process(b);
      } else {
        pin_process(0, where.master_cpu);
        pin_process(a, where.worker_cpu);
        pin_process(b, where.worker_cpu);
      }
    };
    place(floor.child, worker_os);
    place(unix_floor.child, worker_os);
    floor.round_trip(rounds / 4);  // warm up
    unix_floor.round_trip(rounds / 4);
    for (int i = 0; i < rounds / 4; ++i) dj::remotecall_fetch(add, worker, 3.0, 3.0);
    for (int b = 0; b < batches; ++b) {  // interleaved, so both see the same machine state
      rt_floor.push_back(floor.round_trip(rounds));
      rt_unix.push_back(unix_floor.round_trip(rounds));
      auto t0 = Clock::now();
      for (int i = 0; i < rounds; ++i) dj::remotecall_fetch(add, worker, 3.0, 3.0);
      rt_dj.push_back(seconds_since(t0) / rounds);
    }
    double l_dj = median(rt_dj) * 1e6, l_floor = median(rt_floor) * 1e6;
    std::string suffix = std::string(", ") + where.name;
    result("latency add(3,3)", "raw TCP loopback ping-pong (floor)" + suffix, "round trip",
           l_floor, "us");
    double l_unix = median(rt_unix) * 1e6;
    result("latency add(3,3)", "raw Unix socket ping-pong" + suffix, "round trip", l_unix, "us");
    result("latency add(3,3)", "dj remotecall_fetch" + suffix, "round trip", l_dj, "us");
    result("latency add(3,3)", "dj" + suffix, "ratio to floor", l_dj / l_floor, "x");
    result("latency add(3,3)", "dj" + suffix, "ratio to raw Unix socket", l_dj / l_unix, "x");
    worst_ratio = std::max(worst_ratio, l_dj / l_floor);
  }
  unpin_process(0);
  unpin_process(worker_os);

  // --- 3. idle worker memory ------------------------------------------------------------------
  double rss = static_cast<double>(dj::worker_stats(worker).rss_bytes) / (1 << 20);
  result("idle worker", "dj-worker with a plugin loaded", "RSS", rss, "MiB");

  // --- 4. idle worker CPU over one second, and worker-death detection ----------------------
  {
    auto cpu_ticks = [](pid_t pid) {
      std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
      if (!f) return 0L;
      char buf[1024] = {};
      size_t n = std::fread(buf, 1, sizeof buf - 1, f);
      std::fclose(f);
      std::string stat(buf, n);
      auto close = stat.rfind(')');
      long utime = 0, stime = 0;
      std::sscanf(stat.c_str() + close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld",
                  &utime, &stime);
      return utime + stime;
    };
    long before = cpu_ticks(worker_os);
    auto t0 = Clock::now();
    ::usleep(1000000);
    double secs = seconds_since(t0);
    double pct = 100.0 * static_cast<double>(cpu_ticks(worker_os) - before) /
                 static_cast<double>(::sysconf(_SC_CLK_TCK)) / secs;
    result("idle worker", "dj-worker after calls stop", "CPU over 1 s", pct, "%");

    // A pending Future on a worker killed with SIGKILL: time until it has failed.
    auto slow = dj::everywhere(lib_dir() + "/libcomplicated_kernels.so")
                    .kernel<std::vector<double>()>("complicated_calculation");
    std::vector<double> detect;
    for (int i = 0; i < (quick ? 3 : 7); ++i) {
      int victim = dj::addprocs(1).front();
      auto pending = dj::spawnat(victim, slow);
      auto os = static_cast<pid_t>(dj::worker_info(victim).os_pid);
      auto t1 = Clock::now();
      ::kill(os, SIGKILL);
      while (!dj::isready(pending)) {
      }
      detect.push_back(seconds_since(t1) * 1e3);
    }
    result("worker death", "SIGKILL to its pending Future failing", "detection", median(detect),
           "ms");
  }

  std::printf("runs: %d startup samples, %d latency batches x %d round trips (medians)\n",
              static_cast<int>(start_dj.size()), batches, rounds);
  std::printf("targets: latency ratio <= 1.5 in every placement (worst %.2f: %s), "
              "startup <= 30 ms (%s), idle RSS <= 8 MiB (%s)\n",
              worst_ratio, worst_ratio <= 1.5 ? "met" : "NOT met", s_dj <= 30 ? "met" : "NOT met",
              rss <= 8 ? "met" : "NOT met");
  dj::rmprocs(dj::workers());
  return 0;
}
