// Bulk frames: large payloads through a sealed memfd passed with the frame (see bulk.hpp).
#include "wire/bulk.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "dj/serialize.hpp"
#include "sys.hpp"
#include "wire/ring.hpp"

namespace dj::wire {
namespace {

// Arenas grow in steps of 4 MiB, so payloads of nearby sizes reuse one.
constexpr size_t kArenaStep = size_t{4} << 20;
std::atomic<int> g_arenas_held{0};

Error bad_bulk(const std::string& what) {
  return Error(ErrorKind::InvalidArgument, "dj wire: bulk frame refused: " + what);
}

}  // namespace

struct BulkPayload::Mapping {
  Mapping(const unsigned char* data, size_t bytes, dev_t dev, ino_t ino)
      : data(data), bytes(bytes), dev(dev), ino(ino) {}
  ~Mapping() { ::munmap(const_cast<unsigned char*>(data), bytes); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  const unsigned char* data;
  size_t bytes;
  dev_t dev;
  ino_t ino;
  // When a payload in it was last dropped (steady clock, ns), for BulkViews::trim_idle.
  std::atomic<int64_t> last_used_ns{0};
};

namespace {
int64_t steady_ns(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
}  // namespace

BulkPayload::BulkPayload(std::shared_ptr<Mapping> mapping, const unsigned char* data, size_t size,
                         uint64_t token, std::function<void(uint64_t)> release)
    : mapping_(std::move(mapping)), data_(data), size_(size), token_(token),
      release_(std::move(release)) {}

BulkPayload::~BulkPayload() {
  if (mapping_) {
    mapping_->last_used_ns.store(steady_ns(std::chrono::steady_clock::now()),
                                 std::memory_order_relaxed);
  }
  if (release_) {
    try {
      release_(token_);
    } catch (...) {
      // The peer is gone: nothing to hand back.
    }
  }
}

void send_with_fds(int sock, const iovec* iov, int count, const int* fds, size_t nfds) {
  std::vector<char> control(CMSG_SPACE(sizeof(int) * nfds));
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = static_cast<size_t>(count);
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
  std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  size_t total = 0;
  for (int i = 0; i < count; ++i) total += iov[i].iov_len;
  ssize_t sent;
  do {
    sent = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) {
    throw Error(ErrorKind::Disconnected, "dj wire: peer on fd " + std::to_string(sock) +
                                             " is gone (" + std::strerror(errno) + ")");
  }
  // The descriptors went with the first byte; finish a short write of the rest.
  if (static_cast<size_t>(sent) < total) {
    std::string rest;
    for (int i = 0; i < count; ++i) rest.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
    try {
      detail::write_full(sock, rest.data() + sent, total - static_cast<size_t>(sent));
    } catch (const Error&) {
      throw Error(ErrorKind::Disconnected, "dj wire: peer on fd " + std::to_string(sock) + " is gone");
    }
  }
}

BulkViews::~BulkViews() {
  if (kept_) g_arenas_held.fetch_sub(1, std::memory_order_relaxed);
}

std::shared_ptr<BulkPayload> BulkViews::map(int fd, uint64_t length, uint64_t token,
                                            std::function<void(uint64_t)> release) {
  struct Closer {
    int fd;
    ~Closer() { detail::close_quietly(fd); }
  } closer{fd};
  int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
    throw bad_bulk("its memory is not a memfd sealed against shrinking");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size < 0 || static_cast<uint64_t>(st.st_size) < length) {
    throw bad_bulk("its memory holds " + std::to_string(st.st_size) + " bytes, the frame says " +
                   std::to_string(length));
  }
  if (length == 0) return std::make_shared<BulkPayload>(nullptr, nullptr, 0, token, std::move(release));
  std::lock_guard lock(mu_);
  // The memfd mapped last, if this is it: the kept mapping holds the memfd, so its inode
  // cannot have gone to another file meanwhile.
  if (kept_ && kept_->dev == st.st_dev && kept_->ino == st.st_ino && kept_->bytes >= length) {
    return std::make_shared<BulkPayload>(kept_, kept_->data, length, token, std::move(release));
  }
  // Populated at once: one walk over the page tables, where touching the pages would fault
  // once per page. (Only the payload's length: a sparse memfd cannot make us map more.)
  void* p = ::mmap(nullptr, length, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) {
    throw Error(ErrorKind::ResourceExhausted,
                "dj wire: cannot map a bulk payload of " + std::to_string(length) +
                    " bytes: " + std::strerror(errno));
  }
  // Another memfd (the peer's arena grew) or a longer payload: it replaces the kept mapping,
  // which goes once its payloads are dropped.
  if (!kept_) g_arenas_held.fetch_add(1, std::memory_order_relaxed);
  kept_ = std::make_shared<BulkPayload::Mapping>(static_cast<const unsigned char*>(p), length,
                                                 st.st_dev, st.st_ino);
  return std::make_shared<BulkPayload>(kept_, kept_->data, length, token, std::move(release));
}

void BulkViews::trim_idle(std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mu_);
  // Only the kept reference left: no payload in it is alive.
  if (kept_ && kept_.use_count() == 1 &&
      steady_ns(now) - kept_->last_used_ns.load(std::memory_order_relaxed) >=
          std::chrono::duration_cast<std::chrono::nanoseconds>(kBulkIdleTrim).count()) {
    kept_.reset();
    g_arenas_held.fetch_sub(1, std::memory_order_relaxed);
  }
}

bool BulkViews::holds() const {
  std::lock_guard lock(mu_);
  return kept_ != nullptr;
}

BulkArena::~BulkArena() { unmap_locked(); }

int BulkArena::held_count() { return g_arenas_held.load(std::memory_order_relaxed); }

void BulkArena::unmap_locked() {
  if (data_) {
    ::munmap(data_, cap_);
    g_arenas_held.fetch_sub(1, std::memory_order_relaxed);
  }
  if (fd_ >= 0) detail::close_quietly(fd_);
  data_ = nullptr;
  fd_ = -1;
  cap_ = 0;
}

bool BulkArena::ensure_capacity_locked(size_t bytes) {
  if (bytes <= cap_) return true;
  unmap_locked();  // The peer never keeps a mapping: a bigger memfd simply replaces this one.
  size_t cap = (bytes + kArenaStep - 1) / kArenaStep * kArenaStep;
  int fd = ::memfd_create("dj-bulk", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return false;
  if (::ftruncate(fd, static_cast<off_t>(cap)) != 0 ||
      ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    detail::close_quietly(fd);
    return false;
  }
  void* p = ::mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    detail::close_quietly(fd);
    return false;
  }
  fd_ = fd;
  g_arenas_held.fetch_add(1, std::memory_order_relaxed);
  data_ = static_cast<unsigned char*>(p);
  cap_ = cap;
  return true;
}

unsigned char* BulkArena::reserve(size_t bytes) {
  if (bytes < kBulkMinBytes) return nullptr;
  std::lock_guard lock(mu_);
  // Out of memory for a memfd (or /dev/shm full): the socket still works.
  if (state_ != State::kFree || !ensure_capacity_locked(bytes)) return nullptr;
  state_ = State::kReserved;
  return data_;
}

void BulkArena::cancel() {
  std::lock_guard lock(mu_);
  if (state_ == State::kReserved) state_ = State::kFree;
}

bool BulkArena::try_send(Outlet out, const Message& message, const unsigned char* payload,
                         size_t bytes) {
  unsigned char* room = reserve(bytes);
  if (!room) return false;
  ser::copy_bytes(room, payload, bytes);
  send_reserved(out, message, bytes);
  return true;
}

void BulkArena::send_reserved(Outlet out, const Message& message, size_t bytes) {
  const int sock = out.fd;
  std::unique_lock lock(mu_);
  DJ_CHECK(state_ == State::kReserved && bytes <= cap_, "payload of " + std::to_string(bytes) + " bytes");
  uint64_t token = ++token_;
  int fd = fd_;
  // Lent before the frame goes: the peer's BulkFree may come back before sendmsg returns.
  state_ = State::kOut;
  last_used_ = std::chrono::steady_clock::now();
  lock.unlock();

  std::string header = encode(message);
  unsigned char head[16];
  uint32_t magic = kBulkFrameMagic, header_bytes = static_cast<uint32_t>(header.size());
  uint64_t descriptor_bytes = kBulkDescriptorBytes, length = bytes;
  std::memcpy(head, &magic, 4);
  std::memcpy(head + 4, &header_bytes, 4);
  std::memcpy(head + 8, &descriptor_bytes, 8);
  unsigned char descriptor[kBulkDescriptorBytes];
  std::memcpy(descriptor, &length, 8);
  std::memcpy(descriptor + 8, &token, 8);
  iovec iov[3] = {{head, sizeof head}, {header.data(), header.size()}, {descriptor, sizeof descriptor}};
  try {
    if (out.ring) out.ring->write_with_fd(iov, 3, fd);
    else send_with_fds(sock, iov, 3, &fd, 1);
  } catch (const Error&) {
    lock.lock();
    if (token_ == token) state_ = State::kFree;
    throw;
  }
}

void BulkArena::released(uint64_t token) {
  std::lock_guard lock(mu_);
  if (state_ == State::kOut && token == token_) {
    state_ = State::kFree;
    last_used_ = std::chrono::steady_clock::now();
  }
}

void BulkArena::trim_idle(std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mu_);
  if (state_ == State::kFree && data_ && now - last_used_ >= kBulkIdleTrim) unmap_locked();
}

size_t BulkArena::capacity() const {
  std::lock_guard lock(mu_);
  return cap_;
}

}  // namespace dj::wire
