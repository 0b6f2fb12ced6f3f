// The master's I/O thread: reads every worker's connection and stdio, completes replies and
// Futures, forwards FetchRef requests between workers, and retires workers that go away.
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "channels.hpp"
#include "cluster.hpp"
#include "identity.hpp"
#include "sys.hpp"

namespace dj::detail {

void Cluster::wake() noexcept {
  uint64_t one = 1;
  ssize_t ignored = ::write(wake_fd_.get(), &one, sizeof one);
  (void)ignored;
}

namespace {
// epoll data: 0 is the wake eventfd; otherwise pid << 2 | stream (0 socket, 1 stdout, 2 stderr,
// 3 the doorbell of the link's shared-memory ring).
constexpr uint64_t kSocket = 0, kStdout = 1, kStderr = 2, kBell = 3;
constexpr int64_t kRearmDelayNs = 1000000;  // 1 ms without a borrow: the I/O thread reads again
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
uint64_t tag(int pid, uint64_t stream) { return static_cast<uint64_t>(pid) << 2 | stream; }
}  // namespace

void Cluster::on_ctrl_c() {
  std::vector<std::shared_ptr<WorkerLink>> busy;
  {
    std::lock_guard lock(mu_);
    for (auto& [pid, link] : links_) {
      if (link->calls_in_flight() > 0) busy.push_back(link);
    }
  }
  if (busy.empty()) {
    // Nothing to cancel: Ctrl-C means what it always means.
    ::signal(SIGINT, SIG_DFL);
    ::raise(SIGINT);
    return;
  }
  std::string pids;
  for (auto& link : busy) {
    link->send(wire::Interrupt{});
    pids += (pids.empty() ? "" : ", ") + std::to_string(link->pid);
  }
  log_line("Ctrl-C: interrupting the kernels running on worker(s) " + pids +
           " (press Ctrl-C again when idle to quit)");
}

void Cluster::watch(const std::shared_ptr<WorkerLink>& link) {
  auto add = [&](int fd, uint32_t events, uint64_t stream) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = tag(link->pid, stream);
    if (fd >= 0 && ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      log_line("epoll_ctl(ADD, worker " + std::to_string(link->pid) + "): " + std::strerror(errno));
    }
  };
  // One-shot: the thread that handles a readable socket re-arms it after reading, so the I/O
  // thread and a borrowing user thread never both wake for the same bytes.
  add(link->socket.get(), EPOLLIN | EPOLLONESHOT, kSocket);
  if (link->ring) add(link->ring->bell_fd(), EPOLLIN | EPOLLONESHOT, kBell);
  add(link->process->stdout_fd(), EPOLLIN, kStdout);
  add(link->process->stderr_fd(), EPOLLIN, kStderr);
}

void Cluster::unwatch(WorkerLink& link) noexcept {
  for (int fd : {link.socket.get(), link.process->stdout_fd(), link.process->stderr_fd(),
                 link.ring ? link.ring->bell_fd() : -1}) {
    if (fd >= 0) ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
  }
}

void Cluster::rearm(WorkerLink& link, bool socket) noexcept {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLONESHOT;
  ev.data.u64 = tag(link.pid, socket ? kSocket : kBell);
  int fd = socket ? link.socket.get() : link.ring->bell_fd();
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, fd, &ev);  // ENOENT once retired
}

void Cluster::set_interest(WorkerLink& link, bool on) noexcept {
  if (!on) {
    // Disarmed (epoll takes effect even while the I/O thread sleeps).
    epoll_event off{};
    off.data.u64 = tag(link.pid, kSocket);
    ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, link.socket.get(), &off);
    if (link.ring) {
      off.data.u64 = tag(link.pid, kBell);
      ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, link.ring->bell_fd(), &off);
    }
    return;
  }
  rearm(link, true);
  if (link.ring) rearm(link, false);
}

