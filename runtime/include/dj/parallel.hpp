// High-level parallelism (Distributed.jl's pmap, @distributed, @sync, WorkerPool, interrupt).
// Included by dj/dj.hpp; read dj.hpp first.
//
//   auto sq = plugin.kernel<double(double)>("square");
//   std::vector<double> ys = dj::pmap(sq, xs);                          // load-balanced map
//   auto heads = plugin.kernel<int64_t(int64_t, int64_t)>("count_heads");   // over first..last
//   int64_t n = dj::distributed_reduce(heads, 1, 200'000'000, std::plus<>());  // @distributed (+)
#pragma once

#include "dj/dj.hpp"  // (dj.hpp includes this file at its end; either order works)

#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dj {

namespace detail {
struct PoolState;
}

// A set of workers that calls borrow one at a time (Julia's WorkerPool). Copies share the pool.
// Thread-safety: all members.
class WorkerPool {
 public:
  // Empty pool; add workers with push.
  WorkerPool();
  explicit WorkerPool(const std::vector<int>& pids);
  // Adds a worker (Julia's push!). Throws: InvalidArgument for pid 1 or a pid already in it.
  void push(int pid);
  // Every worker of the pool, busy or free, that is still alive.
  std::vector<int> workers() const;
  // Takes a free worker, waiting for one. Throws: Disconnected when the pool has no live worker.
  // Blocks: until a worker is free.
  int take();
  // Gives a worker back (after take). Unknown or dead pids are ignored.
  void put(int pid);
  // Whether a worker is free now. Never blocks.
  bool isready() const;

 private:
  friend WorkerPool& default_worker_pool();
  std::shared_ptr<detail::PoolState> state_;
};

// All workers (pid 1 while there are none), following addprocs and rmprocs.
WorkerPool& default_worker_pool();

// A WorkerPool whose calls reuse Cached arguments on each worker (Julia's CachingPool):
//   dj::CachingPool pool(dj::workers());
//   auto big = pool.cache(matrix);            // shipped to a worker on its first call there
//   for (...) dj::remotecall(k, pool, big, i);
class CachingPool : public WorkerPool {
 public:
  using WorkerPool::WorkerPool;
  template <class T>
  Cached<T> cache(const T& value) const { return Cached<T>(value); }
};

// Runs k(args...) on a free worker of `pool`, which is given back when the call completes.
template <class R, class... A, class... Args>
Future<R> remotecall(const Kernel<R(A...)>& k, WorkerPool& pool, const Args&... args);
template <class R, class... A, class... Args>
R remotecall_fetch(const Kernel<R(A...)>& k, WorkerPool& pool, const Args&... args);

// Options of pmap, with Distributed.jl's meaning.
struct PmapOptions {
  // Elements per call; 0 = automatic: batches grow until one takes about 2 ms, so tiny tasks
  // are batched and long ones run one per call.
  int batch_size = 0;
  // Workers to run on (default: all workers, or the master alone when there are none).
  const WorkerPool* pool = nullptr;
  // One more attempt per entry (waiting that long first), for elements whose call failed,
  // including because their worker died (they then run on a live worker).
  std::vector<std::chrono::milliseconds> retry_delays;
  // Which errors to retry (default: all). Called on the master.
  std::function<bool(const Error&)> retry_check;
  // Progress bar on stderr (count, rate, ETA). Default: on when stderr is a terminal.
  std::optional<bool> progress;
};

namespace detail {
// pmap's elements, encoded back to back in one buffer, each as the batch payload wants it
// (u64 length, then a one-argument list): a batch is built with one copy per element and no
// allocation.
struct PmapArgs {
  std::string buffer;
  std::vector<size_t> offsets;  // element i is buffer[offsets[i], offsets[i+1] or end)
  template <class A, class X>
  void add(const X& x) {
    offsets.push_back(buffer.size());
    if constexpr (std::is_same_v<X, A>) {
      // The common case, written in place: u64 list length, u32 count 1, u8 tag 0 (a value),
      // u64 value length, the value (call_exec.hpp's argument list).
      ser::Writer counter;
      ser::Codec<A>::write(counter, x);
      uint64_t value = counter.size(), list = 4 + 1 + 8 + value;
      uint32_t one = 1;
      size_t at = buffer.size();
      buffer.resize(at + 8 + list);
      char* p = buffer.data() + at;
      std::memcpy(p, &list, 8);
      std::memcpy(p + 8, &one, 4);
      p[12] = 0;
      std::memcpy(p + 13, &value, 8);
      ser::Writer w(reinterpret_cast<unsigned char*>(p + 21));
      ser::Codec<A>::write(w, x);
    } else {
      ArgBlob blob;
      add_arg<A>(blob, 0, x);
      uint64_t len = blob.bytes.size();
      buffer.append(reinterpret_cast<const char*>(&len), sizeof len);
      buffer += blob.bytes;
    }
  }
};
struct PmapResult {
  std::vector<std::string> payloads;  // one per completed batch
  struct Slot {
    uint32_t payload = 0;
    size_t offset = 0, size = 0;
  };
  std::vector<Slot> values;                  // where element i's encoded result is
  std::map<size_t, Error> errors;  // the elements that failed for good (few: kept sparse)
  template <class R>
  R decode(size_t i) const {
    const Slot& s = values[i];
    return ser::from_bytes<R>(
        reinterpret_cast<const unsigned char*>(payloads[s.payload].data()) + s.offset, s.size);
  }
};
PmapResult pmap_run(const CallTarget& k, PmapArgs&& args, const PmapOptions& options);
std::vector<int> pool_workers(const WorkerPool* pool);
[[noreturn]] void throw_all(const std::string& what, const std::vector<Error>& errors);
std::vector<std::pair<int64_t, int64_t>> split_range(int64_t first, int64_t last, size_t parts);
}  // namespace detail

