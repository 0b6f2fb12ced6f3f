// Frame prefix validation and blocking frame I/O (writev out, exact reads in).
#include "wire/frame.hpp"

#include <atomic>

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "sys.hpp"

namespace dj::wire {
namespace {

uint32_t load_u32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t load_u64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

Error disconnected_mid_frame(int fd, const char* part) {
  return Error(ErrorKind::Disconnected,
               "dj wire: connection (fd " + std::to_string(fd) + ") closed in the middle of a " +
                   part);
}

// Reads the rest of a `total`-byte payload into `out` (which holds its first bytes). Memory
// follows the bytes that actually arrive: at most 64 MiB of address space is set aside up
// front and filled 4 MiB at a time, then the buffer grows fourfold as it fills. So a peer that
// announces 4 GiB and sends nothing costs little, and a large payload is copied at most a
// third of its size extra while the buffer grows.
// Throws: ResourceExhausted if memory runs out, Disconnected on EOF.
// `read_exact(at, n)` returns the bytes read (short only at EOF).
template <class ReadExact>
void read_payload(int fd, ReadExact&& read_exact, std::string& out, uint64_t total,
                  std::atomic<uint64_t>* progress = nullptr) {
  constexpr uint64_t kFirstReserve = uint64_t{64} << 20;
  constexpr uint64_t kFillStep = uint64_t{4} << 20;
  try {
    while (out.size() < total) {
      if (out.capacity() == out.size()) {
        out.reserve(static_cast<size_t>(
            std::min(total, std::max<uint64_t>(kFirstReserve, uint64_t{4} * out.size()))));
      }
      size_t at = out.size();
      // Filled a few MiB at a time: resize() writes zeros, which commits the pages.
      size_t step = static_cast<size_t>(
          std::min<uint64_t>(std::min<uint64_t>(total, out.capacity()) - at, kFillStep));
      out.resize(at + step);
      size_t got = read_exact(out.data() + at, step);
      if (progress) progress->fetch_add(got, std::memory_order_relaxed);
      if (got != step) throw disconnected_mid_frame(fd, "payload");
    }
  } catch (const std::bad_alloc&) {
    throw Error(ErrorKind::ResourceExhausted,
                "dj wire: cannot allocate " + std::to_string(total) + " bytes for a frame payload");
  }
}

// The message a frame's header holds: Cap'n Proto, or a compact call or result.
Message decode_header(const FramePrefix& p, const char* header) {
  return p.compact ? decode_compact(p.compact, reinterpret_cast<const unsigned char*>(header))
                   : decode(header, p.header_bytes);
}

}  // namespace

FramePrefix parse_prefix(const unsigned char (&prefix)[kFramePrefixBytes],
                         uint64_t max_payload_bytes) {
  uint32_t magic = load_u32(prefix);
  const uint32_t compact_header = compact_header_bytes(magic);
  if (magic != kFrameMagic && magic != kBulkFrameMagic && compact_header == 0) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08x", magic);
    throw Error(ErrorKind::InvalidArgument,
                std::string("dj wire: bad frame magic ") + hex + " (not a dj peer?)");
  }
  FramePrefix p{load_u32(prefix + 4), load_u64(prefix + 8), magic == kBulkFrameMagic,
                compact_header ? magic : 0};
  if (compact_header && p.header_bytes != compact_header) {
    throw Error(ErrorKind::InvalidArgument, "dj wire: compact frame header of " +
                                                std::to_string(p.header_bytes) + " bytes (must be " +
                                                std::to_string(compact_header) + ")");
  }
  if (p.header_bytes == 0 || p.header_bytes % 8 != 0 || p.header_bytes > kMaxHeaderBytes) {
    throw Error(ErrorKind::InvalidArgument, "dj wire: bad frame header length " +
                                                std::to_string(p.header_bytes) +
                                                " (must be a multiple of 8 in 8.." +
                                                std::to_string(kMaxHeaderBytes) + ")");
  }
  if (p.bulk && p.payload_bytes != kBulkDescriptorBytes) {
    throw Error(ErrorKind::InvalidArgument,
                "dj wire: bulk frame with a descriptor of " + std::to_string(p.payload_bytes) +
                    " bytes (must be " + std::to_string(kBulkDescriptorBytes) + ")");
  }
  if (p.payload_bytes > max_payload_bytes) {
    throw Error(ErrorKind::ResourceExhausted,
                "dj wire: frame payload of " + std::to_string(p.payload_bytes) +
                    " bytes exceeds the limit of " + std::to_string(max_payload_bytes));
  }
  return p;
}

