// remotecall_fetch to a same-host worker without a hand-off or a Cap'n Proto header: the
// calling thread posts an express call into the ring's slot (arguments up to the slot's size)
// or writes a compact call into the ring, and reads the slot and the ring itself until the
// answer is in (wire/compact.hpp). Frames that arrive meanwhile for other requests are handled
// as the I/O thread would handle them.
#include "cluster.hpp"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "asymmetric_fence.hpp"

namespace dj::detail {
namespace {
// Direct calls take request ids from their own range: they are never in WorkerLink::replies.
constexpr uint64_t kDirectIdBit = uint64_t{1} << 63;
std::atomic<uint64_t> g_next_direct_id{1};

// The hazard slots of the threads that make direct calls: each names the link its thread's
// call uses now. Never freed: a thread that ends gives its slot to the next one. (A list from a
// plain pointer, which static destruction leaves alone: threads may still call during exit.)
struct DirectCaller : ReadRole::Owner {
  bool taken = true;               // guarded by g_callers_mu
  DirectCaller* next = nullptr;    // guarded by g_callers_mu
};
std::mutex g_callers_mu;
DirectCaller* g_callers = nullptr;  // guarded by g_callers_mu

// A thread's links: its hazard slot and a small cache of the links it called, each valid while
// Cluster::links_epoch_ is the epoch it was cached at. Trivially destructible, so that reaching
// it is one %fs-relative access: a thread_local with a destructor is reached through
// __tls_get_addr and a guard, on every call. The slot is given back by t_release instead.
struct DirectCache {
  struct Entry {
    int pid;
    WorkerLink* link;
    uint64_t epoch;
  };
  DirectCaller* caller;
  Entry entries[8];
};
// Initial-exec, as t_segments in shared_arrays.cpp.
__attribute__((tls_model("initial-exec"))) constinit thread_local DirectCache t_direct{};

// Gives the thread's hazard slot back when the thread ends; touched only when the slot is
// claimed (its first direct call).
struct CallerRelease {
  bool armed = false;
  ~CallerRelease() {
    if (!t_direct.caller) return;
    std::lock_guard lock(g_callers_mu);
    t_direct.caller->taken = false;
    t_direct.caller = nullptr;
  }
};
thread_local CallerRelease t_release;

// A hazard slot for the calling thread (its first direct call), given back when it ends.
DirectCaller* claim_caller() {
  t_release.armed = true;  // constructed, and its destructor registered, for this thread
  std::lock_guard lock(g_callers_mu);
  for (DirectCaller* c = g_callers; c; c = c->next) {
    if (!c->taken) {
      c->taken = true;
      return c;
    }
  }
  auto* fresh = new DirectCaller;
  fresh->next = g_callers;
  g_callers = fresh;
  return fresh;
}
}  // namespace

const ReadRole::Owner* direct_caller_mark() noexcept { return t_direct.caller; }

class Cluster::DirectUse {
 public:
  // The listed link to pid (null if none), kept alive until this use ends. (Inline, as
  // try_post_express_call and await_express: a call's frame is then call_direct's alone.)
  [[gnu::always_inline]] DirectUse(Cluster& cluster, int pid) {
    DirectCache& cache = t_direct;
    if (!cache.caller) cache.caller = claim_caller();
    owner_ = cache.caller;
    slot_ = &cache.caller->using_link;
    DirectCache::Entry& entry = cache.entries[static_cast<unsigned>(pid) % 8];
    if (entry.pid == pid) {
      // Published before the epoch is read; unlisting bumps the epoch before a heavy fence
      // and then reads the slots (reclaim_unlisted): one of the two sees the other.
      slot_->store(entry.link, std::memory_order_relaxed);
      light_fence();
      if (cluster.links_epoch_.load(std::memory_order_relaxed) == entry.epoch) {
        link_ = entry.link;
        return;
      }
    }
    std::lock_guard lock(cluster.mu_);
    auto it = cluster.links_.find(pid);
    if (it == cluster.links_.end()) {
      slot_->store(nullptr, std::memory_order_relaxed);
      return;
    }
    entry = {pid, it->second.get(), cluster.links_epoch_.load(std::memory_order_relaxed)};
    link_ = entry.link;
    slot_->store(link_, std::memory_order_relaxed);  // seen by a reclaim after it is unlisted
    light_fence();  // before the read role's state is read (ReadRole::take_for_call)
  }
  ~DirectUse() { slot_->store(nullptr, std::memory_order_release); }
  DirectUse(const DirectUse&) = delete;
  DirectUse& operator=(const DirectUse&) = delete;
  WorkerLink* get() const { return link_; }
  const ReadRole::Owner* owner() const { return owner_; }

