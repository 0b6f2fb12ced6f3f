// Large payloads between processes on one host, through shared memory instead of the socket.
//
// A payload of at least kBulkMinBytes sent on a same-host connection (an abstract Unix socket)
// goes as a *bulk frame*: the prefix carries magic 'DJ02', the Cap'n Proto header follows as
// usual, and the payload is replaced by a 16-byte descriptor (u64 length, u64 token) while the
// bytes themselves lie in the sender's BulkArena, a sealed memfd passed along with the frame
// (SCM_RIGHTS). The receiver maps it read-only, reads the payload in place (the kernel decodes
// its arguments straight from it; the master decodes a result straight from it), then answers
// BulkFree{token}, which hands the arena back to the sender for its next payload.
//
// The arena stays mapped and its pages stay allocated between payloads, so a steady stream of
// large values costs one copy into warm memory per message, where the socket cost two copies
// through the kernel and a fresh, page-faulting buffer on the receiving side. While the peer
// still holds the arena (it has not read the last payload yet) the sender uses the socket: a
// bulk frame is never waited for. The receiver keeps its mapping of the peer's arena between
// payloads too (BulkViews), so a steady stream maps, populates and unmaps nothing: mapping
// 256 MiB with its page tables and unmapping it cost as much as copying it. An arena idle for
// kBulkIdleTrim is unmapped and closed by its sender, and the receiver's mapping of it is
// dropped after the same idle time, so its memory goes back to the system.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

#include "wire/codec.hpp"
#include "wire/outlet.hpp"

namespace dj::wire {

inline constexpr uint32_t kBulkFrameMagic = 0x32304a44;  // 'DJ02'
inline constexpr size_t kBulkDescriptorBytes = 16;
inline constexpr size_t kBulkMinBytes = size_t{1} << 20;
inline constexpr auto kBulkIdleTrim = std::chrono::seconds(2);

// A payload lent by the sender: readable until this is destroyed, which tells the sender
// (through the reader's release callback) that the arena is free again.
class BulkPayload {
 public:
  struct Mapping;  // a read-only mapping of the sender's arena, shared by its payloads
  BulkPayload(std::shared_ptr<Mapping> mapping, const unsigned char* data, size_t size,
              uint64_t token, std::function<void(uint64_t)> release);
  ~BulkPayload();
  BulkPayload(const BulkPayload&) = delete;
  BulkPayload& operator=(const BulkPayload&) = delete;
  const unsigned char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  std::shared_ptr<Mapping> mapping_;
  const unsigned char* data_;
  size_t size_;
  uint64_t token_;
  std::function<void(uint64_t)> release_;
};

// The receiving side's mapping of one peer's arena, kept from one payload to the next while the
// peer sends from the same memfd. Thread-safety: all members may be called from any thread.
class BulkViews {
 public:
  BulkViews() = default;
  ~BulkViews();
  BulkViews(const BulkViews&) = delete;
  BulkViews& operator=(const BulkViews&) = delete;
  // The payload a bulk frame describes, in the memfd that came with it (taking ownership of
  // `fd`). Checks that the memfd is sealed against shrinking and holds `length` bytes, so a
  // peer cannot make the reader fault on a truncated mapping. Maps it only when it is not the
  // memfd mapped last (or the payload is longer than that mapping). Throws InvalidArgument
  // naming the problem, ResourceExhausted when it cannot be mapped.
  std::shared_ptr<BulkPayload> map(int fd, uint64_t length, uint64_t token,
                                   std::function<void(uint64_t)> release);
  // Drops the kept mapping when no payload has used it for kBulkIdleTrim (its memory is
  // unmapped once the last payload in it is gone too).
  void trim_idle(std::chrono::steady_clock::time_point now);
  // Whether a mapping is kept (for tests and the trim tick).
  bool holds() const;

 private:
  mutable std::mutex mu_;
  std::shared_ptr<BulkPayload::Mapping> kept_;
};

// Writes all of `iov` on a Unix socket with `fds` attached (SCM_RIGHTS) to its first byte,
// finishing a short write without them. Throws: Disconnected naming the fd when the peer is gone.
void send_with_fds(int sock, const iovec* iov, int count, const int* fds, size_t nfds);

// The sending side's shared memory for large payloads to one peer. Thread-safety: all members
// may be called from any thread.
class BulkArena {
 public:
  BulkArena() = default;
  ~BulkArena();
  BulkArena(const BulkArena&) = delete;
  BulkArena& operator=(const BulkArena&) = delete;

  // Room for a payload of `bytes` in the arena, kept for the caller until send_reserved() or
  // cancel(); or nullptr (send through the socket then) when the payload is small, the peer
  // still holds the arena, another payload is being written, or shared memory is short.
  unsigned char* reserve(size_t bytes);
  // Sends `message` with the first `bytes` bytes of the reserved room as its payload. The
  // caller serialises writes to `out`. Throws: Disconnected when the peer is gone.
  void send_reserved(Outlet out, const Message& message, size_t bytes);
  // Gives back a reservation that will not be sent.
  void cancel();
  // reserve + copy + send_reserved; false (nothing sent) when reserve gives no room.
  bool try_send(Outlet out, const Message& message, const unsigned char* payload, size_t bytes);
  // The peer's BulkFree: the arena is free for the next payload. A token that is not the one
  // out (a confused or hostile peer) is ignored.
  void released(uint64_t token);
  // Unmaps and closes an arena free and unused for kBulkIdleTrim (its memory goes back).
  void trim_idle(std::chrono::steady_clock::time_point now);
  // Bytes of shared memory held now (for tests and diagnostics).
  size_t capacity() const;
  // Arenas and kept views holding memory in this process (so an idle process knows whether
  // to tick for trims).
  static int held_count();

 private:
  bool ensure_capacity_locked(size_t bytes);
  void unmap_locked();
  mutable std::mutex mu_;
  int fd_ = -1;
  unsigned char* data_ = nullptr;
  size_t cap_ = 0;
  enum class State { kFree, kReserved, kOut } state_ = State::kFree;  // kOut: lent to the peer
  uint64_t token_ = 0;
  std::chrono::steady_clock::time_point last_used_{};
};

}  // namespace dj::wire
