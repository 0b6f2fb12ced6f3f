// SshHost: one SSH connection per host, carrying one exec channel per worker (and the tunnels),
// and the pump thread that bridges those channels to the pipes and sockets the master epolls.
// SshWorker: the LaunchedWorker of a worker on such a host.
#include "ssh_host.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "net.hpp"
#include "ssh_bridge.hpp"
#include "ssh_connect.hpp"
#include "sys.hpp"

namespace dj::detail {
namespace {

using Clock = std::chrono::steady_clock;

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

bool is_identifier(const std::string& s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

// The shell command of one worker. It prints "dj-pid $$" first (the pid dj-worker keeps
// after exec), so the master knows the remote pid before the worker says anything.
std::string worker_command(const SshLaunchPlan& plan, const std::string& master_addr) {
  const Machine& m = plan.machine;
  const SshOptions& o = plan.options;
  std::string cmd;
  if (!o.dir.empty()) {
    cmd += "cd " + quote(o.dir) + " || { echo \"dj: cannot cd to directory " + o.dir +
           " on $(hostname)\" >&2; exit 126; }; ";
  }
  for (const auto& [key, value] : o.env) {
    if (!is_identifier(key)) {
      throw Error(ErrorKind::InvalidArgument,
                  m.host + ": environment variable name '" + key + "' is not a shell name");
    }
    cmd += "export " + key + "=" + quote(value) + "; ";
  }
  cmd += "if [ ! -x " + quote(plan.exename) + " ]; then echo \"dj: worker executable " +
         plan.exename + " is missing or not executable on $(hostname)\" >&2; exit 127; fi; ";
  cmd += "echo \"dj-pid $$\"; exec " + quote(plan.exename);
  if (o.tunnel) cmd += " --bind 127.0.0.1";
  else if (!m.bind_addr.empty()) cmd += " --bind " + quote(m.bind_addr);
  else cmd += " --bind-toward " + quote(master_addr);
  if (m.bind_port != 0) cmd += " --port " + std::to_string(m.bind_port);
  return cmd;
}

}  // namespace

// A worker on an SSH host. Shares the host's connection with the host's other workers.
class SshWorker : public LaunchedWorker {
 public:
  // shared_ptr: the connection is owned jointly by every SshWorker of the host; the last
  // one to go closes it.
  SshWorker(std::shared_ptr<SshPump> pump, size_t index, long os_pid, Fd in, Fd out, Fd err)
      : pump_(std::move(pump)), index_(index), os_pid_(os_pid), in_(std::move(in)),
        out_(std::move(out)), err_(std::move(err)) {}
  ~SshWorker() override { kill(); }

  int stdin_fd() const override { return in_.get(); }
  int stdout_fd() const override { return out_.get(); }
  int stderr_fd() const override { return err_.get(); }
  void close_stdin() override { in_ = Fd(); }
  long os_pid() const override { return os_pid_; }
  std::string host() const override { return pump_->host_name(); }
  bool wait_for(std::chrono::milliseconds timeout) override {
    return pump_->wait_ended(index_, timeout);
  }
  void kill() noexcept override { pump_->kill(index_); }
  std::string exit_reason() const override { return pump_->exit_reason(index_); }
  int open_connection(const std::string& host, uint16_t port,
                      std::chrono::milliseconds timeout) override {
    if (!pump_->tunnel()) return -1;
    return pump_->open_tunnel(host, port, timeout);
  }

 private:
  std::shared_ptr<SshPump> pump_;
  size_t index_;
  long os_pid_;
  Fd in_, out_, err_;
};

namespace {

int core_count(SshSession& s, Clock::time_point deadline) {
  std::string out = run_on_host(s, "nproc 2>/dev/null || getconf _NPROCESSORS_ONLN", deadline);
  int n = std::atoi(out.c_str());
  if (n < 1) {
    throw Error(ErrorKind::Internal, s.name() + ": cannot count its cores (nproc printed '" +
                                         out + "')");
  }
  return n;
}

}  // namespace

std::vector<std::unique_ptr<LaunchedWorker>> launch_on_host(const SshLaunchPlan& plan) {
  auto session = std::make_unique<SshSession>(plan);
  auto deadline = Clock::now() + plan.options.timeout;
  int count = plan.machine.count == kAutoCount ? core_count(*session, deadline) : plan.machine.count;
  std::string master = plan.options.master_addr.empty() ? session->local_address()
                                                        : plan.options.master_addr;
  std::string command = worker_command(plan, master);
  auto pump = std::make_shared<SshPump>(std::move(session), plan.options.tunnel);
  // Every channel is opened before any is read: the hosts' shells start in parallel.
  std::vector<StartedChannel> started = pump->exec_all(command, count, deadline);
  std::vector<std::unique_ptr<LaunchedWorker>> workers;
  for (size_t i = 0; i < started.size(); ++i) {
    auto& s = started[i];
    workers.push_back(std::make_unique<SshWorker>(pump, s.index, s.os_pid, std::move(s.in),
                                                  std::move(s.out), std::move(s.err)));
  }
  pump->start();
  return workers;
}

}  // namespace dj::detail
