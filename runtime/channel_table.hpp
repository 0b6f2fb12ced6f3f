// ChannelTable: the RemoteChannels a process owns. Every operation is asynchronous: it
// completes (exactly once, possibly before op() returns) through a callback, so the owner can
// serve blocked remote takers and putters without blocking any of its own threads. Deadlines
// are enforced by one timer thread, started when the first timed operation waits.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "wire/codec.hpp"

namespace dj::detail {

using ChannelOpKind = wire::ChannelOpKind;

struct ChannelResult {
  bool ok = false;
  std::string bytes;        // take/fetch: the item; isready: "\1" or "\0"
  wire::RemoteError error;  // when !ok
};

class ChannelTable {
 public:
  using Done = std::function<void(ChannelResult)>;
  using Clock = std::chrono::steady_clock;

  explicit ChannelTable(int owner_pid) : owner_(owner_pid) {}
  ~ChannelTable();
  ChannelTable(const ChannelTable&) = delete;
  ChannelTable& operator=(const ChannelTable&) = delete;

  void set_owner(int pid) { owner_.store(pid, std::memory_order_relaxed); }
  // A new channel holding at most `capacity` items (>= 1). Returns its id on this process.
  uint64_t create(uint64_t capacity);
  // Runs one operation. `deadline` bounds put/take/fetch/wait; `done` runs exactly once, on
  // this thread or on whichever thread completes it (a put, a close, the timer).
  void op(uint64_t id, ChannelOpKind kind, std::string item,
          std::optional<Clock::time_point> deadline, Done done);
  // Blocking convenience for callers on the owning process.
  ChannelResult op_wait(uint64_t id, ChannelOpKind kind, std::string item,
                        std::optional<Clock::time_point> deadline);

 private:
  struct Waiter {
    uint64_t serial;
    ChannelOpKind kind;
    std::string item;  // a blocked put's item
    std::optional<Clock::time_point> deadline;
    Done done;
  };
  struct Channel {
    uint64_t capacity = 1;
    bool closed = false;
    std::deque<std::string> items;
    std::deque<Waiter> takers;   // take, fetch, wait
    std::deque<Waiter> putters;  // put when full
  };
  using Ready = std::vector<std::pair<Done, ChannelResult>>;

  void serve(Channel& c, Ready& ready);  // matches items with waiters (mu_ held)
  void timer_main();
  ChannelResult failure(ErrorKind kind, const std::string& message, uint64_t id) const;

  std::atomic<int> owner_;  // set by every local_channels() call (myid may change once)
  std::mutex mu_;
  std::condition_variable timer_cv_;
  std::map<uint64_t, Channel> channels_;  // guarded by mu_
  uint64_t next_id_ = 1;                  // guarded by mu_
  uint64_t next_serial_ = 1;              // guarded by mu_
  bool stopping_ = false;                 // guarded by mu_
  std::thread timer_;                     // started under mu_ when first needed
};

// The table of this process (created on first use).
ChannelTable& local_channels();

}  // namespace dj::detail
