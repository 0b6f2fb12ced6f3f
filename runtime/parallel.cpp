// pmap's scheduler (batching, load balancing, retries, progress), worker pools, distributed
// loops and interrupt: the non-template halves of dj/parallel.hpp.
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string_view>
#include <unordered_map>

#include "cluster.hpp"
#include "dj/dj.hpp"
#include "sys.hpp"

namespace dj {
namespace detail {

using Clock = std::chrono::steady_clock;

struct PoolState {
  mutable std::mutex mu;
  std::condition_variable cv;
  bool follows_cluster = false;  // default_worker_pool: members are workers() at each take
  std::set<int> members;         // guarded by mu
  std::set<int> busy;            // guarded by mu
};

namespace {

std::set<int> live_members(const PoolState& s) {
  std::vector<int> all = Cluster::instance().workers();
  if (s.follows_cluster) {
    if (all.empty()) return {1};
    return {all.begin(), all.end()};
  }
  std::set<int> live;
  for (int pid : s.members) {
    if (std::binary_search(all.begin(), all.end(), pid)) live.insert(pid);
  }
  return live;
}

// Per-element scheduling state of one pmap.
struct Batch {
  int pid = 0;
  std::vector<size_t> elements;
  Clock::time_point sent;
  bool done = false;
  wire::Message message;
  std::string payload;
};

class ProgressBar {
 public:
  ProgressBar(size_t total, bool on) : total_(total), on_(on && total > 0), start_(Clock::now()) {}
  void update(size_t done, bool final = false) {
    if (!on_) return;
    auto now = Clock::now();
    if (!final && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    double secs = std::chrono::duration<double>(now - start_).count();
    double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : 0;
    int width = 30, filled = static_cast<int>(width * done / total_);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(static_cast<size_t>(width), ' ');
    std::fprintf(stderr, "\rpmap: [%s] %zu/%zu  %.0f/s  ETA %.1fs%s", bar.c_str(), done, total_,
                 rate, eta, final ? "\n" : "");
    std::fflush(stderr);
  }

 private:
  size_t total_;
  bool on_;
  Clock::time_point start_, last_;
};

Error element_error(size_t index, size_t total, int pid, const std::string& kernel,
                    const wire::RemoteError& e) {
  return Error(e.kind,
               "pmap: element " + std::to_string(index + 1) + " of " + std::to_string(total) +
                   " failed on worker " + std::to_string(pid) + " (kernel '" + kernel +
                   "'): " + e.message,
               pid, kernel);
}

}  // namespace

struct CachedState {
  std::string bytes;
  std::string type;
  std::mutex mu;
  std::map<int, std::shared_ptr<RefState>> copies;  // guarded by mu; released with the state
};

std::shared_ptr<CachedState> make_cached(std::string bytes, const std::string& type) {
  auto state = std::make_shared<CachedState>();
  state->bytes = std::move(bytes);
  state->type = type;
  return state;
}

std::shared_ptr<RefState> cached_ref_on(const std::shared_ptr<CachedState>& cached, int pid) {
  if (pid <= 0) {
    throw Error(ErrorKind::InvalidArgument,
                "a Cached<" + cached->type + "> argument needs the process it is sent to "
                "(it cannot be a pmap element)");
  }
  std::lock_guard lock(cached->mu);
  auto& copy = cached->copies[pid];
  if (!copy) copy = Cluster::instance().store_value(pid, cached->bytes);
  return copy;
}

std::vector<int> pool_workers(const WorkerPool* pool) {
  std::vector<int> pids = pool ? pool->workers() : dj::workers();
  if (pids.empty()) throw Error(ErrorKind::Disconnected, "the worker pool has no live worker");
  return pids;
}

PmapResult pmap_run(const CallTarget& k, PmapArgs&& args, const PmapOptions& options) {
  const size_t n = args.offsets.size();
  PmapResult result;
  result.values.resize(n);
  auto element = [&](size_t i) {
    size_t end = i + 1 < n ? args.offsets[i + 1] : args.buffer.size();
    return std::string_view(args.buffer).substr(args.offsets[i], end - args.offsets[i]);
  };
  if (n == 0) return result;
  if (options.batch_size < 0) {
    throw Error(ErrorKind::InvalidArgument,
                "pmap: batch_size must be >= 0 (0 = automatic), got " +
                    std::to_string(options.batch_size));
  }
  std::vector<int> pids = pool_workers(options.pool);
  Cluster& cluster = Cluster::instance();

  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<Batch>> finished;  // guarded by mu

  std::deque<size_t> todo;
  for (size_t i = 0; i < n; ++i) todo.push_back(i);
  std::multimap<Clock::time_point, size_t> retry_at;  // element -> when it may run again
  std::unordered_map<size_t, size_t> attempts;  // failed elements -> runs so far (sparse)
  std::map<int, int> in_flight;  // live workers of this pmap -> batches in flight
  std::set<int> dead;
  for (int pid : pids) in_flight[pid] = 0;
  size_t done = 0;
  double per_element_s = 0;  // measured; 0 = unknown yet
  ProgressBar progress(n, options.progress.value_or(::isatty(STDERR_FILENO) != 0));

  auto batch_size = [&]() -> size_t {
    if (options.batch_size > 0) return static_cast<size_t>(options.batch_size);
    if (per_element_s <= 0) return 1;
    size_t fair = std::max<size_t>(1, (todo.size() + in_flight.size() - 1) / (2 * in_flight.size()));
    auto target = static_cast<size_t>(0.002 / per_element_s);  // ~2 ms of work per call
    return std::clamp<size_t>(target, 1, fair);
  };

  auto send = [&](int pid) {
    auto batch = std::make_shared<Batch>();
    batch->pid = pid;
    size_t count = std::min(batch_size(), todo.size());
    std::string payload;
    for (size_t j = 0; j < count; ++j) {
      size_t i = todo.front();
      todo.pop_front();
      batch->elements.push_back(i);
      payload += element(i);  // already "u64 length + argument list"
    }
    batch->sent = Clock::now();
    try {
      cluster.call_batch(pid, k, std::move(payload), static_cast<uint32_t>(count),
                         [&mu, &cv, &finished, batch](Reply& r) {
                           std::lock_guard lock(mu);
                           batch->message = r.message;
                           batch->payload = std::move(r.payload);
                           finished.push_back(batch);
                           cv.notify_one();
                         });
    } catch (const Error&) {  // The worker is gone: its elements go back to the queue.
      for (auto it = batch->elements.rbegin(); it != batch->elements.rend(); ++it) {
        todo.push_front(*it);
      }
      throw;
    }
    ++in_flight[pid];
  };

  auto fail_or_retry = [&](size_t i, int pid, const wire::RemoteError& e) {
    Error err = element_error(i, n, pid, *k.name, e);
    size_t attempt = attempts[i]++;
    bool retry = attempt < options.retry_delays.size() &&
                 (!options.retry_check || options.retry_check(err));
    if (retry) {
      retry_at.emplace(Clock::now() + options.retry_delays[attempt], i);
    } else {
      result.errors.insert_or_assign(i, err);
      ++done;
    }
  };

  // Workers added while the pmap runs take part too, as in Julia, whose pmap draws from a
  // pool that addprocs fills: a long pmap under churn (workers dying and being replaced) would
  // otherwise run out of the workers it started with. Pids are never reused, so a dead one
  // cannot come back; the master joins only if it was there from the start.
  auto join_new_workers = [&] {
    std::vector<int> now;
    try {
      now = pool_workers(options.pool);
    } catch (const Error&) {
      return;  // none at the moment
    }
    for (int pid : now) {
      if (pid != 1 && !dead.count(pid) && !in_flight.count(pid)) in_flight[pid] = 0;
    }
  };

  while (done < n) {
    if (!todo.empty() || !retry_at.empty()) join_new_workers();
    for (auto it = retry_at.begin(); it != retry_at.end() && it->first <= Clock::now();) {
      todo.push_front(it->second);
      it = retry_at.erase(it);
    }
    std::vector<int> gone;
    for (auto& [pid, count] : in_flight) {
      if (dead.count(pid)) continue;
      try {
        while (count < 2 && !todo.empty()) send(pid);
      } catch (const Error&) {
        if (count == 0) gone.push_back(pid);  // Its in-flight batches will still report.
        dead.insert(pid);
      }
    }
    for (int pid : gone) in_flight.erase(pid);
    bool any_live = false;
    for (auto& [pid, count] : in_flight) any_live |= !dead.count(pid);
    bool any_busy = false;
    for (auto& [pid, count] : in_flight) any_busy |= count > 0;
    if (!any_live && !any_busy && (!todo.empty() || !retry_at.empty())) {
      wire::RemoteError gone{ErrorKind::Disconnected, "no live worker left to run it", 0, {}};
      for (size_t i : todo) fail_or_retry(i, 0, gone);
      todo.clear();
      for (auto& [when, i] : retry_at) {
        result.errors.insert_or_assign(i, element_error(i, n, 0, *k.name, gone));
        ++done;
      }
      retry_at.clear();
      continue;
    }
    std::shared_ptr<Batch> batch;
    {
      std::unique_lock lock(mu);
      auto ready = [&] { return !finished.empty(); };
      if (retry_at.empty()) cv.wait(lock, ready);
      else cv.wait_until(lock, retry_at.begin()->first, ready);
      if (finished.empty()) continue;
      batch = finished.front();
      finished.pop_front();
    }
    if (auto it = in_flight.find(batch->pid); it != in_flight.end()) {
      if (--it->second == 0 && dead.count(batch->pid)) in_flight.erase(it);
    }
    const auto* res = std::get_if<wire::Result>(&batch->message);
    std::vector<BatchSlot> outcomes;
    wire::RemoteError batch_error{ErrorKind::Internal, "malformed batch result", batch->pid, {}};
    if (res && res->ok) {
      try {
        outcomes = index_batch_results(batch->payload, static_cast<uint32_t>(batch->elements.size()));
      } catch (const Error& e) {
        batch_error.message = e.what();
      }
    } else if (res) {
      batch_error = res->error;
    }
    auto payload_index = static_cast<uint32_t>(result.payloads.size());
    if (!outcomes.empty()) result.payloads.push_back(std::move(batch->payload));
    if (res && !res->ok && res->error.kind == ErrorKind::Disconnected) {
      dead.insert(batch->pid);  // The worker died: the rest of this pmap avoids it.
      if (auto it = in_flight.find(batch->pid); it != in_flight.end() && it->second == 0) {
        in_flight.erase(it);
      }
    }
    if (outcomes.size() == batch->elements.size()) {
      double secs = std::chrono::duration<double>(Clock::now() - batch->sent).count();
      double each = secs / static_cast<double>(batch->elements.size());
      per_element_s = per_element_s <= 0 ? each : 0.5 * (per_element_s + each);
    }
    for (size_t j = 0; j < batch->elements.size(); ++j) {
      size_t i = batch->elements[j];
      if (j < outcomes.size() && outcomes[j].ok) {
        result.values[i] = {payload_index, outcomes[j].offset, outcomes[j].size};
        ++done;
      } else if (j < outcomes.size()) {
        const std::string& text = result.payloads[payload_index];
        wire::RemoteError e{outcomes[j].kind, text.substr(outcomes[j].offset, outcomes[j].size),
                            batch->pid, *k.name};
        fail_or_retry(i, batch->pid, e);
      } else {
        fail_or_retry(i, batch->pid, batch_error);
      }
    }
    progress.update(done);
  }
  progress.update(done, true);
  return result;
}

void throw_all(const std::string& what, const std::vector<Error>& errors) {
  std::string message = what + ": " + std::to_string(errors.size()) + " chunk" +
                        (errors.size() == 1 ? "" : "s") + " failed:";
  for (size_t i = 0; i < errors.size(); ++i) {
    message += "\n  [" + std::to_string(i + 1) + "] " + errors[i].what();
  }
  throw Error(errors.front().kind(), message, errors.front().worker(), errors.front().kernel());
}

std::vector<std::pair<int64_t, int64_t>> split_range(int64_t first, int64_t last, size_t parts) {
  std::vector<std::pair<int64_t, int64_t>> out;
  if (last < first || parts == 0) return out;
  // Julia's splitrange: lengths differ by at most one, the longer chunks first.
  uint64_t len = static_cast<uint64_t>(last - first) + 1;
  uint64_t each = len / parts, extra = len % parts;
  int64_t lo = first;
  for (size_t i = 0; i < parts && lo <= last; ++i) {
    uint64_t size = each + (i < extra ? 1 : 0);
    if (size == 0) break;
    out.emplace_back(lo, lo + static_cast<int64_t>(size) - 1);
    lo += static_cast<int64_t>(size);
  }
  return out;
}

}  // namespace detail

WorkerPool::WorkerPool() : state_(std::make_shared<detail::PoolState>()) {}

WorkerPool::WorkerPool(const std::vector<int>& pids) : WorkerPool() {
  for (int pid : pids) push(pid);
}

void WorkerPool::push(int pid) {
  if (pid == 1) throw Error(ErrorKind::InvalidArgument, "WorkerPool: pid 1 is the master", 1);
  detail::Cluster::instance().info(pid);  // Throws NotFound for an unknown pid.
  std::lock_guard lock(state_->mu);
  if (!state_->members.insert(pid).second) {
    throw Error(ErrorKind::InvalidArgument,
                "WorkerPool: worker " + std::to_string(pid) + " is already in the pool", pid);
  }
  state_->cv.notify_all();
}

std::vector<int> WorkerPool::workers() const {
  std::lock_guard lock(state_->mu);
  auto live = detail::live_members(*state_);
  return {live.begin(), live.end()};
}

int WorkerPool::take() {
  std::unique_lock lock(state_->mu);
  for (;;) {
    auto live = detail::live_members(*state_);
    if (live.empty()) throw Error(ErrorKind::Disconnected, "WorkerPool: no live worker left");
    for (int pid : live) {
      if (!state_->busy.count(pid)) {
        state_->busy.insert(pid);
        return pid;
      }
    }
    // Re-check liveness now and then: a busy worker may die without being given back.
    state_->cv.wait_for(lock, std::chrono::milliseconds(50));
  }
}

void WorkerPool::put(int pid) {
  std::lock_guard lock(state_->mu);
  state_->busy.erase(pid);
  state_->cv.notify_one();
}

bool WorkerPool::isready() const {
  std::lock_guard lock(state_->mu);
  for (int pid : detail::live_members(*state_)) {
    if (!state_->busy.count(pid)) return true;
  }
  return false;
}

WorkerPool& default_worker_pool() {
  static WorkerPool* pool = [] {
    auto* p = new WorkerPool();  // Lives as long as the process, like the cluster.
    p->state_->follows_cluster = true;
    return p;
  }();
  return *pool;
}

Task distributed_for(const Kernel<void(int64_t, int64_t)>& k, int64_t first, int64_t last,
                     const WorkerPool* pool) {
  auto pids = detail::pool_workers(pool);
  auto chunks = detail::split_range(first, last, pids.size());
  std::vector<Future<void>> futures;
  for (size_t i = 0; i < chunks.size(); ++i) {
    futures.push_back(remotecall(k, pids[i], chunks[i].first, chunks[i].second));
  }
  return Task(std::move(futures));
}

void sync(const std::vector<Task>& tasks) {
  std::vector<Error> failures;
  for (const auto& task : tasks) {
    for (const auto& f : task.chunks()) {
      try {
        wait(f);
      } catch (const Error& e) {
        failures.push_back(e);
      }
    }
  }
  if (!failures.empty()) detail::throw_all("sync", failures);
}

void interrupt(const std::vector<int>& pids, std::chrono::milliseconds grace) {
  detail::Cluster::instance().interrupt(pids, grace);
}

void interrupt() {
  auto pids = detail::Cluster::instance().workers();
  if (!pids.empty()) interrupt(pids);
}

}  // namespace dj
