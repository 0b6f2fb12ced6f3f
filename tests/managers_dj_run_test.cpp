// dj-run --hosts, --machine-file and --slurm: an unchanged master program gets its workers on
// SSH hosts or SLURM, alone or together with -p N.
#include <catch2/catch.hpp>

#include <fstream>

#include "cluster_support.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {
std::string dj_run() { return test::program("dj-run"); }
std::string master() { return test::program("test_master"); }
}  // namespace

TEST_CASE("dj-run --hosts starts the listed SSH workers and composes with -p", "[dj-run][ssh]") {
  test::ssh_env("DJ_SSH_CONFIG");  // dj-run's runtime reads $DJ_SSH_CONFIG.
  auto r = test::run_command(dj_run() + " -p 1 --hosts dj-host1,2*dj-host2 " + master() +
                             " nworkers");
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Contains("nworkers=4 workers=2,3,4,5,"));
  REQUIRE(test::eventually([] { return test::open_ssh_connections() == 0; }));
}

TEST_CASE("dj-run --machine-file starts the workers the file lists", "[dj-run][ssh]") {
  test::ssh_env("DJ_SSH_CONFIG");
  test::TempDir dir;
  std::ofstream(dir.path() + "/machines") << "2*dj-host3\ndj-host1\n";
  auto r = test::run_command(dj_run() + " --machine-file " + dir.path() + "/machines " +
                             master() + " nworkers");
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Contains("nworkers=3 workers=2,3,4,"));
}

TEST_CASE("dj-run --slurm -n N passes srun options after -- and starts N workers",
          "[dj-run][slurm]") {
  test::required_env("SLURM_CONF", "slurm-local-up");
  auto r = test::run_command(dj_run() + " --slurm -n 3 -- --time=5 --partition=" +
                             test::required_env("SLURM_LOCAL_PARTITION", "slurm-local-up") +
                             " " + master() + " nworkers");
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Contains("nworkers=3 workers=2,3,4,"));
  auto bad = test::run_command(dj_run() + " --slurm " + master() + " nworkers");
  CHECK(bad.status == 2);
  CHECK_THAT(bad.output, Contains("--slurm needs a worker count"));
}

TEST_CASE("dj-run reports a host it cannot use naming it and fails", "[dj-run][ssh][errors]") {
  test::ssh_env("DJ_SSH_CONFIG");
  auto r = test::run_command(dj_run() + " --hosts dj-host1,dj-nosuchhost " + master() +
                             " nworkers");
  CHECK(r.status != 0);
  CHECK_THAT(r.output, Contains("dj-nosuchhost"));
  CHECK_THAT(r.output, Contains("no worker was added"));
}