bool Cluster::read_one(const std::shared_ptr<WorkerLink>& link, uint64_t direct_id,
                       std::optional<wire::Frame>* direct) {
  try {
    // Everything already waiting is handled too: epoll only reports bytes still in the socket,
    // and a ring's writer rings only when it finds the reader asleep.
    do {
      auto frame = link->reader.next();
      if (!frame) {
        retire(link, "");
        return false;
      }
      payload_bytes_received_.fetch_add(frame->bytes().size());
      const auto* result = direct_id ? std::get_if<wire::Result>(&frame->message) : nullptr;
      if (result && result->request_id == direct_id) {
        *direct = std::move(frame);  // (The heartbeat sees bytes_read() move.)
      } else {
        on_frame(link, std::move(*frame));
      }
    } while (link->reader.more_waiting());
    return true;
  } catch (const Error& e) {
    retire(link, std::string("its connection failed: ") + e.what());
    return false;
  }
}

void Cluster::read_as_borrower(const std::shared_ptr<WorkerLink>& link, Reply* reply,
                               uint64_t direct_id, std::optional<wire::Frame>& direct) {
  // The I/O thread's interest is disarmed (epoll takes effect even while it sleeps) and left
  // so; the I/O thread re-arms it when borrowing stops (rearm_idle_links).
  if (link->armed) {
    set_interest(*link, false);
    link->armed = false;
  }
  // The worker's writes need not ring while this thread spins on the ring for its answer.
  if (link->ring) link->ring->set_asleep(false);
  for (;;) {
    if (reply) {
      std::lock_guard lock(reply->mu);
      if (reply->done) break;
    } else if (direct) {
      break;
    }
    // Retired: a reply was completed with the error; `direct` stays empty.
    if (!read_one(link, direct_id, &direct)) break;
  }
  if (link->ring) link->ring->set_asleep(true);  // The I/O thread reads it next.
  link->borrows.fetch_add(1, std::memory_order_relaxed);
}

const wire::Message& Cluster::await(const std::shared_ptr<WorkerLink>& link, Reply& reply) {
  // (Parked with this thread by its direct calls, it is taken back with no fence.)
  if (link->read_role.try_lock(direct_caller_mark())) {
    std::unique_lock reader(link->read_role, std::adopt_lock);
    // Borrow the connection: read frames here until our reply is in.
    std::optional<wire::Frame> none;
    read_as_borrower(link, &reply, 0, none);
    reader.unlock();
    if (!some_link_disarmed_.exchange(true)) wake();  // The I/O thread starts its re-arm tick.
  }
  return reply.wait();
}

void Cluster::rearm_idle_links() {
  some_link_disarmed_ = false;  // Before scanning: a borrow after this sets it again.
  std::vector<std::shared_ptr<WorkerLink>> links;
  {
    std::lock_guard lock(mu_);
    for (auto& [pid, link] : links_) links.push_back(link);
  }
  bool still = false;
  int64_t now = now_ns();
  for (auto& link : links) {
    // Re-armed once no borrow began or ended for kRearmDelay, as seen from these ticks. (So a
    // role parked with a thread that makes direct calls is left with it while it calls: taking
    // it back costs that thread a heavy fence, and it would park it again.)
    uint64_t borrows = link->borrows.load(std::memory_order_relaxed);
    if (borrows != link->borrows_seen) {
      link->borrows_seen = borrows;
      link->borrows_seen_ns = now;
    }
    if (now - link->borrows_seen_ns < kRearmDelayNs) {
      still = true;
      continue;
    }
    std::unique_lock reader(link->read_role, std::try_to_lock);
    if (!reader.owns_lock()) {
      still = true;  // Being borrowed right now.
      continue;
    }
    if (link->armed) continue;
    link->armed = true;
    set_interest(*link, true);
  }
  if (still) some_link_disarmed_ = true;
}

