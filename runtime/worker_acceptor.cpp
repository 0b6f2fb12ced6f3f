// dj-worker's acceptor thread: new connections on the TCP and Unix listeners, their Hello
// (the cluster cookie), the master's connection and peers', bounded logging of dropped
// connections, shedding when out of descriptors, and the idle trim of the bulk arena.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "dj/dj.hpp"
#include "identity.hpp"
#include "sys.hpp"
#include "worker_server.hpp"

namespace dj::detail {

using Clock = std::chrono::steady_clock;
constexpr auto kHandshakeDeadline = std::chrono::milliseconds(2000);
// A Hello is a few dozen bytes; a peer whose first frame is larger is not a dj master.
constexpr uint32_t kMaxHelloHeaderBytes = 1024;
constexpr size_t kDropLogBurst = 10;
constexpr auto kDropLogWindow = std::chrono::seconds(10);

bool WorkerServer::check_hello(const wire::Frame& frame, std::string& why) const {
  const auto* hello = std::get_if<wire::Hello>(&frame.message);
  if (!hello) {
    why = std::string("first message is ") + wire::message_name(frame.message) + ", not Hello";
    return false;
  }
  // Constant-time comparison: the cookie is the cluster's only secret.
  unsigned diff = hello->cookie.size() ^ cookie_.size();
  for (size_t i = 0; i < hello->cookie.size() && i < cookie_.size(); ++i) {
    diff |= static_cast<unsigned char>(hello->cookie[i] ^ cookie_[i]);
  }
  if (diff != 0) {
    why = "wrong cluster cookie";
    return false;
  }
  if (hello->protocol != wire::kProtocolVersion) {
    why = "protocol " + std::to_string(hello->protocol) + ", this worker speaks " +
          std::to_string(wire::kProtocolVersion);
    return false;
  }
  if (hello->pid < 2) {
    why = "invalid worker pid " + std::to_string(hello->pid);
    return false;
  }
  if (master_ && (hello->pid != ctx_.self_pid || hello->sender_pid < 2 ||
                  hello->sender_pid == ctx_.self_pid)) {
    why = hello->sender_pid == 1 ? "already serving a master"
                                 : "peer Hello for pid " + std::to_string(hello->pid) +
                                       " from pid " + std::to_string(hello->sender_pid) +
                                       " (this is worker " + std::to_string(ctx_.self_pid) + ")";
    return false;
  }
  return true;
}

void WorkerServer::drop_peer(size_t index, const std::string& why) {
  log_drop("dropped connection from " + peer_address(peers_[index].fd.get()) + ": " + why);
  peers_.erase(peers_.begin() + static_cast<long>(index));
}

void WorkerServer::log_drop(const std::string& line) {
  flush_drop_log(false);
  if (drops_logged_ < kDropLogBurst) {
    ++drops_logged_;
    log_line(line);
  } else {
    ++drops_unlogged_;
  }
}

void WorkerServer::flush_drop_log(bool force) {
  auto now = Clock::now();
  if (!force && now - drop_window_start_ < kDropLogWindow) return;
  if (drops_unlogged_ > 0) {
    log_line("dropped " + std::to_string(drops_unlogged_) + " more connections in " +
             std::to_string(kDropLogWindow.count()) + " s (at most " +
             std::to_string(kDropLogBurst) + " are logged one by one)");
  }
  drop_window_start_ = now;
  drops_logged_ = drops_unlogged_ = 0;
}

void WorkerServer::shed_connection(int listen_fd) {
  spare_fd_ = Fd();
  Fd shed(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
  if (shed) log_drop("dropped connection from " + peer_address(shed.get()) +
                     ": out of file descriptors");
  shed = Fd();
  spare_fd_ = Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
}

void WorkerServer::handle_new_peers(int listen_fd) {
  for (;;) {
    Fd fd;
    try {
      fd = accept_tcp(listen_fd);
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::ResourceExhausted) {
        log_drop(std::string("accept failed: ") + e.what());
        return;
      }
      // Out of descriptors: the oldest waiting peer goes first, else the connection itself.
      if (!peers_.empty()) drop_peer(0, "out of file descriptors");
      else shed_connection(listen_fd);
      continue;
    }
    if (!fd) return;
    set_nonblocking(fd.get(), true);
    if (peers_.size() >= kMaxPendingPeers) {
      drop_peer(0, "too many connections waiting to say Hello (" +
                       std::to_string(kMaxPendingPeers) + ")");
    }
    peers_.push_back({std::move(fd), Clock::now() + kHandshakeDeadline, {}});
  }
}

void WorkerServer::handle_pending_peer(size_t index) {
  PendingPeer& peer = peers_[index];
  int fd = peer.fd.get();
  std::string why;
  try {
    // Read no further than the Hello frame: what follows it is the master's, for the reader.
    size_t want = wire::kFramePrefixBytes;
    if (peer.in.size() >= wire::kFramePrefixBytes) {
      unsigned char prefix[wire::kFramePrefixBytes];
      std::memcpy(prefix, peer.in.data(), sizeof prefix);
      wire::FramePrefix p = wire::parse_prefix(prefix, 0);  // a Hello carries no payload
      if (p.header_bytes > kMaxHelloHeaderBytes) {
        return drop_peer(index, "first frame of " + std::to_string(p.header_bytes) +
                                    " bytes is too large for a Hello");
      }
      want += p.header_bytes;
    }
    size_t have = peer.in.size();
    if (have < want) {
      peer.in.resize(want);
      ssize_t r = ::read(fd, peer.in.data() + have, want - have);
      peer.in.resize(have + static_cast<size_t>(std::max<ssize_t>(r, 0)));
      if (r == 0) return drop_peer(index, "closed before saying Hello");
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        return drop_peer(index, std::string("read failed: ") + std::strerror(errno));
      }
      if (peer.in.size() < want || want == wire::kFramePrefixBytes) return;  // more to come
    }
    wire::Frame frame{wire::decode(peer.in.data() + wire::kFramePrefixBytes,
                                   peer.in.size() - wire::kFramePrefixBytes), {}, {}};
    if (!check_hello(frame, why)) return drop_peer(index, why);
    const auto& hello = std::get<wire::Hello>(frame.message);
    if (master_) accept_worker_peer(index, hello);
    else accept_master(index, hello);
  } catch (const Error& e) {
    drop_peer(index, e.what());
  }
}

