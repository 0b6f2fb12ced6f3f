// dj::SharedArray<T>: Julia's SharedArray. An array of arithmetic T (1 to 3 dimensions) in one
// shared-memory segment that the master and every participating worker on the master's host
// map; passing it to a kernel passes a view of the same memory, nothing is copied.
//
//   dj::SharedArray<double> s({10, 10});                  // on every local worker
//   for (size_t i = 0; i < s.length(); ++i) s[i] = i;     // the master writes...
//   dj::remotecall_wait(square_chunk, 2, s);              // ...a worker squares its share...
//   double x = s(3, 4);                                    // ...and the master sees it.
//
// Memory order: column-major, as in Julia and dj::Matrix: element (i, j, k) of a d0 x d1 x d2
// array is at linear index i + j*d0 + k*d0*d1. Indices are 0-based.
// Ownership: the master creates the segment; every handle (master or kernel) shares it. The
// memory is freed when the last handle in every process is gone; nothing stays in /dev/shm
// after the master ends, however it ends (see docs/ARCHITECTURE.md, "SharedArray").
// Thread-safety: handles may be copied and destroyed from any thread; element access is plain
// memory access (writes to one element from two processes race, as in Julia).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "dj/error.hpp"
#include "dj/serialize.hpp"

namespace dj {

int myid();

namespace detail {
class Segment;  // One mapping of a segment in this process (shm/segment.hpp).

// What a process knows about one SharedArray; shared by every handle copy in the process.
struct SharedState {
  std::string name;           // POSIX shared-memory name, "/dj-<master os pid>-<n>".
  std::string element;        // Element type name ("f64"), checked when a kernel receives it.
  std::vector<size_t> dims;   // 1 to 3 extents.
  std::vector<int> pids;      // Participating dj pids, in order (procs(S)).
  std::string host_identity;  // Host whose memory holds it (boot id + /dev/shm device).
  void* data = nullptr;       // This process's mapping; null only in a descriptor.
  size_t length = 0;          // Number of elements.
  // Keeps the mapping alive. Owners: every SharedState of this segment in this process, and on a
  // worker its table of mappings (until the master says UnmapShared).
  std::shared_ptr<Segment> mapping;
};

// Master only: creates the segment, maps it on every pid, unlinks its name. See SharedArray.
std::shared_ptr<const SharedState> shared_create(const std::string& element, size_t element_bytes,
                                                 std::vector<size_t> dims, std::vector<int> pids);
// Encodes the descriptor of `state` (name, type, dims, pids, host). Throws for an empty handle.
void shared_write(ser::Writer& w, const std::shared_ptr<const SharedState>& state);
// Decodes a descriptor and attaches this process's mapping of it. Throws: InvalidArgument for
// another element type or host, NotFound when the segment is not mapped in this process.
std::shared_ptr<const SharedState> shared_read(ser::Reader& r, const std::string& element,
                                               size_t element_bytes);
}  // namespace detail

// A half-open range [first, last) of 0-based linear indices; iterate it with
// `for (size_t i : range)`.
struct IndexRange {
  size_t first = 0;
  size_t last = 0;
  size_t size() const { return last - first; }
  bool empty() const { return last == first; }
  struct iterator {
    size_t i;
    size_t operator*() const { return i; }
    iterator& operator++() { ++i; return *this; }
    bool operator==(const iterator&) const = default;
  };
  iterator begin() const { return {first}; }
  iterator end() const { return {last}; }
  bool operator==(const IndexRange&) const = default;
};
// Crosses the wire as IndexRange{u64,u64} (DArray init kernels take std::vector<IndexRange>).
DJ_STRUCT(IndexRange, first, last)

// Julia's split of `length` elements among `parts` processes: the share of the process at
// 1-based position `index` (each gets length/parts, the last also the remainder; with fewer
// elements than processes the first ones get one each). Empty for index 0 (not participating).
IndexRange split_range(size_t length, size_t parts, size_t index);

template <class T>
class SharedArray {
  static_assert(std::is_arithmetic_v<T>, "dj::SharedArray holds arithmetic types only");

 public:
  // An empty handle (no memory); assign a real one to use it.
  SharedArray() = default;

