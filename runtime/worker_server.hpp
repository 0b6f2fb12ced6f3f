// The worker side of dj. Three threads:
//   - the acceptor (the main thread): authenticates peers on the listening socket, watches
//     stdin (EOF = the master is gone), and never touches the master connection;
//   - two serve threads in a leader/follower pair on the master connection. The leader reads
//     frames; when it gets a call and no kernel runs, it gives up the reader role *without
//     waking anyone* and runs the kernel itself, so an idle worker answers a call with no
//     thread hand-off and no extra wake-up. The follower sleeps on a timer armed while a
//     kernel runs: if the kernel is still running after kTakeoverDelay (at most twice that),
//     or blocks waiting for a value from another process, the follower takes the reader role,
//     so a long or blocked kernel never stops the worker from handling shutdown, fetches and
//     releases.
// Kernels run one at a time in arrival order, like a Julia worker's compute-bound tasks; calls
// that arrive meanwhile queue.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "call_exec.hpp"
#include "net.hpp"
#include "peer_links.hpp"
#include "plugins/registry.hpp"
#include "value_store.hpp"
#include "wire/frame.hpp"

namespace dj::detail {

class WorkerServer {
 public:
  // How long a kernel may keep the master connection unread before the follower reads it.
  static constexpr std::chrono::microseconds kTakeoverDelay{1000};

  // Lifetime: the server owns both listeners (TCP, and the abstract Unix socket that
  // same-host masters use). `cookie` authenticates every peer on either.
  WorkerServer(std::string cookie, Fd listener, Fd local_listener);
  ~WorkerServer();

  // Waits for the master (up to `accept_timeout`), then serves it until it is gone or asks for
  // shutdown; the process then ends with _exit. Returns only if no master came (exit code).
  int run(std::chrono::milliseconds accept_timeout);

 private:
  struct FetchSlot;
  class ReaderRole;
  // A connection that has not yet presented a Hello. Its socket is non-blocking and its bytes
  // collect in `in` (at most one small frame), so a slow or silent peer never stalls the
  // acceptor, and each costs a few hundred bytes at most.
  struct PendingPeer {
    Fd fd;
    std::chrono::steady_clock::time_point deadline;
    std::string in;
  };
  // At most this many connections wait to say Hello; a newer one evicts the oldest (the
  // master says Hello at once, so a flood of silent peers cannot keep it out for long).
  static constexpr size_t kMaxPendingPeers = 64;

  // Acceptor thread.
  void accept_step(int timeout_ms);
  void handle_new_peers(int listen_fd);
  void handle_pending_peer(size_t index);
  void drop_peer(size_t index, const std::string& why);
  void accept_master(size_t index, const wire::Hello& hello);
  void accept_worker_peer(size_t index, const wire::Hello& hello);
  // Logs a dropped connection: one line each, at most kDropLogBurst per kDropLogWindow, then a
  // count of the rest, so a flood of connections cannot flood the master's output.
  void log_drop(const std::string& line);
  void flush_drop_log(bool force);
  // accept() failed for want of descriptors: frees the spare one to accept and close the
  // connection at the head of the backlog (else poll reports it forever).
  void shed_connection(int listen_fd);
  bool check_hello(const wire::Frame& frame, std::string& why) const;

  // Serve threads.
  void serve();
  // The reader's loop for frames (anything but an express call waiting first): reads until a
  // call is to run here, then runs it and what queues behind it, or until an express call ran.
  void serve_frames(ReaderRole& reader);
  void wait_for_takeover();
  void request_takeover() noexcept;
  void arm_timer(std::chrono::nanoseconds after) noexcept;
  static int64_t now_ns() noexcept;
  void handle_control(wire::Frame&& frame);
  // Writes a compact result (wire/compact.hpp) for a compact call.
  void send_compact(uint64_t request_id, wire::CompactStatus status, const std::string& value);
  // The leader starts running kernels: counts the batch, arms the follower's timer, and gives
  // up the reader role.
  void start_batch(ReaderRole& reader);
  // An express call (the ring's slot, wire/compact.hpp) is waiting, and nothing before it:
  // runs it on this thread if no kernel runs (giving up the reader role: returns true), else
  // queues it, or answers that the master should resend it in full (returns false).
  // Throws: InvalidArgument for a malformed slot.
  bool serve_express(ReaderRole& reader);
  // serve_express's one-entry cache of registry_.find (held by the reader role).
  std::shared_ptr<const KernelEntry> express_kernel_;
  uint64_t express_kernel_id_ = 0, express_version_ = 0;
  // After an express call ran: runs what was queued meanwhile, or marks the worker idle.
  void finish_express();
  // An express call's parts, as taken from the slot (blob: its arguments, read in place).
  struct ExpressCall {
    uint32_t seq;
    uint64_t kernel_id, signature_id;
    const char* blob;
    size_t blob_bytes;
  };
  // The express call as a call of the full path (to queue it, or to run it in full).
  PendingCall express_pending(const ExpressCall& call);
  // serve_express's answer when the numbers-only entry did not give it (run_numbers): the
  // general run in place, or the full path, or the failure in `other`. Out of line: its
  // buffer stays off the express path's frame.
  [[gnu::noinline]] void serve_express_in_full(const ExpressCall& call, const KernelEntry& kernel,
                                               uint64_t generation,
                                               std::unique_ptr<CallOutcome>& other);
  // Holding queue_mu_, by the reader: true when a batch runs, marked kQueued (the caller
  // then pushes its call behind it), else false with the state set to kRunning (the caller
  // starts the batch).
  bool queue_behind_locked();
  // Holding queue_mu_, with calls queued: takes the first.
  PendingCall pop_queued_locked();
  // Answers express call `seq` through the slot, with `bytes` of value (at most kSlotBytes,
  // not in the slot itself) copied in.
  void post_express(uint32_t seq, wire::CompactStatus status, const void* value, size_t bytes);
  void run_calls(PendingCall first);
  void reply(PendingCall& call, CallOutcome outcome);
  void send(const wire::Message& message, const std::string& payload = {});
  // A value or channel owned by another process: directly from a peer worker when the master
  // listed it, else through the master (which also owns pid 1's values).
  StoredValue fetch_remote(int owner, uint64_t ref);
  std::pair<wire::Result, std::string> channel_request(wire::ChannelOp op, std::string item);
  // Sends a request built by `send_request(request id)` to the master and waits for the Result
  // with that id (from a kernel thread: the follower takes over reading meanwhile).
  StoredValue ask_master(const std::function<void(uint64_t)>& send_request);
  [[noreturn]] void exit_now(int code, const std::string& why);

