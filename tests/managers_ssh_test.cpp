// The SSH manager against real sshd test hosts (../shared/scripts/ssh-hosts-up 3): hosts,
// counts, machine files, options, and each failure, all checked to leave nothing behind.
#include <catch2/catch.hpp>

#include <fstream>

#include "cluster_support.hpp"
#include "dj/dj.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {

struct Fixture : test::SshFixture {
  Fixture() : test::SshFixture(std::chrono::milliseconds(5000)) {}
};

std::vector<std::string> hostnames_of(const std::vector<int>& pids) {
  auto plugin = everywhere(test::plugin("test_kernels"));
  auto hostname = plugin.kernel<std::string()>("hostname");
  std::vector<std::string> names;
  for (int pid : pids) names.push_back(remotecall_fetch(hostname, pid));
  return names;
}

}  // namespace

TEST_CASE("addprocs on three SSH hosts starts one worker on each reporting its own host name",
          "[ssh]") {
  Fixture f;
  auto pids = addprocs({"dj-host1", "dj-host2", "dj-host3"}, f.options);
  REQUIRE(pids.size() == 3);
  CHECK(hostnames_of(pids) == std::vector<std::string>{"dj-host1", "dj-host2", "dj-host3"});
  CHECK(worker_info(pids[1]).host == "dj-host2");
  CHECK_THAT(worker_info(pids[1]).address, Contains(test::ssh_env("DJ_SSH_ADDRS").substr(0, 8)));
  CHECK(test::processes_tagged(f.tag).size() == 3);
  auto add = everywhere(test::plugin("test_kernels")).kernel<double(double, double)>("add");
  CHECK(remotecall_fetch(add, pids[2], 3.0, 3.0) == 6.0);
  rmprocs(pids);
  f.require_nothing_left();
}

TEST_CASE("per-host counts start that many workers and auto one per core of the host",
          "[ssh]") {
  Fixture f;
  int cores = std::atoi(test::run_command("nproc").output.c_str());
  auto pids = addprocs({{"dj-host1", 2}, {"dj-host2", kAutoCount}}, f.options);
  auto names = hostnames_of(pids);
  REQUIRE(pids.size() == static_cast<size_t>(2 + cores));
  CHECK(std::count(names.begin(), names.end(), "dj-host1") == 2);
  CHECK(std::count(names.begin(), names.end(), "dj-host2") == cores);
  rmprocs(pids);
  f.require_nothing_left();
}

TEST_CASE("a machine file with counts user port and comments starts the listed workers",
          "[ssh]") {
  Fixture f;
  test::TempDir dir;
  std::string path = dir.path() + "/machines";
  std::ofstream(path) << "# two on the first host\n2*" << test::ssh_env("DJ_SSH_USER")
                      << "@dj-host1:" << test::ssh_env("DJ_SSH_PORT")
                      << "\n\n  dj-host3   # and one here\n";
  auto machines = read_machine_file(path);
  REQUIRE(machines.size() == 2);
  CHECK(machines[0].count == 2);
  CHECK(machines[0].user == test::ssh_env("DJ_SSH_USER"));
  auto pids = addprocs(machines, f.options);
  CHECK(hostnames_of(pids) == std::vector<std::string>{"dj-host1", "dj-host1", "dj-host3"});
  rmprocs(pids);
  f.require_nothing_left();
}

TEST_CASE("machine specs parse Distributed.jl's format and reject malformed ones by name",
          "[ssh][machine_file]") {
  Machine m("3*alice@node7:2222 10.1.2.3:9000");
  CHECK(m.count == 3);
  CHECK(m.user == "alice");
  CHECK(m.host == "node7");
  CHECK(m.port == 2222);
  CHECK(m.bind_addr == "10.1.2.3");
  CHECK(m.bind_port == 9000);
  CHECK(Machine("auto*node1").count == kAutoCount);
  CHECK(Machine("node1").count == 1);
  for (const char* bad : {"x*node", "0*node", "node:99999", "@node", "a b c", ""}) {
    DYNAMIC_SECTION("spec '" << bad << "'") {
      REQUIRE_THROWS_AS(Machine(bad), Error);
      REQUIRE_THROWS_WITH(Machine(bad), Contains("machine spec '"));
      try {
        Machine{bad};
      } catch (const Error& e) {
        CHECK(e.kind() == ErrorKind::InvalidArgument);
      }
    }
  }
  test::TempDir dir;
  std::ofstream(dir.path() + "/bad") << "node1\n2*node2 extra field\n";
  REQUIRE_THROWS_WITH(read_machine_file(dir.path() + "/bad"), Contains("/bad:2:"));
  REQUIRE_THROWS_WITH(read_machine_file(dir.path() + "/none"), Contains("cannot be read"));
}

TEST_CASE("the dir and env options set each SSH worker's working directory and environment",
          "[ssh]") {
  Fixture f;
  f.options.dir = "/tmp";
  f.options.env.push_back({"DJ_GREETING", "it's here"});
  auto pids = addprocs({"dj-host2"}, f.options);
  auto plugin = everywhere(test::plugin("test_kernels"));
  CHECK(remotecall_fetch(plugin.kernel<std::string()>("working_dir"), pids[0]) == "/tmp");
  CHECK(remotecall_fetch(plugin.kernel<std::string(std::string)>("env_value"), pids[0],
                         std::string("DJ_GREETING")) == "it's here");
  rmprocs(pids);
  f.require_nothing_left();
}

TEST_CASE("with tunnel the master reaches workers that listen only on their host's loopback",
          "[ssh]") {
  Fixture f;
  f.options.tunnel = true;
  auto pids = addprocs({"dj-host1", "dj-host3"}, f.options);
  CHECK_THAT(worker_info(pids[0]).address, Contains("127.0.0.1:"));
  CHECK(hostnames_of(pids) == std::vector<std::string>{"dj-host1", "dj-host3"});
  auto add = everywhere(test::plugin("test_kernels")).kernel<double(double, double)>("add");
  for (int i = 0; i < 50; ++i) CHECK(remotecall_fetch(add, pids[1], 1.0 * i, 1.0) == i + 1.0);
  rmprocs(pids);
  f.require_nothing_left();
}

TEST_CASE("max_parallel limits concurrent connections yet starts every host and must be >= 1",
          "[ssh]") {
  Fixture f;
  f.options.max_parallel = 1;
  auto pids = addprocs({"dj-host1", "dj-host2", "dj-host3"}, f.options);
  CHECK(pids.size() == 3);
  rmprocs(pids);
  f.require_nothing_left();
  f.options.max_parallel = 0;
  REQUIRE_THROWS_WITH(addprocs({"dj-host1"}, f.options), Contains("max_parallel"));
}
