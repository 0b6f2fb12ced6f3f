// Thin wrappers over BSD sockets; every failure names the address involved.
#include "net.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>

#include "sys.hpp"

namespace dj::detail {

Fd::~Fd() { close_quietly(fd_); }

void detect_dead_peer(int fd) noexcept {
  // A host that vanishes without a FIN or RST (its link down, a power cut) otherwise leaves a
  // connection open for the ~15 min of TCP retransmissions, or forever when idle. Keepalive
  // probes after 3 s of silence, 1 s apart, and at most kDeadPeerTimeout of unacknowledged
  // data (probes included) end it with ETIMEDOUT, which retires the worker. A busy or stopped
  // peer process does not count: its kernel still acknowledges.
  int on = 1, idle_s = 3, interval_s = 1, count = 5;
  unsigned timeout_ms = static_cast<unsigned>(kDeadPeerTimeout.count());
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof idle_s);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_s, sizeof interval_s);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout_ms, sizeof timeout_ms);
}

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    close_quietly(fd_);
    fd_ = o.release();
  }
  return *this;
}

namespace {

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  detect_dead_peer(fd);
}

std::string format_address(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_UNIX) {
    return "unix";
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
  }
  return std::string(host) + ":" + std::to_string(port);
}

addrinfo* resolve(const std::string& host, uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    throw Error(ErrorKind::NotFound,
                "cannot resolve host '" + host + "': " + ::gai_strerror(rc));
  }
  return res;
}

}  // namespace

Fd listen_tcp(const std::string& addr, uint16_t port) {
  addrinfo* res = resolve(addr, port, true);
  std::string where = addr + ":" + std::to_string(port);
  Fd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    ::freeaddrinfo(res);
    throw_errno("socket", where);
  }
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int rc = ::bind(fd.get(), res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  if (rc != 0) throw_errno("bind", where);
  if (::listen(fd.get(), 128) != 0) throw_errno("listen", where);
  return fd;
}

std::string local_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  return format_address(ss);
}

std::string address_toward(const std::string& peer) {
  // A UDP "connect" sends nothing: it only asks the kernel which source address it would use.
  addrinfo* res = resolve(peer, 9, false);
  Fd fd(::socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  int rc = fd ? ::connect(fd.get(), res->ai_addr, res->ai_addrlen) : -1;
  ::freeaddrinfo(res);
  if (rc != 0) throw_errno("connect", "UDP route toward " + peer);
  std::string local = local_address(fd.get());
  return local.substr(0, local.rfind(':'));
}

std::string peer_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  return format_address(ss);
}

Fd accept_tcp(int listen_fd) {
  for (;;) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      set_nodelay(fd);
      return Fd(fd);
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == ECONNABORTED) return Fd();
    throw_errno("accept", "listening socket " + local_address(listen_fd));
  }
}

Fd connect_tcp(const std::string& host, uint16_t port, std::chrono::milliseconds timeout) {
  std::string where = host + ":" + std::to_string(port);
  addrinfo* res = resolve(host, port, false);
  Fd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) {
    ::freeaddrinfo(res);
    throw_errno("socket", where);
  }
  int rc = ::connect(fd.get(), res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  if (rc != 0 && errno != EINPROGRESS) {
    throw Error(ErrorKind::Disconnected, "cannot connect to " + where + ": " + std::strerror(errno));
  }
  if (rc != 0) {
    pollfd p{fd.get(), POLLOUT, 0};
    int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (n == 0) {
      throw Error(ErrorKind::Disconnected, "cannot connect to " + where + ": no answer within " +
                                               std::to_string(timeout.count()) + " ms");
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (n < 0 || err != 0) {
      throw Error(ErrorKind::Disconnected,
                  "cannot connect to " + where + ": " + std::strerror(n < 0 ? errno : err));
    }
  }
  set_nonblocking(fd.get(), false);
  set_nodelay(fd.get());
  return fd;
}

namespace {
sockaddr_un abstract_address(const std::string& name, socklen_t& len) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (name.size() + 1 > sizeof addr.sun_path) {
    throw Error(ErrorKind::InvalidArgument, "unix socket name '" + name + "' is too long");
  }
  addr.sun_path[0] = '\0';  // abstract namespace
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return addr;
}
}  // namespace

Fd listen_unix_abstract(const std::string& name) {
  socklen_t len;
  sockaddr_un addr = abstract_address(name, len);
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno("socket", "unix @" + name);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    throw_errno("bind", "unix @" + name);
  }
  if (::listen(fd.get(), 128) != 0) throw_errno("listen", "unix @" + name);
  return fd;
}

Fd connect_unix_abstract(const std::string& name, std::chrono::milliseconds timeout) {
  socklen_t len;
  sockaddr_un addr = abstract_address(name, len);
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno("socket", "unix @" + name);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0) return fd;
    if (errno != EINTR && errno != EAGAIN) {
      throw Error(ErrorKind::Disconnected,
                  "cannot connect to unix @" + name + ": " + std::strerror(errno));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      throw Error(ErrorKind::Disconnected, "cannot connect to unix @" + name + ": timed out");
    }
  }
}

void set_receive_timeout(int fd, std::chrono::milliseconds timeout) {
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

std::pair<std::string, uint16_t> split_host_port(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    throw Error(ErrorKind::InvalidArgument, "'" + address + "' is not host:port");
  }
  unsigned long port = 0;
  try {
    port = std::stoul(address.substr(colon + 1));
  } catch (const std::exception&) {
    port = 0;
  }
  if (port == 0 || port > 65535) {
    throw Error(ErrorKind::InvalidArgument, "'" + address + "' has no valid port");
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return {host, static_cast<uint16_t>(port)};
}

}  // namespace dj::detail
