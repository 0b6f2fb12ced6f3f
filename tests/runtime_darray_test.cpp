// DArray: layouts, creation (distribute, dfill/dzeros/dones, drand, darray from a kernel),
// reads, map/reduce/mapreduce/sum where the chunks live, lifetime, and the errors.
#include <catch2/catch.hpp>

#include <signal.h>

#include <numeric>

#include "cluster.hpp"
#include "dj/darray.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {
struct Kernels {
  Plugin plugin = everywhere(test::plugin("darray_kernels"));
  Kernel<double(double)> twice = plugin.kernel<double(double)>("twice");
  Kernel<double(double, double)> plus = plugin.kernel<double(double, double)>("plus");
  Kernel<int64_t(double)> fail_on_seven = plugin.kernel<int64_t(double)>("fail_on_seven");
  Kernel<double(Matrix<double>)> trace = plugin.kernel<double(Matrix<double>)>("trace");
  Kernel<std::string(std::string)> label = plugin.kernel<std::string(std::string)>("label");
  Kernel<std::vector<double>(std::vector<IndexRange>)> index_values =
      plugin.kernel<std::vector<double>(std::vector<IndexRange>)>("index_values");
  Kernel<std::vector<double>(std::vector<IndexRange>)> one_short =
      plugin.kernel<std::vector<double>(std::vector<IndexRange>)>("one_short");
  Kernel<int64_t(std::vector<double>)> local_length =
      plugin.kernel<int64_t(std::vector<double>)>("local_length");
};

std::vector<double> iota(size_t n) {
  std::vector<double> v(n);
  std::iota(v.begin(), v.end(), 0.0);
  return v;
}
}  // namespace

TEST_CASE("distribute splits evenly over the workers like Julia and collect gives it back", "[darray]") {
  addprocs(4);
  auto data = iota(10);
  DArray<double> d = distribute(data);
  CHECK(d.procs() == std::vector<int>{2, 3, 4, 5});
  CHECK(d.dims() == std::vector<size_t>{10});
  CHECK(d.localindices(2) == std::vector<IndexRange>{{0, 3}});
  CHECK(d.localindices(3) == std::vector<IndexRange>{{3, 6}});
  CHECK(d.localindices(4) == std::vector<IndexRange>{{6, 8}});
  CHECK(d.localindices(5) == std::vector<IndexRange>{{8, 10}});
  CHECK(d.localindices(1).empty());
  CHECK(procs(d) == d.procs());
  CHECK(localindices(d, 3) == d.localindices(3));
  CHECK(d.collect() == data);
  // Fewer elements than workers: Julia's defaultdist uses fewer chunks (3 = 2 + 1 here).
  DArray<double> small = distribute(iota(3));
  CHECK(small.procs() == std::vector<int>{2, 3});
  CHECK(small.collect() == iota(3));
}

TEST_CASE("a 2-d DArray is cut over both dimensions and stays column-major", "[darray]") {
  addprocs(4);
  std::vector<double> data(6 * 4);
  for (size_t j = 0; j < 4; ++j) {
    for (size_t i = 0; i < 6; ++i) data[i + 6 * j] = static_cast<double>(i + 1000 * j);
  }
  DArray<double> d = distribute(data, {6, 4});
  CHECK(d.dist() == std::vector<size_t>{2, 2});
  CHECK(d.localindices(3) == std::vector<IndexRange>{{3, 6}, {0, 2}});
  CHECK(d.collect() == data);
  CHECK(d.at({4, 3}) == 3004.0);
  CHECK(d[5 + 6 * 2] == 2005.0);
  // Explicit distribution: 4 chunks along the columns.
  DArray<double> cols = distribute(data, {6, 4}, {}, {1, 4});
  CHECK(cols.localindices(5) == std::vector<IndexRange>{{0, 6}, {3, 4}});
  CHECK(cols.collect() == data);
}

