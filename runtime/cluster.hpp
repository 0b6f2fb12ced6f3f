// The master's view of the cluster: the worker table, the I/O thread that reads every worker's
// connection and output, the calls in flight, and the master's own executor (pid 1).
//
// Threads: user threads send requests directly on a worker's socket (under its write mutex)
// and block on a Reply or RefState; the I/O thread reads every socket and stdio pipe and
// completes them; the local executor runs kernels called on pid 1.
// Locking: mu_ guards the table and every WorkerLink's bookkeeping maps. Never held across I/O
// or while a RefState may be destroyed (its destructor takes mu_ to release the value).
#pragma once

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "call_exec.hpp"
#include "dj/dj.hpp"
#include "local_executor.hpp"
#include "managers/cluster_manager.hpp"
#include "net.hpp"
#include "plugins/registry.hpp"
#include "read_role.hpp"
#include "remote_ref.hpp"
#include "shm/segment.hpp"
#include "value_store.hpp"
#include "wire/frame.hpp"

namespace dj::detail {

// This thread's mark as a direct caller (master_direct.cpp), or null if it never made one.
const ReadRole::Owner* direct_caller_mark() noexcept;

struct WorkerLink : std::enable_shared_from_this<WorkerLink> {
  WorkerLink(int pid, std::unique_ptr<LaunchedWorker> process, Fd socket);
  // Sends one frame. Returns false if the worker is gone (the I/O thread will retire it).
  // Writes the frame (after any corked ones). False when the connection failed (retire()
  // reports it).
  bool send(const wire::Message& message, const std::string& payload = {});
  // Appends a small fire-and-forget frame (a store-mode call) to `corked` instead of writing
  // it; true when `corked` was empty (the caller then has the I/O thread flush it). A loop of
  // remotecall thus costs one write per burst, not one per call.
  bool cork(const wire::Message& message, const std::string& payload);
  // Writes what is corked. False when the connection failed.
  bool flush();
  // Writes what is corked; the caller holds write_mu. Throws like write_full.
  void write_corked_locked();
  // Sends a call with its arguments: from the shared memory they were encoded into when lent
  // (ArgBlob::lent, reserved on this link's arena), else from ArgBlob::bytes.
  bool send_args(const wire::Message& message, ArgBlob& args);
  // Writes a compact call (wire/compact.hpp) of k with `args` into the ring if that needs no
  // wait (no other writer, room for it and anything corked); false otherwise, nothing sent
  // (master_direct.cpp).
  bool try_send_compact_call(uint64_t request_id, const CallTarget& k, std::string_view args);
  // Posts an express call (the same, through the ring's slot: wire/compact.hpp) if nothing
  // corked needs a wait to go first; false otherwise, nothing sent. The caller holds read_role
  // (one express call at a time per link).
  bool try_post_express_call(uint32_t seq, const CallTarget& k, std::string_view args);

