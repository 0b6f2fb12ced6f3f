// Frames between the master and a same-host worker go through shared-memory rings
// (runtime/wire/ring.hpp): frames of any size cross intact, sleeping readers and writers wake,
// a dead peer is noticed, bad memory is refused, and through the public API a worker killed
// mid-call fails only its own callers while the other workers' rings keep working. The
// express slot beside the rings carries small remotecall_fetch calls and their answers.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "dj/dj.hpp"
#include "net.hpp"
#include "test_support.hpp"
#include "wire/frame.hpp"
#include "wire/ring.hpp"

using namespace dj;
using Catch::Contains;

namespace {

// Both ends of a ring link in this process, as the master and a worker hold them.
struct RingPair {
  detail::Fd master_sock, worker_sock;
  std::shared_ptr<wire::RingLink> master, worker;
  explicit RingPair(size_t ring_bytes) {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    master_sock = detail::Fd(fds[0]);
    worker_sock = detail::Fd(fds[1]);
    master = wire::RingLink::create(master_sock.get(), ring_bytes);
    auto offered = master->offer_fds();
    worker = wire::RingLink::attach(worker_sock.get(), ::dup(offered[0]), ::dup(offered[1]),
                                    ::dup(offered[2]), ring_bytes);
  }
};

std::string pattern(size_t n, size_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + seed * 7) & 0xff);
  return s;
}

