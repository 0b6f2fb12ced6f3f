// The SLURM manager against the one-node SLURM of ../shared/scripts/slurm-local-up: workers as
// a step of their own job or of an allocation, refusals and jobs that never start, and squeue
// showing no job or step left behind.
#include <catch2/catch.hpp>

#include <stdlib.h>

#include "cluster_support.hpp"
#include "dj/dj.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;
using Catch::StartsWith;

namespace {

struct Fixture {
  std::string tag = test::new_tag();
  SlurmOptions options;
  Fixture() {
    test::required_env("SLURM_CONF", "slurm-local-up");
    ::setenv("DJ_TEST_TAG", tag.c_str(), 1);  // srun passes the environment to the tasks.
    options.exename = test::program("dj-worker");
    options.job_name = "dj-test-" + tag;
    options.timeout = std::chrono::milliseconds(30000);
  }
  bool no_job_left() const {
    return test::slurm_jobs_named(options.job_name + "-" + std::to_string(::getpid()) + "-1")
        .empty();
  }
  void require_nothing_left() const {
    REQUIRE(test::eventually([&] { return no_job_left(); }, std::chrono::milliseconds(10000)));
    REQUIRE(test::eventually([&] { return test::processes_tagged(tag).empty(); }));
    REQUIRE(workers() == std::vector<int>{1});
  }
};

}  // namespace

TEST_CASE("addprocs_slurm starts n workers as one SLURM job and rmprocs leaves no job behind",
          "[slurm]") {
  Fixture f;
  auto pids = addprocs_slurm(4, f.options);
  REQUIRE(pids.size() == 4);
  CHECK_FALSE(f.no_job_left());
  auto plugin = everywhere(test::plugin("test_kernels"));
  auto hostname = plugin.kernel<std::string()>("hostname");
  auto add = plugin.kernel<double(double, double)>("add");
  for (int pid : pids) {
    CHECK(remotecall_fetch(hostname, pid) == test::required_env("SLURM_LOCAL_NODE", "slurm-local-up"));
    CHECK(remotecall_fetch(add, pid, 3.0, 3.0) == 6.0);
  }
  CHECK(test::processes_tagged(f.tag).size() >= 4);
  rmprocs(pids);
  f.require_nothing_left();
}

TEST_CASE("inside an allocation the workers run as a step of it and leave the job running",
          "[slurm]") {
  Fixture f;
  auto r = test::run_command("salloc --no-shell -n 4 -J dj-alloc-" + f.tag + " 2>&1");
  REQUIRE(r.status == 0);
  auto at = r.output.find("allocation ");
  REQUIRE(at != std::string::npos);
  std::string job = std::to_string(std::atol(r.output.c_str() + at + 11));
  ::setenv("SLURM_JOB_ID", job.c_str(), 1);
  auto pids = addprocs_slurm(2, f.options);
  CHECK(pids.size() == 2);
  auto steps = test::run_command("squeue -h -s -j " + job + " -o %i");
  CHECK_THAT(steps.output, Contains(job + "."));
  rmprocs(pids);
  REQUIRE(test::eventually([&] {
    return test::run_command("squeue -h -s -j " + job + " -o %i").output.find(job + ".0") ==
           std::string::npos;
  }, std::chrono::milliseconds(10000)));
  CHECK(test::slurm_jobs_named("dj-alloc-" + f.tag).size() == 1);  // The allocation is the user's.
  ::unsetenv("SLURM_JOB_ID");
  test::run_command("scancel " + job);
  REQUIRE(test::eventually([&] { return test::slurm_jobs_named("dj-alloc-" + f.tag).empty(); },
                           std::chrono::milliseconds(10000)));
  f.require_nothing_left();
}

TEST_CASE("a job SLURM refuses fails with InvalidArgument carrying srun's reason",
          "[slurm][errors]") {
  Fixture f;
  f.options.partition = "no_such_partition";
  try {
    addprocs_slurm(2, f.options);
    FAIL("addprocs_slurm did not throw");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::InvalidArgument);
    CHECK_THAT(e.what(), Contains("SLURM refused the job"));
    CHECK_THAT(e.what(), Contains("partition"));
    CHECK_THAT(e.what(), Contains("no worker was added"));
  }
  f.require_nothing_left();
}

TEST_CASE("a job that never starts fails within the timeout and is cancelled", "[slurm][errors]") {
  Fixture f;
  f.options.srun_args = {"--begin=now+3600"};
  f.options.timeout = std::chrono::milliseconds(3000);
  auto start = std::chrono::steady_clock::now();
  try {
    addprocs_slurm(2, f.options);
    FAIL("addprocs_slurm did not throw");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Disconnected);
    CHECK_THAT(e.what(), Contains("did not start its 2 tasks within 3000 ms"));
  }
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
  f.require_nothing_left();
}

TEST_CASE("a master killed with SIGKILL leaves no SLURM job or worker behind", "[slurm]") {
  Fixture f;
  // The master prints its workers' pids and SLURM job and waits; `timeout` then SIGKILLs it.
  auto r = test::run_command("DJ_TEST_TAG=" + f.tag + " timeout -s KILL 5 " +
                             test::program("dj-run") + " --slurm -n 2 " +
                             test::program("test_master") + " hold 0");
  CHECK(r.status == 128 + 9);
  CHECK_THAT(r.output, Contains("worker-os-pids: "));
  CHECK(std::count(r.output.begin(), r.output.end(), ' ') >= 2);
  // The job the workers ran in (other tests running at the same time have jobs of their own).
  auto at = r.output.find("worker-slurm-jobs: ");
  REQUIRE(at != std::string::npos);
  std::string job = r.output.substr(at + 19, r.output.find_first_of(" \n", at + 19) - at - 19);
  CHECK_THAT(job, StartsWith("dj-workers-"));
  // srun's stdin closed with the master: the tasks end, then the step and the job.
  REQUIRE(test::eventually([&] { return test::slurm_jobs_named(job).empty(); },
                           std::chrono::milliseconds(15000)));
  REQUIRE(test::eventually([&] { return test::processes_tagged(f.tag).empty(); }));
}
