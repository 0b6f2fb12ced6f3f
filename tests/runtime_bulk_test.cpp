// Large payloads between the master and a worker on the same host go through shared memory
// (runtime/wire/bulk.hpp): values arrive intact both ways, concurrent and failing calls stay
// correct, an idle arena's memory goes back, and bad bulk frames are refused.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <future>
#include <thread>

#include "dj/dj.hpp"
#include "net.hpp"
#include "test_support.hpp"
#include "wire/frame.hpp"

using namespace dj;
using Catch::Contains;

namespace {

struct Kernels {
  Plugin plugin = everywhere(test::plugin("test_kernels"));
  Kernel<std::vector<double>(std::vector<double>, double)> scale =
      plugin.kernel<std::vector<double>(std::vector<double>, double)>("scale");
  Kernel<std::vector<double>(std::vector<double>, double)> scale_or_fail =
      plugin.kernel<std::vector<double>(std::vector<double>, double)>("scale_or_fail");
  Kernel<double(std::vector<double>)> sum = plugin.kernel<double(std::vector<double>)>("sum");
  Kernel<std::vector<double>(int64_t, double)> big_vector =
      plugin.kernel<std::vector<double>(int64_t, double)>("big_vector");
};

std::vector<double> ramp(size_t n) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<double>(i) * 0.5;
  return v;
}

bool scaled(const std::vector<double>& out, const std::vector<double>& in, double k) {
  if (out.size() != in.size()) return false;
  for (size_t i = 0; i < in.size(); ++i) {
    if (out[i] != in[i] * k) return false;
  }
  return true;
}

// Mappings of bulk arenas in process `pid`: its own (writable), or its peers' (read-only,
// kept between payloads).
int bulk_mapped(long pid, bool writable) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  int n = 0;
  for (std::string line; std::getline(maps, line);) {
    char perms[5] = {};
    if (line.find("/memfd:dj-bulk") != std::string::npos &&
        std::sscanf(line.c_str(), "%*[0-9a-f-] %4s", perms) == 1 && (perms[1] == 'w') == writable) {
      ++n;
    }
  }
  return n;
}
int arenas_mapped(long pid) { return bulk_mapped(pid, true); }
int views_mapped(long pid) { return bulk_mapped(pid, false); }

constexpr size_t kLarge = (size_t{8} << 20) / sizeof(double);  // 8 MiB of doubles

}  // namespace

TEST_CASE("a large argument and result to a same-host worker go through shared memory intact",
          "[bulk]") {
  addprocs(1);
  Kernels k;
  long worker = worker_info(2).os_pid;
  auto v = ramp(kLarge);
  auto out = remotecall_fetch(k.scale, 2, v, 2.0);
  CHECK(scaled(out, v, 2.0));
  // Both directions went through an arena: the master's (arguments) and the worker's (result),
  // and each side keeps its mapping of the other's.
  CHECK(arenas_mapped(::getpid()) == 1);
  CHECK(arenas_mapped(worker) == 1);
  CHECK(views_mapped(::getpid()) == 1);
  CHECK(views_mapped(worker) == 1);
  // Again, reusing both arenas, with other sizes (one larger: both arenas grow, and the
  // mappings of the old ones go); and small values still take the socket.
  for (size_t n : {kLarge / 2, kLarge + 12345, size_t{3}}) {
    auto w = ramp(n);
    CHECK(scaled(remotecall_fetch(k.scale, 2, w, -0.25), w, -0.25));
  }
  CHECK(arenas_mapped(::getpid()) == 1);
  CHECK(views_mapped(::getpid()) == 1);
  CHECK(test::eventually([&] { return arenas_mapped(worker) == 1 && views_mapped(worker) == 1; }));
  CHECK(remotecall_fetch(k.sum, 2, v) == Approx(0.5 * (kLarge - 1) * kLarge / 2.0));
  // A large result kept on the worker and fetched later, and one computed there.
  Future<std::vector<double>> kept = remotecall(k.scale, 2, v, 3.0);
  CHECK(scaled(fetch(kept), v, 3.0));
  CHECK(fetch(remotecall(k.big_vector, 2, int64_t(kLarge), 1.5)) ==
        std::vector<double>(kLarge, 1.5));
}

