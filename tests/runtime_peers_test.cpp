// Worker-to-worker connections: values and channels move directly between workers (the master
// only sees the call and its small result), the master_worker topology refuses it clearly, and
// a peer that dies fails the requests waiting on it.
#include <catch2/catch.hpp>

#include <signal.h>

#include "cluster.hpp"
#include "dj/dj.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;
using namespace std::chrono_literals;

namespace {
struct Kernels {
  Plugin plugin = everywhere(test::plugin("test_kernels"));
  Kernel<std::vector<double>(int64_t, double)> big_vector =
      plugin.kernel<std::vector<double>(int64_t, double)>("big_vector");
  Kernel<double(std::vector<double>)> sum = plugin.kernel<double(std::vector<double>)>("sum");
  Kernel<int32_t(int32_t)> sleep_ms = plugin.kernel<int32_t(int32_t)>("sleep_ms");
  Kernel<void(RemoteChannel<int64_t>, int64_t)> produce =
      plugin.kernel<void(RemoteChannel<int64_t>, int64_t)>("produce");
  Kernel<int64_t(RemoteChannel<int64_t>)> consume =
      plugin.kernel<int64_t(RemoteChannel<int64_t>)>("consume");
};

}  // namespace

TEST_CASE("a large value moves from worker to worker without passing through the master", "[peers]") {
  addprocs(2);
  Kernels k;
  auto& cluster = detail::Cluster::instance();
  const int64_t n = 8 << 20;  // 64 MiB of doubles
  Future<std::vector<double>> v = spawnat(2, k.big_vector, n, 1.0);
  wait(v);
  uint64_t received = cluster.payload_bytes_received();
  uint64_t sent = detail::Cluster::payload_bytes_sent();
  CHECK(remotecall_fetch(k.sum, 3, v) == Approx(static_cast<double>(n)));
  // Only the call (a ref) went out and the double came back.
  CHECK(cluster.payload_bytes_received() - received < 1024);
  CHECK(detail::Cluster::payload_bytes_sent() - sent < 1024);
  // The connection is kept: a second use costs no new handshake and still works.
  CHECK(remotecall_fetch(k.sum, 3, v) == Approx(static_cast<double>(n)));
  // Same host: the two workers talk through shared-memory rings, so each maps one ring pair
  // for the master and one for the other.
  CHECK(test::memfds_mapped(worker_info(2).os_pid, "dj-ring") == 2);
  CHECK(test::memfds_mapped(worker_info(3).os_pid, "dj-ring") == 2);
}

TEST_CASE("workers added later are told where the earlier ones are, and the reverse", "[peers]") {
  addprocs(1);
  Kernels k;
  Future<std::vector<double>> on_first = spawnat(2, k.big_vector, int64_t{1000}, 2.0);
  int later = addprocs(1).front();
  Future<std::vector<double>> on_later = spawnat(later, k.big_vector, int64_t{1000}, 3.0);
  uint64_t received = detail::Cluster::instance().payload_bytes_received();
  CHECK(remotecall_fetch(k.sum, later, on_first) == Approx(2000.0));
  CHECK(remotecall_fetch(k.sum, 2, on_later) == Approx(3000.0));
  CHECK(detail::Cluster::instance().payload_bytes_received() - received < 1024);
}

TEST_CASE("a channel owned by a worker is used directly by kernels on other workers", "[peers][channel]") {
  auto pids = addprocs(3);
  Kernels k;
  RemoteChannel<int64_t> ch(4, pids[0]);
  uint64_t received = detail::Cluster::instance().payload_bytes_received();
  Future<int64_t> sum = spawnat(pids[2], k.consume, ch);
  remote_do(k.produce, pids[1], ch, int64_t{1000});
  CHECK(fetch(sum) == 500500);
  // 1000 items went 3 -> 2 -> 4 without the master relaying any of them.
  CHECK(detail::Cluster::instance().payload_bytes_received() - received < 1024);
}

TEST_CASE("a peer that dies while another worker waits for its value fails that call", "[peers][errors]") {
  addprocs(2);
  Kernels k;
  Future<int32_t> slow = spawnat(2, k.sleep_ms, 20000);
  Future<int32_t> waiting = spawnat(3, k.sleep_ms, slow);
  std::this_thread::sleep_for(300ms);  // worker 3 is now waiting on its connection to 2
  CHECK_FALSE(isready(waiting));
  ::kill(static_cast<pid_t>(worker_info(2).os_pid), SIGKILL);
  try {
    fetch(waiting);
    FAIL("a call whose argument's owner died succeeded");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Disconnected);
    CHECK_THAT(e.what(), Contains("worker 2"));
  }
  // Worker 3 is healthy.
  CHECK(remotecall_fetch(k.sleep_ms, 3, 1) == 1);
}

TEST_CASE("with topology master_worker a kernel needing another worker's value says why it fails", "[peers][errors]") {
  set_topology(Topology::master_worker);
  CHECK(topology() == Topology::master_worker);
  addprocs(2);
  Kernels k;
  Future<std::vector<double>> v = spawnat(2, k.big_vector, int64_t{10}, 1.0);
  CHECK(remotecall_fetch(k.sum, 2, v) == Approx(10.0));  // on its own worker: fine
  try {
    remotecall_fetch(k.sum, 3, v);
    FAIL("a worker-to-worker transfer was allowed in master_worker topology");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::InvalidArgument);
    CHECK_THAT(e.what(), Contains("master_worker") && Contains("worker 3") &&
                             Contains("worker 2"));
  }
  // Passing the value itself works.
  CHECK(remotecall_fetch(k.sum, 3, fetch(v)) == Approx(10.0));
  REQUIRE_THROWS_WITH(set_topology(Topology::all_to_all),
                      Contains("before the first addprocs"));
}
