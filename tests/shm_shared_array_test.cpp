// SharedArray: views and memory order, writes seen across processes, init, Julia's split of
// localindices at 1 to 4 workers, and every refusal at creation.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <numeric>

#include "dj/dj.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {

struct ShmKernels {
  Plugin plugin = everywhere(test::plugin("shm_kernels"));
  Kernel<void(SharedArray<double>)> fill_local =
      plugin.kernel<void(SharedArray<double>)>("fill_local");
  Kernel<std::vector<uint64_t>(SharedArray<double>)> local_range =
      plugin.kernel<std::vector<uint64_t>(SharedArray<double>)>("local_range");
  Kernel<void(SharedArray<double>)> square_chunk =
      plugin.kernel<void(SharedArray<double>)>("square_chunk");
  Kernel<double(SharedArray<double>)> sum_all = plugin.kernel<double(SharedArray<double>)>("sum_all");
  Kernel<void(SharedArray<double>, uint64_t, double)> set_at =
      plugin.kernel<void(SharedArray<double>, uint64_t, double)>("set_at");
  Kernel<SharedArray<double>(SharedArray<double>)> echo =
      plugin.kernel<SharedArray<double>(SharedArray<double>)>("echo");
  Kernel<void(SharedArray<int32_t>)> fill_3d = plugin.kernel<void(SharedArray<int32_t>)>("fill_3d");
  Kernel<void(SharedArray<double>)> failing_init =
      plugin.kernel<void(SharedArray<double>)>("failing_init");
};

// Every test ends here: workers stopped and reaped, nothing of this master left in /dev/shm.
void check_nothing_left() {
  if (workers() != std::vector<int>{1}) rmprocs(workers());
  CHECK(test::children_named("dj-worker").empty());
  CHECK(test::shm_entries_of(::getpid()).empty());
}

}  // namespace

TEST_CASE("a SharedArray is zero-filled column-major memory seen through every view", "[shm]") {
  {
    SharedArray<double> s({3, 4});
    REQUIRE(s.length() == 12);
    REQUIRE(s.dims() == std::vector<size_t>{3, 4});
    CHECK(s.ndims() == 2);
    for (double x : s.view()) CHECK(x == 0.0);
    s(2, 1) = 7.5;  // column-major: i + j * rows
    CHECK(s[2 + 1 * 3] == 7.5);
    CHECK(sdata(s)[5] == 7.5);
    CHECK(s.data()[5] == 7.5);
    CHECK(sdata(s).data() == s.view().data());  // views, not copies

    SharedArray<double> copy = s;  // handles share the memory
    copy[0] = 1.0;
    CHECK(s[0] == 1.0);

    SharedArray<int32_t> cube({2, 3, 4});
    cube(1, 2, 3) = 42;
    CHECK(cube[1 + 2 * 2 + 3 * 2 * 3] == 42);
    // No workers: the master is the only participant and owns every index.
    CHECK(procs(s) == std::vector<int>{1});
    CHECK(indexpids(s) == 1);
    CHECK(localindices(s) == IndexRange{0, 12});
  }
  check_nothing_left();
}

TEST_CASE("writes made by workers in a kernel are visible to the master after the call returns", "[shm]") {
  addprocs(2);
  ShmKernels k;
  {
    SharedArray<double> s({6, 5});
    CHECK(procs(s) == std::vector<int>{2, 3});  // default: the local workers
    CHECK(indexpids(s) == 0);                    // the master does not participate
    CHECK(localindices(s).empty());
    std::iota(s.view().begin(), s.view().end(), 0.0);
    // Each worker reads what the master wrote (sum 0 + ... + 29)...
    CHECK(remotecall_fetch(k.sum_all, 2, s) == 435.0);
    CHECK(remotecall_fetch(k.sum_all, 3, s) == 435.0);
    // ...and its own writes land in the master's memory.
    remotecall_wait(k.set_at, 3, s, uint64_t{29}, -1.0);
    CHECK(s[29] == -1.0);
    s[29] = 29.0;
    std::vector<Future<void>> calls;
    for (int pid : procs(s)) calls.push_back(remotecall(k.square_chunk, pid, s));
    for (auto& c : calls) wait(c);
    for (size_t i = 0; i < s.length(); ++i) CHECK(s[i] == double(i * i));

    // The same segment is mapped in every participant: nothing was copied.
    for (int pid : procs(s)) {
      CHECK(test::maps_segment(static_cast<pid_t>(worker_info(pid).os_pid), s.segment_name()));
    }
    // A kernel may return the array: the master gets a handle to the same memory.
    SharedArray<double> back = remotecall_fetch(k.echo, 2, s);
    CHECK(back.data() == s.data());
    CHECK(back.dims() == s.dims());
  }
  check_nothing_left();
}

TEST_CASE("a 3-d SharedArray of int32 written by a worker is column-major on the master", "[shm]") {
  addprocs(1);
  ShmKernels k;
  {
    SharedArray<int32_t> s({3, 4, 2});
    remotecall_wait(k.fill_3d, 2, s);
    for (size_t kk = 0; kk < 2; ++kk)
      for (size_t j = 0; j < 4; ++j)
        for (size_t i = 0; i < 3; ++i) {
          CHECK(s[i + 3 * (j + 4 * kk)] == int32_t(i + 10 * j + 100 * kk));
        }
  }
  check_nothing_left();
}

