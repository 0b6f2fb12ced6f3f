// LocalExecutor: runs the calls addressed to the master itself (pid 1), in order, on one
// thread, as a worker would. Distributed.jl runs work on pid 1 when there are no workers.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace dj::detail {

class LocalExecutor {
 public:
  LocalExecutor() = default;
  ~LocalExecutor();  // Finishes queued work, then joins.
  LocalExecutor(const LocalExecutor&) = delete;
  LocalExecutor& operator=(const LocalExecutor&) = delete;

  // Queues `task`; the thread starts on first use.
  void submit(std::function<void()> task);
  void stop() noexcept;

 private:
  void run();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::thread thread_;                       // started under mu_
};

}  // namespace dj::detail
