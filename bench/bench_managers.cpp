// Cluster-manager benchmarks (issue "Cluster managers"), each beside a floor from the same run:
//   1. 3 SSH hosts, one worker each, ready to first result vs three parallel `ssh host true`
//      (target <= 1.5x)
//   2. 4 SLURM workers ready to first result vs `srun -n 4 true` (target <= 1.5x)
//   3. round trip of remotecall_fetch(add, 3, 3) to a worker on an SSH host vs a raw TCP
//      ping-pong between the same network namespaces (target <= 1.2x)
// Needs the test infrastructure: eval "$(../shared/scripts/ssh-hosts-up 3)" and
// eval "$(../shared/scripts/slurm-local-up)". Parts whose infrastructure is missing are skipped
// with a message. `bench_managers --echo PORT` is the echo server it starts on an SSH host.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <dj/dj.hpp>
#include <sstream>

#include "bench_support.hpp"

namespace {

using namespace dj::bench;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string self_path() {
  char exe[4096] = {};
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  return n > 0 ? std::string(exe, static_cast<size_t>(n)) : "";
}

// Runs argv to completion for every command at once; returns the wall time in seconds.
double run_parallel(const std::vector<std::vector<std::string>>& commands) {
  auto t0 = Clock::now();
  std::vector<pid_t> pids;
  for (const auto& cmd : commands) {
    pid_t p = ::fork();
    if (p == 0) {
      std::vector<char*> argv;
      for (const auto& a : cmd) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      int null_fd = ::open("/dev/null", O_WRONLY);
      ::dup2(null_fd, 1);
      ::dup2(null_fd, 2);
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
    pids.push_back(p);
  }
  for (pid_t p : pids) ::waitpid(p, nullptr, 0);
  return seconds_since(t0);
}

int echo_server(int port) {
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return 1;
  ::listen(listener, 1);
  std::printf("ready\n");
  std::fflush(stdout);
  int c = ::accept(listener, nullptr, nullptr);
  ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char buf[64];
  for (;;) {
    size_t got = 0;
    while (got < sizeof buf) {
      ssize_t r = ::read(c, buf + got, sizeof buf - got);
      if (r <= 0) return 0;
      got += static_cast<size_t>(r);
    }
    if (::write(c, buf, sizeof buf) != sizeof buf) return 0;
  }
}

void ssh_benchmarks(bool quick, const std::string& plugin) {
  std::string config = env("DJ_SSH_CONFIG");
  if (config.empty()) {
    std::printf("SSH: skipped ($DJ_SSH_CONFIG unset: run ../shared/scripts/ssh-hosts-up 3)\n");
    return;
  }
  std::vector<std::string> hosts{"dj-host1", "dj-host2", "dj-host3"};
  dj::SshOptions options;
  options.ssh_config = config;
  std::vector<dj::Machine> machines;
  for (const auto& h : hosts) machines.push_back(dj::Machine{h});

  std::vector<double> dj_ready, floor;
  for (int i = 0; i < (quick ? 2 : 5); ++i) {
    std::vector<std::vector<std::string>> cmds;
    for (const auto& h : hosts) cmds.push_back({"ssh", "-F", config, h, "true"});
    floor.push_back(run_parallel(cmds));
    auto t0 = Clock::now();
    auto pids = dj::addprocs(machines, options);
    auto add = dj::everywhere(plugin).kernel<double(double, double)>("add");
    std::vector<dj::Future<double>> first;
    for (int pid : pids) first.push_back(dj::spawnat(pid, add, 3.0, 3.0));
    for (auto& f : first) dj::fetch(f);
    dj_ready.push_back(seconds_since(t0));
    dj::rmprocs(pids);
  }
  double d = median(dj_ready) * 1e3, f = median(floor) * 1e3;
  result("startup 3 SSH hosts", "3 parallel ssh host true (floor)", "whole run", f, "ms");
  result("startup 3 SSH hosts", "dj addprocs(3 hosts)+everywhere+first results", "ready", d, "ms");
  result("startup 3 SSH hosts", "dj", "ratio to floor", d / f, "x");

  // Round trip to a worker on dj-host1 vs raw TCP from here to dj-host1.
  std::istringstream addrs(env("DJ_SSH_ADDRS"));
  std::string host1_addr;
  addrs >> host1_addr;
  int port = 47000 + static_cast<int>(::getpid() % 1000);
  int out[2];
  if (::pipe(out) != 0) return;
  pid_t echo = ::fork();
  if (echo == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    std::string remote = self_path() + " --echo " + std::to_string(port);
    ::execlp("ssh", "ssh", "-F", config.c_str(), "dj-host1", remote.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(out[1]);
  char line[64] = {};
  ssize_t got = ::read(out[0], line, sizeof line - 1);
  if (got <= 0) {
    std::printf("SSH round trip: skipped (echo server did not start on dj-host1)\n");
    return;
  }
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, host1_addr.c_str(), &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::printf("SSH round trip: skipped (cannot reach %s:%d)\n", host1_addr.c_str(), port);
    return;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto worker = dj::addprocs({dj::Machine{"dj-host1"}}, options).front();
  auto add = dj::everywhere(plugin).kernel<double(double, double)>("add");
  const int rounds = quick ? 500 : 2000;
  std::vector<double> rt_dj, rt_raw;
  char buf[64] = {};
  for (int b = 0; b < (quick ? 5 : 15); ++b) {
    auto t0 = Clock::now();
    for (int i = 0; i < rounds; ++i) {
      if (::write(fd, buf, 64) != 64) break;
      size_t have = 0;
      while (have < 64) {
        ssize_t r = ::read(fd, buf + have, 64 - have);
        if (r <= 0) break;
        have += static_cast<size_t>(r);
      }
    }
    rt_raw.push_back(seconds_since(t0) / rounds);
    t0 = Clock::now();
    for (int i = 0; i < rounds; ++i) dj::remotecall_fetch(add, worker, 3.0, 3.0);
    rt_dj.push_back(seconds_since(t0) / rounds);
  }
  ::close(fd);
  ::waitpid(echo, nullptr, 0);
  dj::rmprocs(worker);
  double l_dj = median(rt_dj) * 1e6, l_raw = median(rt_raw) * 1e6;
  result("latency add(3,3) SSH host", "raw TCP ping-pong to dj-host1 (floor)", "round trip", l_raw, "us");
  result("latency add(3,3) SSH host", "dj remotecall_fetch to a worker on dj-host1", "round trip", l_dj, "us");
  result("latency add(3,3) SSH host", "dj", "ratio to floor", l_dj / l_raw, "x");
}

void slurm_benchmarks(bool quick, const std::string& plugin) {
  if (env("SLURM_CONF").empty() || ::system("command -v srun >/dev/null 2>&1") != 0) {
    std::printf("SLURM: skipped (no srun/$SLURM_CONF: run ../shared/scripts/slurm-local-up)\n");
    return;
  }
  std::vector<double> dj_ready, floor;
  for (int i = 0; i < (quick ? 2 : 5); ++i) {
    floor.push_back(run_parallel({{"srun", "-n", "4", "true"}}));
    auto t0 = Clock::now();
    auto pids = dj::addprocs_slurm(4);
    auto add = dj::everywhere(plugin).kernel<double(double, double)>("add");
    std::vector<dj::Future<double>> first;
    for (int pid : pids) first.push_back(dj::spawnat(pid, add, 3.0, 3.0));
    for (auto& f : first) dj::fetch(f);
    dj_ready.push_back(seconds_since(t0));
    dj::rmprocs(pids);
  }
  double d = median(dj_ready) * 1e3, f = median(floor) * 1e3;
  result("startup 4 SLURM workers", "srun -n 4 true (floor)", "whole run", f, "ms");
  result("startup 4 SLURM workers", "dj addprocs_slurm(4)+everywhere+first results", "ready", d, "ms");
  result("startup 4 SLURM workers", "dj", "ratio to floor", d / f, "x");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2 && std::strcmp(argv[1], "--echo") == 0) return echo_server(std::atoi(argv[2]));
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::string plugin = lib_dir() + "/libnotebook_kernels.so";
  ssh_benchmarks(quick, plugin);
  slurm_benchmarks(quick, plugin);
  std::printf("targets: SSH ready <= 1.5x, SLURM ready <= 1.5x, SSH round trip <= 1.2x\n");
  return 0;
}