  const std::string cookie_;
  Fd listener_;
  Fd local_listener_;
  Fd master_;
  std::optional<wire::FrameReader> reader_;  // used only by the thread in the reader role
  std::vector<PendingPeer> peers_;           // acceptor thread only, oldest first
  Fd spare_fd_;                              // acceptor: /dev/null, given up on EMFILE
  std::chrono::steady_clock::time_point drop_window_start_{};  // acceptor only
  size_t drops_logged_ = 0, drops_unlogged_ = 0;              // acceptor only

  KernelRegistry registry_;
  ValueStore store_;
  PeerLinks peer_links_;   // this worker's connections to other workers (lazy)
  SegmentTable segments_;  // SharedArray segments the master asked this worker to map
  ExecContext ctx_;

  std::mutex write_mu_;   // serialises frames to the master
  bool bulk_ = false;     // the master is on this host: large payloads go through arena_
  // Set once the master's RingOffer is taken (guarded by write_mu_): every frame goes through it.
  std::shared_ptr<wire::RingLink> ring_;
  // The same rings, for the express slot's answers, which need no write lock: set with ring_,
  // before any express call can come, and never changed after.
  std::shared_ptr<wire::RingLink> reader_ring_;
  wire::Outlet outlet() const { return {master_.get(), ring_.get()}; }
  // RingOffer (reader role): maps the rings, answers RingReady on the socket, switches to them.
  void take_ring(const wire::RingOffer& offer);
  wire::BulkArena arena_;
  // The reader's mapping of the master's arena (reader_->bulk_views(), set with it).
  std::shared_ptr<wire::BulkViews> views_;
  // The acceptor trims arena_ and views_ once idle: woken (trim_wake_fd_) when a payload goes
  // out through the arena or one lent by the master is dropped, it polls with a timeout until
  // the memory of both is given back.
  void arena_used() noexcept;
  // The reader role: held by the serve thread that reads the master connection. Given up
  // with a plain store, so an express call's path has no locked instruction for it; nobody
  // waits for it (a thread that cannot take it goes back to waiting for a takeover).
  class ReaderRole {
   public:
    explicit ReaderRole(std::atomic<bool>& taken) noexcept : taken_(taken) {}
    ReaderRole(const ReaderRole&) = delete;
    ReaderRole& operator=(const ReaderRole&) = delete;
    ~ReaderRole() {
      if (held_) give_up();
    }
    bool try_take() noexcept {
      held_ = !taken_.exchange(true, std::memory_order_acquire);
      return held_;
    }
    void give_up() noexcept {
      held_ = false;
      taken_.store(false, std::memory_order_release);
    }

   private:
    std::atomic<bool>& taken_;
    bool held_ = false;
  };
  std::atomic<bool> reader_taken_{false};
  Fd timer_fd_;           // armed while kernels run; the follower waits on it
  // Arming a timer costs a few microseconds on a VM, so it is not armed and disarmed per call:
  // it is armed when a batch of kernels starts and none is armed, and when it fires the
  // follower re-arms it for the rest of the current batch's delay, or lets it lapse if idle.
  std::atomic<bool> timer_armed_{false};
  std::atomic<uint64_t> batches_{0};  // batches of kernels started (the follower's clock)
  Fd takeover_fd_;        // eventfd: "take the reader role now" (a kernel is blocked)
  Fd trim_wake_fd_;       // eventfd: arena_ or views_ holds memory to trim (see arena_used)
  std::atomic<bool> trim_pending_{false};

  std::mutex queue_mu_;
  std::deque<PendingCall> queue_;  // guarded by queue_mu_
  // Whether a thread runs kernels (kRunning), and calls wait in queue_ behind them (kQueued,
  // only with kRunning). Written under queue_mu_, except on an express call's path: the
  // reader, who alone starts a batch, does so without the lock when it reads kIdle (then with
  // a light fence, which the follower's heavy fence pairs with: asymmetric_fence.hpp); and the
  // runner of an express call finishes it with one compare-exchange, kRunning to kIdle, which
  // fails once a call was queued (the queuer sets kQueued first: finish_express then takes
  // the lock).
  enum : uint32_t { kIdle = 0, kRunning = 1, kQueued = 2 };
  std::atomic<uint32_t> run_state_{kIdle};

  std::mutex fetch_mu_;
  uint64_t next_fetch_ = 1;                                            // guarded by fetch_mu_
  std::unordered_map<uint64_t, std::shared_ptr<FetchSlot>> fetches_;  // guarded by fetch_mu_

  std::thread serve_a_, serve_b_;
};

}  // namespace dj::detail
