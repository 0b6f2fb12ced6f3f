// DArray<T>: Julia's DistributedArrays.jl for dj. Each chunk lives on one process, and work goes
// to the chunks: map, reduce and sum run where the data is and only results move.
//
//   dj::addprocs(4);
//   std::vector<dj::Matrix<double>> M = ...;           // ten 200x200 matrices
//   dj::DArray<dj::Matrix<double>> D = dj::distribute(M); // chunks of 3,3,2,2 on workers 2..5
//   D.localindices(3);                                  // {[3,6)}: what worker 3 holds
//   auto S = dj::map(svdvals, D);                       // DArray<vector<double>>, no matrix moved
//   std::vector<std::vector<double>> s = S.collect();   // results back to the master
//
// Layout: an N-dimensional array of `dims` (column-major, like Julia) is cut into a grid of
// chunks, `dist[d]` along dimension d (default: the worker count factored over the largest
// dimensions, as Julia's defaultdist; each dimension split evenly, larger pieces first). Chunk k
// (column-major over the grid) is held by pids[k] as a std::vector<T> of its elements, itself
// column-major. Indices are 0-based and half-open (IndexRange).
//
// On a worker, a kernel works on its chunk in place: pass D.localpart(pid) (a Future) to a
// kernel running on pid; it is read where it lives, nothing travels.
//
// Lifetime: the chunks are freed on their workers when the last DArray copy is dropped or
// close() is called. Chunks are values: map and the like build new DArrays.
// Errors: a chunk whose worker died fails every operation that needs it, naming the chunk, its
// index ranges and its worker (kind Disconnected).
#pragma once

#include <cstdint>
#include <memory>
#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "dj/dj.hpp"

namespace dj {

namespace detail {
// The chunk grid (runtime/darray.cpp).
struct DArrayLayout {
  std::vector<size_t> dims;
  std::vector<size_t> dist;                // chunks along each dimension
  std::vector<std::vector<size_t>> cuts;   // per dimension: dist[d] + 1 boundaries
  std::vector<int> pids;                   // holder of chunk k
  size_t length() const;
  size_t chunk_length(size_t k) const;
  std::vector<IndexRange> chunk_ranges(size_t k) const;
  // Chunk holding the element at `index` and the element's offset inside that chunk.
  std::pair<size_t, size_t> locate(const std::vector<size_t>& index) const;
  // For each element of chunk k in its (column-major) order, its column-major global offset.
  std::vector<size_t> chunk_offsets(size_t k) const;
  // "chunk k (indices [a, b) x [c, d)) on worker p"
  std::string describe(size_t k) const;
};
// Checks dims, pids (default: workers()) and dist (default: Julia's defaultdist).
// Throws: InvalidArgument naming the bad shape, pid or distribution.
DArrayLayout make_layout(std::vector<size_t> dims, std::vector<int> pids,
                         std::vector<size_t> dist);
// Rethrows `e` (same kind) as the failure of chunk k of `layout`, naming it.
[[noreturn]] void throw_chunk_error(const DArrayLayout& layout, size_t k, const Error& e);
std::shared_ptr<RefState> store_on(int pid, std::string bytes);
const std::string& no_kernel_name();
uint64_t random_seed();

template <class T>
struct DArrayState {
  DArrayLayout layout;
  std::vector<Future<std::vector<T>>> chunks;  // empty once closed
  std::mutex mu;
};

// Runs built-in chunk operation `op` (wire::ChunkOp) with element type T.
template <class T>
CallTarget builtin_target(uint8_t op) {
  static const std::string signature = "(" + ser::type_name<T>() + ")";
  return {&no_kernel_name(), 0, &signature, op};
}
enum : uint8_t { kChunkMap = 1, kChunkReduce = 2, kChunkSlice = 3, kChunkSum = 4,
                 kChunkFill = 5, kChunkRand = 6, kChunkLength = 7 };
}  // namespace detail

template <class T>
class DArray {
 public:
  DArray() = default;