  const int pid;
  std::unique_ptr<LaunchedWorker> process;
  Fd socket;
  WorkerInfo info;
  std::string host_identity;
  // Where other workers reach it (sent to them in wire::Peers); not direct when the master
  // reaches it through its manager's own path (an SSH tunnel): others cannot.
  wire::Peer peer;
  bool direct = true;
  std::mutex write_mu;
  std::string corked;  // guarded by write_mu: frames appended by cork(), not yet written
  // !corked.empty(), readable without write_mu (by the express path: a thread that corked
  // sees its own store).
  std::atomic<bool> any_corked{false};
  // Same-host link: large payloads go through shared memory (wire/bulk.hpp) both ways, and
  // every frame through the shared-memory rings (wire/ring.hpp) unless DJ_RING=0.
  bool bulk = false;
  std::shared_ptr<wire::RingLink> ring;
  wire::Outlet outlet() const { return {socket.get(), ring.get()}; }
  wire::BulkArena arena;  // the master's memory for large payloads to this worker
  std::atomic<int> in_flight{0};
  // An express call is out (set and cleared by the read_role holder, which waits for it: plain
  // stores, no read-modify-write on the round trip). Counted by calls_in_flight().
  std::atomic<bool> express_out{false};
  uint32_t express_seq = 0;  // guarded by read_role: the last express call's number
  int calls_in_flight() const {
    return in_flight.load() + (express_out.load(std::memory_order_relaxed) ? 1 : 0);
  }
  std::atomic<bool> removing{false};  // rmprocs is stopping it: its exit is not a failure
  bool is_local = false;              // started by LocalManager: interrupt() may replace it
  // Held by whichever thread reads `socket`: the I/O thread, or a user thread that borrowed the
  // connection to wait for its own reply without a hand-off (Cluster::await), or parked with a
  // thread that makes direct calls on it (read_role.hpp).
  ReadRole read_role{this};
  wire::FrameReader reader;  // guarded by read_role
  // Whether the I/O thread's epoll watches the socket (guarded by read_role). A borrower
  // disarms it and leaves it so; the I/O thread re-arms it once no borrow happened for
  // kRearmDelay, so a loop of remotecall_fetch costs no epoll_ctl per call.
  bool armed = true;
  std::atomic<uint64_t> borrows{0};  // borrows ended (no clock read on the borrower's path)
  uint64_t borrows_seen = 0;         // I/O thread: `borrows` at the tick it last changed
  int64_t borrows_seen_ns = 0;       // I/O thread: when that tick was
  // Heartbeat (I/O thread): when a frame last came, when the current wait began, pings sent.
  std::atomic<int64_t> last_heard_ns{0};
  std::atomic<int64_t> awaited_since_ns{0};
  uint64_t pings = 0;       // I/O thread only
  uint64_t bytes_seen = 0;  // I/O thread only: reader.bytes_read() at the last heartbeat check

  // Output forwarding: the I/O thread, and retire() on a user thread for rmprocs.
  std::mutex output_mu;
  std::string out_partial, err_partial;  // guarded by output_mu
  std::atomic<bool> out_open{true}, err_open{true};

  // Guarded by Cluster::mu_.
  // Why the master killed it (the heartbeat), set before the kill: whichever thread then sees
  // the connection close reports this rather than the signal.
  std::string kill_reason;
  std::unordered_map<uint64_t, std::shared_ptr<Reply>> replies;
  std::unordered_map<uint64_t, std::weak_ptr<RefState>> refs;
  std::unordered_map<uint64_t, std::vector<std::shared_ptr<const void>>> pins;
};

// Room in a worker link's arena, reserved while an ArgBlob is encoded into it; given back
// unless the call that carries it was sent.
struct ArgBlob::LentRoom {
  std::shared_ptr<WorkerLink> link;
  unsigned char* data = nullptr;
  size_t cap = 0, size = 0;
  bool sent = false;
  ~LentRoom() {
    if (!sent) link->arena.cancel();
  }
};

class Cluster {
 public:
  // The master's cluster, created on first use (Distributed.jl's API is process-wide, so dj's
  // is too). On a worker process this throws: workers do not manage workers.
  static Cluster& instance();
  // The cluster if it exists and is not shut down (for destructors).
  static Cluster* existing() noexcept;

  std::vector<int> workers() const;
  // n = 0: as many as manager.launch(0) starts (SSH hosts with count "auto").
  std::vector<int> add_workers(ClusterManager& manager, int n, std::chrono::milliseconds timeout);
  void rmprocs(const std::vector<int>& pids, std::chrono::milliseconds grace);
  void set_topology(Topology topology);
  void set_heartbeat_timeout(std::chrono::milliseconds timeout) {
    heartbeat_timeout_ms_ = timeout.count();
    wake();
  }
  Topology topology() const;
  WorkerInfo info(int pid) const;
  WorkerStats stats(int pid);

  Plugin everywhere(const std::string& path);
  void check_kernel(const std::string& plugin, const std::string& name,
                    const std::string& signature) const;

