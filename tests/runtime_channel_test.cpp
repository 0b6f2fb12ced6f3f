// RemoteChannel: local and remote owners, kernels as producers and consumers, capacity and
// timeouts, close, and an owner that dies.
#include <catch2/catch.hpp>

#include <signal.h>

#include <thread>

#include "dj/dj.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;
using namespace std::chrono_literals;

namespace {
struct Kernels {
  Plugin plugin = everywhere(test::plugin("test_kernels"));
  Kernel<void(RemoteChannel<int64_t>, int64_t)> produce =
      plugin.kernel<void(RemoteChannel<int64_t>, int64_t)>("produce");
  Kernel<int64_t(RemoteChannel<int64_t>)> consume =
      plugin.kernel<int64_t(RemoteChannel<int64_t>)>("consume");
  Kernel<int64_t(RemoteChannel<int64_t>)> take_one =
      plugin.kernel<int64_t(RemoteChannel<int64_t>)>("take_one");
};
}  // namespace

TEST_CASE("a channel keeps items in order and fetch peeks without removing", "[channel]") {
  for (int owner : {1, 2}) {
    DYNAMIC_SECTION("owned by process " << owner) {
      if (owner != 1) addprocs(1);
      RemoteChannel<std::string> ch(4, owner);
      CHECK(ch.where() == owner);
      CHECK_FALSE(ch.isready());
      ch.put("a");
      ch.put("b");
      CHECK(ch.isready());
      CHECK(ch.fetch() == "a");
      CHECK(ch.take() == "a");
      CHECK(ch.take() == "b");
      CHECK_FALSE(ch.try_take(20ms).has_value());
      if (owner != 1) rmprocs(workers());
    }
  }
}

TEST_CASE("a full channel blocks put until a take, and timeouts end waits with Cancelled", "[channel]") {
  addprocs(1);
  RemoteChannel<int64_t> ch(1, 2);
  ch.put(1);
  try {
    ch.put(2, 30ms);
    FAIL("put into a full channel did not time out");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Cancelled);
    CHECK_THAT(e.what(), Contains("timed out"));
  }
  std::thread taker([&] { CHECK(ch.take() == 1); });
  ch.put(3, 5000ms);  // unblocked by the taker
  taker.join();
  CHECK(ch.take() == 3);
  REQUIRE_THROWS_WITH(RemoteChannel<int64_t>(0), Contains("capacity must be at least 1"));
}

TEST_CASE("a producer kernel on one worker feeds a consumer kernel on another", "[channel]") {
  for (int owner : {1, 2, 3}) {
    DYNAMIC_SECTION("channel on process " << owner) {
      auto pids = addprocs(2);
      Kernels k;
      RemoteChannel<int64_t> ch(3, owner == 1 ? 1 : pids[static_cast<size_t>(owner - 2)]);
      Future<int64_t> sum = spawnat(pids[1], k.consume, ch);
      remote_do(k.produce, pids[0], ch, int64_t{100});
      CHECK(fetch(sum) == 5050);
      rmprocs(workers());
    }
  }
}

TEST_CASE("closing a channel wakes its waiters with an error naming it", "[channel][errors]") {
  addprocs(1);
  Kernels k;
  RemoteChannel<int64_t> ch(2);  // on the master
  Future<int64_t> waiting = spawnat(2, k.take_one, ch);
  CHECK_FALSE(isready(waiting));
  ch.close();
  try {
    fetch(waiting);
    FAIL("a take on a closed channel succeeded");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains("RemoteChannel") && Contains("closed"));
  }
  REQUIRE_THROWS_WITH(ch.put(1), Contains("is closed"));
}

TEST_CASE("when a channel's owner dies every user's call fails instead of hanging", "[channel][errors]") {
  addprocs(2);
  RemoteChannel<int64_t> ch(1, 2);
  std::optional<Error> seen;
  std::thread blocked([&] {
    try {
      ch.take();
    } catch (const Error& e) {
      seen = e;
    }
  });
  REQUIRE(test::eventually([&] { return test::process_alive(static_cast<pid_t>(worker_info(2).os_pid)); }));
  // Let the take reach the owner first (killed earlier, it fails with "worker 2 is gone").
  std::this_thread::sleep_for(200ms);
  ::kill(static_cast<pid_t>(worker_info(2).os_pid), SIGKILL);
  blocked.join();
  REQUIRE(seen);
  CHECK(seen->kind() == ErrorKind::Disconnected);
  CHECK_THAT(seen->what(), Contains("ProcessExited(2)"));
  REQUIRE_THROWS_WITH(ch.put(1), Contains("worker 2 is gone"));
}

TEST_CASE("dropping the last handle to a worker's channel frees it and the worker stays healthy", "[channel]") {
  addprocs(1);
  Kernels k;
  {
    RemoteChannel<int64_t> ch(2, 2);
    ch.put(7);
  }  // released on worker 2 (no answer expected: a stray one once made the master drop it)
  std::this_thread::sleep_for(100ms);
  CHECK(workers() == std::vector<int>{2});
  RemoteChannel<int64_t> again(1, 2);
  again.put(8);
  CHECK(again.take() == 8);
}