void Cluster::io_main() {
  epoll_event events[64];
  while (!stopping_.load()) {
    // While some connection is left disarmed by a borrower, tick every millisecond to re-arm
    // it once borrowing stops; otherwise sleep until an event.
    int timeout = some_link_disarmed_.load() ? 1 : -1;
    // A link left while a direct call used it: freed once that call is over.
    if (unlisted_pending_.load(std::memory_order_relaxed)) {
      reclaim_unlisted();
      if (unlisted_pending_.load(std::memory_order_relaxed)) timeout = 1;
    }
    int heartbeat = heartbeat_tick_ms();
    if (wire::BulkArena::held_count() > 0) heartbeat = heartbeat < 0 ? 1000 : std::min(heartbeat, 1000);
    if (heartbeat >= 0 && (timeout < 0 || heartbeat < timeout)) timeout = heartbeat;
    int n = ::epoll_wait(epoll_fd_.get(), events, 64, timeout);
    if (some_link_disarmed_.load()) rearm_idle_links();
    if (heartbeat >= 0) {
      check_heartbeats();
      trim_bulk_arenas();
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      log_line(std::string("master I/O loop: epoll_wait failed: ") + std::strerror(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      uint64_t data = events[i].data.u64;
      if (data == 0) {
        uint64_t count;
        ssize_t ignored = ::read(wake_fd_.get(), &count, sizeof count);
        (void)ignored;
        flush_corked_links();
        if (take_sigint()) on_ctrl_c();
        continue;
      }
      int pid = static_cast<int>(data >> 2);
      std::shared_ptr<WorkerLink> link;
      {
        std::lock_guard lock(mu_);
        auto it = links_.find(pid);
        if (it != links_.end()) link = it->second;
      }
      if (!link) continue;
      switch (data & 3) {
        case kStdout:
          if (!pump_output(*link, false)) ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL,
                                                      link->process->stdout_fd(), nullptr);
          break;
        case kStderr:
          if (!pump_output(*link, true)) ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL,
                                                     link->process->stderr_fd(), nullptr);
          break;
        default: {
          std::unique_lock reader(link->read_role, std::try_to_lock);
          if (!reader.owns_lock() || !link->armed) {
            // A borrower reads it; the one-shot event is spent, so mark it for re-arming.
            if (reader.owns_lock()) link->armed = false;
            some_link_disarmed_ = true;
            break;
          }
          bool socket = (data & 3) == kSocket;
          bool alive = true;
          try {
            alive = !link->reader.ready(socket) || read_one(link);
          } catch (const Error& e) {
            retire(link, std::string("its connection failed: ") + e.what());
            alive = false;
          }
          if (alive) rearm(*link, socket);
          break;
        }
      }
    }
  }
}

int Cluster::heartbeat_tick_ms() const {
  int64_t timeout = heartbeat_timeout_ms_.load();
  if (timeout <= 0) return -1;
  // A tick every quarter timeout while there are workers (a wake-up each time a call starts
  // would cost every round trip); workers are pinged only while awaited, so idle ones are
  // never woken.
  std::lock_guard lock(mu_);
  return links_.empty() ? -1 : static_cast<int>(std::max<int64_t>(timeout / 4, 1));
}

void Cluster::trim_bulk_arenas() {
  if (wire::BulkArena::held_count() == 0) return;
  std::vector<std::shared_ptr<WorkerLink>> links;
  {
    std::lock_guard lock(mu_);
    for (const auto& [pid, link] : links_) links.push_back(link);
  }
  auto now = std::chrono::steady_clock::now();
  for (auto& link : links) {
    link->arena.trim_idle(now);
    if (const auto& views = link->reader.bulk_views()) views->trim_idle(now);
  }
}

