// One SSH connection to one host, and the workers started through it. Private to managers/:
// libssh types stay in ssh_host.cpp.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dj/dj.hpp"

namespace dj::detail {

class SshHost;

// What to start on a host and how to log in; the worker command line is built from it.
struct SshLaunchPlan {
  Machine machine;
  SshOptions options;
  std::string exename;  // Resolved: options.exename or the master's own dj-worker path.
};

// Connects to plan.machine (config file, host key check, key login), starts its workers
// (plan.machine.count of them, or one per core for kAutoCount) and returns them, each
// printing "dj-pid N" before exec (so os_pid() is known) and owning a share of the connection.
// Throws: dj::Error whose message starts with the host's name and says what failed.
// Nothing is left running on the host when it throws. Blocks: up to connect_timeout + timeout.
std::vector<std::unique_ptr<LaunchedWorker>> launch_on_host(const SshLaunchPlan& plan);

}  // namespace dj::detail