// Applies k to every element, in parallel over the workers, and returns the results in input
// order. Throws: the first failed element's error, naming its index, worker and kernel (after
// retries). Blocks: until every element is done.
template <class R, class A, class C>
std::vector<R> pmap(const Kernel<R(A)>& k, const C& collection, const PmapOptions& options = {}) {
  return pmap(k, collection, options, [](const Error& e) -> R { throw e; });
}

// As above, but an element that fails for good becomes on_error(error) instead of an error
// (a worker's death included, unlike Julia's julia#44465).
template <class R, class A, class C, class OnError>
std::vector<R> pmap(const Kernel<R(A)>& k, const C& collection, const PmapOptions& options,
                    OnError on_error) {
  detail::PmapArgs args;
  for (const auto& x : collection) args.add<A>(x);
  detail::PmapResult r = detail::pmap_run(k.target(), std::move(args), options);
  std::vector<R> out;
  out.reserve(r.values.size());
  for (size_t i = 0; i < r.values.size(); ++i) {
    auto failed = r.errors.empty() ? r.errors.end() : r.errors.find(i);
    if (failed != r.errors.end()) out.push_back(on_error(failed->second));
    else out.push_back(r.decode<R>(i));
  }
  return out;
}

// The pending chunks of a non-blocking distributed loop (Julia's @distributed for).
class Task {
 public:
  explicit Task(std::vector<Future<void>> chunks) : chunks_(std::move(chunks)) {}
  const std::vector<Future<void>>& chunks() const { return chunks_; }

 private:
  std::vector<Future<void>> chunks_;
};

// Julia's `@distributed for i in first:last` (inclusive): splits the range evenly into one
// contiguous chunk per worker and runs k(chunk_first, chunk_last) on each. Returns at once.
Task distributed_for(const Kernel<void(int64_t, int64_t)>& k, int64_t first, int64_t last,
                     const WorkerPool* pool = nullptr);

// Julia's @sync: waits for every chunk of every task. Throws: one Error listing every failed
// chunk (all of them, not the first), with the first one's kind. Blocks.
void sync(const std::vector<Task>& tasks);
inline void sync(const Task& task) { sync(std::vector<Task>{task}); }

// Julia's `@distributed (reduce) for i in first:last`: runs k(chunk_first, chunk_last) on one
// contiguous chunk per worker (each chunk reduces its own range) and reduces the chunk results
// on the master, in range order. Throws like sync. Blocks.
template <class R, class Reduce>
R distributed_reduce(const Kernel<R(int64_t, int64_t)>& k, int64_t first, int64_t last,
                     Reduce reduce, const WorkerPool* pool = nullptr) {
  auto pids = detail::pool_workers(pool);
  auto chunks = detail::split_range(first, last, pids.size());
  std::vector<Future<R>> parts;
  for (size_t i = 0; i < chunks.size(); ++i) {
    parts.push_back(remotecall(k, pids[i], chunks[i].first, chunks[i].second));
  }
  std::vector<Error> failures;
  std::optional<R> total;
  for (auto& f : parts) {
    try {
      R v = fetch(f);
      total = total ? reduce(std::move(*total), std::move(v)) : std::move(v);
    } catch (const Error& e) {
      failures.push_back(e);
    }
  }
  if (!failures.empty()) detail::throw_all("distributed_reduce", failures);
  if (!total) throw Error(ErrorKind::InvalidArgument, "distributed_reduce: empty range");
  return std::move(*total);
}

// Cancels the kernels running (and queued) on these workers: their calls fail with kind
// Cancelled and the workers take new work. A kernel sees dj::interrupted() turn true; one that
// has not returned after `grace` has its worker killed and replaced (a message says so).
// Throws: InvalidArgument for pid 1, NotFound for unknown pids. Blocks: up to `grace`.
void interrupt(const std::vector<int>& pids,
               std::chrono::milliseconds grace = std::chrono::milliseconds(2000));
void interrupt();  // every worker

template <class R, class... A, class... Args>
Future<R> remotecall(const Kernel<R(A...)>& k, WorkerPool& pool, const Args&... args) {
  int pid = pool.take();
  try {
    Future<R> f = remotecall(k, pid, args...);
    detail::on_ready(ref_of(f), [pool, pid]() mutable { pool.put(pid); });
    return f;
  } catch (...) {
    pool.put(pid);
    throw;
  }
}

template <class R, class... A, class... Args>
R remotecall_fetch(const Kernel<R(A...)>& k, WorkerPool& pool, const Args&... args) {
  int pid = pool.take();
  struct GiveBack {
    WorkerPool& pool;
    int pid;
    ~GiveBack() { pool.put(pid); }
  } give_back{pool, pid};
  return remotecall_fetch(k, pid, args...);
}

}  // namespace dj
