// Remote calls: every call form, typed arguments and results, Futures as arguments, reference
// counting, hot reload, and the errors a user sees.
#include <catch2/catch.hpp>

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
  Kernel<double(double, double)> add = plugin.kernel<double(double, double)>("add");
  Kernel<int32_t()> whoami = plugin.kernel<int32_t()>("whoami");
  Kernel<int32_t(int32_t)> sleep_ms = plugin.kernel<int32_t(int32_t)>("sleep_ms");
  Kernel<double(std::string)> fail = plugin.kernel<double(std::string)>("fail");
  Kernel<std::vector<double>(int64_t, double)> big_vector =
      plugin.kernel<std::vector<double>(int64_t, double)>("big_vector");
  Kernel<double(std::vector<double>)> sum = plugin.kernel<double(std::vector<double>)>("sum");
};

template <class T>
Error error_of(const Future<T>& f) {
  try {
    fetch(f);
  } catch (const Error& e) {
    return e;
  }
  FAIL("fetch did not throw");
  return Error(ErrorKind::Internal, "unreachable");
}

}  // namespace

TEST_CASE("spawnat runs a kernel on the chosen worker and fetch returns its result", "[calls]") {
  addprocs(2);
  Kernels k;
  Future<double> f = spawnat(2, k.add, 3.0, 3.0);
  CHECK(f.where() == 2);
  CHECK(fetch(f) == 6.0);
  CHECK(fetch(f) == 6.0);  // cached
  CHECK(remotecall_fetch(k.whoami, 3) == 3);
  CHECK(fetch(remotecall(k.whoami, 2)) == 2);
  CHECK(remotecall_fetch(k.add, 3, 1, 2) == 3.0);  // ints convert to the declared doubles
}

TEST_CASE("myid inside a kernel is the pid of the process running it", "[calls]") {
  for (int n : {1, 2, 4}) {
    DYNAMIC_SECTION(n << " workers") {
      auto pids = addprocs(n);
      Kernels k;
      for (int pid : pids) CHECK(remotecall_fetch(k.whoami, pid) == pid);
      CHECK(remotecall_fetch(k.whoami, 1) == 1);
    }
  }
}

TEST_CASE("with no workers, spawn runs on the master itself", "[calls]") {
  Kernels k;
  Future<double> f = spawn(k.add, 3.0, 3.0);
  CHECK(f.where() == 1);
  CHECK(fetch(f) == 6.0);
  CHECK(remotecall_fetch(k.add, 1, 2.0, 3.0) == 5.0);
  CHECK(fetch(spawn(k.whoami)) == 1);
}

TEST_CASE("spawn spreads calls over idle workers", "[calls]") {
  for (int n : {2, 4}) {
    DYNAMIC_SECTION(n << " workers") {
      addprocs(n);
      Kernels k;
      std::vector<Future<int32_t>> sleepers;
      std::set<int> used;
      for (int i = 0; i < n; ++i) {
        sleepers.push_back(spawn(k.sleep_ms, 200));
        used.insert(sleepers.back().where());
      }
      CHECK(used.size() == static_cast<size_t>(n));
      for (auto& s : sleepers) CHECK(fetch(s) == 200);
    }
  }
}

TEST_CASE("remotecall_wait waits for completion and isready reports it", "[calls]") {
  addprocs(1);
  Kernels k;
  Future<int32_t> slow = remotecall(k.sleep_ms, 2, 300);
  CHECK_FALSE(isready(slow));
  Future<int32_t> waited = remotecall_wait(k.sleep_ms, 2, 1);
  CHECK(isready(waited));
  CHECK(isready(slow));  // calls on one worker run in order
  wait(slow);
  CHECK(fetch(slow) == 300);
}