void write_frame(Outlet out, const Message& message, const std::string& payload) {
  write_frame(out, message, payload.data(), payload.size());
}

void write_framed(Outlet out, const std::string& frames) {
  if (out.ring) {
    iovec iov{const_cast<char*>(frames.data()), frames.size()};
    return out.ring->write(&iov, 1);
  }
  detail::write_full(out.fd, frames.data(), frames.size());
}

void write_frame_with_fds(int socket, const Message& message, const std::vector<int>& fds) {
  std::string bytes;
  append_frame(bytes, message);
  iovec iov{bytes.data(), bytes.size()};
  send_with_fds(socket, &iov, 1, fds.data(), fds.size());
}

void write_frame(Outlet out, const Message& message, const char* payload, size_t payload_bytes) {
  std::string header = encode(message);
  unsigned char prefix[kFramePrefixBytes];
  uint32_t magic = kFrameMagic;
  auto header_bytes = static_cast<uint32_t>(header.size());
  uint64_t pb = payload_bytes;
  std::memcpy(prefix, &magic, 4);
  std::memcpy(prefix + 4, &header_bytes, 4);
  std::memcpy(prefix + 8, &pb, 8);

  iovec iov[3] = {{prefix, sizeof prefix},
                  {header.data(), header.size()},
                  {const_cast<char*>(payload), payload_bytes}};
  write_parts(out, iov, payload_bytes ? 3 : 2);
}

void write_parts(Outlet out, iovec* iov, int count) {
  if (out.ring) return out.ring->write(iov, count);
  const int fd = out.fd;
  size_t total = 0;
  for (int i = 0; i < count; ++i) total += iov[i].iov_len;
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = static_cast<size_t>(count);
  ssize_t sent = -1;
  for (;;) {
    sent = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (sent >= 0 || errno != EINTR) break;
  }
  if (sent < 0 && errno == ENOTSOCK) sent = ::writev(fd, iov, count);
  if (sent < 0) {
    if (errno == EPIPE || errno == ECONNRESET) {
      throw Error(ErrorKind::Disconnected,
                  "dj wire: peer on fd " + std::to_string(fd) + " is gone");
    }
    detail::throw_errno("sendmsg", "fd " + std::to_string(fd));
  }
  // Finish a short write piece by piece.
  auto done = static_cast<size_t>(sent);
  if (done == total) return;
  size_t offset = 0;
  for (int i = 0; i < count; ++i) {
    size_t len = iov[i].iov_len;
    if (done < offset + len) {
      size_t skip = done > offset ? done - offset : 0;
      try {
        detail::write_full(fd, static_cast<char*>(iov[i].iov_base) + skip, len - skip);
      } catch (const Error&) {
        throw Error(ErrorKind::Disconnected,
                    "dj wire: peer on fd " + std::to_string(fd) + " is gone");
      }
    }
    offset += len;
  }
}

void append_frame(std::string& out, const Message& message, const char* payload,
                  size_t payload_bytes) {
  std::string header = encode(message);
  uint32_t magic = kFrameMagic;
  auto header_bytes = static_cast<uint32_t>(header.size());
  uint64_t pb = payload_bytes;
  out.append(reinterpret_cast<const char*>(&magic), 4);
  out.append(reinterpret_cast<const char*>(&header_bytes), 4);
  out.append(reinterpret_cast<const char*>(&pb), 8);
  out += header;
  if (payload_bytes) out.append(payload, payload_bytes);
}

std::optional<Frame> read_frame(int fd, uint64_t max_payload_bytes) {
  unsigned char prefix[kFramePrefixBytes];
  size_t got;
  try {
    got = detail::read_full(fd, prefix, sizeof prefix);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::Disconnected) return std::nullopt;
    throw;
  }
  if (got == 0) return std::nullopt;
  if (got < sizeof prefix) throw disconnected_mid_frame(fd, "frame prefix");
  FramePrefix p = parse_prefix(prefix, max_payload_bytes);
  if (p.bulk) throw Error(ErrorKind::InvalidArgument, "dj wire: unexpected bulk frame");
  std::string header(p.header_bytes, '\0');
  if (detail::read_full(fd, header.data(), header.size()) != header.size()) {
    throw disconnected_mid_frame(fd, "message header");
  }
  Frame frame{decode_header(p, header.data()), {}, {}};
  if (p.payload_bytes) {
    read_payload(fd, [fd](char* at, size_t n) { return detail::read_full(fd, at, n); },
                 frame.payload, p.payload_bytes);
  }
  return frame;
}