// CPU time (user + system) a process has used, in clock ticks.
long cpu_ticks(long pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  std::istringstream rest(text.substr(text.rfind(')') + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return utime + stime;
}

// CPU ticks worker `pid` uses over the second after its calls stop (50 ms of grace first).
// A worker still spinning or polling would use the whole second, about 100 ticks.
long idle_ticks(int pid) {
  long os_pid = worker_info(pid).os_pid;
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  long before = cpu_ticks(os_pid);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  return cpu_ticks(os_pid) - before;
}

}  // namespace

TEST_CASE("frames of every size cross a shared-memory ring intact, larger than the ring too",
          "[ring][wire]") {
  RingPair link(4096);  // the smallest ring: most frames wrap, many wait for room
  wire::FrameReader reader(link.worker_sock.get());
  reader.use_ring(link.worker);
  constexpr int kFrames = 600;
  auto writer = std::async(std::launch::async, [&] {
    for (int i = 0; i < kFrames; ++i) {
      size_t size = static_cast<size_t>(i * 97) % 20000;  // up to five times the ring
      wire::write_frame(wire::Outlet(link.master_sock.get(), link.master.get()),
                        wire::Ping{static_cast<uint64_t>(i)}, pattern(size, i));
    }
  });
  for (int i = 0; i < kFrames; ++i) {
    auto frame = reader.next();
    REQUIRE(frame);
    REQUIRE(std::get<wire::Ping>(frame->message).seq == static_cast<uint64_t>(i));
    REQUIRE(frame->payload == pattern(static_cast<size_t>(i * 97) % 20000, i));
  }
  writer.get();
  CHECK_FALSE(reader.more_waiting());
}

TEST_CASE("a reader asleep on an empty ring wakes for a frame, and for its peer's end",
          "[ring][wire]") {
  RingPair link(64 * 1024);
  wire::FrameReader reader(link.master_sock.get());
  reader.use_ring(link.master);
  auto got = std::async(std::launch::async, [&] { return reader.next(); });
  // Long past the spin: the reader sleeps on its doorbell.
  REQUIRE(got.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout);
  wire::write_frame(wire::Outlet(link.worker_sock.get(), link.worker.get()), wire::Pong{42});
  REQUIRE(got.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  auto frame = got.get();
  REQUIRE(frame);
  CHECK(std::get<wire::Pong>(frame->message).seq == 42);
  // The worker's process ends: its socket closes, and the sleeping reader sees the end.
  auto end = std::async(std::launch::async, [&] { return reader.next(); });
  REQUIRE(end.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout);
  link.worker_sock = detail::Fd();
  REQUIRE(end.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK_FALSE(end.get());
}

TEST_CASE("the express slot carries one message at a time either way and wakes a reader asleep on it",
          "[ring][wire][express]") {
  RingPair link(64 * 1024);
  wire::FrameReader worker_reader(link.worker_sock.get());
  worker_reader.use_ring(link.worker);
  CHECK_FALSE(link.worker->slot_waiting());
  // A reader waiting for a frame or the slot sleeps past the spin, then wakes for a post.
  auto woke = std::async(std::launch::async, [&] { return worker_reader.wait_frame_or_slot(); });
  REQUIRE(woke.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout);
  std::memcpy(link.master->slot(), "call!", 5);
  link.master->post(1, 7, 5);
  REQUIRE(woke.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(woke.get());
  CHECK_FALSE(link.master->slot_waiting());  // its own message is not for it
  auto call = link.worker->take_slot();
  CHECK(call.seq == 1);
  CHECK(call.tag == 7);
  CHECK(std::string(reinterpret_cast<const char*>(call.data), call.bytes) == "call!");
  CHECK_FALSE(link.worker->slot_waiting());  // taken
  // The answer takes the call's place.
  std::memcpy(link.worker->slot(), "answer", 6);
  link.worker->post(1, 0, 6);
  REQUIRE(link.master->slot_waiting());
  auto answer = link.master->take_slot();
  CHECK(answer.tag == 0);
  CHECK(std::string(reinterpret_cast<const char*>(answer.data), answer.bytes) == "answer");
  // Frames written before a post are read before it.
  wire::write_frame(wire::Outlet(link.master_sock.get(), link.master.get()), wire::Ping{5});
  link.master->post(2, 7, 0);
  REQUIRE_FALSE(worker_reader.wait_frame_or_slot());
  auto frame = worker_reader.next();
  REQUIRE(frame);
  CHECK(std::get<wire::Ping>(frame->message).seq == 5);
  CHECK(worker_reader.wait_frame_or_slot());
  CHECK(link.worker->take_slot().seq == 2);
  // A size beyond the slot is refused, never followed.
  link.master->post(3, 7, wire::RingLink::kSlotBytes + 1);
  CHECK_THROWS_WITH(link.worker->take_slot(), Contains("corrupt express slot"));
}

TEST_CASE("a writer waiting for room in a full ring fails with Disconnected once the reader is gone",
          "[ring][wire][errors]") {
  RingPair link(4096);
  std::string big(3000, 'x');
  auto out = wire::Outlet(link.master_sock.get(), link.master.get());
  wire::write_frame(out, wire::Ping{1}, big);  // fits; nobody reads it
  auto blocked = std::async(std::launch::async, [&] { wire::write_frame(out, wire::Ping{2}, big); });
  REQUIRE(blocked.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout);
  link.worker_sock = detail::Fd();  // the reader's process ends
  REQUIRE(blocked.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  try {
    blocked.get();
    FAIL("a write into a full ring with no reader returned");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Disconnected);
    CHECK_THAT(e.what(), Contains("gone"));
  }
}

TEST_CASE("a worker refuses ring memory of the wrong size, unsealed, or an odd ring size",
          "[ring][wire][errors]") {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  detail::Fd a(fds[0]), b(fds[1]);
  auto bell = [] { return ::eventfd(0, EFD_CLOEXEC); };
  {
    int memfd = ::memfd_create("not-a-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    REQUIRE(::ftruncate(memfd, 4096 + 2 * 8192) == 0);
    CHECK_THROWS_WITH(wire::RingLink::attach(b.get(), memfd, bell(), bell(), 8192),
                      Contains("not sealed against shrinking"));
  }
  {
    int memfd = ::memfd_create("not-a-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    REQUIRE(::ftruncate(memfd, 4096) == 0);
    CHECK_THROWS_WITH(wire::RingLink::attach(b.get(), memfd, bell(), bell(), 8192),
                      Contains("is not 20480 bytes"));
  }
  int memfd = ::memfd_create("not-a-ring", MFD_CLOEXEC);
  CHECK_THROWS_WITH(wire::RingLink::attach(b.get(), memfd, bell(), bell(), 5000),
                    Contains("power of two"));
}

TEST_CASE("corrupt ring positions are refused, never followed", "[ring][wire][errors]") {
  RingPair link(4096);
  // A confused or hostile peer claims far more bytes than the ring holds.
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, link.master->offer_fds()[0], 0);
  REQUIRE(p != MAP_FAILED);
  uint64_t tail = 1u << 20;
  std::memcpy(p, &tail, sizeof tail);  // the master->worker ring's tail comes first
  wire::FrameReader reader(link.worker_sock.get());
  reader.use_ring(link.worker);
  try {
    reader.next();
    FAIL("a corrupt ring was read");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::InvalidArgument);
    CHECK_THAT(e.what(), Contains("corrupt positions"));
  }
  ::munmap(p, 4096);
}

TEST_CASE("a same-host worker is reached through shared memory", "[ring]") {
  std::vector<int> pids = addprocs(2);
  for (int p : pids) CHECK(worker_info(p).link == "shared memory");
  auto add = everywhere(test::plugin("test_kernels")).kernel<double(double, double)>("add");
  for (int i = 0; i < 2000; ++i) REQUIRE(remotecall_fetch(add, pids[i % 2], 1.0, i) == 1.0 + i);
  // A value larger than the ring (and below the bulk-frame size) streams through it.
  auto scale = everywhere(test::plugin("test_kernels"))
                   .kernel<std::vector<double>(std::vector<double>, double)>("scale");
  std::vector<double> v(110000);  // 880 KB
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i);
  auto out = remotecall_fetch(scale, pids[0], v, 2.0);
  REQUIRE(out.size() == v.size());
  for (size_t i = 0; i < v.size(); ++i) REQUIRE(out[i] == 2.0 * v[i]);
}

TEST_CASE("DJ_RING=0 keeps same-host workers on their socket, which spins only briefly too",
          "[ring]") {
  ::setenv("DJ_RING", "0", 1);
  std::vector<int> pids = addprocs(1);
  CHECK(worker_info(pids[0]).link == "unix socket");
  auto add = everywhere(test::plugin("test_kernels")).kernel<double(double, double)>("add");
  for (int i = 0; i < 5000; ++i) REQUIRE(remotecall_fetch(add, pids[0], 3.0, i) == 3.0 + i);
  CHECK(idle_ticks(pids[0]) < 10);
}

TEST_CASE("a worker killed mid-call fails its callers and leaves the other workers' rings working",
          "[ring][errors]") {
  std::vector<int> pids = addprocs(3);
  Plugin plugin = everywhere(test::plugin("test_kernels"));
  auto sleep_ms = plugin.kernel<int32_t(int32_t)>("sleep_ms");
  auto add = plugin.kernel<double(double, double)>("add");
  std::vector<std::future<int32_t>> calls;
  for (int p : pids) {
    calls.push_back(std::async(std::launch::async, [&, p] { return remotecall_fetch(sleep_ms, p, 300); }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto queued = remotecall(sleep_ms, pids[0], 1);  // waits behind the first, on the doomed worker
  REQUIRE(::kill(static_cast<pid_t>(worker_info(pids[0]).os_pid), SIGKILL) == 0);
  try {
    calls[0].get();
    FAIL("a call to a killed worker returned");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Disconnected);
    CHECK_THAT(e.what(), Contains("ProcessExited(" + std::to_string(pids[0]) + ")"));
  }
  CHECK_THROWS_WITH(fetch(queued), Contains("ProcessExited(" + std::to_string(pids[0]) + ")"));
  CHECK(calls[1].get() == 300);
  CHECK(calls[2].get() == 300);
  // The survivors' rings are not wedged: round trips, and a pipelined burst, all answered.
  for (int i = 0; i < 500; ++i) REQUIRE(remotecall_fetch(add, pids[1 + i % 2], 2.0, i) == 2.0 + i);
  std::vector<Future<double>> burst;
  for (int i = 0; i < 2000; ++i) burst.push_back(remotecall(add, pids[1 + i % 2], 1.0, i));
  for (int i = 0; i < 2000; ++i) REQUIRE(fetch(burst[static_cast<size_t>(i)]) == 1.0 + i);
  CHECK(workers() == std::vector<int>{pids[1], pids[2]});
}

TEST_CASE("express calls give errors, large results, Future arguments and queued calls the full "
          "path's answers, in order", "[ring][express]") {
  std::vector<int> pids = addprocs(1);
  const int p = pids[0];
  Plugin plugin = everywhere(test::plugin("test_kernels"));
  auto fail_on_three = plugin.kernel<int64_t(int64_t)>("fail_on_three");
  auto big_vector = plugin.kernel<std::vector<double>(int64_t, double)>("big_vector");
  auto add = plugin.kernel<double(double, double)>("add");
  auto add_int = plugin.kernel<int32_t(int32_t, int32_t)>("add_int");
  auto bump = plugin.kernel<void(int64_t)>("bump");
  auto read_counter = plugin.kernel<int64_t()>("read_counter");
  auto sleep_ms = plugin.kernel<int32_t(int32_t)>("sleep_ms");

  CHECK(remotecall_fetch(fail_on_three, p, int64_t{2}) == 2);
  CHECK_THROWS_WITH(remotecall_fetch(fail_on_three, p, int64_t{3}),
                    Contains("'fail_on_three'") && Contains("three is not allowed"));
  // Results that fit the slot, that do not (ring), and that take shared memory (bulk).
  for (int64_t n : {int64_t{100}, int64_t{200}, int64_t{1} << 20}) {
    std::vector<double> v = remotecall_fetch(big_vector, p, n, 1.5);
    REQUIRE(v.size() == static_cast<size_t>(n));
    CHECK(v.front() == 1.5);
    CHECK(v.back() == 1.5);
  }
  // A Future argument is resolved where it lives.
  Future<double> three = remotecall(add, p, 1.0, 2.0);
  CHECK(remotecall_fetch(add, p, three, 10.0) == 13.0);
  // What was sent before (remote_do, remotecall) runs before the express call.
  for (int i = 0; i < 3; ++i) remote_do(bump, p, int64_t{5});
  CHECK(remotecall_fetch(read_counter, p) == 15);
  auto start = std::chrono::steady_clock::now();
  Future<int32_t> slow = remotecall(sleep_ms, p, 200);
  CHECK(remotecall_fetch(add_int, p, 2, 3) == 5);  // queued behind the running kernel
  CHECK(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(150));
  CHECK(isready(slow));
  CHECK(fetch(slow) == 200);
  // And a call that comes while an express call runs (this thread's: it kept the connection)
  // waits behind it, then runs.
  auto other_thread = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    Future<double> behind = remotecall(add, p, 1.0, 1.0);
    for (int i = 0; i < 500 && !isready(behind); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return isready(behind) ? fetch(behind) : -1.0;
  });
  CHECK(remotecall_fetch(sleep_ms, p, 300) == 300);
  CHECK(other_thread.get() == 2.0);
  // Threads calling one worker at once: one takes the slot, the others the full path.
  std::vector<std::future<bool>> threads;
  for (int t = 0; t < 4; ++t) {
    threads.push_back(std::async(std::launch::async, [&, t] {
      for (int i = 0; i < 2000; ++i) {
        if (remotecall_fetch(add, p, static_cast<double>(t), static_cast<double>(i)) != t + i) {
          return false;
        }
      }
      return true;
    }));
  }
  for (auto& t : threads) CHECK(t.get());
}

TEST_CASE("a connection kept by a thread between its calls is read for other threads and for "
          "results nobody waits on", "[ring][express]") {
  const int p = addprocs(1)[0];
  Plugin plugin = everywhere(test::plugin("test_kernels"));
  auto add = plugin.kernel<double(double, double)>("add");
  auto sleep_ms = plugin.kernel<int32_t(int32_t)>("sleep_ms");
  std::atomic<int> wrong{0};
  std::promise<void> called, go_on;
  std::thread caller([&, go_on_future = go_on.get_future()] {
    for (int i = 0; i < 1000; ++i) wrong += remotecall_fetch(add, p, 1.0, i) != 1.0 + i;
    called.set_value();
    go_on_future.wait();  // alive and idle: its direct calls keep the connection's reader role
    for (int i = 0; i < 1000; ++i) wrong += remotecall_fetch(add, p, 3.0, i) != 3.0 + i;
  });
  called.get_future().wait();
  // Meanwhile this thread's calls are answered, by the full path and directly, and a result
  // that nobody fetches is read by the I/O thread: the role is taken back from the idle caller.
  for (int i = 0; i < 200; ++i) CHECK(fetch(remotecall(add, p, 2.0, i)) == 2.0 + i);
  for (int i = 0; i < 200; ++i) CHECK(remotecall_fetch(add, p, 4.0, i) == 4.0 + i);
  Future<int32_t> unread = remotecall(sleep_ms, p, 1);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!isready(unread) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CHECK(isready(unread));
  // And the first thread calls again, while this one keeps the role between its own calls.
  go_on.set_value();
  caller.join();
  CHECK(wrong == 0);
  CHECK(fetch(unread) == 1);
}

TEST_CASE("a worker this thread called is neither kept alive nor called again once it is "
          "removed or dead", "[ring][express][errors]") {
  std::vector<int> pids = addprocs(2);
  Plugin plugin = everywhere(test::plugin("test_kernels"));
  auto add = plugin.kernel<double(double, double)>("add");
  for (int p : pids) REQUIRE(remotecall_fetch(add, p, 1.0, 2.0) == 3.0);  // both links cached
  const int rings = test::memfds_mapped(::getpid(), "dj-ring");
  rmprocs(pids[0]);
  // The removed worker's rings are unmapped: this thread's cache of links holds no reference
  // that keeps its link (connection, rings, process handle) alive.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (test::memfds_mapped(::getpid(), "dj-ring") >= rings &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(test::memfds_mapped(::getpid(), "dj-ring") < rings);
  const std::string removed = std::to_string(pids[0]);
  CHECK_THROWS_WITH(remotecall_fetch(add, pids[0], 1.0, 2.0),
                    Contains("worker " + removed + " is gone") && Contains("removed by rmprocs"));
  // A worker that died: its callers are told so, whether or not its death was noticed yet.
  const std::string dead = std::to_string(pids[1]);
  REQUIRE(::kill(static_cast<pid_t>(worker_info(pids[1]).os_pid), SIGKILL) == 0);
  for (int i = 0; i < 2; ++i) {
    CHECK_THROWS_WITH(remotecall_fetch(add, pids[1], 1.0, 2.0),
                      Contains("worker " + dead + " (os pid") && Contains("killed by signal 9"));
  }
  CHECK(workers() == std::vector<int>{1});
}

TEST_CASE("a worker stops spinning on its ring once idle and then uses no CPU", "[ring]") {
  std::vector<int> pids = addprocs(1);
  auto add = everywhere(test::plugin("test_kernels")).kernel<double(double, double)>("add");
  for (int i = 0; i < 20000; ++i) remotecall_fetch(add, pids[0], 1.0, 1.0);  // both sides spin
  CHECK(idle_ticks(pids[0]) < 10);
  CHECK(remotecall_fetch(add, pids[0], 3.0, 3.0) == 6.0);  // and it still answers
}
