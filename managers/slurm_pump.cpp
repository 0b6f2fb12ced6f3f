// SlurmStep's pump thread: srun's "K: line" output goes to task K's pipes; the wrapper's
// "dj-pid"/"dj-exit" lines and srun's own messages update the step's state.
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "slurm_step.hpp"
#include "sys.hpp"

namespace dj::detail {
namespace {

bool deliver(int fd, const std::string& text) {
  if (fd < 0) return false;
  try {
    write_full(fd, text.data(), text.size());
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

void SlurmStep::run() {
  bool out_open = true, err_open = true;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    std::vector<pollfd> fds{{wake_fd_.get(), POLLIN, 0},
                            {out_open ? srun_out_.get() : -1, POLLIN, 0},
                            {err_open ? srun_err_.get() : -1, POLLIN, 0}};
    for (auto& t : tasks_) fds.push_back({t.input_open ? t.pump_in.get() : -1, POLLIN, 0});
    ::poll(fds.data(), fds.size(), out_open || err_open ? -1 : 20);
    if (fds[0].revents) {
      uint64_t n;
      [[maybe_unused]] ssize_t r = ::read(wake_fd_.get(), &n, sizeof n);
    }
    char buf[16384];
    for (int s = 0; s < 2; ++s) {
      if (!fds[1 + s].revents) continue;
      ssize_t n = ::read(fds[1 + s].fd, buf, sizeof buf);
      if (n <= 0) {
        (s == 0 ? out_open : err_open) = false;
        continue;
      }
      std::string& partial = partial_[s];
      partial.append(buf, static_cast<size_t>(n));
      for (size_t nl; (nl = partial.find('\n')) != std::string::npos;) {
        on_line(partial.substr(0, nl), s == 1);
        partial.erase(0, nl + 1);
      }
    }
    for (size_t i = 0; i < tasks_.size(); ++i) {
      Task& t = tasks_[i];
      if (!fds[3 + i].revents) continue;
      ssize_t n = ::read(t.pump_in.get(), buf, sizeof buf);
      if (n > 0 && !cookie_sent_) {
        // srun --input=all gives every task the same stdin: all tasks get the same cookie
        // line, so the first task's copy is forwarded and the others are dropped.
        try {
          write_full(srun_in_.get(), buf, static_cast<size_t>(n));
        } catch (const Error&) {
        }
        cookie_sent_ = buf[n - 1] == '\n';
      } else if (n == 0) {
        t.input_open = false;
      }
    }
    bool any_input = false;
    for (auto& t : tasks_) any_input = any_input || t.input_open;
    if (!any_input && srun_in_) srun_in_ = Fd();  // Every worker's stdin closed: EOF for all.
    if (!out_open && !err_open) {
      int status = 0;
      if (::waitpid(srun_pid_, &status, WNOHANG) == srun_pid_) {
        on_srun_exit(status);
        out_open = err_open = false;
        std::unique_lock lock(mu_);
        changed_.wait(lock, [&] { return stopping_; });
        return;
      }
    }
  }
}

void SlurmStep::on_line(const std::string& line, bool is_stderr) {
  // "K: text" from task K (srun pads K with spaces when there are 10 or more tasks).
  size_t start = line.find_first_not_of(' ');
  size_t colon = line.find(": ");
  char* end = nullptr;
  long task = start != std::string::npos && colon != std::string::npos
                  ? std::strtol(line.c_str() + start, &end, 10)
                  : -1;
  if (task < 0 || static_cast<size_t>(task) >= tasks_.size() || end != line.c_str() + colon) {
    std::lock_guard lock(mu_);  // srun's own message.
    if (line.rfind("srun: job ", 0) == 0 && job_id_.empty()) {
      job_id_ = std::to_string(std::atol(line.c_str() + 10));
    }
    srun_lines_.push_back(line);
    if (srun_lines_.size() > 8) srun_lines_.erase(srun_lines_.begin());
    changed_.notify_all();
    return;
  }
  Task& t = tasks_[static_cast<size_t>(task)];
  std::string text = line.substr(colon + 2);
  if (!is_stderr && text.rfind("dj-pid ", 0) == 0) {
    char node[256] = {}, job[64] = {}, step[64] = {};
    long pid = 0;
    std::sscanf(text.c_str(), "dj-pid %ld %255s %63s %63s", &pid, node, job, step);
    std::lock_guard lock(mu_);
    t.os_pid = pid;
    t.node = node;
    t.started = true;
    job_id_ = job;
    step_id_ = step;
    changed_.notify_all();
    return;
  }
  if (!is_stderr && text.rfind("dj-exit ", 0) == 0) {
    int code = std::atoi(text.c_str() + 8);
    t.pump_out = Fd();
    t.pump_err = Fd();
    std::lock_guard lock(mu_);
    t.ended = true;
    t.reason = (code > 128 ? "killed by signal " + std::to_string(code - 128)
                           : "exited with status " + std::to_string(code)) +
               " on " + t.node;
    changed_.notify_all();
    return;
  }
  deliver(is_stderr ? t.pump_err.get() : t.pump_out.get(), text + "\n");
}

void SlurmStep::on_srun_exit(int status) {
  std::string how = WIFSIGNALED(status) ? "srun killed by signal " + std::to_string(WTERMSIG(status))
                                        : "srun exited with status " +
                                              std::to_string(WEXITSTATUS(status));
  std::lock_guard lock(mu_);
  srun_exited_ = true;
  srun_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  for (auto& t : tasks_) {
    t.pump_out = Fd();
    t.pump_err = Fd();
    if (!t.ended) {
      t.ended = true;
      t.reason = "its SLURM step ended (" + how + ")";
    }
  }
  changed_.notify_all();
}

}  // namespace dj::detail