FrameReader::~FrameReader() {
  for (int fd : fds_) detail::close_quietly(fd);
}

void FrameReader::accept_bulk(std::function<void(uint64_t)> release) {
  bulk_release_ = std::move(release);
  views_ = std::make_shared<BulkViews>();
  accept_bulk_ = true;
  receive_fds_ = true;
}

// A frame's descriptor arrives with its bytes: recvmsg keeps them when bulk frames are taken.
// More descriptors than bulk frames (only a hostile peer sends them) are closed at once.
ssize_t FrameReader::receive(char* at, size_t n, int flags) {
  constexpr size_t kMaxQueued = 4;
  iovec iov{at, n};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxQueued)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t r = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC | flags);
  if (r < 0) return r;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (fds_.size() < kMaxQueued) fds_.push_back(fd);
      else detail::close_quietly(fd);
    }
  }
  return r;
}

ssize_t FrameReader::read_some(char* at, size_t n) {
  if (!ring_) {
    if (spin_) {
      for (SpinWait spin; spin.spin();) {
        ssize_t r = receive_fds_ ? receive(at, n, MSG_DONTWAIT) : ::recv(fd_, at, n, MSG_DONTWAIT);
        if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          if (r < 0 && errno == ENOTSOCK) break;  // not a socket: just block
          return r;
        }
      }
    }
    return receive_fds_ ? receive(at, n, 0) : ::read(fd_, at, n);
  }
  for (;;) {
    if (size_t got = ring_->read(at, n)) return static_cast<ssize_t>(got);
    if (eof_) return 0;  // Everything the peer wrote before it went has been read.
    if (ring_->wait()) pump_socket();
  }
}

void FrameReader::pump_socket() {
  for (;;) {
    char carriers[64];  // one byte per bulk frame's descriptor: the bytes mean nothing
    ssize_t r = receive(carriers, sizeof carriers, MSG_DONTWAIT);
    if (r > 0) continue;
    if (r == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) eof_ = true;
    if (r < 0 && errno == EINTR) continue;
    return;
  }
}

void FrameReader::use_ring(std::shared_ptr<RingLink> ring) {
  ring_ = std::move(ring);
  start_ = end_ = 0;
}

std::vector<int> FrameReader::take_fds(size_t n) {
  if (fds_.size() < n) {
    throw Error(ErrorKind::InvalidArgument, "dj wire: expected " + std::to_string(n) +
                                                " descriptors with the frame, got " +
                                                std::to_string(fds_.size()));
  }
  std::vector<int> out(fds_.begin(), fds_.begin() + static_cast<std::ptrdiff_t>(n));
  fds_.erase(fds_.begin(), fds_.begin() + static_cast<std::ptrdiff_t>(n));
  return out;
}

int FrameReader::take_bulk_fd() {
  if (!accept_bulk_) {
    throw Error(ErrorKind::InvalidArgument,
                "dj wire: bulk frame on a connection that carries none (not same-host)");
  }
  // Through a ring, the descriptor follows the frame's bytes on the socket.
  while (ring_ && fds_.empty() && !eof_) {
    pollfd p{fd_, POLLIN, 0};
    ::poll(&p, 1, -1);
    pump_socket();
  }
  if (fds_.empty()) throw Error(ErrorKind::InvalidArgument, "dj wire: bulk frame without its memory");
  int fd = fds_.front();
  fds_.pop_front();
  return fd;
}

bool FrameReader::ready(bool socket_event) {
  if (!ring_) return true;
  if (socket_event) pump_socket();
  else ring_->drain_bell();
  return buffered() > 0 || eof_ || ring_->readable() > 0;
}

bool FrameReader::wait_frame_or_slot_slow() {
  for (;;) {
    if (ring_->wait(true)) pump_socket();
    if (buffered() > 0 || eof_) return false;
    const bool slot = ring_->slot_waiting();
    if (ring_->readable() > 0) return false;
    if (slot) return true;
  }
}

bool FrameReader::more_waiting() const {
  return has_buffered_frame() || (ring_ && ring_->readable() > 0);
}

