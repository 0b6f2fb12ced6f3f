// ClusterManager: how worker processes are started, watched and stopped, whatever runs them
// (a local fork, an SSH session, a SLURM step). dj talks to a launched worker only through its
// standard streams until it connects:
//   1. dj writes the cluster cookie and a newline to the worker's stdin;
//   2. the worker prints "dj-worker listening on HOST:PORT" as its first stdout line;
//   3. dj connects to HOST:PORT and authenticates with the cookie.
// Every later stdout/stderr line is shown on the master as "From worker N:". When the master
// ends, the worker's stdin closes and its connection drops; either makes it exit.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace dj {

// One launched worker process, as its manager sees it. Owns the process: the destructor
// terminates it (SIGKILL or the manager's equivalent) if it still runs, and reaps it.
class LaunchedWorker {
 public:
  virtual ~LaunchedWorker() = default;
  // The worker's stdio, owned by this object (-1 once closed).
  virtual int stdin_fd() const = 0;
  virtual int stdout_fd() const = 0;
  virtual int stderr_fd() const = 0;
  // Closes stdin: the worker exits soon after (its master is "gone").
  virtual void close_stdin() = 0;
  // Process id on its host, and the host's name ("" when the manager cannot tell yet).
  virtual long os_pid() const = 0;
  virtual std::string host() const = 0;
  // Waits up to `timeout` for the process to end. Returns true once it has ended and was
  // reaped. Thread-safety: one caller at a time.
  virtual bool wait_for(std::chrono::milliseconds timeout) = 0;
  // Forcibly stops the process (SIGKILL locally). Never throws.
  virtual void kill() noexcept = 0;
  // "exited with status 3", "killed by signal 9", or "" while running.
  virtual std::string exit_reason() const = 0;
};

// Starts workers. Implementations: LocalManager (here), and the SSH and SLURM managers.
class ClusterManager {
 public:
  virtual ~ClusterManager() = default;
  // Starts `count` workers and returns them (their stdout has not been read yet).
  // Throws: dj::Error naming the cause; launches nothing on failure.
  virtual std::vector<std::unique_ptr<LaunchedWorker>> launch(int count) = 0;
  // For messages: "local", "ssh dj-host1", "slurm job 42".
  virtual std::string describe() const = 0;
};

}  // namespace dj