void Cluster::check_heartbeats() {
  int64_t timeout_ms = heartbeat_timeout_ms_.load();
  if (timeout_ms <= 0) return;
  const int64_t timeout = timeout_ms * 1000000, interval = timeout / 4, now = now_ns();
  std::vector<std::shared_ptr<WorkerLink>> awaited;
  {
    std::lock_guard lock(mu_);
    for (const auto& [pid, link] : links_) {
      if (link->calls_in_flight() > 0 || !link->replies.empty()) awaited.push_back(link);
    }
  }
  for (auto& link : awaited) {
    // Bytes arriving (a long frame still coming) or a send in progress (a large argument still
    // going out; the worker reads it before any Ping) are not silence.
    uint64_t got = link->reader.bytes_read();
    bool writing = !link->write_mu.try_lock();
    if (!writing) link->write_mu.unlock();
    if (got != link->bytes_seen || writing) {
      link->bytes_seen = got;
      link->last_heard_ns = now;
    }
    // Silence counts from the later of the last frame and the start of the wait.
    int64_t heard = std::max(link->last_heard_ns.load(), link->awaited_since_ns.load());
    if (link->awaited_since_ns.load() == 0) {
      link->awaited_since_ns = now;  // first tick of this wait
      continue;
    }
    if (now - heard > timeout) {
      {
        std::lock_guard lock(mu_);
        link->kill_reason = "did not answer for " + std::to_string(timeout_ms) +
                            " ms (stopped or hung; heartbeat timeout), so it was killed";
      }
      link->process->kill();
      retire(link, "");
    } else if (now - heard > interval) {
      link->send(wire::Ping{++link->pings});
    }
  }
  // Links no longer awaited start their next wait afresh.
  std::lock_guard lock(mu_);
  for (const auto& [pid, link] : links_) {
    if (link->calls_in_flight() == 0 && link->replies.empty()) link->awaited_since_ns = 0;
  }
}

