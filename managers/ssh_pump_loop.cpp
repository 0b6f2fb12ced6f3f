// The SSH pump thread's loop: poll the session socket, the wake eventfd and every local input,
// then move whatever libssh has buffered. Separate from ssh_bridge.cpp to keep the thread's
// code (which alone touches the session after start()) in one place.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "ssh_bridge.hpp"
#include "sys.hpp"

namespace dj::detail {
namespace {

// libssh may hold bytes it read for another channel while the socket has nothing more: a
// short poll bound keeps such bytes from waiting long.
constexpr int kPollMs = 20;

// Writes all of buf to a pipe or socket whose reader may be gone; false if it is.
bool deliver(int fd, const char* buf, size_t n) {
  try {
    write_full(fd, buf, n);
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

void SshPump::run() {
  // An event owns the session's polling: ssh_event_dopoll reads whatever packets arrived for
  // any channel (a channel already at EOF no longer reads them itself, so its close and exit
  // status would otherwise wait for another channel's traffic).
  ssh_event event = ssh_event_new();
  ssh_event_add_session(event, session_->get());
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
    }
    event_ = event;
    handle_requests();
    std::vector<pollfd> fds{{wake_fd_.get(), POLLIN, 0}};
    if (!lost_) fds.push_back({ssh_get_fd(session_->get()), POLLIN, 0});
    std::vector<size_t> input_of;  // fds[2 + k] is the input of bridges_[input_of[k]]
    size_t bridge_count;
    {
      std::lock_guard lock(mu_);
      bridge_count = bridges_.size();
    }
    for (size_t i = 0; i < bridge_count && !lost_; ++i) {
      Bridge& b = *bridges_[i];
      if (!b.channel || !b.input_open) continue;
      int fd = b.is_tunnel ? b.out.get() : b.in.get();
      if (fd < 0) continue;
      fds.push_back({fd, POLLIN, 0});
      input_of.push_back(i);
    }
    ::poll(fds.data(), fds.size(), kPollMs);
    if (fds[0].revents) {
      uint64_t n;
      [[maybe_unused]] ssize_t r = ::read(wake_fd_.get(), &n, sizeof n);
    }
    if (lost_) continue;
    std::vector<int> readable;
    size_t first_input = fds.size() - input_of.size();
    for (size_t k = 0; k < input_of.size(); ++k) {
      if (fds[first_input + k].revents) readable.push_back(static_cast<int>(input_of[k]));
    }
    // Drain: repeat while a pass moved bytes, as one read can buffer another channel's data.
    bool moved = pump_once(readable);
    while (moved && !lost_) moved = pump_once({});
  }
  ssh_event_remove_session(event, session_->get());
  ssh_event_free(event);
  event_ = nullptr;
}

void SshPump::handle_requests() {
  std::deque<TunnelRequest> tunnels;
  std::vector<size_t> kills;
  {
    std::lock_guard lock(mu_);
    tunnels.swap(tunnel_requests_);
    for (size_t i = 0; i < bridges_.size(); ++i) {
      if (bridges_[i]->kill_requested && !bridges_[i]->ended) kills.push_back(i);
    }
  }
  for (size_t i : kills) {
    close_channel(*bridges_[i], true);
    end_bridge(*bridges_[i], "killed by dj (signal KILL over SSH, channel closed)");
  }
  for (auto& t : tunnels) {
    if (lost_) {
      t.fd.set_exception(std::make_exception_ptr(Error(
          ErrorKind::Disconnected, host_name() + ": SSH connection lost; no tunnel possible")));
      continue;
    }
    ssh_channel ch = ssh_channel_new(session_->get());
    if (!ch || ssh_channel_open_forward(ch, t.host.c_str(), t.port, "127.0.0.1", 22) != SSH_OK) {
      std::string why = ssh_get_error(session_->get());
      if (ch) ssh_channel_free(ch);
      t.fd.set_exception(std::make_exception_ptr(
          Error(ErrorKind::Disconnected, host_name() + ": SSH tunnel to " + t.host + ":" +
                                             std::to_string(t.port) + " refused: " + why)));
      continue;
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      ssh_channel_free(ch);
      t.fd.set_exception(std::make_exception_ptr(Error(
          ErrorKind::ResourceExhausted, host_name() + ": socketpair for a tunnel: " +
                                            std::strerror(errno))));
      continue;
    }
    auto b = std::make_unique<Bridge>();
    b->owner = this;
    b->channel = ch;
    b->is_tunnel = true;
    b->out = Fd(pair[0]);
    set_nonblocking(pair[0], true);
    {
      std::lock_guard lock(mu_);
      bridges_.push_back(std::move(b));
    }
    t.fd.set_value(pair[1]);
  }
}

bool SshPump::pump_once(const std::vector<int>& readable_inputs) {
  bool moved = false;
  char buf[32768];
  size_t count;
  {
    std::lock_guard lock(mu_);
    count = bridges_.size();
  }
  for (int i : readable_inputs) {  // Master -> worker: stdin, or tunnel bytes.
    Bridge& b = *bridges_[static_cast<size_t>(i)];
    int fd = b.is_tunnel ? b.out.get() : b.in.get();
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      if (ssh_channel_write(b.channel, buf, static_cast<uint32_t>(n)) == SSH_ERROR) break;
      moved = true;
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      ssh_channel_send_eof(b.channel);  // The master closed stdin: the worker sees EOF.
      b.input_open = false;
    }
  }
  if (event_ && ssh_event_dopoll(event_, 0) == SSH_ERROR && !ssh_is_connected(session_->get())) {
    connection_lost();
    return false;
  }
  for (size_t i = 0; i < count; ++i) {  // Worker -> master.
    Bridge& b = *bridges_[i];
    if (!b.channel) continue;
    for (int is_stderr : {0, 1}) {
      if (b.is_tunnel && is_stderr) continue;
      int n = ssh_channel_read_nonblocking(b.channel, buf, sizeof buf, is_stderr);
      if (n == SSH_ERROR) {
        connection_lost();
        return false;
      }
      if (n > 0 && b.output_open) {
        moved = true;
        if (!deliver(is_stderr ? b.err.get() : b.out.get(), buf, static_cast<size_t>(n)) &&
            !is_stderr && b.is_tunnel) {
          b.output_open = false;
        }
      }
    }
    if (b.output_open && ssh_channel_is_eof(b.channel) && ssh_channel_poll(b.channel, 0) <= 0 &&
        (b.is_tunnel || ssh_channel_poll(b.channel, 1) <= 0)) {
      b.output_open = false;
      if (b.is_tunnel) ::shutdown(b.out.get(), SHUT_WR);
      else b.out = Fd(), b.err = Fd();  // EOF on the master's ends.
    }
    if (ssh_channel_is_closed(b.channel)) {
      std::string reason;
      {
        std::lock_guard lock(mu_);
        reason = !b.exit_signal.empty() ? "killed by signal " + b.exit_signal
                 : b.exit_status >= 0   ? "exited with status " + std::to_string(b.exit_status)
                                        : "its SSH channel closed";
      }
      close_channel(b, false);
      end_bridge(b, reason + " on " + host_name());
    }
  }
  if (!ssh_is_connected(session_->get())) connection_lost();
  return moved;
}

void SshPump::end_bridge(Bridge& b, const std::string& reason) {
  b.out = Fd();
  b.err = Fd();
  b.in = Fd();
  {
    std::lock_guard lock(mu_);
    if (b.ended) return;
    b.ended = true;
    b.reason = reason;
  }
  ended_cv_.notify_all();
}

void SshPump::connection_lost() {
  if (lost_) return;
  lost_ = true;
  std::string why = "ssh connection to " + host_name() + " lost: " + ssh_error_text();
  for (auto& b : bridges_) {
    if (b->channel) {
      ssh_channel_free(b->channel);
      b->channel = nullptr;
    }
    end_bridge(*b, why);
  }
}

void SshPump::close_channel(Bridge& b, bool kill) noexcept {
  if (!b.channel) return;
  if (kill && !lost_ && !b.is_tunnel && ssh_channel_is_open(b.channel)) {
    // sshd (OpenSSH >= 7.9) delivers it; older servers still close the worker's stdin
    // when the channel closes, and dj-worker exits on that.
    ssh_channel_request_send_signal(b.channel, "KILL");
  }
  if (!lost_) ssh_channel_close(b.channel);
  ssh_channel_free(b.channel);
  b.channel = nullptr;
}

}  // namespace dj::detail