 private:
  const ReadRole::Owner* owner_ = nullptr;
  std::atomic<const void*>* slot_ = nullptr;
  WorkerLink* link_ = nullptr;
};

void Cluster::unlist_locked(std::shared_ptr<WorkerLink> link) {
  links_epoch_.store(links_epoch_.load(std::memory_order_relaxed) + 1,
                     std::memory_order_relaxed);
  unlisted_.push_back(std::move(link));
  unlisted_pending_.store(true, std::memory_order_relaxed);
}

void Cluster::reclaim_unlisted() noexcept {
  std::vector<std::shared_ptr<WorkerLink>> unused;
  {
    std::lock_guard lock(mu_);
    if (unlisted_.empty()) return;
    unused = unlisted_;
  }
  heavy_fence();  // The other half of DirectUse's light fence.
  std::unordered_set<const void*> used;
  {
    std::lock_guard lock(g_callers_mu);
    for (DirectCaller* c = g_callers; c; c = c->next) {
      used.insert(c->using_link.load(std::memory_order_acquire));
    }
  }
  std::erase_if(unused, [&](const auto& link) { return used.count(link.get()) != 0; });
  {
    std::lock_guard lock(mu_);
    std::erase_if(unlisted_, [&](const auto& link) {
      return std::find(unused.begin(), unused.end(), link) != unused.end();
    });
    unlisted_pending_.store(!unlisted_.empty(), std::memory_order_relaxed);
  }
  // `unused` is destroyed here, outside mu_: the last references to those links.
}


bool WorkerLink::try_send_compact_call(uint64_t request_id, const CallTarget& k,
                                       std::string_view args) {
  const uint64_t signature_id = k.signature_id ? k.signature_id : fnv1a64(*k.signature);
  std::unique_lock lock(write_mu, std::try_to_lock);
  const size_t frame_bytes = wire::kFramePrefixBytes + wire::kCompactCallHeaderBytes + args.size();
  if (!lock.owns_lock() || !ring->has_room(corked.size() + frame_bytes)) return false;
  try {
    write_corked_locked();  // In order: what was corked goes first.
    wire::write_compact_call(outlet(), request_id, k.id, signature_id, args.data(), args.size());
  } catch (const Error&) {
    // Cannot happen with room reserved and no wait; the reader finds out if the link broke.
  }
  return true;
}

[[gnu::always_inline]] inline bool WorkerLink::try_post_express_call(uint32_t seq,
                                                                   const CallTarget& k,
                                                                   std::string_view args) {
  if (any_corked.load(std::memory_order_relaxed)) {
    // In order: what was corked goes first, if it can be written without a wait. (Frames
    // other threads write meanwhile are not ordered before this call: no lock needed then.)
    std::unique_lock lock(write_mu, std::try_to_lock);
    if (!lock.owns_lock()) return false;
    if (!corked.empty()) {
      if (!ring->has_room(corked.size())) return false;
      try {
        write_corked_locked();
      } catch (const Error&) {
        // Cannot happen with room reserved and no wait; the reader finds out if the link broke.
      }
    }
  }
  const uint64_t signature_id = k.signature_id ? k.signature_id : fnv1a64(*k.signature);
  unsigned char* at = ring->slot();
  std::memcpy(at, &k.id, 8);
  std::memcpy(at + 8, &signature_id, 8);
  std::memcpy(at + wire::kExpressCallHeaderBytes, args.data(), args.size());
  ring->post(seq, wire::kExpressCallTag, wire::kExpressCallHeaderBytes + args.size());
  return true;
}

[[gnu::always_inline]] inline Cluster::ExpressAnswer Cluster::await_express(WorkerLink& link, uint32_t seq,
                                              std::unique_ptr<std::optional<wire::Frame>>& answer,
                                              const unsigned char*& value,
                                              size_t& value_bytes) {
  const uint64_t id = wire::express_request_id(seq);  // of an answer in a Result frame
  // Borrowed as read_as_borrower borrows, except that the ring's asleep flag is left as it
  // is: the answer wakes this thread through the slot's own flag (wire/ring.hpp), so a busy
  // exchange writes no flag at all.
  if (link.armed) {
    set_interest(link, false);
    link.armed = false;
  }
  ExpressAnswer how = ExpressAnswer::kRetired;
  for (;;) {
    try {
      if (link.reader.wait_frame_or_slot()) {
        auto m = link.ring->take_slot();
        if (m.seq != seq) {
          throw Error(ErrorKind::InvalidArgument,
                      "dj wire: express answer " + std::to_string(m.seq) + " to call " +
                          std::to_string(seq));
        }
        if (m.tag == static_cast<uint32_t>(wire::CompactStatus::kOk)) {
          value = m.data;
          value_bytes = m.bytes;
          how = ExpressAnswer::kValue;
        } else if (m.tag == static_cast<uint32_t>(wire::CompactStatus::kResendInFull)) {
          how = ExpressAnswer::kResend;
        } else {
          throw Error(ErrorKind::InvalidArgument,
                      "dj wire: unknown express answer status " + std::to_string(m.tag));
        }
        break;
      }
    } catch (const Error& e) {
      retire(link.shared_from_this(), std::string("its connection failed: ") + e.what());
      break;
    }
    if (!answer) answer = std::make_unique<std::optional<wire::Frame>>();
    if (!read_one(link.shared_from_this(), id, answer.get())) break;  // retired
    if (*answer) {
      how = ExpressAnswer::kFrame;
      break;
    }
  }
  link.borrows.store(link.borrows.load(std::memory_order_relaxed) + 1,
                      std::memory_order_relaxed);
  return how;
}

void Cluster::throw_number_size(size_t size, size_t want) {
  throw Error(ErrorKind::InvalidArgument, "dj: a result of " + std::to_string(size) +
                                              " bytes where a number of " +
                                              std::to_string(want) + " bytes was expected");
}

bool Cluster::call_direct(int pid, const CallTarget& k, std::string_view args,
                          const DirectAnswer& answer_out) {
  return call_direct_inline(pid, k, args, answer_out);
}

namespace {
// call_fetch_number's full path, out of line: the express path's frame stays small.
[[gnu::noinline]] void call_fetch_number_in_full(Cluster& cluster, int pid, const CallTarget& k,
                                                 std::string_view args, void* out, size_t want) {
  const ser::Bytes answer = cluster.call_fetch_in_full(pid, k, args);
  Cluster::copy_number(answer.data(), answer.size(), out, want);
}
}  // namespace

// Here rather than in api.cpp, with call_direct's body inline: the number path's one frame.
void call_fetch_number(int pid, const CallTarget& k, const unsigned char* blob, size_t size,
                       void* out, size_t want) {
  if (!out) __builtin_unreachable();  // the caller's variable (so the bytes branch is dead)
  Cluster& cluster = Cluster::instance();
  const std::string_view args(reinterpret_cast<const char*>(blob), size);
  if (pid != 1 && cluster.call_direct_inline(pid, k, args, {nullptr, out, want})) return;
  call_fetch_number_in_full(cluster, pid, k, args, out, want);
}

bool Cluster::call_direct_inline(int pid, const CallTarget& k, std::string_view args,
                                 const DirectAnswer& answer_out) {
  if (k.chunk_op != 0) return false;
  DirectUse use(*this, pid);
  WorkerLink* link = use.get();
  if (!link || !link->ring) return false;  // The full path says why.
  const ReadRole::Took took = link->read_role.take_for_call(use.owner());
  if (took == ReadRole::Took::kRefused) return false;  // Another thread reads it.
  struct Parker {  // The role stays with this thread between its calls.
    WorkerLink& link;
    const ReadRole::Owner* owner;
    bool taken;
    ~Parker() {
      if (taken) link.read_role.park(owner);
    }
  } parker{*link, use.owner(), took == ReadRole::Took::kTaken};

  // Small arguments go through the ring's express slot, others as a compact frame. The reader
  // of a connection must never wait to write on it (the worker may be waiting for us to read
  // before it reads again), so the call goes only if it can be written now.
  const bool express =
      wire::kExpressCallHeaderBytes + args.size() <= wire::RingLink::kSlotBytes;
  uint64_t id = 0;
  if (express) {
    if (++link->express_seq == 0) link->express_seq = 1;  // 0 is the empty slot's
    if (!link->try_post_express_call(link->express_seq, k, args)) return false;
  } else {
    id = kDirectIdBit | g_next_direct_id.fetch_add(1, std::memory_order_relaxed);
    if (!link->try_send_compact_call(id, k, args)) return false;
  }
  // Counted in flight for Ctrl-C and the heartbeat, as any call. An answer that comes as a
  // frame goes in `framed`, allocated only then (see await_express).
  std::unique_ptr<std::optional<wire::Frame>> framed;
  const unsigned char* value = nullptr;
  size_t value_bytes = 0;
  ExpressAnswer how = ExpressAnswer::kFrame;
  if (express) {
    link->express_out.store(true, std::memory_order_relaxed);
    how = await_express(*link, link->express_seq, framed, value, value_bytes);
    link->express_out.store(false, std::memory_order_relaxed);
  } else {
    framed = std::make_unique<std::optional<wire::Frame>>();
    link->in_flight.fetch_add(1);
    read_as_borrower(link->shared_from_this(), nullptr, id, *framed);
    link->in_flight.fetch_sub(1);
  }
  if (!some_link_disarmed_.load(std::memory_order_relaxed) &&
      !some_link_disarmed_.exchange(true)) {
    wake();  // The I/O thread starts its re-arm tick.
  }
  if (how == ExpressAnswer::kValue) {
    if (answer_out.number) {
      copy_number(value, value_bytes, answer_out.number, answer_out.number_bytes);
    } else {
      *answer_out.bytes =
          ser::Bytes(std::string(reinterpret_cast<const char*>(value), value_bytes));
    }
    return true;
  }
  if (how == ExpressAnswer::kResend) return false;
  if (!framed || !*framed) {
    // Retired while we waited: report it as the full path's waiters hear it.
    std::lock_guard lock(mu_);
    auto gone = gone_.find(pid);
    throw Error(ErrorKind::Disconnected,
                process_exited(pid, gone != gone_.end() ? gone->second
                                                        : "worker " + std::to_string(pid) + " is gone"),
                pid);
  }
  wire::Frame& answer = **framed;
  auto& result = std::get<wire::Result>(answer.message);
  if (result.resend_in_full) return false;
  if (!result.ok) throw to_error(result.error);
  if (answer_out.number) {
    const bool bulk = answer.bulk != nullptr;
    copy_number(bulk ? answer.bulk->data()
                     : reinterpret_cast<const unsigned char*>(answer.payload.data()),
                bulk ? answer.bulk->size() : answer.payload.size(), answer_out.number,
                answer_out.number_bytes);
  } else if (answer.bulk) {
    const unsigned char* data = answer.bulk->data();
    size_t size = answer.bulk->size();
    *answer_out.bytes = ser::Bytes(data, size, std::move(answer.bulk));
  } else {
    *answer_out.bytes = ser::Bytes(std::move(answer.payload));
  }
  return true;
}

}  // namespace dj::detail
