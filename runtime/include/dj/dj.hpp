// dj: Distributed.jl's programming model for C++. One master process (pid 1) drives worker
// processes (pids 2, 3, ...) that run kernels: C++ functions compiled into .so plugins that the
// master ships to every worker as bytes.
//
//   #include <dj/dj.hpp>
//   int main() {
//     dj::addprocs(4);                                     // 4 local workers: pids 2..5
//     auto plugin = dj::everywhere("./libmy_kernels.so");  // load on every process
//     auto add = plugin.kernel<double(double, double)>("add");
//     dj::Future<double> f = dj::spawnat(2, add, 3.0, 3.0);
//     std::printf("%g\n", dj::fetch(f));                   // 6
//     std::printf("%g\n", dj::remotecall_fetch(add, 3, 1.0, 2.0));
//     dj::rmprocs(dj::workers());
//   }
//
// Three things to know:
// - Ownership: a call's result stays on the worker that computed it until fetched; the worker
//   frees it when the last Future copy referring to it is destroyed (on every process).
// - Blocking: fetch, wait, remotecall_fetch, remotecall_wait, addprocs, rmprocs and everywhere
//   block; remotecall, spawnat, spawn and remote_do only send. Every wait on another process
//   ends when that process dies (kind Disconnected) instead of hanging.
// - Errors: every function throws dj::Error (dj/error.hpp); its kind() says how to recover.
//   A kernel's exception arrives as kind RemoteFailure, "on worker N: ...".
//
// Thread-safety: every function here may be called from any thread of the master.
// Lifetime: workers are stopped when the master ends, by any means (including SIGKILL).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "dj/array_view.hpp"
#include "dj/cluster_manager.hpp"
#include "dj/error.hpp"
#include "dj/serialize.hpp"
#include "dj/shared_array.hpp"