TEST_CASE("remote_do runs the kernel and returns nothing", "[calls]") {
  addprocs(1);
  Kernels k;
  auto bump = k.plugin.kernel<void(int64_t)>("bump");
  auto read_counter = k.plugin.kernel<int64_t()>("read_counter");
  remote_do(bump, 2, 5);
  remote_do(bump, 2, 7);
  CHECK(remotecall_fetch(read_counter, 2) == 12);
}

TEST_CASE("every supported argument and result type crosses to a worker and back", "[calls]") {
  addprocs(1);
  Plugin p = everywhere(test::plugin("test_kernels"));
  CHECK(remotecall_fetch(p.kernel<std::string(std::string)>("greet"), 2, std::string("dj")) ==
        "hello dj");
  CHECK(remotecall_fetch(p.kernel<std::vector<double>(std::vector<double>, double)>("scale"), 2,
                         std::vector<double>{1, 2}, 3.0) == std::vector<double>{3, 6});
  using Nested = std::vector<std::vector<int32_t>>;
  CHECK(remotecall_fetch(p.kernel<Nested(Nested)>("transpose"), 2, Nested{{1, 2, 3}, {4, 5, 6}}) ==
        Nested{{1, 4}, {2, 5}, {3, 6}});
  using V3 = std::array<float, 3>;
  CHECK(remotecall_fetch(p.kernel<V3(V3, V3)>("cross"), 2, V3{1, 0, 0}, V3{0, 1, 0}) ==
        V3{0, 0, 1});
  auto d = remotecall_fetch(
      p.kernel<std::tuple<int64_t, std::string, bool>(std::pair<int64_t, std::string>)>(
          "describe"),
      2, std::pair<int64_t, std::string>{21, "x"});
  CHECK(d == std::make_tuple(int64_t{42}, std::string("x!"), true));
  Matrix<double> m(2, 3, std::vector<double>{1, 2, 3, 4, 5, 6});
  Matrix<double> t =
      remotecall_fetch(p.kernel<Matrix<double>(Matrix<double>)>("transpose_matrix"), 2, m);
  CHECK(t.rows() == 3);
  CHECK(t(2, 1) == m(1, 2));
  CHECK(remotecall_fetch(p.kernel<uint8_t(bool)>("negate_flag"), 2, false) == 1);
}

namespace geo {
struct Particle {
  double x, y;
  int32_t id;
  std::string name;
};
DJ_STRUCT(Particle, x, y, id, name)
}  // namespace geo

TEST_CASE("user structs opted in with DJ_STRUCT cross to a worker and back", "[calls]") {
  addprocs(1);
  Plugin p = everywhere(test::plugin("test_kernels"));
  auto move = p.kernel<geo::Particle(geo::Particle, double)>("move");
  geo::Particle moved = remotecall_fetch(move, 2, geo::Particle{1, 2, 7, "p7"}, 0.5);
  CHECK(moved.x == 1.5);
  CHECK(moved.id == 7);
  CHECK(moved.name == "p7");
}

TEST_CASE("a call whose types differ from the kernel's signature is refused naming both", "[calls][errors]") {
  addprocs(1);
  Kernels k;
  Kernel<int32_t(int32_t, int32_t)> wrong("add");
  try {
    remotecall_fetch(wrong, 2, 1, 2);
    FAIL("a mismatched call was accepted");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::InvalidArgument);
    CHECK_THAT(e.what(), Contains("kernel 'add' on worker 2") && Contains("(f64,f64)->f64") &&
                             Contains("(i32,i32)->i32"));
  }
  REQUIRE_THROWS_WITH(k.plugin.kernel<float(float)>("add"),
                      Contains("has signature (f64,f64)->f64, not (f32)->f32"));
  REQUIRE_THROWS_WITH(k.plugin.kernel<float(float)>("nope"), Contains("has no kernel 'nope'"));
  CHECK(remotecall_fetch(k.add, 2, 1.0, 1.0) == 2.0);  // the worker is fine
}

