// remotecall_fetch to a same-host worker without a hand-off or a Cap'n Proto header: the
// calling thread writes a compact call into the worker's ring and reads the ring itself until
// the answer is in (wire/compact.hpp). Frames that arrive meanwhile for other requests are
// handled as the I/O thread would handle them.
#include "cluster.hpp"

namespace dj::detail {
namespace {
// Direct calls take request ids from their own range: they are never in WorkerLink::replies.
constexpr uint64_t kDirectIdBit = uint64_t{1} << 63;
std::atomic<uint64_t> g_next_direct_id{1};
}  // namespace

bool WorkerLink::try_send_compact_call(uint64_t request_id, const CallTarget& k,
                                       const std::string& args) {
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

std::optional<ser::Bytes> Cluster::call_direct(int pid, const CallTarget& k, ArgBlob& args) {
  if (args.lent || k.chunk_op != 0) return std::nullopt;
  std::shared_ptr<WorkerLink> link;
  {
    std::lock_guard lock(mu_);
    auto it = links_.find(pid);
    if (it == links_.end()) return std::nullopt;  // The full path says why.
    link = it->second;
  }
  if (!link->ring) return std::nullopt;
  std::unique_lock reader(link->read_mu, std::try_to_lock);
  if (!reader.owns_lock()) return std::nullopt;  // Another thread reads it: wait for a Reply.

  const uint64_t id = kDirectIdBit | g_next_direct_id.fetch_add(1, std::memory_order_relaxed);
  // The reader of a connection must never wait to write on it: the worker may be waiting for
  // us to read before it reads again. So the call goes only if it fits in the ring now.
  if (!link->try_send_compact_call(id, k, args.bytes)) return std::nullopt;
  link->in_flight.fetch_add(1);  // For Ctrl-C and the heartbeat, as any call.
  std::optional<wire::Frame> answer;
  read_as_borrower(link, nullptr, id, answer);
  link->in_flight.fetch_sub(1);
  reader.unlock();
  if (!some_link_disarmed_.exchange(true)) wake();  // The I/O thread starts its re-arm tick.

  if (!answer) {  // Retired while we waited: report it as the full path's waiters hear it.
    std::lock_guard lock(mu_);
    auto gone = gone_.find(pid);
    throw Error(ErrorKind::Disconnected,
                process_exited(pid, gone != gone_.end() ? gone->second
                                                        : "worker " + std::to_string(pid) + " is gone"),
                pid);
  }
  auto& result = std::get<wire::Result>(answer->message);
  if (result.resend_in_full) return std::nullopt;
  if (!result.ok) throw to_error(result.error);
  if (answer->bulk) {
    const unsigned char* data = answer->bulk->data();
    size_t size = answer->bulk->size();
    return ser::Bytes(data, size, std::move(answer->bulk));
  }
  return ser::Bytes(std::move(answer->payload));
}

}  // namespace dj::detail
