// SshPump: the thread that owns one host's SSH session once its workers run, and moves bytes
// between the session's channels and local fds. Private to managers/ssh*.cpp.
#pragma once

#include <libssh/callbacks.h>
#include <libssh/libssh.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "net.hpp"
#include "ssh_connect.hpp"

namespace dj::detail {

// A worker's exec channel once its shell printed "dj-pid N"; the fds are the master's ends.
struct StartedChannel {
  size_t index;
  long os_pid;
  Fd in, out, err;
};

// Runs `command` on the host and returns its stdout (for `nproc`). Before the pump starts.
// Throws: dj::Error naming the host. Blocks: until the command ends or `deadline`.
std::string run_on_host(SshSession& session, const std::string& command,
                        std::chrono::steady_clock::time_point deadline);

class SshPump {
 public:
  SshPump(std::unique_ptr<SshSession> session, bool tunnel);
  // Stops the thread, kills what still runs (signal KILL, channel close), disconnects.
  ~SshPump();

  // Opens `count` channels running `command`, each until its "dj-pid N" line. Call before
  // start(), once. Throws: dj::Error "HOST: ..."; the destructor then cleans up everything.
  std::vector<StartedChannel> exec_all(const std::string& command, int count,
                                       std::chrono::steady_clock::time_point deadline);
  // From here on only the pump thread touches the session.
  void start();

  const std::string& host_name() const { return session_->name(); }
  bool tunnel() const { return tunnel_; }
  // Thread-safety: the following may be called from any thread.
  bool wait_ended(size_t index, std::chrono::milliseconds timeout);
  void kill(size_t index) noexcept;
  std::string exit_reason(size_t index) const;
  // A socket forwarded by the SSH connection to host:port as the remote host sees it.
  int open_tunnel(const std::string& host, uint16_t port, std::chrono::milliseconds timeout);

 private:
  struct Bridge;
  friend struct Bridge;
  struct TunnelRequest {
    std::string host;
    uint16_t port;
    std::promise<int> fd;
  };
  void run();
  void handle_requests();
  bool pump_once(const std::vector<int>& readable_inputs);
  void end_bridge(Bridge& b, const std::string& reason);
  void connection_lost();
  void close_channel(Bridge& b, bool kill) noexcept;
  void wake() noexcept;
  std::string ssh_error_text() const;
  static void on_exit_status(ssh_session, ssh_channel, int status, void* bridge);
  static void on_exit_signal(ssh_session, ssh_channel, const char* signal, int, const char*,
                             const char*, void* bridge);

  std::unique_ptr<SshSession> session_;
  const bool tunnel_;
  Fd wake_fd_;
  bool lost_ = false;  // pump thread only
  ssh_event event_ = nullptr;  // pump thread only
  std::thread thread_;

  mutable std::mutex mu_;
  std::condition_variable ended_cv_;
  // The list itself only grows, under mu_; a Bridge's channel and fds belong to the pump
  // thread (or the launching thread before start()); its state fields are guarded by mu_.
  std::vector<std::unique_ptr<Bridge>> bridges_;
  std::deque<TunnelRequest> tunnel_requests_;  // guarded by mu_
  bool stopping_ = false;                      // guarded by mu_
};

// One channel and its local ends.
struct SshPump::Bridge {
  ssh_channel channel = nullptr;
  ssh_channel_callbacks_struct callbacks{};
  bool is_tunnel = false;
  Fd out, err;  // Pump's write ends of the worker's stdout/stderr (tunnel: the socket).
  Fd in;        // Pump's read end of the worker's stdin (tunnel: unused, `out` is read).
  bool input_open = true, output_open = true;  // pump thread only
  // Guarded by SshPump::mu_ (the exit callbacks run inside libssh calls on the pump thread).
  bool ended = false;
  bool kill_requested = false;
  int exit_status = -1;
  std::string exit_signal, reason;
  SshPump* owner = nullptr;
};

}  // namespace dj::detail
