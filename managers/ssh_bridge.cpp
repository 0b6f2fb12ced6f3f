// SshPump: one thread per SSH host moves bytes between libssh channels (workers' stdio and
// tunnels) and the pipes/sockets the master epolls. libssh sessions are not thread-safe, so
// after start() no other thread touches the session: others post requests and wake it.
#include "ssh_bridge.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sys.hpp"

namespace dj::detail {

using Clock = std::chrono::steady_clock;

namespace {

std::pair<Fd, Fd> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2", "ssh worker stdio");
  return {Fd(fds[0]), Fd(fds[1])};
}

std::string ssh_error(ssh_session s) {
  const char* e = ssh_get_error(s);
  return e && *e ? e : "connection closed";
}

ssh_channel open_exec(SshSession& s, const std::string& command) {
  ssh_channel ch = ssh_channel_new(s.get());
  if (!ch || ssh_channel_open_session(ch) != SSH_OK ||
      ssh_channel_request_exec(ch, command.c_str()) != SSH_OK) {
    std::string why = ssh_error(s.get());
    if (ch) ssh_channel_free(ch);
    throw Error(ErrorKind::Disconnected, s.name() + ": cannot run a command over SSH: " + why);
  }
  return ch;
}

// Reads what the channel's stream has until EOF or the deadline.
std::string read_rest(ssh_channel ch, int is_stderr, Clock::time_point deadline) {
  std::string text;
  char buf[4096];
  while (!ssh_channel_is_eof(ch) || ssh_channel_poll(ch, is_stderr) > 0) {
    int n = ssh_channel_read_timeout(ch, buf, sizeof buf, is_stderr, std::max(ms_left(deadline), 1));
    if (n < 0 || (n == 0 && ms_left(deadline) == 0)) break;
    text.append(buf, static_cast<size_t>(n));
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

}  // namespace

std::string run_on_host(SshSession& s, const std::string& command, Clock::time_point deadline) {
  ssh_channel ch = open_exec(s, command);
  std::string out = read_rest(ch, 0, deadline);
  ssh_channel_close(ch);
  ssh_channel_free(ch);
  return out;
}

SshPump::SshPump(std::unique_ptr<SshSession> session, bool tunnel)
    : session_(std::move(session)), tunnel_(tunnel),
      wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!wake_fd_) throw_errno("eventfd", "ssh pump of " + session_->name());
}

SshPump::~SshPump() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake();
  if (thread_.joinable()) thread_.join();
  for (auto& b : bridges_) close_channel(*b, true);
  // ~SshSession disconnects: sshd then closes every remaining worker's pipes.
}

void SshPump::on_exit_status(ssh_session, ssh_channel, int status, void* bridge) {
  auto* b = static_cast<Bridge*>(bridge);
  std::lock_guard lock(b->owner->mu_);
  b->exit_status = status;
}

void SshPump::on_exit_signal(ssh_session, ssh_channel, const char* signal, int, const char*,
                             const char*, void* bridge) {
  auto* b = static_cast<Bridge*>(bridge);
  std::lock_guard lock(b->owner->mu_);
  b->exit_signal = signal ? signal : "?";
}

std::vector<StartedChannel> SshPump::exec_all(const std::string& command, int count,
                                              Clock::time_point deadline) {
  std::vector<StartedChannel> started;
  for (int i = 0; i < count; ++i) {
    auto b = std::make_unique<Bridge>();
    b->owner = this;
    b->channel = open_exec(*session_, command);
    b->callbacks.userdata = b.get();
    b->callbacks.channel_exit_status_function = &SshPump::on_exit_status;
    b->callbacks.channel_exit_signal_function = &SshPump::on_exit_signal;
    ssh_callbacks_init(&b->callbacks);
    ssh_set_channel_callbacks(b->channel, &b->callbacks);
    std::lock_guard lock(mu_);
    bridges_.push_back(std::move(b));
  }
  for (size_t i = 0; i < bridges_.size(); ++i) {
    Bridge& b = *bridges_[i];
    std::string line;
    char c;
    while (line.size() < 256) {  // Byte by byte: what follows the line belongs to the worker.
      int n = ssh_channel_read_timeout(b.channel, &c, 1, 0, std::max(ms_left(deadline), 1));
      if (n == 1 && c == '\n') break;
      if (n == 1) line += c;
      // No line yet: stop at EOF, at the deadline, or once the shell complains on stderr
      // (is_eof stays false while stderr holds unread bytes).
      else if (n < 0 || ssh_channel_is_eof(b.channel) || ssh_channel_poll(b.channel, 1) > 0 ||
               ms_left(deadline) == 0) {
        break;
      }
    }
    if (line.rfind("dj-pid ", 0) != 0) {
      std::string err = read_rest(b.channel, 1, Clock::now() + std::chrono::milliseconds(1000));
      int status = ssh_channel_get_exit_status(b.channel);
      bool timed_out = !ssh_channel_is_eof(b.channel) && ms_left(deadline) == 0;
      std::string why = timed_out ? "no answer from the worker's shell in time"
                                  : "the worker could not start" +
                                        (status >= 0 ? " (exited with status " +
                                                           std::to_string(status) + ")"
                                                     : std::string());
      throw Error(status == 127 ? ErrorKind::NotFound : ErrorKind::Disconnected,
                  host_name() + ": " + why + (err.empty() ? "" : ": " + err) +
                      (line.empty() ? "" : " [output: '" + line + "']"));
    }
    auto [in_read, in_write] = make_pipe();
    auto [out_read, out_write] = make_pipe();
    auto [err_read, err_write] = make_pipe();
    set_nonblocking(in_read.get(), true);
    b.in = std::move(in_read);
    b.out = std::move(out_write);
    b.err = std::move(err_write);
    started.push_back({i, std::atol(line.c_str() + 7), std::move(in_write), std::move(out_read),
                       std::move(err_read)});
  }
  return started;
}

std::string SshPump::ssh_error_text() const { return ssh_error(session_->get()); }

void SshPump::start() { thread_ = std::thread([this] { run(); }); }

void SshPump::wake() noexcept {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(wake_fd_.get(), &one, sizeof one);
}

bool SshPump::wait_ended(size_t index, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  Bridge& b = *bridges_.at(index);
  return ended_cv_.wait_for(lock, timeout, [&] { return b.ended; });
}

void SshPump::kill(size_t index) noexcept {
  {
    std::lock_guard lock(mu_);
    Bridge& b = *bridges_[index];
    if (b.ended) return;
    b.kill_requested = true;
  }
  wake();
  if (!wait_ended(index, std::chrono::milliseconds(5000))) {
    log_line(host_name() + ": a worker's SSH channel did not close within 5 s of kill");
  }
}

std::string SshPump::exit_reason(size_t index) const {
  std::lock_guard lock(mu_);
  return bridges_.at(index)->ended ? bridges_[index]->reason : "";
}

int SshPump::open_tunnel(const std::string& host, uint16_t port,
                         std::chrono::milliseconds timeout) {
  std::future<int> fd;
  {
    std::lock_guard lock(mu_);
    tunnel_requests_.push_back({host, port, {}});
    fd = tunnel_requests_.back().fd.get_future();
  }
  wake();
  if (fd.wait_for(timeout) != std::future_status::ready) {
    throw Error(ErrorKind::Disconnected, host_name() + ": SSH tunnel to " + host + ":" +
                                             std::to_string(port) + " not open within " +
                                             std::to_string(timeout.count()) + " ms");
  }
  return fd.get();
}

}  // namespace dj::detail
