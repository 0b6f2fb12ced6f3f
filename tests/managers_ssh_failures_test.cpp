// Every SSH failure the manager must report: unreachable host, refused login, unknown or
// changed host key, missing exename, a host going away. Each names host and cause and leaves
// no worker process or SSH session behind.
#include <catch2/catch.hpp>

#include <stdlib.h>

#include <fstream>

#include "cluster_support.hpp"
#include "dj/dj.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {

struct Fixture : test::SshFixture {
  Fixture() : test::SshFixture(std::chrono::milliseconds(2000)) {}
};

Error addprocs_error(const std::vector<Machine>& machines, const SshOptions& options) {
  try {
    addprocs(machines, options);
  } catch (const Error& e) {
    return e;
  }
  FAIL("addprocs did not throw");
  return Error(ErrorKind::Internal, "");
}

// The first line of known_hosts whose names include `host`.
std::string known_hosts_line(const std::string& host) {
  std::ifstream in(test::ssh_env("DJ_SSH_KNOWN_HOSTS"));
  for (std::string line; std::getline(in, line);) {
    if (line.find(host + " ") != std::string::npos) return line;
  }
  FAIL("no known_hosts line for " << host);
  return "";
}

}  // namespace

TEST_CASE("an unreachable host fails within the connect timeout naming it and the other "
          "hosts' workers are stopped", "[ssh][errors]") {
  Fixture f;
  // In the test hosts' subnet, where no host answers.
  std::string subnet = test::ssh_env("DJ_SSH_MASTER_ADDR");
  std::string nobody = subnet.substr(0, subnet.rfind('.')) + ".99";
  auto start = std::chrono::steady_clock::now();
  Error e = addprocs_error({"dj-host1", nobody}, f.options);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(15));
  CHECK(e.kind() == ErrorKind::Disconnected);
  CHECK_THAT(e.what(), Contains("1 of 2 SSH hosts failed"));
  CHECK_THAT(e.what(), Contains(nobody + ": cannot connect"));
  CHECK_THAT(e.what(), Contains("no worker was added"));
  f.require_nothing_left();
}

TEST_CASE("a login refused for every key names the host and the methods it allows",
          "[ssh][errors]") {
  Fixture f;
  test::TempDir dir;
  REQUIRE(test::run_command("ssh-keygen -q -t ed25519 -N '' -f " + dir.path() + "/stranger")
              .status == 0);
  // A config of our own: the shared one names the authorized key for every host.
  std::ofstream(dir.path() + "/config")
      << "Host dj-host1\n  HostName " << test::ssh_env("DJ_SSH_ADDRS").substr(0, test::ssh_env("DJ_SSH_ADDRS").find(' '))
      << "\n  Port " << test::ssh_env("DJ_SSH_PORT") << "\n  User " << test::ssh_env("DJ_SSH_USER")
      << "\n  UserKnownHostsFile " << test::ssh_env("DJ_SSH_KNOWN_HOSTS") << "\n";
  f.options.ssh_config = dir.path() + "/config";
  f.options.identity_file = dir.path() + "/stranger";
  ::unsetenv("SSH_AUTH_SOCK");
  ::setenv("HOME", dir.path().c_str(), 1);  // No ~/.ssh/id_* of the user running the tests.
  Error e = addprocs_error({"dj-host1"}, f.options);
  CHECK(e.kind() == ErrorKind::InvalidArgument);
  CHECK_THAT(e.what(), Contains("dj-host1: login to"));
  CHECK_THAT(e.what(), Contains("refused"));
  CHECK_THAT(e.what(), Contains("publickey"));
  f.require_nothing_left();
}

TEST_CASE("an unknown host key is refused by default and accepted without strict checking",
          "[ssh][errors]") {
  Fixture f;
  test::TempDir dir;
  std::ofstream(dir.path() + "/known_hosts") << "";
  f.options.known_hosts = dir.path() + "/known_hosts";
  Error e = addprocs_error({"dj-host2"}, f.options);
  CHECK(e.kind() == ErrorKind::InvalidArgument);
  CHECK_THAT(e.what(), Contains("dj-host2: host key of"));
  CHECK_THAT(e.what(), Contains("is unknown"));
  f.require_nothing_left();

  f.options.strict_host_key_checking = false;
  auto pids = addprocs({"dj-host2"}, f.options);
  CHECK(pids.size() == 1);
  rmprocs(pids);
  f.require_nothing_left();
}

TEST_CASE("a changed host key is refused even without strict checking", "[ssh][errors]") {
  Fixture f;
  test::TempDir dir;
  // dj-host1's names with dj-host2's key: what a man in the middle would present.
  std::string host2 = known_hosts_line("dj-host2");
  std::string key = host2.substr(host2.find(' '));
  std::string addr1 = test::ssh_env("DJ_SSH_ADDRS").substr(0, test::ssh_env("DJ_SSH_ADDRS").find(' '));
  std::ofstream(dir.path() + "/known_hosts") << addr1 << ",dj-host1" << key << "\n";
  f.options.known_hosts = dir.path() + "/known_hosts";
  for (bool strict : {true, false}) {
    f.options.strict_host_key_checking = strict;
    Error e = addprocs_error({"dj-host1"}, f.options);
    CHECK(e.kind() == ErrorKind::InvalidArgument);
    CHECK_THAT(e.what(), Contains("dj-host1: host key of"));
    CHECK_THAT(e.what(), Contains("CHANGED"));
  }
  f.require_nothing_left();
}

TEST_CASE("an exename missing on a host is NotFound naming the host and the path and no "
          "worker of the call survives", "[ssh][errors]") {
  Fixture f;
  f.options.exename = "/nonexistent/dj-worker";
  Error e = addprocs_error({"dj-host1", "dj-host2"}, f.options);
  CHECK(e.kind() == ErrorKind::NotFound);
  CHECK_THAT(e.what(), Contains("2 of 2 SSH hosts failed"));
  CHECK_THAT(e.what(), Contains("dj-host1: the worker could not start (exited with status 127)"));
  CHECK_THAT(e.what(), Contains("/nonexistent/dj-worker is missing or not executable on dj-host2"));
  f.require_nothing_left();
}

TEST_CASE("a host that goes away while workers run has its workers reported dead and the "
          "others go on", "[ssh][errors][host_down]") {
  Fixture f;
  auto pids = addprocs({"dj-host1", "2*dj-host3"}, f.options);
  auto plugin = everywhere(test::plugin("test_kernels"));
  auto add = plugin.kernel<double(double, double)>("add");
  auto slow = plugin.kernel<int32_t(int32_t)>("sleep_ms");
  auto pending = remotecall(slow, pids[1], 60000);
  REQUIRE(test::kill_host_sessions("dj-host3") >= 2);
  REQUIRE(test::eventually([&] { return workers() == std::vector<int>{pids[0]}; },
                           std::chrono::milliseconds(10000)));
  REQUIRE_THROWS_AS(fetch(pending), Error);
  try {
    remotecall_fetch(add, pids[2], 1.0, 1.0);
    FAIL("a call to a worker of the lost host succeeded");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Disconnected);
    CHECK_THAT(e.what(), Contains("worker " + std::to_string(pids[2])));
    CHECK_THAT(e.what(), Contains("dj-host3"));
  }
  CHECK(remotecall_fetch(add, pids[0], 2.0, 2.0) == 4.0);
  rmprocs(pids[0]);
  f.require_nothing_left();
}
