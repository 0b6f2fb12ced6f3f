// Master death (issue 8, item 2): a master SIGKILLed in the middle of heavy work on local, SSH
// and SLURM workers leaves nothing: every worker process, SSH session, job and step is gone
// within a bounded time, and so is every shared-memory segment.
#include <catch2/catch.hpp>

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sstream>

#include "cluster_support.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {

struct Heavy {
  pid_t master = -1;
  std::string segment;          // "dj-<master>-<n>"
  std::vector<pid_t> os_pids;   // as the workers' hosts number them
};

// Starts test_master heavy with the workers asked for, tagged `tag`, and reads its line.
Heavy start_heavy(const std::string& tag, int local, const std::string& hosts, int slurm) {
  ::setenv("DJ_TEST_TAG", tag.c_str(), 1);
  auto m = test::start_with_stdout(test::program("test_master") + " heavy " +
                                   test::plugin("chaos_kernels") + " " + std::to_string(local) +
                                   " " + hosts + " " + std::to_string(slurm));
  ::unsetenv("DJ_TEST_TAG");
  std::string text = test::read_until(m.stdout_fd, "\n");
  ::close(m.stdout_fd);
  INFO("test_master said: " << text);
  REQUIRE_THAT(text, Contains("segment=/dj-") && Contains("worker-os-pids:"));
  Heavy h;
  h.master = m.pid;
  h.segment = text.substr(9, text.find(' ') - 9);
  std::istringstream in(text.substr(text.find(':') + 1));
  for (long p; in >> p;) h.os_pids.push_back(static_cast<pid_t>(p));
  return h;
}

// SIGKILLs the master at the end of the scope if a failed REQUIRE left it running.
struct KillOnExit {
  pid_t pid;
  ~KillOnExit() {
    if (::waitpid(pid, nullptr, WNOHANG) == 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

bool all_dead(const std::vector<pid_t>& pids) {
  for (pid_t p : pids) {
    if (test::process_alive(p)) return false;
  }
  return true;
}

bool segment_gone(const Heavy& h) {
  return test::shm_entries_of(h.master).empty() &&
         ::access(("/dev/shm" + h.segment).c_str(), F_OK) != 0;
}

}  // namespace

TEST_CASE("a master SIGKILLed during heavy work on local workers leaves no worker or segment "
          "within 2 s", "[faults][master_death]") {
  std::string tag = test::new_tag();
  Heavy h = start_heavy(tag, 4, "-", 0);
  KillOnExit guard{h.master};
  REQUIRE(h.os_pids.size() == 4);
  REQUIRE(test::processes_tagged(tag).size() == 5);  // the master and its 4 workers
  REQUIRE(::kill(h.master, SIGKILL) == 0);
  ::waitpid(h.master, nullptr, 0);
  CHECK(test::eventually([&] { return all_dead(h.os_pids); }, std::chrono::milliseconds(2000)));
  CHECK(test::eventually([&] { return test::processes_tagged(tag).empty(); },
                         std::chrono::milliseconds(2000)));
  CHECK(segment_gone(h));
}

TEST_CASE("a master SIGKILLed during heavy work on local, SSH and SLURM workers leaves no "
          "worker, SSH session, job step or segment", "[faults][master_death][ssh][slurm]") {
  test::ssh_env("DJ_SSH_CONFIG");
  test::required_env("SLURM_CONF", "slurm-local-up");
  std::string tag = test::new_tag();
  Heavy h = start_heavy(tag, 2, "dj-host1,2*dj-host2", 2);
  KillOnExit guard{h.master};
  REQUIRE(h.os_pids.size() == 7);
  std::vector<pid_t> tagged = test::processes_tagged(tag);
  REQUIRE(tagged.size() >= 8);  // the master, 7 workers (and SLURM's task wrapper shells)
  std::vector<pid_t> sessions = test::ssh_sessions_above(tagged);
  REQUIRE(sessions.size() >= 2);  // one session per host at least
  std::string job = "dj-death-" + tag + "-" + std::to_string(h.master) + "-1";
  REQUIRE(test::slurm_steps_named(job).size() >= 1);

  REQUIRE(::kill(h.master, SIGKILL) == 0);
  ::waitpid(h.master, nullptr, 0);
  auto start = std::chrono::steady_clock::now();
  CHECK(test::eventually([&] { return test::processes_tagged(tag).empty(); },
                         std::chrono::milliseconds(15000)));
  CHECK(test::eventually([&] { return all_dead(sessions); }, std::chrono::milliseconds(15000)));
  CHECK(test::eventually([&] { return test::slurm_steps_named(job).empty(); },
                         std::chrono::milliseconds(15000)));
  CHECK(test::eventually([&] { return test::slurm_jobs_named(job).empty(); },
                         std::chrono::milliseconds(15000)));
  std::printf("local, SSH and SLURM workers, sessions and job gone %.2f s after the master's "
              "SIGKILL\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  CHECK(segment_gone(h));
}
