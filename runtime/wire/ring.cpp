// Shared-memory rings between the master and a same-host worker: layout, spin-then-block
// waiting, doorbells and futexes (see ring.hpp for the protocol).
#include "wire/ring.hpp"
#include "wire/bulk.hpp"
#include "asymmetric_fence.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>
#include <utility>

#include "dj/error.hpp"
#include "sys.hpp"

namespace dj::wire {

// One direction. The writer's fields and the reader's fields sit on separate cache lines, so
// each side's stores do not steal the other's line more than the protocol needs.
struct RingLink::Header {
  alignas(64) std::atomic<uint64_t> tail;     // writer: bytes ever written
  std::atomic<uint32_t> writer_waiting;       // writer: asleep on room_seq for room
  alignas(64) std::atomic<uint64_t> head;     // reader: bytes ever read
  std::atomic<uint32_t> reader_asleep;        // reader: ring my doorbell after publishing
  std::atomic<uint32_t> room_seq;             // reader: bumped to wake a waiting writer (futex)
  std::atomic<uint32_t> slot_asleep;          // reader: ring my doorbell after posting
};

namespace {

static_assert(std::atomic<uint64_t>::is_always_lock_free &&
                  std::atomic<uint32_t>::is_always_lock_free,
              "ring positions must be address-free atomics to be shared between processes");

constexpr size_t kHeaderPage = 4096;
// In the header page: the two ring headers at 0 and 256 (master -> worker, then worker ->
// master), the express slot at 1024.
constexpr size_t kSlotOffset = 1024;
constexpr size_t kMinRing = 4096, kMaxRing = size_t{64} << 20;

using Clock = std::chrono::steady_clock;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

Error corrupt(uint64_t used, size_t cap) {
  return Error(ErrorKind::InvalidArgument,
               "dj ring: corrupt positions (" + std::to_string(used) +
                   " bytes waiting in a ring of " + std::to_string(cap) + ")");
}

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected,
                std::chrono::milliseconds timeout) {
  timespec ts{static_cast<time_t>(timeout.count() / 1000),
              static_cast<long>(timeout.count() % 1000) * 1000000};
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futex_wake(std::atomic<uint32_t>* word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr,
            0);
}

void ring_bell(int fd) {
  uint64_t one = 1;
  ssize_t ignored = ::write(fd, &one, sizeof one);
  (void)ignored;
}

// Whether the other end of `socket` is closed (its process ended, or it dropped us).
bool peer_gone(int socket) {
  pollfd p{socket, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL));
}

// Closes a descriptor unless released (no dependency on net.hpp's Fd: the fuzzers link this).
struct OwnedFd {
  explicit OwnedFd(int f) : fd(f) {}
  ~OwnedFd() { detail::close_quietly(fd); }
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  int get() const { return fd; }
  int release() { return std::exchange(fd, -1); }
  explicit operator bool() const { return fd >= 0; }
  int fd;
};

}  // namespace

bool SpinWait::spin() {
  if (++turns_ % kUntimedTurns == 0) {
    auto now = Clock::now();
    if (turns_ == kUntimedTurns) start_ = now;
    auto spun = now - start_;
    if (spun >= kRingSpin) return false;
    yielding_ = spun >= kPureSpin;
  }
  if (yielding_) ::sched_yield();
  else cpu_relax();
  return true;
}

