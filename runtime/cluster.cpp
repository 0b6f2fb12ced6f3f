// The worker table: creating the cluster, removing workers, and stopping everything when the
// master ends. Adding workers (the handshake) is in cluster_add.cpp, a link's writes in
// worker_link.cpp.
#include "cluster.hpp"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "identity.hpp"
#include "managers/local_manager.hpp"
#include "shm/sweep.hpp"
#include "sys.hpp"

namespace dj::detail {
namespace {

using Clock = std::chrono::steady_clock;
std::atomic<Cluster*> g_cluster{nullptr};
// Set once instance() has run its first-use setup to the end: later calls return it at once
// (a worker process never sets it, as instance() throws there before).
std::atomic<Cluster*> g_ready_cluster{nullptr};

}  // namespace

std::shared_ptr<ArgBlob::LentRoom> Cluster::lend_room(int pid, size_t bytes) {
  std::shared_ptr<WorkerLink> link;
  {
    std::lock_guard lock(mu_);
    auto it = links_.find(pid);
    if (it == links_.end() || !it->second->bulk) return nullptr;
    link = it->second;
  }
  unsigned char* room = link->arena.reserve(bytes);
  if (!room) return nullptr;
  auto lent = std::make_shared<ArgBlob::LentRoom>();
  lent->link = std::move(link);
  lent->data = room;
  lent->cap = bytes;
  return lent;
}

Cluster& Cluster::instance() {
  if (Cluster* ready = g_ready_cluster.load(std::memory_order_acquire)) return *ready;
  if (myid() != 1) {
    throw Error(ErrorKind::InvalidArgument,
                "this dj call manages the cluster and can only run on the master (pid 1), "
                "not on worker " + std::to_string(myid()));
  }
  static Cluster* cluster = [] {
    auto* c = new Cluster();
    g_cluster.store(c);
    std::atexit([] {
      if (Cluster* c = g_cluster.load()) c->shutdown();
    });
    return c;
  }();
  static const bool procs_from_env = [] {
    // dj-run -p N: the master starts with N local workers.
    const char* env = std::getenv("DJ_PROCS");
    if (!env) return true;
    std::string value = env;
    ::unsetenv("DJ_PROCS");  // Not inherited by workers or by programs the master starts.
    char* end = nullptr;
    long n = std::strtol(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || n < 0 || n > 4096) {
      throw Error(ErrorKind::InvalidArgument,
                  "DJ_PROCS='" + value + "' is not a worker count (0..4096)");
    }
    if (n > 0) {
      LocalManager manager(LocalManager::default_exename());
      cluster->add_workers(manager, static_cast<int>(n), std::chrono::milliseconds(20000));
    }
    return true;
  }();
  static const bool remote_from_env = [] {
    cluster->add_workers_from_env();
    return true;
  }();
  (void)remote_from_env;
  (void)procs_from_env;
  g_ready_cluster.store(cluster, std::memory_order_release);
  return *cluster;
}

Cluster* Cluster::existing() noexcept {
  Cluster* c = g_cluster.load();
  return c && !c->stopping_.load() ? c : nullptr;
}

Cluster::Cluster()
    : cookie_((ignore_sigpipe(), to_hex_cookie())),
      ctx_{registry_, store_, 1,
           [this](int owner, uint64_t ref) { return fetch_from(owner, ref); },
           &segments_, {}, {}},
      wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)) {
  // Segments of masters that died before unlinking them (SIGKILL while workers mapped one),
  // including one whose OS pid this process now has: it creates none before this point.
  sweep_stale_segments("/dev/shm", static_cast<long>(::getpid()));
  if (!wake_fd_) throw_errno("eventfd", "master I/O thread");
  if (!epoll_fd_) throw_errno("epoll_create1", "master I/O thread");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;
  sys_check("epoll_ctl", "eventfd", [&] {
    return ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &ev);
  });
  io_ = std::thread([this] { io_main(); });
  install_sigint_handler();
}

namespace {
std::atomic<int> g_sigint_fd{-1};
std::atomic<bool> g_sigint_pending{false};

void on_sigint(int) {
  // Async-signal-safe: set a flag and wake the I/O thread, which decides what Ctrl-C means.
  g_sigint_pending.store(true);
  uint64_t one = 1;
  int fd = g_sigint_fd.load();
  if (fd >= 0) {
    ssize_t ignored = ::write(fd, &one, sizeof one);
    (void)ignored;
  }
}
}  // namespace

void Cluster::install_sigint_handler() {
  // Ctrl-C while workers are busy interrupts them (their calls fail with Cancelled, and what
  // the master waits on throws); Ctrl-C with nothing running ends the program as usual. Only
  // when the program has not chosen its own SIGINT handler.
  struct sigaction current {};
  if (::sigaction(SIGINT, nullptr, &current) != 0 || current.sa_handler != SIG_DFL) return;
  g_sigint_fd = wake_fd_.get();
  struct sigaction action {};
  action.sa_handler = &on_sigint;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &action, nullptr);
}

bool Cluster::take_sigint() { return g_sigint_pending.exchange(false); }

void Cluster::ignore_sigpipe() {
  // A worker that dies while the master writes to its pipe or socket must be an error, not the
  // end of the master: unless the program chose a SIGPIPE handler, dj ignores SIGPIPE.
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    ::signal(SIGPIPE, SIG_IGN);
  }
}

