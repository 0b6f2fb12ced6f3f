// Bulk frames: large payloads through a sealed memfd passed with the frame (see bulk.hpp).
#include "wire/bulk.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

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

BulkPayload::BulkPayload(const unsigned char* data, size_t size, size_t mapped, uint64_t token,
                         std::function<void(uint64_t)> release)
    : data_(data), size_(size), mapped_(mapped), token_(token), release_(std::move(release)) {}

BulkPayload::~BulkPayload() {
  if (mapped_) ::munmap(const_cast<unsigned char*>(data_), mapped_);
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

std::shared_ptr<BulkPayload> map_bulk_payload(int fd, uint64_t length, uint64_t token,
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
  if (length == 0) return std::make_shared<BulkPayload>(nullptr, 0, 0, token, std::move(release));
  void* p = ::mmap(nullptr, length, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) {
    throw Error(ErrorKind::ResourceExhausted,
                "dj wire: cannot map a bulk payload of " + std::to_string(length) +
                    " bytes: " + std::strerror(errno));
  }
  return std::make_shared<BulkPayload>(static_cast<const unsigned char*>(p), length, length,
                                       token, std::move(release));
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
  std::memcpy(room, payload, bytes);
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
