// Chaos (issue 8, item 1): pmap and remotecall loads while a killer SIGKILLs random workers and
// adds replacements; every element comes back exactly once and right, the master never hangs,
// and nothing is left. Also what a stopped (SIGSTOP) worker does to the rest of the cluster.
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <iterator>
#include <random>
#include <set>
#include <thread>

#include "dj/dj.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {

using Mark = std::pair<int64_t, int32_t>;

struct Kernels {
  Plugin plugin = everywhere(test::plugin("chaos_kernels"));
  Kernel<Mark(int64_t)> mark_after = plugin.kernel<Mark(int64_t)>("mark_after");
  Kernel<int64_t(int64_t)> element_mark = plugin.kernel<int64_t(int64_t)>("element_mark");
  Kernel<int64_t(int64_t)> spin_ms = plugin.kernel<int64_t(int64_t)>("spin_ms");
  Kernel<int64_t(int64_t)> tiny = plugin.kernel<int64_t(int64_t)>("tiny");
};

int64_t element_mark(int64_t x) { return x * 1000003 + 17; }  // as chaos_kernels computes it

// The test's own bound on a wait the master must never turn into a hang: past it, the test
// reports what it waited for and aborts (a blocked std::future could not be abandoned).
template <class T>
T finish_within(std::future<T>& f, std::chrono::seconds bound, const char* what) {
  if (f.wait_for(bound) != std::future_status::ready) {
    std::fprintf(stderr, "HANG: %s did not finish within %lld s\n", what,
                 static_cast<long long>(bound.count()));
    std::abort();
  }
  return f.get();
}

// SIGKILLs a random worker every `period` and adds one replacement, `kills` times.
class Killer {
 public:
  Killer(int kills, std::chrono::milliseconds period)
      : thread_([this, kills, period] { run(kills, period); }) {}
  ~Killer() { join(); }
  int killed() const { return killed_.load(); }
  int added() const { return added_.load(); }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run(int kills, std::chrono::milliseconds period) {
    std::mt19937 rng(12345);
    for (int i = 0; i < kills; ++i) {
      std::this_thread::sleep_for(period);  // pacing the chaos, not waiting for a condition
      std::vector<int> live = workers();
      if (live.empty() || live[0] == 1) continue;
      int victim = live[rng() % live.size()];
      try {
        ::kill(static_cast<pid_t>(worker_info(victim).os_pid), SIGKILL);
        ++killed_;
      } catch (const Error&) {  // it died meanwhile (NotFound): nothing to kill
      }
      addprocs(1);
      ++added_;
    }
  }
  std::atomic<int> killed_{0}, added_{0};
  std::thread thread_;
};

}  // namespace

