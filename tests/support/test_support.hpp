// Helpers shared by the test files: where the test plugins and programs are, waiting for a
// condition with a deadline (never a fixed sleep), and checks that nothing is left behind.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace dj::test {

// Absolute path of a test plugin: plugin("test_kernels") -> .../lib/libtest_kernels.so
std::string plugin(const std::string& name);
// Absolute path of a program built by the project: program("dj-run").
std::string program(const std::string& name);

// Polls `condition` every millisecond until it holds or `timeout` passes. Returns whether it
// held; the caller REQUIREs it with a message naming what was awaited.
bool eventually(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

// Whether a process exists and is not a zombie.
bool process_alive(pid_t pid);
// Sends SIGSTOP and waits until the process is stopped (the signal is delivered
// asynchronously: a call sent right after kill() could otherwise still be served).
bool stop_process(pid_t pid);
// OS pids of this process's children that run `exe_name` (by /proc/<pid>/comm).
std::vector<pid_t> children_named(const std::string& exe_name);
// OS pids of all live processes whose parent is `parent` (any name).
std::vector<pid_t> children_of(pid_t parent);

// Runs a command, capturing stdout+stderr; returns {exit status, output}.
struct RunResult {
  int status = -1;
  std::string output;
};
RunResult run_command(const std::string& command);

// Starts `sh -c "exec COMMAND"` with its stdout on a pipe (for master programs a test kills).
struct StartedProcess {
  pid_t pid = -1;
  int stdout_fd = -1;  // the caller closes it
};
StartedProcess start_with_stdout(const std::string& command);
// Reads from fd until `marker` has been read or EOF; returns everything read.
std::string read_until(int fd, const std::string& marker);

// A temporary directory removed (recursively) at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void copy_file(const std::string& from, const std::string& to);

// Names in /dev/shm of SharedArray segments created by the master with OS pid `master`
// ("dj-<master>-<n>"): tests run in parallel, so each checks only its own master's.
std::vector<std::string> shm_entries_of(pid_t master);
// Whether process `pid` has the shared-memory segment `name` ("/dj-...") mapped, unlinked or not
// (read from /proc/<pid>/maps).
bool maps_segment(pid_t pid, const std::string& name);
// How many mappings of memfds named `memfd_name` ("dj-bulk", "dj-ring") process `pid` holds.
int memfds_mapped(long pid, const std::string& memfd_name);

}  // namespace dj::test