TEST_CASE("init runs on every participating process over its localindices", "[shm]") {
  addprocs(3);
  ShmKernels k;
  {
    SharedArray<double> s({20}, {}, k.fill_local);
    // Julia's split of 20 over 3: 6, 6, 8.
    for (size_t i = 0; i < 20; ++i) {
      int owner = i < 6 ? 2 : i < 12 ? 3 : 4;
      CHECK(s[i] == owner * 1000.0 + double(i));
    }
    SharedArray<double> with_master({5}, {1, 3}, k.fill_local);
    CHECK(with_master[0] == 1000.0);  // pid 1 runs init on its share too
    CHECK(with_master[4] == 3004.0);
  }
  check_nothing_left();
}

TEST_CASE("an init kernel that throws fails the constructor with its message", "[shm][errors]") {
  addprocs(2);
  ShmKernels k;
  REQUIRE_THROWS_WITH(SharedArray<double>({4}, {}, k.failing_init),
                      Contains("init refused on worker 3"));
  check_nothing_left();
}

TEST_CASE("localindices splits the elements as Julia does among 1, 2, 3 and 4 workers", "[shm]") {
  ShmKernels k;
  for (int n = 1; n <= 4; ++n) {
    addprocs(1);  // now n workers
    REQUIRE(nworkers() == n);
    for (size_t length : {size_t{10}, size_t{3}}) {
      SharedArray<double> s({length});
      REQUIRE(procs(s).size() == size_t(n));
      size_t next = 0;
      for (size_t idx = 1; idx <= size_t(n); ++idx) {
        auto r = remotecall_fetch(k.local_range, procs(s)[idx - 1], s);
        INFO("length " << length << ", " << n << " workers, indexpids " << idx);
        CHECK(r[2] == idx);
        size_t share = length / n;
        if (length < size_t(n)) {
          // Fewer elements than workers: one each for the first ones, none for the rest.
          CHECK(r[0] == (idx <= length ? idx - 1 : 0));
          CHECK(r[1] == (idx <= length ? idx : 0));
        } else {
          CHECK(r[0] == next);  // contiguous and in pid order
          CHECK(r[1] == (idx == size_t(n) ? length : next + share));
          next = r[1];
        }
      }
      if (length >= size_t(n)) CHECK(next == length);  // every index has exactly one owner
    }
  }
  CHECK(split_range(10, 3, 0).empty());
  CHECK(split_range(10, 3, 3) == IndexRange{6, 10});
  check_nothing_left();
}

TEST_CASE("bad shapes, unknown and repeated pids are refused before anything is created", "[shm][errors]") {
  addprocs(1);
  REQUIRE_THROWS_WITH(SharedArray<double>(std::vector<size_t>{}), Contains("1 to 3 dimensions, not 0"));
  REQUIRE_THROWS_WITH(SharedArray<double>({1, 2, 3, 4}), Contains("1 to 3 dimensions, not 4"));
  REQUIRE_THROWS_WITH(SharedArray<double>({size_t{1} << 40, size_t{1} << 40}),
                      Contains("overflows"));
  try {
    SharedArray<double>({4}, {2, 99});
    FAIL("no error for pid 99");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::NotFound);
    CHECK_THAT(e.what(), Contains("no process with pid 99"));
  }
  try {
    SharedArray<double>({4}, {2, 2});
    FAIL("no error for a repeated pid");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::InvalidArgument);
    CHECK_THAT(e.what(), Contains("pid 2 is listed twice"));
  }
  check_nothing_left();
}

TEST_CASE("a SharedArray larger than /dev/shm's free space is refused with both sizes named", "[shm][errors]") {
  addprocs(1);
  try {
    SharedArray<double>({size_t{1} << 22, size_t{1} << 22});  // 128 TiB
    FAIL("no error for 128 TiB");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::ResourceExhausted);
    CHECK_THAT(e.what(), Contains("SharedArray{f64}(4194304x4194304) needs 140737488355328 bytes"));
    CHECK_THAT(e.what(), Contains("but /dev/shm has"));
  }
  // The cluster still works: a small one is fine afterwards.
  SharedArray<double> ok({4});
  CHECK(ok.length() == 4);
  check_nothing_left();
}

TEST_CASE("a worker that is not among the pids cannot use the array and is told which pids can", "[shm][errors]") {
  addprocs(2);
  ShmKernels k;
  {
    SharedArray<double> s({4}, {2});
    try {
      remotecall_fetch(k.sum_all, 3, s);
      FAIL("worker 3 used an array it does not map");
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::RemoteFailure);
      CHECK_THAT(e.what(), Contains("is not mapped on worker 3 (its pids are 2)"));
    }
    CHECK(remotecall_fetch(k.sum_all, 2, s) == 0.0);
  }
  check_nothing_left();
}