bool Cluster::pump_output(WorkerLink& link, bool err) {
  std::lock_guard lock(link.output_mu);
  int fd = err ? link.process->stderr_fd() : link.process->stdout_fd();
  std::string& partial = err ? link.err_partial : link.out_partial;
  std::atomic<bool>& open = err ? link.err_open : link.out_open;
  if (fd < 0 || !open) return false;
  pollfd ready{fd, POLLIN, 0};
  if (::poll(&ready, 1, 0) <= 0) return true;  // Another thread took the bytes.
  char buf[4096];
  ssize_t r = ::read(fd, buf, sizeof buf);
  if (r < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (r <= 0) {
    open = false;
    if (!partial.empty()) partial += '\n';
  } else {
    partial.append(buf, static_cast<size_t>(r));
  }
  std::string out;
  size_t start = 0;
  for (size_t nl; (nl = partial.find('\n', start)) != std::string::npos; start = nl + 1) {
    out += "      From worker " + std::to_string(link.pid) + ":\t" +
           partial.substr(start, nl - start) + "\n";
  }
  partial.erase(0, start);
  if (!out.empty()) {
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  }
  return r > 0;
}

void Cluster::on_frame(const std::shared_ptr<WorkerLink>& link, wire::Frame&& frame) {
  link->last_heard_ns = now_ns();
  if (std::holds_alternative<wire::Pong>(frame.message)) return;  // last_heard is the answer
  if (auto* free = std::get_if<wire::BulkFree>(&frame.message)) {
    link->arena.released(free->token);
    return;
  }
  // Only a fetch's Result is read where the worker lent it; anything else keeps a copy.
  if (frame.bulk && !std::holds_alternative<wire::Result>(frame.message)) frame.materialize();
  if (auto* done = std::get_if<wire::CallDone>(&frame.message)) {
    std::shared_ptr<RefState> ref;
    std::vector<std::shared_ptr<const void>> unpinned;  // destroyed after the lock is released
    {
      std::lock_guard lock(mu_);
      auto it = link->refs.find(done->ref_id);
      if (it != link->refs.end()) {
        ref = it->second.lock();
        link->refs.erase(it);
      }
      auto pin = link->pins.find(done->ref_id);
      if (pin != link->pins.end()) {
        unpinned = std::move(pin->second);
        link->pins.erase(pin);
      }
    }
    link->in_flight.fetch_sub(1);
    if (ref) {
      std::optional<std::string> copy;
      if (done->ok && !frame.payload.empty()) copy = std::move(frame.payload);
      ref->complete(done->ok, done->error, std::move(copy));
    }
    return;
  }
  uint64_t request_id = 0;
  if (auto* r = std::get_if<wire::Result>(&frame.message)) request_id = r->request_id;
  else if (auto* r = std::get_if<wire::PluginLoaded>(&frame.message)) request_id = r->request_id;
  else if (auto* r = std::get_if<wire::StatsReply>(&frame.message)) request_id = r->request_id;
  else if (auto* r = std::get_if<wire::SharedMapped>(&frame.message)) request_id = r->request_id;
  else if (auto* r = std::get_if<wire::FetchRef>(&frame.message)) return on_fetch_ref(link, *r);
  else if (auto* r = std::get_if<wire::ChannelOp>(&frame.message)) {
    return on_channel_op(link, *r, std::move(frame.payload));
  }
  if (request_id == 0) {
    return retire(link, std::string("protocol violation: unexpected ") +
                            wire::message_name(frame.message));
  }
  std::shared_ptr<Reply> reply;
  std::vector<std::shared_ptr<const void>> unpinned;
  {
    std::lock_guard lock(mu_);
    auto it = link->replies.find(request_id);
    if (it == link->replies.end()) return;  // Its waiter is gone; nothing to do.
    reply = it->second;
    link->replies.erase(it);
    auto pin = link->pins.find(request_id);
    if (pin != link->pins.end()) {
      unpinned = std::move(pin->second);
      link->pins.erase(pin);
    }
  }
  if (reply->is_call) link->in_flight.fetch_sub(1);
  if (!reply->takes_bulk) frame.materialize();
  reply->complete(std::move(frame.message), std::move(frame.payload), std::move(frame.bulk));
}

std::optional<std::string> Cluster::worker_to_worker_refused(int requester, int owner,
                                                            const char* what) const {
  if (owner == requester || owner == 1) return std::nullopt;
  std::lock_guard lock(mu_);
  if (topology_ != Topology::master_worker) return std::nullopt;
  return "worker " + std::to_string(requester) + " needs " + what + " owned by worker " +
         std::to_string(owner) + ", but the cluster's topology is master_worker (workers do not "
         "talk to each other): fetch it on the master and pass it by value";
}

void Cluster::on_fetch_ref(const std::shared_ptr<WorkerLink>& requester,
                           const wire::FetchRef& m) {
  uint64_t req = m.request_id;
  auto answer = [requester, req](bool ok, const wire::RemoteError& e, const std::string& bytes) {
    requester->send(wire::Result{req, ok, e}, ok ? bytes : std::string());
  };
  if (m.owner == 1) {
    bool known = store_.get_or_wait(
        m.ref_id, [answer](const ValuePtr& v) { answer(v->ok, v->error, v->bytes); });
    if (!known) {
      answer(false, {ErrorKind::NotFound, "the master holds no value " +
                                              std::to_string(m.ref_id), 1, {}}, {});
    }
    return;
  }
  if (auto why = worker_to_worker_refused(requester->pid, m.owner, "a value")) {
    return answer(false, {ErrorKind::InvalidArgument, *why, m.owner, {}}, {});
  }
  std::shared_ptr<WorkerLink> owner;
  uint64_t id = 0;
  auto reply = std::make_shared<Reply>();
  reply->then = [answer](Reply& r) {
    if (const auto* res = std::get_if<wire::Result>(&r.message)) {
      answer(res->ok, res->error, r.payload);
    }
  };
  {
    std::lock_guard lock(mu_);
    try {
      owner = find_locked(m.owner);
    } catch (const Error& e) {
      answer(false, {e.kind(), e.what(), m.owner, {}}, {});
      return;
    }
    id = next_id_locked();
    owner->replies[id] = reply;
  }
  owner->send(wire::Fetch{id, m.ref_id});
}

void Cluster::drain_output(WorkerLink& link) {
  for (int round = 0; round < 64; ++round) {
    pollfd fds[2] = {{link.out_open ? link.process->stdout_fd() : -1, POLLIN, 0},
                     {link.err_open ? link.process->stderr_fd() : -1, POLLIN, 0}};
    if (fds[0].fd < 0 && fds[1].fd < 0) return;
    if (::poll(fds, 2, 20) <= 0) return;
    if (fds[0].revents) pump_output(link, false);
    if (fds[1].revents) pump_output(link, true);
  }
}

void Cluster::on_channel_op(const std::shared_ptr<WorkerLink>& requester, wire::ChannelOp m,
                            std::string item) {
  uint64_t req = m.request_id;
  auto answer = [requester, req](wire::Result r, std::string bytes) {
    r.request_id = req;
    requester->send(r, r.ok ? bytes : std::string());
  };
  if (m.owner == 1) return serve_channel_op(m, std::move(item), answer);
  if (auto why = worker_to_worker_refused(requester->pid, m.owner, "a RemoteChannel")) {
    return answer(wire::Result{req, false, {ErrorKind::InvalidArgument, *why, m.owner, {}}}, {});
  }
  std::shared_ptr<WorkerLink> owner;
  auto reply = std::make_shared<Reply>();
  reply->then = [answer](Reply& r) {
    if (const auto* res = std::get_if<wire::Result>(&r.message)) answer(*res, r.payload);
  };
  {
    std::lock_guard lock(mu_);
    try {
      owner = find_locked(m.owner);
    } catch (const Error& e) {
      answer(wire::Result{req, false, {e.kind(), std::string("RemoteChannel owner: ") + e.what(), m.owner, {}}}, {});
      return;
    }
    m.request_id = next_id_locked();
    owner->replies[m.request_id] = reply;
  }
  owner->send(m, item);
}

void Cluster::retire(const std::shared_ptr<WorkerLink>& link, const std::string& why) {
  std::string reason = link->removing ? "removed by rmprocs" : why;
  if (reason.empty()) {
    std::lock_guard lock(mu_);
    reason = link->kill_reason;
  }
  if (reason.empty()) {
    link->process->wait_for(std::chrono::milliseconds(50));
    reason = link->process->exit_reason();
    if (reason.empty()) reason = "closed its connection";
  }
  std::string who = "worker " + std::to_string(link->pid) + " (os pid " +
                    std::to_string(link->info.os_pid) + " on " + link->info.host + ")";
  std::unordered_map<uint64_t, std::shared_ptr<Reply>> replies;
  std::unordered_map<uint64_t, std::weak_ptr<RefState>> refs;
  std::unordered_map<uint64_t, std::vector<std::shared_ptr<const void>>> pins;
  {
    std::lock_guard lock(mu_);
    auto it = links_.find(link->pid);
    if (it == links_.end() || it->second != link) return;  // Already retired.
    unlist_locked(std::move(it->second));
    links_.erase(it);
    gone_[link->pid] = who + " " + reason;
    replies.swap(link->replies);
    refs.swap(link->refs);
    pins.swap(link->pins);
  }
  reclaim_unlisted();
  unwatch(*link);
  drain_output(*link);  // Print what it said last before reporting it gone.
  wire::RemoteError lost{ErrorKind::Disconnected, process_exited(link->pid, who + " " + reason),
                         link->pid, {}};
  for (auto& [id, reply] : replies) reply->complete(wire::Result{id, false, lost}, {});
  for (auto& [id, weak] : refs) {
    if (auto ref = weak.lock()) ref->complete(false, lost);
  }
  if (!link->removing) log_line(who + " " + reason);
}

}  // namespace dj::detail
