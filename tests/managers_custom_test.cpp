// The public ClusterManager interface is enough to write a manager: this file's own manager
// starts dj-worker with posix_spawn and pipes, and dj adds, calls and stops its workers.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "dj/dj.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {

class SpawnedWorker : public LaunchedWorker {
 public:
  SpawnedWorker(pid_t pid, int in, int out, int err) : pid_(pid), in_(in), out_(out), err_(err) {}
  ~SpawnedWorker() override {
    kill();
    for (int fd : {in_, out_, err_}) {
      if (fd >= 0) ::close(fd);
    }
  }
  int stdin_fd() const override { return in_; }
  int stdout_fd() const override { return out_; }
  int stderr_fd() const override { return err_; }
  void close_stdin() override {
    if (in_ >= 0) ::close(in_);
    in_ = -1;
  }
  long os_pid() const override { return pid_; }
  std::string host() const override { return "spawned"; }
  bool wait_for(std::chrono::milliseconds timeout) override {
    return reaped_ || test::eventually([&] {
             reaped_ = ::waitpid(pid_, &status_, WNOHANG) == pid_;
             return reaped_;
           }, timeout);
  }
  void kill() noexcept override {
    if (reaped_) return;
    ::kill(pid_, SIGKILL);
    wait_for(std::chrono::milliseconds(5000));
  }
  std::string exit_reason() const override {
    return reaped_ ? "status " + std::to_string(status_) : "";
  }

 private:
  pid_t pid_;
  int in_, out_, err_;
  bool reaped_ = false;
  int status_ = 0;
};

class SpawnManager : public ClusterManager {
 public:
  int launched = 0;
  std::vector<std::unique_ptr<LaunchedWorker>> launch(int count) override {
    std::vector<std::unique_ptr<LaunchedWorker>> out;
    for (int i = 0; i < count; ++i) {
      int in[2], o[2], e[2];
      REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
      REQUIRE(::pipe2(o, O_CLOEXEC) == 0);
      REQUIRE(::pipe2(e, O_CLOEXEC) == 0);
      posix_spawn_file_actions_t actions;
      posix_spawn_file_actions_init(&actions);
      posix_spawn_file_actions_adddup2(&actions, in[0], 0);
      posix_spawn_file_actions_adddup2(&actions, o[1], 1);
      posix_spawn_file_actions_adddup2(&actions, e[1], 2);
      std::string exe = test::program("dj-worker");
      char* argv[] = {exe.data(), nullptr};
      pid_t pid = 0;
      REQUIRE(::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv, environ) == 0);
      posix_spawn_file_actions_destroy(&actions);
      for (int fd : {in[0], o[1], e[1]}) ::close(fd);
      out.push_back(std::make_unique<SpawnedWorker>(pid, in[1], o[0], e[0]));
      ++launched;
    }
    return out;
  }
  std::string describe() const override { return "spawn"; }
};

}  // namespace

TEST_CASE("a ClusterManager written outside dj adds workers that run kernels and are stopped",
          "[managers]") {
  SpawnManager manager;
  std::vector<int> pids;
  {
    pids = addprocs(manager, 2);
  }  // The workers outlive the call; the cluster owns them now.
  CHECK(manager.launched == 2);
  auto add = everywhere(test::plugin("test_kernels")).kernel<double(double, double)>("add");
  CHECK(remotecall_fetch(add, pids[1], 3.0, 3.0) == 6.0);
  rmprocs(pids);
  REQUIRE(test::eventually([] { return test::children_named("dj-worker").empty(); }));
  REQUIRE_THROWS_WITH(addprocs(manager, 0), Contains("at least 1"));
}
