// The one seam between dj and the operating system's error reporting: every system call whose
// failure matters goes through sys_check, which retries EINTR and throws a dj::Error naming the
// call, the errno text and the arguments that matter. Also DJ_CHECK for internal invariants.
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <string>

#include "dj/error.hpp"

namespace dj::detail {

// Throws dj::Error(kind) "<call>(<detail>): <strerror(err)>"; kind derives from errno
// (EMFILE/ENOMEM/ENOSPC -> ResourceExhausted, ENOENT -> NotFound, EPIPE/ECONNRESET ->
// Disconnected, else Internal).
[[noreturn]] void throw_errno(const char* call, const std::string& detail, int err = errno);

// Runs `fn` (returning a signed count or -1/errno) until it does not fail with EINTR.
// Throws via throw_errno on any other failure.
template <class Fn>
auto sys_check(const char* call, const std::string& detail, Fn&& fn) {
  for (;;) {
    auto rc = fn();
    if (rc >= 0) return rc;
    if (errno != EINTR) throw_errno(call, detail);
  }
}

// Reads exactly n bytes. Returns bytes read before EOF (short only on EOF).
size_t read_full(int fd, void* buf, size_t n);
// Writes exactly n bytes (MSG_NOSIGNAL on sockets, so a dead peer is an error, not SIGPIPE).
void write_full(int fd, const void* buf, size_t n);

// Closes fd, logging (not throwing) a failure: for destructors.
void close_quietly(int fd) noexcept;

// Sets O_NONBLOCK / FD_CLOEXEC.
void set_nonblocking(int fd, bool on);
void set_cloexec(int fd);

// One line to stderr, prefixed "dj[<myid>]: ". For events nobody waits for (a dropped peer).
void log_line(const std::string& line) noexcept;

[[noreturn]] void check_failed(const char* file, int line, const char* cond,
                               const std::string& values);

// Milliseconds left until `deadline` (0 once it has passed), for poll() and the like.
inline int ms_left(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::max<long>(left.count(), 0));
}

}  // namespace dj::detail

// Throws dj::Error(Internal) with file:line, the condition and `values` when cond is false.
#define DJ_CHECK(cond, values) \
  do {                         \
    if (!(cond)) ::dj::detail::check_failed(__FILE__, __LINE__, #cond, (values)); \
  } while (0)