  std::shared_ptr<RefState> call_store(int pid, const CallTarget& k, ArgBlob&& args);
  // `try_direct` false: call_direct was already tried.
  ser::Bytes call_fetch(int pid, const CallTarget& k, ArgBlob&& args, bool try_direct = true);
  // call_fetch of arguments already encoded, not lent (detail::call_fetch_small).
  ser::Bytes call_fetch_small(int pid, const CallTarget& k, std::string_view args);
  // call_fetch of arguments already encoded, once call_direct has been tried (a copy of them
  // goes by the full path).
  ser::Bytes call_fetch_in_full(int pid, const CallTarget& k, std::string_view args);
  // Where call_direct puts its result: into `number` when that is set (a kernel's numeric
  // result, which must be `number_bytes` long), else into `*bytes`.
  struct DirectAnswer {
    ser::Bytes* bytes = nullptr;
    void* number = nullptr;
    size_t number_bytes = 0;
  };
  // A numeric result's `size` bytes into `out`. Throws: InvalidArgument when they are not the
  // `want` bytes of its type (a plugin whose kernel answers other than its signature says).
  static void copy_number(const unsigned char* data, size_t size, void* out, size_t want) {
    if (size != want) throw_number_size(size, want);
    if (want == 8) {
      std::memcpy(out, data, 8);  // a constant size: no call to memcpy
    } else {
      std::memcpy(out, data, want);
    }
  }
  [[noreturn]] static void throw_number_size(size_t size, size_t want);
  // call_fetch to a same-host worker whose connection no other thread is reading: an express
  // or compact call, answered on this thread (master_direct.cpp): true with its result put
  // where `answer` says, false when that does not apply (the full path then sends the call).
  // Throws: the call's error.
  bool call_direct(int pid, const CallTarget& k, std::string_view args,
                   const DirectAnswer& answer);
  // call_direct's body, inline in master_direct.cpp (detail::call_fetch_number's path).
  [[gnu::always_inline]] inline bool call_direct_inline(int pid, const CallTarget& k,
                                                        std::string_view args,
                                                        const DirectAnswer& answer);
  // Writes what is corked for pid (before waiting on its answer: no I/O thread hop).
  void flush_corked(int pid);
  // Room for `bytes` of arguments in the shared memory of a same-host worker's connection, or
  // nullptr (not such a worker, unknown pid, or the room is in use).
  std::shared_ptr<ArgBlob::LentRoom> lend_room(int pid, size_t bytes);
  void call_discard(int pid, const CallTarget& k, ArgBlob&& args);
  // Sends a batch-mode call (pmap); `then` runs on the I/O thread (or the local executor) with
  // the Result, or with a Disconnected Result if the worker dies.
  void call_batch(int pid, const CallTarget& k, std::string payload, uint32_t count,
                  std::function<void(Reply&)> then);
  // Sends Interrupt to each pid, waits up to `grace` for their calls to end, and kills and
  // replaces (local workers) those still busy.
  void interrupt(const std::vector<int>& pids, std::chrono::milliseconds grace);
  // RemoteChannel operation from the master on a channel of worker op.owner.
  std::pair<wire::Result, std::string> channel_request(wire::ChannelOp op, std::string item);
  // Fire-and-forget (release).
  void channel_send(const wire::ChannelOp& op);
  // Keeps `bytes` on `pid` under a new ref (Cached arguments); the ref completes when stored.
  std::shared_ptr<RefState> store_value(int pid, std::string bytes);
  int least_loaded() const;
  std::string fetch(const RefState& ref);
  void release(int owner, uint64_t id) noexcept;

  // Payload bytes the master has received from workers (diagnostics and tests: proves that a
  // value passed between workers did or did not travel through the master).
  uint64_t payload_bytes_received() const { return payload_bytes_received_.load(); }

  // SharedArray (shared_arrays.cpp): creates a segment mapped on pids (default: this host's
  // workers, else {1}; filled in) and unlinks it once all mapped it. Throws as SharedArray's
  // constructor documents. Blocks: until every pid answered.
  std::shared_ptr<const SharedState> create_shared(const std::string& element,
                                                   size_t element_bytes, std::vector<size_t> dims,
                                                   std::vector<int> pids);
  // The segments mapped by the master (its handles own them; the table only watches).
  SegmentTable& segments() { return segments_; }

  // Stops every worker and the I/O thread (at exit).
  void shutdown() noexcept;

 private:
  Cluster();
  ~Cluster() = delete;  // Never destroyed: Futures in static storage may outlive main.

