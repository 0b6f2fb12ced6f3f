// The public free functions of dj.hpp, forwarding to the master's Cluster.
#include "dj/dj.hpp"

#include <algorithm>
#include <cstring>

#include "cluster.hpp"
#include "managers/local_manager.hpp"
#include "managers/remote_managers.hpp"

namespace dj {

const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::InvalidArgument: return "InvalidArgument";
    case ErrorKind::NotFound: return "NotFound";
    case ErrorKind::RemoteFailure: return "RemoteFailure";
    case ErrorKind::Disconnected: return "Disconnected";
    case ErrorKind::ResourceExhausted: return "ResourceExhausted";
    case ErrorKind::Internal: return "Internal";
    case ErrorKind::Cancelled: return "Cancelled";
  }
  return "Unknown";
}

bool interrupted() noexcept { return detail::is_interrupted(); }

void check_interrupt() {
  if (detail::is_interrupted()) {
    throw Error(ErrorKind::Cancelled, "interrupted by interrupt()", myid());
  }
}

std::vector<int> procs() {
  std::vector<int> pids{1};
  for (int pid : detail::Cluster::instance().workers()) pids.push_back(pid);
  return pids;
}

std::vector<int> workers() {
  auto pids = detail::Cluster::instance().workers();
  if (pids.empty()) pids.push_back(1);
  return pids;
}

int nprocs() { return static_cast<int>(procs().size()); }
int nworkers() { return static_cast<int>(workers().size()); }

std::vector<int> addprocs(int n, const LocalOptions& options) {
  auto& cluster = detail::Cluster::instance();
  if (n < 1) {
    throw Error(ErrorKind::InvalidArgument,
                "addprocs: worker count must be at least 1, got " + std::to_string(n));
  }
  LocalManager manager(options.exename.empty() ? LocalManager::default_exename()
                                               : options.exename);
  return cluster.add_workers(manager, n, options.timeout);  // marks them local
}

std::vector<int> addprocs(ClusterManager& manager, int n, std::chrono::milliseconds timeout) {
  auto& cluster = detail::Cluster::instance();
  if (n < 1) {
    throw Error(ErrorKind::InvalidArgument,
                "addprocs: worker count must be at least 1, got " + std::to_string(n));
  }
  return cluster.add_workers(manager, n, timeout);
}

std::vector<int> addprocs(const std::vector<Machine>& machines, const SshOptions& options) {
  auto& cluster = detail::Cluster::instance();
  auto ssh = detail::make_ssh_manager(machines, options, LocalManager::default_exename());
  return cluster.add_workers(*ssh.manager, ssh.fixed_count, options.timeout);
}

std::vector<int> addprocs_slurm(int n, const SlurmOptions& options) {
  auto& cluster = detail::Cluster::instance();
  if (n < 1) {
    throw Error(ErrorKind::InvalidArgument,
                "addprocs_slurm: worker count must be at least 1, got " + std::to_string(n));
  }
  auto manager = detail::make_slurm_manager(options, LocalManager::default_exename());
  return cluster.add_workers(*manager, n, options.timeout);
}

void set_topology(Topology t) { detail::Cluster::instance().set_topology(t); }
Topology topology() { return detail::Cluster::instance().topology(); }
void set_heartbeat_timeout(std::chrono::milliseconds timeout) {
  if (timeout.count() < 0) {
    throw Error(ErrorKind::InvalidArgument, "set_heartbeat_timeout: timeout must not be negative");
  }
  detail::Cluster::instance().set_heartbeat_timeout(timeout);
}

void rmprocs(const std::vector<int>& pids, std::chrono::milliseconds grace) {
  detail::Cluster::instance().rmprocs(pids, grace);
}

WorkerInfo worker_info(int pid) { return detail::Cluster::instance().info(pid); }
WorkerStats worker_stats(int pid) { return detail::Cluster::instance().stats(pid); }
Plugin everywhere(const std::string& path) { return detail::Cluster::instance().everywhere(path); }

