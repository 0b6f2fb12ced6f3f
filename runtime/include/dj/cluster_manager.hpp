// dj::ClusterManager: how worker processes are started, watched and stopped, whatever runs
// them (a local fork, an SSH channel, a SLURM step). Write one to run workers on an engine dj
// does not know, and pass it to dj::addprocs(manager, n).
//
// The protocol every manager follows (dj does steps 2-4, the manager only step 1):
//   1. launch(n) starts n `dj-worker` processes and hands back their stdio as file
//      descriptors (pipes or socketpairs: dj epolls them, so they must be real fds).
//      Remote workers are started with `dj-worker --bind-toward MASTER_ADDR` so they listen
//      on the address that routes to the master (never all interfaces).
//   2. dj writes the cluster cookie and a newline to the worker's stdin;
//   3. the worker prints "dj-worker listening on HOST:PORT unix:@NAME host:IDENTITY" as its
//      first stdout line;
//   4. dj connects to HOST:PORT (or the worker's open_connection(), e.g. an SSH tunnel) and
//      authenticates with the cookie.
// Every later stdout/stderr line is shown on the master as "From worker N:". When the master
// ends, the worker's stdin closes and its connection drops; either makes it exit.
// Events: the LaunchedWorker is the manager's handle for the worker's whole life. dj calls
// wait_for() when the worker should end (rmprocs), kill() when it must (timeout, failure,
// master exit), exit_reason() when it went away, and destroys it when the worker is retired.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dj {

// One launched worker process, as its manager sees it. Owns the process: the destructor
// terminates it (SIGKILL or the manager's equivalent) if it still runs, and reaps it.
// Thread-safety: dj calls it from one thread at a time.
class LaunchedWorker {
 public:
  virtual ~LaunchedWorker() = default;
  // The worker's stdio, owned by this object (-1 once closed).
  virtual int stdin_fd() const = 0;
  virtual int stdout_fd() const = 0;
  virtual int stderr_fd() const = 0;
  // Closes stdin: the worker exits soon after (its master is "gone").
  virtual void close_stdin() = 0;
  // Process id on its host, and the host's name ("" / 0 when the manager cannot tell).
  virtual long os_pid() const = 0;
  virtual std::string host() const = 0;
  // Waits up to `timeout` for the process to end. Returns true once it has ended and was
  // reaped. Blocks: up to `timeout`.
  virtual bool wait_for(std::chrono::milliseconds timeout) = 0;
  // Forcibly stops the process (SIGKILL locally). Never throws.
  virtual void kill() noexcept = 0;
  // "exited with status 3", "killed by signal 9", "ssh connection to node2 lost: ...", or ""
  // while running.
  virtual std::string exit_reason() const = 0;
  // How dj reaches the worker that printed HOST:PORT: returns a connected stream socket that
  // dj then owns, or -1 to let dj connect to HOST:PORT itself (the default). The SSH manager's
  // `tunnel` option returns a socket forwarded through the SSH connection.
  // Throws: dj::Error(Disconnected) naming the host when the connection cannot be made.
  virtual int open_connection(const std::string& host, uint16_t port,
                              std::chrono::milliseconds timeout) {
    (void)host, (void)port, (void)timeout;
    return -1;
  }
};

// Starts workers. dj's own: local processes, SSH hosts (libssh) and SLURM (srun).
class ClusterManager {
 public:
  virtual ~ClusterManager() = default;
  // Starts `count` workers and returns them (their stdout has not been read yet). The
  // returned objects may outlive the manager.
  // Throws: dj::Error naming the cause (and host); on failure nothing it started is left
  // running. Blocks: until every process is started (not until it is ready).
  virtual std::vector<std::unique_ptr<LaunchedWorker>> launch(int count) = 0;
  // For messages: "local", "ssh dj-host1, dj-host2", "slurm job 42".
  virtual std::string describe() const = 0;
};

}  // namespace dj