std::shared_ptr<RingLink> RingLink::create(int socket, size_t ring_bytes) {
  DJ_CHECK(ring_bytes >= kMinRing && ring_bytes <= kMaxRing && (ring_bytes & (ring_bytes - 1)) == 0,
           "ring of " + std::to_string(ring_bytes) + " bytes");
  OwnedFd memfd(::memfd_create("dj-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!memfd) detail::throw_errno("memfd_create", "shared-memory ring");
  if (::ftruncate(memfd.get(), static_cast<off_t>(kHeaderPage + 2 * ring_bytes)) != 0) {
    detail::throw_errno("ftruncate", "shared-memory ring");
  }
  // Sealed at its size, so the worker can trust that its mapping never faults.
  ::fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  OwnedFd mine(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  OwnedFd theirs(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!mine || !theirs) detail::throw_errno("eventfd", "shared-memory ring");
  auto link = std::shared_ptr<RingLink>(
      new RingLink(socket, memfd.release(), mine.release(), theirs.release(), ring_bytes, true));
  // The master's reader is the I/O thread, asleep in epoll until a borrower takes over.
  link->in_->reader_asleep.store(1, std::memory_order_relaxed);
  return link;
}

std::shared_ptr<RingLink> RingLink::attach(int socket, int memfd, int my_bell, int peer_bell,
                                           uint64_t ring_bytes) {
  OwnedFd m(memfd), a(my_bell), b(peer_bell);
  auto refuse = [](const std::string& why) {
    return Error(ErrorKind::InvalidArgument, "dj ring: refused the master's ring: " + why);
  };
  if (ring_bytes < kMinRing || ring_bytes > kMaxRing || (ring_bytes & (ring_bytes - 1)) != 0) {
    throw refuse("a ring of " + std::to_string(ring_bytes) +
                 " bytes (must be a power of two in 4 KiB..64 MiB)");
  }
  struct stat st{};
  if (::fstat(m.get(), &st) != 0 ||
      static_cast<uint64_t>(st.st_size) != kHeaderPage + 2 * ring_bytes) {
    throw refuse("its memory is not " + std::to_string(kHeaderPage + 2 * ring_bytes) + " bytes");
  }
  int seals = ::fcntl(m.get(), F_GET_SEALS);
  if (seals < 0 || !(seals & F_SEAL_SHRINK)) throw refuse("its memory is not sealed against shrinking");
  return std::shared_ptr<RingLink>(new RingLink(socket, m.release(), a.release(), b.release(),
                                                static_cast<size_t>(ring_bytes), false));
}

RingLink::RingLink(int socket, int memfd, int my_bell, int peer_bell, size_t cap, bool master)
    : socket_(socket), memfd_(memfd), my_bell_(my_bell), peer_bell_(peer_bell), cap_(cap) {
  map_bytes_ = kHeaderPage + 2 * cap;
  void* p = ::mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    detail::close_quietly(memfd_);
    detail::close_quietly(my_bell_);
    detail::close_quietly(peer_bell_);
    errno = err;
    detail::throw_errno("mmap", "shared-memory ring of " + std::to_string(map_bytes_) + " bytes");
  }
  map_ = static_cast<unsigned char*>(p);
  // Master -> worker first, then worker -> master.
  auto* to_worker = reinterpret_cast<Header*>(map_);
  auto* to_master = reinterpret_cast<Header*>(map_ + 256);
  unsigned char* to_worker_data = map_ + kHeaderPage;
  unsigned char* to_master_data = map_ + kHeaderPage + cap;
  out_ = master ? to_worker : to_master;
  in_ = master ? to_master : to_worker;
  out_data_ = master ? to_worker_data : to_master_data;
  in_data_ = master ? to_master_data : to_worker_data;
  in_tail_ = &in_->tail;
  peer_slot_asleep_ = &out_->slot_asleep;
  out_head_seen_ = out_->head.load(std::memory_order_acquire);
  in_head_ = in_->head.load(std::memory_order_acquire);
  static_assert(kSlotOffset + sizeof(Slot) <= kHeaderPage);
  slot_ = reinterpret_cast<Slot*>(map_ + kSlotOffset);
  slot_data_ = slot_->data;
  my_slot_mark_ = master ? kFromMaster : 0;
}

RingLink::~RingLink() {
  if (map_) ::munmap(map_, map_bytes_);
  detail::close_quietly(memfd_);
  detail::close_quietly(my_bell_);
  detail::close_quietly(peer_bell_);
}

std::array<int, 3> RingLink::offer_fds() const { return {memfd_, peer_bell_, my_bell_}; }

void RingLink::publish(Header& h, uint64_t tail) {
  h.tail.store(tail, std::memory_order_release);
  // Pairs with the reader's fence in wait(): either it sees the bytes, or we see it asleep.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (h.reader_asleep.load(std::memory_order_relaxed)) ring_bell(peer_bell_);
}

void RingLink::wait_for_room(Header& h) {
  const uint64_t tail = h.tail.load(std::memory_order_relaxed);
  auto has_room = [&] { return tail - h.head.load(std::memory_order_acquire) < cap_; };
  for (SpinWait spin; spin.spin();) {
    if (has_room()) return;
  }
  for (;;) {
    uint32_t seq = h.room_seq.load(std::memory_order_acquire);
    h.writer_waiting.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with the reader's in read()
    if (has_room()) break;
    futex_wait(&h.room_seq, seq, kRingLivenessCheck);
    if (has_room()) break;
    if (peer_gone(socket_)) {
      h.writer_waiting.store(0, std::memory_order_relaxed);
      throw Error(ErrorKind::Disconnected,
                  "dj ring: the peer on fd " + std::to_string(socket_) + " is gone");
    }
  }
  h.writer_waiting.store(0, std::memory_order_relaxed);
}

void RingLink::write(const iovec* iov, int count) {
  Header& h = *out_;
  uint64_t tail = h.tail.load(std::memory_order_relaxed);  // only this side writes it
  for (int i = 0; i < count; ++i) {
    const auto* src = static_cast<const unsigned char*>(iov[i].iov_base);
    size_t left = iov[i].iov_len;
    while (left > 0) {
      size_t n = std::min(left, room(tail, 1));
      if (n == 0) {
        publish(h, tail);  // let the reader drain what is there
        wait_for_room(h);
        continue;
      }
      size_t at = static_cast<size_t>(tail & (cap_ - 1));
      size_t first = std::min(n, cap_ - at);
      std::memcpy(out_data_ + at, src, first);
      std::memcpy(out_data_, src + first, n - first);
      tail += n;
      src += n;
      left -= n;
    }
  }
  publish(h, tail);
}

size_t RingLink::room(uint64_t tail, size_t wanted) {
  // The reader's position as last seen: reloaded (a cache miss) only when that shows less
  // room than wanted.
  for (bool reloaded = false;; reloaded = true) {
    uint64_t used = tail - out_head_seen_;
    if (used > cap_) throw corrupt(used, cap_);
    if (cap_ - used >= wanted || reloaded) return cap_ - static_cast<size_t>(used);
    out_head_seen_ = out_->head.load(std::memory_order_acquire);
  }
}

bool RingLink::has_room(size_t bytes) {
  return room(out_->tail.load(std::memory_order_relaxed), bytes) >= bytes;
}

void RingLink::write_with_fd(const iovec* iov, int count, int fd) {
  write(iov, count);
  char carrier = 'B';  // one byte to carry the descriptor; its value means nothing
  iovec one{&carrier, 1};
  send_with_fds(socket_, &one, 1, &fd, 1);
}

void RingLink::throw_corrupt(uint64_t used) const { throw corrupt(used, cap_); }

void RingLink::throw_corrupt_slot(size_t bytes) {
  throw Error(ErrorKind::InvalidArgument,
              "dj ring: corrupt express slot (" + std::to_string(bytes) + " bytes in a slot of " +
                  std::to_string(kSlotBytes) + ")");
}

void RingLink::ring_peer() { ring_bell(peer_bell_); }

size_t RingLink::read(char* at, size_t n) {
  Header& h = *in_;
  uint64_t used = h.tail.load(std::memory_order_acquire) - in_head_;
  if (used > cap_) throw corrupt(used, cap_);
  n = std::min<size_t>(n, static_cast<size_t>(used));
  if (n == 0) return 0;
  size_t from = static_cast<size_t>(in_head_ & (cap_ - 1));
  size_t first = std::min(n, cap_ - from);
  std::memcpy(at, in_data_ + from, first);
  std::memcpy(at + first, in_data_, n - first);
  in_head_ += n;
  // The position is published an eighth of the ring at a time, not per read: the writer's
  // line stays untouched by small frames. A writer only waits when the ring is full, and then
  // more than an eighth is left to read, so the position it waits for always comes.
  if (in_head_ - h.head.load(std::memory_order_relaxed) < cap_ / 8) return n;
  h.head.store(in_head_, std::memory_order_release);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with wait_for_room's
  if (h.writer_waiting.load(std::memory_order_relaxed)) {
    h.writer_waiting.store(0, std::memory_order_relaxed);
    h.room_seq.fetch_add(1, std::memory_order_release);
    futex_wake(&h.room_seq);
  }
  return n;
}

bool RingLink::wait(bool slot_too) {
  Header& h = *in_;
  auto ready = [&] { return readable() > 0 || (slot_too && slot_waiting()); };
  for (SpinWait spin; spin.spin();) {
    if (ready()) return false;
  }
  uint32_t was = h.reader_asleep.load(std::memory_order_relaxed);
  h.reader_asleep.store(1, std::memory_order_relaxed);
  if (slot_too) h.slot_asleep.store(1, std::memory_order_relaxed);
  // Pairs with publish()'s full fence, and with post()'s light one: the heavy side of that
  // pair is here, paid only by a reader about to sleep (asymmetric_fence.hpp). When membarrier
  // is refused, a post may go unseen and unrung: the reader then wakes each millisecond.
  const bool posts_ring = detail::shared_heavy_fence() || !slot_too;
  bool socket_ready = false;
  if (!ready()) {
    pollfd fds[2] = {{my_bell_, POLLIN, 0}, {socket_, POLLIN, 0}};
    if (::poll(fds, 2, posts_ring ? -1 : 1) > 0) {
      if (fds[0].revents & POLLIN) drain_bell();
      socket_ready = fds[1].revents != 0;
    }
  }
  h.reader_asleep.store(was, std::memory_order_relaxed);
  if (slot_too) h.slot_asleep.store(0, std::memory_order_relaxed);
  return socket_ready;
}

void RingLink::set_asleep(bool asleep) {
  in_->reader_asleep.store(asleep ? 1 : 0, std::memory_order_relaxed);
  if (!asleep) return;
  std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with publish()
  if (readable() > 0) ring_bell(my_bell_);
}

void RingLink::drain_bell() {
  uint64_t count;
  ssize_t ignored = ::read(my_bell_, &count, sizeof count);
  (void)ignored;
}

}  // namespace dj::wire
