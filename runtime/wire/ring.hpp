// Frames between the master and a worker on the same host, through shared memory.
//
// A RingLink is two single-producer, single-consumer byte rings in one sealed memfd, one ring
// each way, beside the connection's Unix socket. After the RingOffer/RingReady exchange every
// frame goes through the rings: a writer copies its bytes in and publishes them with one
// release store, and a reader that was spinning sees them a few hundred nanoseconds later, so
// a round trip between two busy processes costs no system call at all.
//
// Waiting is spin-then-block (SpinWait). A reader spins for kRingSpin; then it says it is asleep (a flag in
// the ring) and sleeps in poll() on its doorbell (an eventfd) and on the socket. A writer rings
// the doorbell only when the flag says the reader sleeps, so a busy exchange costs nothing and
// an idle process uses no CPU. The master's I/O thread, which reads many workers, keeps the
// flag set and sleeps in epoll on the doorbell instead. A writer that finds its ring full
// spins, then sleeps on a futex in the ring, waking every kRingLivenessCheck to see whether the
// reader's process still exists (its socket end is closed when it dies).
//
// Beside the rings is an express slot (post/take_slot): one message at a time, either way,
// written in place and published by one word that shares its cache line with the first
// bytes. A small message then crosses between cores as one cache line, where a ring frame
// takes two (its bytes, then the tail). It carries a same-host remotecall_fetch and its
// answer, which take turns in it: the master posts a call only once the last one is
// answered, and the worker answers only what it has taken, so the slot is never written by
// both sides at once. Its reader is woken through the same doorbell, by its own asleep flag
// (slot_asleep), which only a reader about to sleep sets: the master's I/O thread, asleep for
// the rings, never takes slot messages.
//
// The socket stays open for what shared memory cannot carry: the end of the connection (a dead
// peer's socket reads EOF, which wakes a sleeping reader) and the descriptor of each bulk frame
// (wire/bulk.hpp): the frame's bytes go into the ring, then one byte with the descriptor goes
// on the socket, so the reader finds it there when it reaches the frame.
//
// Every position read from shared memory is checked (a peer cannot make the reader copy
// outside the ring). Thread-safety: one writer and one reader at a time per direction (the
// owners serialise them); readable() may be called by the reader only.
#pragma once

#include <sys/uio.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "asymmetric_fence.hpp"

namespace dj::wire {

inline constexpr size_t kRingBytes = size_t{256} << 10;
inline constexpr auto kRingSpin = std::chrono::microseconds(40);
inline constexpr auto kPureSpin = std::chrono::microseconds(4);

// The spin of spin-then-block: call spin() until what is awaited is there, or until it returns
// false (kRingSpin has passed: block then). The first kPureSpin is a pure spin (the answer is
// usually there by then when the peer runs on another core); after that each turn yields the
// CPU, so that on a busy machine the peer, perhaps waiting for this very CPU, runs instead.
// The clock is first read after kUntimedTurns turns: an answer that comes within them (the
// common case of a busy exchange) costs no clock read at all.
class SpinWait {
 public:
  bool spin();

 private:
  static constexpr unsigned kUntimedTurns = 16;
  std::chrono::steady_clock::time_point start_{};
  unsigned turns_ = 0;
  bool yielding_ = false;
};
inline constexpr auto kRingLivenessCheck = std::chrono::milliseconds(20);

class RingLink {
 public:
  // Master side: creates the memory (two rings of `ring_bytes`, a power of two) and both
  // doorbells. `socket` is the connection it sits beside (not owned).
  // Throws: ResourceExhausted when memory or descriptors run out.
  static std::shared_ptr<RingLink> create(int socket, size_t ring_bytes = kRingBytes);
  // Worker side: maps what came with RingOffer, taking ownership of the three descriptors
  // (closed on failure too). Throws: InvalidArgument naming what is wrong with them.
  static std::shared_ptr<RingLink> attach(int socket, int memfd, int my_bell, int peer_bell,
                                          uint64_t ring_bytes);
  ~RingLink();
  RingLink(const RingLink&) = delete;
  RingLink& operator=(const RingLink&) = delete;

  // What the worker needs, in RingOffer's order (memfd, its doorbell, the master's doorbell).
  std::array<int, 3> offer_fds() const;
  size_t ring_bytes() const { return cap_; }
  // Readable when the peer rang this side (for epoll).
  int bell_fd() const { return my_bell_; }

  // Writer. Copies the bytes in, waiting for room when the ring is full, and publishes them.
  // Throws: Disconnected when the reader's process is gone while waiting for room.
  void write(const iovec* iov, int count);
  // Whether `bytes` can be written now without waiting for room (writer only).
  bool has_room(size_t bytes);
  // write(), then one byte carrying `fd` (SCM_RIGHTS) on the socket. Throws like write().
  void write_with_fd(const iovec* iov, int count, int fd);