  static std::string to_hex_cookie();
  // dj-run --hosts / --machine-file / --slurm (cluster_env.cpp).
  void add_workers_from_env();
  static void ignore_sigpipe();
  void install_sigint_handler();
  static bool take_sigint();
  void on_ctrl_c();  // I/O thread
  std::shared_ptr<WorkerLink> find_locked(int pid) const;
  uint64_t next_id_locked() { return next_id_++; }
  std::shared_ptr<WorkerLink> start_one(std::unique_ptr<LaunchedWorker> w, int pid,
                                        std::chrono::steady_clock::time_point deadline);
  struct ShippedPlugin {
    std::string path;
    std::string sha256;
    std::string bytes;
  };
  // Tells the new workers where every direct worker listens, and the others about the new ones.
  void send_peers(const std::vector<std::shared_ptr<WorkerLink>>& added);
  void load_plugins_on(const std::vector<std::shared_ptr<WorkerLink>>& links,
                       const std::vector<ShippedPlugin>& plugins);
  StoredValue fetch_from(int owner, uint64_t ref_id);
  std::vector<std::shared_ptr<WorkerLink>> shared_participants(std::vector<int>& pids,
                                                              const std::string& what) const;
  // Tells the workers among pids that are still there to drop their mapping of `name`.
  void unmap_shared(const std::string& name, const std::vector<int>& pids) noexcept;
  // Registers a call awaiting `reply` on worker pid (counted in flight, `pins` kept until it
  // ends) and returns the link and the request id to send it with.
  std::pair<std::shared_ptr<WorkerLink>, uint64_t> register_call(
      int pid, const std::shared_ptr<Reply>& reply, std::vector<std::shared_ptr<const void>> pins);
  std::shared_ptr<Reply> request(const std::shared_ptr<WorkerLink>& link,
                                 const wire::Message& message, uint64_t id,
                                 const std::string& payload = {});

  // I/O thread (master_io.cpp).
  void io_main();
  void wake() noexcept;
  void watch(const std::shared_ptr<WorkerLink>& link);
  void unwatch(WorkerLink& link) noexcept;
  // Re-arms the one-shot interest in the link's socket (socket=true) or ring doorbell.
  void rearm(WorkerLink& link, bool socket) noexcept;
  // Arms (or disarms, for a borrower) both.
  void set_interest(WorkerLink& link, bool on) noexcept;
  void rearm_idle_links();
  // How often the I/O thread wakes for heartbeats (-1: never: off, or no workers).
  int heartbeat_tick_ms() const;
  // Pings workers silent for a quarter of the heartbeat timeout while the master awaits
  // something from them; kills and retires those silent for the whole timeout.
  void check_heartbeats();
  // Sends a store- or discard-mode call: corked when small (WorkerLink::cork).
  static constexpr size_t kCorkBytes = 4096;
  void send_or_cork(const std::shared_ptr<WorkerLink>& link, const wire::Message& call,
                    ArgBlob& args);
  // Corks a fire-and-forget frame for link; the I/O thread is woken to write the burst.
  void cork(const std::shared_ptr<WorkerLink>& link, const wire::Message& message,
            const std::string& payload = {});
  // Writes the corked frames of every link that has some (I/O thread, when woken).
  void flush_corked_links();
  // Frees the memory of bulk arenas idle for wire::kBulkIdleTrim (I/O thread).
  void trim_bulk_arenas();
  // Reads and handles one frame from the link, and any others already waiting (caller holds
  // read_role). Blocks until the first is in. False once retired. The Result of `direct_id`, if
  // nonzero, is put in `direct` instead of being handled.
  bool read_one(const std::shared_ptr<WorkerLink>& link, uint64_t direct_id = 0,
                std::optional<wire::Frame>* direct = nullptr);
  // How an express call (wire/compact.hpp) was answered: a value in the slot, a Result frame
  // (in `answer`), "send it in full", or not at all (the link retired).
  enum class ExpressAnswer { kValue, kFrame, kResend, kRetired };
  // Borrows the link (caller holds read_role) until express call `seq` is answered: the value
  // is `value_bytes` at `value` (in the slot, valid until this thread posts again), a Result
  // frame goes in `*answer`, allocated only when a frame is read (GCC 12 zero-fills a
  // disengaged std::optional's payload: a `rep stos` on every call otherwise).
  ExpressAnswer await_express(WorkerLink& link, uint32_t seq,
                              std::unique_ptr<std::optional<wire::Frame>>& answer,
                              const unsigned char*& value, size_t& value_bytes);
  // A direct call's use of a link (master_direct.cpp): found in the calling thread's small
  // cache of links, with no lock and no reference count, and kept from being destroyed by a
  // hazard slot of the thread's own rather than a shared_ptr (asymmetric fences pair the two:
  // a loop of direct calls then has no locked instruction for it).
  class DirectUse;
  // Links that left links_ while a direct call may still use them (guarded by mu_), and
  // `links_epoch_`, bumped under mu_ whenever a link leaves links_: a thread's cached link is
  // current while the epoch it was cached at is.
  std::vector<std::shared_ptr<WorkerLink>> unlisted_;
  std::atomic<uint64_t> links_epoch_{0};
  std::atomic<bool> unlisted_pending_{false};  // unlisted_ is not empty
  // Moves a link that left links_ (caller holds mu_) to unlisted_.
  void unlist_locked(std::shared_ptr<WorkerLink> link);
  // Drops the links in unlisted_ that no direct call uses (any thread, no lock held; the I/O
  // thread retries while some remain).
  void reclaim_unlisted() noexcept;
  // Borrows the link (caller holds read_role): reads its frames on this thread until `reply` is
  // complete (reply non-null) or the Result of direct_id is in `direct`, or the link retires.
  void read_as_borrower(const std::shared_ptr<WorkerLink>& link, Reply* reply, uint64_t direct_id,
                        std::optional<wire::Frame>& direct);
  // Waits for `reply`, reading the link's socket itself when no other thread is.
  const wire::Message& await(const std::shared_ptr<WorkerLink>& link, Reply& reply);
  void on_frame(const std::shared_ptr<WorkerLink>& link, wire::Frame&& frame);
  // Why a worker may not use a value or channel of another worker (topology master_worker).
  std::optional<std::string> worker_to_worker_refused(int requester, int owner,
                                                      const char* what) const;
  void on_fetch_ref(const std::shared_ptr<WorkerLink>& link, const wire::FetchRef& m);
  void on_channel_op(const std::shared_ptr<WorkerLink>& link, wire::ChannelOp m,
                     std::string item);
  // Reads what is available on a worker's stdout (err=false) or stderr and prints whole lines
  // as "From worker N:". Returns false at EOF. Call only when the fd is readable.
  bool pump_output(WorkerLink& link, bool err);
  void drain_output(WorkerLink& link);
  void retire(const std::shared_ptr<WorkerLink>& link, const std::string& why);
  // What callers of a retired worker are told: "ProcessExited(pid): " + how it left (gone_).
  static std::string process_exited(int pid, const std::string& how) {
    return "ProcessExited(" + std::to_string(pid) + "): " + how;
  }