namespace dj {

// dj pid of this process: 1 on the master, >= 2 on workers (also inside kernels).
int myid();
// Every pid: {1} followed by workers' pids, ascending.
std::vector<int> procs();
// Worker pids, ascending; {1} when there are none (the master then does the work).
std::vector<int> workers();
int nprocs();
// Number of workers; 1 when there are none, as in Distributed.jl.
int nworkers();

// Options of addprocs for local workers.
struct LocalOptions {
  std::string exename;  // dj-worker executable; default: $DJ_WORKER, else the installed one.
  std::chrono::milliseconds timeout{20000};  // Per worker, from launch to ready.
};

// Starts `n` local worker processes and returns their new pids (never reused in a run).
// Plugins loaded with everywhere() before are loaded on the new workers too.
// Throws: InvalidArgument (n < 1), NotFound (no worker executable), Disconnected (a worker
// died or timed out while starting). On failure no worker of this call is left running.
// Blocks: until every new worker has answered.
std::vector<int> addprocs(int n, const LocalOptions& options = {});

// Starts `n` workers with your own manager (dj/cluster_manager.hpp) and returns their pids.
// Throws, blocks and cleans up as addprocs(n). Lifetime: the workers may outlive `manager`.
std::vector<int> addprocs(ClusterManager& manager, int n,
                          std::chrono::milliseconds timeout = std::chrono::milliseconds(20000));

// How workers reach each other (Distributed.jl's `topology` keyword of addprocs).
// all_to_all (the default): a worker whose kernel needs a value or a RemoteChannel owned by
// another worker connects to that worker directly, the first time, and keeps the connection;
// the bytes never pass through the master. master_worker: workers talk to the master only (for
// networks where they cannot reach each other); a kernel that needs another worker's value or
// channel then fails with InvalidArgument saying so (fetch it on the master and pass the value).
enum class Topology { all_to_all, master_worker };
// Throws: InvalidArgument once workers were added with another topology.
void set_topology(Topology topology);
Topology topology();

// While the master waits for a worker (a call, a fetch), it pings the worker when it has been
// silent for a quarter of `timeout`; a worker silent for the whole timeout (stopped with
// SIGSTOP, hung in the kernel, or its host frozen) is killed and reported lost, like a crash:
// its calls fail with Disconnected "... did not answer for N ms". A busy kernel does not count
// as silence (the worker answers pings while it runs). Default 10 s; 0 turns it off.
void set_heartbeat_timeout(std::chrono::milliseconds timeout);

// Workers on one SSH host, in Distributed.jl's machine format
// "[count*][user@]host[:port] [bind_addr[:port]]" ("2*alice@node1:2222 10.0.0.5"), or as
// {host, count}. count kAutoCount starts one worker per core of the host ("auto*node1").
inline constexpr int kAutoCount = 0;
struct Machine {
  Machine(const char* spec) : Machine(std::string(spec)) {}  // NOLINT: implicit on purpose
  Machine(const std::string& spec);                          // NOLINT: implicit on purpose
  Machine(const std::string& host_spec, int count_on_host);
  std::string host;       // As given (resolved through the SSH config file).
  std::string user;       // "" = the SSH config's, else the local user.
  int port = 0;           // 0 = the SSH config's, else 22.
  int count = 1;          // Workers on this host (kAutoCount: one per core).
  std::string bind_addr;  // Where its workers listen ("" = the address routing to the master).
  int bind_port = 0;
};
// The machines listed in a Distributed.jl machine file: one Machine per non-blank line;
// '#' starts a comment. Throws: NotFound (no file), InvalidArgument naming file:line.
std::vector<Machine> read_machine_file(const std::string& path);

// Options of addprocs on SSH hosts. Hosts keys are checked against known_hosts, and login is
// by key only (ssh-agent, then identity files): dj never prompts for a password.
struct SshOptions {
  std::string exename;    // dj-worker on the hosts; default: this machine's dj-worker path.
  std::string dir;        // Working directory of the workers; default: the login directory.
  std::vector<std::pair<std::string, std::string>> env;  // Extra environment of the workers.
  int max_parallel = 10;  // Hosts connected to at the same time (Julia's max_parallel).
  bool tunnel = false;    // Reach workers through SSH port forwarding (they listen on
                          // 127.0.0.1 of their host) when hosts cannot accept connections.
  std::string ssh_config;     // SSH config file; default ~/.ssh/config.
  std::string identity_file;  // Private key tried first (after the agent).
  std::string known_hosts;    // Default: the config's UserKnownHostsFile, else ~/.ssh/known_hosts.
  bool strict_host_key_checking = true;  // false: accept unknown keys (never changed ones).
  std::string master_addr;  // Address the hosts reach the master at; default: the address of
                            // the master's end of each host's SSH connection.
  std::chrono::milliseconds connect_timeout{10000};  // Per host: connect and log in.
  std::chrono::milliseconds timeout{30000};          // Per worker: launch to ready.
};

// Starts workers on SSH hosts and returns their pids, host by host in the given order.
// Throws: InvalidArgument (bad machine spec, refused login, unknown or changed host key),
// NotFound (exename missing on a host), Disconnected (host unreachable, worker died). The
// message names every host that failed and why. On failure no worker of this call is added
// and nothing of it is left running on any host. Blocks: until every worker has answered.
std::vector<int> addprocs(const std::vector<Machine>& machines, const SshOptions& options = {});

// Options of addprocs_slurm, passed to srun. Inside an allocation (SLURM_JOB_ID set) the
// workers run as a step of it; otherwise srun asks SLURM for a job of its own.
struct SlurmOptions {
  std::string partition;   // srun --partition
  std::string time;        // srun --time ("10:00")
  std::string job_name = "dj-workers";
  std::vector<std::string> srun_args;  // Any other srun options ("--mem=1G").
  std::string exename;     // dj-worker on the nodes; default: this machine's dj-worker path.
  std::string master_addr;  // Address the nodes reach the master at; default: this host's name.
  std::chrono::milliseconds timeout{60000};  // From srun to every worker ready (queue wait
                                             // included): a job that never starts fails then.
};

// Starts `n` workers with srun (one job step of n tasks) and returns their pids.
// Throws: InvalidArgument (SLURM refused the job: the message carries srun's reason),
// Disconnected (timeout, a task died). On failure no step or job of this call is left.
// Blocks: until every worker has answered.
std::vector<int> addprocs_slurm(int n, const SlurmOptions& options = {});

// Stops workers: asks each to exit, then kills it after `grace`. Their pending Futures fail
// with Disconnected. Throws: InvalidArgument for pid 1 or an unknown pid (nothing is stopped).
// Blocks: until every listed process is reaped.
void rmprocs(const std::vector<int>& pids,
             std::chrono::milliseconds grace = std::chrono::milliseconds(2000));
inline void rmprocs(int pid) { rmprocs(std::vector<int>{pid}); }

// What the master knows about a process.
struct WorkerInfo {
  int pid = 0;
  long os_pid = 0;       // Process id on its host.
  std::string host;      // Host name the worker reported.
  std::string address;   // host:port the worker listens on (empty for pid 1).
  // How the master reaches it: "shared memory" (same host: rings, see docs/ARCHITECTURE.md),
  // "unix socket" (same host with DJ_RING=0), "tcp", or "tunnel" (its manager's own path, such
  // as an SSH forward); empty for pid 1.
  std::string link;
};
// Throws: NotFound for an unknown pid.
WorkerInfo worker_info(int pid);

// Memory a process holds for remote values (for tests and diagnostics).
struct WorkerStats {
  uint64_t stored_values = 0;
  uint64_t stored_bytes = 0;
  uint64_t rss_bytes = 0;
  uint32_t loaded_plugins = 0;
};
// Blocks: one round trip. Throws: NotFound, Disconnected.
WorkerStats worker_stats(int pid);

namespace detail {
struct RefState;  // A remote value's identity and completion state (runtime/remote_ref.hpp).

// Encoded argument list: values inline, Futures as references to where they live.
class ArgBlob {
 public:
  ArgBlob();
  // For a call to `pid`: once the arguments reach wire::kBulkMinBytes and pid is a worker on
  // this host, they are encoded straight into its connection's shared memory (`lent`).
  explicit ArgBlob(int pid);
  template <class T>
  void add_value(const T& v) {
    ser::Writer counter;
    ser::Codec<T>::write(counter, v);
    ser::Writer w(begin_value(counter.size()));
    ser::Codec<T>::write(w, v);
  }
  void add_ref(const std::shared_ptr<RefState>& ref);
  std::string bytes;  // Encoded arguments, see runtime/call_exec.hpp (empty when lent).
  // Futures (RefState) and SharedArrays (SharedState) passed: kept until the call ends, so a
  // handle dropped right after the call is sent cannot free what the call is about to use.
  std::vector<std::shared_ptr<const void>> pinned;
  struct LentRoom;  // runtime/api.cpp: the reserved shared memory holding the bytes instead
  std::shared_ptr<LentRoom> lent;

