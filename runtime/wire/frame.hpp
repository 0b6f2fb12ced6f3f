// Framing of dj messages on a byte stream: a 16-byte prefix, the Cap'n Proto header, then the
// bulk payload. Kept apart from the codec so that the fuzzer and the socket code can reach the
// frame reader without the generated schema.
//
//   offset 0  u32  magic 'DJ01' (0x31304a44, little-endian)
//   offset 4  u32  header bytes (a multiple of 8, at most kMaxHeaderBytes)
//   offset 8  u64  payload bytes (at most the reader's payload limit)
//   offset 16 header, then payload
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "wire/bulk.hpp"
#include "wire/compact.hpp"
#include "wire/codec.hpp"
#include "wire/outlet.hpp"
#include "wire/ring.hpp"

namespace dj::wire {

inline constexpr uint32_t kFrameMagic = 0x31304a44;
inline constexpr size_t kFramePrefixBytes = 16;
inline constexpr uint32_t kMaxHeaderBytes = 1u << 20;
inline constexpr uint64_t kDefaultMaxPayloadBytes = uint64_t{16} << 30;

struct Frame {
  Message message;
  std::string payload;
  // A bulk frame's payload, lent by the sender (then `payload` is empty): see wire/bulk.hpp.
  std::shared_ptr<BulkPayload> bulk;

  // The payload wherever it is.
  std::string_view bytes() const {
    return bulk ? std::string_view(reinterpret_cast<const char*>(bulk->data()), bulk->size())
                : std::string_view(payload);
  }
  // Copies a lent payload into `payload` and hands the memory back (for the messages that keep
  // their payload: only calls and results are read in place).
  void materialize() {
    if (!bulk) return;
    payload.assign(reinterpret_cast<const char*>(bulk->data()), bulk->size());
    bulk.reset();
  }
};

struct FramePrefix {
  uint32_t header_bytes = 0;
  uint64_t payload_bytes = 0;
  bool bulk = false;  // magic 'DJ02': the payload is a bulk descriptor (wire/bulk.hpp)
  uint32_t compact = 0;  // 'DJ03' or 'DJ04': a compact call or result (wire/compact.hpp)
};

// Validates a prefix. Throws dj::Error(InvalidArgument) naming the bad field and its value.
// A bulk prefix ('DJ02') is accepted with a payload of exactly the descriptor's 16 bytes, a
// compact one ('DJ03', 'DJ04') with exactly its fixed header.
FramePrefix parse_prefix(const unsigned char (&prefix)[kFramePrefixBytes],
                         uint64_t max_payload_bytes);

// Writes one frame to a blocking socket/pipe fd (a single writev when it fits), or into the
// outlet's ring. Throws: dj::Error(Disconnected) when the peer is gone.
// Thread-safety: callers serialise writes to the same outlet.
void write_frame(Outlet out, const Message& message, const std::string& payload = {});
void write_frame(Outlet out, const Message& message, const char* payload, size_t payload_bytes);
// Writes the parts of one frame, in order, whole (iov may be modified). Throws like write_frame.
void write_parts(Outlet out, iovec* iov, int count);
// Writes bytes already framed (append_frame). Throws like write_frame.
void write_framed(Outlet out, const std::string& frames);
// Writes one frame on a Unix socket with descriptors attached (SCM_RIGHTS; RingOffer).
void write_frame_with_fds(int socket, const Message& message, const std::vector<int>& fds);

// Appends one frame, as write_frame would write it, to `out` (for frames written later together).
void append_frame(std::string& out, const Message& message, const char* payload = nullptr,
                  size_t payload_bytes = 0);

// Reads one frame from a blocking fd. Returns nullopt on a clean EOF before the first byte.
// Throws: dj::Error(Disconnected) on EOF or error mid-frame, InvalidArgument on a bad frame
// (a bulk frame included: this reader takes no descriptors).
std::optional<Frame> read_frame(int fd, uint64_t max_payload_bytes = kDefaultMaxPayloadBytes);

// Reads frames from a blocking fd through a buffer, so that a small frame costs one read()
// instead of three. Large payloads are read straight into their own string.
// Thread-safety: one reader at a time (the owner serialises).
class FrameReader {
 public:
  explicit FrameReader(int fd, uint64_t max_payload_bytes = kDefaultMaxPayloadBytes)
      : fd_(fd), max_payload_(max_payload_bytes) {}
  ~FrameReader();
  FrameReader(const FrameReader&) = delete;
  FrameReader& operator=(const FrameReader&) = delete;
  // Takes bulk frames on this (same-host Unix) connection: reads passed descriptors along with
  // the bytes, and maps each bulk payload; `release(token)` runs when the payload is dropped
  // (it sends BulkFree). Without this, a bulk frame is refused as malformed. Call before next().
  void accept_bulk(std::function<void(uint64_t)> release);
  // The mapping of the peer's arena this reader keeps (null without accept_bulk), for whoever
  // trims it when idle; set once, by accept_bulk.
  const std::shared_ptr<BulkViews>& bulk_views() const { return views_; }
  // Keeps descriptors passed with frames (for RingOffer) without taking bulk frames.
  void keep_descriptors() { receive_fds_ = true; }
  // On a socket: before blocking for more bytes, keep trying to read without blocking for
  // kRingSpin. A reader expecting an answer soon (a borrower, a worker between calls) then takes
  // it without a scheduler wake-up, the larger part of a round trip on a VM whose idle CPUs halt.
  // (A ring always spins first.)
  void spin_before_blocking(bool on) { spin_ = on; }
  // Reads from `ring` from now on (RingOffer/RingReady); the socket then brings only the
  // descriptors of bulk frames and the end of the connection. Socket bytes already buffered
  // can only be such descriptors' carrier bytes, and are dropped.
  void use_ring(std::shared_ptr<RingLink> ring);
  const std::shared_ptr<RingLink>& ring() const { return ring_; }
  // Takes the n descriptors that came with the last frame read (RingOffer).
  // Throws: InvalidArgument when fewer came.
  std::vector<int> take_fds(size_t n);
  // Blocks until a whole frame is in. Returns nullopt on EOF at a frame boundary.
  // Throws like read_frame.
  std::optional<Frame> next();
  // Whether next() can return a frame without reading (one is wholly buffered).
  bool has_buffered_frame() const;
  // For a reader that sleeps in epoll: after an event on the socket (socket_event) or on the
  // ring's doorbell, whether next() has anything to read (on a socket: always).
  bool ready(bool socket_event);
  // Ring mode: waits until next() has something to read (bytes buffered or in the ring, or
  // news on the socket) or the ring's express slot holds a message. Returns true for the
  // slot, which comes only when nothing was written before it: frames the peer wrote first
  // are read first. Without a ring: returns false at once.
  bool wait_frame_or_slot() {
    if (!ring_ || buffered() > 0 || eof_) return false;
    // The slot first: the peer published its earlier frames before it posted.
    const bool slot = ring_->slot_waiting();
    if (ring_->readable() > 0) return false;
    return slot || wait_frame_or_slot_slow();
  }
  // Whether another frame is waiting after next(): wholly buffered, or bytes in the ring.
  bool more_waiting() const;
  // Bytes read from the fd so far; safe to read from any thread (progress of a long frame).
  uint64_t bytes_read() const { return bytes_read_.load(std::memory_order_relaxed); }