  const std::vector<size_t>& dims() const { return state().layout.dims; }
  size_t length() const { return state().layout.length(); }
  // Chunks along each dimension.
  const std::vector<size_t>& dist() const { return state().layout.dist; }
  // The process holding each chunk, in chunk order (Julia's procs(D)).
  const std::vector<int>& procs() const { return state().layout.pids; }
  // The index ranges of pid's chunk, one per dimension; empty if pid holds no chunk.
  std::vector<IndexRange> localindices(int pid) const {
    const auto& l = state().layout;
    for (size_t k = 0; k < l.pids.size(); ++k) {
      if (l.pids[k] == pid) return l.chunk_ranges(k);
    }
    return {};
  }
  // pid's chunk as a Future: a kernel on pid taking std::vector<T> reads it in place.
  // Throws: InvalidArgument if pid holds no chunk.
  Future<std::vector<T>> localpart(int pid) const {
    const auto& l = state().layout;
    for (size_t k = 0; k < l.pids.size(); ++k) {
      if (l.pids[k] == pid) return chunk(k);
    }
    throw Error(ErrorKind::InvalidArgument,
                "DArray: process " + std::to_string(pid) + " holds no chunk of this DArray");
  }
  size_t nchunks() const { return state().layout.pids.size(); }
  Future<std::vector<T>> chunk(size_t k) const {
    auto& s = state();
    std::lock_guard lock(s.mu);
    if (s.chunks.empty()) throw Error(ErrorKind::InvalidArgument, "DArray: used after close()");
    return s.chunks.at(k);
  }

  // The whole array on the master, column-major. Blocks; throws naming a lost chunk.
  std::vector<T> collect() const {
    const auto& l = state().layout;
    std::vector<T> out(l.length());
    for (size_t k = 0; k < nchunks(); ++k) {
      std::vector<T> part = fetch_chunk(k);
      auto offsets = l.chunk_offsets(k);
      for (size_t i = 0; i < part.size(); ++i) out[offsets[i]] = std::move(part[i]);
    }
    return out;
  }
  // One element, fetching only it. Throws: InvalidArgument (index outside dims).
  T at(const std::vector<size_t>& index) const {
    const auto& l = state().layout;
    auto [k, offset] = l.locate(index);
    auto values = slice(k, offset, 1);
    return std::move(values.at(0));
  }
  T operator[](size_t i) const { return at(linear_to_index(i)); }
  // Elements [r.first, r.last) of a 1-dimensional DArray, fetching only those.
  std::vector<T> read(IndexRange r) const {
    const auto& l = state().layout;
    if (l.dims.size() != 1) {
      throw Error(ErrorKind::InvalidArgument, "DArray::read(range) needs a 1-dimensional DArray");
    }
    if (r.first > r.last || r.last > l.dims[0]) {
      throw Error(ErrorKind::InvalidArgument,
                  "DArray::read: range [" + std::to_string(r.first) + ", " +
                      std::to_string(r.last) + ") is outside [0, " + std::to_string(l.dims[0]) +
                      ")");
    }
    std::vector<T> out;
    out.reserve(r.size());
    for (size_t k = 0; k < nchunks(); ++k) {
      size_t a = l.cuts[0][k], b = l.cuts[0][k + 1];
      size_t lo = std::max(a, r.first), hi = std::min(b, r.last);
      if (lo >= hi) continue;
      for (auto& v : slice(k, lo - a, hi - lo)) out.push_back(std::move(v));
    }
    return out;
  }

  // Frees every chunk now (also done when the last copy is dropped). Copies become unusable.
  void close() {
    if (!state_) return;
    std::vector<Future<std::vector<T>>> gone;
    std::lock_guard lock(state_->mu);
    gone.swap(state_->chunks);
  }
  bool closed() const {
    std::lock_guard lock(state().mu);
    return state().chunks.empty() && !state().layout.pids.empty();
  }

  // Assembles a DArray from a layout and one Future per chunk (used by the functions below).
  DArray(detail::DArrayLayout layout, std::vector<Future<std::vector<T>>> chunks)
      : state_(std::make_shared<detail::DArrayState<T>>()) {
    state_->layout = std::move(layout);
    state_->chunks = std::move(chunks);
  }
  const detail::DArrayLayout& layout() const { return state().layout; }
  // Fetches chunk k, naming it if that fails.
  std::vector<T> fetch_chunk(size_t k) const {
    auto f = chunk(k);
    try {
      return fetch(f);
    } catch (const Error& e) {
      detail::throw_chunk_error(state().layout, k, e);
    }
  }

 private:
  detail::DArrayState<T>& state() const {
    if (!state_) throw Error(ErrorKind::InvalidArgument, "DArray: use of an empty DArray");
    return *state_;
  }
  std::vector<size_t> linear_to_index(size_t i) const {
    const auto& dims = state().layout.dims;
    std::vector<size_t> index(dims.size());
    for (size_t d = 0; d < dims.size(); ++d) {
      index[d] = dims[d] ? i % dims[d] : 0;
      i = dims[d] ? i / dims[d] : 0;
    }
    if (i != 0) {
      throw Error(ErrorKind::InvalidArgument,
                  "DArray: linear index is outside the " + std::to_string(length()) + " elements");
    }
    return index;
  }
  std::vector<T> slice(size_t k, size_t first, size_t count) const {
    auto f = chunk(k);
    int pid = state().layout.pids[k];
    detail::ArgBlob args;
    args.add_ref(ref_of(f));
    args.add_value<uint64_t>(first);
    args.add_value<uint64_t>(count);
    try {
      return ser::from_bytes<std::vector<T>>(
          detail::call_fetch(pid, detail::builtin_target<T>(detail::kChunkSlice), std::move(args)));
    } catch (const Error& e) {
      detail::throw_chunk_error(state().layout, k, e);
    }
  }