 private:
  static constexpr size_t kAlignedArgBytes = 4096;  // values this large start 8-byte aligned
  unsigned char* begin_value(size_t n);
  unsigned char* append(size_t n);  // n more bytes at the end, wherever the bytes are
  unsigned char* start();           // the first byte (the argument count)
  int pid_ = 0;
};

struct CallTarget {
  const std::string* name;
  uint64_t id;
  const std::string* signature;
  uint8_t chunk_op = 0;  // wire::ChunkOp: a DArray operation over a chunk (0: none)
  uint64_t signature_id = 0;  // fnv1a64(*signature), when known (0: not computed)
};

std::shared_ptr<RefState> call_store(int pid, const CallTarget& k, ArgBlob&& args);
ser::Bytes call_fetch(int pid, const CallTarget& k, ArgBlob&& args);
// call_fetch of an argument blob already encoded (small arithmetic arguments, see
// remotecall_fetch): no ArgBlob, no allocation, on the same-host express path.
ser::Bytes call_fetch_small(int pid, const CallTarget& k, const unsigned char* blob, size_t size);
// call_fetch_small of a kernel whose result is a number of `want` bytes (not bool): the result
// into `out`, with nothing built on the way on the same-host express path. Throws: the call's
// error; InvalidArgument when the answer is not `want` bytes long.
void call_fetch_number(int pid, const CallTarget& k, const unsigned char* blob, size_t size,
                       void* out, size_t want);
std::shared_ptr<RefState> call_wait(int pid, const CallTarget& k, ArgBlob&& args);
void call_discard(int pid, const CallTarget& k, ArgBlob&& args);
int least_loaded_worker();
std::string fetch_bytes(const std::shared_ptr<RefState>& ref);
void wait_ref(const std::shared_ptr<RefState>& ref);
bool ref_ready(const std::shared_ptr<RefState>& ref);
int ref_owner(const std::shared_ptr<RefState>& ref);
// Runs `f` once the value is computed (at once if it is), on the completing thread.
void on_ready(const std::shared_ptr<RefState>& ref, std::function<void()> f);
void check_kernel(const std::string& plugin, const std::string& name,
                  const std::string& signature);
}  // namespace detail

// A handle to a kernel by name and C++ signature. Cheap to copy. The signature is checked on
// every process that runs it: a mismatch is an InvalidArgument naming both signatures.
template <class Sig>
class Kernel;
template <class R, class... A>
class Kernel<R(A...)> {
 public:
  explicit Kernel(std::string name)
      : name_(std::make_shared<const std::string>(std::move(name))),
        id_(detail::kernel_id(*name_)),
        signature_(&ser::call_signature<R, A...>()),
        signature_id_(detail::signature_id<R, A...>()) {}
  const std::string& name() const { return *name_; }
  const std::string& signature() const { return *signature_; }
  detail::CallTarget target() const { return {name_.get(), id_, signature_, 0, signature_id_}; }

