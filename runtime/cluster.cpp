// The worker table: creating the cluster, adding workers (handshake), removing them, and
// stopping everything when the master ends.
#include "cluster.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>

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

int ms_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<long>(left.count(), 0));
}

// Reads one line from a worker's stdout within the deadline. Returns nullopt on EOF.
std::optional<std::string> read_line(int fd, Clock::time_point deadline, const std::string& who,
                                     std::string& rest) {
  std::string line;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, ms_left(deadline));
    if (n == 0) throw Error(ErrorKind::Disconnected, who + " did not start in time");
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll", who + " stdout");
    }
    char buf[512];
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return std::nullopt;
    line.append(buf, static_cast<size_t>(r));
    auto nl = line.find('\n');
    if (nl != std::string::npos) {
      rest = line.substr(nl + 1);
      line.resize(nl);
      return line;
    }
  }
}

std::string drain_text(int fd) {
  std::string text;
  for (int i = 0; i < 50; ++i) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) break;
    char buf[1024];
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r <= 0) break;
    text.append(buf, static_cast<size_t>(r));
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

}  // namespace

WorkerLink::WorkerLink(int worker_pid, std::unique_ptr<LaunchedWorker> proc, Fd sock)
    : pid(worker_pid), process(std::move(proc)), socket(std::move(sock)), reader(socket.get()) {}

namespace {
std::atomic<uint64_t> g_payload_bytes_sent{0};
}

uint64_t Cluster::payload_bytes_sent() { return g_payload_bytes_sent.load(); }

bool WorkerLink::cork(const wire::Message& message, const std::string& payload) {
  g_payload_bytes_sent.fetch_add(payload.size());
  std::lock_guard lock(write_mu);
  bool first = corked.empty();
  wire::append_frame(corked, message, payload.data(), payload.size());
  any_corked.store(true, std::memory_order_relaxed);
  return first;
}

void WorkerLink::write_corked_locked() {
  if (corked.empty()) return;
  std::string out;
  out.swap(corked);
  any_corked.store(false, std::memory_order_relaxed);
  wire::write_framed(outlet(), out);
}

bool WorkerLink::flush() {
  std::lock_guard lock(write_mu);
  try {
    write_corked_locked();
    return true;
  } catch (const Error&) {
    return false;
  }
}

bool WorkerLink::send(const wire::Message& message, const std::string& payload) {
  g_payload_bytes_sent.fetch_add(payload.size());
  std::lock_guard lock(write_mu);
  try {
    write_corked_locked();  // In order: what was corked goes first.
    if (!bulk || !arena.try_send(outlet(), message,
                                 reinterpret_cast<const unsigned char*>(payload.data()),
                                 payload.size())) {
      wire::write_frame(outlet(), message, payload);
    }
    return true;
  } catch (const Error&) {
    return false;
  }
}

bool WorkerLink::send_args(const wire::Message& message, ArgBlob& args) {
  if (!args.lent) return send(message, args.bytes);
  auto& room = *args.lent;
  if (room.link.get() != this) {  // Reserved on another link: cannot happen, but stay correct.
    std::string copy(reinterpret_cast<const char*>(room.data), room.size);
    args.lent.reset();
    return send(message, copy);
  }
  g_payload_bytes_sent.fetch_add(room.size);
  std::lock_guard lock(write_mu);
  try {
    write_corked_locked();  // In order: what was corked goes first.
    room.sent = true;  // sent or not, send_reserved gives the arena back on failure
    arena.send_reserved(outlet(), message, room.size);
    return true;
  } catch (const Error&) {
    return false;
  }
}

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