  std::shared_ptr<detail::DArrayState<T>> state_;
};

// Julia's procs(D) and localindices(D) as seen from pid.
template <class T>
const std::vector<int>& procs(const DArray<T>& d) { return d.procs(); }
template <class T>
std::vector<IndexRange> localindices(const DArray<T>& d, int pid) { return d.localindices(pid); }

namespace detail {
// Starts `make(k)` (a store-mode call returning the chunk's Future) for every chunk, then waits
// for all of them; the first failure is rethrown naming its chunk.
template <class T, class Make>
DArray<T> build_darray(DArrayLayout layout, Make make) {
  std::vector<Future<std::vector<T>>> chunks;
  for (size_t k = 0; k < layout.pids.size(); ++k) {
    try {
      chunks.push_back(make(k));
    } catch (const Error& e) {
      throw_chunk_error(layout, k, e);
    }
  }
  for (size_t k = 0; k < chunks.size(); ++k) {
    try {
      wait(chunks[k]);
    } catch (const Error& e) {
      throw_chunk_error(layout, k, e);
    }
  }
  return DArray<T>(std::move(layout), std::move(chunks));
}

// Per-chunk results of a store-mode operation (started everywhere first, so chunks work in
// parallel), fetched in chunk order; chunks for which `skip(k)` is true are left out.
template <class R, class T, class Start>
std::vector<R> per_chunk(const DArray<T>& d, Start start) {
  std::vector<std::pair<size_t, Future<R>>> running;
  for (size_t k = 0; k < d.nchunks(); ++k) {
    if (d.layout().chunk_length(k) == 0) continue;
    try {
      running.emplace_back(k, start(k));
    } catch (const Error& e) {
      throw_chunk_error(d.layout(), k, e);
    }
  }
  std::vector<R> out;
  for (auto& [k, f] : running) {
    try {
      out.push_back(fetch(f));
    } catch (const Error& e) {
      throw_chunk_error(d.layout(), k, e);
    }
  }
  return out;
}
}  // namespace detail

// Julia's distribute(A): `data` (column-major, of shape `dims`; default: 1-dimensional) cut into
// chunks and sent to `pids` (default: workers()). Throws: InvalidArgument (shape, pids, dist).
template <class T>
DArray<T> distribute(const std::vector<T>& data, std::vector<size_t> dims = {},
                     std::vector<int> pids = {}, std::vector<size_t> dist = {}) {
  if (dims.empty()) dims = {data.size()};
  auto layout = detail::make_layout(std::move(dims), std::move(pids), std::move(dist));
  if (layout.length() != data.size()) {
    throw Error(ErrorKind::InvalidArgument,
                "distribute: " + std::to_string(data.size()) + " elements do not fill dims of " +
                    std::to_string(layout.length()) + " elements");
  }
  return detail::build_darray<T>(layout, [&](size_t k) {
    std::vector<T> part;
    for (size_t offset : layout.chunk_offsets(k)) part.push_back(data[offset]);
    return make_future<std::vector<T>>(detail::store_on(layout.pids[k], ser::to_bytes(part)));
  });
}

// A DArray of `dims` with every element equal to `value`, made on the workers (nothing of it
// is sent but the value).
template <class T>
DArray<T> dfill(const T& value, std::vector<size_t> dims, std::vector<int> pids = {},
                std::vector<size_t> dist = {}) {
  auto layout = detail::make_layout(std::move(dims), std::move(pids), std::move(dist));
  return detail::build_darray<T>(layout, [&](size_t k) {
    detail::ArgBlob args;
    args.add_value<uint64_t>(layout.chunk_length(k));
    args.add_value<T>(value);
    return make_future<std::vector<T>>(detail::call_store(
        layout.pids[k], detail::builtin_target<T>(detail::kChunkFill), std::move(args)));
  });
}
template <class T = double>
DArray<T> dzeros(std::vector<size_t> dims, std::vector<int> pids = {}, std::vector<size_t> dist = {}) {
  return dfill<T>(T{}, std::move(dims), std::move(pids), std::move(dist));
}
template <class T = double>
DArray<T> dones(std::vector<size_t> dims, std::vector<int> pids = {}, std::vector<size_t> dist = {}) {
  return dfill<T>(T{1}, std::move(dims), std::move(pids), std::move(dist));
}
// Uniform doubles in [0, 1), generated on the workers (a different stream per chunk).
inline DArray<double> drand(std::vector<size_t> dims, std::vector<int> pids = {},
                            std::vector<size_t> dist = {}) {
  auto layout = detail::make_layout(std::move(dims), std::move(pids), std::move(dist));
  return detail::build_darray<double>(layout, [&](size_t k) {
    detail::ArgBlob args;
    args.add_value<uint64_t>(layout.chunk_length(k));
    args.add_value<uint64_t>(detail::random_seed());
    return make_future<std::vector<double>>(detail::call_store(
        layout.pids[k], detail::builtin_target<double>(detail::kChunkRand), std::move(args)));
  });
}

// Julia's DArray(init, dims, procs, dist): each chunk is made on its worker by
// init(localindices) (one IndexRange per dimension), which must return exactly the chunk's
// number of elements, column-major. Throws: InvalidArgument (shape; a chunk of the wrong
// length, naming it), the kernel's error naming the chunk.
template <class T>
DArray<T> darray(const Kernel<std::vector<T>(std::vector<IndexRange>)>& init,
                 std::vector<size_t> dims, std::vector<int> pids = {},
                 std::vector<size_t> dist = {}) {
  auto layout = detail::make_layout(std::move(dims), std::move(pids), std::move(dist));
  DArray<T> d = detail::build_darray<T>(layout, [&](size_t k) {
    return remotecall(init, layout.pids[k], layout.chunk_ranges(k));
  });
  for (size_t k = 0; k < d.nchunks(); ++k) {
    detail::ArgBlob args;
    args.add_ref(ref_of(d.chunk(k)));
    auto n = ser::from_bytes<uint64_t>(detail::call_fetch(
        layout.pids[k], detail::builtin_target<T>(detail::kChunkLength), std::move(args)));
    if (n != layout.chunk_length(k)) {
      throw Error(ErrorKind::InvalidArgument,
                  "darray: init kernel '" + init.name() + "' returned " + std::to_string(n) +
                      " elements for " + layout.describe(k) + ", which has " +
                      std::to_string(layout.chunk_length(k)));
    }
  }
  return d;
}

// f on every element, run where each chunk lives; the result has the same layout.
template <class U, class T>
DArray<U> map(const Kernel<U(T)>& f, const DArray<T>& d) {
  return detail::build_darray<U>(d.layout(), [&](size_t k) {
    detail::ArgBlob args;
    args.add_ref(ref_of(d.chunk(k)));
    auto target = f.target();
    target.chunk_op = detail::kChunkMap;
    return make_future<std::vector<U>>(
        detail::call_store(d.layout().pids[k], target, std::move(args)));
  });
}

// Folds every element with op (each chunk on its worker, then the chunk results on the
// master, in chunk order). Throws: InvalidArgument for an empty DArray.
template <class T>
T reduce(const Kernel<T(T, T)>& op, const DArray<T>& d) {
  auto target = op.target();
  target.chunk_op = detail::kChunkReduce;
  auto parts = detail::per_chunk<T>(d, [&](size_t k) {
    detail::ArgBlob args;
    args.add_ref(ref_of(d.chunk(k)));
    return make_future<T>(detail::call_store(d.layout().pids[k], target, std::move(args)));
  });
  if (parts.empty()) throw Error(ErrorKind::InvalidArgument, "reduce over an empty DArray");
  T acc = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) acc = remotecall_fetch(op, 1, acc, parts[i]);
  return acc;
}

// reduce(op, map(f, d)); the mapped chunks are freed afterwards.
template <class U, class T>
U mapreduce(const Kernel<U(T)>& f, const Kernel<U(U, U)>& op, const DArray<T>& d) {
  return reduce(op, map(f, d));
}

// Sum of an arithmetic DArray, each chunk summed in place on its worker (no kernel needed).
template <class T>
T sum(const DArray<T>& d) {
  static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>,
                "dj::sum needs an arithmetic element type");
  auto parts = detail::per_chunk<T>(d, [&](size_t k) {
    detail::ArgBlob args;
    args.add_ref(ref_of(d.chunk(k)));
    return make_future<T>(detail::call_store(
        d.layout().pids[k], detail::builtin_target<T>(detail::kChunkSum), std::move(args)));
  });
  T acc{};
  for (const T& p : parts) acc += p;
  return acc;
}

}  // namespace dj