 private:
  bool fill(size_t at_least);  // false on EOF
  bool wait_frame_or_slot_slow();  // wait_frame_or_slot when nothing is there yet
  ssize_t read_some(char* at, size_t n);
  // Reads from the socket, keeping passed descriptors (flags: MSG_DONTWAIT or 0).
  ssize_t receive(char* at, size_t n, int flags);
  // Ring mode: takes what the socket holds without blocking (descriptors, or EOF).
  void pump_socket();
  // The descriptor of the bulk frame just read. Throws InvalidArgument/Disconnected.
  int take_bulk_fd();
  size_t buffered() const { return end_ - start_; }
  static constexpr size_t kChunk = 64 * 1024;
  int fd_;
  uint64_t max_payload_;
  std::unique_ptr<char[]> buf_;  // never zero-filled: only [start_, end_) is meaningful
  size_t cap_ = 0, start_ = 0, end_ = 0;
  std::atomic<uint64_t> bytes_read_{0};
  std::function<void(uint64_t)> bulk_release_;
  std::shared_ptr<BulkViews> views_;
  bool accept_bulk_ = false;
  bool receive_fds_ = false;  // read with recvmsg, keeping descriptors
  bool spin_ = false;
  std::deque<int> fds_;  // descriptors received, in order, for the bulk frames they came with
  std::shared_ptr<RingLink> ring_;
  bool eof_ = false;  // ring mode: the socket reached its end
};

// Shared-memory rings on a same-host connection (wire/ring.hpp), set up right after Welcome.
// Whether they are used at all: DJ_RING=0 keeps every connection on its socket.
bool rings_enabled();
// The connecting side: sends RingOffer with the rings' descriptors and reads RingReady (the
// socket's receive timeout bounds the wait). Returns the rings, or null with `refused` set to
// the peer's reason (the socket then stays the connection). Throws: Disconnected when no
// RingReady comes.
std::shared_ptr<RingLink> offer_ring(int sock, std::string& refused);
// The accepting side, on RingOffer: maps the rings that came with it (reader keeps
// descriptors) and answers RingReady on the socket, the last frame written there; the caller
// holds its write lock and switches its writes, and `reader`, to the rings returned (null: it
// refused them, and said why).
std::shared_ptr<RingLink> accept_ring(FrameReader& reader, int sock, const RingOffer& offer);

// Parses a complete frame held in memory (used by the fuzzer). Throws like read_frame.
Frame parse_frame(const std::string& bytes, uint64_t max_payload_bytes = kDefaultMaxPayloadBytes);

}  // namespace dj::wire
