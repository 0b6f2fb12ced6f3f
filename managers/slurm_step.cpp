// SlurmStep: runs srun as a child with pipes, splits its `--label`led output into per-task
// pipes (what the master epolls), reads each task's pid and exit from the wrapper's lines,
// and makes sure no step or job outlives it (scancel, then SIGKILL of srun).
#include "slurm_step.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "sys.hpp"

extern char** environ;

namespace dj::detail {
namespace {

using Clock = std::chrono::steady_clock;

std::pair<Fd, Fd> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2", "slurm task stdio");
  return {Fd(fds[0]), Fd(fds[1])};
}

pid_t spawn(const std::vector<std::string>& args, int in, int out, int err) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in, 0);
  posix_spawn_file_actions_adddup2(&actions, out, 1);
  posix_spawn_file_actions_adddup2(&actions, err, 2);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // A process group of its own: a signal to the master's group (Ctrl-C, `timeout`, a batch
  // system) must not kill srun before it has ended its step; srun ends it on stdin EOF.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    throw Error(rc == ENOENT ? ErrorKind::NotFound : ErrorKind::Internal,
                "cannot run " + args[0] + ": " + std::strerror(rc) +
                    (rc == ENOENT ? " (is SLURM installed and in PATH?)" : ""));
  }
  return pid;
}

// Runs a SLURM command quietly and waits for it (at most 10 s): scancel, srun --overlap.
void run_quietly(const std::vector<std::string>& args) noexcept {
  try {
    Fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    pid_t pid = spawn(args, null.get(), null.get(), null.get());
    auto deadline = Clock::now() + std::chrono::seconds(10);
    int status;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        break;
      }
      ::poll(nullptr, 0, 5);
    }
  } catch (const std::exception& e) {
    log_line(std::string("slurm cleanup: ") + e.what());
  }
}

std::string describe_exit(int code) {
  return code > 128 ? "killed by signal " + std::to_string(code - 128)
                    : "exited with status " + std::to_string(code);
}

}  // namespace

SlurmStep::SlurmStep(int count, const std::vector<std::string>& srun_args, std::string job_name)
    : job_name_(std::move(job_name)), wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      tasks_(static_cast<size_t>(count)) {
  for (auto& t : tasks_) {
    auto [in_r, in_w] = make_pipe();
    auto [out_r, out_w] = make_pipe();
    auto [err_r, err_w] = make_pipe();
    set_nonblocking(in_r.get(), true);
    t.pump_in = std::move(in_r);
    t.master_in = std::move(in_w);
    t.master_out = std::move(out_r);
    t.pump_out = std::move(out_w);
    t.master_err = std::move(err_r);
    t.pump_err = std::move(err_w);
  }
  auto [in_r, in_w] = make_pipe();
  auto [out_r, out_w] = make_pipe();
  auto [err_r, err_w] = make_pipe();
  srun_pid_ = spawn(srun_args, in_r.get(), out_w.get(), err_w.get());
  srun_in_ = std::move(in_w);
  srun_out_ = std::move(out_r);
  srun_err_ = std::move(err_r);
  pump_ = std::thread([this] { run(); });
}

SlurmStep::~SlurmStep() {
  terminate();
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  changed_.notify_all();
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(wake_fd_.get(), &one, sizeof one);
  pump_.join();
}

std::string SlurmStep::describe() const {
  std::lock_guard lock(mu_);
  return "slurm " + (job_id_.empty() ? "job " + job_name_ : "job " + job_id_);
}

std::string SlurmStep::srun_messages_locked() const {
  std::string text;
  for (const auto& l : srun_lines_) text += (text.empty() ? "" : " / ") + l;
  return text.empty() ? "no message from srun" : text;
}

void SlurmStep::wait_started(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  auto all_started = [&] {
    for (const auto& t : tasks_) {
      if (!t.started) return false;
    }
    return true;
  };
  bool done = changed_.wait_for(lock, timeout, [&] { return all_started() || srun_exited_; });
  if (done && all_started()) return;
  bool any_started = false;
  for (const auto& t : tasks_) any_started = any_started || t.started;
  if (srun_exited_ && !any_started) {
    throw Error(ErrorKind::InvalidArgument,
                "SLURM refused the job (srun " + describe_exit(srun_status_) +
                    "): " + srun_messages_locked());
  }
  throw Error(ErrorKind::Disconnected,
              srun_exited_ ? "srun ended before every task started (" +
                                 describe_exit(srun_status_) + "): " + srun_messages_locked()
                           : "the SLURM job did not start its " + std::to_string(tasks_.size()) +
                                 " tasks within " + std::to_string(timeout.count()) +
                                 " ms: " + srun_messages_locked());
}

bool SlurmStep::wait_ended(size_t task, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [&] { return tasks_[task].ended; });
}

std::string SlurmStep::exit_reason(size_t task) const {
  std::lock_guard lock(mu_);
  return tasks_[task].ended ? tasks_[task].reason : "";
}

std::string SlurmStep::node(size_t task) const {
  std::lock_guard lock(mu_);
  return tasks_[task].node;
}

void SlurmStep::kill(size_t task) noexcept {
  std::string node, pid, job;
  bool others_alive = false;
  {
    std::lock_guard lock(mu_);
    if (tasks_[task].ended) return;
    for (size_t i = 0; i < tasks_.size(); ++i) {
      if (i != task && !tasks_[i].ended) others_alive = true;
    }
    node = tasks_[task].node;
    pid = std::to_string(tasks_[task].os_pid);
    job = job_id_;
  }
  if (!others_alive || job.empty() || pid == "0") {
    terminate();
  } else {
    // SLURM signals whole steps only: reach this one task's node in an overlapping step.
    run_quietly({"srun", "--jobid=" + job, "--overlap", "-N1", "-n1", "-w", node, "kill", "-9",
                 pid});
  }
  if (!wait_ended(task, std::chrono::milliseconds(5000))) {
    log_line("slurm task " + std::to_string(task) + " on " + node + " did not end after kill");
  }
}

void SlurmStep::terminate() noexcept {
  std::string job, step;
  {
    std::lock_guard lock(mu_);
    if (srun_exited_) return;
    job = job_id_;
    step = step_id_;
  }
  bool own_job = !std::getenv("SLURM_JOB_ID");
  if (!job.empty()) run_quietly({"scancel", own_job || step.empty() ? job : job + "." + step});
  else if (own_job) run_quietly({"scancel", "--name=" + job_name_});
  std::unique_lock lock(mu_);
  if (!changed_.wait_for(lock, std::chrono::milliseconds(5000), [&] { return srun_exited_; })) {
    ::kill(srun_pid_, SIGKILL);  // The pump thread reaps it.
    changed_.wait_for(lock, std::chrono::milliseconds(5000), [&] { return srun_exited_; });
  }
}

}  // namespace dj::detail