bool FrameReader::fill(size_t at_least) {
  while (buffered() < at_least) {
    if (cap_ - end_ < at_least - buffered() || cap_ - end_ < 4096) {
      // Make room: slide the unread bytes to the front, growing when one header needs it.
      size_t need = std::max(at_least, kChunk);
      if (need > cap_) {
        auto bigger = std::make_unique<char[]>(need);
        // The first fill has no buffer yet: memcpy from null is undefined even for 0 bytes.
        if (buffered() != 0) std::memcpy(bigger.get(), buf_.get() + start_, buffered());
        buf_ = std::move(bigger);
        cap_ = need;
      } else {
        if (buffered()) std::memmove(buf_.get(), buf_.get() + start_, buffered());
      }
      end_ -= start_;
      start_ = 0;
    }
    ssize_t r;
    do {
      r = read_some(buf_.get() + end_, cap_ - end_);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
      if (errno == ECONNRESET) return false;
      detail::throw_errno("read", "fd " + std::to_string(fd_));
    }
    if (r == 0) return false;
    end_ += static_cast<size_t>(r);
    bytes_read_.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
  }
  return true;
}

bool FrameReader::has_buffered_frame() const {
  size_t avail = buffered();
  if (avail < kFramePrefixBytes) return false;
  uint32_t header;
  uint64_t payload;
  std::memcpy(&header, buf_.get() + start_ + 4, 4);
  std::memcpy(&payload, buf_.get() + start_ + 8, 8);
  return avail - kFramePrefixBytes >= header && avail - kFramePrefixBytes - header >= payload;
}

std::optional<Frame> FrameReader::next() {
  if (!fill(kFramePrefixBytes)) {
    if (buffered() == 0) return std::nullopt;
    throw disconnected_mid_frame(fd_, "frame prefix");
  }
  unsigned char prefix[kFramePrefixBytes];
  std::memcpy(prefix, buf_.get() + start_, sizeof prefix);
  FramePrefix p = parse_prefix(prefix, max_payload_);
  if (!fill(kFramePrefixBytes + p.header_bytes)) throw disconnected_mid_frame(fd_, "message header");
  Frame frame{decode_header(p, buf_.get() + start_ + kFramePrefixBytes), {}, {}};
  start_ += kFramePrefixBytes + p.header_bytes;
  if (p.bulk) {
    if (!fill(kBulkDescriptorBytes)) throw disconnected_mid_frame(fd_, "bulk descriptor");
    uint64_t length = load_u64(reinterpret_cast<const unsigned char*>(buf_.get() + start_));
    uint64_t token = load_u64(reinterpret_cast<const unsigned char*>(buf_.get() + start_ + 8));
    start_ += kBulkDescriptorBytes;
    int fd = take_bulk_fd();
    if (length > max_payload_) {
      detail::close_quietly(fd);
      throw Error(ErrorKind::ResourceExhausted,
                  "dj wire: bulk payload of " + std::to_string(length) +
                      " bytes exceeds the limit of " + std::to_string(max_payload_));
    }
    frame.bulk = views_->map(fd, length, token, bulk_release_);
    return frame;
  }
  if (p.payload_bytes == 0) return frame;
  size_t taken = std::min<uint64_t>(buffered(), p.payload_bytes);
  if (taken == p.payload_bytes) {
    frame.payload.assign(buf_.get() + start_, taken);
    start_ += taken;
    return frame;
  }
  frame.payload.assign(buf_.get() + start_, taken);
  start_ += taken;
  auto read_exact = [this](char* at, size_t n) {
    size_t done = 0;
    while (done < n) {
      ssize_t r = read_some(at + done, n - done);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) detail::throw_errno("read", "fd " + std::to_string(fd_));
      if (r == 0) break;
      done += static_cast<size_t>(r);
    }
    return done;
  };
  read_payload(fd_, read_exact, frame.payload, p.payload_bytes, &bytes_read_);
  return frame;
}

Frame parse_frame(const std::string& bytes, uint64_t max_payload_bytes) {
  if (bytes.size() < kFramePrefixBytes) {
    throw Error(ErrorKind::InvalidArgument,
                "dj wire: frame of " + std::to_string(bytes.size()) + " bytes is too short");
  }
  unsigned char prefix[kFramePrefixBytes];
  std::memcpy(prefix, bytes.data(), sizeof prefix);
  FramePrefix p = parse_prefix(prefix, max_payload_bytes);
  if (p.bulk) {
    throw Error(ErrorKind::InvalidArgument,
                "dj wire: bulk frame without its memory (only a same-host connection carries one)");
  }
  if (bytes.size() - kFramePrefixBytes != p.header_bytes + p.payload_bytes) {
    throw Error(ErrorKind::InvalidArgument, "dj wire: frame length does not match its prefix");
  }
  Frame frame{decode_header(p, bytes.data() + kFramePrefixBytes),
              bytes.substr(kFramePrefixBytes + p.header_bytes), {}};
  return frame;
}

}  // namespace dj::wire