TEST_CASE("pmap and remotecall under a killer of random workers compute every element exactly "
          "once and leave nothing behind", "[faults][chaos]") {
  addprocs(4);
  Kernels k;
  SharedArray<double> shared({4096});  // mapped by the workers the killer is about to kill
  const int64_t n = 3000;
  std::vector<int64_t> xs(n);
  for (int64_t i = 0; i < n; ++i) xs[i] = i;
  PmapOptions o;
  o.progress = false;
  o.batch_size = 8;  // many calls in flight, so kills land in the middle of batches
  o.retry_delays.assign(20, std::chrono::milliseconds(1));

  std::atomic<bool> stop_calls{false};
  std::atomic<int> calls_ok{0}, calls_lost{0}, calls_wrong{0};
  auto caller = std::async(std::launch::async, [&] {
    std::mt19937 rng(7);
    for (int64_t x = 0; !stop_calls; ++x) {
      std::vector<int> live = workers();
      try {
        Mark m = remotecall_fetch(k.mark_after, live[rng() % live.size()], x);
        (m.first == element_mark(x) ? calls_ok : calls_wrong)++;
      } catch (const Error& e) {
        if (e.kind() != ErrorKind::Disconnected && e.kind() != ErrorKind::NotFound) throw;
        ++calls_lost;
      }
    }
  });
  std::vector<Mark> ys;
  {
    Killer killer(12, std::chrono::milliseconds(120));
    auto run = std::async(std::launch::async, [&] { return pmap(k.mark_after, xs, o); });
    try {
      ys = finish_within(run, std::chrono::seconds(40), "pmap under the killer");
    } catch (const Error& e) {
      stop_calls = true;
      FAIL_CHECK("pmap under the killer threw " << to_string(e.kind()) << ": " << e.what());
    }
    killer.join();
    INFO("killed " << killer.killed() << ", added " << killer.added());
    CHECK(killer.killed() >= 10);
  }
  stop_calls = true;
  finish_within(caller, std::chrono::seconds(20), "remotecall_fetch under the killer");

  REQUIRE(ys.size() == static_cast<size_t>(n));
  std::set<int32_t> ran_on;
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i) {
    wrong += ys[i].first != element_mark(i);
    ran_on.insert(ys[i].second);
  }
  CHECK(wrong == 0);
  CHECK(ran_on.size() > 4);  // replacements took part too
  CHECK(calls_wrong == 0);
  CHECK(calls_ok > 0);
  INFO("remotecall_fetch: " << calls_ok << " ok, " << calls_lost << " lost with their worker");

  // The cluster still works after the storm, and then nothing is left.
  CHECK(remotecall_fetch(k.element_mark, workers().back(), int64_t{5}) == element_mark(5));
  shared = SharedArray<double>();
  rmprocs(workers());
  CHECK(test::children_named("dj-worker").empty());
  CHECK(test::shm_entries_of(::getpid()).empty());
}

TEST_CASE("remotecall_fetch from several threads under a killer of random workers never "
          "hangs and never returns a wrong value", "[faults][chaos]") {
  addprocs(4);
  Kernels k;
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, lost{0}, wrong{0};
  auto call_loop = [&](unsigned seed) {
    std::mt19937 rng(seed);
    for (int64_t x = 0; !stop; ++x) {
      std::vector<int> live = workers();
      try {
        (remotecall_fetch(k.element_mark, live[rng() % live.size()], x) == element_mark(x)
             ? ok
             : wrong)++;
      } catch (const Error& e) {
        if (e.kind() != ErrorKind::Disconnected && e.kind() != ErrorKind::NotFound) throw;
        ++lost;
      }
    }
  };
  auto a = std::async(std::launch::async, call_loop, 1u);
  auto b = std::async(std::launch::async, call_loop, 2u);
  {
    Killer killer(30, std::chrono::milliseconds(40));
  }
  stop = true;
  finish_within(a, std::chrono::seconds(20), "remotecall_fetch loop 1 under the killer");
  finish_within(b, std::chrono::seconds(20), "remotecall_fetch loop 2 under the killer");
  INFO(ok << " ok, " << lost << " lost with their worker");
  CHECK(wrong == 0);
  CHECK(ok > 100);
  rmprocs(workers());
  CHECK(test::children_named("dj-worker").empty());
}