void WorkerServer::accept_master(size_t index, const wire::Hello& hello) {
  set_myid(hello.pid);
  ctx_.self_pid = hello.pid;
  peer_links_.set_self(hello.pid);
  master_ = std::move(peers_[index].fd);
  peers_.erase(peers_.begin() + static_cast<long>(index));
  set_nonblocking(master_.get(), false);
  reader_.emplace(master_.get());
  reader_->spin_before_blocking(true);  // the next call often follows the reply at once
  // A master on this host (abstract Unix socket) lends and takes large payloads through
  // shared memory (wire/bulk.hpp).
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(master_.get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0 &&
      ss.ss_family == AF_UNIX) {
    bulk_ = true;
    reader_->accept_bulk([this](uint64_t token) {
      send(wire::BulkFree{token});
      arena_used();  // the master's arena, still mapped here, is trimmed when idle
    });
    views_ = reader_->bulk_views();
  }
  send(wire::Welcome{hello.pid, static_cast<int64_t>(::getpid()), host_name(), host_identity()});
}

void WorkerServer::accept_worker_peer(size_t index, const wire::Hello& hello) {
  Fd fd = std::move(peers_[index].fd);
  peers_.erase(peers_.begin() + static_cast<long>(index));
  set_nonblocking(fd.get(), false);
  wire::write_frame(fd.get(), wire::Welcome{hello.pid, static_cast<int64_t>(::getpid()),
                                            host_name(), host_identity()});
  serve_peer(std::move(fd), hello.sender_pid, store_);
}

void WorkerServer::accept_step(int timeout_ms) {
  std::vector<pollfd> fds{{STDIN_FILENO, POLLIN, 0},
                          {listener_.get(), POLLIN, 0},
                          {local_listener_.get(), POLLIN, 0},
                          {trim_wake_fd_.get(), POLLIN, 0}};
  constexpr size_t kFirstPeer = 4;
  for (auto& p : peers_) fds.push_back({p.fd.get(), POLLIN, 0});
  auto now = Clock::now();
  for (auto& p : peers_) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(p.deadline - now).count();
    int bound = static_cast<int>(std::max<long>(left, 0));
    timeout_ms = timeout_ms < 0 ? bound : std::min(timeout_ms, bound);
  }
  if (drops_unlogged_ > 0) {  // wake up to report them when their window ends
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    drop_window_start_ + kDropLogWindow - now).count();
    int bound = static_cast<int>(std::max<long>(left, 0));
    timeout_ms = timeout_ms < 0 ? bound : std::min(timeout_ms, bound);
  }
  if (trim_pending_.load()) {  // wake up to give back an idle arena's memory
    timeout_ms = timeout_ms < 0 ? 1000 : std::min(timeout_ms, 1000);
  }
  int n = ::poll(fds.data(), fds.size(), timeout_ms);
  if (n < 0 && errno != EINTR) throw_errno("poll", "worker acceptor");
  if (fds[3].revents) {
    uint64_t count;
    ssize_t ignored = ::read(trim_wake_fd_.get(), &count, sizeof count);
    (void)ignored;
  }
  if (trim_pending_.load()) {
    const auto trim_now = Clock::now();
    arena_.trim_idle(trim_now);
    if (views_) views_->trim_idle(trim_now);
    auto holds = [this] { return arena_.capacity() != 0 || (views_ && views_->holds()); };
    // Cleared before the check, so a send or a payload racing with it sets it (and wakes us)
    // again.
    if (!holds()) {
      trim_pending_ = false;
      if (holds()) arena_used();
    }
  }
  if (fds[0].revents) {
    char buf[256];
    ssize_t r = ::read(STDIN_FILENO, buf, sizeof buf);
    if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
      exit_now(0, "");  // The master (our stdin's writer) is gone.
    }
  }
  now = Clock::now();
  // Walk backwards: handling a peer removes it from peers_.
  for (size_t i = fds.size(); i-- > kFirstPeer;) {
    size_t index = i - kFirstPeer;
    if (fds[i].revents) handle_pending_peer(index);
    else if (peers_[index].deadline <= now) drop_peer(index, "no Hello within 2000 ms");
  }
  if (fds[1].revents & POLLIN) handle_new_peers(listener_.get());
  if (fds[2].revents & POLLIN) handle_new_peers(local_listener_.get());
  flush_drop_log(false);
}

}  // namespace dj::detail
