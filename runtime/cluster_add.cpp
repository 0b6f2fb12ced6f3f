// Adding workers: launching them through a manager, the handshake with each (its "listening
// on" line, the connection, Hello and Welcome, the ring), and telling workers about each other.
#include "cluster.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>

#include "identity.hpp"
#include "managers/local_manager.hpp"
#include "sys.hpp"

namespace dj::detail {
namespace {

using Clock = std::chrono::steady_clock;

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

}  // namespace dj::detail
