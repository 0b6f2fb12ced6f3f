// LocalManager: the one translation unit that includes Boost.Process (it costs seconds to
// compile), spawning dj-worker children with their stdio on close-on-exec pipes.
#include "local_manager.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/process/args.hpp>
#include <boost/process/child.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/posix.hpp>
#include <cstring>
#include <mutex>
#include <thread>

#include "dj/error.hpp"
#include "identity.hpp"
#include "sys.hpp"

namespace bp = boost::process;

namespace dj {
namespace {

struct Pipe {
  int read = -1;
  int write = -1;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) detail::throw_errno("pipe2", "worker stdio");
  return {fds[0], fds[1]};
}

class LocalWorker : public LaunchedWorker {
 public:
  LocalWorker(bp::child child, int in, int out, int err)
      : child_(std::move(child)), in_(in), out_(out), err_(err), os_pid_(child_.id()) {}

  ~LocalWorker() override {
    kill();
    detail::close_quietly(in_);
    detail::close_quietly(out_);
    detail::close_quietly(err_);
  }

  int stdin_fd() const override { return in_; }
  int stdout_fd() const override { return out_; }
  int stderr_fd() const override { return err_; }
  void close_stdin() override {
    detail::close_quietly(in_);
    in_ = -1;
  }
  long os_pid() const override { return os_pid_; }
  std::string host() const override { return detail::host_name(); }

  // Called from several threads (the I/O thread retiring a dead worker, rmprocs, interrupt):
  // mu_ makes reaping and killing one step each, so a pid is never signalled after its reaping.
  bool wait_for(std::chrono::milliseconds timeout) override {
    // Boost.Process 1.74's wait_for cannot tell a signal from an exit code (it reports 383);
    // waitpid keeps the real status for exit_reason().
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      {
        std::lock_guard lock(mu_);
        if (try_reap_locked()) return true;
      }
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  void kill() noexcept override {
    {
      std::lock_guard lock(mu_);
      if (reaped_ || os_pid_ <= 0) return;  // never kill(0) or kill(-1): a group or everything
      if (try_reap_locked()) return;        // already gone: its pid may be someone else's now
      ::kill(static_cast<pid_t>(os_pid_), SIGKILL);
    }
    wait_for(std::chrono::milliseconds(5000));
  }

  std::string exit_reason() const override {
    std::lock_guard lock(mu_);
    if (!reaped_) return "";
    if (WIFSIGNALED(status_)) {
      return std::string("killed by signal ") + std::to_string(WTERMSIG(status_)) + " (" +
             ::strsignal(WTERMSIG(status_)) + ")";
    }
    if (WIFEXITED(status_)) return "exited with status " + std::to_string(WEXITSTATUS(status_));
    return "ended";
  }

 private:
  bp::child child_;
  int in_, out_, err_;
  long os_pid_;
  // True once waitpid collected it (here, or it was no longer our child).
  bool try_reap_locked() {
    if (reaped_) return true;
    int status = 0;
    pid_t r = ::waitpid(static_cast<pid_t>(os_pid_), &status, WNOHANG);
    if (r == static_cast<pid_t>(os_pid_)) {
      reaped_ = true;
      status_ = status;
      child_.detach();  // Reaped here; the child object must not wait again.
    } else if (r < 0 && errno != EINTR) {
      reaped_ = true;  // Not our child any more (already reaped elsewhere).
      child_.detach();
    }
    return reaped_;
  }
  mutable std::mutex mu_;
  bool reaped_ = false;  // guarded by mu_
  int status_ = 0;       // guarded by mu_
};

}  // namespace

LocalManager::LocalManager(std::string exename) : exename_(std::move(exename)) {
  if (::access(exename_.c_str(), X_OK) != 0) {
    throw Error(ErrorKind::NotFound, "worker executable " + exename_ +
                                         " cannot be run (" + std::strerror(errno) +
                                         "); set LocalOptions::exename or $DJ_WORKER");
  }
}

std::string LocalManager::default_exename() {
  if (const char* env = std::getenv("DJ_WORKER"); env && *env) return env;
  // dj-worker lives in ../bin relative to libdj's directory, in the build tree and installed.
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&LocalManager::default_exename), &info) &&
      info.dli_fname) {
    std::string lib = info.dli_fname;
    auto slash = lib.rfind('/');
    std::string dir = slash == std::string::npos ? "." : lib.substr(0, slash);
    return dir + "/../bin/dj-worker";
  }
  return "dj-worker";
}

std::vector<std::unique_ptr<LaunchedWorker>> LocalManager::launch(int count) {
  std::vector<std::unique_ptr<LaunchedWorker>> out;
  out.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    Pipe in = make_pipe(), stdout_pipe = make_pipe(), stderr_pipe = make_pipe();
    try {
      std::error_code ec;
      // The child's ends are dup2'ed onto 0/1/2 (which clears close-on-exec there); every
      // other descriptor of the master stays closed in the worker.
      bp::child child(bp::exe = exename_, bp::args = std::vector<std::string>{},
                      bp::posix::fd.bind(0, in.read), bp::posix::fd.bind(1, stdout_pipe.write),
                      bp::posix::fd.bind(2, stderr_pipe.write), ec);
      int launch_errno = errno;  // Boost does not always copy a pre-fork failure into ec
      if (ec || child.id() <= 0) {
        // Boost.Process 1.74 returns a default child (pid -1, still attached) when it fails
        // before or at fork (pipe or fcntl: EMFILE; fork: EAGAIN). Its destructor would then
        // waitpid(-1) and, with any other child running, kill(-1, SIGKILL): every process this
        // user may signal. Detached, it does nothing.
        child.detach();
        if (child.id() <= 0) {
          detail::throw_errno("starting a worker", exename_, ec ? ec.value() : launch_errno);
        }
        throw Error(ErrorKind::NotFound, "cannot start " + exename_ + ": " + ec.message());
      }
      detail::close_quietly(in.read);
      detail::close_quietly(stdout_pipe.write);
      detail::close_quietly(stderr_pipe.write);
      out.push_back(std::make_unique<LocalWorker>(std::move(child), in.write, stdout_pipe.read,
                                                  stderr_pipe.read));
    } catch (...) {
      for (int fd : {in.read, in.write, stdout_pipe.read, stdout_pipe.write, stderr_pipe.read,
                     stderr_pipe.write}) {
        if (fd >= 0 && fcntl(fd, F_GETFD) >= 0) detail::close_quietly(fd);
      }
      throw;  // `out` kills and reaps the workers started so far.
    }
  }
  return out;
}

}  // namespace dj