// Whether `p` lies in a bulk arena mapped by this process.
bool in_bulk_arena(const void* p) {
  std::ifstream maps("/proc/self/maps");
  auto at = reinterpret_cast<uintptr_t>(p);
  for (std::string line; std::getline(maps, line);) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2 && at >= lo && at < hi) {
      return line.find("/memfd:dj-bulk") != std::string::npos;
    }
  }
  return false;
}

TEST_CASE("ArrayView arguments and results are read in place, not copied", "[bulk][view]") {
  addprocs(1);
  Plugin plugin = everywhere(test::plugin("test_kernels"));
  auto sum_view = plugin.kernel<double(int32_t, ArrayView<double>)>("sum_view");
  auto in_place = plugin.kernel<bool(ArrayView<double>)>("view_in_place");
  auto echo_view = plugin.kernel<ArrayView<double>(ArrayView<double>)>("echo_view");
  // The same kernels, called as taking and returning std::vector (the same wire form).
  auto echo_vector = plugin.kernel<std::vector<double>(std::vector<double>)>("echo_view");
  auto v = ramp(kLarge);
  // After a small argument, the large one still starts aligned and is read where it arrived.
  CHECK(remotecall_fetch(sum_view, 2, int32_t{2}, v) == Approx((kLarge - 1) * kLarge / 2.0));
  CHECK(remotecall_fetch(in_place, 2, v));
  // The result stays in the worker's shared memory while the view lives.
  ArrayView<double> back = remotecall_fetch(echo_view, 2, v);
  REQUIRE(back.size() == v.size());
  CHECK(in_bulk_arena(back.data()));
  CHECK(std::equal(back.begin(), back.end(), v.begin()));
  // Held meanwhile: the worker's next large result takes the ring instead, and is intact.
  ArrayView<double> second = remotecall_fetch(echo_view, 2, ramp(kLarge / 2));
  CHECK_FALSE(in_bulk_arena(second.data()));
  CHECK(second.to_vector() == ramp(kLarge / 2));
  CHECK(back[kLarge - 1] == v[kLarge - 1]);  // the first view is still good
  // Dropped, the worker's arena takes the next result, read where the first one was read:
  // the mapping of it was kept, not made again.
  const double* first_at = back.data();
  back = ArrayView<double>();
  ArrayView<double> third = remotecall_fetch(echo_view, 2, v);
  CHECK(third.data() == first_at);
  CHECK(std::equal(third.begin(), third.end(), v.begin()));
  CHECK(remotecall_fetch(echo_vector, 2, v) == v);
  // Small arrays are copied (nothing to read in place), and work the same.
  CHECK_FALSE(remotecall_fetch(in_place, 2, ramp(10)));
  CHECK(remotecall_fetch(echo_view, 2, ramp(10)).to_vector() == ramp(10));
  CHECK(remotecall_fetch(echo_view, 2, std::vector<double>{}).empty());
}

TEST_CASE("an idle bulk arena gives its memory back on both sides", "[bulk]") {
  addprocs(1);
  Kernels k;
  long worker = worker_info(2).os_pid;
  auto v = ramp(kLarge);
  CHECK(scaled(remotecall_fetch(k.scale, 2, v, 2.0), v, 2.0));
  REQUIRE(arenas_mapped(::getpid()) == 1);
  REQUIRE(arenas_mapped(worker) == 1);
  REQUIRE(views_mapped(::getpid()) == 1);
  REQUIRE(test::eventually([&] { return views_mapped(worker) == 1; }));
  // Unmapped within a few seconds of the last use (kBulkIdleTrim, checked every second): the
  // arenas by their senders, the mappings of them by their readers.
  CHECK(test::eventually(
      [&] { return arenas_mapped(::getpid()) == 0 && views_mapped(::getpid()) == 0; },
      std::chrono::milliseconds(8000)));
  CHECK(test::eventually([&] { return arenas_mapped(worker) == 0 && views_mapped(worker) == 0; },
                         std::chrono::milliseconds(8000)));
  // And made again when needed.
  CHECK(scaled(remotecall_fetch(k.scale, 2, v, 4.0), v, 4.0));
}

