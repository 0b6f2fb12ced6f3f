// pmap, distributed loops, worker pools and interrupt.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <numeric>
#include <set>
#include <thread>

#include "cluster.hpp"
#include "dj/dj.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {

struct Kernels {
  Plugin plugin = everywhere(test::plugin("test_kernels"));
  Kernel<double(double)> square = plugin.kernel<double(double)>("square");
  Kernel<int64_t(int64_t)> noop = plugin.kernel<int64_t(int64_t)>("noop");
  Kernel<int64_t(int64_t)> fail_on_three = plugin.kernel<int64_t(int64_t)>("fail_on_three");
  Kernel<int32_t()> whoami = plugin.kernel<int32_t()>("whoami");
  Kernel<int64_t(int64_t, int64_t)> sum_range =
      plugin.kernel<int64_t(int64_t, int64_t)>("sum_range");
  Kernel<void(int64_t, int64_t)> fail_range = plugin.kernel<void(int64_t, int64_t)>("fail_range");
  Kernel<int32_t(int32_t)> sleep_ms = plugin.kernel<int32_t(int32_t)>("sleep_ms");
  Kernel<int32_t(int32_t)> work_until_interrupted =
      plugin.kernel<int32_t(int32_t)>("work_until_interrupted");
  Kernel<int32_t(int32_t)> ignore_interrupts = plugin.kernel<int32_t(int32_t)>("ignore_interrupts");
};

PmapOptions quiet() {
  PmapOptions o;
  o.progress = false;
  return o;
}

}  // namespace

TEST_CASE("pmap returns results in input order over 1, 2 and 4 workers", "[pmap]") {
  for (int n : {1, 2, 4}) {
    DYNAMIC_SECTION(n << " workers") {
      addprocs(n);
      Kernels k;
      std::vector<double> xs(1000);
      std::iota(xs.begin(), xs.end(), 0.0);
      auto ys = pmap(k.square, xs, quiet());
      REQUIRE(ys.size() == xs.size());
      for (size_t i = 0; i < xs.size(); ++i) CHECK(ys[i] == xs[i] * xs[i]);
      rmprocs(workers());
    }
  }
}

TEST_CASE("pmap spreads the work over every worker", "[pmap]") {
  for (int n : {2, 4}) {
    DYNAMIC_SECTION(n << " workers") {
      auto pids = addprocs(n);
      Kernels k;
      PmapOptions o = quiet();
      o.batch_size = 1;
      auto who = pmap(k.plugin.kernel<int32_t(int32_t)>("sleep_then_whoami"),
                      std::vector<int32_t>(static_cast<size_t>(4 * n), 20), o);
      CHECK(std::set<int>(who.begin(), who.end()) == std::set<int>(pids.begin(), pids.end()));
      rmprocs(workers());
    }
  }
}

TEST_CASE("pmap over an empty collection returns an empty result", "[pmap]") {
  addprocs(1);
  Kernels k;
  CHECK(pmap(k.square, std::vector<double>{}, quiet()).empty());
}

TEST_CASE("pmap with no workers runs on the master", "[pmap]") {
  Kernels k;
  CHECK(pmap(k.square, std::vector<double>{1, 2, 3}, quiet()) == std::vector<double>{1, 4, 9});
}

TEST_CASE("pmap batches tiny tasks automatically and with a fixed batch size", "[pmap]") {
  addprocs(2);
  Kernels k;
  std::vector<int64_t> xs(100000);
  std::iota(xs.begin(), xs.end(), 0);
  CHECK(pmap(k.noop, xs, quiet()) == xs);
  PmapOptions o = quiet();
  o.batch_size = 7;
  CHECK(pmap(k.noop, xs, o) == xs);
  o.batch_size = -1;
  REQUIRE_THROWS_WITH(pmap(k.noop, xs, o), Contains("batch_size must be >= 0"));
}

TEST_CASE("a failing element stops pmap with an error naming its index, worker and kernel", "[pmap][errors]") {
  addprocs(2);
  Kernels k;
  try {
    pmap(k.fail_on_three, std::vector<int64_t>{1, 2, 3, 4}, quiet());
    FAIL("pmap did not throw");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::RemoteFailure);
    CHECK_THAT(e.what(), Contains("element 3 of 4") && Contains("on worker") &&
                             Contains("'fail_on_three'") && Contains("three is not allowed"));
  }
}

TEST_CASE("pmap's on_error turns an element's error into a value", "[pmap][errors]") {
  addprocs(2);
  Kernels k;
  auto out = pmap(k.fail_on_three, std::vector<int64_t>{1, 2, 3, 4}, quiet(),
                  [](const Error& e) -> int64_t { return e.kind() == ErrorKind::RemoteFailure ? -1 : -2; });
  CHECK(out == std::vector<int64_t>{1, 2, -1, 4});
}

