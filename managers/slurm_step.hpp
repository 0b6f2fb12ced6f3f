// SlurmStep: one `srun -n N --label` job step running N dj-workers, and the thread that splits
// srun's labelled output into one pipe pair per task. Private to managers/.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dj/dj.hpp"
#include "net.hpp"

namespace dj::detail {

class SlurmStep {
 public:
  struct Task {
    // Master's ends (handed to the SlurmWorker); the pump holds the other ends.
    Fd master_in, master_out, master_err;
    Fd pump_in, pump_out, pump_err;
    bool input_open = true;  // pump thread only
    // Guarded by SlurmStep::mu_.
    long os_pid = 0;
    std::string node;
    bool started = false, ended = false;
    std::string reason;
  };

  // Starts srun with `srun_args` followed by the worker command. Throws: dj::Error if srun
  // cannot be started (NotFound when it is not installed).
  SlurmStep(int count, const std::vector<std::string>& srun_args, std::string job_name);
  // Ends the step (and the job when srun made it): scancel, then SIGKILL srun; reaps srun.
  ~SlurmStep();

  // Waits until every task printed its pid. Throws: InvalidArgument (srun refused the job, with
  // srun's reason), Disconnected (timeout: the job never started; or a task failed).
  void wait_started(std::chrono::milliseconds timeout);
  std::vector<Task>& tasks() { return tasks_; }

  // Thread-safety: any thread.
  bool wait_ended(size_t task, std::chrono::milliseconds timeout);
  void kill(size_t task) noexcept;
  std::string exit_reason(size_t task) const;
  std::string node(size_t task) const;
  std::string describe() const;

 private:
  void run();
  void on_line(const std::string& line, bool is_stderr);
  void on_srun_exit(int status);
  void terminate() noexcept;
  std::string srun_messages_locked() const;

  std::string job_name_;
  pid_t srun_pid_ = -1;
  Fd srun_in_, srun_out_, srun_err_;
  Fd wake_fd_;
  std::vector<Task> tasks_;
  std::thread pump_;
  std::string partial_[2];  // pump thread only: unfinished stdout / stderr line

  mutable std::mutex mu_;
  std::condition_variable changed_;
  bool stopping_ = false;         // guarded by mu_
  bool srun_exited_ = false;      // guarded by mu_
  int srun_status_ = 0;           // guarded by mu_
  std::string job_id_, step_id_;  // guarded by mu_
  std::vector<std::string> srun_lines_;  // guarded by mu_: srun's own messages
  bool cookie_sent_ = false;      // pump thread only
};

}  // namespace dj::detail
