// SlurmManager and SlurmWorker: the srun command line (options, wrapper) and the per-task
// LaunchedWorker over a shared SlurmStep.
#include "slurm_manager.hpp"

#include <unistd.h>

#include <atomic>

#include "identity.hpp"
#include "slurm_step.hpp"

namespace dj {
namespace {

// Each task: keep the worker's stdin (an asynchronous list would get /dev/null), report pid,
// node, job and step, then the worker's exit code, so the master can kill and reap one task.
constexpr const char* kWrapper =
    "exec 3<&0; \"$0\" \"$@\" <&3 3<&- & "
    "echo \"dj-pid $! ${SLURMD_NODENAME:-$(hostname)} ${SLURM_JOB_ID:-?} ${SLURM_STEP_ID:-?}\"; "
    "wait $!; echo \"dj-exit $?\"";

class SlurmWorker : public LaunchedWorker {
 public:
  // shared_ptr: the step is owned jointly by its tasks' workers; the last one ends it.
  SlurmWorker(std::shared_ptr<detail::SlurmStep> step, size_t task)
      : step_(std::move(step)), task_(task) {
    auto& t = step_->tasks()[task];
    in_ = std::move(t.master_in);
    out_ = std::move(t.master_out);
    err_ = std::move(t.master_err);
    os_pid_ = t.os_pid;
  }
  ~SlurmWorker() override { kill(); }
  int stdin_fd() const override { return in_.get(); }
  int stdout_fd() const override { return out_.get(); }
  int stderr_fd() const override { return err_.get(); }
  void close_stdin() override { in_ = detail::Fd(); }
  long os_pid() const override { return os_pid_; }
  std::string host() const override { return step_->node(task_); }
  bool wait_for(std::chrono::milliseconds timeout) override {
    return step_->wait_ended(task_, timeout);
  }
  void kill() noexcept override { step_->kill(task_); }
  std::string exit_reason() const override { return step_->exit_reason(task_); }

 private:
  std::shared_ptr<detail::SlurmStep> step_;
  size_t task_;
  detail::Fd in_, out_, err_;
  long os_pid_ = 0;
};

}  // namespace

SlurmManager::SlurmManager(SlurmOptions options, std::string default_exename)
    : options_(std::move(options)),
      exename_(options_.exename.empty() ? std::move(default_exename) : options_.exename) {}

std::vector<std::unique_ptr<LaunchedWorker>> SlurmManager::launch(int count) {
  static std::atomic<int> launches{0};
  // A name of its own, so that a job still queued when srun is killed can be cancelled.
  std::string job_name = options_.job_name + "-" + std::to_string(::getpid()) + "-" +
                         std::to_string(++launches);
  std::vector<std::string> args{"srun", "-n", std::to_string(count), "--label",
                                "--input=all", "--kill-on-bad-exit=0", "--job-name=" + job_name};
  if (!options_.partition.empty()) args.push_back("--partition=" + options_.partition);
  if (!options_.time.empty()) args.push_back("--time=" + options_.time);
  args.insert(args.end(), options_.srun_args.begin(), options_.srun_args.end());
  std::string master = options_.master_addr.empty() ? detail::host_name() : options_.master_addr;
  for (std::string a : {std::string("sh"), std::string("-c"), std::string(kWrapper), exename_,
                        std::string("--bind-toward"), master}) {
    args.push_back(a);
  }
  auto step = std::make_shared<detail::SlurmStep>(count, args, job_name);
  step->wait_started(options_.timeout);  // On failure ~SlurmStep cancels and reaps.
  describe_ = step->describe();
  std::vector<std::unique_ptr<LaunchedWorker>> workers;
  for (size_t i = 0; i < static_cast<size_t>(count); ++i) {
    workers.push_back(std::make_unique<SlurmWorker>(step, i));
  }
  return workers;
}

}  // namespace dj
