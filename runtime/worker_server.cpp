// dj-worker's server: authentication of peers, the leader/follower loop and control messages.
#include "worker_server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "dj/dj.hpp"
#include "channels.hpp"
#include "identity.hpp"
#include "sys.hpp"

namespace dj::detail {

using Clock = std::chrono::steady_clock;
constexpr auto kHandshakeDeadline = std::chrono::milliseconds(2000);
// A Hello is a few dozen bytes; a peer whose first frame is larger is not a dj master.
constexpr uint32_t kMaxHelloHeaderBytes = 1024;
constexpr size_t kDropLogBurst = 10;
constexpr auto kDropLogWindow = std::chrono::seconds(10);

struct WorkerServer::FetchSlot {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;       // guarded by mu
  StoredValue value;       // guarded by mu
};

WorkerServer::WorkerServer(std::string cookie, Fd listener, Fd local_listener)
    : cookie_(std::move(cookie)),
      listener_(std::move(listener)),
      local_listener_(std::move(local_listener)),
      peer_links_(cookie_),
      ctx_{registry_, store_, 0,
           [this](int owner, uint64_t ref) { return fetch_remote(owner, ref); },
           &segments_, {}, {}},
      timer_fd_(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK)),
      takeover_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      trim_wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!trim_wake_fd_) throw_errno("eventfd", "worker");
  if (!timer_fd_) throw_errno("timerfd_create", "worker");
  if (!takeover_fd_) throw_errno("eventfd", "worker");
  set_nonblocking(listener_.get(), true);
  set_nonblocking(local_listener_.get(), true);
  spare_fd_ = Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  // A fetch's large result is encoded straight into the shared memory it goes back in.
  ctx_.lend_result = [this](size_t n) { return bulk_ ? arena_.reserve(n) : nullptr; };
  ctx_.unlend_result = [this] { arena_.cancel(); };
  set_master_requester([this](wire::ChannelOp op, std::string item) {
    return channel_request(std::move(op), std::move(item));
  });
  set_block_hook([this] { request_takeover(); });
}

WorkerServer::~WorkerServer() {
  // Unreachable in practice: the server ends the process with _exit once serving starts.
  if (serve_a_.joinable()) serve_a_.detach();
  if (serve_b_.joinable()) serve_b_.detach();
}

void WorkerServer::exit_now(int code, const std::string& why) {
  if (!why.empty()) log_line(why);
  std::fflush(nullptr);
  ::_exit(code);
}

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
  // A master on this host (abstract Unix socket) lends and takes large payloads through
  // shared memory (wire/bulk.hpp).
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(master_.get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0 &&
      ss.ss_family == AF_UNIX) {
    bulk_ = true;
    reader_->accept_bulk([this](uint64_t token) { send(wire::BulkFree{token}); });
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
    arena_.trim_idle(Clock::now());
    // Cleared before the check, so a send racing with it sets it (and wakes us) again.
    if (arena_.capacity() == 0) {
      trim_pending_ = false;
      if (arena_.capacity() != 0) arena_used();
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

void WorkerServer::arena_used() noexcept {
  if (!trim_pending_.exchange(true)) {
    uint64_t one = 1;
    ssize_t ignored = ::write(trim_wake_fd_.get(), &one, sizeof one);  // the acceptor trims it
    (void)ignored;
  }
}

void WorkerServer::send(const wire::Message& message, const std::string& payload) {
  std::lock_guard lock(write_mu_);
  try {
    if (bulk_ && arena_.try_send(master_.get(), message,
                                 reinterpret_cast<const unsigned char*>(payload.data()),
                                 payload.size())) {
      arena_used();
    } else {
      wire::write_frame(master_.get(), message, payload);
    }
  } catch (const Error& e) {
    exit_now(0, "");  // Master gone: nothing left to serve.
  }
}

int WorkerServer::run(std::chrono::milliseconds accept_timeout) {
  auto deadline = Clock::now() + accept_timeout;
  while (!master_) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      log_line("no master connected within " + std::to_string(accept_timeout.count()) +
               " ms; exiting");
      return 2;
    }
    accept_step(static_cast<int>(left.count()));
  }
  serve_a_ = std::thread([this] { serve(); });
  serve_b_ = std::thread([this] { serve(); });
  for (;;) accept_step(-1);
}

