// System-call error reporting, full reads and writes, and the runtime's one log function.
#include "sys.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "dj/dj.hpp"

namespace dj::detail {

void throw_errno(const char* call, const std::string& detail, int err) {
  ErrorKind kind = ErrorKind::Internal;
  switch (err) {
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case ENOSPC:
    case EAGAIN: kind = ErrorKind::ResourceExhausted; break;
    case ENOENT: kind = ErrorKind::NotFound; break;
    case EPIPE:
    case ECONNRESET:
    case ECONNREFUSED:
    case ENOTCONN:
    case ETIMEDOUT: kind = ErrorKind::Disconnected; break;
    case EINVAL:
    case EACCES:
    case EPERM: kind = ErrorKind::InvalidArgument; break;
    default: break;
  }
  std::string message = std::string(call) + "(" + detail + "): " + std::strerror(err);
  if (err == EMFILE) {  // Name the limit, so the user knows what to raise.
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) {
      message += " (this process's descriptor limit, RLIMIT_NOFILE, is " +
                 std::to_string(limit.rlim_cur) + "; raise it with ulimit -n)";
    }
  }
  throw Error(kind, message);
}

size_t read_full(int fd, void* buf, size_t n) {
  auto* p = static_cast<char*>(buf);
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, p + got, n - got);
    if (r == 0) break;
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_errno("read", "fd " + std::to_string(fd));
    }
    got += static_cast<size_t>(r);
  }
  return got;
}

void write_full(int fd, const void* buf, size_t n) {
  const auto* p = static_cast<const char*>(buf);
  size_t put = 0;
  while (put < n) {
    ssize_t w = ::send(fd, p + put, n - put, MSG_NOSIGNAL);
    if (w < 0 && errno == ENOTSOCK) w = ::write(fd, p + put, n - put);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_errno("write", "fd " + std::to_string(fd));
    }
    put += static_cast<size_t>(w);
  }
}

void close_quietly(int fd) noexcept {
  if (fd < 0) return;
  if (::close(fd) != 0 && errno != EINTR) {
    log_line("close(fd " + std::to_string(fd) + "): " + std::strerror(errno));
  }
}

void set_nonblocking(int fd, bool on) {
  int flags = sys_check("fcntl", "F_GETFL fd " + std::to_string(fd),
                        [&] { return ::fcntl(fd, F_GETFL); });
  flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  sys_check("fcntl", "F_SETFL fd " + std::to_string(fd),
            [&] { return ::fcntl(fd, F_SETFL, flags); });
}

void set_cloexec(int fd) {
  sys_check("fcntl", "F_SETFD fd " + std::to_string(fd),
            [&] { return ::fcntl(fd, F_SETFD, FD_CLOEXEC); });
}

void log_line(const std::string& line) noexcept {
  std::string text = "dj[" + std::to_string(myid()) + "]: " + line + "\n";
  // One write so that lines from concurrent threads do not interleave.
  ssize_t ignored = ::write(STDERR_FILENO, text.data(), text.size());
  (void)ignored;
}

void check_failed(const char* file, int line, const char* cond, const std::string& values) {
  throw Error(ErrorKind::Internal, std::string("dj internal error at ") + file + ":" +
                                       std::to_string(line) + ": " + cond + " failed (" + values +
                                       ")");
}

}  // namespace dj::detail