TEST_CASE("with the heartbeat off, a stopped worker holds up only its own calls, which finish "
          "once it is continued", "[faults][chaos][sigstop]") {
  set_heartbeat_timeout(std::chrono::milliseconds(0));
  std::vector<int> pids = addprocs(3);
  Kernels k;
  pid_t stopped = static_cast<pid_t>(worker_info(pids[0]).os_pid);
  REQUIRE(test::stop_process(stopped));
  Future<int64_t> held = remotecall(k.tiny, pids[0], int64_t{42});
  // Without the heartbeat the call simply waits. Everything not addressed to the stopped worker goes on meanwhile.
  for (int64_t i = 0; i < 200; ++i) {
    REQUIRE(remotecall_fetch(k.tiny, pids[1 + i % 2], i) == i);
  }
  PmapOptions o;
  o.progress = false;
  WorkerPool others({pids[1], pids[2]});
  o.pool = &others;
  std::vector<int64_t> xs(500);
  for (int64_t i = 0; i < 500; ++i) xs[i] = i;
  auto ys = pmap(k.element_mark, xs, o);
  for (int64_t i = 0; i < 500; ++i) REQUIRE(ys[i] == element_mark(i));
  CHECK_FALSE(isready(held));
  REQUIRE(::kill(stopped, SIGCONT) == 0);
  auto fetched = std::async(std::launch::async, [&] { return fetch(held); });
  CHECK(finish_within(fetched, std::chrono::seconds(10), "fetch after SIGCONT") == 42);
  rmprocs(workers());
  CHECK(test::children_named("dj-worker").empty());
}

TEST_CASE("rmprocs of a stopped worker kills it after the grace period and fails its calls",
          "[faults][chaos][sigstop]") {
  std::vector<int> pids = addprocs(2);
  Kernels k;
  pid_t stopped = static_cast<pid_t>(worker_info(pids[0]).os_pid);
  REQUIRE(test::stop_process(stopped));
  Future<int64_t> held = remotecall(k.tiny, pids[0], int64_t{1});
  auto removed = std::async(std::launch::async,
                            [&] { rmprocs({pids[0]}, std::chrono::milliseconds(300)); });
  finish_within(removed, std::chrono::seconds(10), "rmprocs of a stopped worker");
  CHECK_FALSE(test::process_alive(stopped));
  try {
    fetch(held);
    FAIL("a call on a removed worker succeeded");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Disconnected);
    CHECK_THAT(e.what(), Contains("worker " + std::to_string(pids[0])) &&
                             Contains("removed by rmprocs"));
  }
  CHECK(remotecall_fetch(k.tiny, pids[1], int64_t{9}) == 9);
  rmprocs(workers());
  CHECK(test::children_named("dj-worker").empty());
}

TEST_CASE("the heartbeat finds a stopped worker within its timeout, kills it and fails its calls",
          "[faults][chaos][sigstop][heartbeat]") {
  set_heartbeat_timeout(std::chrono::milliseconds(1000));
  std::vector<int> pids = addprocs(2);
  Kernels k;
  pid_t stopped = static_cast<pid_t>(worker_info(pids[0]).os_pid);
  REQUIRE(test::stop_process(stopped));
  auto t0 = std::chrono::steady_clock::now();
  auto call = std::async(std::launch::async, [&] { return remotecall_fetch(k.tiny, pids[0], int64_t{1}); });
  try {
    finish_within(call, std::chrono::seconds(20), "a call to a stopped worker");
    FAIL("a call to a stopped worker succeeded");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Disconnected);
    CHECK_THAT(e.what(), Contains("ProcessExited(" + std::to_string(pids[0]) + ")") &&
                             Contains("did not answer for 1000 ms"));
  }
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(waited >= 0.9);
  CHECK(waited < 5.0);  // the timeout plus one tick (a quarter of it), with room for load
  CHECK(test::eventually([&] { return !test::process_alive(stopped); }));
  CHECK(workers() == std::vector<int>{pids[1]});
  CHECK(remotecall_fetch(k.tiny, pids[1], int64_t{9}) == 9);
}

TEST_CASE("a kernel that runs longer than the heartbeat timeout is not mistaken for a hang",
          "[faults][heartbeat]") {
  set_heartbeat_timeout(std::chrono::milliseconds(400));
  addprocs(1);
  Kernels k;
  CHECK(remotecall_fetch(k.spin_ms, 2, int64_t{2000}) > 0);  // 5 heartbeat timeouts long
  CHECK(workers() == std::vector<int>{2});
  REQUIRE_THROWS_WITH(set_heartbeat_timeout(std::chrono::milliseconds(-1)),
                      Contains("must not be negative"));
}