  // Creates a zero-filled array of `dims` (1 to 3 extents) mapped on the master and on `pids`
  // (default, or empty: every worker on the master's host, or the master alone without workers).
  // Throws: InvalidArgument (0 or more than 3 dims, a size overflow, a repeated pid, a pid on
  // another host: the message names the pid and its host), NotFound (unknown pid), Disconnected
  // (a pid is gone), ResourceExhausted (does not fit in /dev/shm: the message names both sizes).
  // Blocks: until every pid has mapped it. Only on the master.
  explicit SharedArray(std::vector<size_t> dims, std::vector<int> pids = {})
      : state_(detail::shared_create(ser::type_name<T>(), sizeof(T), std::move(dims),
                                     std::move(pids))) {}

  // As above, then runs the kernel `init` (a dj::Kernel<void(SharedArray<T>)>) with this array on
  // every pid at once, as Julia's `init`; it normally fills localindices(S).
  // Throws: as above, and the first init call's error. Blocks: until every init call is done.
  template <class Init>
  SharedArray(std::vector<size_t> dims, std::vector<int> pids, const Init& init)
      : SharedArray(std::move(dims), std::move(pids)) {
    std::vector<decltype(remotecall(init, 1, *this))> calls;
    for (int pid : procs()) calls.push_back(remotecall(init, pid, *this));
    for (auto& call : calls) wait(call);  // Throws the first failure; later ones still ran.
  }

  // Number of elements, extents, and number of extents.
  size_t length() const { return state().length; }
  const std::vector<size_t>& dims() const { return state().dims; }
  size_t ndims() const { return state().dims.size(); }

  // Element at linear index i (unchecked, like std::span).
  T& operator[](size_t i) const { return data()[i]; }
  // Element (i, j) / (i, j, k), column-major (unchecked).
  T& operator()(size_t i, size_t j) const { return data()[i + j * dims()[0]]; }
  T& operator()(size_t i, size_t j, size_t k) const {
    return data()[i + (j + k * dims()[1]) * dims()[0]];
  }
  T* data() const { return static_cast<T*>(state().data); }
  // All elements, in memory order. Lifetime: valid while some handle to the array exists.
  std::span<T> view() const { return {data(), length()}; }

  // Participating dj pids (Julia's procs(S)).
  const std::vector<int>& procs() const { return state().pids; }
  // 1-based position of myid() in procs(), 0 when this process does not participate.
  int indexpids() const {
    const auto& p = procs();
    for (size_t i = 0; i < p.size(); ++i) {
      if (p[i] == myid()) return static_cast<int>(i + 1);
    }
    return 0;
  }
  // This process's contiguous share of the linear indices (empty when not participating).
  IndexRange localindices() const {
    return split_range(length(), procs().size(), static_cast<size_t>(indexpids()));
  }
  // Name of the segment (diagnostics; it is unlinked from /dev/shm once every pid mapped it).
  const std::string& segment_name() const { return state().name; }
  bool empty() const { return !state_; }

  // A handle to an attached state (used by the codec).
  struct FromState {};
  SharedArray(FromState, std::shared_ptr<const detail::SharedState> state)
      : state_(std::move(state)) {}
  const std::shared_ptr<const detail::SharedState>& shared_state() const { return state_; }

 private:
  const detail::SharedState& state() const {
    if (!state_) throw Error(ErrorKind::InvalidArgument, "dj: use of an empty SharedArray");
    return *state_;
  }
  std::shared_ptr<const detail::SharedState> state_;
};

// Julia's sdata(S): the elements as a span over the shared memory (no copy).
template <class T>
std::span<T> sdata(const SharedArray<T>& s) { return s.view(); }
template <class T>
IndexRange localindices(const SharedArray<T>& s) { return s.localindices(); }
template <class T>
int indexpids(const SharedArray<T>& s) { return s.indexpids(); }
template <class T>
const std::vector<int>& procs(const SharedArray<T>& s) { return s.procs(); }

namespace detail {
template <class T>
struct IsSharedArray : std::false_type {};
template <class T>
struct IsSharedArray<SharedArray<T>> : std::true_type {};
}  // namespace detail

namespace ser {
// A SharedArray travels as a small descriptor; the receiver attaches its own mapping.
template <class T>
struct Codec<SharedArray<T>> {
  static std::string name() { return "shared<" + Codec<T>::name() + ">"; }
  static constexpr size_t kMinBytes = 8;
  static void write(Writer& w, const SharedArray<T>& s) {
    detail::shared_write(w, s.shared_state());
  }
  static SharedArray<T> read(Reader& r) {
    return SharedArray<T>(typename SharedArray<T>::FromState{},
                          detail::shared_read(r, type_name<T>(), sizeof(T)));
  }
};
}  // namespace ser

}  // namespace dj