TEST_CASE("pmap retries an element whose worker was killed and completes on a live worker", "[pmap][errors]") {
  addprocs(3);
  Kernels k;
  test::TempDir dir;
  auto maybe_die = k.plugin.kernel<int64_t(std::string)>("maybe_die");
  PmapOptions o = quiet();
  o.batch_size = 1;
  o.retry_delays = {std::chrono::milliseconds(10)};
  std::vector<std::string> specs{"ok:1", "die:" + dir.path() + "/m", "ok:3", "ok:4"};
  CHECK(pmap(maybe_die, specs, o) == std::vector<int64_t>{1, 2, 3, 4});
  CHECK(nworkers() == 2);
  CHECK(test::children_named("dj-worker").size() == 2);
}

TEST_CASE("a worker's death is visible to pmap's on_error when there are no retries", "[pmap][errors]") {
  addprocs(2);
  Kernels k;
  test::TempDir dir;
  auto maybe_die = k.plugin.kernel<int64_t(std::string)>("maybe_die");
  PmapOptions o = quiet();
  o.batch_size = 1;
  std::vector<std::string> specs{"ok:1", "die:" + dir.path() + "/m", "ok:3"};
  std::vector<std::string> seen;
  auto out = pmap(maybe_die, specs, o, [&](const Error& e) -> int64_t {
    seen.push_back(e.what());
    return e.kind() == ErrorKind::Disconnected ? -9 : -1;
  });
  CHECK(out == std::vector<int64_t>{1, -9, 3});
  REQUIRE(seen.size() == 1);
  CHECK_THAT(seen[0], Contains("element 2 of 3") && Contains("ProcessExited"));
}

TEST_CASE("retry_check decides which errors are retried", "[pmap][errors]") {
  addprocs(1);
  Kernels k;
  PmapOptions o = quiet();
  o.retry_delays = {std::chrono::milliseconds(1), std::chrono::milliseconds(1)};
  int checks = 0;
  o.retry_check = [&](const Error& e) {
    ++checks;
    return e.kind() != ErrorKind::RemoteFailure;  // a kernel's own error is not retried
  };
  REQUIRE_THROWS_WITH(pmap(k.fail_on_three, std::vector<int64_t>{3}, o), Contains("three"));
  CHECK(checks == 1);
}

TEST_CASE("distributed_reduce splits the range evenly and reduces the chunk results", "[distributed]") {
  for (int n : {1, 2, 4}) {
    DYNAMIC_SECTION(n << " workers") {
      addprocs(n);
      Kernels k;
      CHECK(distributed_reduce(k.sum_range, 1, 1000, std::plus<>()) == 500500);
      CHECK(distributed_reduce(k.sum_range, 5, 5, std::plus<>()) == 5);
      CHECK(distributed_reduce(k.sum_range, -10, 10, std::plus<>()) == 0);
      rmprocs(workers());
    }
  }
}

TEST_CASE("split_range gives contiguous chunks whose lengths differ by at most one", "[distributed]") {
  auto chunks = detail::split_range(1, 10, 4);
  REQUIRE(chunks.size() == 4);
  CHECK(chunks[0] == std::make_pair<int64_t, int64_t>(1, 3));
  CHECK(chunks[1] == std::make_pair<int64_t, int64_t>(4, 6));
  CHECK(chunks[2] == std::make_pair<int64_t, int64_t>(7, 8));
  CHECK(chunks[3] == std::make_pair<int64_t, int64_t>(9, 10));
  CHECK(detail::split_range(1, 2, 4).size() == 2);
  CHECK(detail::split_range(5, 4, 2).empty());
}

TEST_CASE("sync reports every failed chunk of a distributed loop, not just the first", "[distributed][errors]") {
  addprocs(2);
  Kernels k;
  Task t = distributed_for(k.fail_range, 1, 10);
  try {
    sync(t);
    FAIL("sync did not throw");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::RemoteFailure);
    CHECK_THAT(e.what(), Contains("2 chunks failed") && Contains("chunk 1:5") &&
                             Contains("chunk 6:10"));
  }
}

TEST_CASE("a worker pool lends each worker to one call at a time", "[pools]") {
  auto pids = addprocs(3);
  Kernels k;
  WorkerPool pool({pids[0], pids[1]});
  CHECK(pool.workers() == std::vector<int>{pids[0], pids[1]});
  std::vector<Future<int32_t>> fs;
  for (int i = 0; i < 4; ++i) fs.push_back(remotecall(k.sleep_ms, pool, 50));
  std::set<int> used;
  for (auto& f : fs) {
    used.insert(f.where());
    CHECK(fetch(f) == 50);
  }
  CHECK(used == std::set<int>{pids[0], pids[1]});
  CHECK(remotecall_fetch(k.whoami, pool) != pids[2]);
  REQUIRE(test::eventually([&] { return pool.isready(); }));
  REQUIRE_THROWS_WITH(pool.push(pids[0]), Contains("already in the pool"));
  REQUIRE_THROWS_WITH(pool.push(1), Contains("pid 1 is the master"));
  PmapOptions o = quiet();
  o.pool = &pool;
  std::vector<int64_t> xs(50, 1);
  CHECK(pmap(k.noop, xs, o) == xs);
}