  // Reader. Bytes waiting in the incoming ring. Throws: InvalidArgument if its positions are
  // corrupt.
  size_t readable() const {
    const uint64_t used = in_tail_->load(std::memory_order_acquire) - in_head_;
    if (used > cap_) throw_corrupt(used);
    return static_cast<size_t>(used);
  }
  // Copies up to n waiting bytes out (0: none waiting). Never blocks.
  size_t read(char* at, size_t n);
  // Waits until readable() (or slot_waiting(), with `slot_too`), or until the socket has
  // something to read (EOF or a descriptor): spins for kRingSpin, then sleeps. Returns true
  // when the socket should be looked at.
  bool wait(bool slot_too = false);
  // Whether the reader sleeps without spinning first (the master's I/O thread, in epoll):
  // writers then always ring. Setting it true rings this side's own doorbell when bytes are
  // already waiting, so the sleeper cannot miss them.
  void set_asleep(bool asleep);
  // Empties this side's doorbell (after epoll reported it).
  void drain_bell();

  // Express slot, writer. Room for a message's bytes; write them at slot(), then post(): the
  // slot must be this side's turn (the peer took the last message and answered it, or this
  // side took the peer's). What the peer posted is overwritten: take it first.
  static constexpr size_t kSlotBytes = 1024 - 8;  // the first 56 share the line of the word
  static_assert(kSlotBytes < 65536, "a slot message's size is 16 bits");
  unsigned char* slot() { return slot_data_; }
  // Publishes `bytes` written at slot() under `seq` (never 0, never the last one posted) with
  // a tag (15 bits) for the reader, ringing the doorbell if the reader sleeps. Never blocks.
  // (Inline, as the slot's reading: these are an express call's whole transport.)
  void post(uint32_t seq, uint16_t tag, size_t bytes) {
    slot_->word.store(seq | uint64_t{static_cast<uint16_t>(bytes)} << 32 |
                          uint64_t{tag & 0x7fffu} << 48 | my_slot_mark_,
                      std::memory_order_release);
    // Pairs with the reader's heavy fence in wait(): either it sees the message, or we see it
    // asleep. A compiler barrier only (no locked instruction on an express call's path) when
    // this process is registered for the reader's membarrier (asymmetric_fence.hpp).
    detail::shared_light_fence();
    if (peer_slot_asleep_->load(std::memory_order_relaxed)) ring_peer();
  }
  // Express slot, reader. Whether the slot holds a message from the peer not yet taken.
  bool slot_waiting() const {
    const uint64_t word = slot_->word.load(std::memory_order_acquire);
    return (word & kFromMaster) != my_slot_mark_ && static_cast<uint32_t>(word) != slot_taken_;
  }
  struct SlotMessage {
    uint32_t seq;
    uint16_t tag;
    const unsigned char* data;  // valid until either side posts again
    size_t bytes;
  };
  // Takes the waiting message (slot_waiting() was true). Throws: InvalidArgument if its size
  // is corrupt.
  SlotMessage take_slot() {
    const uint64_t word = slot_->word.load(std::memory_order_acquire);
    SlotMessage m{static_cast<uint32_t>(word), static_cast<uint16_t>((word >> 48) & 0x7fff),
                  slot_->data, static_cast<uint16_t>(word >> 32)};
    if (m.bytes > kSlotBytes) throw_corrupt_slot(m.bytes);
    slot_taken_ = m.seq;
    return m;
  }

 private:
  struct Header;
  // The express slot, shared by both directions: a call and its answer take turns in it, so
  // that, as with a flag two processes ping-pong, each message is one cache line moving to the
  // other core. The message's sequence number, size, tag and writer are one word, and the 56
  // bytes after it share its line.
  struct Slot {
    alignas(64) std::atomic<uint64_t> word;  // seq | bytes << 32 | tag << 48 | from master << 63
    unsigned char data[kSlotBytes];
  };
  static constexpr uint64_t kFromMaster = uint64_t{1} << 63;
  [[noreturn, gnu::cold]] void throw_corrupt(uint64_t used) const;
  [[noreturn, gnu::cold]] static void throw_corrupt_slot(size_t bytes);
  void ring_peer();  // rings the peer's doorbell
  RingLink(int socket, int memfd, int my_bell, int peer_bell, size_t cap, bool master);
  void publish(Header& h, uint64_t tail);
  void wait_for_room(Header& h);
  // Writer: free bytes ahead of `tail`, reloading the reader's position if fewer than
  // `wanted` seem free. Throws InvalidArgument if the positions are corrupt.
  size_t room(uint64_t tail, size_t wanted);
  int socket_;
  int memfd_, my_bell_, peer_bell_;
  size_t cap_;
  unsigned char* map_ = nullptr;
  size_t map_bytes_ = 0;
  Header* out_ = nullptr;  // the ring this side writes
  Header* in_ = nullptr;   // the ring this side reads
  const std::atomic<uint64_t>* in_tail_ = nullptr;       // in_->tail
  const std::atomic<uint32_t>* peer_slot_asleep_ = nullptr;  // out_->slot_asleep
  unsigned char* out_data_ = nullptr;
  unsigned char* in_data_ = nullptr;
  uint64_t out_head_seen_ = 0;  // writer: the reader's position when last loaded
  uint64_t in_head_ = 0;        // reader: bytes read (published to the header lazily)
  Slot* slot_ = nullptr;
  unsigned char* slot_data_ = nullptr;
  uint64_t my_slot_mark_ = 0;  // the writer bit of the slot's word for this side's messages
  uint32_t slot_taken_ = 0;    // reader: the seq of the last message taken
};

}  // namespace dj::wire
