// Helpers for the SSH and SLURM manager tests: the test hosts' settings (from ssh-hosts-up and
// slurm-local-up), a per-test tag to find what a test started, and leak checks.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "dj/dj.hpp"

namespace dj::test {

// SSH options for the test hosts, with a fresh tag in the workers' environment, and the
// leak check every SSH test ends with.
struct SshFixture {
  explicit SshFixture(std::chrono::milliseconds connect_timeout = std::chrono::milliseconds(5000));
  // Nothing of this test runs anywhere, no SSH session stays open, no worker is left.
  void require_nothing_left() const;
  std::string tag;
  SshOptions options;
};

// $name, or a failed test saying which script to run (tests never skip).
std::string required_env(const std::string& name, const std::string& script);
// Settings of ../shared/scripts/ssh-hosts-up ($DJ_SSH_CONFIG, $DJ_SSH_MASTER_ADDR, ...).
std::string ssh_env(const std::string& name);
// A fresh random tag, put in every worker's environment as DJ_TEST_TAG.
std::string new_tag();
// Pids of live processes (on this machine or any test host: their pid namespaces are visible
// from here) whose environment holds DJ_TEST_TAG=tag.
std::vector<pid_t> processes_tagged(const std::string& tag);
// Established TCP connections of this process to port 22 (open SSH sessions).
int open_ssh_connections();
// Kills every process of test host `host` except its sshd listener: all sessions and workers
// die at once, as when the host goes away. Returns how many were killed.
int kill_host_sessions(const std::string& host);
// The SSH session processes (sshd, not the host's listener) above each of `pids`.
std::vector<pid_t> ssh_sessions_above(const std::vector<pid_t>& pids);
// Lines of `squeue -h -o "%i %j" -n NAME` (jobs) or `squeue -h -s -o "%i %j"` filtered (steps).
std::vector<std::string> slurm_jobs_named(const std::string& job_name);
std::vector<std::string> slurm_steps_named(const std::string& job_name);

}  // namespace dj::test