TEST_CASE("a DArray built by a kernel on each worker holds what each chunk computed", "[darray]") {
  addprocs(2);
  Kernels k;
  DArray<double> d = darray(k.index_values, {5, 3});
  auto all = d.collect();
  for (size_t j = 0; j < 3; ++j) {
    for (size_t i = 0; i < 5; ++i) CHECK(all[i + 5 * j] == static_cast<double>(i + 1000 * j));
  }
  REQUIRE_THROWS_WITH(darray(k.one_short, {8}),
                      Contains("one_short") && Contains("returned 3 elements") &&
                          Contains("chunk 0 (indices [0, 4)) on worker 2"));
}

TEST_CASE("dzeros, dones, dfill and drand are made on the workers", "[darray]") {
  addprocs(2);
  auto& cluster = detail::Cluster::instance();
  uint64_t sent = detail::Cluster::payload_bytes_sent();
  DArray<double> z = dzeros({1 << 20});
  CHECK(detail::Cluster::payload_bytes_sent() - sent < 4096);  // 8 MiB made remotely
  CHECK(sum(z) == 0.0);
  CHECK(sum(dones<int32_t>({10, 10})) == 100);
  CHECK(dfill(std::string("ab"), {3}).collect() == std::vector<std::string>{"ab", "ab", "ab"});
  DArray<double> r = drand({100000});
  double total = sum(r);
  CHECK(total > 0.45 * 100000);
  CHECK(total < 0.55 * 100000);
  auto values = r.read({0, 1000});
  CHECK(std::all_of(values.begin(), values.end(), [](double x) { return x >= 0 && x < 1; }));
  CHECK(values != drand({1000}).collect());  // each call draws new numbers
  (void)cluster;
}

TEST_CASE("element and range reads fetch only what they need", "[darray]") {
  addprocs(2);
  DArray<double> d = distribute(iota(1 << 20));
  auto& cluster = detail::Cluster::instance();
  uint64_t received = cluster.payload_bytes_received();
  CHECK(d[123456] == 123456.0);
  auto all = iota(524300);
  CHECK(d.read({524280, 524300}) == std::vector<double>(all.begin() + 524280, all.end()));
  CHECK(cluster.payload_bytes_received() - received < 1024);
  REQUIRE_THROWS_WITH(d[1 << 20], Contains("outside"));
  REQUIRE_THROWS_WITH(d.read({10, 1 << 21}), Contains("outside"));
}

TEST_CASE("map, reduce, mapreduce and sum run where the chunks live", "[darray]") {
  addprocs(3);
  Kernels k;
  DArray<double> d = distribute(iota(1000));
  auto& cluster = detail::Cluster::instance();
  uint64_t received = cluster.payload_bytes_received();
  DArray<double> doubled = map(k.twice, d);
  CHECK(doubled.procs() == d.procs());
  CHECK(cluster.payload_bytes_received() - received < 1024);  // no chunk came back
  CHECK(reduce(k.plus, doubled) == 999000.0);
  CHECK(mapreduce(k.twice, k.plus, d) == 999000.0);
  CHECK(sum(d) == 499500.0);
  CHECK(doubled.collect()[999] == 1998.0);
  // Vectors of objects: matrices and strings.
  std::vector<Matrix<double>> mats;
  for (int i = 0; i < 10; ++i) {
    Matrix<double> m(3, 3);
    for (size_t j = 0; j < 3; ++j) m(j, j) = i;
    mats.push_back(m);
  }
  DArray<Matrix<double>> dm = distribute(mats);
  auto traces = map(k.trace, dm).collect();
  for (int i = 0; i < 10; ++i) CHECK(traces[static_cast<size_t>(i)] == 3.0 * i);
  CHECK(map(k.label, distribute(std::vector<std::string>{"a", "bc", ""})).collect() ==
        std::vector<std::string>{"<a>", "<bc>", "<>"});
}