std::shared_ptr<WorkerLink> Cluster::start_one(std::unique_ptr<LaunchedWorker> w, int pid,
                                               Clock::time_point deadline) {
  std::string host = w->host();
  std::string who = "worker " + std::to_string(pid) + " (" + (host.empty() ? "" : host + ", ") +
                    "os pid " + std::to_string(w->os_pid()) + ")";
  std::string cookie_line = cookie_ + "\n";
  try {
    write_full(w->stdin_fd(), cookie_line.data(), cookie_line.size());
  } catch (const Error&) {
    // The process already died; its stderr says why.
  }
  std::string rest;
  auto line = read_line(w->stdout_fd(), deadline, who, rest);
  const std::string kPrefix = "dj-worker listening on ";
  if (!line || line->rfind(kPrefix, 0) != 0) {
    std::string err = drain_text(w->stderr_fd());
    w->wait_for(std::chrono::milliseconds(200));
    std::string reason = w->exit_reason();
    throw Error(ErrorKind::Disconnected,
                who + " failed to start" + (reason.empty() ? "" : " (" + reason + ")") +
                    (err.empty() ? "" : ": " + err) +
                    (line ? " [first output line: '" + *line + "']" : ""),
                pid);
  }
  // "HOST:PORT unix:@NAME host:IDENTITY": a worker on this host (same kernel and /dev/shm) is
  // reached through its abstract Unix socket, any other through TCP.
  std::istringstream fields(line->substr(kPrefix.size()));
  std::string address, unix_field, host_field;
  fields >> address >> unix_field >> host_field;
  auto [worker_host, port] = split_host_port(address);
  auto connect_timeout = std::chrono::milliseconds(std::max(ms_left(deadline), 1));
  bool same_host = unix_field.rfind("unix:@", 0) == 0 && host_field == "host:" + host_identity();
  Fd sock;
  bool direct = true;
  if (same_host) {
    sock = connect_unix_abstract(unix_field.substr(6), connect_timeout);
  } else if (int fd = w->open_connection(worker_host, port, connect_timeout); fd >= 0) {
    sock = Fd(fd);  // The manager's own path to the worker (an SSH tunnel).
    direct = false;
  } else {
    sock = connect_tcp(worker_host, port, connect_timeout);
  }
  wire::write_frame(sock.get(), wire::Hello{cookie_, pid, 1, wire::kProtocolVersion});
  set_receive_timeout(sock.get(), std::chrono::milliseconds(std::max(ms_left(deadline), 1)));
  auto frame = wire::read_frame(sock.get());
  const auto* welcome = frame ? std::get_if<wire::Welcome>(&frame->message) : nullptr;
  if (!welcome || welcome->pid != pid) {
    throw Error(ErrorKind::Disconnected, who + " at " + address + " refused the handshake", pid);
  }
  std::shared_ptr<wire::RingLink> ring;
  if (same_host && wire::rings_enabled()) {
    std::string refused;
    try {
      ring = wire::offer_ring(sock.get(), refused);
    } catch (const Error& e) {
      throw Error(ErrorKind::Disconnected, who + " " + e.what(), pid);
    }
    if (!ring) log_line(who + " refused shared memory for its connection (" + refused + "); using its socket");
  }
  set_receive_timeout(sock.get(), std::chrono::milliseconds(0));
  auto link = std::make_shared<WorkerLink>(pid, std::move(w), std::move(sock));
  link->info = {pid, static_cast<long>(welcome->os_pid), welcome->hostname, address,
                ring ? "shared memory" : same_host ? "unix socket" : direct ? "tcp" : "tunnel"};
  link->host_identity = welcome->boot_id;
  link->direct = direct;
  link->peer = {pid, address,
                unix_field.rfind("unix:@", 0) == 0 ? unix_field.substr(6) : std::string(),
                welcome->boot_id};
  link->out_partial = rest;
  if (same_host) {
    link->bulk = true;
    std::weak_ptr<WorkerLink> weak = link;
    link->reader.accept_bulk([weak](uint64_t token) {
      if (auto l = weak.lock()) l->send(wire::BulkFree{token});
    });
  }
  if (ring) {
    link->ring = ring;
    link->reader.use_ring(std::move(ring));
  } else {
    link->reader.spin_before_blocking(true);  // a borrower waits for its reply without a wake-up
  }
  return link;
}

