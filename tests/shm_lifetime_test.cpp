// SharedArray lifetime: memory freed in every process once the last handle goes, nothing left
// in /dev/shm after the master returns or is SIGKILLed, stale segments swept, and pids on
// another host (own /dev/shm) refused.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "dj/dj.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {

void check_nothing_left() {
  if (workers() != std::vector<int>{1}) rmprocs(workers());
  CHECK(test::children_named("dj-worker").empty());
  CHECK(test::shm_entries_of(::getpid()).empty());
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

struct SharedMaster {
  pid_t pid = 0;
  std::string segment;          // "/dj-<pid>-0"
  std::vector<pid_t> workers;   // OS pids
};

// Starts `test_master <mode> N` and reads its "segment=NAME worker-os-pids: ..." line.
SharedMaster start_shared_master(const std::string& args) {
  auto master = test::start_with_stdout(test::program("test_master") + " " + args);
  std::string text = test::read_until(master.stdout_fd, "\n");
  ::close(master.stdout_fd);
  pid_t child = master.pid;
  SharedMaster m;
  m.pid = child;
  INFO("test_master said: " << text);
  REQUIRE(text.rfind("segment=", 0) == 0);
  m.segment = text.substr(8, text.find(' ') - 8);
  std::istringstream in(text.substr(text.find(':') + 1));
  long p;
  while (in >> p) m.workers.push_back(static_cast<pid_t>(p));
  return m;
}

bool all_dead(const std::vector<pid_t>& pids) {
  for (pid_t p : pids) {
    if (test::process_alive(p)) return false;
  }
  return true;
}

// An OS pid that no process has now (a reaped child's).
pid_t dead_pid() {
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  return child;
}

void create_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0600);
  REQUIRE(fd >= 0);
  ::close(fd);
}

}  // namespace

TEST_CASE("the memory is released in every process once the last handle is dropped", "[shm][lifetime]") {
  addprocs(2);
  auto plugin = everywhere(test::plugin("shm_kernels"));
  auto sum_all = plugin.kernel<double(SharedArray<double>)>("sum_all");
  std::vector<pid_t> os_pids{static_cast<pid_t>(worker_info(2).os_pid),
                             static_cast<pid_t>(worker_info(3).os_pid)};
  std::string name;
  {
    SharedArray<double> s({1 << 16});
    name = s.segment_name();
    // Unlinked as soon as both workers mapped it: no crash can leak it from here on.
    CHECK_FALSE(exists("/dev/shm" + name));
    CHECK(test::maps_segment(::getpid(), name));
    for (pid_t p : os_pids) CHECK(test::maps_segment(p, name));

    // A call still in flight keeps the array alive after the master's last handle is dropped.
    s[7] = 2.5;
    Future<double> sum = remotecall(sum_all, 2, s);
    s = SharedArray<double>();
    CHECK(fetch(sum) == 2.5);
  }
  CHECK(test::eventually([&] { return !test::maps_segment(::getpid(), name); }));
  for (pid_t p : os_pids) {
    INFO("worker os pid " << p << " still maps " << name);
    CHECK(test::eventually([&] { return !test::maps_segment(p, name); }));
  }
  check_nothing_left();
}

TEST_CASE("nothing is left in /dev/shm after the master returns or is killed with SIGKILL", "[shm][lifetime]") {
  for (const char* mode : {"shared 2", "shared-return 2"}) {
    DYNAMIC_SECTION(mode) {
      SharedMaster m = start_shared_master(mode);
      REQUIRE(m.workers.size() == 2);
      REQUIRE(m.segment.rfind("/dj-" + std::to_string(m.pid) + "-", 0) == 0);
      if (std::string(mode) == "shared 2") {
        // While it runs, its workers map the segment and /dev/shm no longer names it.
        for (pid_t p : m.workers) CHECK(test::maps_segment(p, m.segment));
        CHECK(test::shm_entries_of(m.pid).empty());
        ::kill(m.pid, SIGKILL);
      }
      int status = 0;
      ::waitpid(m.pid, &status, 0);
      CHECK(test::eventually([&] { return all_dead(m.workers); }, std::chrono::milliseconds(3000)));
      CHECK(test::shm_entries_of(m.pid).empty());
      CHECK_FALSE(exists("/dev/shm" + m.segment));
    }
  }
  check_nothing_left();
}

TEST_CASE("segments of dead masters are swept when a master or dj-run starts, live ones are kept", "[shm][lifetime]") {
  std::string stale = "/dev/shm/dj-" + std::to_string(dead_pid()) + "-0";
  std::string live = "/dev/shm/dj-" + std::to_string(::getpid()) + "-999";
  std::string lookalike = "/dev/shm/dj-" + std::to_string(dead_pid()) + "-x";
  create_file(stale);
  create_file(live);
  create_file(lookalike);

  auto r = test::run_command(test::program("test_master") + " exit 0");
  CHECK(r.status == 0);
  CHECK_FALSE(exists(stale));
  CHECK(exists(live));
  CHECK(exists(lookalike));

  create_file(stale);
  r = test::run_command(test::program("dj-run") + " /bin/true");
  CHECK(r.status == 0);
  CHECK_FALSE(exists(stale));
  CHECK(exists(live));

  // This process's own master starts now: a segment named after its own OS pid predates it (a
  // dead master with the same pid), so it goes too.
  workers();
  CHECK_FALSE(exists(live));
  CHECK(exists(lookalike));
  ::unlink(lookalike.c_str());
  check_nothing_left();
}

TEST_CASE("a pid on another host (its own /dev/shm) is refused, naming the pid and its host", "[shm][errors]") {
  // A worker in its own mount namespace with a private /dev/shm: same kernel and host name, as
  // an SSH test host on this machine, but no shared memory with the master.
  test::TempDir dir;
  std::string wrapper = dir.path() + "/other-host-worker";
  {
    std::ofstream out(wrapper);
    out << "#!/bin/sh\nexec unshare -m sh -c 'mount -t tmpfs dj-test-shm /dev/shm && exec "
        << test::program("dj-worker") << "'\n";
  }
  ::chmod(wrapper.c_str(), 0700);
  REQUIRE(test::run_command("unshare -m sh -c 'mount -t tmpfs dj-test-shm /dev/shm'").status == 0);
  addprocs(1);                                  // pid 2: this host
  addprocs(1, LocalOptions{wrapper, std::chrono::milliseconds(20000)});  // pid 3: "another host"
  REQUIRE(worker_info(3).host == worker_info(1).host);  // the host name alone cannot tell
  try {
    SharedArray<double>({8}, {2, 3});
    FAIL("no error for pid 3");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::InvalidArgument);
    CHECK(e.worker() == 3);
    CHECK_THAT(e.what(), Contains("worker 3 (os pid " + std::to_string(worker_info(3).os_pid) +
                                  " on host " + worker_info(3).host));
    CHECK_THAT(e.what(), Contains("does not share memory with the master"));
  }
  {
    // The default pids are the workers of this host only.
    SharedArray<double> s({8});
    CHECK(procs(s) == std::vector<int>{2});
    // Passed anyway to the other host, the kernel is told why it cannot use it.
    auto plugin = everywhere(test::plugin("shm_kernels"));
    auto sum_all = plugin.kernel<double(SharedArray<double>)>("sum_all");
    REQUIRE_THROWS_WITH(remotecall_fetch(sum_all, 3, s),
                        Contains("lives in the memory of host") && Contains("worker 3"));
  }
  check_nothing_left();
}
