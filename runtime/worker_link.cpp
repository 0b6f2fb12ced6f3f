// A worker link's writes: corked bursts, frames (through the bulk arena when it takes them) and
// arguments written straight into the arena.
#include "cluster.hpp"

namespace dj::detail {

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

}  // namespace dj::detail
