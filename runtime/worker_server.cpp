// dj-worker's server: the leader/follower loop, calls and control messages. Accepting and
// authenticating connections (the acceptor thread) is in worker_acceptor.cpp, the express path
// (a same-host remotecall_fetch through the ring's slot) in worker_express.cpp.
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
#include "asymmetric_fence.hpp"
#include "channels.hpp"
#include "identity.hpp"
#include "sys.hpp"

namespace dj::detail {

using Clock = std::chrono::steady_clock;

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
    if (bulk_ && arena_.try_send(outlet(), message,
                                 reinterpret_cast<const unsigned char*>(payload.data()),
                                 payload.size())) {
      arena_used();
    } else {
      wire::write_frame(outlet(), message, payload);
    }
  } catch (const Error& e) {
    exit_now(0, "");  // Master gone: nothing left to serve.
  }
}

void WorkerServer::send_compact(uint64_t request_id, wire::CompactStatus status,
                                const std::string& value) {
  std::lock_guard lock(write_mu_);
  try {
    wire::write_compact_result(outlet(), request_id, status, value.data(), value.size());
  } catch (const Error&) {
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
  // The batch seen running at a tick, and since when: a batch still running kTakeoverDelay
  // after a tick first saw it has kept the connection unread too long. (The leader counts
  // batches rather than reading the clock per call.)
  uint64_t seen = batches_.load() - 1;
  int64_t seen_since = 0;
  for (;;) {
    pollfd fds[2] = {{timer_fd_.get(), POLLIN, 0}, {takeover_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) throw_errno("poll", "worker follower");
    uint64_t count;
    ssize_t ignored = ::read(takeover_fd_.get(), &count, sizeof count);
    (void)ignored;
    if (fds[1].revents) return;  // A kernel blocks on another process: read for it.
    ignored = ::read(timer_fd_.get(), &count, sizeof count);
    timer_armed_ = false;  // Before looking at run_state_: see start_batch for the other half.
    heavy_fence();         // serve_express starts a batch with only a light fence
    {
      std::lock_guard q(queue_mu_);
      if (run_state_.load(std::memory_order_relaxed) == kIdle) continue;  // let the timer lapse
    }
    const int64_t now = now_ns();
    const uint64_t batch = batches_.load();
    if (batch != seen) {
      seen = batch;
      seen_since = now;
    } else if (now - seen_since >= delay_ns) {
      return;  // The kernels have kept the connection unread too long.
    }
    if (!timer_armed_.exchange(true)) {
      arm_timer(std::chrono::nanoseconds(delay_ns - (now - seen_since)));
    }
  }
}

void WorkerServer::serve() {
  for (;;) {
    ReaderRole reader(reader_taken_);
    if (!reader.try_take()) {
      wait_for_takeover();
      // Taken meanwhile by the other thread, which reads for whoever woke us.
      if (!reader.try_take()) continue;
    }
    // An express call, the common case, is taken here, where no frame or call object is
    // built (GCC 12 zero-fills a disengaged std::optional's payload: two `rep stos` per turn
    // of this loop, measured on the worker's way back to waiting for the next call).
    try {
      if (reader_->wait_frame_or_slot() && serve_express(reader)) continue;  // run: role given up
    } catch (const Error& e) {
      exit_now(1, std::string("connection to the master failed: ") + e.what());
    }
    serve_frames(reader);
  }
}

void WorkerServer::serve_frames(ReaderRole& reader) {
  std::optional<PendingCall> to_run;
  while (!to_run) {
    std::optional<wire::Frame> frame;
    try {
      if (reader_->wait_frame_or_slot()) {
        if (serve_express(reader)) return;  // run, and the reader role given up
        continue;
      }
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
    if (pending.resend_in_full) {
      send_compact(pending.call.request_id, wire::CompactStatus::kResendInFull, {});
      continue;
    }
    std::lock_guard q(queue_mu_);
    if (queue_behind_locked()) {
      queue_.push_back(std::move(pending));
    } else {
      to_run.emplace(std::move(pending));
    }
  }
  start_batch(reader);
  run_calls(std::move(*to_run));
}

void WorkerServer::start_batch(ReaderRole& reader) {
  // run_state_ is set before the timer flag is read here, and the follower clears the flag
  // before reading run_state_: so one of the two always arms the timer. (Only the leader counts
  // batches, so the count needs no atomic increment.)
  batches_.store(batches_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  if (!timer_armed_.load(std::memory_order_relaxed) && !timer_armed_.exchange(true)) {
    arm_timer(kTakeoverDelay);
  }
  reader.give_up();  // Nobody waits on it: no wake-up. The follower's timer covers us.
}

bool WorkerServer::queue_behind_locked() {
  uint32_t state = run_state_.load(std::memory_order_relaxed);
  // Only a runner's lock-free finish (kRunning to kIdle) changes it meanwhile.
  while (state & kRunning) {
    if (state == (kRunning | kQueued) ||
        run_state_.compare_exchange_weak(state, kRunning | kQueued, std::memory_order_relaxed)) {
      return true;
    }
  }
  run_state_.store(kRunning, std::memory_order_relaxed);  // idle: the caller starts a batch
  return false;
}

PendingCall WorkerServer::pop_queued_locked() {
  PendingCall next = std::move(queue_.front());
  queue_.pop_front();
  if (queue_.empty()) run_state_.store(kRunning, std::memory_order_relaxed);
  return next;
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
      run_state_.store(kIdle, std::memory_order_release);  // the timer, if armed, lapses
      return;
    }
    current = pop_queued_locked();
  }
}

void WorkerServer::reply(PendingCall& p, CallOutcome outcome) {
  const wire::Call& call = p.call;
  switch (call.mode) {
    case wire::CallMode::kFetch:
      if (outcome.result_lent) {
        std::lock_guard lock(write_mu_);
        try {
          arena_.send_reserved(outlet(), wire::Result{call.request_id, true, {}},
                               outcome.lent_bytes);
          arena_used();
        } catch (const Error&) {
          exit_now(0, "");  // Master gone: nothing left to serve.
        }
      } else if (call.express && outcome.ok &&
                 outcome.result.size() <= wire::RingLink::kSlotBytes) {
        post_express(static_cast<uint32_t>(call.request_id), wire::CompactStatus::kOk,
                     outcome.result.data(), outcome.result.size());
      } else if (call.compact && !call.express && outcome.ok &&
                 outcome.result.size() <= wire::kCompactResultMaxBytes) {
        send_compact(call.request_id, wire::CompactStatus::kOk, outcome.result);
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

void WorkerServer::take_ring(const wire::RingOffer& offer) {
  std::lock_guard lock(write_mu_);
  try {
    // This thread holds the reader role: the reader switches to the rings here.
    ring_ = wire::accept_ring(*reader_, master_.get(), offer);
    reader_ring_ = ring_;
  } catch (const Error&) {
    exit_now(0, "");  // Master gone: nothing left to serve.
  }
}

StoredValue WorkerServer::fetch_remote(int owner, uint64_t ref) {
  if (owner != ctx_.self_pid && peer_links_.reachable(owner)) {
    request_takeover();  // The master connection must be read while this kernel waits.
    StoredValue v = peer_links_.request(owner, wire::Fetch{0, ref});
    // NotFound: the owner has not yet read the call that makes the value (the master sent it
    // first, but this direct request overtook it). Through the master, the request reaches
    // the owner after that call, and waits for the value there.
    if (v.ok || v.error.kind != ErrorKind::NotFound) return v;
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
        } else if constexpr (std::is_same_v<M, wire::RingOffer>) {
          take_ring(m);
        } else {
          log_line(std::string("ignoring unexpected ") + wire::message_name(frame.message) +
                   " from the master");
        }
      },
      frame.message);
}

}  // namespace dj::detail
