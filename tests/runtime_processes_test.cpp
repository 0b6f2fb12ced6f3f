// Adding and removing workers: pids, the Distributed.jl counting rules, and every error path
// leaving no process behind.
#include <catch2/catch.hpp>

#include <signal.h>

#include "dj/dj.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {
bool no_workers_left() { return test::children_named("dj-worker").empty(); }
}  // namespace

TEST_CASE("with no workers the master counts as the only worker", "[processes]") {
  CHECK(myid() == 1);
  CHECK(procs() == std::vector<int>{1});
  CHECK(workers() == std::vector<int>{1});
  CHECK(nprocs() == 1);
  CHECK(nworkers() == 1);
}

TEST_CASE("addprocs starts workers with pids from 2 that are never reused", "[processes]") {
  static int next_pid = 2;  // Sections run one after another in this process.
  for (int n : {1, 2, 4}) {
    DYNAMIC_SECTION("adding " << n << " workers") {
      auto pids = addprocs(n);
      REQUIRE(pids.size() == static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) CHECK(pids[static_cast<size_t>(i)] == next_pid + i);
      CHECK(workers() == pids);
      CHECK(nworkers() == n);
      CHECK(nprocs() == n + 1);
      CHECK(test::children_named("dj-worker").size() == static_cast<size_t>(n));
      rmprocs(pids.front());
      auto more = addprocs(1);
      CHECK(more == std::vector<int>{next_pid + n});
      next_pid += n + 1;
      auto all = procs();
      CHECK(all.front() == 1);
      CHECK(std::count(all.begin(), all.end(), pids.front()) == 0);
      rmprocs(workers());
      CHECK(workers() == std::vector<int>{1});
      CHECK(nworkers() == 1);
      REQUIRE(test::eventually(no_workers_left));
    }
  }
}

TEST_CASE("worker_info reports each worker's OS pid, host and address", "[processes]") {
  auto pids = addprocs(2);
  auto a = worker_info(pids[0]);
  auto b = worker_info(pids[1]);
  CHECK(a.pid == pids[0]);
  CHECK(a.os_pid != b.os_pid);
  CHECK(test::process_alive(static_cast<pid_t>(a.os_pid)));
  CHECK_FALSE(a.host.empty());
  CHECK_THAT(a.address, Contains("127.0.0.1:"));
  CHECK(worker_info(1).os_pid == ::getpid());
  REQUIRE_THROWS_WITH(worker_info(99), Contains("no process with pid 99"));
}

TEST_CASE("rmprocs stops the processes and reaps them", "[processes]") {
  auto pids = addprocs(3);
  std::vector<pid_t> os;
  for (int pid : pids) os.push_back(static_cast<pid_t>(worker_info(pid).os_pid));
  rmprocs({pids[0], pids[2]});
  CHECK(workers() == std::vector<int>{pids[1]});
  CHECK_FALSE(test::process_alive(os[0]));
  CHECK_FALSE(test::process_alive(os[2]));
  CHECK(test::process_alive(os[1]));
  REQUIRE_THROWS_AS(rmprocs(pids[0]), Error);  // already removed: Disconnected, names it
  REQUIRE_THROWS_WITH(rmprocs(pids[0]), Contains("worker 2 is gone"));
}

TEST_CASE("addprocs with a count below 1 is an InvalidArgument and starts nothing", "[processes][errors]") {
  for (int n : {0, -3}) {
    try {
      addprocs(n);
      FAIL("addprocs(" << n << ") did not throw");
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::InvalidArgument);
      CHECK_THAT(e.what(), Contains("at least 1") && Contains(std::to_string(n)));
    }
  }
  CHECK(no_workers_left());
}

TEST_CASE("rmprocs of the master or of an unknown pid is refused and stops nothing", "[processes][errors]") {
  auto pids = addprocs(2);
  try {
    rmprocs(1);
    FAIL("rmprocs(1) did not throw");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::InvalidArgument);
    CHECK_THAT(e.what(), Contains("pid 1 is the master"));
  }
  try {
    rmprocs({pids[0], 42});
    FAIL("rmprocs of pid 42 did not throw");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::NotFound);
    CHECK_THAT(e.what(), Contains("no process with pid 42") && Contains("workers: 2, 3"));
  }
  CHECK(workers() == pids);  // Validation happens before anything is stopped.
}

TEST_CASE("addprocs with a missing worker executable is NotFound naming the path", "[processes][errors]") {
  LocalOptions options;
  options.exename = "/nonexistent/dj-worker";
  try {
    addprocs(2, options);
    FAIL("addprocs did not throw");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::NotFound);
    CHECK_THAT(e.what(), Contains("/nonexistent/dj-worker"));
  }
  CHECK(workers() == std::vector<int>{1});
  CHECK(no_workers_left());
}

TEST_CASE("a worker executable that dies at start fails addprocs and adds no worker", "[processes][errors]") {
  LocalOptions options;
  options.exename = "/bin/false";
  try {
    addprocs(3, options);
    FAIL("addprocs did not throw");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Disconnected);
    CHECK_THAT(e.what(), Contains("failed to start") && Contains("exited with status 1") &&
                             Contains("no worker was added"));
  }
  CHECK(workers() == std::vector<int>{1});
  CHECK(test::children_of(::getpid()).empty());
  // The failed call's pids are spent; the next worker does not reuse them.
  CHECK(addprocs(1).front() == 5);
}

TEST_CASE("a worker that never answers is killed when addprocs times out", "[processes][errors]") {
  test::TempDir dir;
  std::string script = dir.path() + "/silent-worker";
  test::run_command("printf '#!/bin/sh\\nexec sleep 30\\n' > " + script + " && chmod +x " + script);
  LocalOptions options;
  options.exename = script;
  options.timeout = std::chrono::milliseconds(300);
  REQUIRE_THROWS_WITH(addprocs(2, options), Contains("did not start in time"));
  CHECK(workers() == std::vector<int>{1});
  REQUIRE(test::eventually([] { return test::children_of(::getpid()).empty(); }));
}
