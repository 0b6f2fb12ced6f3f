// dj-worker's express path: a same-host remotecall_fetch taken from the ring's slot
// (wire/ring.hpp) by the reader, run in place, and answered in the slot, with no frame, no
// call object and no lock in the common case. Anything else it meets goes the full path
// (worker_server.cpp).
#include <cstring>

#include "asymmetric_fence.hpp"
#include "worker_server.hpp"

namespace dj::detail {

bool WorkerServer::serve_express(ReaderRole& reader) {
  wire::RingLink& ring = *reader_->ring();
  const wire::RingLink::SlotMessage m = ring.take_slot();  // throws if corrupt
  if (m.tag != wire::kExpressCallTag || m.bytes < wire::kExpressCallHeaderBytes) {
    throw Error(ErrorKind::InvalidArgument,
                "dj wire: malformed express call (tag " + std::to_string(m.tag) + ", " +
                    std::to_string(m.bytes) + " bytes)");
  }
  uint64_t kernel_id, signature_id;
  std::memcpy(&kernel_id, m.data, 8);
  std::memcpy(&signature_id, m.data + 8, 8);
  const char* blob = reinterpret_cast<const char*>(m.data) + wire::kExpressCallHeaderBytes;
  const size_t blob_bytes = m.bytes - wire::kExpressCallHeaderBytes;
  // The kernel last called this way, unless a plugin load came since (reader role only).
  const uint64_t version = registry_.version();
  if (kernel_id != express_kernel_id_ || version != express_version_) {
    express_kernel_ = registry_.find(kernel_id);
    express_kernel_id_ = kernel_id;
    express_version_ = version;
  }
  // Valid while the kernel runs, after the reader role is given up: only serve_express changes
  // the cache, and no other express call comes before this one is answered.
  const KernelEntry* kernel = express_kernel_.get();
  if (!kernel || kernel->signature_id != signature_id) {
    post_express(m.seq, wire::CompactStatus::kResendInFull, nullptr, 0);
    return false;
  }
  const ExpressCall call{m.seq, kernel_id, signature_id, blob, blob_bytes};
  const uint64_t generation = current_generation();
  // Read idle, run_state_ stays idle until we set it: only the reader starts a batch or queues
  // a call, and a runner finishes only a batch that runs.
  if (run_state_.load(std::memory_order_acquire) != kIdle) {
    std::lock_guard q(queue_mu_);
    // Behind the calls already waiting; reply() answers it in turn.
    if (queue_behind_locked()) {
      queue_.push_back(express_pending(call));
      return false;
    }
  } else {
    // start_batch's reading of the timer flag comes after: the follower's heavy fence pairs
    // with this light one (wait_for_takeover), so the store needs no locked instruction.
    run_state_.store(kRunning, std::memory_order_relaxed);
    light_fence();
  }
  start_batch(reader);
  // The slot is not written again before this call is answered: the arguments are read in
  // place there, and the answer is written once the kernel is done. A numbers-only entry's
  // answer (at most kNumbersResultRoom bytes) goes straight into the slot, over the call's
  // header (its ids, read above), not over the arguments after it.
  static_assert(kNumbersResultRoom <= wire::kExpressCallHeaderBytes);
  std::unique_ptr<CallOutcome> other;
  const long written = run_numbers(ctx_, *kernel, generation, blob, blob_bytes, ring.slot(), other);
  if (written >= 0) {
    ring.post(m.seq, static_cast<uint16_t>(wire::CompactStatus::kOk), static_cast<size_t>(written));
  } else {
    serve_express_in_full(call, *kernel, generation, other);
  }
  finish_express();
  return true;
}

PendingCall WorkerServer::express_pending(const ExpressCall& express) {
  wire::Call call;
  call.request_id = wire::express_request_id(express.seq);
  call.kernel_id = express.kernel_id;
  call.mode = wire::CallMode::kFetch;
  call.compact = call.express = true;
  call.signature_id = express.signature_id;
  return accept_call(ctx_, std::move(call), std::string(express.blob, express.blob_bytes));
}

void WorkerServer::serve_express_in_full(const ExpressCall& call, const KernelEntry& kernel,
                                         uint64_t generation,
                                         std::unique_ptr<CallOutcome>& other) {
  unsigned char value[wire::RingLink::kSlotBytes];
  size_t value_bytes = 0;
  if (!other && !run_in_place(ctx_, kernel, generation, call.blob, call.blob_bytes, value,
                              sizeof value, value_bytes, other)) {
    PendingCall p = express_pending(call);  // a Future argument, or a malformed blob
    CallOutcome outcome = execute_call(ctx_, p);
    reply(p, std::move(outcome));
  } else if (!other) {
    post_express(call.seq, wire::CompactStatus::kOk, value, value_bytes);
  } else {
    send(wire::Result{wire::express_request_id(call.seq), other->ok, other->error},
         other->result);
  }
}

void WorkerServer::finish_express() {
  // The common case, without the lock: nothing was queued behind this call. (A queuer sets
  // kQueued before it pushes, holding the lock: then the lock is taken here, and the call is
  // in the queue by the time it is.)
  uint32_t running = kRunning;
  if (run_state_.compare_exchange_strong(running, kIdle, std::memory_order_acq_rel)) return;
  std::unique_lock q(queue_mu_);
  PendingCall next = pop_queued_locked();  // what the follower queued meanwhile
  q.unlock();
  run_calls(std::move(next));
}

void WorkerServer::post_express(uint32_t seq, wire::CompactStatus status, const void* value,
                                size_t bytes) {
  // One express call is answered at a time (the master waits for it), so the slot needs no lock.
  if (bytes) std::memcpy(reader_ring_->slot(), value, bytes);
  reader_ring_->post(seq, static_cast<uint16_t>(status), bytes);
}

}  // namespace dj::detail
