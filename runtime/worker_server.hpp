// The worker side of dj: accepts the master's authenticated connection, then serves it with
// two threads in a leader/follower arrangement. Whichever thread is free is the reader; a
// reader that receives a call while no kernel runs hands the reader role to the other thread
// and runs the kernel itself, so an idle worker answers a call with no thread hand-off on the
// critical path, and a kernel that blocks never stops the worker from reading (shutdown,
// fetches of ready values, releases). Kernels run one at a time, in arrival order, like a
// Julia worker's compute-bound tasks; calls that arrive meanwhile queue.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "call_exec.hpp"
#include "net.hpp"
#include "plugins/registry.hpp"
#include "value_store.hpp"
#include "wire/frame.hpp"

namespace dj::detail {

class WorkerServer {
 public:
  // Lifetime: the server owns `listener`. `cookie` authenticates every peer.
  WorkerServer(std::string cookie, Fd listener);
  ~WorkerServer();

  // Waits for the master (up to `accept_timeout`), then serves it. Returns the exit code when
  // the master is gone or asked for shutdown.
  int run(std::chrono::milliseconds accept_timeout);

 private:
  struct FetchSlot;

  // Polls the master connection, the listener, stdin and half-open peers until a frame from
  // the master arrives. Returns nullopt when the process should exit.
  std::optional<wire::Frame> next_master_frame(int poll_timeout_ms);
  void handle_new_peer();
  void handle_pending_peer(size_t index);
  void drop_peer(size_t index, const std::string& why);
  bool check_hello(const wire::Frame& frame, std::string& why) const;

  void serve();  // One of the two leader/follower threads.
  void handle_control(wire::Frame&& frame);
  void run_calls(PendingCall first);
  void reply(PendingCall& call, CallOutcome outcome);
  void send(const wire::Message& message, const std::string& payload = {});
  StoredValue fetch_remote(int owner, uint64_t ref);
  [[noreturn]] void exit_now(int code, const std::string& why);

  const std::string cookie_;
  Fd listener_;
  Fd master_;

  struct PendingPeer {
    Fd fd;
    std::chrono::steady_clock::time_point deadline;
  };
  std::vector<PendingPeer> peers_;  // reader role only

  KernelRegistry registry_;
  ValueStore store_;
  ExecContext ctx_;

  std::mutex write_mu_;   // serialises frames to the master
  std::mutex reader_mu_;  // held by the thread in the reader role

  std::mutex queue_mu_;
  std::deque<PendingCall> queue_;  // guarded by queue_mu_
  bool running_ = false;           // guarded by queue_mu_: a thread is running kernels

  std::mutex fetch_mu_;
  uint64_t next_fetch_ = 1;                                            // guarded by fetch_mu_
  std::unordered_map<uint64_t, std::shared_ptr<FetchSlot>> fetches_;  // guarded by fetch_mu_

  std::thread second_;
};

}  // namespace dj::detail