TEST_CASE("large calls from many threads at once to one worker all arrive intact", "[bulk]") {
  addprocs(1);
  Kernels k;
  // One arena each way: calls that find it lent out go through the socket, never wait for it.
  std::vector<std::future<bool>> done;
  for (int t = 0; t < 4; ++t) {
    done.push_back(std::async(std::launch::async, [&, t] {
      auto v = ramp(kLarge / 4 + static_cast<size_t>(t));
      bool ok = true;
      for (int i = 0; i < 5; ++i) {
        double f = t + i + 1.0;
        ok = ok && scaled(remotecall_fetch(k.scale, 2, v, f), v, f);
      }
      return ok;
    }));
  }
  // Futures too: many large arguments in flight before any result is fetched.
  auto v = ramp(kLarge / 4);
  std::vector<Future<std::vector<double>>> futures;
  for (int i = 0; i < 6; ++i) futures.push_back(remotecall(k.scale, 2, v, i + 1.0));
  for (int i = 0; i < 6; ++i) CHECK(scaled(fetch(futures[i]), v, i + 1.0));
  for (auto& d : done) CHECK(d.get());
}

TEST_CASE("a kernel that fails or dies with a large argument leaves the arena usable",
          "[bulk][errors]") {
  std::vector<int> pids = addprocs(2);
  Kernels k;
  auto v = ramp(kLarge);
  // Throws: the error comes back and the same worker takes the next large call.
  REQUIRE_THROWS_WITH(remotecall_fetch(k.scale_or_fail, pids[0], v, 0.0),
                      Contains("k is zero"));
  CHECK(scaled(remotecall_fetch(k.scale_or_fail, pids[0], v, 2.0), v, 2.0));
  // Dies holding the master's memory: the caller gets ProcessExited, the other worker goes on.
  try {
    remotecall_fetch(k.scale_or_fail, pids[0], v, -1.0);
    FAIL("the call to a dying worker returned");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Disconnected);
    CHECK_THAT(e.what(), Contains("ProcessExited(" + std::to_string(pids[0]) + ")"));
  }
  CHECK(workers() == std::vector<int>{pids[1]});
  for (int i = 0; i < 3; ++i) {
    CHECK(scaled(remotecall_fetch(k.scale_or_fail, pids[1], v, 3.0), v, 3.0));
  }
  // The dead worker's arena went with its connection, and the mapping of its own arena with
  // it: only the live worker's are mapped.
  CHECK(test::eventually(
      [] { return arenas_mapped(::getpid()) == 1 && views_mapped(::getpid()) == 1; }));
}

namespace {

// A connected pair of Unix stream sockets (a same-host connection's kind).
std::pair<detail::Fd, detail::Fd> unix_pair() {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  return {detail::Fd(fds[0]), detail::Fd(fds[1])};
}

// Sends a bulk frame by hand: `fd` passed along (or none when -1), describing `length` bytes.
void send_bulk_frame(int sock, int fd, uint64_t length) {
  std::string header = wire::encode(wire::Ping{7});
  unsigned char head[16];
  uint32_t magic = wire::kBulkFrameMagic, hb = static_cast<uint32_t>(header.size());
  uint64_t pb = wire::kBulkDescriptorBytes, token = 1;
  std::memcpy(head, &magic, 4);
  std::memcpy(head + 4, &hb, 4);
  std::memcpy(head + 8, &pb, 8);
  unsigned char desc[16];
  std::memcpy(desc, &length, 8);
  std::memcpy(desc + 8, &token, 8);
  iovec iov[3] = {{head, 16}, {header.data(), header.size()}, {desc, 16}};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = 3;
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  REQUIRE(::sendmsg(sock, &msg, 0) == static_cast<ssize_t>(32 + header.size()));
}

}  // namespace