TEST_CASE("a kernel works on its worker's chunk in place through localpart", "[darray]") {
  addprocs(2);
  Kernels k;
  DArray<double> d = distribute(iota(1 << 20));
  auto& cluster = detail::Cluster::instance();
  uint64_t sent = detail::Cluster::payload_bytes_sent();
  uint64_t received = cluster.payload_bytes_received();
  for (int p : d.procs()) {
    CHECK(remotecall_fetch(k.local_length, p, d.localpart(p)) ==
          static_cast<int64_t>(d.localindices(p)[0].size()));
  }
  CHECK(detail::Cluster::payload_bytes_sent() - sent < 1024);
  CHECK(cluster.payload_bytes_received() - received < 1024);
  REQUIRE_THROWS_WITH(d.localpart(1), Contains("holds no chunk"));
}

TEST_CASE("an element that fails in map names the chunk, the element and the kernel", "[darray][errors]") {
  addprocs(2);
  Kernels k;
  DArray<double> d = distribute(iota(10));
  try {
    map(k.fail_on_seven, d);
    FAIL("map did not fail");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::RemoteFailure);
    CHECK_THAT(e.what(), Contains("chunk 1 (indices [5, 10)) on worker 3") &&
                             Contains("element 2") && Contains("fail_on_seven") &&
                             Contains("seven is not allowed"));
  }
}

TEST_CASE("bad shapes, pids and distributions are refused with a clear error", "[darray][errors]") {
  addprocs(2);
  REQUIRE_THROWS_WITH(distribute(iota(10), {3, 3}), Contains("10 elements do not fill"));
  REQUIRE_THROWS_WITH(distribute(iota(10), {10}, {2, 9}), Contains("pid 9 is not a live"));
  REQUIRE_THROWS_WITH(distribute(iota(10), {10}, {2, 2}), Contains("listed twice"));
  REQUIRE_THROWS_WITH(distribute(iota(10), {10}, {}, {3}), Contains("3 chunks for 2 processes"));
  REQUIRE_THROWS_WITH(distribute(iota(10), {10}, {}, {1, 1}), Contains("1 dimensions"));
  REQUIRE_THROWS_WITH(distribute(iota(10), {10}, {}, {0}), Contains("0 pieces"));
  REQUIRE_THROWS_WITH(dzeros({}), Contains("at least one dimension"));
  REQUIRE_THROWS_WITH(DArray<double>().collect(), Contains("empty DArray"));
  Kernels k;
  REQUIRE_THROWS_WITH(reduce(k.plus, distribute(std::vector<double>{})), Contains("empty DArray"));
}

TEST_CASE("a DArray whose worker died fails naming the lost chunk, and the rest goes on", "[darray][errors]") {
  addprocs(3);
  DArray<double> d = distribute(iota(9));
  ::kill(static_cast<pid_t>(worker_info(3).os_pid), SIGKILL);
  REQUIRE(test::eventually([] { return workers().size() == 2; }));
  for (auto attempt : {0, 1}) {
    try {
      if (attempt == 0) (void)sum(d);
      else (void)d.collect();
      FAIL("an operation on a lost chunk succeeded");
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::Disconnected);
      CHECK_THAT(e.what(), Contains("chunk 1 (indices [3, 6)) on worker 3"));
    }
  }
  CHECK(d[0] == 0.0);  // chunks on live workers still answer
  CHECK(sum(distribute(iota(4))) == 6.0);
}

TEST_CASE("close and dropping the last handle free every chunk on its worker", "[darray]") {
  addprocs(2);
  auto stored = [] {
    uint64_t bytes = 0;
    for (int p : workers()) bytes += worker_stats(p).stored_bytes;
    return bytes;
  };
  uint64_t before = stored();
  {
    DArray<double> d = dzeros({1 << 20});
    CHECK(stored() >= before + (8u << 20));
    DArray<double> copy = d;
    d.close();
    REQUIRE_THROWS_WITH(copy.collect(), Contains("after close"));
  }
  CHECK(test::eventually([&] { return stored() == before; }));
  {
    DArray<double> d = dones({1 << 20});
    CHECK(stored() >= before + (8u << 20));
  }
  CHECK(test::eventually([&] { return stored() == before; }));
}