  mutable std::mutex mu_;
  std::map<int, std::shared_ptr<WorkerLink>> links_;  // guarded by mu_
  std::mutex corked_mu_;
  std::vector<std::weak_ptr<WorkerLink>> corked_links_;  // guarded by corked_mu_
  std::map<int, std::string> gone_;                   // guarded by mu_: pid -> why it left
  int next_pid_ = 2;                                  // guarded by mu_
  Topology topology_ = Topology::all_to_all;          // guarded by mu_
  uint64_t next_id_ = 1;                              // guarded by mu_
  mutable size_t spawn_cursor_ = 0;                   // guarded by mu_

  std::vector<ShippedPlugin> plugins_;  // guarded by mu_; shipped to workers added later
  std::mutex load_mu_;                  // serialises everywhere() and addprocs()

  const std::string cookie_;
  KernelRegistry registry_;  // the master's own kernels (pid 1)
  ValueStore store_;         // values owned by pid 1
  SegmentTable segments_;    // SharedArray segments the master has mapped (watched, not owned)
  std::atomic<uint64_t> next_segment_{0};  // n in the segment name /dj-<os pid>-<n>
  ExecContext ctx_;
  LocalExecutor local_;

  std::atomic<uint64_t> payload_bytes_received_{0};
 public:
  // Payload bytes the master has sent to workers (diagnostics and tests).
  static uint64_t payload_bytes_sent();
 private:
  Fd wake_fd_;
  Fd epoll_fd_;
  std::atomic<bool> some_link_disarmed_{false};
  std::atomic<int64_t> heartbeat_timeout_ms_{10000};  // 0: off
  std::atomic<bool> stopping_{false};
  std::thread io_;
};

}  // namespace dj::detail
