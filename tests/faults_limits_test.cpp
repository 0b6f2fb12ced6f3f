// Resource exhaustion (issue 8, item 3): a /dev/shm too small for a SharedArray (a small tmpfs
// in a private mount namespace), a master with few file descriptors, and a kernel allocating
// past its worker's address-space limit. Each fails clearly, naming the limit, and dj goes on.
#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "dj/dj.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {

// The process's virtual memory size (VmSize of /proc/PID/status), in bytes.
uint64_t vm_size(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmSize:", 0) == 0) return std::stoull(line.substr(7)) * 1024;
  }
  return 0;
}

}  // namespace

TEST_CASE("a SharedArray larger than a small /dev/shm is ResourceExhausted naming both sizes "
          "and a small one still works", "[limits][shm]") {
  // A 1 MiB tmpfs on /dev/shm in a mount namespace of the test master's own (run as root).
  auto r = test::run_command(
      "unshare -m sh -c 'mount -t tmpfs -o size=1m tmpfs /dev/shm && exec \"$0\" shared-big 1 "
      "1000000' " + test::program("test_master"));
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.output, Contains("SharedArray threw ResourceExhausted"));
  CHECK_THAT(r.output, Contains("needs 8000000 bytes") && Contains("/dev/shm has 1048576 bytes"));
  CHECK_THAT(r.output, Contains("small array works: yes"));
  CHECK(test::children_named("dj-worker").empty());
}

namespace {

// Runs `test_master ARGS` with at most `fds` descriptors, in a pid namespace of its own beside
// a sentinel process: a master that signalled every process it could (kill(-1), as a failed
// Boost.Process launch once did) would kill the sentinel and nothing outside.
test::RunResult master_with_fd_limit(int fds, const std::string& args) {
  return test::run_command(
      "unshare --pid --fork --mount-proc sh -c 'sleep 60 & sentinel=$!; prlimit --nofile=" +
      std::to_string(fds) + ":" + std::to_string(fds) + " \"$0\" " + args +
      "; kill -0 $sentinel && echo sentinel alive; kill $sentinel' " +
      test::program("test_master"));
}

}  // namespace

// Not in the ASan+UBSan build: UBSan's vptr check probes memory through a pipe, which a master
// out of descriptors cannot open, so it reports a false "invalid vptr" and aborts there. The
// plain and ThreadSanitizer builds run it.
#if !defined(__SANITIZE_ADDRESS__)
TEST_CASE("addprocs beyond a low RLIMIT_NOFILE fails naming the limit, starts nothing, and the "
          "master goes on", "[limits][fds]") {
  // 40 descriptors: the master's own plus a few workers' sockets and pipes, not 32 workers'.
  auto r = master_with_fd_limit(40, "addprocs-try 32");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.output, Contains("addprocs threw ResourceExhausted"));
  CHECK_THAT(r.output, Contains("RLIMIT_NOFILE, is 40"));
  CHECK_THAT(r.output, Contains("1 workers answer: yes"));
  CHECK_THAT(r.output, Contains("sentinel alive"));
}
#endif

TEST_CASE("addprocs within a low RLIMIT_NOFILE works", "[limits][fds]") {
  auto r = master_with_fd_limit(40, "addprocs-try 2");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.output, Contains("added 2 workers") && Contains("2 workers answer: yes"));
  CHECK_THAT(r.output, Contains("sentinel alive"));
}

TEST_CASE("a kernel allocating past its worker's RLIMIT_AS fails naming the limit and the "
          "cluster keeps working", "[limits][memory]") {
  addprocs(2);
  auto plugin = everywhere(test::plugin("chaos_kernels"));
  auto hog_mib = plugin.kernel<int64_t(int64_t)>("hog_mib");
  pid_t os_pid = static_cast<pid_t>(worker_info(2).os_pid);
  // What it maps now plus 128 MiB: the kernel's blocks exhaust it long before 4 GiB.
  rlimit limit{};
  limit.rlim_cur = limit.rlim_max = vm_size(os_pid) + (128u << 20);
  REQUIRE(::prlimit(os_pid, RLIMIT_AS, &limit, nullptr) == 0);
  try {
    remotecall_fetch(hog_mib, 2, int64_t{4096});
    FAIL("4 GiB were allocated under a 128 MiB margin");
  } catch (const Error& e) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    // The sanitizers' allocators abort the process on a failed mapping instead of throwing.
    CHECK(e.kind() == ErrorKind::Disconnected);
    CHECK_THAT(e.what(), Contains("ProcessExited(2)"));
#else
    CHECK(e.kind() == ErrorKind::RemoteFailure);
    CHECK_THAT(e.what(), Contains("on worker 2") && Contains("hog_mib") &&
                             Contains("std::bad_alloc") && Contains("RLIMIT_AS"));
#endif
  }
  int survivor = workers().back();
  CHECK(remotecall_fetch(hog_mib, survivor, int64_t{16}) == 16);
  CHECK(remotecall_fetch(hog_mib, 3, int64_t{64}) == 64);
  rmprocs(workers());
  CHECK(test::children_named("dj-worker").empty());
}
