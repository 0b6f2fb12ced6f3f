// The master's I/O thread: reads every worker's connection and stdio, completes replies and
// Futures, forwards FetchRef requests between workers, and retires workers that go away.
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "cluster.hpp"
#include "identity.hpp"
#include "sys.hpp"

namespace dj::detail {

void Cluster::wake() noexcept {
  uint64_t one = 1;
  ssize_t ignored = ::write(wake_fd_.get(), &one, sizeof one);
  (void)ignored;
}

void Cluster::io_main() {
  while (!stopping_.load()) {
    std::vector<std::shared_ptr<WorkerLink>> links;
    {
      std::lock_guard lock(mu_);
      for (auto& [pid, link] : links_) links.push_back(link);
    }
    std::vector<pollfd> fds{{wake_fd_.get(), POLLIN, 0}};
    for (auto& link : links) {
      fds.push_back({link->socket.get(), POLLIN, 0});
      fds.push_back({link->out_open ? link->process->stdout_fd() : -1, POLLIN, 0});
      fds.push_back({link->err_open ? link->process->stderr_fd() : -1, POLLIN, 0});
    }
    int n = ::poll(fds.data(), fds.size(), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      log_line(std::string("master I/O loop: poll failed: ") + std::strerror(errno));
      return;
    }
    if (fds[0].revents) {
      uint64_t count;
      ssize_t ignored = ::read(wake_fd_.get(), &count, sizeof count);
      (void)ignored;
    }
    for (size_t i = 0; i < links.size(); ++i) {
      auto& link = links[i];
      const pollfd* p = &fds[1 + 3 * i];
      // Output first, so that a worker's last words are printed before its death is reported.
      if (p[1].revents) pump_output(*link, false);
      if (p[2].revents) pump_output(*link, true);
      if (!p[0].revents) continue;
      try {
        auto frame = wire::read_frame(link->socket.get());
        if (!frame) {
          retire(link, "");
          continue;
        }
        payload_bytes_received_.fetch_add(frame->payload.size());
        on_frame(link, std::move(*frame));
      } catch (const Error& e) {
        retire(link, std::string("its connection failed: ") + e.what());
      }
    }
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
  if (auto* done = std::get_if<wire::CallDone>(&frame.message)) {
    std::shared_ptr<RefState> ref;
    std::vector<std::shared_ptr<RefState>> unpinned;  // destroyed after the lock is released
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
    if (ref) ref->complete(done->ok, done->error);
    return;
  }
  uint64_t request_id = 0;
  if (auto* r = std::get_if<wire::Result>(&frame.message)) request_id = r->request_id;
  else if (auto* r = std::get_if<wire::PluginLoaded>(&frame.message)) request_id = r->request_id;
  else if (auto* r = std::get_if<wire::StatsReply>(&frame.message)) request_id = r->request_id;
  else if (auto* r = std::get_if<wire::FetchRef>(&frame.message)) return on_fetch_ref(link, *r);
  if (request_id == 0) {
    return retire(link, std::string("protocol violation: unexpected ") +
                            wire::message_name(frame.message));
  }
  std::shared_ptr<Reply> reply;
  std::vector<std::shared_ptr<RefState>> unpinned;
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
  reply->complete(std::move(frame.message), std::move(frame.payload));
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

void Cluster::retire(const std::shared_ptr<WorkerLink>& link, const std::string& why) {
  std::string reason = link->removing ? "removed by rmprocs" : why;
  if (reason.empty()) {
    link->process->wait_for(std::chrono::milliseconds(50));
    reason = link->process->exit_reason();
    if (reason.empty()) reason = "closed its connection";
  }
  std::string who = "worker " + std::to_string(link->pid) + " (os pid " +
                    std::to_string(link->info.os_pid) + " on " + link->info.host + ")";
  std::unordered_map<uint64_t, std::shared_ptr<Reply>> replies;
  std::unordered_map<uint64_t, std::weak_ptr<RefState>> refs;
  std::unordered_map<uint64_t, std::vector<std::shared_ptr<RefState>>> pins;
  {
    std::lock_guard lock(mu_);
    auto it = links_.find(link->pid);
    if (it == links_.end() || it->second != link) return;  // Already retired.
    links_.erase(it);
    gone_[link->pid] = who + " " + reason;
    replies.swap(link->replies);
    refs.swap(link->refs);
    pins.swap(link->pins);
  }
  drain_output(*link);  // Print what it said last before reporting it gone.
  wire::RemoteError lost{ErrorKind::Disconnected,
                         "ProcessExited(" + std::to_string(link->pid) + "): " + who + " " + reason,
                         link->pid, {}};
  for (auto& [id, reply] : replies) reply->complete(wire::Result{id, false, lost}, {});
  for (auto& [id, weak] : refs) {
    if (auto ref = weak.lock()) ref->complete(false, lost);
  }
  if (!link->removing) log_line(who + " " + reason);
}

}  // namespace dj::detail