TEST_CASE("a numeric result of the wrong size from a buggy plugin is refused, and the worker goes on", "[calls][errors]") {
  addprocs(1);
  Kernels k;
  Plugin bad = everywhere(test::plugin("short_result"));
  for (const char* name : {"short_invoke", "short_numbers"}) {
    auto short_kernel = bad.kernel<double(double)>(name);
    for (int pid : {1, 2}) {  // the master itself; a same-host worker (express path)
      INFO(name << " on pid " << pid);
      try {
        remotecall_fetch(short_kernel, pid, 1.0);
        FAIL("a 4-byte answer was taken for a double");
      } catch (const Error& e) {
        CHECK(e.kind() == ErrorKind::InvalidArgument);
        CHECK_THAT(e.what(), Contains("a result of 4 bytes where a number of 8 bytes"));
      }
      CHECK_THROWS_AS(fetch(spawnat(pid, short_kernel, 1.0)), Error);
    }
  }
  // A numbers-only entry that claims more than the ABI's 16 bytes: refused on the worker. Only
  // the express path runs that entry (the full path's run answers 1.0), and a call goes
  // express when this thread holds the connection's reader role, which the I/O thread may
  // hold for a moment after the fetches above: so each try follows an express call.
  auto long_kernel = bad.kernel<double(double)>("long_numbers");
  int refused = 0;
  for (int i = 0; i < 20; ++i) {
    REQUIRE(remotecall_fetch(k.add, 2, 1.0, 1.0) == 2.0);
    try {
      const double answer = remotecall_fetch(long_kernel, 2, 1.0);
      CHECK(answer == 1.0);  // the full path's
    } catch (const Error& e) {
      ++refused;
      CHECK(e.kind() == ErrorKind::RemoteFailure);
      CHECK_THAT(e.what(),
                 Contains("'long_numbers'") && Contains("numbers-only entry answered 4096"));
    }
  }
  CHECK(refused > 0);
  CHECK(remotecall_fetch(k.add, 2, 1.0, 1.0) == 2.0);
}

TEST_CASE("a kernel that throws gives a RemoteFailure with worker, kernel and message", "[calls][errors]") {
  addprocs(2);
  Kernels k;
  Error e = error_of(spawnat(3, k.fail, std::string("disk full")));
  CHECK(e.kind() == ErrorKind::RemoteFailure);
  CHECK(e.worker() == 3);
  CHECK(e.kernel() == "fail");
  CHECK_THAT(e.what(), Contains("on worker 3") && Contains("'fail'") && Contains("disk full"));
  try {
    remotecall_fetch(k.fail, 2, std::string("bad input"));
    FAIL("no throw");
  } catch (const Error& err) {
    CHECK(err.kind() == ErrorKind::RemoteFailure);
    CHECK_THAT(err.what(), Contains("bad input"));
  }
  CHECK(remotecall_fetch(k.add, 3, 1.0, 1.0) == 2.0);
}

TEST_CASE("calling a kernel not loaded on a worker says so, and works after everywhere", "[calls][errors]") {
  addprocs(2);
  Kernel<double(double, double)> add("add");
  Error e = error_of(spawnat(3, add, 1.0, 2.0));
  CHECK(e.kind() == ErrorKind::NotFound);
  CHECK_THAT(e.what(), Contains("kernel 'add' is not loaded on worker 3 (load its plugin with "
                                "everywhere)"));
  // The same through remotecall_fetch, whose compact call (id only) the worker sends back to be
  // sent in full, so that the error can name the kernel.
  CHECK_THROWS_WITH(remotecall_fetch(add, 2, 1.0, 2.0),
                    Contains("kernel 'add' is not loaded on worker 2"));
  everywhere(test::plugin("test_kernels"));
  CHECK(fetch(spawnat(3, add, 1.0, 2.0)) == 3.0);
  CHECK(remotecall_fetch(add, 2, 1.0, 2.0) == 3.0);
}

TEST_CASE("plugins loaded before addprocs are loaded on the new workers too", "[calls]") {
  Kernels k;
  auto pids = addprocs(2);
  for (int pid : pids) CHECK(remotecall_fetch(k.whoami, pid) == pid);
}