std::vector<int> Cluster::add_workers(ClusterManager& manager, int n,
                                      std::chrono::milliseconds timeout) {
  if (n < 0) {
    throw Error(ErrorKind::InvalidArgument,
                "addprocs: worker count must be at least 1, got " + std::to_string(n));
  }
  std::lock_guard serial(load_mu_);
  std::vector<std::unique_ptr<LaunchedWorker>> launched;
  try {
    launched = manager.launch(n);  // Throws with nothing started.
  } catch (const Error& e) {
    throw Error(e.kind(), "addprocs on " + manager.describe() + " failed; no worker was added: " +
                              e.what());
  }
  if (n == 0) n = static_cast<int>(launched.size());  // The manager decided (SSH "auto").
  if (launched.size() != static_cast<size_t>(n) || n == 0) {
    throw Error(ErrorKind::Internal, manager.describe() + " launched " +
                                         std::to_string(launched.size()) + " workers, not " +
                                         std::to_string(n));
  }
  int first_pid;
  {
    std::lock_guard lock(mu_);
    first_pid = next_pid_;
    next_pid_ += n;  // Reserved even on failure: pids are never reused in a run.
  }
  auto deadline = Clock::now() + timeout;
  std::vector<std::shared_ptr<WorkerLink>> links;
  try {
    for (int i = 0; i < n; ++i) {
      links.push_back(start_one(std::move(launched[static_cast<size_t>(i)]), first_pid + i,
                                deadline));
    }
  } catch (const Error& e) {
    // Every launched worker (linked or not) is killed and reaped as its owner goes out of scope.
    throw Error(e.kind(), "addprocs(" + std::to_string(n) + ") on " + manager.describe() +
                              " failed; no worker was added: " + e.what(),
                e.worker());
  }
  const bool local = dynamic_cast<LocalManager*>(&manager) != nullptr;
  {
    std::lock_guard lock(mu_);
    for (auto& link : links) {
      link->is_local = local;
      links_[link->pid] = link;
    }
  }
  for (auto& link : links) watch(link);
  std::vector<ShippedPlugin> plugins;
  {
    std::lock_guard lock(mu_);
    plugins = plugins_;
  }
  try {
    load_plugins_on(links, plugins);
  } catch (const Error& e) {
    std::vector<int> pids;
    for (auto& link : links) pids.push_back(link->pid);
    rmprocs(pids, std::chrono::milliseconds(500));
    throw Error(e.kind(), std::string("addprocs: a new worker could not load the plugins "
                                      "loaded before; no worker was added: ") + e.what());
  }
  send_peers(links);
  std::vector<int> pids;
  for (auto& link : links) pids.push_back(link->pid);
  return pids;
}

void Cluster::send_peers(const std::vector<std::shared_ptr<WorkerLink>>& added) {
  std::vector<std::shared_ptr<WorkerLink>> all;
  {
    std::lock_guard lock(mu_);
    if (topology_ == Topology::master_worker) return;
    for (auto& [pid, link] : links_) {
      if (link->direct) all.push_back(link);
    }
  }
  wire::Peers everyone, newcomers;
  for (auto& link : all) everyone.entries.push_back(link->peer);
  for (auto& link : added) {
    if (link->direct) newcomers.entries.push_back(link->peer);
  }
  // In messages of at most kMaxPeersPerMessage entries.
  auto send_all = [](WorkerLink& link, const wire::Peers& peers) {
    for (size_t at = 0; at < peers.entries.size(); at += wire::kMaxPeersPerMessage) {
      size_t end = std::min(peers.entries.size(), at + wire::kMaxPeersPerMessage);
      link.send(wire::Peers{{peers.entries.begin() + static_cast<long>(at),
                             peers.entries.begin() + static_cast<long>(end)}});
    }
  };
  for (auto& link : all) {
    bool is_new = std::find(added.begin(), added.end(), link) != added.end();
    send_all(*link, is_new ? everyone : newcomers);
  }
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