std::string Cluster::to_hex_cookie() {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string raw = random_bytes(32), hex;
  for (unsigned char c : raw) {
    hex += kDigits[c >> 4];
    hex += kDigits[c & 15];
  }
  return hex;
}

std::vector<int> Cluster::workers() const {
  std::lock_guard lock(mu_);
  std::vector<int> pids;
  for (const auto& [pid, link] : links_) pids.push_back(pid);
  return pids;
}

std::shared_ptr<WorkerLink> Cluster::find_locked(int pid) const {
  auto it = links_.find(pid);
  if (it != links_.end()) return it->second;
  auto gone = gone_.find(pid);
  if (gone != gone_.end()) {
    throw Error(ErrorKind::Disconnected,
                "worker " + std::to_string(pid) + " is gone: " + gone->second, pid);
  }
  std::string known;
  for (const auto& [p, l] : links_) known += (known.empty() ? "" : ", ") + std::to_string(p);
  throw Error(ErrorKind::NotFound, "no process with pid " + std::to_string(pid) +
                                       " (workers: " + (known.empty() ? "none" : known) + ")",
              pid);
}

void Cluster::set_topology(Topology topology) {
  std::lock_guard lock(mu_);
  if (topology == topology_) return;
  if (next_pid_ > 2) {
    throw Error(ErrorKind::InvalidArgument,
                "set_topology: workers were already added with topology " +
                    std::string(topology_ == Topology::all_to_all ? "all_to_all"
                                                                  : "master_worker") +
                    "; set the topology before the first addprocs");
  }
  topology_ = topology;
}

Topology Cluster::topology() const {
  std::lock_guard lock(mu_);
  return topology_;
}

void Cluster::rmprocs(const std::vector<int>& pids, std::chrono::milliseconds grace) {
  std::vector<std::shared_ptr<WorkerLink>> targets;
  {
    std::lock_guard lock(mu_);
    for (int pid : pids) {
      if (pid == 1) {
        throw Error(ErrorKind::InvalidArgument,
                    "rmprocs: pid 1 is the master and cannot be removed", 1);
      }
      targets.push_back(find_locked(pid));
    }
  }
  for (auto& link : targets) {
    link->removing = true;
    link->send(wire::Shutdown{"rmprocs"});
  }
  auto deadline = Clock::now() + grace;
  for (auto& link : targets) {
    if (!link->process->wait_for(std::chrono::milliseconds(ms_left(deadline)))) {
      log_line("worker " + std::to_string(link->pid) + " did not exit within " +
               std::to_string(grace.count()) + " ms of rmprocs; killing it");
      link->process->kill();
    }
    retire(link, "");
  }
}

WorkerInfo Cluster::info(int pid) const {
  if (pid == 1) return {1, static_cast<long>(::getpid()), host_name(), "", ""};
  std::lock_guard lock(mu_);
  return find_locked(pid)->info;
}

std::shared_ptr<Reply> Cluster::request(const std::shared_ptr<WorkerLink>& link,
                                        const wire::Message& message, uint64_t id,
                                        const std::string& payload) {
  auto reply = std::make_shared<Reply>();
  {
    std::lock_guard lock(mu_);
    link->replies[id] = reply;
  }
  link->send(message, payload);  // A failed send is answered by retire().
  return reply;
}

WorkerStats Cluster::stats(int pid) {
  if (pid == 1) {
    auto s = store_.stats();
    return {s.values, s.bytes, rss_bytes(), static_cast<uint32_t>(registry_.plugin_count())};
  }
  std::shared_ptr<WorkerLink> link;
  uint64_t id;
  {
    std::lock_guard lock(mu_);
    link = find_locked(pid);
    id = next_id_locked();
  }
  auto reply = request(link, wire::StatsRequest{id}, id);
  const wire::Message& m = reply->wait();
  if (const auto* r = std::get_if<wire::Result>(&m)) throw to_error(r->error);
  const auto& s = std::get<wire::StatsReply>(m);
  return {s.stored_values, s.stored_bytes, s.rss_bytes, s.loaded_plugins};
}

void Cluster::shutdown() noexcept {
  if (stopping_.exchange(true)) return;
  std::vector<std::shared_ptr<WorkerLink>> links;
  {
    std::lock_guard lock(mu_);
    for (auto& [pid, link] : links_) links.push_back(link);
  }
  for (auto& link : links) {
    link->removing = true;  // Their exit is expected: no "worker N exited" lines.
    link->send(wire::Shutdown{"master exiting"});
    link->process->close_stdin();
  }
  auto deadline = Clock::now() + std::chrono::milliseconds(500);
  for (auto& link : links) {
    if (!link->process->wait_for(std::chrono::milliseconds(ms_left(deadline)))) {
      link->process->kill();
    }
  }
  wake();
  if (io_.joinable()) io_.join();
  local_.stop();
  std::map<int, std::shared_ptr<WorkerLink>> doomed;
  {
    std::lock_guard lock(mu_);
    doomed.swap(links_);
    for (auto& [pid, link] : doomed) unlist_locked(link);
  }
  reclaim_unlisted();
}

}  // namespace dj::detail