int64_t WorkerServer::now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void WorkerServer::arm_timer(std::chrono::nanoseconds after) noexcept {
  itimerspec spec{};
  auto ns = std::max<int64_t>(after.count(), 1000);
  spec.it_value.tv_sec = ns / 1000000000;
  spec.it_value.tv_nsec = ns % 1000000000;
  ::timerfd_settime(timer_fd_.get(), 0, &spec, nullptr);
}

void WorkerServer::request_takeover() noexcept {
  uint64_t one = 1;
  ssize_t ignored = ::write(takeover_fd_.get(), &one, sizeof one);
  (void)ignored;
}

void WorkerServer::wait_for_takeover() {
  const int64_t delay_ns = std::chrono::nanoseconds(kTakeoverDelay).count();
  for (;;) {
    pollfd fds[2] = {{timer_fd_.get(), POLLIN, 0}, {takeover_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) throw_errno("poll", "worker follower");
    uint64_t count;
    ssize_t ignored = ::read(takeover_fd_.get(), &count, sizeof count);
    (void)ignored;
    if (fds[1].revents) return;  // A kernel blocks on another process: read for it.
    ignored = ::read(timer_fd_.get(), &count, sizeof count);
    timer_armed_ = false;  // Before looking at running_: see serve() for the other half.
    {
      std::lock_guard q(queue_mu_);
      if (!running_) continue;  // Idle: let the timer lapse.
    }
    int64_t waited = now_ns() - batch_start_ns_.load();
    if (waited >= delay_ns) return;  // The kernels have kept the connection unread too long.
    if (!timer_armed_.exchange(true)) arm_timer(std::chrono::nanoseconds(delay_ns - waited));
  }
}

void WorkerServer::serve() {
  for (;;) {
    std::unique_lock reader(reader_mu_, std::try_to_lock);
    if (!reader.owns_lock()) {
      wait_for_takeover();
      reader.lock();
    }
    std::optional<PendingCall> to_run;
    while (!to_run) {
      std::optional<wire::Frame> frame;
      try {
        frame = reader_->next();
      } catch (const Error& e) {
        exit_now(1, std::string("connection to the master failed: ") + e.what());
      }
      if (!frame) exit_now(0, "");
      auto* call = std::get_if<wire::Call>(&frame->message);
      if (!call) {
        handle_control(std::move(*frame));
        continue;
      }
      PendingCall pending =
          accept_call(ctx_, std::move(*call), std::move(frame->payload), std::move(frame->bulk));
      std::lock_guard q(queue_mu_);
      if (running_) {
        queue_.push_back(std::move(pending));
      } else {
        running_ = true;
        to_run.emplace(std::move(pending));
      }
    }
    // running_ is set (above) before the timer flag is read here, and the follower clears the
    // flag before reading running_: so one of the two always arms the timer.
    batch_start_ns_ = now_ns();
    if (!timer_armed_.exchange(true)) arm_timer(kTakeoverDelay);
    reader.unlock();  // Nobody waits on it: no wake-up. The follower's timer covers us.
    run_calls(std::move(*to_run));
  }
}

void WorkerServer::run_calls(PendingCall first) {
  PendingCall current = std::move(first);
  for (;;) {
    // A batch refused at arrival (its count does not fit its payload) is answered by reply().
    if (current.call.mode == wire::CallMode::kBatch && current.arrival_error.empty()) {
      send(wire::Result{current.call.request_id, true, {}}, execute_batch(ctx_, current));
    } else {
      CallOutcome outcome = execute_call(ctx_, current);
      current.lent_args.reset();  // hands the master's memory back before the reply goes
      reply(current, std::move(outcome));
    }
    std::lock_guard q(queue_mu_);
    if (queue_.empty()) {
      running_ = false;  // The timer, if armed, lapses in the follower.
      return;
    }
    current = std::move(queue_.front());
    queue_.pop_front();
  }
}

void WorkerServer::reply(PendingCall& p, CallOutcome outcome) {
  const wire::Call& call = p.call;
  switch (call.mode) {
    case wire::CallMode::kFetch:
      if (outcome.result_lent) {
        std::lock_guard lock(write_mu_);
        try {
          arena_.send_reserved(master_.get(), wire::Result{call.request_id, true, {}},
                               outcome.lent_bytes);
          arena_used();
        } catch (const Error&) {
          exit_now(0, "");  // Master gone: nothing left to serve.
        }
      } else {
        send(wire::Result{call.request_id, outcome.ok, outcome.error}, outcome.result);
      }
      break;
    case wire::CallMode::kStore: {
      bool ok = outcome.ok;
      wire::RemoteError error = outcome.error;
      // Stored before CallDone is sent: once the master knows the value is ready, every
      // request it makes (fetch, stats, a call using it) finds it. Fetches that came earlier
      // (relayed FetchRefs) are answered after CallDone.
      auto value = std::make_shared<StoredValue>(
          StoredValue{outcome.ok, std::move(outcome.result), std::move(outcome.error)});
      auto waiters = store_.put(call.ref_id, value);
      bool inline_copy = ok && value->bytes.size() <= wire::kInlineResultBytes;
      send(wire::CallDone{call.ref_id, ok, error}, inline_copy ? value->bytes : std::string());
      for (auto& waiter : waiters) waiter();
      break;
    }
    case wire::CallMode::kDiscard:
      if (!outcome.ok) log_line("remote_do of '" + call.kernel_name + "' failed: " +
                                outcome.error.message);
      if (call.ref_id) send(wire::CallDone{call.ref_id, true, {}});
      break;
    case wire::CallMode::kBatch:  // Batches are answered by run_calls; this is a failure path.
      send(wire::Result{call.request_id, false, outcome.error});
      break;
  }
}

StoredValue WorkerServer::fetch_remote(int owner, uint64_t ref) {
  if (owner != ctx_.self_pid && peer_links_.reachable(owner)) {
    request_takeover();  // The master connection must be read while this kernel waits.
    return peer_links_.request(owner, wire::Fetch{0, ref});
  }
  return ask_master([&](uint64_t id) { send(wire::FetchRef{id, owner, ref}); });
}

std::pair<wire::Result, std::string> WorkerServer::channel_request(wire::ChannelOp op,
                                                                   std::string item) {
  StoredValue v;
  if (op.owner != ctx_.self_pid && peer_links_.reachable(op.owner)) {
    request_takeover();
    v = peer_links_.request(op.owner, op, item);
  } else {
    v = ask_master([&](uint64_t id) {
      op.request_id = id;
      send(op, item);
    });
  }
  return {wire::Result{op.request_id, v.ok, v.error}, std::move(v.bytes)};
}

StoredValue WorkerServer::ask_master(const std::function<void(uint64_t)>& send_request) {
  auto slot = std::make_shared<FetchSlot>();
  uint64_t id;
  {
    std::lock_guard lock(fetch_mu_);
    id = next_fetch_++;
    fetches_[id] = slot;
  }
  send_request(id);
  request_takeover();  // The answer must be read while this kernel waits for it.
  std::unique_lock lock(slot->mu);
  slot->cv.wait(lock, [&] { return slot->done; });
  return std::move(slot->value);
}

void WorkerServer::handle_control(wire::Frame&& frame) {
  if (auto* free = std::get_if<wire::BulkFree>(&frame.message)) {
    arena_.released(free->token);
    return;
  }
  frame.materialize();  // Only calls read a lent payload in place.
  std::visit(
      [&](auto&& m) {
        using M = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<M, wire::LoadPlugin>) {
          wire::PluginLoaded out;
          out.request_id = m.request_id;
          try {
            auto r = registry_.load(m.name, m.sha256, frame.payload);
            out.ok = true;
            out.kernel_count = r.kernel_count;
            out.already_loaded = r.already_loaded;
          } catch (const Error& e) {
            out.error = {e.kind(), "on worker " + std::to_string(myid()) + ": " + e.what(),
                         myid(), {}};
          }
          send(out);
        } else if constexpr (std::is_same_v<M, wire::Fetch>) {
          uint64_t req = m.request_id;
          bool known = store_.get_or_wait(m.ref_id, [this, req](const ValuePtr& v) {
            send(wire::Result{req, v->ok, v->error}, v->ok ? v->bytes : std::string());
          });
          if (!known) {
            send(wire::Result{req, false,
                              {ErrorKind::NotFound,
                               "worker " + std::to_string(myid()) + " holds no value " +
                                   std::to_string(m.ref_id) + " (already released?)",
                               myid(), {}}});
          }
        } else if constexpr (std::is_same_v<M, wire::Release>) {
          store_.release(m.ref_id);
        } else if constexpr (std::is_same_v<M, wire::Result>) {
          std::shared_ptr<FetchSlot> slot;
          {
            std::lock_guard lock(fetch_mu_);
            auto it = fetches_.find(m.request_id);
            if (it == fetches_.end()) return;
            slot = it->second;
            fetches_.erase(it);
          }
          std::lock_guard lock(slot->mu);
          slot->value = StoredValue{m.ok, std::move(frame.payload), m.error};
          slot->done = true;
          slot->cv.notify_all();
        } else if constexpr (std::is_same_v<M, wire::StatsRequest>) {
          auto s = store_.stats();
          send(wire::StatsReply{m.request_id, s.values, s.bytes, rss_bytes(),
                                static_cast<uint32_t>(registry_.plugin_count())});
        } else if constexpr (std::is_same_v<M, wire::ChannelOp>) {
          serve_channel_op(m, std::move(frame.payload), [this](wire::Result r, std::string b) {
            send(r, r.ok ? b : std::string());
          });
        } else if constexpr (std::is_same_v<M, wire::StoreValue>) {
          auto waiters = store_.put(
              m.ref_id, std::make_shared<StoredValue>(StoredValue{true, std::move(frame.payload), {}}));
          send(wire::CallDone{m.ref_id, true, {}});
          for (auto& waiter : waiters) waiter();
        } else if constexpr (std::is_same_v<M, wire::Interrupt>) {
          // The running kernel sees dj::interrupted(); queued calls fail as they are taken
          // (their generation predates this interrupt), which keeps their replies in order.
          interrupt_all();
        } else if constexpr (std::is_same_v<M, wire::MapShared>) {
          wire::SharedMapped out{m.request_id, false, {}};
          try {
            segments_.hold(m.name, Segment::open(m.name, m.bytes));
            out.ok = true;
          } catch (const Error& e) {
            out.error = {e.kind(), "on worker " + std::to_string(myid()) + ": " + e.what(),
                         myid(), {}};
          }
          send(out);
        } else if constexpr (std::is_same_v<M, wire::UnmapShared>) {
          segments_.drop(m.name);
        } else if constexpr (std::is_same_v<M, wire::Ping>) {
          send(wire::Pong{m.seq});
        } else if constexpr (std::is_same_v<M, wire::Peers>) {
          peer_links_.add(m.entries);
        } else if constexpr (std::is_same_v<M, wire::Shutdown>) {
          exit_now(0, "");
        } else {
          log_line(std::string("ignoring unexpected ") + wire::message_name(frame.message) +
                   " from the master");
        }
      },
      frame.message);
}

}  // namespace dj::detail