TEST_CASE("the default worker pool follows addprocs and rmprocs", "[pools]") {
  CHECK(default_worker_pool().workers() == std::vector<int>{1});
  auto pids = addprocs(2);
  CHECK(default_worker_pool().workers() == pids);
  rmprocs(pids[0]);
  CHECK(default_worker_pool().workers() == std::vector<int>{pids[1]});
}

TEST_CASE("interrupt cancels a cooperating kernel and its worker takes new work", "[interrupt]") {
  addprocs(1);
  Kernels k;
  Future<int32_t> busy = spawnat(2, k.work_until_interrupted, 60000);
  Future<int32_t> queued = spawnat(2, k.sleep_ms, 1);
  interrupt({2});
  try {
    fetch(busy);
    FAIL("interrupted call succeeded");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Cancelled);
    CHECK_THAT(e.what(), Contains("interrupted"));
  }
  try {
    fetch(queued);
    FAIL("queued call survived interrupt");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Cancelled);
  }
  CHECK(workers() == std::vector<int>{2});  // the same worker survived
  CHECK(remotecall_fetch(k.sleep_ms, 2, 1) == 1);
}

TEST_CASE("interrupt cancels a remotecall_fetch waiting on a same-host worker",
          "[interrupt][express]") {
  addprocs(1);
  Kernels k;
  // A small remotecall_fetch to a same-host worker goes through the express slot; the caller
  // waits on it while the kernel runs.
  auto call = std::async(std::launch::async,
                         [&] { return remotecall_fetch(k.work_until_interrupted, 2, 60000); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  REQUIRE(call.wait_for(std::chrono::milliseconds(0)) == std::future_status::timeout);
  interrupt({2});
  REQUIRE(call.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
  try {
    call.get();
    FAIL("interrupted call succeeded");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Cancelled);
    CHECK_THAT(e.what(), Contains("interrupted"));
  }
  CHECK(workers() == std::vector<int>{2});  // the same worker survived
  CHECK(remotecall_fetch(k.sleep_ms, 2, 1) == 1);
}

TEST_CASE("interrupt replaces a worker whose kernel ignores it, as a last resort", "[interrupt]") {
  addprocs(1);
  Kernels k;
  Future<int32_t> stuck = spawnat(2, k.ignore_interrupts, 60000);
  interrupt({2}, std::chrono::milliseconds(200));
  try {
    fetch(stuck);
    FAIL("stuck call succeeded");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Disconnected);
  }
  auto now = workers();
  REQUIRE(now.size() == 1);
  CHECK(now[0] != 2);
  CHECK(remotecall_fetch(k.whoami, now[0]) == now[0]);  // the replacement has the plugins
  REQUIRE_THROWS_WITH(interrupt({1}), Contains("pid 1 is the master"));
}

TEST_CASE("a Cached argument is shipped to each worker once and reused by every call", "[pools]") {
  auto pids = addprocs(2);
  Kernels k;
  auto sum = k.plugin.kernel<double(std::vector<double>)>("sum");
  CachingPool pool(pids);
  const size_t n = 1 << 20;  // 8 MiB
  auto big = pool.cache(std::vector<double>(n, 1.0));
  uint64_t before = detail::Cluster::payload_bytes_sent();
  for (int i = 0; i < 10; ++i) CHECK(remotecall_fetch(sum, pool, big) == Approx(double(n)));
  uint64_t sent = detail::Cluster::payload_bytes_sent() - before;
  CHECK(sent >= n * 8);          // it did travel...
  CHECK(sent <= 2 * n * 8 + 4096);  // ...at most once per worker, not once per call
  REQUIRE_THROWS_WITH(pmap(sum, std::vector<Cached<std::vector<double>>>{big}, quiet()),
                      Contains("cannot be a pmap element"));
}

TEST_CASE("dropping the last Cached handle frees the workers' copies", "[pools]") {
  addprocs(1);
  Kernels k;
  auto length = k.plugin.kernel<int64_t(std::vector<double>)>("length");
  auto base = worker_stats(2).stored_values;
  {
    auto big = cache(std::vector<double>(1000, 2.0));
    CHECK(remotecall_fetch(length, 2, big) == 1000);
    CHECK(worker_stats(2).stored_values == base + 1);
  }
  REQUIRE(test::eventually([&] { return worker_stats(2).stored_values == base; }));
}

TEST_CASE("pmap shows a progress bar with count, rate and ETA when asked", "[pmap]") {
  addprocs(2);
  Kernels k;
  test::TempDir dir;
  std::string file = dir.path() + "/stderr";
  std::fflush(stderr);
  int saved = ::dup(2);
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ::dup2(fd, 2);
  ::close(fd);
  PmapOptions o;
  o.progress = true;
  o.batch_size = 1;
  auto out = pmap(k.sleep_ms, std::vector<int32_t>(30, 10), o);
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  CHECK(out.size() == 30);
  std::ifstream in(file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK_THAT(text, Contains("pmap: [") && Contains("30/30") && Contains("/s") && Contains("ETA"));
}