TEST_CASE("everywhere of a bad plugin names the file and the reason and loads nothing", "[calls][errors]") {
  addprocs(1);
  REQUIRE_THROWS_WITH(everywhere("/nonexistent/libk.so"), Contains("/nonexistent/libk.so"));
  REQUIRE_THROWS_WITH(everywhere(test::plugin("bad_abi")), Contains("incompatible"));
  CHECK(worker_stats(2).loaded_plugins == 0);
}

TEST_CASE("everywhere of the same plugin twice is a no-op, of a rebuilt one replaces it", "[calls]") {
  addprocs(2);
  test::TempDir dir;
  std::string path = dir.path() + "/libversioned.so";
  test::copy_file(test::plugin("versioned_v1"), path);
  Kernel<int32_t()> version = everywhere(path).kernel<int32_t()>("version");
  CHECK(remotecall_fetch(version, 2) == 1);
  everywhere(path);
  CHECK(worker_stats(2).loaded_plugins == 1);
  test::copy_file(test::plugin("versioned_v2"), path);  // "rebuild" in place
  everywhere(path);
  CHECK(remotecall_fetch(version, 2) == 2);
  CHECK(remotecall_fetch(version, 3) == 2);
  CHECK(remotecall_fetch(version, 1) == 2);
  // Workers added now get the rebuilt one.
  int fresh = addprocs(1).front();
  CHECK(remotecall_fetch(version, fresh) == 2);
}

TEST_CASE("a Future passed to its own worker is used in place", "[calls]") {
  addprocs(2);
  Kernels k;
  auto& cluster = detail::Cluster::instance();
  const int64_t n = 1 << 20;  // 8 MiB of doubles
  Future<std::vector<double>> v = spawnat(2, k.big_vector, n, 1.0);
  wait(v);
  uint64_t before = cluster.payload_bytes_received();
  CHECK(remotecall_fetch(k.sum, 2, v) == Approx(static_cast<double>(n)));
  CHECK(cluster.payload_bytes_received() - before < 1024);  // only the double came back

  CHECK(remotecall_fetch(k.sum, 3, v) == Approx(static_cast<double>(n)));  // runtime_peers_test

  // A Future whose value is still being computed is waited for, not failed.
  Future<int32_t> slow = spawnat(2, k.sleep_ms, 100);
  auto length = k.plugin.kernel<int64_t(std::vector<double>)>("length");
  Future<std::vector<double>> later = spawnat(3, k.big_vector, int64_t{10}, 2.0);
  CHECK(remotecall_fetch(length, 2, later) == 10);
  CHECK(fetch(slow) == 100);
}

TEST_CASE("a Future from a failed call makes the call using it fail with the cause", "[calls][errors]") {
  addprocs(1);
  Kernels k;
  auto failed = spawnat(2, k.fail, std::string("root cause"));
  auto dependent = spawnat(2, k.add, failed, 1.0);
  Error e = error_of(dependent);
  CHECK_THAT(e.what(), Contains("argument 1") && Contains("root cause"));
}

TEST_CASE("dropping the last handle to a Future frees the value on its worker", "[calls][refs]") {
  addprocs(1);
  Kernels k;
  const int64_t n = 32 << 20;  // 256 MiB of doubles
  auto base = worker_stats(2);
  {
    Future<std::vector<double>> big = spawnat(2, k.big_vector, n, 1.0);
    Future<std::vector<double>> copy = big;
    wait(big);
    auto held = worker_stats(2);
    CHECK(held.stored_values == base.stored_values + 1);
    CHECK(held.stored_bytes >= static_cast<uint64_t>(n) * 8);
    CHECK(held.rss_bytes > base.rss_bytes + static_cast<uint64_t>(n) * 4);
    big = Future<std::vector<double>>();  // one copy left: still held
    CHECK(worker_stats(2).stored_values == base.stored_values + 1);
  }
  REQUIRE(test::eventually([&] { return worker_stats(2).stored_values == base.stored_values; }));
  auto after = worker_stats(2);
  CHECK(after.stored_bytes == base.stored_bytes);
  // Returned to the OS. The count drops when the entry goes; the bytes when the last reference
  // to them does (a moment later, on another thread): wait for it, bounded.
  CHECK(test::eventually([&] {
    return worker_stats(2).rss_bytes < base.rss_bytes + static_cast<uint64_t>(n) * 2;
  }));
}

