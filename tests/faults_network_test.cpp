// Slow and partial networks (issue 8, item 4): a worker that stops reading while the master
// sends it large values must not hold up the master's traffic with other workers, and an SSH
// host whose network link goes down in the middle of a call is detected and reported.
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <iterator>

#include "cluster_support.hpp"
#include "dj/dj.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {

struct Kernels {
  Plugin plugin = everywhere(test::plugin("chaos_kernels"));
  Kernel<int64_t(std::vector<uint8_t>)> byte_sum =
      plugin.kernel<int64_t(std::vector<uint8_t>)>("byte_sum");
  Kernel<int64_t(int64_t)> tiny = plugin.kernel<int64_t(int64_t)>("tiny");
  Kernel<int64_t(int64_t)> spin_ms = plugin.kernel<int64_t(int64_t)>("spin_ms");
};

template <class T>
T finish_within(std::future<T>& f, std::chrono::seconds bound, const char* what) {
  if (f.wait_for(bound) != std::future_status::ready) {
    std::fprintf(stderr, "HANG: %s did not finish within %lld s\n", what,
                 static_cast<long long>(bound.count()));
    std::abort();
  }
  return f.get();
}

// Sets a test host's network link down, and up again at the end of the scope.
class LinkDown {
 public:
  explicit LinkDown(std::string host) : host_(std::move(host)) {
    REQUIRE(test::run_command("ip -n " + host_ + " link set eth0 down").status == 0);
  }
  ~LinkDown() { test::run_command("ip -n " + host_ + " link set eth0 up"); }

 private:
  std::string host_;
};

}  // namespace

TEST_CASE("a worker that stops reading while the master sends it large values holds up no "
          "other worker's traffic", "[faults][network]") {
  std::vector<int> pids = addprocs(3);
  Kernels k;
  const int stuck = pids[0];
  pid_t stuck_os = static_cast<pid_t>(worker_info(stuck).os_pid);
  REQUIRE(test::stop_process(stuck_os));  // it reads nothing from now on
  // 4 x 16 MiB: far more than the socket buffers hold, so these senders block in write.
  std::vector<uint8_t> big(16 << 20, 3);
  auto senders = std::async(std::launch::async, [&] {
    std::vector<Future<int64_t>> fs;
    for (int i = 0; i < 4; ++i) fs.push_back(remotecall(k.byte_sum, stuck, big));
    int64_t total = 0;
    for (auto& f : fs) total += fetch(f);
    return total;
  });
  // Meanwhile everything else goes on: round trips, Futures completed by the I/O thread, a
  // pmap, and values made and dropped on the other workers.
  for (int64_t i = 0; i < 300; ++i) {
    REQUIRE(remotecall_fetch(k.tiny, pids[1 + i % 2], i) == i);
  }
  std::vector<Future<int64_t>> others;
  for (int64_t i = 0; i < 300; ++i) others.push_back(remotecall(k.tiny, pids[1 + i % 2], i));
  for (int64_t i = 0; i < 300; ++i) REQUIRE(fetch(others[i]) == i);
  others.clear();
  WorkerPool pool({pids[1], pids[2]});
  PmapOptions o;
  o.progress = false;
  o.pool = &pool;
  std::vector<int64_t> xs(1000);
  for (int64_t i = 0; i < 1000; ++i) xs[i] = i;
  CHECK(pmap(k.tiny, xs, o) == xs);
  CHECK(senders.wait_for(std::chrono::seconds(0)) != std::future_status::ready);

  REQUIRE(::kill(stuck_os, SIGCONT) == 0);
  CHECK(finish_within(senders, std::chrono::seconds(30), "the large sends once continued") ==
        4 * 3 * static_cast<int64_t>(big.size()));
  rmprocs(workers());
  CHECK(test::children_named("dj-worker").empty());
}

TEST_CASE("an SSH host whose network link goes down in the middle of a call is reported and "
          "the other workers go on", "[faults][network][ssh][host_down]") {
  test::SshFixture f(std::chrono::milliseconds(2000));
  std::vector<int> local = addprocs(1);
  std::vector<int> remote = addprocs({"dj-host3"}, f.options);
  Kernels k;
  REQUIRE(remotecall_fetch(k.tiny, remote[0], int64_t{7}) == 7);
  auto call = std::async(std::launch::async,
                         [&] { return remotecall_fetch(k.spin_ms, remote[0], int64_t{3000}); });
  {
    LinkDown down("dj-host3");
    auto start = std::chrono::steady_clock::now();
    try {
      if (call.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
        test::run_command("ip -n dj-host3 link set eth0 up");  // the abort skips ~LinkDown
        finish_within(call, std::chrono::seconds(0), "a call to a host whose link is down");
      }
      call.get();
      FAIL("a call to a host whose link went down succeeded");
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::Disconnected);
      CHECK_THAT(e.what(), Contains("worker " + std::to_string(remote[0])));
      CHECK_THAT(e.what(), Contains("dj-host3"));
    }
    std::printf("link down detected after %.1f s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    CHECK(remotecall_fetch(k.tiny, local[0], int64_t{5}) == 5);
    CHECK(workers() == local);
  }
  rmprocs(local);
  f.require_nothing_left();
}