namespace detail {

ArgBlob::ArgBlob() : bytes(4, '\0') {}  // Room for the argument count.
ArgBlob::ArgBlob(int pid) : bytes(4, '\0'), pid_(pid) {}

unsigned char* ArgBlob::start() {
  return lent ? lent->data : reinterpret_cast<unsigned char*>(bytes.data());
}

unsigned char* ArgBlob::append(size_t n) {
  if (lent && lent->size + n > lent->cap) {
    // More than the room reserved: back to a string (rare: a large value, then more).
    bytes.assign(reinterpret_cast<const char*>(lent->data), lent->size);
    lent.reset();
  }
  if (!lent && pid_ > 1 && bytes.size() + n >= wire::kBulkMinBytes) {
    // Room for this value and a little more, so that small arguments after it still fit.
    lent = Cluster::instance().lend_room(pid_, bytes.size() + n + (64 << 10));
    if (lent) {
      std::memcpy(lent->data, bytes.data(), bytes.size());
      lent->size = bytes.size();
      bytes.clear();
    }
  }
  if (lent) {
    unsigned char* at = lent->data + lent->size;
    lent->size += n;
    return at;
  }
  size_t at = bytes.size();
  // Room for a few small arguments at once: one allocation, not one per doubling.
  if (bytes.capacity() < at + n) bytes.reserve(std::max<size_t>(at + n, 120));
  bytes.resize(at + n);
  return reinterpret_cast<unsigned char*>(bytes.data() + at);
}

unsigned char* ArgBlob::begin_value(size_t n) {
  // A large value starts 8-byte aligned (tag 2 and padding), so that the worker can read an
  // array in it in place (dj::ArrayView); a small one is packed (tag 0).
  const bool align = n >= kAlignedArgBytes;
  const size_t offset = lent ? lent->size : bytes.size();
  const size_t pad = align ? (8 - (offset + 2 + 8) % 8) % 8 : 0;
  const size_t head = align ? 2 + pad + 8 : 1 + 8;
  unsigned char* at = append(head + n);
  uint32_t count;
  std::memcpy(&count, start(), 4);
  ++count;
  std::memcpy(start(), &count, 4);
  uint64_t len = n;
  if (align) {
    at[0] = 2;
    at[1] = static_cast<unsigned char>(pad);
    std::memset(at + 2, 0, pad);
  } else {
    at[0] = 0;
  }
  std::memcpy(at + head - 8, &len, 8);
  return at + head;
}

void ArgBlob::add_ref(const std::shared_ptr<RefState>& ref) {
  unsigned char* at = append(1 + 4 + 8);
  uint32_t count;
  std::memcpy(&count, start(), 4);
  ++count;
  std::memcpy(start(), &count, 4);
  int32_t owner = ref->owner;
  uint64_t id = ref->id;
  at[0] = 1;
  std::memcpy(at + 1, &owner, 4);
  std::memcpy(at + 5, &id, 8);
  pinned.push_back(ref);
}

std::shared_ptr<RefState> call_store(int pid, const CallTarget& k, ArgBlob&& args) {
  return Cluster::instance().call_store(pid, k, std::move(args));
}
ser::Bytes call_fetch(int pid, const CallTarget& k, ArgBlob&& args) {
  return Cluster::instance().call_fetch(pid, k, std::move(args));
}
ser::Bytes call_fetch_small(int pid, const CallTarget& k, const unsigned char* blob, size_t size) {
  return Cluster::instance().call_fetch_small(
      pid, k, std::string_view(reinterpret_cast<const char*>(blob), size));
}
std::shared_ptr<RefState> call_wait(int pid, const CallTarget& k, ArgBlob&& args) {
  auto ref = Cluster::instance().call_store(pid, k, std::move(args));
  if (pid != 1) Cluster::instance().flush_corked(pid);
  ref->wait();
  return ref;
}
void call_discard(int pid, const CallTarget& k, ArgBlob&& args) {
  Cluster::instance().call_discard(pid, k, std::move(args));
}
int least_loaded_worker() { return Cluster::instance().least_loaded(); }
std::string fetch_bytes(const std::shared_ptr<RefState>& ref) {
  return Cluster::instance().fetch(*ref);
}
void wait_ref(const std::shared_ptr<RefState>& ref) {
  if (ref->owner != 1 && !ref_ready(ref)) Cluster::instance().flush_corked(ref->owner);
  ref->wait();
}
bool ref_ready(const std::shared_ptr<RefState>& ref) {
  std::lock_guard lock(ref->mu);
  return ref->status != RefStatus::kPending;
}
int ref_owner(const std::shared_ptr<RefState>& ref) { return ref->owner; }
void on_ready(const std::shared_ptr<RefState>& ref, std::function<void()> f) {
  {
    std::lock_guard lock(ref->mu);
    if (ref->status == RefStatus::kPending) {
      ref->on_ready.push_back(std::move(f));
      return;
    }
  }
  f();
}
void check_kernel(const std::string& plugin, const std::string& name,
                  const std::string& signature) {
  Cluster::instance().check_kernel(plugin, name, signature);
}

}  // namespace detail
}  // namespace dj