TEST_CASE("a kernel that blocks does not stop its worker from answering fetches or shutdown", "[calls][threads]") {
  addprocs(1);
  Kernels k;
  Future<double> ready = spawnat(2, k.add, 1.0, 1.0);
  wait(ready);
  Future<int32_t> sleeper = spawnat(2, k.sleep_ms, 3000);
  CHECK(fetch(ready) == 2.0);      // a fetch is answered while the kernel sleeps
  CHECK(worker_stats(2).stored_values >= 1);
  CHECK_FALSE(isready(sleeper));
  rmprocs(2);                      // shutdown is handled while the kernel sleeps
  Error e = error_of(sleeper);     // had shutdown waited for the kernel, this would succeed
  CHECK(e.kind() == ErrorKind::Disconnected);
  CHECK_THAT(e.what(), Contains("removed by rmprocs"));
}

TEST_CASE("calls to an unknown or removed pid are refused", "[calls][errors]") {
  addprocs(1);
  Kernels k;
  REQUIRE_THROWS_WITH(spawnat(9, k.add, 1.0, 1.0), Contains("no process with pid 9"));
  rmprocs(2);
  try {
    remotecall_fetch(k.add, 2, 1.0, 1.0);
    FAIL("call to a removed worker succeeded");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Disconnected);
    CHECK_THAT(e.what(), Contains("worker 2 is gone") && Contains("removed by rmprocs"));
  }
}

TEST_CASE("fetch from many threads at once returns every result", "[calls][threads]") {
  addprocs(2);
  Kernels k;
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        if (remotecall_fetch(k.add, 2 + (i + t) % 2, double(i), double(t)) == double(i + t)) ++good;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(good == 800);
}

TEST_CASE("calls nobody waits on yet go out promptly and in order", "[calls][order]") {
  addprocs(1);
  Plugin plugin = everywhere(test::plugin("shm_kernels"));
  auto set_at = plugin.kernel<void(SharedArray<double>, uint64_t, double)>("set_at");
  SharedArray<double> s({8});
  // Small store- and discard-mode calls are corked and written a burst at a time: with no
  // further call, fetch or wait from the master, they still reach the worker (the master's
  // I/O thread writes them). The master watches the shared memory, not the connection.
  remote_do(set_at, 2, s, uint64_t{0}, 1.0);
  Future<void> f = remotecall(set_at, 2, s, uint64_t{1}, 2.0);
  CHECK(test::eventually([&] { return s[0] == 1.0 && s[1] == 2.0; },
                         std::chrono::milliseconds(2000)));
  // In order: each slot ends with the last value written to it.
  std::vector<Future<void>> fs;
  for (int i = 0; i < 1000; ++i) {
    if (i % 2) remote_do(set_at, 2, s, uint64_t(i % 8), double(i));
    else fs.push_back(remotecall(set_at, 2, s, uint64_t(i % 8), double(i)));
  }
  fs.push_back(remotecall(set_at, 2, s, uint64_t{0}, 992.0));
  wait(fs.back());  // the last call: everything before it has run
  for (int k = 0; k < 8; ++k) CHECK(s[k] == double(992 + k));
  // A remotecall followed at once by a blocking call: nothing waits for the I/O thread.
  wait(remotecall(set_at, 2, s, uint64_t{3}, -3.0));
  CHECK(s[3] == -3.0);
}