 private:
  std::shared_ptr<const std::string> name_;
  uint64_t id_;
  // Held, not looked up per call: each lookup is a function-local static's guard.
  const std::string* signature_;
  uint64_t signature_id_;
};

// The result of a remote call, living on the process that computed it. Copies share one
// remote value, one local cache and one distributed reference.
// Lifetime: the remote value is freed when the last copy is destroyed.
template <class T>
class Future {
 public:
  Future() = default;
  // dj pid of the process that holds (or will hold) the value.
  int where() const { return detail::ref_owner(state_->ref); }

 private:
  struct State {
    std::shared_ptr<detail::RefState> ref;
    std::mutex mu;
    std::optional<std::conditional_t<std::is_void_v<T>, bool, T>> value;  // guarded by mu
  };
  explicit Future(std::shared_ptr<detail::RefState> ref) : state_(std::make_shared<State>()) {
    state_->ref = std::move(ref);
  }
  std::shared_ptr<State> state_;

  template <class U>
  friend U fetch(const Future<U>&);
  template <class U>
  friend void wait(const Future<U>&);
  template <class U>
  friend bool isready(const Future<U>&);
  template <class U>
  friend const std::shared_ptr<detail::RefState>& ref_of(const Future<U>&);
  template <class U>
  friend Future<U> make_future(std::shared_ptr<detail::RefState>);
};

template <class T>
const std::shared_ptr<detail::RefState>& ref_of(const Future<T>& f) {
  if (!f.state_) throw Error(ErrorKind::InvalidArgument, "dj: use of an empty Future");
  return f.state_->ref;
}
template <class T>
Future<T> make_future(std::shared_ptr<detail::RefState> ref) {
  return Future<T>(std::move(ref));
}

// The value, fetched once and cached (later calls do not touch the network).
// Throws: the call's error (RemoteFailure, Disconnected, ...). Blocks: until computed.
template <class T>
T fetch(const Future<T>& f) {
  const auto& ref = ref_of(f);
  std::lock_guard lock(f.state_->mu);
  if (!f.state_->value) {
    std::string bytes = detail::fetch_bytes(ref);
    if constexpr (std::is_void_v<T>) f.state_->value = true;
    else f.state_->value = ser::from_bytes<T>(bytes);
  }
  if constexpr (!std::is_void_v<T>) return *f.state_->value;
}

// Waits until the value is computed (it stays remote). Throws: the call's error.
template <class T>
void wait(const Future<T>& f) { detail::wait_ref(ref_of(f)); }

// Whether the value is computed (successfully or not). Never blocks.
template <class T>
bool isready(const Future<T>& f) { return detail::ref_ready(ref_of(f)); }

namespace detail {
struct CachedState;  // The encoded value and the copy each worker holds (runtime/parallel.cpp).
std::shared_ptr<CachedState> make_cached(std::string bytes, const std::string& type);
// The Future of the copy on `pid`, shipping it there first if needed. Throws: NotFound,
// Disconnected (pid), InvalidArgument (pid 0: no target known, e.g. a pmap element).
std::shared_ptr<RefState> cached_ref_on(const std::shared_ptr<CachedState>& cached, int pid);
}  // namespace detail

// A value shipped to each worker once and reused by every call there (Julia's CachingPool
// idea for large captured arguments). Pass it where the kernel takes a T. Copies share it.
// Lifetime: the workers' copies are freed when the last copy of the handle is dropped.
template <class T>
class Cached {
 public:
  explicit Cached(const T& value)
      : state_(detail::make_cached(ser::to_bytes(value), ser::type_name<T>())) {}
  const std::shared_ptr<detail::CachedState>& state() const { return state_; }