TEST_CASE("a bulk arena's payload is read in place and handed back when dropped", "[bulk][wire]") {
  auto [a, b] = unix_pair();
  wire::BulkArena arena;
  std::string payload(wire::kBulkMinBytes + 3, 'x');
  payload[7] = 'y';
  // Too small for the arena: the caller sends it through the socket.
  CHECK_FALSE(arena.try_send(a.get(), wire::Ping{1}, reinterpret_cast<const unsigned char*>("z"), 1));
  REQUIRE(arena.try_send(a.get(), wire::Ping{2},
                         reinterpret_cast<const unsigned char*>(payload.data()), payload.size()));
  // Lent out: the next one must take the socket.
  CHECK_FALSE(arena.try_send(a.get(), wire::Ping{3},
                             reinterpret_cast<const unsigned char*>(payload.data()),
                             payload.size()));
  std::vector<uint64_t> released;
  wire::FrameReader reader(b.get());
  reader.accept_bulk([&](uint64_t token) { released.push_back(token); });
  {
    auto frame = reader.next();
    REQUIRE(frame);
    CHECK(std::get<wire::Ping>(frame->message).seq == 2);
    REQUIRE(frame->bulk);
    CHECK(frame->bytes() == payload);
    CHECK(released.empty());  // still mapped here
  }
  REQUIRE(released.size() == 1);
  arena.released(released[0] + 1);  // a wrong token changes nothing
  CHECK_FALSE(arena.try_send(a.get(), wire::Ping{4},
                             reinterpret_cast<const unsigned char*>(payload.data()),
                             payload.size()));
  arena.released(released[0]);
  CHECK(arena.try_send(a.get(), wire::Ping{5},
                       reinterpret_cast<const unsigned char*>(payload.data()), payload.size()));
  auto frame = reader.next();
  REQUIRE(frame);
  frame->materialize();  // a copy: the memory goes back at once
  CHECK(frame->payload == payload);
  CHECK(released.size() == 2);
}

TEST_CASE("bad bulk frames are refused naming the problem", "[bulk][wire][errors]") {
  SECTION("on a connection that takes none") {
    auto [a, b] = unix_pair();
    int memfd = ::memfd_create("t", MFD_CLOEXEC);
    send_bulk_frame(a.get(), memfd, 0);
    ::close(memfd);
    wire::FrameReader reader(b.get());  // no accept_bulk: a TCP connection, say
    REQUIRE_THROWS_WITH(reader.next(), Contains("carries none"));
  }
  SECTION("without its memory") {
    auto [a, b] = unix_pair();
    send_bulk_frame(a.get(), -1, 100);
    wire::FrameReader reader(b.get());
    reader.accept_bulk([](uint64_t) {});
    REQUIRE_THROWS_WITH(reader.next(), Contains("without its memory"));
  }
  SECTION("memory that could shrink under the reader") {
    auto [a, b] = unix_pair();
    int memfd = ::memfd_create("t", MFD_CLOEXEC);
    REQUIRE(::ftruncate(memfd, 4096) == 0);
    send_bulk_frame(a.get(), memfd, 100);
    ::close(memfd);
    wire::FrameReader reader(b.get());
    reader.accept_bulk([](uint64_t) {});
    REQUIRE_THROWS_WITH(reader.next(), Contains("not a memfd sealed against shrinking"));
  }
  SECTION("memory smaller than the frame says") {
    auto [a, b] = unix_pair();
    int memfd = ::memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    REQUIRE(::ftruncate(memfd, 4096) == 0);
    REQUIRE(::fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK) == 0);
    send_bulk_frame(a.get(), memfd, 1 << 20);
    ::close(memfd);
    wire::FrameReader reader(b.get());
    reader.accept_bulk([](uint64_t) {});
    REQUIRE_THROWS_WITH(reader.next(), Contains("holds 4096 bytes, the frame says 1048576"));
  }
  SECTION("a descriptor of the wrong size") {
    unsigned char prefix[16];
    uint32_t magic = wire::kBulkFrameMagic, hb = 8;
    uint64_t pb = 100;
    std::memcpy(prefix, &magic, 4);
    std::memcpy(prefix + 4, &hb, 4);
    std::memcpy(prefix + 8, &pb, 8);
    REQUIRE_THROWS_WITH(wire::parse_prefix(prefix, 1 << 20),
                        Contains("bulk frame with a descriptor of 100 bytes"));
  }
}
