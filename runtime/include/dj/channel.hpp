// RemoteChannel<T>: Distributed.jl's RemoteChannel, a bounded FIFO living on one process and
// usable from any process (the master, or kernels on workers that receive it as an argument).
// Included by dj/dj.hpp and dj/kernel.hpp.
//
//   dj::RemoteChannel<int64_t> jobs(16, 2);  // 16 slots, owned by worker 2
//   dj::remote_do(producer, 3, jobs);        // a kernel on worker 3 puts into it
//   int64_t x = jobs.take();                 // the master takes (blocks until an item)
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "dj/error.hpp"
#include "dj/serialize.hpp"

namespace dj {

int myid();

namespace detail {
struct ChannelRef {
  int32_t owner = 0;
  uint64_t id = 0;
};
// Operation codes, in dj.capnp's ChannelOpKind order.
enum class ChannelCall : uint8_t { kCreate, kPut, kTake, kFetch, kIsReady, kClose, kWait, kRelease };
ChannelRef channel_create(int owner, uint64_t capacity);
// Runs an operation from this process, wherever the channel lives. Throws dj::Error.
std::string channel_call(const ChannelRef& ref, ChannelCall op, std::string item,
                         std::optional<std::chrono::milliseconds> timeout);
void channel_release(const ChannelRef& ref) noexcept;
}  // namespace detail

using Timeout = std::optional<std::chrono::milliseconds>;

// Lifetime: a channel created on the master is freed when the master's last handle to it is
// dropped; one created inside a kernel lives as long as its worker. Handles a kernel receives
// as arguments borrow the channel. If the owner process dies, every operation fails with
// Disconnected (none hangs).
template <class T>
class RemoteChannel {
 public:
  // A channel of `capacity` items on process `pid` (0: this process).
  // Throws: InvalidArgument (capacity 0), NotFound/Disconnected (pid). Blocks: one round trip.
  explicit RemoteChannel(uint64_t capacity = 1, int pid = 0) {
    auto ref = detail::channel_create(pid == 0 ? myid() : pid, capacity);
    handle_ = std::make_shared<Handle>(ref, myid() == 1);
  }

  // Appends an item. Blocks: while the channel is full (up to `timeout`: then Cancelled).
  // Throws: InvalidArgument if closed, Disconnected if the owner died.
  void put(const T& item, Timeout timeout = {}) const {
    detail::channel_call(ref(), detail::ChannelCall::kPut, ser::to_bytes(item), timeout);
  }
  // Removes and returns the oldest item. Blocks: until there is one (or `timeout`: Cancelled).
  // Throws: InvalidArgument once closed and empty, Disconnected if the owner died.
  T take(Timeout timeout = {}) const {
    return ser::from_bytes<T>(detail::channel_call(ref(), detail::ChannelCall::kTake, {}, timeout));
  }
  // take() that returns nullopt instead of throwing when `timeout` passes.
  std::optional<T> try_take(std::chrono::milliseconds timeout) const {
    try {
      return take(timeout);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::Cancelled) return std::nullopt;
      throw;
    }
  }
  // The oldest item, left in place (Julia's fetch). Blocks and throws like take.
  T fetch(Timeout timeout = {}) const {
    return ser::from_bytes<T>(detail::channel_call(ref(), detail::ChannelCall::kFetch, {}, timeout));
  }
  // Waits until an item is there. Blocks and throws like take.
  void wait(Timeout timeout = {}) const {
    detail::channel_call(ref(), detail::ChannelCall::kWait, {}, timeout);
  }
  // Whether an item is there now. Blocks: one round trip when the channel is remote.
  bool isready() const {
    return detail::channel_call(ref(), detail::ChannelCall::kIsReady, {}, {}) == std::string(1, '\1');
  }
  // Closes it: puts fail, waiters wake with an error; items already in can still be taken.
  void close() const { detail::channel_call(ref(), detail::ChannelCall::kClose, {}, {}); }
  // dj pid of the owning process.
  int where() const { return ref().owner; }

 private:
  // The one owner of the channel's release (shared by every copy of this handle).
  struct Handle {
    Handle(detail::ChannelRef r, bool o) : ref(r), owning(o) {}
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle() {
      if (owning) detail::channel_release(ref);
    }
    detail::ChannelRef ref;
    bool owning;
  };
  RemoteChannel(detail::ChannelRef ref, bool owning)
      : handle_(std::make_shared<Handle>(ref, owning)) {}
  const detail::ChannelRef& ref() const { return handle_->ref; }
  std::shared_ptr<Handle> handle_;
  friend struct ser::Codec<RemoteChannel<T>>;
};

namespace ser {
// A RemoteChannel crosses processes as its (owner, id); the copy borrows the channel.
template <class T>
struct Codec<RemoteChannel<T>> {
  static std::string name() { return "chan<" + Codec<T>::name() + ">"; }
  static constexpr size_t kMinBytes = 12;
  static void write(Writer& w, const RemoteChannel<T>& c) {
    w.pod<int32_t>(c.ref().owner);
    w.pod<uint64_t>(c.ref().id);
  }
  static RemoteChannel<T> read(Reader& r) {
    detail::ChannelRef ref;
    ref.owner = r.pod<int32_t>();
    ref.id = r.pod<uint64_t>();
    return RemoteChannel<T>(ref, false);
  }
};
}  // namespace ser

}  // namespace dj