 private:
  std::shared_ptr<detail::CachedState> state_;
};

// Makes a Cached<T> of `value`.
template <class T>
Cached<T> cache(const T& value) { return Cached<T>(value); }

namespace detail {
template <class P, class Arg>
void add_arg(ArgBlob& blob, int pid, const Arg& arg) {
  if constexpr (std::is_same_v<std::decay_t<Arg>, Future<P>>) {
    blob.add_ref(ref_of(arg));
  } else if constexpr (std::is_same_v<std::decay_t<Arg>, Cached<P>>) {
    blob.add_ref(cached_ref_on(arg.state(), pid));
  } else {
    static_assert(std::is_convertible_v<const Arg&, P>,
                  "dj: argument type does not convert to the kernel's parameter type");
    if constexpr (std::is_same_v<std::decay_t<Arg>, P>) blob.add_value<P>(arg);
    else blob.add_value<P>(static_cast<P>(arg));
    if constexpr (IsSharedArray<P>::value) blob.pinned.push_back(arg.shared_state());
  }
}
template <class... A, class... Args>
ArgBlob encode_args(int pid, const Args&... args) {
  static_assert(sizeof...(A) == sizeof...(Args), "dj: wrong number of arguments for kernel");
  ArgBlob blob(pid);
  (add_arg<A>(blob, pid, args), ...);
  (void)pid;  // unused by kernels without arguments
  return blob;
}
}  // namespace detail

// Runs k(args...) on `pid` and returns at once with a Future to the result. An argument may be
// a Future<P> for a parameter of type P: it is resolved where it lives (nothing moves when it
// lives on `pid`). Throws: NotFound (unknown pid), Disconnected (pid is gone).
template <class R, class... A, class... Args>
Future<R> remotecall(const Kernel<R(A...)>& k, int pid, const Args&... args) {
  return make_future<R>(detail::call_store(pid, k.target(), detail::encode_args<A...>(pid, args...)));
}

namespace detail {
// Arithmetic parameters passed as arithmetic values: their blob is encoded on the stack (the
// same bytes encode_args would make), so a small call allocates nothing.
template <class... A>
inline constexpr bool kSmallArgs = ((std::is_arithmetic_v<A> && sizeof(A) <= 8) && ...) &&
                                   sizeof...(A) <= 8;
template <class... A, class... Args>
size_t encode_small_args(unsigned char* out, const Args&... args) {
  static_assert(sizeof...(A) == sizeof...(Args), "dj: wrong number of arguments for kernel");
  const uint32_t count = sizeof...(A);
  std::memcpy(out, &count, 4);
  size_t at = 4;
  auto one = [&](auto value) {
    ser::Writer w(out + at + 9);
    ser::Codec<decltype(value)>::write(w, value);
    const uint64_t len = w.size();
    out[at] = 0;  // a value (runtime/arg_blob.hpp)
    std::memcpy(out + at + 1, &len, 8);
    at += 9 + w.size();
  };
  (one(static_cast<A>(args)), ...);
  (void)one;  // unused by kernels without arguments
  return at;
}
}  // namespace detail

// remotecall + fetch in one round trip; nothing is kept on the worker.
// Blocks: until the result arrives. Throws: the call's error.
template <class R, class... A, class... Args>
R remotecall_fetch(const Kernel<R(A...)>& k, int pid, const Args&... args) {
  if constexpr (detail::kSmallArgs<A...> && (std::is_arithmetic_v<Args> && ...)) {
    unsigned char blob[4 + sizeof...(A) * (9 + 8)];
    const size_t size = detail::encode_small_args<A...>(blob, args...);
    if constexpr (std::is_arithmetic_v<R> && !std::is_same_v<R, bool>) {
      R value;  // a number's encoding is its bytes (bool's codec checks its byte: not here)
      detail::call_fetch_number(pid, k.target(), blob, size, &value, sizeof value);
      return value;
    } else {
      const ser::Bytes bytes = detail::call_fetch_small(pid, k.target(), blob, size);
      if constexpr (!std::is_void_v<R>) return ser::from_bytes<R>(bytes);
    }
  } else {
    const ser::Bytes bytes =
        detail::call_fetch(pid, k.target(), detail::encode_args<A...>(pid, args...));
    if constexpr (!std::is_void_v<R>) return ser::from_bytes<R>(bytes);
  }
}

// remotecall, then wait until the result is computed (it stays on the worker).
template <class R, class... A, class... Args>
Future<R> remotecall_wait(const Kernel<R(A...)>& k, int pid, const Args&... args) {
  return make_future<R>(detail::call_wait(pid, k.target(), detail::encode_args<A...>(pid, args...)));
}

// Fire and forget: runs k(args...) on pid; the result is dropped and an error is printed on
// that worker's stderr (which the master shows as "From worker N:").
template <class R, class... A, class... Args>
void remote_do(const Kernel<R(A...)>& k, int pid, const Args&... args) {
  detail::call_discard(pid, k.target(), detail::encode_args<A...>(pid, args...));
}

// Julia's @spawnat: remotecall with the pid first.
template <class R, class... A, class... Args>
Future<R> spawnat(int pid, const Kernel<R(A...)>& k, const Args&... args) {
  return remotecall(k, pid, args...);
}

// Julia's @spawn: remotecall on the worker with the fewest calls in flight.
template <class R, class... A, class... Args>
Future<R> spawn(const Kernel<R(A...)>& k, const Args&... args) {
  return remotecall(k, detail::least_loaded_worker(), args...);
}

// A plugin loaded on every process, from which typed kernel handles are taken.
class Plugin {
 public:
  Plugin(std::string path, std::vector<std::string> kernels)
      : path_(std::move(path)), kernels_(std::move(kernels)) {}
  const std::string& path() const { return path_; }
  // Names of the kernels the plugin registers.
  const std::vector<std::string>& kernel_names() const { return kernels_; }
  // A handle to kernel `name`. Throws: NotFound (no such kernel; the message lists the ones
  // there are), InvalidArgument (registered with another signature; both are named).
  template <class Sig>
  Kernel<Sig> kernel(const std::string& name) const {
    Kernel<Sig> k(name);
    detail::check_kernel(path_, name, k.signature());
    return k;
  }

 private:
  std::string path_;
  std::vector<std::string> kernels_;
};

// Loads the plugin at `path` on the master and every worker (Julia's @everywhere using ...).
// The master sends the file's bytes; workers never need the file. Loading the same bytes again
// is a no-op; loading rebuilt bytes replaces its kernels for calls issued afterwards.
// Throws: NotFound (no file), InvalidArgument naming the file and why it cannot be loaded
// (not ELF, unresolved symbol, no DJ_PLUGIN, incompatible ABI); RemoteFailure if a worker
// refuses it. Blocks: until every process has loaded it.
Plugin everywhere(const std::string& path);

}  // namespace dj

#include "dj/channel.hpp"   // RemoteChannel
#include "dj/parallel.hpp"  // pmap, distributed loops, worker pools, interrupt
#include "dj/darray.hpp"    // DArray: distribute, map, reduce, sum
