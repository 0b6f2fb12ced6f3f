// TCP sockets for dj connections: listen, accept, connect with a deadline, and the socket
// options every dj connection uses (TCP_NODELAY; close-on-exec).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace dj::detail {

// Owns one file descriptor; closes it on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd();
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { int f = fd_; fd_ = -1; return f; }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Listens on addr:port (port 0 = any). Throws: dj::Error naming the address.
Fd listen_tcp(const std::string& addr, uint16_t port);
// "ip:port" the socket is bound to / connected from.
std::string local_address(int fd);
std::string peer_address(int fd);
// The local IP address the kernel would use to reach `peer` (a host name or address): where a
// remote worker listens so that its master, and only networks toward it, can connect.
// Throws: dj::Error naming the peer when there is no route.
std::string address_toward(const std::string& peer);
// Accepts one connection (close-on-exec, TCP_NODELAY); invalid Fd if none is pending.
Fd accept_tcp(int listen_fd);
// How long a TCP peer may leave data (or keepalive probes) unacknowledged before its
// connection fails with ETIMEDOUT: a host whose network went away is noticed within it.
inline constexpr std::chrono::milliseconds kDeadPeerTimeout{8000};
// Turns on that detection (keepalive and TCP_USER_TIMEOUT) on a TCP socket. Every TCP
// connection dj makes or accepts has it, SSH sessions included.
void detect_dead_peer(int fd) noexcept;
// Connects to host:port within `timeout`. Throws: dj::Error(Disconnected) naming the address.
Fd connect_tcp(const std::string& host, uint16_t port, std::chrono::milliseconds timeout);
// Listens on / connects to a Linux abstract Unix socket (no file: nothing to clean up; scoped
// to the network namespace, so only processes on this host can reach it). Same-host workers
// are reached this way: the kernel's Unix path is several microseconds cheaper than TCP.
Fd listen_unix_abstract(const std::string& name);
Fd connect_unix_abstract(const std::string& name, std::chrono::milliseconds timeout);
// Bounds blocking reads on fd (0 = unbounded).
void set_receive_timeout(int fd, std::chrono::milliseconds timeout);
// Splits "host:port". Throws: InvalidArgument.
std::pair<std::string, uint16_t> split_host_port(const std::string& address);

}  // namespace dj::detail
